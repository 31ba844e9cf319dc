//! Resolving what an operator names (a volume at its latest manifest, at a named manifest, or at a
//! snapshot) into index rows, reading the store only when the index does not know the answer yet.
//! Mounts and inspection both start here, so they agree on what a name means.

use object_store::path::Path;

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
