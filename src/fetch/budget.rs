//! A cap on the bytes of block data being fetched at once: fetches wait for room instead of
//! growing the daemon's memory without bound when many readers miss together. Background fetches
//! (readahead, hydration) leave a sixteenth of it free (as of the GET slots), so a read a process
//! waits for always finds room.

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Accounting unit: budgets are whole units, reservations round up.
const UNIT: u64 = 4096;

#[derive(Debug, Clone)]
pub struct BufferBudget {
    all: Arc<Semaphore>,
    background: Arc<Semaphore>,
    units: u32,
}

/// Bytes held against a budget until dropped.
pub struct Reservation<'a> {
    _all: SemaphorePermit<'a>,
    _background: Option<SemaphorePermit<'a>>,
}

impl BufferBudget {
    pub fn new(bytes: u64) -> BufferBudget {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1);
        BufferBudget {
            all: Arc::new(Semaphore::new(units as usize)),
            background: Arc::new(Semaphore::new(background_share(units) as usize)),
            units,
        }
    }

    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Waits until `bytes` fit. A request larger than the budget (or, in the background, than
    /// the background share) takes all of it, so it runs alone rather than never.
    pub async fn reserve(&self, bytes: u64, background: bool) -> Reservation<'_> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        let background = match background {
            true => {
                let share = units.min(background_share(self.units));
                Some(self.background.acquire_many(share).await.expect("never closed"))
            }
            false => None,
        };
        Reservation {
            _all: self.all.acquire_many(units).await.expect("never closed"),
            _background: background,
        }
    }
}

/// What background fetches may hold: all but a sixteenth, at least one unit left for demand.
fn background_share(units: u32) -> u32 {
    units.saturating_sub((units / 16).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_oversized_ones_run_alone() {
        let budget = BufferBudget::new(64 << 10);
        let first = budget.reserve(48 << 10, false).await;
        let blocked = tokio::time::timeout(Duration::from_millis(50), budget.reserve(32 << 10, false)).await;
        assert!(blocked.is_err(), "48 KiB + 32 KiB must not fit in 64 KiB");
        drop(first);
        let second = budget.reserve(32 << 10, false).await;
        drop(second);
        let huge = tokio::time::timeout(Duration::from_millis(50), budget.reserve(1 << 30, false)).await;
        assert!(huge.is_ok(), "a reservation above the budget takes the whole budget");
    }

    #[tokio::test]
    async fn background_work_leaves_a_sixteenth_for_demand_reads() {
        let budget = BufferBudget::new(64 << 10);
        let bulk = budget.reserve(60 << 10, true).await;
        let more_bulk = tokio::time::timeout(Duration::from_millis(50), budget.reserve(4 << 10, true)).await;
        assert!(more_bulk.is_err(), "background work is capped at fifteen sixteenths");
        let demand = tokio::time::timeout(Duration::from_millis(50), budget.reserve(4 << 10, false)).await;
        assert!(demand.is_ok(), "a demand read fits beside saturated background work");
        drop(bulk);
    }
}
