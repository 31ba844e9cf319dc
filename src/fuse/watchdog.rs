//! The requests that wait (reads and opens, which may wait on the store), by when they arrived, so
//! a watchdog can report any that waits too long: a read stuck past every deadline is a bug (a
//! lost wakeup, a deadlock), and the kernel would hold its process in D state without a word.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::latency::Kind;

#[derive(Debug, Default)]
pub(super) struct Waiting {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: AtomicU64,
    /// By arrival order, which is also age order: the first entry is the oldest.
    started: Mutex<BTreeMap<u64, Entry>>,
    slow_total: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    kind: Kind,
    reported: bool,
}

/// A request that has waited past the watchdog's threshold.
#[derive(Debug, Clone)]
pub struct Slow {
    pub op: &'static str,
    pub waited: Duration,
}

/// A waiting request's place; leaving it (when dropped) ends the wait, also for a task aborted.
pub(super) struct Ticket {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.inner.started).remove(&self.id);
    }
}

impl Waiting {
    pub fn enter(&self, kind: Kind) -> Ticket {
        let id = self.inner.next.fetch_add(1, Relaxed);
        let entry = Entry {
            at: Instant::now(),
            kind,
            reported: false,
        };
        lock(&self.inner.started).insert(id, entry);
        Ticket {
            inner: self.inner.clone(),
            id,
        }
    }

    pub fn oldest(&self) -> Duration {
        lock(&self.inner.started)
            .first_key_value()
            .map_or(Duration::ZERO, |(_, entry)| entry.at.elapsed())
    }

    pub fn slow_total(&self) -> u64 {
        self.inner.slow_total.load(Relaxed)
    }

    pub fn newly_slow(&self, threshold: Duration) -> Vec<Slow> {
        let mut started = lock(&self.inner.started);
        let mut slow = Vec::new();
        // Oldest first: stop at the first one young enough.
        for entry in started.values_mut() {
            let waited = entry.at.elapsed();
            if waited < threshold {
                break;
            }
            if !entry.reported {
                entry.reported = true;
                self.inner.slow_total.fetch_add(1, Relaxed);
                slow.push(Slow {
                    op: entry.kind.name(),
                    waited,
                });
            }
        }
        slow
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::request::Op;

    #[test]
    fn a_request_waiting_past_the_threshold_is_reported_once_and_forgotten_when_it_ends() {
        let waiting = Waiting::default();
        let read = crate::fuse::latency::kind(&Op::Read {
            fh: 1,
            offset: 0,
            size: 4096,
        });
        let stuck = waiting.enter(read);
        let quick = waiting.enter(read);
        drop(quick);
        assert!(waiting.newly_slow(Duration::from_millis(20)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        let young = waiting.enter(read);
        let slow = waiting.newly_slow(Duration::from_millis(20));
        assert_eq!(slow.len(), 1, "only the stuck one: {slow:?}");
        assert_eq!(slow[0].op, "read");
        assert!(
            waiting.newly_slow(Duration::from_millis(20)).is_empty(),
            "reported once"
        );
        assert!(waiting.oldest() >= Duration::from_millis(30));
        drop(stuck);
        assert!(
            waiting.oldest() < Duration::from_millis(30),
            "the young one is the oldest now"
        );
        drop(young);
        assert_eq!((waiting.oldest(), waiting.slow_total()), (Duration::ZERO, 1));
    }
}
