use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

use super::BlockKey;

/// An LRU of blocks bounded by the bytes it holds, not by entry count.
#[derive(Debug)]
pub struct MemoryCache {
    cap: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    blocks: LruCache<BlockKey, Bytes>,
    used: u64,
    /// Blocks dropped to make room, ever.
    evicted: u64,
}

impl MemoryCache {
    pub fn new(cap: u64) -> MemoryCache {
        MemoryCache {
            cap,
            state: Mutex::new(State {
                blocks: LruCache::unbounded(),
                used: 0,
                evicted: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.state().blocks.get(key).cloned()
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.state().blocks.contains(key)
    }

    pub fn insert(&self, key: BlockKey, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.cap {
            return;
        }
        let mut state = self.state();
        if let Some(old) = state.blocks.put(key, bytes) {
            state.used -= old.len() as u64;
        }
        state.used += len;
        while state.used > self.cap {
            match state.blocks.pop_lru() {
                Some((_, evicted)) => {
                    state.used -= evicted.len() as u64;
                    state.evicted += 1;
                }
                None => break,
            }
        }
    }

    /// Makes `keys` the first to go when room is needed; keys not held are skipped.
    pub fn demote(&self, keys: impl IntoIterator<Item = BlockKey>) {
        let mut state = self.state();
        keys.into_iter().for_each(|key| {
            state.blocks.demote(&key);
        });
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn used(&self) -> u64 {
        self.state().used
    }

    pub fn evictions(&self) -> u64 {
        self.state().evicted
    }
}
