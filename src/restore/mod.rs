//! Restore: copying a view (a snapshot's volume, a backup generation) into a local folder, so an
//! engine gets plain local files, without a full download before the first file is there.
//!
//! - Every block is verified: it comes from the cache or the store's bulk lane through the
//!   fetcher, both checked against the view's checksums. Blocks already cached are not fetched.
//! - Each file is written to a hidden temporary name beside its final one (`.<name>.lazysnap-
//!   restore-<job>`), flushed, and renamed when complete: the folder never holds a torn file
//!   under a final name.
//! - Resuming (after a cancel, a failure or a crash) keeps what is done: a file already at its
//!   final name that verifies is counted done, and every block of a temporary file that verifies
//!   is kept, so nothing completed is fetched again even if the cache lost it.
//! - A file at a final name that differs from the view is an error, never overwritten.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::checksum::BlockChecksums;
use crate::fetch::{FetchError, ObjectHandle};
use crate::names::RelPath;
use crate::view::{CopyRules, View, ViewError, ViewFile};

/// Blocks fetched and written per step: one efficient request, short enough for cancel and the
/// bandwidth cap to act promptly.
const STEP_BYTES: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already holds a different file; move it away or restore elsewhere")]
    Occupied(PathBuf),
    #[error("reading {path} from the store failed: {source}")]
    Fetch {
        path: RelPath,
        #[source]
        source: Box<FetchError>,
    },
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("cancelled")]
    Cancelled,
    #[error("{path}: its CRC32 is {got:08x} but {digest} says {want:08x}: the copy is kept out of place")]
    Digest {
        path: RelPath,
        digest: RelPath,
        got: u32,
        want: u32,
    },
}

/// Progress of a copy, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_total: AtomicU64,
    pub files_total: AtomicU64,
    /// Bytes verified at their destination (kept from before, or written now).
    pub bytes_done: AtomicU64,
    pub files_done: AtomicU64,
    /// In a view with copy rules (ScyllaDB): the groups (sstables), and those whose every file is done.
    pub sstables_total: AtomicU64,
    pub sstables_done: AtomicU64,
    /// Bytes this copy fetched from the store (not the cache, not kept from before).
    pub bytes_fetched: AtomicU64,
    pub cancelled: AtomicBool,
}

/// The hidden name a file is written under until it is complete.
pub fn temp_name(dest: &Path, path: &RelPath, job: &str) -> PathBuf {
    let full = dest.join(path.as_str());
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    full.with_file_name(format!(".{name}.lazysnap-restore-{job}"))
}

/// Removes the temporary files job `job` left under `dest` (after a cancel).
pub fn remove_temp_files(dest: &Path, job: &str) {
    let suffix = format!(".lazysnap-restore-{job}");
    for entry in walkdir::WalkDir::new(dest).into_iter().filter_map(Result::ok) {
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(&suffix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Copies every file of `view` into `dest` (see the module doc). `bandwidth` caps the bytes per
/// second fetched from the store. The view's [`CopyRules`] (a ScyllaDB view has them) group files,
/// counted as sstables, and name the digest a file must match before it takes its final name.
/// Needs a tokio runtime.
pub async fn copy_view(
    view: &View,
    dest: &Path,
    job: &str,
    bandwidth: Option<u64>,
    progress: &Progress,
) -> Result<(), RestoreError> {
    let files = view.files();
    progress.files_total.store(files.len() as u64, Relaxed);
    progress.bytes_total.store(files.iter().map(|f| f.size).sum(), Relaxed);
    let rules = view.rules();
    let group_of = |path: &RelPath| rules.and_then(|r| r.group(path));
    let groups: std::collections::HashSet<String> = files.iter().filter_map(|f| group_of(&f.path)).collect();
    progress.sstables_total.store(groups.len() as u64, Relaxed);
    let pacer = Pacer {
        started: Instant::now(),
        bandwidth,
    };
    for (i, ViewFile { ino, path, .. }) in files.iter().enumerate() {
        let object = view.object(*ino)?;
        let final_path = dest.join(path.as_str());
        if final_path.exists() {
            if !verify_whole(view, path, &final_path, &object, progress).await? {
                return Err(RestoreError::Occupied(final_path));
            }
            progress.bytes_done.fetch_add(object.size(), Relaxed);
        } else {
            let digest = match rules.and_then(|r| Some((r, r.digest_file(path)?))) {
                Some((rules, digest)) => read_digest(view, rules, &files, digest).await?,
                None => None,
            };
            let temp = temp_name(dest, path, job);
            copy_file(view, &object, path, &temp, &pacer, progress).await?;
            if let Some((digest, want)) = digest {
                let got = crc32_of(&temp).await?;
                if got != want {
                    let _ = std::fs::remove_file(&temp);
                    return Err(RestoreError::Digest {
                        path: path.clone(),
                        digest,
                        got,
                        want,
                    });
                }
            }
            std::fs::rename(&temp, &final_path).map_err(|source| RestoreError::Io {
                path: final_path.clone(),
                source,
            })?;
        }
        progress.files_done.fetch_add(1, Relaxed);
        let this = group_of(path);
        let next = files.get(i + 1).and_then(|f| group_of(&f.path));
        if this.is_some() && this != next {
            progress.sstables_done.fetch_add(1, Relaxed);
        }
    }
    sync_dirs(dest)
}

/// The digest file `digest` of the view and the CRC32 it states, read through the view, when the
/// view has that file.
async fn read_digest(
    view: &View,
    rules: &dyn CopyRules,
    files: &[ViewFile],
    digest: RelPath,
) -> Result<Option<(RelPath, u32)>, RestoreError> {
    let Some(file) = files.iter().find(|f| f.path == digest) else {
        return Ok(None);
    };
    let object = view.object(file.ino)?;
    let blocks = view
        .fetcher()
        .blocks(&object, 0..object.shape.blocks())
        .await
        .map_err(|source| RestoreError::Fetch {
            path: digest.clone(),
            source: Box::new(source),
        })?;
    Ok(rules.parse_digest(&blocks.concat()).map(|want| (digest, want)))
}

async fn crc32_of(path: &Path) -> Result<u32, RestoreError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let io = |source| RestoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
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
    })
    .await
    .expect("checksum task does not panic")
}

struct Pacer {
    started: Instant,
    bandwidth: Option<u64>,
}

impl Pacer {
    /// Sleeps until `fetched` bytes are within the cap for the time since the copy started.
    async fn pace(&self, fetched: u64) {
        if let Some(rate) = self.bandwidth.filter(|&r| r > 0) {
            let due = Duration::from_secs_f64(fetched as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Fills `temp` with the object's bytes, verified, and flushes it; the caller renames it.
async fn copy_file(
    view: &View,
    object: &ObjectHandle,
    path: &RelPath,
    temp: &Path,
    pacer: &Pacer,
    progress: &Progress,
) -> Result<(), RestoreError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RestoreError::Io { path: p, source }
    };
    if let Some(parent) = temp.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(temp)
        .map_err(io(temp))?;
    file.set_len(object.size()).map_err(io(temp))?;
    let shape = object.shape;
    let blocks_per_step = (STEP_BYTES / shape.block_size).max(1);
    let mut start = 0;
    while start < shape.blocks() {
        if progress.cancelled.load(Relaxed) {
            drop(file);
            let _ = std::fs::remove_file(temp);
            return Err(RestoreError::Cancelled);
        }
        let step = start..(start + blocks_per_step).min(shape.blocks());
        start = step.end;
        let mut needed = Vec::new();
        for block in step.clone() {
            if block_is_written(&file, object, block) {
                progress.bytes_done.fetch_add(shape.len(block), Relaxed);
            } else {
                needed.push(block);
            }
        }
        let (Some(&first), Some(&last)) = (needed.first(), needed.last()) else {
            continue;
        };
        let run = first..last + 1;
        let fetch_err = |source| RestoreError::Fetch {
            path: path.clone(),
            source: Box::new(source),
        };
        let fetcher = view.fetcher();
        let fetched = fetcher
            .fetch_in_background(object, run.clone())
            .await
            .map_err(fetch_err)?;
        let total_fetched = progress.bytes_fetched.fetch_add(fetched, Relaxed) + fetched;
        let blocks = fetcher.blocks(object, run.clone()).await.map_err(fetch_err)?;
        for block in needed {
            let bytes = &blocks[(block - first) as usize];
            file.write_all_at(bytes, shape.offset(block)).map_err(io(temp))?;
            progress.bytes_done.fetch_add(bytes.len() as u64, Relaxed);
        }
        pacer.pace(total_fetched).await;
    }
    file.sync_all().map_err(io(temp))
}

/// True when block `block` of the temporary file already holds the view's bytes.
fn block_is_written(file: &File, object: &ObjectHandle, block: u64) -> bool {
    let len = object.shape.len(block) as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, object.shape.offset(block)).is_ok() && object.checksums.verify(block, &buf)
}

/// True when the file at `path` is exactly the object's bytes (read in a blocking task). A pinned
/// object's checksums not learned yet are learned first, from the cache or the store.
async fn verify_whole(
    view: &View,
    name: &RelPath,
    path: &Path,
    object: &ObjectHandle,
    progress: &Progress,
) -> Result<bool, RestoreError> {
    let expected = match object.checksums.all() {
        Some(sums) => sums,
        None => {
            let fetched = view
                .fetcher()
                .fetch_in_background(object, 0..object.shape.blocks())
                .await
                .map_err(|source| RestoreError::Fetch {
                    path: name.clone(),
                    source: Box::new(source),
                })?;
            progress.bytes_fetched.fetch_add(fetched, Relaxed);
            object.checksums.all().unwrap_or_default()
        }
    };
    let (path, size, block_size) = (path.to_path_buf(), object.size(), object.shape.block_size);
    tokio::task::spawn_blocking(move || {
        let io = |source| RestoreError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        if file.metadata().map_err(io)?.len() != size {
            return Ok(false);
        }
        let (sums, _) = BlockChecksums::compute(std::io::BufReader::new(file), block_size).map_err(io)?;
        Ok(sums == expected)
    })
    .await
    .expect("verify task does not panic")
}

/// Flushes the directory entries of the renames, so a crash after "completed" loses no file.
fn sync_dirs(dest: &Path) -> Result<(), RestoreError> {
    for entry in walkdir::WalkDir::new(dest).into_iter().filter_map(Result::ok) {
        if entry.file_type().is_dir() {
            let dir = File::open(entry.path()).map_err(|source| RestoreError::Io {
                path: entry.path().to_path_buf(),
                source,
            })?;
            dir.sync_all().map_err(|source| RestoreError::Io {
                path: entry.path().to_path_buf(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
