//! The operations that need nothing but a store and the node's index: snapshot create, release,
//! list and describe, GC, namespace list and delete. mountd answers its control API with these and
//! the CLI runs the very same functions, so both accept the same input and fail the same way.

use super::answers::{BackupInfo, GenerationInfo, Released};
use super::{
    GcRequest, NamespaceDeleteRequest, NamespaceListRequest, OpError, SnapshotCreateRequest, SnapshotDescribeRequest,
    SnapshotReleaseRequest, VolumeRequest,
};
use crate::gc::{self, GcOptions, GcReport};
use crate::index::Index;
use crate::names::VolumeId;
use crate::namespace::{self, DeleteReport, Namespace};
use crate::snapshot::{self, CreatedSnapshot, Snapshot};
use crate::store::{Store, StoreConfig, StoreUrl};

/// Opens the store a request names; `create` makes a missing file:// folder (for writers).
pub fn open_store(url: &str, create: bool) -> Result<Store, OpError> {
    let url: StoreUrl = url.parse()?;
    let config = StoreConfig {
        create_local_dir: create,
        ..StoreConfig::default()
    };
    Ok(Store::open(&url, &config)?)
}

/// The engine folder a background task (uploader, backup) reads: absolute, and a folder.
pub fn source_folder(text: &str) -> Result<std::path::PathBuf, OpError> {
    let source = std::path::PathBuf::from(text);
    if !source.is_absolute() || !source.is_dir() {
        return Err(OpError::invalid(format!(
            "source {} is not an absolute path to a folder",
            source.display()
        )));
    }
    Ok(source)
}

/// Seconds between a background task's rounds: `asked`, else `default`; 1 s to a day.
pub fn interval_seconds(asked: Option<u64>, default: u64) -> Result<u64, OpError> {
    let interval = asked.unwrap_or(default);
    if interval == 0 || interval > 86_400 {
        return Err(OpError::invalid(format!(
            "interval of {interval} seconds is out of range (1 to 86400)"
        )));
    }
    Ok(interval)
}

pub fn volume_ids(ids: &[String]) -> Result<Vec<VolumeId>, OpError> {
    if ids.is_empty() {
        return Err(OpError::invalid("name at least one volume"));
    }
    Ok(ids.iter().map(|v| VolumeId::parse(v)).collect::<Result<_, _>>()?)
}

/// Creates the snapshot on every volume, or on none: if one volume fails, those already created
/// are released again and the error names the volume.
pub async fn snapshot_create(req: &SnapshotCreateRequest, index: &Index) -> Result<Vec<CreatedSnapshot>, OpError> {
    let volumes = volume_ids(req.volumes.ids())?;
    snapshot::validate_uuid(&req.snapshot_uuid)?;
    let store = open_store(&req.store, false)?;
    let now = crate::time::now_ms();
    let mut created = Vec::new();
    for volume in &volumes {
        match snapshot::create(&store, index, volume, &req.snapshot_uuid, req.validity, now).await {
            Ok(answer) => created.push(answer),
            Err(e) => {
                // Owned, not iterated by reference: rustc cannot prove a borrowing loop's future Send.
                while let Some(done) = created.pop() {
                    let id = VolumeId::parse(&done.volume_id).expect("created on a valid volume");
                    if let Err(undo) = snapshot::release(&store, index, &id, &req.snapshot_uuid).await {
                        tracing::warn!(volume = %id, uuid = %req.snapshot_uuid, error = %undo, "cannot release a snapshot after a later volume failed; it expires at its validTill");
                    }
                }
                let mut error = OpError::from(e);
                if volumes.len() > 1 {
                    error.message = format!("{} (no volume was snapshotted)", error.message);
                }
                return Err(error);
            }
        }
    }
    Ok(created)
}

/// Releases the snapshot on every volume; releasing one that is already gone succeeds.
pub async fn snapshot_release(req: &SnapshotReleaseRequest, index: &Index) -> Result<Vec<Released>, OpError> {
    let volumes = volume_ids(req.volumes.ids())?;
    snapshot::validate_uuid(&req.snapshot_uuid)?;
    let store = open_store(&req.store, false)?;
    let mut answers = Vec::new();
    for volume in &volumes {
        let released = snapshot::release(&store, index, volume, &req.snapshot_uuid).await?;
        answers.push(Released {
            volume_id: volume.to_string(),
            snapshot_uuid: req.snapshot_uuid.clone(),
            released,
        });
    }
    Ok(answers)
}

pub async fn snapshot_list(req: &VolumeRequest) -> Result<Vec<Snapshot>, OpError> {
    let volume = VolumeId::parse(&req.volume)?;
    let store = open_store(&req.store, false)?;
    known_volume(&store, &volume).await?;
    Ok(snapshot::list(&store, &volume, crate::time::now_ms()).await?)
}

pub async fn snapshot_describe(req: &SnapshotDescribeRequest) -> Result<Snapshot, OpError> {
    let volume = VolumeId::parse(&req.volume)?;
    snapshot::validate_uuid(&req.snapshot_uuid)?;
    let store = open_store(&req.store, false)?;
    Ok(snapshot::describe(&store, &volume, &req.snapshot_uuid, crate::time::now_ms()).await?)
}

pub async fn gc(req: &GcRequest, index: &Index) -> Result<GcReport, OpError> {
    let volume = VolumeId::parse(&req.volume)?;
    let store = open_store(&req.store, false)?;
    let defaults = GcOptions::default();
    let options = GcOptions {
        term: req.term.map(|t| t.0),
        retention_ms: seconds(req.retention, defaults.retention_ms, "retention")?,
        upload_grace_ms: seconds(req.upload_grace, defaults.upload_grace_ms, "uploadGrace")?,
        dry_run: req.dry_run,
    };
    Ok(gc::collect(&store, index, &volume, &options, crate::time::now_ms()).await?)
}

fn seconds(value: Option<u64>, default_ms: u64, name: &str) -> Result<u64, OpError> {
    match value {
        None => Ok(default_ms),
        Some(s) => s
            .checked_mul(1000)
            .ok_or_else(|| OpError::invalid(format!("{name} of {s} seconds is too large"))),
    }
}

pub async fn namespace_list(req: &NamespaceListRequest) -> Result<Vec<Namespace>, OpError> {
    let store = open_store(&req.logstore_uri, false)?;
    Ok(namespace::list(&store).await?)
}

/// Deletes namespaces without asking who uses them: the caller checks live mounts and uploaders.
pub async fn namespace_delete(req: &NamespaceDeleteRequest, index: &Index) -> Result<DeleteReport, OpError> {
    let store = open_store(&req.logstore_uri, false)?;
    Ok(namespace::delete_except(&store, index, &req.namespaces, req.dry_run).await?)
}

/// NotMyVbucket for a volume the store does not hold, rather than an empty answer.
pub async fn known_volume(store: &Store, volume: &VolumeId) -> Result<(), OpError> {
    if crate::chain::latest_manifest_name(store, volume).await?.is_none() {
        return Err(OpError::unknown(format!(
            "volume {volume} not found in store {}",
            store.url()
        )));
    }
    Ok(())
}

/// The generations of a backup location: time, files, bytes, new files and seqno range of each
/// (what `cbcontbk info` shows). Reads each generation once; the index keeps them.
pub async fn backup_info(location: &str, index: &Index) -> Result<BackupInfo, OpError> {
    let store = open_store(location, false)?;
    let numbers = crate::chain::generations(&store).await?;
    let mut volume = None;
    let mut previous = std::collections::HashSet::new();
    let mut generations = Vec::with_capacity(numbers.len());
    for n in numbers {
        let row = crate::chain::load_generation(&store, index, n).await?;
        let files = index
            .manifest_files(row.id)
            .map_err(crate::catalog::CatalogError::from)?;
        let objects: std::collections::HashSet<String> = files.iter().filter_map(|f| f.object_key.clone()).collect();
        let low = files.iter().filter_map(|f| f.low_seqno).min();
        let high = files.iter().filter_map(|f| f.high_seqno).max();
        generations.push(GenerationInfo {
            generation: n,
            created_at: crate::time::format_time(row.created_at_ms),
            created_at_ms: row.created_at_ms,
            files: row.file_count,
            bytes: row.total_bytes,
            new_files: objects.difference(&previous).count(),
            low_seqno: low,
            high_seqno: high,
        });
        previous = objects;
        volume = Some(row.volume.to_string());
    }
    Ok(BackupInfo {
        location: store.url().to_string(),
        volume_id: volume,
        generations,
    })
}
