//! Snapshots: a named, time-limited pin on one log manifest of a volume (Fusion's 0x70).
//!
//! The record lives in the store at `volumes/<volumeID>/snapshots/<uuid>.json`, written create-only
//! so that two creators of one uuid cannot both win. Its `state` field is there for the two-phase
//! lifecycle (PENDING -> COMMITTED -> DELETING) that release, expiry and GC build on.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::index::{Index, SnapshotRow};
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};

pub const FORMAT: &str = "lazysnap.snapshot";
/// The protocol version reported as Fusion's `version`.
pub const VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot UUID {0:?}: use 1 to 128 letters, digits, '-', '_' or '.'")]
    InvalidUuid(String),
    #[error("validity of {0} seconds is too large")]
    InvalidValidity(u64),
    #[error("snapshot {uuid} of volume {volume} already exists")]
    Exists { volume: VolumeId, uuid: String },
    #[error("snapshot {uuid} of volume {volume} not found")]
    Unknown { volume: VolumeId, uuid: String },
    #[error("volume {0} has no manifest to snapshot")]
    EmptyVolume(VolumeId),
    #[error("snapshot record {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(Box<catalog::CatalogError>),
}

/// The stored record; field names follow Fusion's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    format: String,
    #[serde(rename = "snapshotUUID")]
    snapshot_uuid: String,
    #[serde(rename = "volumeID")]
    volume_id: String,
    log_manifest_name: String,
    created_at: u64,
    valid_till: u64,
    state: String,
    writer: String,
}

/// Fusion's Get Fusion Storage Snapshot answer (0x70), one per volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSnapshot {
    pub created_at: u64,
    pub log_files: Vec<String>,
    pub log_manifest_name: String,
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    pub valid_till: u64,
    pub version: u64,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
}

pub fn validate_uuid(uuid: &str) -> Result<(), SnapshotError> {
    let ok = !uuid.is_empty()
        && uuid.len() <= 128
        && uuid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && uuid != "."
        && uuid != "..";
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::InvalidUuid(uuid.to_string()))
    }
}

/// Pins the volume's newest manifest for `validity_secs` from `now_ms`.
pub async fn create(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    uuid: &str,
    validity_secs: u64,
    now_ms: u64,
) -> Result<CreatedSnapshot, SnapshotError> {
    validate_uuid(uuid)?;
    let valid_till = validity_secs
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(now_ms))
        .ok_or(SnapshotError::InvalidValidity(validity_secs))?;
    let name = catalog::latest_manifest_name(store, volume)
        .await?
        .ok_or_else(|| SnapshotError::EmptyVolume(volume.clone()))?;
    let manifest = catalog::load_manifest(store, index, volume, &name)
        .await
        .map_err(|e| SnapshotError::Catalog(Box::new(e)))?;
    let writer = uuid::Uuid::new_v4().to_string();
    let record = Record {
        format: FORMAT.to_string(),
        snapshot_uuid: uuid.to_string(),
        volume_id: volume.to_string(),
        log_manifest_name: name.clone(),
        created_at: now_ms,
        valid_till,
        state: "COMMITTED".to_string(),
        writer: writer.clone(),
    };
    let key = layout::snapshot_key(volume, uuid);
    let body = Bytes::from(serde_json::to_vec(&record).expect("record serialises"));
    match store.put_if_absent(&key, body).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            // A retried request whose first attempt landed answers "exists": check who wrote it.
            let existing = store.get(&key).await?;
            let ours = serde_json::from_slice::<Record>(&existing).is_ok_and(|r| r.writer == writer);
            if !ours {
                return Err(SnapshotError::Exists {
                    volume: volume.clone(),
                    uuid: uuid.to_string(),
                });
            }
        }
        Err(e) => return Err(e.into()),
    }
    let row = to_row(&record, volume);
    index
        .put_snapshot(store.url(), &row)
        .map_err(|e| SnapshotError::Catalog(Box::new(e.into())))?;
    let log_files = index
        .manifest_files(manifest.id)
        .map_err(|e| SnapshotError::Catalog(Box::new(e.into())))?
        .into_iter()
        .map(|f| f.path.to_string())
        .collect();
    Ok(CreatedSnapshot {
        created_at: now_ms,
        log_files,
        log_manifest_name: name,
        snapshot_uuid: uuid.to_string(),
        valid_till,
        version: VERSION,
        volume_id: volume.to_string(),
    })
}

/// Reads a snapshot record from the store.
pub async fn read(store: &Store, volume: &VolumeId, uuid: &str) -> Result<SnapshotRow, SnapshotError> {
    validate_uuid(uuid)?;
    let key = layout::snapshot_key(volume, uuid);
    let bytes = store.get(&key).await.map_err(|e| match e {
        StoreError::NotFound { .. } => SnapshotError::Unknown {
            volume: volume.clone(),
            uuid: uuid.to_string(),
        },
        other => other.into(),
    })?;
    let malformed = |reason: String| SnapshotError::Malformed {
        key: key.to_string(),
        reason,
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    if record.format != FORMAT || record.snapshot_uuid != uuid || record.volume_id != volume.as_str() {
        return Err(malformed(
            "its format, UUID or volume does not match where it is stored".into(),
        ));
    }
    if layout::parse_manifest_name(&record.log_manifest_name).is_none() {
        return Err(malformed(format!("bad manifest name {:?}", record.log_manifest_name)));
    }
    Ok(to_row(&record, volume))
}

fn to_row(record: &Record, volume: &VolumeId) -> SnapshotRow {
    SnapshotRow {
        volume: volume.clone(),
        uuid: record.snapshot_uuid.clone(),
        manifest_name: record.log_manifest_name.clone(),
        created_at_ms: record.created_at,
        valid_till_ms: record.valid_till,
        state: record.state.clone(),
    }
}
