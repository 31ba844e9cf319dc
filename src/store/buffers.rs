//! Block-size buffers for ranged reads, reused instead of freed.
//!
//! Blocks are cached, handed to readers and written to disk, then dropped in no particular order.
//! Freed to the allocator, a few hundred KiB each, they leave holes that the allocator keeps
//! resident, and every fresh buffer is page-faulted in again. Here a dropped block's buffer goes
//! back to a free list (up to a cap) and the next read of that size takes it. The counters also
//! show what block data the process holds, which the memory cap is about.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A shared pool; clones use the same free lists and counters.
#[derive(Debug, Clone)]
pub struct BlockBuffers {
    inner: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    /// Free buffers by length; every one holds initialized bytes of exactly that length.
    free: Mutex<HashMap<usize, Vec<Vec<u8>>>>,
    free_bytes: AtomicU64,
    keep_bytes: u64,
    live_bytes: AtomicU64,
    peak_live_bytes: AtomicU64,
    reused: AtomicU64,
    allocated: AtomicU64,
}

/// What the pool holds and has done, for status output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BufferStats {
    /// Bytes of buffers handed out and not yet dropped (blocks in memory, in flight or being read).
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    /// Bytes of free buffers kept for reuse.
    pub free_bytes: u64,
    pub reused: u64,
    pub allocated: u64,
}

/// A buffer taken from the pool: fill it, then freeze it into [`Bytes`] that give the buffer back
/// when the last clone is dropped.
#[derive(Debug)]
pub struct BlockBuffer {
    data: Vec<u8>,
    /// The length it was taken for: only a buffer filled to it goes back to the free lists.
    full_len: usize,
    /// False once truncated: the free lists hold only buffers of their full length.
    reusable: bool,
    pool: Arc<Pool>,
}

impl BlockBuffers {
    /// A pool that keeps at most `keep_bytes` of free buffers.
    pub fn new(keep_bytes: u64) -> BlockBuffers {
        BlockBuffers {
            inner: Arc::new(Pool {
                free: Mutex::default(),
                free_bytes: AtomicU64::new(0),
                keep_bytes,
                live_bytes: AtomicU64::new(0),
                peak_live_bytes: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                allocated: AtomicU64::new(0),
            }),
        }
    }

    /// A buffer of exactly `len` bytes. Its contents are unspecified (zeros or an old block).
    pub fn take(&self, len: usize) -> BlockBuffer {
        self.take_as(len, |data| data.resize(len, 0))
    }

    /// An empty buffer with room for `len` bytes, to be filled with
    /// [`BlockBuffer::extend_from_slice`]: a new one is not zeroed first (at the wire, zeroing
    /// fresh buffers cost as much CPU as checking their checksums).
    pub fn take_empty(&self, len: usize) -> BlockBuffer {
        self.take_as(len, Vec::clear)
    }

    /// A reused buffer (full length) or a new one with capacity `len`, shaped by `shape`.
    fn take_as(&self, len: usize, shape: impl FnOnce(&mut Vec<u8>)) -> BlockBuffer {
        let pool = &self.inner;
        let reused = pool.free().get_mut(&len).and_then(Vec::pop);
        let mut data = match reused {
            Some(data) => {
                pool.free_bytes.fetch_sub(len as u64, Ordering::Relaxed);
                pool.reused.fetch_add(1, Ordering::Relaxed);
                data
            }
            None => {
                pool.allocated.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(len)
            }
        };
        shape(&mut data);
        let live = pool.live_bytes.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
        pool.peak_live_bytes.fetch_max(live, Ordering::Relaxed);
        BlockBuffer {
            data,
            full_len: len,
            reusable: true,
            pool: pool.clone(),
        }
    }

    pub fn stats(&self) -> BufferStats {
        let pool = &self.inner;
        BufferStats {
            live_bytes: pool.live_bytes.load(Ordering::Relaxed),
            peak_live_bytes: pool.peak_live_bytes.load(Ordering::Relaxed),
            free_bytes: pool.free_bytes.load(Ordering::Relaxed),
            reused: pool.reused.load(Ordering::Relaxed),
            allocated: pool.allocated.load(Ordering::Relaxed),
        }
    }
}

impl Default for BlockBuffers {
    fn default() -> Self {
        BlockBuffers::new(16 << 20)
    }
}

impl Pool {
    fn free(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Vec<Vec<u8>>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, data: Vec<u8>, counted: usize, reusable: bool) {
        self.live_bytes.fetch_sub(counted as u64, Ordering::Relaxed);
        if !reusable {
            return;
        }
        let len = data.len() as u64;
        let mut free = self.free();
        if self.free_bytes.load(Ordering::Relaxed) + len <= self.keep_bytes {
            self.free_bytes.fetch_add(len, Ordering::Relaxed);
            free.entry(data.len()).or_default().push(data);
        }
    }
}

impl BlockBuffer {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Appends `bytes`; at most up to the length the buffer was taken for (the caller's bug
    /// otherwise).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        debug_assert!(
            self.data.len() + bytes.len() <= self.full_len,
            "a block buffer overfilled"
        );
        self.data.extend_from_slice(bytes);
    }

    /// Room left before the length it was taken for.
    pub fn room(&self) -> usize {
        self.full_len.saturating_sub(self.data.len())
    }

    /// Shortens the buffer to its first `len` bytes (a read that ended early); such a buffer is
    /// not reused.
    pub fn truncate(&mut self, len: usize) {
        if len < self.full_len {
            self.pool
                .live_bytes
                .fetch_sub((self.full_len - len) as u64, Ordering::Relaxed);
            self.data.truncate(len);
            self.data.shrink_to_fit();
            self.full_len = len;
            self.reusable = false;
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for BlockBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for BlockBuffer {
    fn drop(&mut self) {
        let full = self.data.len() == self.full_len;
        self.pool
            .give_back(std::mem::take(&mut self.data), self.full_len, self.reusable && full);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_blocks_are_reused_and_counted() {
        let buffers = BlockBuffers::new(1 << 20);
        let mut first = buffers.take(4096);
        first.as_mut_slice().fill(7);
        let bytes = first.freeze();
        let clone = bytes.clone();
        assert_eq!(buffers.stats().live_bytes, 4096);
        drop(bytes);
        assert_eq!(buffers.stats().free_bytes, 0, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(buffers.stats().live_bytes, 0);
        assert_eq!(buffers.stats().free_bytes, 4096);
        let again = buffers.take(4096);
        assert_eq!(again.as_ref()[0], 7, "the same buffer came back");
        let mut other = buffers.take_empty(8192);
        assert_eq!((other.len(), other.room()), (0, 8192));
        other.extend_from_slice(&[1; 8192]);
        let stats = buffers.stats();
        assert_eq!((stats.reused, stats.allocated), (1, 2));
        assert_eq!((stats.live_bytes, stats.peak_live_bytes), (12288, 12288));
        drop((again, other));
    }

    #[test]
    fn free_buffers_beyond_the_cap_go_back_to_the_allocator() {
        let buffers = BlockBuffers::new(8192);
        let held: Vec<_> = (0..4).map(|_| buffers.take(4096)).collect();
        drop(held);
        assert_eq!(buffers.stats().free_bytes, 8192);
        let mut short = buffers.take(4096);
        short.truncate(100);
        assert_eq!(buffers.stats().live_bytes, 100);
        drop(short);
        assert_eq!(buffers.stats().free_bytes, 4096, "a truncated buffer is not kept");
    }
}
