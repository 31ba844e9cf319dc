//! Resolving what an operator names (a volume at its latest manifest, at a named manifest, or at a
//! snapshot; a backup location at a generation, a time or a seqno) into index rows, reading the
//! store only when the index does not know the answer yet. Mounts, restores and inspection all
//! start here, so they agree on what a name means.

use object_store::path::Path;

use crate::backup::{self, BackupError};
use crate::index::{Index, IndexError, ManifestRow, SnapshotRow};
use crate::manifest::{native, ManifestError};
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
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("volume {volume} not found in store {store}")]
    UnknownVolume { store: String, volume: VolumeId },
    #[error("manifest {name} of volume {volume} not found in store {store}")]
    UnknownManifest {
        store: String,
        volume: VolumeId,
        name: String,
    },
    #[error("backup location {location} has no generation {generation}")]
    UnknownGeneration { location: String, generation: u64 },
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
    #[error(transparent)]
    Backup(Box<BackupError>),
}

impl From<BackupError> for CatalogError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::UnknownGeneration { location, generation } => {
                CatalogError::UnknownGeneration { location, generation }
            }
            BackupError::Store(e) => CatalogError::Store(e),
            BackupError::Manifest(e) => CatalogError::Manifest(e),
            other => CatalogError::Backup(Box::new(other)),
        }
    }
}

/// RFC 3339 in UTC to the millisecond: typed back into `--at`, it selects that very generation.
pub fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// The names of a volume's manifests in the store, oldest first (empty for an unknown volume).
pub async fn manifest_names(store: &Store, volume: &VolumeId) -> Result<Vec<String>, StoreError> {
    let (_, objects) = store.list_children(&layout::manifests_dir(volume)).await?;
    let mut names: Vec<String> = objects
        .iter()
        .filter_map(|o| o.key.filename().map(str::to_string))
        .filter(|name| layout::parse_manifest_name(name).is_some())
        .collect();
    names.sort();
    Ok(names)
}

/// The newest manifest name of a volume in the store, if it has any.
pub async fn latest_manifest_name(store: &Store, volume: &VolumeId) -> Result<Option<String>, StoreError> {
    Ok(manifest_names(store, volume).await?.pop())
}

/// The manifest `name` of `volume`, from the index or else read from the store and indexed.
pub async fn load_manifest(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    name: &str,
) -> Result<ManifestRow, CatalogError> {
    if let Some(row) = index.manifest(store.url(), volume, name)? {
        return Ok(row);
    }
    if layout::parse_manifest_name(name).is_none() {
        return Err(CatalogError::UnknownManifest {
            store: store.url().to_string(),
            volume: volume.clone(),
            name: name.to_string(),
        });
    }
    let bytes = store
        .get(&layout::manifest_key(volume, name))
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => CatalogError::UnknownManifest {
                store: store.url().to_string(),
                volume: volume.clone(),
                name: name.to_string(),
            },
            other => other.into(),
        })?;
    let manifest = native::parse(&bytes, volume, name)?;
    Ok(index.insert_manifest(store.url(), &manifest)?)
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
            let name = latest_manifest_name(store, volume)
                .await?
                .ok_or_else(|| CatalogError::UnknownVolume {
                    store: store.url().to_string(),
                    volume: volume.clone(),
                })?;
            Ok((load_manifest(store, index, volume, &name).await?, None))
        }
        Selector::Manifest(name) => Ok((load_manifest(store, index, volume, name).await?, None)),
        Selector::Snapshot(uuid) => {
            let snap = snapshot::read(store, volume, uuid).await?;
            index.put_snapshot(store.url(), &snap)?;
            let row = load_manifest(store, index, volume, &snap.manifest_name).await?;
            Ok((row, Some(snap)))
        }
        backup => {
            // A backup location shows one volume: the one its generations name.
            let row = resolve_backup(store, index, backup).await?;
            if row.volume != *volume {
                return Err(CatalogError::UnknownVolume {
                    store: store.url().to_string(),
                    volume: volume.clone(),
                });
            }
            Ok((row, None))
        }
    }
}

/// Generation `n` of a backup location, from the index or else read from the location and indexed.
pub async fn load_generation(location: &Store, index: &Index, generation: u64) -> Result<ManifestRow, CatalogError> {
    let name = layout::generation_name(generation);
    if let Some(row) = index.manifest_in_store(location.url(), &name)? {
        return Ok(row);
    }
    let read = backup::read_generation(location, generation).await?;
    Ok(index.insert_manifest(location.url(), &read.manifest)?)
}

/// Resolves a backup selector to the generation it means. A time or a seqno reads every
/// generation's file list once (then the index knows it).
pub async fn resolve_backup(location: &Store, index: &Index, selector: &Selector) -> Result<ManifestRow, CatalogError> {
    let url = || location.url().to_string();
    if let Selector::Generation(n) = selector {
        return load_generation(location, index, *n).await;
    }
    if !selector.is_backup() {
        return Err(CatalogError::NotABackupSelector(selector.clone()));
    }
    let numbers = backup::generations(location).await?;
    let (Some(&first), Some(&newest)) = (numbers.first(), numbers.last()) else {
        return Err(CatalogError::NoGeneration { location: url() });
    };
    match selector {
        Selector::At(at) => {
            let mut chosen = None;
            for &n in &numbers {
                let row = load_generation(location, index, n).await?;
                if row.created_at_ms > *at {
                    break;
                }
                chosen = Some(row);
            }
            match chosen {
                Some(row) => Ok(row),
                None => {
                    let first = load_generation(location, index, first).await?;
                    Err(CatalogError::BeforeFirstGeneration {
                        location: url(),
                        at: format_time(*at),
                        first: format!("generation {} at {}", first.seq, format_time(first.created_at_ms)),
                    })
                }
            }
        }
        Selector::Seqno(seqno) => {
            let mut highest = None;
            for &n in &numbers {
                let row = load_generation(location, index, n).await?;
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
        _ => load_generation(location, index, newest).await,
    }
}

/// Every volume in a store: folders under `volumes/` whose `manifests` folder holds a manifest.
pub async fn list_volumes(store: &Store) -> Result<Vec<VolumeId>, StoreError> {
    let mut found = Vec::new();
    let mut pending = vec![Path::from(layout::VOLUMES)];
    while let Some(dir) = pending.pop() {
        let (children, _) = store.list_children(&dir).await?;
        for child in children {
            let name = child.filename().unwrap_or_default();
            if name == "manifests" {
                let id = dir.as_ref().strip_prefix("volumes/").unwrap_or_default();
                // A deleted volume may leave empty folders behind (a local directory store keeps
                // them): only one with a manifest is there.
                if let Ok(volume) = VolumeId::parse(id) {
                    if !manifest_names(store, &volume).await?.is_empty() {
                        found.push(volume);
                    }
                }
            } else if !crate::names::RESERVED_COMPONENTS.contains(&name) {
                pending.push(child);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// What [`sync`] read into the index.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub volumes: u64,
    pub manifests: u64,
    pub snapshots: u64,
}

/// Reads every manifest and snapshot record of `volumes` (all volumes of the store when `None`)
/// into the index, so later mounts need nothing but the index. Stops at the first error: a partial
/// index is still correct, since every row it holds was read and validated whole.
pub async fn sync(store: &Store, index: &Index, volumes: Option<Vec<VolumeId>>) -> Result<SyncReport, CatalogError> {
    let volumes = match volumes {
        Some(volumes) => volumes,
        None => list_volumes(store).await?,
    };
    let mut report = SyncReport::default();
    for volume in volumes {
        let names = manifest_names(store, &volume).await?;
        if names.is_empty() {
            return Err(CatalogError::UnknownVolume {
                store: store.url().to_string(),
                volume,
            });
        }
        for name in names {
            load_manifest(store, index, &volume, &name).await?;
            report.manifests += 1;
        }
        for snapshot in snapshot::list(store, &volume, crate::now_ms()).await? {
            index.put_snapshot(store.url(), &snapshot.to_row(&volume))?;
            report.snapshots += 1;
        }
        report.volumes += 1;
    }
    Ok(report)
}
