//! Local copies for kernel passthrough: once every block of a file is in the disk tier and this
//! process has verified each one, the kernel may read the cache file itself, at local-disk speed,
//! with no copy through the daemon. Blocks found on disk after a restart are verified in the
//! background first, so an open never waits for a whole file to be read back.

use std::collections::HashSet;
use std::fs::File;
use std::sync::{Arc, Mutex};

use crate::cache::{BlockCache, BlockKey, Pin};
use crate::fetch::ObjectHandle;

use super::{lock, LazyFs};

/// Files verified at once in the background, in the whole process (every mount together: a
/// thread each, so the count must not grow with the mounts); more wait for a later open.
const VERIFIERS: usize = 2;
static VERIFYING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A file's complete, verified copy in the disk tier, kept from eviction while held.
#[derive(Debug)]
pub struct LocalCopy {
    /// Read-only; byte `n` of the file is byte `n` of this one.
    pub file: File,
    _pin: Pin,
}

/// Objects whose blocks are being verified in the background.
#[derive(Debug, Default, Clone)]
pub(super) struct Verifying(Arc<Mutex<HashSet<crate::cache::ObjectId>>>);

impl LazyFs {
    /// The file's local copy, if every block is present and verified. When all are present but
    /// some are not yet verified, verification starts in the background and a later open gets one.
    pub fn local_copy(&self, ino: u64) -> Option<LocalCopy> {
        let object = self.object(ino).ok()?;
        let cache = self.view().fetcher().cache();
        let copy = cache.complete_copy(&object.id, object.shape)?;
        if copy.unverified.is_empty() {
            return Some(LocalCopy {
                file: copy.file,
                _pin: copy.pin,
            });
        }
        self.verifying.start(cache.clone(), object, copy.unverified);
        None
    }
}

impl LazyFs {
    /// The local copy a passthrough open of a previous server reads, pinned without verifying it
    /// again (that server did before handing it to the kernel); `None` when it is gone.
    pub fn held_local_copy(&self, ino: u64) -> Option<LocalCopy> {
        let object = self.object(ino).ok()?;
        let copy = self.view().fetcher().cache().complete_copy(&object.id, object.shape)?;
        Some(LocalCopy {
            file: copy.file,
            _pin: copy.pin,
        })
    }
}

impl Verifying {
    /// True when no verification runs (tests wait for it).
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        lock(&self.0).is_empty()
    }

    fn start(&self, cache: Arc<BlockCache>, object: Arc<ObjectHandle>, blocks: Vec<u64>) {
        use std::sync::atomic::Ordering;
        {
            let mut running = lock(&self.0);
            if running.contains(&object.id) {
                return;
            }
            if VERIFYING.fetch_add(1, Ordering::AcqRel) >= VERIFIERS {
                VERIFYING.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            running.insert(object.id);
        }
        let (running, id) = (self.clone(), object.id);
        let spawned = std::thread::Builder::new()
            .name("lazysnap-verify".into())
            .spawn(move || {
                let bad = blocks.iter().find(|&&block| {
                    let key = BlockKey {
                        object: object.id,
                        block,
                    };
                    // A pinned block whose checksum is not known cannot be checked: no local
                    // copy, but the cached block stays (a guessed checksum would evict it).
                    match object.checksums.get(block) {
                        Some(crc) => !cache.verify_on_disk(&key, object.shape, crc),
                        None => true,
                    }
                });
                match bad {
                    None => tracing::debug!(key = %object.key, blocks = blocks.len(), "local copy verified"),
                    Some(block) => {
                        tracing::debug!(key = %object.key, block, "local copy incomplete; block missing or bad")
                    }
                }
                lock(&running.0).remove(&object.id);
                VERIFYING.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a verification thread");
            lock(&self.0).remove(&id);
            VERIFYING.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
