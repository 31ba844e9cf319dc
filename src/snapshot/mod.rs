//! Snapshots: a named, time-limited pin on one log manifest of a volume (Fusion's 0x70 / 0x71).
//!
//! Lifecycle, kept entirely in the store as objects created once (works on every store), one set
//! per generation of a UUID (`snapshots/<uuid>/<gen>.*`, see `store::layout`):
//! - PENDING: the record (`<gen>.json`) exists alone. It already pins its manifest, so
//!   a GC that runs meanwhile keeps the files.
//! - COMMITTED: `<gen>.outcome` says COMMITTED. Only the creator writes it, after checking that GC
//!   is not collecting the manifest; a stale PENDING is rolled back by writing ABORTED to the same
//!   key, so a slow creator and a recovery can never both win.
//! - EXPIRED: committed and past `validTill`; behaves as released (pins nothing).
//! - DELETING: `<gen>.released` exists: release began; record and outcome are then deleted, and
//!   whoever finds the marker later finishes the job. The marker stays as the UUID's tombstone.

mod create;
mod entry;
mod release;

use serde::{Deserialize, Serialize};

pub use create::create;
pub use release::{release, tidy};

use crate::chain::ChainError;
use crate::index::IndexError;
use crate::index::SnapshotRow;
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};
use entry::Entry;

pub const FORMAT: &str = "lazysnap.snapshot";
/// The protocol version reported as Fusion's `version`.
pub const VERSION: u64 = 1;
/// A PENDING snapshot older than this is abandoned (its creator gave up or died) and is rolled
/// back by whoever finds it. Creators give up well before: see [`CREATE_LIMIT`].
pub const PENDING_TIMEOUT_MS: u64 = 60_000;
/// A create that could not commit within this time rolls itself back.
pub const CREATE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot UUID {0:?}: use 1 to 128 letters, digits, '-', '_' or '.'")]
    InvalidUuid(String),
    #[error("validity of {0} seconds is out of range: give at least 1 second, and less than the age of the universe")]
    InvalidValidity(u64),
    #[error("snapshot {uuid} of volume {volume} already exists")]
    Exists { volume: VolumeId, uuid: String },
    #[error("snapshot {uuid} of volume {volume} not found")]
    Unknown { volume: VolumeId, uuid: String },
    #[error("snapshot {uuid} of volume {volume} expired at {valid_till_ms} (Unix ms)")]
    Expired {
        volume: VolumeId,
        uuid: String,
        valid_till_ms: u64,
    },
    #[error("snapshot {uuid} of volume {volume} is still being created; try again")]
    NotCommitted { volume: VolumeId, uuid: String },
    #[error("snapshot {uuid} of volume {volume} was rolled back before it committed: {reason}")]
    RolledBack {
        volume: VolumeId,
        uuid: String,
        reason: String,
    },
    #[error("volume {0} has no manifest to snapshot")]
    EmptyVolume(VolumeId),
    #[error("snapshot record {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Chain(Box<ChainError>),
}

impl From<ChainError> for SnapshotError {
    fn from(e: ChainError) -> Self {
        SnapshotError::Chain(Box::new(e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Pending,
    Committed,
    Expired,
    Deleting,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Committed => "COMMITTED",
            State::Expired => "EXPIRED",
            State::Deleting => "DELETING",
        }
    }
}

/// What `snapshot describe` and `list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub log_manifest_name: String,
    pub created_at: u64,
    pub valid_till: u64,
    pub state: State,
}

impl Snapshot {
    /// Whether it keeps its manifest's files from GC: PENDING ones do, so that a create racing a
    /// GC is safe before it commits.
    pub fn pins(&self) -> bool {
        matches!(self.state, State::Pending | State::Committed)
    }

    pub fn to_row(&self, volume: &VolumeId) -> SnapshotRow {
        SnapshotRow {
            volume: volume.clone(),
            uuid: self.snapshot_uuid.clone(),
            manifest_name: self.log_manifest_name.clone(),
            created_at_ms: self.created_at,
            valid_till_ms: self.valid_till,
            state: self.state.as_str().to_string(),
        }
    }
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
            // ':' too: ns_server names a plan's snapshots `<planUUID>:<bucketUUID>`.
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        && uuid != "."
        && uuid != "..";
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::InvalidUuid(uuid.to_string()))
    }
}

/// One snapshot as it stands in the store at `now_ms`; [`SnapshotError::Unknown`] when it is gone
/// or was rolled back.
pub async fn describe(store: &Store, volume: &VolumeId, uuid: &str, now_ms: u64) -> Result<Snapshot, SnapshotError> {
    validate_uuid(uuid)?;
    Entry::read(store, volume, uuid)
        .await?
        .snapshot(now_ms)
        .ok_or_else(|| SnapshotError::Unknown {
            volume: volume.clone(),
            uuid: uuid.to_string(),
        })
}

/// Every snapshot of a volume (rolled-back and fully released ones excluded), oldest first. Any
/// record that cannot be read is an error: callers such as GC must not guess.
pub async fn list(store: &Store, volume: &VolumeId, now_ms: u64) -> Result<Vec<Snapshot>, SnapshotError> {
    let mut snapshots: Vec<Snapshot> = Entry::list(store, volume)
        .await?
        .iter()
        .filter_map(|e| e.snapshot(now_ms))
        .collect();
    snapshots.sort_by(|a, b| (a.created_at, &a.snapshot_uuid).cmp(&(b.created_at, &b.snapshot_uuid)));
    Ok(snapshots)
}

/// A snapshot that can be mounted now: committed and not expired.
pub async fn read(store: &Store, volume: &VolumeId, uuid: &str) -> Result<SnapshotRow, SnapshotError> {
    let snapshot = describe(store, volume, uuid, crate::time::now_ms()).await?;
    match snapshot.state {
        State::Committed => {}
        State::Pending => {
            return Err(SnapshotError::NotCommitted {
                volume: volume.clone(),
                uuid: uuid.to_string(),
            })
        }
        State::Expired => {
            return Err(SnapshotError::Expired {
                volume: volume.clone(),
                uuid: uuid.to_string(),
                valid_till_ms: snapshot.valid_till,
            })
        }
        State::Deleting => {
            return Err(SnapshotError::Unknown {
                volume: volume.clone(),
                uuid: uuid.to_string(),
            })
        }
    }
    if layout::parse_manifest_name(&snapshot.log_manifest_name).is_none() {
        return Err(SnapshotError::Malformed {
            key: layout::snapshot_dir(volume, uuid).to_string(),
            reason: format!("bad manifest name {:?}", snapshot.log_manifest_name),
        });
    }
    Ok(snapshot.to_row(volume))
}

#[cfg(test)]
mod tests;
