//! Filesystem semantics of a mount, on lazysnap's own types and testable without a kernel: the
//! `fuse` adapter only translates. A mount serves one [`View`] (its tree and fetcher); this module
//! adds open handles, attributes, extended attributes and counters.

mod error;
mod local;
mod touch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::access::Access;
use crate::fetch::{FetchStatsSnapshot, FileReader, ObjectHandle, Pieces};
use crate::view::{NodeKind, View};

pub use crate::view::ROOT;
pub use error::FsError;
pub use local::LocalCopy;
pub use touch::FirstTouches;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub block_size: u32,
    pub name_max: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountStats {
    pub opens: u64,
    pub reads: u64,
    pub bytes_read: u64,
    pub read_errors: u64,
    /// Opens the kernel serves itself from a verified local copy (FUSE passthrough).
    pub passthrough_opens: u64,
    pub store: FetchStatsSnapshot,
}

/// Names of the extended attributes every file carries.
pub const XATTRS: &[&str] = &[
    "user.lazysnap.volume",
    "user.lazysnap.manifest",
    "user.lazysnap.block_size",
    "user.lazysnap.blocks_total",
    "user.lazysnap.blocks_cached",
    "user.lazysnap.cached_bytes",
    "user.lazysnap.fetched_bytes",
];

#[derive(Debug, Default)]
struct Counters {
    opens: AtomicU64,
    reads: AtomicU64,
    bytes_read: AtomicU64,
    read_errors: AtomicU64,
    passthrough_opens: AtomicU64,
}

#[derive(Debug)]
pub struct LazyFs {
    view: Arc<View>,
    /// Open handles: the inode each reads, and its reader (sequential detection, readahead).
    handles: Mutex<HashMap<u64, (u64, Arc<FileReader>)>>,
    next_handle: AtomicU64,
    counters: Counters,
    verifying: local::Verifying,
    /// Set when the daemon records this mount's first touches for a warm start.
    touches: std::sync::OnceLock<Arc<FirstTouches>>,
    access: Access,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LazyFs {
    /// Serves `view`, its files and folders owned and moded as `access` says.
    pub fn new(view: Arc<View>, access: Access) -> LazyFs {
        LazyFs {
            view,
            handles: Mutex::default(),
            next_handle: AtomicU64::new(1),
            counters: Counters::default(),
            verifying: local::Verifying::default(),
            touches: std::sync::OnceLock::new(),
            access,
        }
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    pub fn access(&self) -> Access {
        self.access
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        match self.view.tree().get(parent).map(|n| &n.kind) {
            None => {
                // The kernel only names inodes it was given: one this tree lacks is a bug to trace.
                tracing::warn!(parent, name, "lookup under an inode this mount does not have");
                Err(FsError::NotFound)
            }
            Some(NodeKind::File { .. }) => Err(FsError::NotADirectory),
            Some(NodeKind::Dir { .. }) => self.getattr(self.view.tree().lookup(parent, name).ok_or(FsError::NotFound)?),
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.view.tree().get(ino).ok_or(FsError::NotFound)?;
        let Access {
            uid,
            gid,
            file_mode,
            dir_mode,
            ..
        } = self.access;
        Ok(match &node.kind {
            NodeKind::Dir { children } => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                perm: dir_mode,
                nlink: 2 + children.len() as u32,
                mtime: self.mtime(None),
                uid,
                gid,
            },
            NodeKind::File { row, part } => Attr {
                ino,
                kind: Kind::File,
                size: row.size,
                perm: file_mode,
                nlink: 1,
                mtime: self.mtime(Some(*part)),
                uid,
                gid,
            },
        })
    }

    /// A file's time is its manifest's; a directory's the newest manifest shown.
    fn mtime(&self, part: Option<usize>) -> SystemTime {
        let parts = self.view.parts();
        let ms = match part {
            Some(i) => parts[i].manifest.created_at_ms,
            None => parts.iter().map(|p| p.manifest.created_at_ms).max().unwrap_or(0),
        };
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// The entries of a directory, `.` and `..` first.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, FsError> {
        let node = self.view.tree().get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::Dir { children } = &node.kind else {
            return Err(FsError::NotADirectory);
        };
        let mut entries = vec![
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: node.parent,
                kind: Kind::Dir,
                name: "..".into(),
            },
        ];
        for (name, &child) in children {
            let kind = match self.view.tree().get(child).map(|n| &n.kind) {
                Some(NodeKind::File { .. }) => Kind::File,
                _ => Kind::Dir,
            };
            entries.push(DirEntry {
                ino: child,
                kind,
                name: name.clone(),
            });
        }
        Ok(entries)
    }

    /// The object behind a file.
    pub fn object(&self, ino: u64) -> Result<Arc<ObjectHandle>, FsError> {
        Ok(self.view.object(ino)?)
    }

    pub fn open(&self, ino: u64, write: bool) -> Result<u64, FsError> {
        if write {
            return Err(FsError::ReadOnly);
        }
        let object = self.object(ino)?;
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let reader = Arc::new(FileReader::new(self.view.fetcher().clone(), object));
        lock(&self.handles).insert(handle, (ino, reader));
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    /// Serves handle `fh` of `ino`, opened by a previous server of the mount; new handles are
    /// numbered after it. Unknown inodes are left out (their reads fail as they would have).
    pub fn adopt_handle(&self, fh: u64, ino: u64) {
        self.next_handle.fetch_max(fh + 1, Ordering::Relaxed);
        if let Ok(object) = self.object(ino) {
            let reader = Arc::new(FileReader::new(self.view.fetcher().clone(), object));
            lock(&self.handles).insert(fh, (ino, reader));
        }
    }

    /// Counts an open that the FUSE layer handed to the kernel as a passthrough file. Its reads
    /// never reach this process, so while first touches are recorded it is noted as
    /// [`FirstTouches::note_unseen_open`] says.
    pub fn note_passthrough_open(&self, ino: u64) {
        self.counters.passthrough_opens.fetch_add(1, Ordering::Relaxed);
        if let (Some(touches), Ok(object)) = (self.touches.get(), self.object(ino)) {
            touches.note_unseen_open(ino, object.shape.block_size, object.size());
        }
    }

    pub fn release(&self, handle: u64) {
        lock(&self.handles).remove(&handle);
    }

    /// Reads through an open handle. Must run inside a tokio runtime.
    pub async fn read(&self, handle: u64, offset: u64, size: u32) -> Result<Pieces, FsError> {
        let ino = lock(&self.handles)
            .get(&handle)
            .map(|(ino, _)| *ino)
            .ok_or(FsError::BadHandle)?;
        self.read_at(handle, ino, offset, size).await
    }

    /// Reads `ino` through handle `fh`, as the kernel asks. The inode decides what is read: a
    /// handle this process does not know (opened by a server before it) gets a reader of its own.
    pub async fn read_at(&self, fh: u64, ino: u64, offset: u64, size: u32) -> Result<Pieces, FsError> {
        let known = lock(&self.handles)
            .get(&fh)
            .filter(|(of, _)| *of == ino)
            .map(|(_, r)| r.clone());
        let reader = match known {
            Some(reader) => reader,
            None => {
                let reader = Arc::new(FileReader::new(self.view.fetcher().clone(), self.object(ino)?));
                lock(&self.handles).entry(fh).or_insert_with(|| (ino, reader.clone()));
                reader
            }
        };
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(touches) = self.touches.get() {
            let object = reader.object();
            let blocks = object.blocks_for(offset..offset.saturating_add(u64::from(size)));
            touches.note(ino, blocks, object.shape.block_size, object.size());
        }
        match reader.read(offset, u64::from(size)).await {
            Ok(bytes) => {
                self.counters
                    .bytes_read
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(e) => {
                self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %reader.object().key, offset, size, error = %e, "read failed: EIO");
                Err(e.into())
            }
        }
    }

    /// Records this mount's first touches from now on (once; later calls are ignored).
    pub fn record_first_touches(&self, touches: Arc<FirstTouches>) {
        let _ = self.touches.set(touches);
    }

    pub fn xattr_names(&self, ino: u64) -> Result<Vec<&'static str>, FsError> {
        match self.view.tree().get(ino).ok_or(FsError::NotFound)?.kind {
            NodeKind::File { .. } => Ok(XATTRS.to_vec()),
            NodeKind::Dir { .. } => Ok(Vec::new()),
        }
    }

    pub fn xattr(&self, ino: u64, name: &str) -> Result<Vec<u8>, FsError> {
        let node = self.view.tree().get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::File { part, .. } = &node.kind else {
            return Err(FsError::NoAttribute);
        };
        let part = &self.view.parts()[*part];
        let object = self.object(ino)?;
        let status = || self.view.fetcher().cache().object_status(&object.id, object.shape);
        let value = match name {
            "user.lazysnap.volume" => part.volume.to_string(),
            "user.lazysnap.manifest" => part.manifest.name.clone(),
            "user.lazysnap.block_size" => object.shape.block_size.to_string(),
            "user.lazysnap.blocks_total" => object.shape.blocks().to_string(),
            "user.lazysnap.blocks_cached" => status().blocks_cached.to_string(),
            "user.lazysnap.cached_bytes" => status().bytes_cached.to_string(),
            "user.lazysnap.fetched_bytes" => status().bytes_fetched.to_string(),
            _ => return Err(FsError::NoAttribute),
        };
        Ok(value.into_bytes())
    }

    pub fn statfs(&self) -> StatFs {
        let bytes = self.view.total_bytes();
        StatFs {
            blocks: bytes.div_ceil(4096),
            files: self.view.tree().inode_count(),
            block_size: 4096,
            name_max: 255,
        }
    }

    pub fn file_count(&self) -> u64 {
        self.view.tree().file_count()
    }

    pub fn stats(&self) -> MountStats {
        MountStats {
            opens: self.counters.opens.load(Ordering::Relaxed),
            reads: self.counters.reads.load(Ordering::Relaxed),
            bytes_read: self.counters.bytes_read.load(Ordering::Relaxed),
            read_errors: self.counters.read_errors.load(Ordering::Relaxed),
            passthrough_opens: self.counters.passthrough_opens.load(Ordering::Relaxed),
            store: self.view.fetcher().stats(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
