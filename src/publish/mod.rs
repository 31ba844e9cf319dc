//! Publishing a local directory as the next log manifest of a volume.
//!
//! Order matters for "nothing half-written": every file is checked against what the store already
//! holds before anything is uploaded (a different content under an existing name is refused, files
//! are immutable); data objects are uploaded next; the manifest that makes them visible is written
//! last, create-only. A failure before the manifest leaves only unreferenced objects, never a
//! manifest that names missing or different bytes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path as FsPath, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::chain::{self, ChainError};
use crate::checksum::BlockChecksums;
use crate::index::{Index, IndexError};
use crate::manifest::{native, Manifest, ManifestError, ManifestFile};
use crate::names::{NameError, RelPath, VolumeId};
use crate::store::{layout, Store, StoreError};

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub block_size: u64,
    /// The uploader term to write under; defaults to the volume's current term.
    pub term: Option<u64>,
    /// Files uploaded at once.
    pub concurrency: usize,
    /// Files larger than this are uploaded as parallel multipart parts of this size.
    pub part_size: u64,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            block_size: crate::manifest::DEFAULT_BLOCK_SIZE,
            term: None,
            concurrency: 8,
            // 16 MiB parts: large enough for full-speed streams, small enough to keep 8 in memory.
            part_size: 16 << 20,
        }
    }
}

/// Progress of a publish, for a progress bar; the library never draws one itself.
pub trait Progress: Send + Sync {
    fn start(&self, _files: u64, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    #[serde(rename = "logManifestName")]
    pub log_manifest_name: String,
    pub files: u64,
    pub bytes_uploaded: u64,
    pub bytes_skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("file name {0:?} is not UTF-8")]
    NotUtf8(PathBuf),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{path} differs from the file of that name already in volume {volume}; files are immutable, publish new content under a new name")]
    Immutable { volume: VolumeId, path: RelPath },
    #[error("term {requested} is older than the volume's current term {current}: this uploader is fenced")]
    Fenced { requested: u64, current: u64 },
    #[error("another writer published manifest {name} of volume {volume} at the same time; publish again")]
    Conflict { volume: VolumeId, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Manifest(ManifestError),
    #[error(transparent)]
    Chain(Box<ChainError>),
}

impl From<ChainError> for PublishError {
    fn from(e: ChainError) -> Self {
        PublishError::Chain(Box::new(e))
    }
}

pub(crate) struct LocalFile {
    pub path: RelPath,
    pub local: PathBuf,
    pub size: u64,
    /// Modification time (ns) and inode: with path and size, what tells a changed folder apart.
    pub modified_ns: i128,
    pub inode: u64,
}

/// A digest of the folder's file names, sizes, modification times and inodes: equal digests mean
/// publishing it again would name the same files, so an uploader can skip the round.
pub async fn fingerprint(dir: &FsPath) -> Result<[u8; 32], PublishError> {
    let mut hasher = blake3::Hasher::new();
    for file in scan(dir).await? {
        hasher.update(file.path.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(&file.size.to_le_bytes());
        hasher.update(&file.modified_ns.to_le_bytes());
        hasher.update(&file.inode.to_le_bytes());
    }
    Ok(*hasher.finalize().as_bytes())
}

/// What the store already has of a local file.
enum Stored {
    /// The same bytes: nothing to upload. Carries their checksums for the manifest.
    Same(BlockChecksums),
    Missing,
}

pub async fn publish(
    store: &Store,
    index: &Index,
    dir: &FsPath,
    volume: &VolumeId,
    options: &PublishOptions,
    progress: &dyn Progress,
) -> Result<PublishReport, PublishError> {
    let files = scan(dir).await?;
    let previous = match chain::latest_manifest_name(store, volume).await? {
        Some(name) => Some(chain::load_manifest(store, index, volume, &name).await?),
        None => None,
    };
    let (term, seq) = match &previous {
        Some(prev) => {
            let term = options.term.unwrap_or(prev.term);
            if term < prev.term {
                return Err(PublishError::Fenced {
                    requested: term,
                    current: prev.term,
                });
            }
            (term, prev.seq + 1)
        }
        None => (options.term.unwrap_or(0), 1),
    };
    let known: HashMap<RelPath, (u64, BlockChecksums)> = match &previous {
        Some(prev) => index
            .manifest_files(prev.id)?
            .into_iter()
            .map(|f| {
                let sums = index.file_checksums(f.id)?;
                Ok((f.path, (f.size, sums)))
            })
            .collect::<Result<_, PublishError>>()?,
        None => HashMap::new(),
    };

    // Objects no previous manifest names may still exist (an interrupted publish): one listing
    // finds them all, rather than a HEAD per file.
    let stored: Option<HashMap<String, u64>> = if files.iter().all(|f| known.contains_key(&f.path)) {
        None
    } else {
        let listing = store.list(&layout::files_dir(volume)).await?;
        Some(listing.into_iter().map(|o| (o.key.to_string(), o.size)).collect())
    };
    // Decide every file before uploading any, so a refusal leaves the store untouched. Only files
    // the store may already hold are read now; new files are read once, while they upload.
    let mut checksums: Vec<Option<(u64, BlockChecksums)>> = Vec::with_capacity(files.len());
    let mut to_upload = Vec::new();
    let mut reused_unnamed = Vec::new();
    let mut skipped = 0;
    for (i, file) in files.iter().enumerate() {
        match already_stored(store, volume, file, &known, stored.as_ref(), options.block_size).await? {
            Stored::Same(sums) => {
                if !known.contains_key(&file.path) {
                    reused_unnamed.push(i);
                }
                skipped += file.size;
                checksums.push(Some((file.size, sums)));
            }
            Stored::Missing => {
                to_upload.push(i);
                checksums.push(None);
            }
        }
    }
    let upload_bytes: u64 = to_upload.iter().map(|&i| files[i].size).sum();
    progress.start(to_upload.len() as u64, upload_bytes);
    let files_ref = &files;
    // Built into a Vec first: a stream over a borrowing closure would make the future !Send for
    // rustc's higher-ranked check, and callers spawn publishes.
    let uploads: Vec<_> = to_upload
        .iter()
        .map(|&i| async move {
            upload(
                store,
                &layout::file_key(volume, &files_ref[i].path),
                &files_ref[i],
                options,
                progress,
            )
            .await
            .map(|r| (i, r))
        })
        .collect();
    let uploaded = futures::stream::iter(uploads)
        .buffer_unordered(options.concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    for (i, result) in uploaded {
        checksums[i] = Some(result);
    }

    let manifest = Manifest {
        volume: volume.clone(),
        name: layout::manifest_name(seq),
        term,
        seq,
        created_at_ms: crate::time::now_ms(),
        block_size: options.block_size,
        files: files
            .iter()
            .zip(checksums)
            .map(|(f, sums)| {
                // The size and checksums of the bytes the store holds, as uploaded or compared.
                let (size, checksums) = sums.expect("every file was uploaded or found stored");
                ManifestFile {
                    path: f.path.clone(),
                    size,
                    checksums,
                    low_seqno: None,
                    high_seqno: None,
                    object_key: None,
                    etag: None,
                }
            })
            .collect(),
    };
    manifest.validate().map_err(PublishError::Manifest)?;
    crate::failpoint::reached(crate::failpoint::PUBLISH_DATA_UPLOADED);
    write_manifest(store, &manifest).await?;
    if !reused_unnamed.is_empty() {
        let reused: Vec<&LocalFile> = reused_unnamed.iter().map(|&i| &files[i]).collect();
        gc_guard::restore_reused(store, volume, &reused, options, progress).await?;
    }
    index.insert_manifest(store.url(), &manifest)?;
    Ok(PublishReport {
        volume_id: volume.to_string(),
        bytes_uploaded: manifest.total_bytes() - skipped,
        log_manifest_name: manifest.name,
        files: files.len() as u64,
        bytes_skipped: skipped,
    })
}

/// Writes a manifest create-only; a lost answer to our own write is told apart from a rival's.
pub async fn write_manifest(store: &Store, manifest: &Manifest) -> Result<(), PublishError> {
    let writer = uuid::Uuid::new_v4().to_string();
    let key = layout::manifest_key(&manifest.volume, &manifest.name);
    let body = Bytes::from(native::to_json(manifest, &writer));
    match store.put_if_absent(&key, body).await {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => {
            let existing = store.get(&key).await?;
            let author = native::authorship(&existing);
            match author {
                Some(a) if a.writer == writer => Ok(()),
                // Someone else extended the chain first: a newer term means this writer is fenced.
                Some(a) if a.term > manifest.term => Err(PublishError::Fenced {
                    requested: manifest.term,
                    current: a.term,
                }),
                _ => Err(PublishError::Conflict {
                    volume: manifest.volume.clone(),
                    name: manifest.name.clone(),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Every regular file under `dir`, sorted by path. Symlinks and special files are skipped: a
/// volume holds only data the engine wrote.
pub(crate) async fn scan(dir: &FsPath) -> Result<Vec<LocalFile>, PublishError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if !dir.is_dir() {
            return Err(PublishError::NotADirectory(dir));
        }
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(&dir).follow_links(false).sort_by_file_name() {
            let entry = entry.map_err(|e| PublishError::Read {
                path: e.path().map_or_else(|| dir.clone(), FsPath::to_path_buf),
                source: e.into(),
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            if !entry.file_type().is_file() {
                tracing::warn!(path = %entry.path().display(), "skipping: not a regular file");
                continue;
            }
            let relative = entry.path().strip_prefix(&dir).expect("walkdir stays below its root");
            let text = relative
                .to_str()
                .ok_or_else(|| PublishError::NotUtf8(relative.to_path_buf()))?;
            let meta = entry.metadata().map_err(|e| PublishError::Read {
                path: entry.path().to_path_buf(),
                source: e.into(),
            })?;
            files.push(LocalFile {
                path: RelPath::parse(text)?,
                local: entry.path().to_path_buf(),
                size: meta.len(),
                modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                inode: meta.ino(),
            });
        }
        Ok(files)
    })
    .await
    .expect("scan task does not panic")
}

/// Checksums of a local file, read in a blocking task.
pub(crate) async fn checksum_local(file: &LocalFile, block_size: u64) -> Result<BlockChecksums, PublishError> {
    let path = file.local.clone();
    tokio::task::spawn_blocking(move || {
        let read_err = |source| PublishError::Read {
            path: path.clone(),
            source,
        };
        let reader = std::fs::File::open(&path).map_err(read_err)?;
        let (sums, _) = BlockChecksums::compute(std::io::BufReader::new(reader), block_size).map_err(read_err)?;
        Ok(sums)
    })
    .await
    .expect("checksum task does not panic")
}

/// Whether the store already holds exactly this file; an error when it holds something else.
async fn already_stored(
    store: &Store,
    volume: &VolumeId,
    file: &LocalFile,
    known: &HashMap<RelPath, (u64, BlockChecksums)>,
    stored: Option<&HashMap<String, u64>>,
    block_size: u64,
) -> Result<Stored, PublishError> {
    let immutable = || PublishError::Immutable {
        volume: volume.clone(),
        path: file.path.clone(),
    };
    let key = layout::file_key(volume, &file.path);
    let stored_size = match (known.get(&file.path), stored) {
        (Some((size, _)), _) => Some(*size),
        (None, Some(listing)) => listing.get(key.as_ref()).copied(),
        (None, None) => None,
    };
    let Some(stored_size) = stored_size else {
        return Ok(Stored::Missing);
    };
    if stored_size != file.size {
        return Err(immutable());
    }
    let local = checksum_local(file, block_size).await?;
    // The previous manifest's checksums decide when they use the same block size ...
    if let Some((_, sums)) = known.get(&file.path).filter(|(_, sums)| sums.len() == local.len()) {
        return if *sums == local {
            Ok(Stored::Same(local))
        } else {
            Err(immutable())
        };
    }
    // ... otherwise (an object no manifest names, from an interrupted publish, or another block
    // size) the stored bytes do.
    let bytes = match store.get(&key).await {
        Ok(bytes) => bytes,
        // Listed a moment ago, deleted since (GC): upload it.
        Err(StoreError::NotFound { .. }) => return Ok(Stored::Missing),
        Err(e) => return Err(e.into()),
    };
    let (remote, _) = BlockChecksums::compute(&bytes[..], block_size).expect("reading memory cannot fail");
    if remote == local {
        Ok(Stored::Same(local))
    } else {
        Err(immutable())
    }
}

/// Uploads one file in a single read, checksumming the exact bytes sent so the manifest cannot
/// disagree with the store. Answers the size and checksums of what was uploaded.
pub(crate) async fn upload(
    store: &Store,
    key: &object_store::path::Path,
    file: &LocalFile,
    options: &PublishOptions,
    progress: &dyn Progress,
) -> Result<(u64, BlockChecksums), PublishError> {
    let read_err = |source| PublishError::Read {
        path: file.local.clone(),
        source,
    };
    let mut local = tokio::fs::File::open(&file.local).await.map_err(read_err)?;
    let mut hasher = StreamingChecksums::new(options.block_size);
    if file.size <= options.part_size {
        let mut buf = Vec::with_capacity(file.size as usize);
        local.read_to_end(&mut buf).await.map_err(read_err)?;
        hasher.update(&buf);
        let len = buf.len() as u64;
        store.put(key, Bytes::from(buf).into()).await?;
        progress.advance(len);
        return Ok((len, hasher.finish()));
    }
    let mut upload = store.upload_in_parts(key, options.part_size).await?;
    let mut buf = vec![0u8; options.part_size as usize];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut local, &mut buf).await.map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        upload.write(&buf[..n]).await?;
        total += n as u64;
        progress.advance(n as u64);
    }
    upload.finish().await?;
    Ok((total, hasher.finish()))
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Block checksums over bytes that arrive in pieces of any size.
struct StreamingChecksums {
    block_size: usize,
    current: crate::checksum::Crc32c,
    filled: usize,
    done: Vec<u32>,
}

impl StreamingChecksums {
    fn new(block_size: u64) -> Self {
        StreamingChecksums {
            block_size: block_size as usize,
            current: crate::checksum::Crc32c::new(),
            filled: 0,
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (self.block_size - self.filled).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == self.block_size {
                self.done.push(self.current.take());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> BlockChecksums {
        if self.filled > 0 {
            self.done.push(self.current.take());
        }
        BlockChecksums::new(self.done)
    }
}

mod gc_guard;
mod term;
pub use term::{optional_term_as_string, start_term, term_as_string, Term, TermStart};

#[cfg(test)]
mod tests;
