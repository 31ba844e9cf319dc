//! A view: the files a mount shows, `ls`/`cat`/`stat` read and a restore copies, with the fetcher
//! that reads them. Every front end gets its view from [`Reading::build`], so they agree on what a
//! name means, read through the same cache and checksum recall, and live within one memory plan.
//!
//! A view is one or more parts, each a volume at one manifest (or the pinned objects of a ScyllaDB
//! view in one store), laid out in one inode tree built from the index once; inodes never change
//! while the view lives, which is what lets a new daemon take a mount over.

mod reading;
mod tree;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::catalog::CatalogError;
use crate::fetch::{Fetcher, ObjectHandle};
use crate::index::{Index, IndexError, ManifestRow, SnapshotRow};
use crate::manifest::scylla::sstable;
use crate::names::{RelPath, VolumeId};
use crate::scylla::ScyllaError;
use crate::store::{layout, Store, StoreError};

pub use reading::{PlannedPart, Reading, ReadingConfig, Resolved, ViewSpec};
pub use tree::{Node, NodeKind, Tree, ROOT};

/// Where a part's files appear in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Under `<volumeID>/`: several volumes side by side.
    InVolumeFolder,
    /// At the view's root (a ScyllaDB upload directory holds sstables directly).
    AtRoot,
}

/// One volume at one manifest, as a view shows it.
#[derive(Debug, Clone)]
pub struct VolumeView {
    pub volume: VolumeId,
    pub manifest: ManifestRow,
    pub snapshot: Option<SnapshotRow>,
    /// The store the files are in, when not the fetcher's (a view over several stores).
    pub store: Option<Store>,
    pub placement: Placement,
    /// The ID its folder carries when not its own: a Fusion restore shows a snapshot's volume
    /// under the new bucket's volume ID (`dstVolumeID`).
    pub shown_as: Option<VolumeId>,
}

impl VolumeView {
    /// A volume of the view's own store, shown under `<volumeID>/`.
    pub fn in_folder(volume: VolumeId, manifest: ManifestRow, snapshot: Option<SnapshotRow>) -> VolumeView {
        VolumeView {
            volume,
            manifest,
            snapshot,
            store: None,
            placement: Placement::InVolumeFolder,
            shown_as: None,
        }
    }

    /// The folder its files appear under, for [`Placement::InVolumeFolder`].
    pub fn folder(&self) -> &VolumeId {
        self.shown_as.as_ref().unwrap_or(&self.volume)
    }
}

/// What a kind of view adds to copying it: files that belong together (a ScyllaDB sstable's
/// components) and a digest a file must match before it takes its final name. A view without
/// rules is copied file by file.
pub trait CopyRules: Send + Sync + std::fmt::Debug {
    /// The group `path` belongs to; a group is done when all its files are.
    fn group(&self, path: &RelPath) -> Option<String>;
    /// The file of the view holding the CRC32 that the copy of `path` must have.
    fn digest_file(&self, path: &RelPath) -> Option<RelPath>;
    /// The CRC32 a digest file's content states; `None` checks nothing.
    fn parse_digest(&self, content: &[u8]) -> Option<u32>;
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no file with inode {0} in this view")]
    NoSuchFile(u64),
    #[error("inode {0} is a directory")]
    IsADirectory(u64),
    #[error("{0}")]
    Layout(String),
    #[error("a view needs at least one volume")]
    NoVolume,
    #[error("{what} now shows {now}, not {pinned}")]
    Moved { what: String, now: String, pinned: String },
    #[error("no sstable of {0} is on the datacenter, rack and node asked for")]
    NoSstableThere(String),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(Box<CatalogError>),
    #[error(transparent)]
    Scylla(Box<ScyllaError>),
}

impl From<CatalogError> for ViewError {
    fn from(e: CatalogError) -> Self {
        ViewError::Catalog(Box::new(e))
    }
}

impl From<ScyllaError> for ViewError {
    fn from(e: ScyllaError) -> Self {
        ViewError::Scylla(Box::new(e))
    }
}

/// One file of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFile {
    pub ino: u64,
    /// Its path in its volume (at the view's root for a part placed there).
    pub path: RelPath,
    pub size: u64,
}

/// The files of a view and the fetcher that reads them.
#[derive(Debug)]
pub struct View {
    tree: Tree,
    parts: Vec<VolumeView>,
    index: Arc<Index>,
    fetcher: Arc<Fetcher>,
    objects: Mutex<HashMap<u64, Arc<ObjectHandle>>>,
    rules: Option<Arc<dyn CopyRules>>,
}

impl View {
    /// Lays `parts` out in one tree from the index; parts whose files would collide are refused.
    pub fn new(
        index: Arc<Index>,
        fetcher: Arc<Fetcher>,
        parts: Vec<VolumeView>,
        rules: Option<Arc<dyn CopyRules>>,
    ) -> Result<View, ViewError> {
        let mut tree = Tree::new();
        for (i, part) in parts.iter().enumerate() {
            let files = index.manifest_files(part.manifest.id)?;
            let folder = (part.placement == Placement::InVolumeFolder).then(|| part.folder());
            tree.add_part(folder, i, files).map_err(ViewError::Layout)?;
        }
        Ok(View {
            tree,
            parts,
            index,
            fetcher,
            objects: Mutex::default(),
            rules,
        })
    }

    pub fn parts(&self) -> &[VolumeView] {
        &self.parts
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    pub fn rules(&self) -> Option<&dyn CopyRules> {
        self.rules.as_deref()
    }

    pub fn file_count(&self) -> u64 {
        self.tree.file_count()
    }

    /// Bytes of every file shown.
    pub fn total_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.manifest.total_bytes).sum()
    }

    /// Every file, in path order within each part.
    pub fn files(&self) -> Vec<ViewFile> {
        self.file_nodes(None).collect()
    }

    /// Every file of part `part`, in path order.
    pub fn part_files(&self, part: usize) -> Vec<ViewFile> {
        self.file_nodes(Some(part)).collect()
    }

    fn file_nodes(&self, part: Option<usize>) -> impl Iterator<Item = ViewFile> + '_ {
        (1..=self.tree.inode_count()).filter_map(move |ino| match &self.tree.get(ino)?.kind {
            NodeKind::File { row, part: of } if part.is_none_or(|p| p == *of) => Some(ViewFile {
                ino,
                path: row.path.clone(),
                size: row.size,
            }),
            _ => None,
        })
    }

    /// The inode of `path` in part `part`'s files.
    pub fn find(&self, part: usize, path: &RelPath) -> Option<u64> {
        let start = match self.parts.get(part)?.placement {
            Placement::AtRoot => ROOT,
            Placement::InVolumeFolder => self.parts[part]
                .folder()
                .components()
                .try_fold(ROOT, |dir, name| self.tree.lookup(dir, name))?,
        };
        path.components()
            .try_fold(start, |dir, name| self.tree.lookup(dir, name))
    }

    /// Bytes of part `part`'s files that are not cached on this node: what reads would still
    /// fetch from the store. Reads each file's cache map; for status, not for every read.
    pub fn bytes_not_local(&self, part: usize) -> u64 {
        self.part_files(part)
            .into_iter()
            .map(|file| match self.object(file.ino) {
                Ok(object) => {
                    let cached = self
                        .fetcher
                        .cache()
                        .object_status(&object.id, object.shape)
                        .bytes_cached;
                    file.size.saturating_sub(cached)
                }
                Err(_) => file.size,
            })
            .sum()
    }

    /// The object behind a file, with its checksums loaded from the index once (and those learned
    /// of a foreign object recalled).
    pub fn object(&self, ino: u64) -> Result<Arc<ObjectHandle>, ViewError> {
        if let Some(object) = lock(&self.objects).get(&ino) {
            return Ok(object.clone());
        }
        let node = self.tree.get(ino).ok_or(ViewError::NoSuchFile(ino))?;
        let NodeKind::File { row, part } = &node.kind else {
            return Err(ViewError::IsADirectory(ino));
        };
        let part = &self.parts[*part];
        let checksums = self.index.file_integrity(row.id)?;
        let key = layout::object_of(&part.volume, &row.path, row.object_key.as_deref());
        let object = Arc::new(self.fetcher.handle(
            part.store.as_ref().unwrap_or(self.fetcher.store()),
            key,
            row.size,
            part.manifest.block_size,
            checksums,
        ));
        lock(&self.objects).insert(ino, object.clone());
        Ok(object)
    }

    /// A digest of the inode tree: every inode's number, parent, name, kind and size. A server
    /// that takes over a mount must show the very same tree, since the kernel holds its inodes.
    pub fn fingerprint(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for ino in 1..=self.tree.inode_count() {
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
                NodeKind::File { row, part } => {
                    hasher.update(row.path.as_str().as_bytes());
                    hasher.update(&[1]);
                    hasher.update(&row.size.to_le_bytes());
                    hasher.update(&(*part as u64).to_le_bytes());
                }
            }
        }
        hasher.finalize().to_hex()[..32].to_string()
    }
}

/// The rules of a ScyllaDB view: an sstable's components are copied as one, and `Data.db` must
/// match its `Digest.crc32` before it takes its final name (ScyllaDB checks it only at load).
#[derive(Debug)]
pub struct SstableRules;

impl CopyRules for SstableRules {
    fn group(&self, path: &RelPath) -> Option<String> {
        Some(sstable::component_prefix(path.as_str()).to_string())
    }

    fn digest_file(&self, path: &RelPath) -> Option<RelPath> {
        RelPath::parse(&sstable::digest_of(path.as_str())?).ok()
    }

    fn parse_digest(&self, content: &[u8]) -> Option<u32> {
        sstable::parse_digest(content)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
