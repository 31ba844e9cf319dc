//! Readahead for one open file: a read that continues where the last one ended grows a window of
//! blocks fetched ahead in the background, in proportion to how far the run has gone; any other
//! read ends the run and fetches only what it needs. What a run left unread adapts the next ones.
//! A window fits the memory tier, and a scan demotes the blocks it has read past, so what was
//! fetched ahead is still in memory when the reader gets there.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::{FetchError, Fetcher, ObjectHandle, Pieces};
use crate::cache::BlockKey;

#[derive(Debug)]
pub struct FileReader {
    fetcher: Arc<Fetcher>,
    object: Arc<ObjectHandle>,
    state: Mutex<ReadState>,
}

/// How far a read may start from where the previous ones ended and still count as sequential: the
/// kernel splits its readahead (128 KiB by default, see `FuseOptions::max_readahead`) into requests
/// of at most 1 MiB that FUSE threads may deliver out of order. Random reads of a large file land much further apart.
const NEAR: u64 = 1 << 20;

/// A run longer than this is a scan (a copy, a compaction, a full read), not an engine reading one
/// column chunk or block: it gets the largest growth whatever earlier runs did.
const SCAN: u64 = 8 << 20;

/// Readahead reaches at most this many times the bytes a run has read so far, at least once.
const MAX_GROWTH: u64 = 4;

/// A run earns the floor once it has read this much: two kernel readahead requests do, two
/// neighbouring 4 KiB pages of a B-tree lookup (SQLite's index leaf, then its table leaf) do not.
const FLOOR_RUN: u64 = 64 << 10;

/// The least a file's smallest window falls to after wasted readahead: one default block.
const MIN_FLOOR: u64 = 256 << 10;

/// Readahead follows what a run has shown, not how many reads it made: a window is a multiple
/// (`growth`) of the bytes the run has read, at least `floor` once a contiguous run has read
/// [`FLOOR_RUN`]. A file whose runs stop short of what
/// was fetched for them (an engine reading one column chunk, one SSTable block range at a time)
/// halves both, down to fetching about what it reads; runs that use all that was fetched raise them
/// again. The worst waste of a run of R bytes is thus about `growth * R`, while a long scan still
/// reaches the configured maximum after a few megabytes.
#[derive(Debug)]
struct ReadState {
    reads: u64,
    /// Bytes the current sequential run has read (not its span: an engine skipping ahead by less
    /// than [`NEAR`] continues a run without reading what it skipped), and the furthest end of its
    /// reads.
    run_read: u64,
    next_offset: u64,
    /// Everything below this offset has been asked for already.
    prefetched_until: u64,
    /// The current run asked for readahead.
    run_prefetched: bool,
    /// The current run's blocks below this have been demoted in the memory tier.
    demoted_until: u64,
    growth: u64,
    floor: u64,
}

impl FileReader {
    pub fn new(fetcher: Arc<Fetcher>, object: Arc<ObjectHandle>) -> FileReader {
        let floor = fetcher.config().readahead_initial;
        FileReader {
            fetcher,
            object,
            state: Mutex::new(ReadState {
                reads: 0,
                run_read: 0,
                next_offset: 0,
                prefetched_until: 0,
                run_prefetched: false,
                demoted_until: 0,
                growth: 2,
                floor,
            }),
        }
    }

    pub fn object(&self) -> &Arc<ObjectHandle> {
        &self.object
    }

    /// Reads bytes `offset..offset+len`; must be called inside a tokio runtime (prefetch spawns).
    pub async fn read(&self, offset: u64, len: u64) -> Result<Pieces, FetchError> {
        if let Some(ahead) = self.plan(offset, len) {
            self.prefetch(ahead);
        }
        let behind = self.left_behind(offset);
        if !behind.is_empty() {
            let id = self.object.id;
            let keys = behind.map(|block| BlockKey { object: id, block });
            self.fetcher.cache().demote(keys);
        }
        self.fetcher.read_pieces(&self.object, offset, len).await
    }

    pub(super) fn plan(&self, offset: u64, len: u64) -> Option<Range<u64>> {
        let config = self.fetcher.config();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let end = offset.saturating_add(len).min(self.object.size());
        let sequential = state.reads > 0 && offset.abs_diff(state.next_offset) <= NEAR;
        state.reads += 1;
        if !sequential {
            state.end_run(config.readahead_initial);
            state.run_read = end.saturating_sub(offset);
            state.next_offset = end;
            state.prefetched_until = end;
            state.demoted_until = offset;
            return None;
        }
        // Only a read that starts exactly where the run ended earns the floor: reads that merely
        // land near (kernel pieces out of order, or two random reads that happen to fall close
        // together) get what the run has shown, so a chance neighbour costs kilobytes, not a floor.
        let contiguous = offset == state.next_offset;
        state.next_offset = state.next_offset.max(end);
        state.run_read += end.saturating_sub(offset);
        let run = state.run_read;
        let growth = if run >= SCAN { MAX_GROWTH } else { state.growth };
        let floor = if contiguous && run >= FLOOR_RUN { state.floor } else { 0 };
        let window = run.saturating_mul(growth).max(floor).min(self.readahead_max());
        // Extend the prefetched range by whole steps, once the reader has eaten a step into it: a
        // step is half a window, on a scan at most one request. Extending by each read's few
        // hundred KiB would turn readahead into a stream of one-block GETs, what makes object
        // stores slow. Extending a scan's window by half at once sent its GETs in waves, and the
        // reader waited between them (S3-like store, 256 MiB cold: 398-418 MB/s in waves, 424-453
        // in steps). Shorter runs keep half-window steps: they end with less of their window unread.
        let step = if run >= SCAN {
            (window / 2).min(config.max_request_bytes)
        } else {
            window / 2
        };
        let ahead = state.prefetched_until.saturating_sub(end);
        if step == 0 || ahead.saturating_add(step) > window {
            return None;
        }
        let from = state.prefetched_until.max(end);
        let steps = (end.saturating_add(window) - from) / step;
        let to = from.saturating_add(steps * step).min(self.object.size());
        if from >= to {
            return None;
        }
        state.prefetched_until = to;
        state.run_prefetched = true;
        Some(from..to)
    }

    /// The largest window: the configured one, within what the memory tier holds beside the
    /// blocks just read. A window larger than the tier pushed the blocks fetched for the reader out
    /// before it came to them, and it read them back from the disk tier (a copy of each, 8% of the
    /// daemon's CPU in a 1 GiB cold read: a 128 MiB window against a 96 MiB tier). Without a memory
    /// tier, blocks are read from disk anyway and the window is left as configured.
    fn readahead_max(&self) -> u64 {
        let config = self.fetcher.config();
        match self.fetcher.cache().memory_cap() {
            0 => config.readahead_max,
            cap => config
                .readahead_max
                .min(cap.saturating_sub(2 * NEAR).max(config.max_request_bytes)),
        }
    }

    /// The blocks a scan has read past and not yet demoted: those wholly more than [`NEAR`] behind
    /// this read (kernel pieces delivered out of order may still ask for the nearer ones).
    fn left_behind(&self, offset: u64) -> Range<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let block = self.object.shape.block_size;
        let until = offset.saturating_sub(NEAR) / block * block;
        if state.run_read < SCAN || until <= state.demoted_until {
            return 0..0;
        }
        let from = std::mem::replace(&mut state.demoted_until, until);
        self.object.blocks_for(from..until)
    }

    /// Fetches `range` in the background as parallel request-sized GETs.
    fn prefetch(&self, range: Range<u64>) {
        self.fetcher.prefetch(&self.object, self.object.blocks_for(range));
    }
}

impl ReadState {
    /// Adapts growth and floor to how much of its readahead the run that ends used.
    fn end_run(&mut self, initial: u64) {
        if !std::mem::take(&mut self.run_prefetched) {
            return;
        }
        let read = self.run_read;
        let unread = self.prefetched_until.saturating_sub(self.next_offset);
        if unread > read / 2 {
            self.growth = (self.growth / 2).max(1);
            self.floor = (self.floor / 2).max(MIN_FLOOR.min(initial));
        } else if unread == 0 {
            self.growth = (self.growth * 2).min(MAX_GROWTH);
            self.floor = (self.floor * 2).min(initial);
        }
    }
}
