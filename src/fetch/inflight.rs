//! Single-flight bookkeeping: which blocks are being fetched right now, and by whom.
//!
//! A caller claims the missing blocks nobody is fetching (it leads them) and gets receivers for the
//! ones somebody else leads. A leader that is dropped midway (its caller gave up) drops its senders,
//! so waiters see the channel close and look again instead of waiting forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::FetchError;
use crate::cache::{BlockKey, ObjectId};

type Slot = Option<Result<Bytes, Arc<FetchError>>>;

/// Who leads a block's fetch: which claim (to forget only its own entry) and for what.
#[derive(Debug)]
struct Leader {
    rx: watch::Receiver<Slot>,
    claim: u64,
    purpose: Purpose,
}

#[derive(Debug, Default)]
pub(super) struct Inflight {
    map: Mutex<HashMap<BlockKey, Leader>>,
    claims: std::sync::atomic::AtomicU64,
}

impl Inflight {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<BlockKey, Leader>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets `key` if claim `id` still leads it (a read may have taken it over since).
    fn forget(&self, key: &BlockKey, id: u64) {
        let mut map = self.map();
        if map.get(key).is_some_and(|leader| leader.claim == id) {
            map.remove(key);
        }
    }

    /// Claims for a caller that reads the blocks: it gets back what it fetched
    /// ([`Claim::fetched`]) and what others fetched ([`Claim::wait_others`]).
    pub(super) fn claim(self: &Arc<Self>, object: ObjectId, missing: &[u64]) -> Claim {
        self.claim_for(object, missing, Purpose::Read)
    }

    /// Claims for a fetch that only fills the cache and waits until it is filled (a warm start's
    /// replay: reads that come meanwhile wait for it).
    pub(super) fn claim_to_fill(self: &Arc<Self>, object: ObjectId, missing: &[u64]) -> Claim {
        self.claim_for(object, missing, Purpose::Fill)
    }

    /// Like [`Inflight::claim_to_fill`], for a hydration: a read that needs one of its blocks
    /// takes the block over rather than waiting for the hydration's large GET to reach it.
    pub(super) fn claim_to_hydrate(self: &Arc<Self>, object: ObjectId, missing: &[u64]) -> Claim {
        self.claim_for(object, missing, Purpose::Hydrate)
    }

    /// Claims for readahead, which fetches what nobody leads and waits for nothing.
    pub(super) fn claim_ahead(self: &Arc<Self>, object: ObjectId, missing: &[u64]) -> Claim {
        self.claim_for(object, missing, Purpose::Ahead)
    }

    fn claim_for(self: &Arc<Self>, object: ObjectId, missing: &[u64], purpose: Purpose) -> Claim {
        let id = self.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.map();
        let mut led = Vec::new();
        let mut others = Vec::new();
        for &block in missing {
            let key = BlockKey { object, block };
            match map.get(&key) {
                // A read does not wait for a hydration's block: that may come at the end of an
                // 8 MiB GET, long after a GET of its own would (S3-like: 80 ms against 30). It
                // fetches the block itself; the hydration's copy, when it comes, finds it cached.
                Some(leader) if !(purpose == Purpose::Read && leader.purpose == Purpose::Hydrate) => {
                    others.push((block, leader.rx.clone()))
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key, Leader { rx, claim: id, purpose });
                    led.push((block, tx));
                }
            }
        }
        let led_blocks = led.iter().map(|(block, _)| *block).collect();
        if purpose == Purpose::Ahead {
            // A receiver keeps the last block sent alive: a claim that never waits holds none.
            others.clear();
        }
        Claim {
            inflight: self.clone(),
            id,
            object,
            led: Mutex::new(led.into_iter().collect()),
            led_blocks,
            others: Mutex::new(others),
            results: (purpose == Purpose::Read).then(Mutex::default),
            purpose,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Read,
    Fill,
    Hydrate,
    Ahead,
}

/// Owns its reference to the bookkeeping, so a claim can outlive the call that made it (prefetch).
/// It holds fetched blocks only for a caller that reads them: a readahead claim lives until its
/// whole window is fetched, and blocks kept there would escape the memory cap.
pub(super) struct Claim {
    inflight: Arc<Inflight>,
    id: u64,
    object: ObjectId,
    led: Mutex<HashMap<u64, watch::Sender<Slot>>>,
    led_blocks: Vec<u64>,
    others: Mutex<Vec<(u64, watch::Receiver<Slot>)>>,
    results: Option<Mutex<Vec<(u64, Bytes)>>>,
    purpose: Purpose,
}

impl Claim {
    /// The blocks this caller must fetch, in order.
    pub(super) fn led(&self) -> Vec<u64> {
        self.led_blocks.clone()
    }

    /// Whether this claim only fills the cache (hydration, replay): nobody asked for its blocks.
    pub(super) fn fills_only(&self) -> bool {
        matches!(self.purpose, Purpose::Fill | Purpose::Hydrate)
    }

    /// Whether anyone waits for led `block` now (besides the in-flight map's own receiver).
    pub(super) fn awaited(&self, block: u64) -> bool {
        let led = self.led.lock().unwrap_or_else(|p| p.into_inner());
        led.get(&block).is_some_and(|sender| sender.receiver_count() > 1)
    }

    /// Whether a read has taken led `block` over (see [`Inflight::claim_to_hydrate`]).
    pub(super) fn taken_over(&self, block: u64) -> bool {
        if self.purpose != Purpose::Hydrate {
            return false;
        }
        let key = BlockKey {
            object: self.object,
            block,
        };
        self.inflight
            .map()
            .get(&key)
            .is_some_and(|leader| leader.claim != self.id)
    }

    /// Publishes the outcome of a led block to its waiters and forgets it.
    pub(super) fn complete(&self, block: u64, result: Result<Bytes, Arc<FetchError>>) {
        let sender = self.led.lock().unwrap_or_else(|p| p.into_inner()).remove(&block);
        self.inflight.forget(
            &BlockKey {
                object: self.object,
                block,
            },
            self.id,
        );
        if let (Ok(bytes), Some(results)) = (&result, &self.results) {
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((block, bytes.clone()));
        }
        if let Some(sender) = sender {
            sender.send_replace(Some(result));
        }
    }

    /// Gives up a led block without an answer: its waiters look again (and may fetch it themselves).
    pub(super) fn abandon(&self, block: u64) {
        let sender = self.led.lock().unwrap_or_else(|p| p.into_inner()).remove(&block);
        self.inflight.forget(
            &BlockKey {
                object: self.object,
                block,
            },
            self.id,
        );
        drop(sender);
    }

    /// The blocks this caller fetched successfully (none unless claimed to read).
    pub(super) fn fetched(&self) -> Vec<(u64, Bytes)> {
        match &self.results {
            Some(results) => std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }

    /// Waits for the blocks others lead; answers them unless claimed only to fill the cache.
    /// `Ok(None)`: a leader gave up, so the caller should look again. Call once.
    pub(super) async fn wait_others(&self) -> Result<Option<Vec<(u64, Bytes)>>, FetchError> {
        let others = std::mem::take(&mut *self.others.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Vec::with_capacity(others.len());
        for (block, mut rx) in others {
            let Ok(slot) = rx.wait_for(Option::is_some).await else {
                return Ok(None);
            };
            match slot.clone().expect("waited for Some") {
                Ok(bytes) if self.results.is_some() => out.push((block, bytes)),
                Ok(_) => {}
                Err(e) => return Err(FetchError::Shared(e)),
            }
        }
        Ok(Some(out))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Blocks still led here were never completed: let waiters know by dropping the senders.
        let abandoned: Vec<u64> = self
            .led
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(b, _)| b)
            .collect();
        if abandoned.is_empty() {
            return;
        }
        for block in abandoned {
            let key = BlockKey {
                object: self.object,
                block,
            };
            self.inflight.forget(&key, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_takes_over_a_hydrations_block_and_the_hydrations_answer_leaves_it_led() {
        let checksums = crate::checksum::Integrity::Published(Default::default());
        let object = ObjectId::new(&"test://inflight".parse().unwrap(), "k", 1, &checksums);
        let inflight = Arc::new(Inflight::default());
        // A warm start's replay is waited for, not taken over.
        let replay = inflight.claim_to_fill(object, &[5]);
        assert_eq!(inflight.claim(object, &[5]).led(), Vec::<u64>::new());
        drop(replay);
        let fill = inflight.claim_to_hydrate(object, &[1, 2]);
        assert_eq!(fill.led(), vec![1, 2]);
        // Readahead waits for what a hydration leads; a read leads the block itself.
        assert_eq!(inflight.claim_ahead(object, &[1]).led(), Vec::<u64>::new());
        let read = inflight.claim(object, &[2]);
        assert_eq!(read.led(), vec![2]);
        // The hydration answers block 2 later: the read still leads it, so a second read waits
        // for the first rather than fetching it a third time.
        assert!(fill.taken_over(2) && !fill.taken_over(1));
        fill.complete(2, Ok(Bytes::from_static(b"two")));
        let second = inflight.claim(object, &[2]);
        assert_eq!(second.led(), Vec::<u64>::new());
        read.complete(2, Ok(Bytes::from_static(b"two")));
        assert_eq!(inflight.claim(object, &[2]).led(), vec![2], "forgotten once answered");
    }
}
