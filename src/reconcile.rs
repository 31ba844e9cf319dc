//! The index against its store. The index caches what was read from a store; after a crash
//! between a store write and the index write that follows it (a snapshot released, a namespace
//! deleted, a publish whose manifest never landed), it can hold rows the store no longer backs.
//! [`check`] says where the two disagree without changing either; [`sync`] reads the store again
//! and drops what it no longer backs, after which `check` finds nothing.
//!
//! What counts as agreement: every manifest the index holds that the store still has is the same
//! manifest (same term, blocks and files with the same checksums); a manifest the store lacks is
//! one GC removed (below the store's head; names are never reused), not one above the head or of a
//! volume the store no longer has; a snapshot the index takes as live (committed, not expired) is
//! live in the store and pins the same manifest. Rows the index lacks are not disagreements: it
//! is filled on demand.

use std::collections::BTreeMap;

use crate::chain::{self, ChainError};
use crate::index::{Index, IndexError, ManifestRow, SnapshotRow};
use crate::manifest::Manifest;
use crate::names::VolumeId;
use crate::snapshot::{self, SnapshotError, State};
use crate::store::{layout, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What [`check`] compared and where the index disagrees with the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub volumes: u64,
    pub manifests_compared: u64,
    pub snapshots_compared: u64,
    /// One sentence per disagreement, naming the volume and the row.
    pub disagreements: Vec<String>,
}

/// What [`sync`] read into the index and what it dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub volumes: u64,
    pub manifests: u64,
    pub snapshots: u64,
    /// Manifest and snapshot rows the store no longer backs, dropped from the index.
    pub forgotten: u64,
}

/// Compares the index's rows of `volumes` (default: every volume the store or the index knows of
/// that store) with the store; changes nothing.
pub async fn check(
    store: &Store,
    index: &Index,
    volumes: Option<Vec<VolumeId>>,
) -> Result<CheckReport, ReconcileError> {
    let volumes = match volumes {
        Some(volumes) => volumes,
        None => known_volumes(store, index).await?,
    };
    let now_ms = crate::time::now_ms();
    let mut report = CheckReport::default();
    for volume in volumes {
        let names = chain::manifest_names(store, &volume).await?;
        for row in index.volume_manifests(store.url(), &volume)? {
            if let Some(why) = manifest_disagreement(store, index, &volume, &names, &row).await? {
                report.disagreements.push(why);
            }
            report.manifests_compared += 1;
        }
        let live = live_snapshots(store, &volume, now_ms).await?;
        for row in index.volume_snapshots(store.url(), &volume)? {
            if let Some(why) = snapshot_disagreement(&row, live.get(&row.uuid), now_ms) {
                report.disagreements.push(why);
            }
            report.snapshots_compared += 1;
        }
        report.volumes += 1;
    }
    Ok(report)
}

/// Reads every manifest and snapshot record of `volumes` (default: every volume in the store, and
/// every volume of it the index still holds) into the index and drops the rows the store no
/// longer backs. An unknown volume named in `volumes` is an error. Stops at the first error: a
/// partial sync leaves an index no worse than before, since every row written was read whole.
pub async fn sync(store: &Store, index: &Index, volumes: Option<Vec<VolumeId>>) -> Result<SyncReport, ReconcileError> {
    let named = volumes.is_some();
    let volumes = match volumes {
        Some(volumes) => volumes,
        None => known_volumes(store, index).await?,
    };
    let now_ms = crate::time::now_ms();
    let mut report = SyncReport::default();
    for volume in volumes {
        let names = chain::manifest_names(store, &volume).await?;
        if names.is_empty() && named {
            return Err(ChainError::UnknownVolume {
                store: store.url().to_string(),
                volume,
            }
            .into());
        }
        for row in index.volume_manifests(store.url(), &volume)? {
            if manifest_disagreement(store, index, &volume, &names, &row)
                .await?
                .is_some()
            {
                index.forget_manifest(store.url(), &volume, &row.name)?;
                report.forgotten += 1;
            }
        }
        for name in &names {
            chain::load_manifest(store, index, &volume, name).await?;
            report.manifests += 1;
        }
        let live = live_snapshots(store, &volume, now_ms).await?;
        for row in index.volume_snapshots(store.url(), &volume)? {
            if snapshot_disagreement(&row, live.get(&row.uuid), now_ms).is_some() {
                index.delete_snapshot(store.url(), &volume, &row.uuid)?;
                report.forgotten += 1;
            }
        }
        for snapshot in live.values() {
            index.put_snapshot(store.url(), &snapshot.to_row(&volume))?;
            report.snapshots += 1;
        }
        if !names.is_empty() {
            report.volumes += 1;
        }
    }
    Ok(report)
}

async fn known_volumes(store: &Store, index: &Index) -> Result<Vec<VolumeId>, ReconcileError> {
    let mut volumes = chain::list_volumes(store).await?;
    volumes.extend(index.indexed_volumes(store.url())?);
    volumes.sort();
    volumes.dedup();
    Ok(volumes)
}

/// The store's snapshots of a volume that count now (pending or committed), by UUID.
async fn live_snapshots(
    store: &Store,
    volume: &VolumeId,
    now_ms: u64,
) -> Result<BTreeMap<String, snapshot::Snapshot>, ReconcileError> {
    Ok(snapshot::list(store, volume, now_ms)
        .await?
        .into_iter()
        .filter(|s| s.pins())
        .map(|s| (s.snapshot_uuid.clone(), s))
        .collect())
}

async fn manifest_disagreement(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    store_names: &[String],
    row: &ManifestRow,
) -> Result<Option<String>, ReconcileError> {
    // Generations of a backup location are named differently and checked against nothing here.
    if layout::parse_manifest_name(&row.name).is_none() {
        return Ok(None);
    }
    if !store_names.contains(&row.name) {
        let why = match store_names.last() {
            None => format!(
                "volume {volume}: the index holds manifest {}, the store has no manifest of this volume",
                row.name
            ),
            Some(head) if row.name.as_str() > head.as_str() => {
                format!(
                    "volume {volume}: the index holds manifest {}, above the store's head {head}",
                    row.name
                )
            }
            Some(_) => return Ok(None),
        };
        return Ok(Some(why));
    }
    let manifest = chain::read_manifest(store, volume, &row.name).await?;
    Ok(differs(index, row, &manifest)?.map(|what| {
        format!(
            "volume {volume}: manifest {} differs from the store's: {what}",
            row.name
        )
    }))
}

/// The first field in which an indexed manifest differs from the store's, if any.
fn differs(index: &Index, row: &ManifestRow, manifest: &Manifest) -> Result<Option<String>, IndexError> {
    let header = [
        ("term", row.term, manifest.term),
        ("seq", row.seq, manifest.seq),
        ("createdAt", row.created_at_ms, manifest.created_at_ms),
        ("blockSize", row.block_size, manifest.block_size),
        ("files", row.file_count, manifest.files.len() as u64),
    ];
    if let Some((field, indexed, stored)) = header.into_iter().find(|(_, a, b)| a != b) {
        return Ok(Some(format!(
            "{field} is {indexed} in the index, {stored} in the store"
        )));
    }
    let mut stored: Vec<_> = manifest.files.iter().collect();
    stored.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    for (file, stored) in index.manifest_files(row.id)?.into_iter().zip(stored) {
        let same = file.path == stored.path
            && file.size == stored.size
            && file.low_seqno == stored.low_seqno
            && file.high_seqno == stored.high_seqno
            && file.object_key == stored.object_key
            && index.file_checksums(file.id)? == stored.checksums;
        if !same {
            return Ok(Some(format!("file {} is not the store's {}", file.path, stored.path)));
        }
    }
    Ok(None)
}

fn snapshot_disagreement(row: &SnapshotRow, stored: Option<&snapshot::Snapshot>, now_ms: u64) -> Option<String> {
    let indexed_live = row.state == State::Committed.as_str() && row.valid_till_ms > now_ms;
    let volume = &row.volume;
    match stored {
        None if indexed_live => Some(format!(
            "volume {volume}: the index holds snapshot {} as committed, the store has it released or not at all",
            row.uuid
        )),
        None => None,
        Some(s) if s.log_manifest_name != row.manifest_name || s.valid_till != row.valid_till_ms => Some(format!(
            "volume {volume}: snapshot {} pins {} till {} in the index, {} till {} in the store",
            row.uuid, row.manifest_name, row.valid_till_ms, s.log_manifest_name, s.valid_till
        )),
        Some(s) if indexed_live && s.state != State::Committed => Some(format!(
            "volume {volume}: the index holds snapshot {} as committed, the store has it {}",
            row.uuid,
            s.state.as_str()
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
