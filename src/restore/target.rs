//! One file of a copy: its temporary file, opened by its first chunk and shared by the chunks in
//! flight, and the steps that give it its final name. File work runs on blocking threads: a
//! megabyte write on an async worker would stall every other task that worker serves.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::RestoreError;
use crate::fetch::ObjectHandle;
use crate::names::RelPath;
use crate::store::Piece;

pub(super) struct Target {
    pub path: RelPath,
    pub object: Arc<ObjectHandle>,
    temp: PathBuf,
    final_path: PathBuf,
    /// The digest file named for it and the CRC32 that states (a ScyllaDB Data.db).
    digest: Option<(RelPath, u32)>,
    open: Mutex<Option<Opened>>,
    /// Set by `remove`: a chunk whose future was dropped can still be writing on a blocking
    /// thread, and must not create the file again after it was removed.
    removed: AtomicBool,
    chunks_left: AtomicU64,
}

#[derive(Clone)]
struct Opened {
    file: Arc<File>,
    /// The temporary file was there before this copy (a resumed one): only then can any of its
    /// blocks already hold the view's bytes, so only then are they read back and checked.
    resumed: bool,
}

impl Target {
    pub fn new(
        path: RelPath,
        object: Arc<ObjectHandle>,
        temp: PathBuf,
        final_path: PathBuf,
        digest: Option<(RelPath, u32)>,
    ) -> Target {
        Target {
            path,
            object,
            temp,
            final_path,
            digest,
            open: Mutex::new(None),
            removed: AtomicBool::new(false),
            chunks_left: AtomicU64::new(1),
        }
    }

    /// Sets how many chunks of `blocks_per_chunk` the file is cut into (an empty file is one).
    pub fn plan_chunks(&self, blocks_per_chunk: u64) {
        let chunks = self.object.shape.blocks().div_ceil(blocks_per_chunk).max(1);
        self.chunks_left.store(chunks, Relaxed);
    }

    /// Counts one chunk done; true for the file's last.
    pub fn chunk_done(&self) -> bool {
        self.chunks_left.fetch_sub(1, Relaxed) == 1
    }

    /// The blocks of `blocks` that a resumed temporary file already holds, verified.
    pub async fn written(self: &Arc<Self>, blocks: std::ops::Range<u64>) -> Result<Vec<u64>, RestoreError> {
        let target = self.clone();
        blocking(move || {
            let opened = target.opened()?;
            if !opened.resumed {
                return Ok(Vec::new());
            }
            let shape = target.object.shape;
            let mut buf = Vec::new();
            Ok(blocks
                .filter(|&block| {
                    buf.resize(shape.len(block) as usize, 0);
                    opened.file.read_exact_at(&mut buf, shape.offset(block)).is_ok()
                        && target.object.checksums.verify(block, &buf)
                })
                .collect())
        })
        .await
    }

    /// Writes verified blocks at their offsets; the bytes written.
    pub async fn write(self: &Arc<Self>, blocks: Vec<(u64, Piece)>) -> Result<u64, RestoreError> {
        if blocks.is_empty() {
            return Ok(0);
        }
        let target = self.clone();
        blocking(move || {
            let file = target.opened()?.file;
            let (mut written, mut start, mut end) = (0, u64::MAX, 0);
            for (block, piece) in blocks {
                let offset = target.object.shape.offset(block);
                piece.write_all_at(&file, offset).map_err(target.io())?;
                written += piece.len() as u64;
                (start, end) = (start.min(offset), end.max(offset + piece.len() as u64));
            }
            start_writeback(&file, start..end);
            Ok(written)
        })
        .await
    }

    /// Flushes the complete file, checks it against its digest when it has one (the copy is
    /// removed when it differs) and renames it to its final name.
    pub async fn finish(self: &Arc<Self>) -> Result<(), RestoreError> {
        let target = self.clone();
        blocking(move || {
            let file = target.opened()?.file;
            file.sync_all().map_err(target.io())?;
            target.open.lock().expect("not poisoned").take();
            if let Some((digest, want)) = target.digest.clone() {
                let got = crc32_of(&target.temp)?;
                if got != want {
                    let _ = std::fs::remove_file(&target.temp);
                    return Err(RestoreError::Digest {
                        path: target.path.clone(),
                        digest,
                        got,
                        want,
                    });
                }
            }
            std::fs::rename(&target.temp, &target.final_path).map_err(|source| RestoreError::Io {
                path: target.final_path.clone(),
                source,
            })
        })
        .await
    }

    /// Closes and removes the temporary file (a cancelled copy).
    pub fn remove(&self) {
        let mut open = self.open.lock().expect("not poisoned");
        self.removed.store(true, Relaxed);
        if open.take().is_some() || self.temp.exists() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }

    /// The temporary file, created at its full size by the first chunk that needs it.
    fn opened(&self) -> Result<Opened, RestoreError> {
        let mut open = self.open.lock().expect("not poisoned");
        if self.removed.load(Relaxed) {
            return Err(RestoreError::Cancelled);
        }
        if let Some(opened) = &*open {
            return Ok(opened.clone());
        }
        if let Some(parent) = self.temp.parent() {
            std::fs::create_dir_all(parent).map_err(|source| RestoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let resumed = self.temp.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.temp)
            .map_err(self.io())?;
        file.set_len(self.object.size()).map_err(self.io())?;
        let opened = Opened {
            file: Arc::new(file),
            resumed,
        };
        *open = Some(opened.clone());
        Ok(opened)
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
        |source| RestoreError::Io {
            path: self.temp.clone(),
            source,
        }
    }
}

/// Starts writing `span` back to disk without waiting for it. Called once per chunk (megabytes),
/// so the disk works while later chunks arrive and the flush before the rename finds little left:
/// measured on a 1 GiB file, that flush took 0.6 s without it and 0.04 s with it. A hint per
/// block (256 KiB) instead cost more than it saved. Failing is harmless: the flush still writes
/// everything.
fn start_writeback(file: &File, span: std::ops::Range<u64>) {
    use std::os::fd::AsRawFd;
    if span.is_empty() {
        return;
    }
    // SAFETY: a valid open fd; SYNC_FILE_RANGE_WRITE only queues writeback of the range.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            span.start as libc::off64_t,
            (span.end - span.start) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("restore file work does not panic")
}

/// The CRC32 (ISO-HDLC, as ScyllaDB's Digest.crc32) of the file at `path`.
fn crc32_of(path: &Path) -> Result<u32, RestoreError> {
    let io = |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(digest.finalize() as u32)
}
