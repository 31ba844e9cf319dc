//! ScyllaDB backups as lazy views: manifests are ingested into the index (one row per sstable,
//! like ScyllaDB's `snapshot_sstables`, plus each table's tablet layout), and a view picks the
//! sstables of a snapshot's table by datacenter, rack, node, tablet or token range. A view is an
//! ordinary manifest of foreign objects pinned by ETag, so mounts and restore jobs show it as they
//! show any volume, in the flat layout of a table's upload directory.

mod ingest;
mod view;

pub use ingest::{ingest, IngestReport, IngestedManifest, ManifestSource};
pub use view::{resolve, Filter, ResolvedView, Spanning};

use crate::index::IndexError;
use crate::manifest::ManifestError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ScyllaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest {key} not found in store {store}")]
    ManifestNotFound { store: String, key: String },
    #[error("manifest {manifest}: {detail}")]
    MissingToc { manifest: String, detail: String },
    #[error("store {store} gives no ETag for {key}: lazysnap cannot pin the object it reads")]
    NoEtag { store: String, key: String },
    #[error("the TOC {toc} of sstable {sstable}: {reason}")]
    BadToc {
        sstable: String,
        toc: String,
        reason: String,
    },
    #[error("sstable {sstable}: component {file}, listed in its TOC, is missing from store {store}")]
    MissingComponent {
        sstable: String,
        file: String,
        store: String,
    },
    #[error("no table {keyspace}.{table} in snapshot {snapshot} is ingested{known}")]
    UnknownTable {
        snapshot: String,
        keyspace: String,
        table: String,
        known: String,
    },
    #[error("{0}")]
    BadFilter(String),
    #[error("{0}")]
    Collision(String),
}
