//! The chains lazysnap reads from a store: a volume's log manifests (`<seq>.json`, each naming the
//! whole volume) and a backup location's generations (`metadata.<n>.dat`). Each is read and
//! validated once, then the index answers; every lifecycle operation and every view starts here,
//! so they agree on what a volume's head is.

use object_store::path::Path;

use crate::index::{Index, IndexError, ManifestRow};
use crate::manifest::backup::{self as generation_format, Generation};
use crate::manifest::{native, Manifest, ManifestError};
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
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
}

/// The names of a volume's manifests in the store, oldest first (empty for an unknown volume).
pub async fn manifest_names(store: &Store, volume: &VolumeId) -> Result<Vec<String>, StoreError> {
    let (_, objects) = store.list_children(&layout::manifests_dir(volume)).await?;
    Ok(manifest_names_in(&objects))
}

/// The manifest names among a listing of a volume's manifests folder, oldest first.
pub fn manifest_names_in(objects: &[crate::store::ObjectInfo]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .filter_map(|o| o.key.filename().map(str::to_string))
        .filter(|name| layout::parse_manifest_name(name).is_some())
        .collect();
    names.sort();
    names
}

/// The newest manifest name of a volume in the store, if it has any.
pub async fn latest_manifest_name(store: &Store, volume: &VolumeId) -> Result<Option<String>, StoreError> {
    Ok(manifest_names(store, volume).await?.pop())
}

/// The newest manifest name of a volume; [`ChainError::UnknownVolume`] when it has none.
pub async fn head_name(store: &Store, volume: &VolumeId) -> Result<String, ChainError> {
    latest_manifest_name(store, volume)
        .await?
        .ok_or_else(|| ChainError::UnknownVolume {
            store: store.url().to_string(),
            volume: volume.clone(),
        })
}

/// The manifest `name` of `volume`, from the index or else read from the store and indexed.
pub async fn load_manifest(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    name: &str,
) -> Result<ManifestRow, ChainError> {
    if let Some(row) = index.manifest(store.url(), volume, name)? {
        return Ok(row);
    }
    let manifest = read_manifest(store, volume, name).await?;
    let started = std::time::Instant::now();
    let row = index.insert_manifest(store.url(), &manifest)?;
    tracing::debug!(%volume, name, took = ?started.elapsed(), "manifest indexed");
    Ok(row)
}

/// The manifest `name` of `volume` as the store has it now, read and validated (the index is
/// neither asked nor filled).
pub async fn read_manifest(store: &Store, volume: &VolumeId, name: &str) -> Result<Manifest, ChainError> {
    let unknown = || ChainError::UnknownManifest {
        store: store.url().to_string(),
        volume: volume.clone(),
        name: name.to_string(),
    };
    if layout::parse_manifest_name(name).is_none() {
        return Err(unknown());
    }
    let started = std::time::Instant::now();
    let bytes = store
        .get(&layout::manifest_key(volume, name))
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => unknown(),
            other => other.into(),
        })?;
    let read_in = started.elapsed();
    let manifest = native::parse(&bytes, volume, name)?;
    tracing::debug!(%volume, name, ?read_in, parsed_in = ?started.elapsed() - read_in, "manifest read");
    Ok(manifest)
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

/// The generation numbers in a backup location, oldest first.
pub async fn generations(location: &Store) -> Result<Vec<u64>, StoreError> {
    let (_, objects) = location.list_children(&Path::default()).await?;
    let mut numbers: Vec<u64> = objects
        .iter()
        .filter_map(|o| o.key.filename().and_then(layout::parse_generation_name))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Reads and validates generation `n` of a backup location.
pub async fn read_generation(location: &Store, generation: u64) -> Result<Generation, ChainError> {
    let name = layout::generation_name(generation);
    let bytes = location.get(&Path::from(name.as_str())).await.map_err(|e| match e {
        StoreError::NotFound { .. } => ChainError::UnknownGeneration {
            location: location.url().to_string(),
            generation,
        },
        other => other.into(),
    })?;
    Ok(generation_format::parse(&bytes, &location.url().to_string(), &name)?)
}

/// Generation `n` of a backup location, from the index or else read from the location and indexed.
pub async fn load_generation(location: &Store, index: &Index, generation: u64) -> Result<ManifestRow, ChainError> {
    let name = layout::generation_name(generation);
    if let Some(row) = index.manifest_in_store(location.url(), &name)? {
        return Ok(row);
    }
    let read = read_generation(location, generation).await?;
    Ok(index.insert_manifest(location.url(), &read.manifest)?)
}
