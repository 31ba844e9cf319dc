//! Restore: copying a view (a snapshot's volume, a backup generation) into a local folder, so an
//! engine gets plain local files, without a full download before the first file is there.
//!
//! - At the wire: the files are cut into chunks of one large ranged GET each, and several chunks
//!   (of one file or of several; how many adapts to the link, see `streams`) are fetched at once
//!   on the fetcher's background lane and
//!   written straight to their place in the destination file. Fetched blocks do not go through
//!   the block cache: the engine reads the restored files, so a cached copy would cost a second
//!   write and memory that nobody reads. Blocks already cached are taken from the cache instead.
//! - Every block is verified against the view's checksums before it is written.
//! - Each file is written to a hidden temporary name beside its final one (`.<name>.lazysnap-
//!   restore-<job>`), flushed, and renamed when complete: the folder never holds a torn file
//!   under a final name.
//! - Resuming (after a cancel, a failure or a crash) keeps what is done: a file already at its
//!   final name that verifies is counted done, and every block of a temporary file that verifies
//!   is kept, so nothing completed is fetched again even if the cache lost it.
//! - A file at a final name that differs from the view is an error, never overwritten.

mod streams;
mod target;

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::checksum::BlockChecksums;
use crate::fetch::{FetchError, ObjectHandle};
use crate::names::RelPath;
use crate::store::Piece;
use crate::view::{CopyRules, View, ViewError, ViewFile};
use target::Target;

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
    let groups = Groups::of(view.rules(), &files);
    progress.sstables_total.store(groups.total(), Relaxed);
    let mut targets = Vec::new();
    for ViewFile { ino, path, .. } in &files {
        let object = view.object(*ino)?;
        let final_path = dest.join(path.as_str());
        if final_path.exists() {
            if !verify_whole(view, path, &final_path, &object, progress).await? {
                return Err(RestoreError::Occupied(final_path));
            }
            progress.bytes_done.fetch_add(object.size(), Relaxed);
            file_done(path, &groups, progress);
        } else {
            // Read before any chunk: a digest's own copy then finds it cached, not fetched twice.
            let digest = match view.rules().and_then(|r| Some((r, r.digest_file(path)?))) {
                Some((rules, digest)) => read_digest(view, rules, digest).await?,
                None => None,
            };
            let temp = temp_name(dest, path, job);
            targets.push(Arc::new(Target::new(path.clone(), object, temp, final_path, digest)));
        }
    }
    let per_chunk = |t: &Target| (view.fetcher().config().max_request_bytes / t.object.shape.block_size).max(1);
    for target in &targets {
        target.plan_chunks(per_chunk(target));
    }
    let mut chunks = Vec::new();
    for target in &targets {
        let (blocks, step) = (target.object.shape.blocks(), per_chunk(target));
        for start in (0..blocks.max(1)).step_by(step as usize) {
            chunks.push((target.clone(), start..(start + step).min(blocks)));
        }
    }
    let copy = Copy {
        view,
        pacer: Pacer {
            started: Instant::now(),
            bandwidth,
            granted: AtomicU64::new(0),
        },
        progress,
        groups: &groups,
    };
    // Chunks in flight are bounded by the climb; a file's flush and rename run beside them, not in
    // a chunk's place: here 50 flushes of 10 MiB files took 0.44 s, one of them 0.24 s, and each
    // held a stream idle.
    let (mut chunks, mut running) = (chunks.into_iter(), FuturesUnordered::new());
    let mut streams = streams::Streams::new(Instant::now());
    let (mut in_flight, mut outcome) = (0, Ok(()));
    loop {
        while in_flight < streams.limit() {
            let Some((target, blocks)) = chunks.next() else { break };
            running.push(Either::Left(copy.chunk(target, blocks)));
            in_flight += 1;
        }
        match running.next().await {
            Some(Ok(Step::Chunk { bytes, last_of })) => {
                in_flight -= 1;
                streams.chunk_done(bytes, Instant::now());
                if let Some(target) = last_of {
                    running.push(Either::Right(copy.finish(target)));
                }
            }
            Some(Ok(Step::Finished)) => {}
            Some(Err(e)) => {
                outcome = Err(e);
                break;
            }
            None => break,
        }
    }
    drop(running);
    if let Err(e) = outcome {
        // Chunks still in flight were dropped. A cancelled copy, or one whose backup contradicts
        // its own digest (resuming cannot help), leaves nothing behind; one that failed otherwise
        // (the store, the disk) keeps its verified blocks for the next attempt.
        if matches!(e, RestoreError::Cancelled | RestoreError::Digest { .. }) {
            targets.iter().for_each(|t| t.remove());
        }
        return Err(e);
    }
    sync_dirs(dest)
}

/// What a chunk or a file's finish left done.
enum Step {
    /// A chunk of `bytes`; `last_of` is its file when it was the file's last, to finish.
    Chunk {
        bytes: u64,
        last_of: Option<Arc<Target>>,
    },
    Finished,
}

/// What every chunk of one copy shares.
struct Copy<'a> {
    view: &'a View,
    pacer: Pacer,
    progress: &'a Progress,
    groups: &'a Groups,
}

impl Copy<'_> {
    /// Fills `blocks` of `target` (kept, cached or fetched).
    async fn chunk(&self, target: Arc<Target>, blocks: Range<u64>) -> Result<Step, RestoreError> {
        let bytes: u64 = blocks.clone().map(|b| target.object.shape.len(b)).sum();
        let cancelled = &self.progress.cancelled;
        if cancelled.load(Relaxed) {
            return Err(RestoreError::Cancelled);
        }
        let shape = target.object.shape;
        let kept = target.written(blocks.clone()).await?;
        let kept_bytes: u64 = kept.iter().map(|&b| shape.len(b)).sum();
        self.progress.bytes_done.fetch_add(kept_bytes, Relaxed);
        let fetcher = self.view.fetcher();
        let mut pending: Vec<(u64, Piece)> = Vec::new();
        let mut missing: Vec<u64> = Vec::new();
        for block in blocks.filter(|b| !kept.contains(b)) {
            match fetcher.cached_block(&target.object, block) {
                Some(bytes) => pending.push((block, bytes.into())),
                None => missing.push(block),
            }
        }
        for run in runs(&missing) {
            let span = shape.byte_range(run.clone());
            self.pacer.grant(span.end - span.start, cancelled).await?;
            let fetched = fetcher
                .fetch_uncached(&target.object, run.clone())
                .await
                .map_err(|source| RestoreError::Fetch {
                    path: target.path.clone(),
                    source: Box::new(source),
                })?;
            self.progress.bytes_fetched.fetch_add(span.end - span.start, Relaxed);
            if cancelled.load(Relaxed) {
                return Err(RestoreError::Cancelled);
            }
            pending.extend(run.zip(fetched.blocks.iter().cloned()));
            let written = target.write(std::mem::take(&mut pending)).await?;
            self.progress.bytes_done.fetch_add(written, Relaxed);
        }
        let written = target.write(pending).await?;
        self.progress.bytes_done.fetch_add(written, Relaxed);
        let last_of = target.chunk_done().then_some(target);
        Ok(Step::Chunk { bytes, last_of })
    }

    /// Flushes `target`, whose every chunk is written, and gives it its final name.
    async fn finish(&self, target: Arc<Target>) -> Result<Step, RestoreError> {
        target.finish().await?;
        file_done(&target.path, self.groups, self.progress);
        crate::failpoint::stopped_at(crate::failpoint::RESTORE_FILE_COMPLETED).await;
        Ok(Step::Finished)
    }
}

/// Sorted block numbers as runs of adjacent blocks.
fn runs(blocks: &[u64]) -> Vec<Range<u64>> {
    let mut runs: Vec<Range<u64>> = Vec::new();
    for &block in blocks {
        match runs.last_mut() {
            Some(run) if run.end == block => run.end += 1,
            _ => runs.push(block..block + 1),
        }
    }
    runs
}

/// The copy rules' groups (sstables) and how many of each group's files are still to do.
struct Groups {
    of_file: HashMap<RelPath, String>,
    left: HashMap<String, AtomicU64>,
}

impl Groups {
    fn of(rules: Option<&dyn CopyRules>, files: &[ViewFile]) -> Groups {
        let mut groups = Groups {
            of_file: HashMap::new(),
            left: HashMap::new(),
        };
        for file in files {
            if let Some(group) = rules.and_then(|r| r.group(&file.path)) {
                groups.left.entry(group.clone()).or_default().fetch_add(1, Relaxed);
                groups.of_file.insert(file.path.clone(), group);
            }
        }
        groups
    }

    fn total(&self) -> u64 {
        self.left.len() as u64
    }
}

/// Counts a file done, and its group when it was the group's last.
fn file_done(path: &RelPath, groups: &Groups, progress: &Progress) {
    progress.files_done.fetch_add(1, Relaxed);
    let left = groups.of_file.get(path).and_then(|g| groups.left.get(g));
    if left.is_some_and(|left| left.fetch_sub(1, Relaxed) == 1) {
        progress.sstables_done.fetch_add(1, Relaxed);
    }
}

/// The digest file `digest` of the view and the CRC32 it states, read through the view, when the
/// view has that file.
async fn read_digest(
    view: &View,
    rules: &dyn CopyRules,
    digest: RelPath,
) -> Result<Option<(RelPath, u32)>, RestoreError> {
    let Some(file) = view.files().into_iter().find(|f| f.path == digest) else {
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

struct Pacer {
    started: Instant,
    bandwidth: Option<u64>,
    /// Bytes allowed to start fetching so far.
    granted: AtomicU64,
}

impl Pacer {
    /// Waits until `bytes` more may be fetched within the cap: a fetch starts once the bytes
    /// granted before it are due, so chunks in flight together run at most one chunk ahead of the
    /// cap. Wakes every 50 ms to notice a cancel.
    async fn grant(&self, bytes: u64, cancelled: &AtomicBool) -> Result<(), RestoreError> {
        let Some(rate) = self.bandwidth.filter(|&r| r > 0) else {
            return Ok(());
        };
        let before = self.granted.fetch_add(bytes, Relaxed);
        let due = Duration::from_secs_f64(before as f64 / rate as f64);
        while let Some(wait) = due.checked_sub(self.started.elapsed()) {
            if cancelled.load(Relaxed) {
                return Err(RestoreError::Cancelled);
            }
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        }
        Ok(())
    }
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
