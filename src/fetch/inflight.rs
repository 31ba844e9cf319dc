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

#[derive(Debug, Default)]
pub(super) struct Inflight {
    map: Mutex<HashMap<BlockKey, watch::Receiver<Slot>>>,
}

impl Inflight {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<BlockKey, watch::Receiver<Slot>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn claim(self: &Arc<Self>, object: ObjectId, missing: &[u64]) -> Claim {
        let mut map = self.map();
        let mut led = Vec::new();
        let mut others = Vec::new();
        for &block in missing {
            let key = BlockKey { object, block };
            match map.get(&key) {
                Some(rx) => others.push((block, rx.clone())),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key, rx);
                    led.push((block, tx));
                }
            }
        }
        Claim {
            inflight: self.clone(),
            object,
            led: Mutex::new(led.into_iter().collect()),
            led_blocks: missing
                .iter()
                .copied()
                .filter(|b| !others.iter().any(|(o, _)| o == b))
                .collect(),
            others,
            results: Mutex::new(Vec::new()),
        }
    }
}

/// Owns its reference to the bookkeeping, so a claim can outlive the call that made it (prefetch).
pub(super) struct Claim {
    inflight: Arc<Inflight>,
    object: ObjectId,
    led: Mutex<HashMap<u64, watch::Sender<Slot>>>,
    led_blocks: Vec<u64>,
    others: Vec<(u64, watch::Receiver<Slot>)>,
    results: Mutex<Vec<(u64, Bytes)>>,
}

impl Claim {
    /// The blocks this caller must fetch, in order.
    pub(super) fn led(&self) -> Vec<u64> {
        self.led_blocks.clone()
    }

    /// Publishes the outcome of a led block to its waiters and forgets it.
    pub(super) fn complete(&self, block: u64, result: Result<Bytes, Arc<FetchError>>) {
        let sender = self.led.lock().unwrap_or_else(|p| p.into_inner()).remove(&block);
        self.inflight.map().remove(&BlockKey {
            object: self.object,
            block,
        });
        if let Ok(bytes) = &result {
            self.results
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
        self.inflight.map().remove(&BlockKey {
            object: self.object,
            block,
        });
        drop(sender);
    }

    /// The blocks this caller fetched successfully.
    pub(super) fn fetched(&self) -> Vec<(u64, Bytes)> {
        std::mem::take(&mut *self.results.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits for the blocks others lead. `Ok(None)`: a leader gave up, so the caller should look again.
    pub(super) async fn wait_others(&self) -> Result<Option<Vec<(u64, Bytes)>>, FetchError> {
        let mut out = Vec::with_capacity(self.others.len());
        for (block, rx) in &self.others {
            let mut rx = rx.clone();
            let Ok(slot) = rx.wait_for(Option::is_some).await else {
                return Ok(None);
            };
            match slot.clone().expect("waited for Some") {
                Ok(bytes) => out.push((*block, bytes)),
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
        let mut map = self.inflight.map();
        for block in abandoned {
            map.remove(&BlockKey {
                object: self.object,
                block,
            });
        }
    }
}
