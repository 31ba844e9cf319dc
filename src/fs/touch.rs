//! First touches: the order in which a mount's blocks are first read, recorded for a bounded
//! number of bytes and a bounded time after the mount, so that a later mount of the same volume can
//! fetch them first (see `warm`). Recording costs a set insert per block read; it stops for good
//! once either bound is reached.
//!
//! Reads of a file opened as a kernel passthrough file never reach this process. Such an open
//! notes a small file whole, and of a larger one what the profile this mount replayed says the
//! last mount read first (the replay is what made it local): without that, each warm-started
//! generation's profile would lose what its replay had warmed.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct FirstTouches {
    limit_bytes: u64,
    until: Instant,
    /// Set once recording stops: every later read of the mount passes without taking the lock.
    stopped: AtomicBool,
    state: Mutex<Touched>,
}

#[derive(Debug, Default)]
struct Touched {
    seen: HashSet<(u64, u64)>,
    /// (inode, byte range of the block) in the order first read.
    order: Vec<(u64, Range<u64>)>,
    bytes: u64,
    /// By inode: the byte ranges the replayed profile says the last mount read first.
    inherited: HashMap<u64, Vec<Range<u64>>>,
}

/// Largest file an open whose reads go unseen notes whole.
const UNSEEN_NOTED_WHOLE: u64 = 1 << 20;

impl FirstTouches {
    /// Records up to `limit_bytes` of distinct blocks first read within `window` from now.
    pub fn new(limit_bytes: u64, window: Duration) -> FirstTouches {
        FirstTouches {
            limit_bytes,
            until: Instant::now() + window,
            stopped: AtomicBool::new(false),
            state: Mutex::default(),
        }
    }

    /// Notes a read of `blocks` (of `block_size` bytes, the file `size` long) of inode `ino`.
    pub fn note(&self, ino: u64, blocks: Range<u64>, block_size: u64, size: u64) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        if Instant::now() >= self.until {
            self.stopped.store(true, Ordering::Relaxed);
            return;
        }
        let mut state = self.lock();
        for block in blocks {
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            if state.seen.insert((ino, block)) {
                let range = block * block_size..((block + 1) * block_size).min(size);
                state.bytes += range.end - range.start;
                state.order.push((ino, range));
                if state.bytes >= self.limit_bytes {
                    self.stopped.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes in what the profile replayed for this mount says each file's first reads were, for
    /// [`FirstTouches::note_unseen_open`].
    pub fn inherit(&self, reads: HashMap<u64, Vec<Range<u64>>>) {
        self.lock().inherited = reads;
    }

    /// Notes an open of inode `ino` (`size` bytes in blocks of `block_size`) whose reads this
    /// process will not see: the whole file when it is small, else its inherited first reads.
    pub fn note_unseen_open(&self, ino: u64, block_size: u64, size: u64) {
        if self.is_done() {
            return;
        }
        if size <= UNSEEN_NOTED_WHOLE {
            return self.note(ino, 0..size.div_ceil(block_size), block_size, size);
        }
        let inherited = self.lock().inherited.get(&ino).cloned().unwrap_or_default();
        for range in inherited.into_iter().filter(|r| r.start < r.end.min(size)) {
            let blocks = range.start / block_size..range.end.min(size).div_ceil(block_size);
            self.note(ino, blocks, block_size, size);
        }
    }

    /// True once recording has stopped (its bytes or its time are used up).
    pub fn is_done(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) || Instant::now() >= self.until
    }

    /// Stops recording and hands over what was recorded, in order.
    pub fn take(&self) -> Vec<(u64, Range<u64>)> {
        self.stopped.store(true, Ordering::Relaxed);
        let mut state = self.lock();
        state.seen = HashSet::new();
        state.inherited = HashMap::new();
        std::mem::take(&mut state.order)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Touched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_distinct_blocks_in_first_read_order_up_to_its_bytes() {
        let touches = FirstTouches::new(20, Duration::from_secs(60));
        touches.note(7, 2..4, 4, 100);
        touches.note(7, 3..5, 4, 100);
        touches.note(9, 0..1, 4, 3);
        assert!(!touches.is_done(), "15 bytes so far");
        touches.note(8, 0..9, 4, 100);
        assert!(touches.is_done(), "20 bytes reached");
        let recorded = [(7, 8..12), (7, 12..16), (7, 16..20), (9, 0..3), (8, 0..4), (8, 4..8)];
        assert_eq!(touches.take(), recorded);
        assert!(touches.take().is_empty(), "taken once");
    }

    #[test]
    fn an_unseen_open_notes_a_small_file_whole_and_of_a_large_one_what_it_inherited() {
        let touches = FirstTouches::new(1 << 30, Duration::from_secs(60));
        let (block, large) = (4096, 8 << 20);
        touches.inherit(HashMap::from([(2, vec![large - 100..large + 50, 5000..5001])]));
        touches.note_unseen_open(1, block, 10_000);
        touches.note_unseen_open(2, block, large);
        touches.note_unseen_open(3, block, large);
        let tail = large - block..large;
        assert_eq!(
            touches.take(),
            [
                (1, 0..4096),
                (1, 4096..8192),
                (1, 8192..10_000),
                (2, tail),
                (2, 4096..8192)
            ],
            "a large file nothing was inherited for is left out"
        );
    }

    #[test]
    fn nothing_is_recorded_after_its_window() {
        let touches = FirstTouches::new(1 << 20, Duration::ZERO);
        touches.note(1, 0..1, 4, 100);
        assert!(touches.is_done());
        assert!(touches.take().is_empty());
    }
}
