//! Filesystem semantics of a mount, on lazysnap's own types and testable without a kernel: the
//! `fuse` adapter only translates. A mount shows one or more volumes, each at one manifest, as
//! `<volumeID>/<files>`; the tree comes from the index, reads go through the fetcher.

mod error;
mod local;
mod tree;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::fetch::{FetchStatsSnapshot, Fetcher, FileReader, ObjectHandle, Pieces};
use crate::index::{Index, ManifestRow, SnapshotRow};
use crate::names::VolumeId;
use crate::store::{layout, Store};

pub use error::FsError;
pub use local::LocalCopy;
pub use tree::ROOT;
use tree::{NodeKind, Tree};

/// One volume as a mount shows it.
#[derive(Debug, Clone)]
pub struct VolumeView {
    pub volume: VolumeId,
    pub manifest: ManifestRow,
    pub snapshot: Option<SnapshotRow>,
    /// The store the files are in, when not the fetcher's (a view over several stores).
    pub store: Option<Store>,
    /// Files at the mount's root rather than under `<volumeID>/` (a ScyllaDB upload directory).
    pub flat: bool,
}

impl VolumeView {
    /// A volume of the mount's own store, shown under `<volumeID>/`.
    pub fn in_folder(volume: VolumeId, manifest: ManifestRow, snapshot: Option<SnapshotRow>) -> VolumeView {
        VolumeView {
            volume,
            manifest,
            snapshot,
            store: None,
            flat: false,
        }
    }
}

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
    tree: Tree,
    views: Vec<VolumeView>,
    index: Arc<Index>,
    fetcher: Arc<Fetcher>,
    objects: Mutex<HashMap<u64, Arc<ObjectHandle>>>,
    /// Open handles: the inode each reads, and its reader (sequential detection, readahead).
    handles: Mutex<HashMap<u64, (u64, Arc<FileReader>)>>,
    next_handle: AtomicU64,
    counters: Counters,
    verifying: local::Verifying,
    owner: (u32, u32),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LazyFs {
    /// Builds the tree of `views` from the index. `owner` is the (uid, gid) files appear to have.
    pub fn new(
        index: Arc<Index>,
        fetcher: Arc<Fetcher>,
        views: Vec<VolumeView>,
        owner: (u32, u32),
    ) -> Result<LazyFs, String> {
        let mut tree = Tree::new();
        for (i, view) in views.iter().enumerate() {
            let files = index.manifest_files(view.manifest.id).map_err(|e| e.to_string())?;
            let folder = (!view.flat).then_some(&view.volume);
            tree.add_volume(folder, i, files)?;
        }
        Ok(LazyFs {
            tree,
            views,
            index,
            fetcher,
            objects: Mutex::default(),
            handles: Mutex::default(),
            next_handle: AtomicU64::new(1),
            counters: Counters::default(),
            verifying: local::Verifying::default(),
            owner,
        })
    }

    pub fn views(&self) -> &[VolumeView] {
        &self.views
    }

    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    /// Every file of the mount as (inode, size), in path order within each volume.
    pub fn files(&self) -> Vec<(u64, u64)> {
        (1..=self.tree.len())
            .filter_map(|ino| match &self.tree.get(ino)?.kind {
                NodeKind::File { row, .. } => Some((ino, row.size)),
                NodeKind::Dir { .. } => None,
            })
            .collect()
    }

    /// Every file of view `volume` as (inode, path in the volume, size), in path order.
    pub fn volume_files(&self, volume: usize) -> Vec<(u64, crate::names::RelPath, u64)> {
        (1..=self.tree.len())
            .filter_map(|ino| match &self.tree.get(ino)?.kind {
                NodeKind::File { row, volume: v } if *v == volume => Some((ino, row.path.clone(), row.size)),
                _ => None,
            })
            .collect()
    }

    /// Bytes of the files of view `volume` that are not cached on this node: what reads would
    /// still fetch from the store. Reads each file's cache map; for status, not for every read.
    pub fn bytes_not_local(&self, volume: usize) -> u64 {
        (1..=self.tree.len())
            .filter_map(|ino| match &self.tree.get(ino)?.kind {
                NodeKind::File { row, volume: v } if *v == volume => Some((ino, row.size)),
                _ => None,
            })
            .map(|(ino, size)| match self.object(ino) {
                Ok(object) => {
                    let cached = self
                        .fetcher
                        .cache()
                        .object_status(&object.id, object.shape)
                        .bytes_cached;
                    size.saturating_sub(cached)
                }
                Err(_) => size,
            })
            .sum()
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        match self.tree.get(parent).map(|n| &n.kind) {
            None => Err(FsError::NotFound),
            Some(NodeKind::File { .. }) => Err(FsError::NotADirectory),
            Some(NodeKind::Dir { .. }) => self.getattr(self.tree.lookup(parent, name).ok_or(FsError::NotFound)?),
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.tree.get(ino).ok_or(FsError::NotFound)?;
        let (uid, gid) = self.owner;
        Ok(match &node.kind {
            NodeKind::Dir { children } => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                perm: 0o555,
                nlink: 2 + children.len() as u32,
                mtime: self.mtime(None),
                uid,
                gid,
            },
            NodeKind::File { row, volume } => Attr {
                ino,
                kind: Kind::File,
                size: row.size,
                perm: 0o444,
                nlink: 1,
                mtime: self.mtime(Some(*volume)),
                uid,
                gid,
            },
        })
    }

    /// A file's time is its manifest's; a directory's the newest manifest shown.
    fn mtime(&self, volume: Option<usize>) -> SystemTime {
        let ms = match volume {
            Some(i) => self.views[i].manifest.created_at_ms,
            None => self.views.iter().map(|v| v.manifest.created_at_ms).max().unwrap_or(0),
        };
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// The entries of a directory, `.` and `..` first.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, FsError> {
        let node = self.tree.get(ino).ok_or(FsError::NotFound)?;
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
            let kind = match self.tree.get(child).map(|n| &n.kind) {
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

    /// The object behind a file, with its checksums loaded from the index once.
    pub fn object(&self, ino: u64) -> Result<Arc<ObjectHandle>, FsError> {
        if let Some(object) = lock(&self.objects).get(&ino) {
            return Ok(object.clone());
        }
        let node = self.tree.get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::File { row, volume } = &node.kind else {
            return Err(FsError::IsADirectory);
        };
        let view = &self.views[*volume];
        let checksums = self.index.file_integrity(row.id)?;
        let key = layout::object_of(&view.volume, &row.path, row.object_key.as_deref());
        let object = Arc::new(self.fetcher.handle(
            view.store.as_ref().unwrap_or(self.fetcher.store()),
            key,
            row.size,
            view.manifest.block_size,
            checksums,
        ));
        lock(&self.objects).insert(ino, object.clone());
        Ok(object)
    }

    pub fn open(&self, ino: u64, write: bool) -> Result<u64, FsError> {
        if write {
            return Err(FsError::ReadOnly);
        }
        let object = self.object(ino)?;
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let reader = Arc::new(FileReader::new(self.fetcher.clone(), object));
        lock(&self.handles).insert(handle, (ino, reader));
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    /// Serves handle `fh` of `ino`, opened by a previous server of the mount; new handles are
    /// numbered after it. Unknown inodes are left out (their reads fail as they would have).
    pub fn adopt_handle(&self, fh: u64, ino: u64) {
        self.next_handle.fetch_max(fh + 1, Ordering::Relaxed);
        if let Ok(object) = self.object(ino) {
            let reader = Arc::new(FileReader::new(self.fetcher.clone(), object));
            lock(&self.handles).insert(fh, (ino, reader));
        }
    }

    /// A digest of the inode tree: every inode's number, parent, name, kind and size. A server
    /// that takes over a mount must show the very same tree, since the kernel holds its inodes.
    pub fn fingerprint(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for ino in 1..=self.tree.len() {
            let Some(node) = self.tree.get(ino) else { continue };
            hasher.update(&ino.to_le_bytes());
            hasher.update(&node.parent.to_le_bytes());
            match &node.kind {
                NodeKind::Dir { children } => {
                    for (name, child) in children {
                        hasher.update(name.as_bytes());
                        hasher.update(&[0]);
                        hasher.update(&child.to_le_bytes());
                    }
                }
                NodeKind::File { row, volume } => {
                    hasher.update(row.path.as_str().as_bytes());
                    hasher.update(&[1]);
                    hasher.update(&row.size.to_le_bytes());
                    hasher.update(&(*volume as u64).to_le_bytes());
                }
            }
        }
        hasher.finalize().to_hex()[..32].to_string()
    }

    /// Counts an open that the FUSE layer handed to the kernel as a passthrough file.
    pub fn count_passthrough_open(&self) {
        self.counters.passthrough_opens.fetch_add(1, Ordering::Relaxed);
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
                let reader = Arc::new(FileReader::new(self.fetcher.clone(), self.object(ino)?));
                lock(&self.handles).entry(fh).or_insert_with(|| (ino, reader.clone()));
                reader
            }
        };
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
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

    pub fn xattr_names(&self, ino: u64) -> Result<Vec<&'static str>, FsError> {
        match self.tree.get(ino).ok_or(FsError::NotFound)?.kind {
            NodeKind::File { .. } => Ok(XATTRS.to_vec()),
            NodeKind::Dir { .. } => Ok(Vec::new()),
        }
    }

    pub fn xattr(&self, ino: u64, name: &str) -> Result<Vec<u8>, FsError> {
        let node = self.tree.get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::File { volume, .. } = &node.kind else {
            return Err(FsError::NoAttribute);
        };
        let view = &self.views[*volume];
        let object = self.object(ino)?;
        let status = || self.fetcher.cache().object_status(&object.id, object.shape);
        let value = match name {
            "user.lazysnap.volume" => view.volume.to_string(),
            "user.lazysnap.manifest" => view.manifest.name.clone(),
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
        let bytes: u64 = self.views.iter().map(|v| v.manifest.total_bytes).sum();
        StatFs {
            blocks: bytes.div_ceil(4096),
            files: self.tree.len(),
            block_size: 4096,
            name_max: 255,
        }
    }

    pub fn file_count(&self) -> u64 {
        self.tree.file_count()
    }

    pub fn stats(&self) -> MountStats {
        MountStats {
            opens: self.counters.opens.load(Ordering::Relaxed),
            reads: self.counters.reads.load(Ordering::Relaxed),
            bytes_read: self.counters.bytes_read.load(Ordering::Relaxed),
            read_errors: self.counters.read_errors.load(Ordering::Relaxed),
            passthrough_opens: self.counters.passthrough_opens.load(Ordering::Relaxed),
            store: self.fetcher.stats(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
