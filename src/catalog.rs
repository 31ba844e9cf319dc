//! Resolving what an operator names (a volume at its latest manifest, at a named manifest, or at a
//! snapshot; a backup location at a generation, a time or a seqno) into index rows, reading the
//! store only when the index does not know the answer yet. Mounts, restores and inspection all
//! start here, so they agree on what a name means.

use crate::chain::{self, ChainError};
use crate::index::{Index, IndexError, ManifestRow, SnapshotRow};
use crate::names::VolumeId;
use crate::snapshot::{self, SnapshotError};
use crate::store::{layout, Store, StoreError};

/// Which state of a volume to show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// The newest manifest in the store now.
    Latest,
    /// A manifest by name (`<seq>.json`, 20 digits).
    Manifest(String),
    /// The manifest a snapshot pins.
    Snapshot(String),
    /// A backup location's newest generation.
    Backup,
    /// A backup location's generation `n` (`metadata.<n>.dat`).
    Generation(u64),
    /// A backup location's newest generation created at or before this time (Unix ms).
    At(u64),
    /// A backup location's first generation whose files cover this seqno.
    Seqno(u64),
}

impl Selector {
    /// True for the views of a backup location rather than of a volume.
    pub fn is_backup(&self) -> bool {
        matches!(
            self,
            Selector::Backup | Selector::Generation(_) | Selector::At(_) | Selector::Seqno(_)
        )
    }

    /// The same view, pinned to the manifest (or generation) it resolved to, for a mount that must
    /// show the same files after a restart even if the volume moved on.
    pub fn pinned(&self, manifest_name: &str) -> Selector {
        match self {
            Selector::Latest => Selector::Manifest(manifest_name.to_string()),
            s if s.is_backup() => layout::parse_generation_name(manifest_name).map_or(s.clone(), Selector::Generation),
            s => s.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("backup location {location} has no generation yet")]
    NoGeneration { location: String },
    #[error("{at} is before the first generation of backup location {location} ({first})")]
    BeforeFirstGeneration {
        location: String,
        at: String,
        first: String,
    },
    #[error("seqno {seqno} is covered by no generation of backup location {location}{highest}")]
    SeqnoNotCovered {
        location: String,
        seqno: u64,
        highest: String,
    },
    #[error("a view of a backup location is named by a generation, a time or a seqno, not by {0:?}")]
    NotABackupSelector(Selector),
}

/// Resolves a selector to the manifest row it means (and the snapshot, when one was named).
pub async fn resolve(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    selector: &Selector,
) -> Result<(ManifestRow, Option<SnapshotRow>), CatalogError> {
    match selector {
        Selector::Latest => {
            let name = chain::head_name(store, volume).await?;
            Ok((chain::load_manifest(store, index, volume, &name).await?, None))
        }
        Selector::Manifest(name) => Ok((chain::load_manifest(store, index, volume, name).await?, None)),
        Selector::Snapshot(uuid) => {
            let snap = snapshot::read(store, volume, uuid).await?;
            index.put_snapshot(store.url(), &snap)?;
            let row = chain::load_manifest(store, index, volume, &snap.manifest_name).await?;
            Ok((row, Some(snap)))
        }
        backup => {
            // A backup location shows one volume: the one its generations name.
            let row = resolve_backup(store, index, backup).await?;
            if row.volume != *volume {
                return Err(ChainError::UnknownVolume {
                    store: store.url().to_string(),
                    volume: volume.clone(),
                }
                .into());
            }
            Ok((row, None))
        }
    }
}

/// Resolves a backup selector to the generation it means. A time or a seqno reads every
/// generation's file list once (then the index knows it).
pub async fn resolve_backup(location: &Store, index: &Index, selector: &Selector) -> Result<ManifestRow, CatalogError> {
    let url = || location.url().to_string();
    if let Selector::Generation(n) = selector {
        return Ok(chain::load_generation(location, index, *n).await?);
    }
    if !selector.is_backup() {
        return Err(CatalogError::NotABackupSelector(selector.clone()));
    }
    let numbers = chain::generations(location).await?;
    let (Some(&first), Some(&newest)) = (numbers.first(), numbers.last()) else {
        return Err(CatalogError::NoGeneration { location: url() });
    };
    match selector {
        Selector::At(at) => {
            let mut chosen = None;
            for &n in &numbers {
                let row = chain::load_generation(location, index, n).await?;
                if row.created_at_ms > *at {
                    break;
                }
                chosen = Some(row);
            }
            match chosen {
                Some(row) => Ok(row),
                None => {
                    let first = chain::load_generation(location, index, first).await?;
                    Err(CatalogError::BeforeFirstGeneration {
                        location: url(),
                        at: crate::time::format_time(*at),
                        first: format!(
                            "generation {} at {}",
                            first.seq,
                            crate::time::format_time(first.created_at_ms)
                        ),
                    })
                }
            }
        }
        Selector::Seqno(seqno) => {
            let mut highest = None;
            for &n in &numbers {
                let row = chain::load_generation(location, index, n).await?;
                for file in index.manifest_files(row.id)? {
                    if let (Some(low), Some(high)) = (file.low_seqno, file.high_seqno) {
                        if (low..=high).contains(seqno) {
                            return Ok(row);
                        }
                        highest = highest.max(Some(high));
                    }
                }
            }
            Err(CatalogError::SeqnoNotCovered {
                location: url(),
                seqno: *seqno,
                highest: highest.map_or_else(
                    || " (no file records a seqno range)".to_string(),
                    |h| format!(" (highest covered: {h})"),
                ),
            })
        }
        _ => Ok(chain::load_generation(location, index, newest).await?),
    }
}
