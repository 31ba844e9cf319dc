//! Readahead for one open file: a read that continues where the last one ended grows a window of
//! blocks fetched ahead in the background; any other read resets it and fetches only what it needs.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::{FetchError, Fetcher, ObjectHandle, Pieces};

#[derive(Debug)]
pub struct FileReader {
    fetcher: Arc<Fetcher>,
    object: Arc<ObjectHandle>,
    state: Mutex<ReadState>,
}

/// How far a read may start from where the previous ones ended and still count as sequential: the
/// kernel splits readahead (at most 1 MiB, see `FuseOptions::max_readahead`) into requests that FUSE
/// threads may deliver out of order. Random reads of a large file land much further apart.
const NEAR: u64 = 1 << 20;

#[derive(Debug, Default)]
struct ReadState {
    reads: u64,
    /// The furthest end of the reads of the current sequential run.
    next_offset: u64,
    window: u64,
    /// Everything below this offset has been asked for already.
    prefetched_until: u64,
}

impl FileReader {
    pub fn new(fetcher: Arc<Fetcher>, object: Arc<ObjectHandle>) -> FileReader {
        FileReader {
            fetcher,
            object,
            state: Mutex::new(ReadState::default()),
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
        self.fetcher.read_pieces(&self.object, offset, len).await
    }

    fn plan(&self, offset: u64, len: u64) -> Option<Range<u64>> {
        let config = self.fetcher.config();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let end = offset.saturating_add(len).min(self.object.size());
        let sequential = state.reads > 0 && offset.abs_diff(state.next_offset) <= NEAR;
        state.reads += 1;
        state.next_offset = if sequential { state.next_offset.max(end) } else { end };
        if !sequential {
            state.window = 0;
            state.prefetched_until = end;
            return None;
        }
        state.window = if state.window == 0 {
            config.readahead_initial
        } else {
            (state.window * 2).min(config.readahead_max)
        };
        // Extend the prefetched range only once the reader has eaten into half of it, and then by
        // at least half a window: extending by each read's few hundred KiB would turn readahead
        // into a stream of one-block GETs, and one-block GETs are what makes object stores slow.
        let ahead = state.prefetched_until.saturating_sub(end);
        if ahead >= state.window / 2 {
            return None;
        }
        let from = state.prefetched_until.max(end);
        let to = end
            .saturating_add(state.window)
            .max(from.saturating_add(state.window / 2))
            .min(self.object.size());
        if from >= to {
            return None;
        }
        state.prefetched_until = to;
        Some(from..to)
    }

    /// Fetches `range` in the background as parallel request-sized GETs.
    fn prefetch(&self, range: Range<u64>) {
        self.fetcher.prefetch(&self.object, self.object.blocks_for(range));
    }
}
