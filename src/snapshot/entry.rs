//! The objects one snapshot consists of in the store, read and interpreted.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Snapshot, SnapshotError, State, FORMAT, PENDING_TIMEOUT_MS};
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};

/// The record, written once, PENDING until an outcome says otherwise. Field names follow Fusion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Record {
    pub format: String,
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub log_manifest_name: String,
    pub created_at: u64,
    pub valid_till: u64,
    pub writer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum Decision {
    Committed,
    Aborted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Outcome {
    pub outcome: Decision,
    pub writer: String,
}

#[derive(Debug, Default)]
pub(super) struct Entry {
    pub uuid: String,
    pub record: Option<Record>,
    pub outcome: Option<Outcome>,
    pub released: bool,
}

impl Entry {
    pub async fn read(store: &Store, volume: &VolumeId, uuid: &str) -> Result<Entry, SnapshotError> {
        let record = get_optional(store, &layout::snapshot_key(volume, uuid)).await?;
        let outcome = get_optional(store, &layout::snapshot_marker_key(volume, uuid, layout::OUTCOME)).await?;
        let released = store
            .head(&layout::snapshot_marker_key(volume, uuid, layout::RELEASED))
            .await?
            .is_some();
        Entry::parse(volume, uuid, record, outcome, released)
    }

    pub async fn list(store: &Store, volume: &VolumeId) -> Result<Vec<Entry>, SnapshotError> {
        let (_, objects) = store.list_children(&layout::snapshots_dir(volume)).await?;
        // Which objects each uuid has: record, outcome, released marker.
        let mut found: BTreeMap<String, [bool; 3]> = BTreeMap::new();
        for object in &objects {
            let Some(name) = object.key.filename() else { continue };
            let (uuid, slot) = if let Some(uuid) = name.strip_suffix(".json") {
                (uuid, 0)
            } else if let Some(uuid) = name.strip_suffix(&format!(".{}", layout::OUTCOME)) {
                (uuid, 1)
            } else if let Some(uuid) = name.strip_suffix(&format!(".{}", layout::RELEASED)) {
                (uuid, 2)
            } else {
                continue;
            };
            found.entry(uuid.to_string()).or_default()[slot] = true;
        }
        let mut entries = Vec::with_capacity(found.len());
        for (uuid, [record, outcome, released]) in found {
            let record = match record {
                true => get_optional(store, &layout::snapshot_key(volume, &uuid)).await?,
                false => None,
            };
            let outcome = match outcome {
                true => get_optional(store, &layout::snapshot_marker_key(volume, &uuid, layout::OUTCOME)).await?,
                false => None,
            };
            entries.push(Entry::parse(volume, &uuid, record, outcome, released)?);
        }
        Ok(entries)
    }

    fn parse(
        volume: &VolumeId,
        uuid: &str,
        record: Option<Bytes>,
        outcome: Option<Bytes>,
        released: bool,
    ) -> Result<Entry, SnapshotError> {
        let malformed = |key: object_store::path::Path, reason: String| SnapshotError::Malformed {
            key: key.to_string(),
            reason,
        };
        let record = match record {
            None => None,
            Some(bytes) => {
                let key = layout::snapshot_key(volume, uuid);
                let record: Record =
                    serde_json::from_slice(&bytes).map_err(|e| malformed(key.clone(), e.to_string()))?;
                if record.format != FORMAT || record.snapshot_uuid != uuid || record.volume_id != volume.as_str() {
                    return Err(malformed(
                        key,
                        "its format, UUID or volume does not match where it is stored".into(),
                    ));
                }
                Some(record)
            }
        };
        let outcome = match outcome {
            None => None,
            Some(bytes) => Some(serde_json::from_slice::<Outcome>(&bytes).map_err(|e| {
                malformed(
                    layout::snapshot_marker_key(volume, uuid, layout::OUTCOME),
                    e.to_string(),
                )
            })?),
        };
        Ok(Entry {
            uuid: uuid.to_string(),
            record,
            outcome,
            released,
        })
    }

    pub fn decision(&self) -> Option<Decision> {
        self.outcome.as_ref().map(|o| o.outcome)
    }

    /// The snapshot as users see it; `None` when nothing of it counts any more (rolled back, or
    /// only leftovers of a release).
    pub fn snapshot(&self, now_ms: u64) -> Option<Snapshot> {
        let record = self.record.as_ref()?;
        let state = match (self.released, self.decision()) {
            (true, _) => State::Deleting,
            (false, Some(Decision::Aborted)) => return None,
            (false, Some(Decision::Committed)) if now_ms > record.valid_till => State::Expired,
            (false, Some(Decision::Committed)) => State::Committed,
            (false, None) => State::Pending,
        };
        Some(Snapshot {
            snapshot_uuid: record.snapshot_uuid.clone(),
            volume_id: record.volume_id.clone(),
            log_manifest_name: record.log_manifest_name.clone(),
            created_at: record.created_at,
            valid_till: record.valid_till,
            state,
        })
    }

    /// A PENDING snapshot whose creator has given up or died.
    pub fn is_abandoned(&self, now_ms: u64) -> bool {
        match (&self.record, self.outcome.is_none() && !self.released) {
            (Some(record), true) => now_ms.saturating_sub(record.created_at) > PENDING_TIMEOUT_MS,
            _ => false,
        }
    }

    /// Leftovers to clear: a rollback, a release that did not finish, or an expired snapshot.
    pub fn is_finished(&self, now_ms: u64) -> bool {
        match self.snapshot(now_ms) {
            None => true,
            Some(s) => matches!(s.state, State::Deleting | State::Expired),
        }
    }
}

async fn get_optional(store: &Store, key: &object_store::path::Path) -> Result<Option<Bytes>, StoreError> {
    match store.get(key).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
