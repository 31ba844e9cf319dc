//! GETs in flight: one limit shared by every fetcher given a clone, so that all the mounts of a
//! daemon together keep at most `total` requests open against the stores, however many mounts
//! there are. Waiters are served in arrival order (tokio's semaphores are fair), so a busy mount
//! cannot starve another. Background fetches (readahead, hydration) leave a sixteenth of the
//! slots (at least one) free, so a read a process waits for always finds one: a quarter cost a
//! hydration on S3 a quarter of its streams, and readers need few slots as hydration steps back
//! while they read.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct RequestSlots {
    all: Arc<Semaphore>,
    background: Arc<Semaphore>,
    total: usize,
}

/// One GET's slot, given back when dropped.
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _background: Option<OwnedSemaphorePermit>,
}

impl RequestSlots {
    pub fn new(total: usize) -> RequestSlots {
        let total = total.max(1);
        RequestSlots {
            all: Arc::new(Semaphore::new(total)),
            background: Arc::new(Semaphore::new(background_share(total))),
            total,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// GETs in flight now, across every fetcher sharing these slots.
    pub fn in_use(&self) -> usize {
        self.total - self.all.available_permits()
    }

    pub async fn acquire(&self, background: bool) -> Slot {
        let background = match background {
            true => Some(self.background.clone().acquire_owned().await.expect("never closed")),
            false => None,
        };
        Slot {
            _all: self.all.clone().acquire_owned().await.expect("never closed"),
            _background: background,
        }
    }
}

/// What background fetches may hold: all but a sixteenth, at least one left for demand.
fn background_share(total: usize) -> usize {
    total.saturating_sub((total / 16).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn clones_share_one_limit_and_demand_keeps_a_sixteenth() {
        let slots = RequestSlots::new(32);
        let other_mount = slots.clone();
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(slots.acquire(true).await);
        }
        let more_background = tokio::time::timeout(Duration::from_millis(50), other_mount.acquire(true)).await;
        assert!(
            more_background.is_err(),
            "background work is capped at fifteen sixteenths of all fetchers' slots"
        );
        held.push(other_mount.acquire(false).await);
        held.push(other_mount.acquire(false).await);
        assert_eq!(slots.in_use(), 32);
        let one_more = tokio::time::timeout(Duration::from_millis(50), slots.acquire(false)).await;
        assert!(one_more.is_err(), "32 slots in all, whichever fetcher holds them");
        drop(held.pop());
        assert!(tokio::time::timeout(Duration::from_millis(50), slots.acquire(false))
            .await
            .is_ok());
        // However few slots there are, demand keeps one.
        let few = RequestSlots::new(2);
        let _bulk = few.acquire(true).await;
        assert!(tokio::time::timeout(Duration::from_millis(50), few.acquire(true))
            .await
            .is_err());
        assert!(tokio::time::timeout(Duration::from_millis(50), few.acquire(false))
            .await
            .is_ok());
    }
}
