//! A run's disk-cache writes, started in batches while its GET still streams rather than all
//! once it ends. A fetch holds its share of the buffer budget (and a hydration its piece's place)
//! until its blocks are on disk, so writing an 8 MiB run only after its last byte came kept the
//! next GET waiting for the write: on the S3-like profile hydration ran about 13 of its 15 streams.

use tokio::task::JoinHandle;

use super::{Fetcher, ObjectHandle};
use crate::cache::BlockKey;
use crate::store::Piece;

/// Bytes of blocks gathered before their write starts: a few blocks' worth per blocking task.
const BATCH_BYTES: u64 = 1 << 20;

pub(super) struct DiskWrites<'a> {
    fetcher: &'a Fetcher,
    object: &'a ObjectHandle,
    blocks: Vec<(BlockKey, Piece)>,
    /// Checksums learned of a pinned object, remembered before the blocks they check are written.
    learned: Vec<(u64, u32)>,
    gathered: u64,
    started: Vec<JoinHandle<()>>,
}

impl<'a> DiskWrites<'a> {
    pub(super) fn new(fetcher: &'a Fetcher, object: &'a ObjectHandle) -> DiskWrites<'a> {
        DiskWrites {
            fetcher,
            object,
            blocks: Vec::new(),
            learned: Vec::new(),
            gathered: 0,
            started: Vec::new(),
        }
    }

    /// Adds a verified block, with its checksum when it was just learned.
    pub(super) fn add(&mut self, key: BlockKey, piece: Piece, learned: Option<u32>) {
        if let Some(crc) = learned {
            self.learned.push((key.block, crc));
        }
        self.gathered += piece.len() as u64;
        self.blocks.push((key, piece));
        if self.gathered >= BATCH_BYTES {
            self.start();
        }
    }

    fn start(&mut self) {
        let (blocks, learned) = (std::mem::take(&mut self.blocks), std::mem::take(&mut self.learned));
        self.gathered = 0;
        self.started
            .extend(self.fetcher.start_disk_write(self.object, blocks, learned));
    }

    /// Writes what is left and waits until every block added is on disk.
    pub(super) async fn finish(mut self) {
        self.start();
        for write in self.started.drain(..) {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "a disk cache write did not finish");
            }
        }
    }
}
