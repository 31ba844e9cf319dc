//! The objects one snapshot consists of in the store, read and interpreted, and the one write both
//! a creator and a cleaner make: the outcome that decides a PENDING snapshot.

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

/// The newest generation of one snapshot UUID, and the older ones whose leftovers may go.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub uuid: String,
    /// 0 when the UUID was never used.
    pub generation: u64,
    pub record: Option<Record>,
    pub outcome: Option<Outcome>,
    pub released: bool,
    pub older: Vec<object_store::path::Path>,
}

impl Entry {
    pub async fn read(store: &Store, volume: &VolumeId, uuid: &str) -> Result<Entry, SnapshotError> {
        let objects = store.list(&layout::snapshot_dir(volume, uuid)).await?;
        Entry::from_objects(store, volume, uuid, objects.into_iter().map(|o| o.key).collect()).await
    }

    pub async fn list(store: &Store, volume: &VolumeId) -> Result<Vec<Entry>, SnapshotError> {
        let dir = layout::snapshots_dir(volume);
        let mut by_uuid: BTreeMap<String, Vec<object_store::path::Path>> = BTreeMap::new();
        for object in store.list(&dir).await? {
            let uuid = object.key.prefix_match(&dir).and_then(|mut parts| parts.next());
            if let Some(uuid) = uuid {
                by_uuid.entry(uuid.as_ref().to_string()).or_default().push(object.key);
            }
        }
        let mut entries = Vec::with_capacity(by_uuid.len());
        for (uuid, keys) in by_uuid {
            entries.push(Entry::from_objects(store, volume, &uuid, keys).await?);
        }
        Ok(entries)
    }

    async fn from_objects(
        store: &Store,
        volume: &VolumeId,
        uuid: &str,
        keys: Vec<object_store::path::Path>,
    ) -> Result<Entry, SnapshotError> {
        let parsed: Vec<(u64, String, object_store::path::Path)> = keys
            .into_iter()
            .filter_map(|key| {
                let (generation, kind) = layout::parse_snapshot_object(key.filename()?)?;
                Some((generation, kind.to_string(), key))
            })
            .collect();
        let generation = parsed.iter().map(|(g, _, _)| *g).max().unwrap_or(0);
        let has = |kind: &str| parsed.iter().any(|(g, k, _)| *g == generation && k == kind);
        let older = parsed
            .iter()
            .filter(|(g, _, _)| *g < generation)
            .map(|(_, _, key)| key.clone())
            .collect();
        let record = match has("json") {
            true => get_optional(store, &layout::snapshot_key(volume, uuid, generation)).await?,
            false => None,
        };
        let outcome = match has(layout::OUTCOME) {
            true => {
                let key = layout::snapshot_marker_key(volume, uuid, generation, layout::OUTCOME);
                get_optional(store, &key).await?
            }
            false => None,
        };
        let mut entry = Entry::parse(volume, uuid, generation, record, outcome, has(layout::RELEASED))?;
        entry.older = older;
        Ok(entry)
    }

    fn parse(
        volume: &VolumeId,
        uuid: &str,
        generation: u64,
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
                let key = layout::snapshot_key(volume, uuid, generation);
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
                    layout::snapshot_marker_key(volume, uuid, generation, layout::OUTCOME),
                    e.to_string(),
                )
            })?),
        };
        Ok(Entry {
            uuid: uuid.to_string(),
            generation,
            record,
            outcome,
            released,
            older: Vec::new(),
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

    /// Counts no more (rolled back, released, expired, or never made): its UUID may be used again.
    pub fn is_finished(&self, now_ms: u64) -> bool {
        match self.snapshot(now_ms) {
            None => true,
            Some(s) => matches!(s.state, State::Deleting | State::Expired),
        }
    }

    /// Has objects a cleaner should remove: older generations, or a newest one that is finished
    /// but still has more than its tombstone.
    pub fn has_leftovers(&self, now_ms: u64) -> bool {
        !self.older.is_empty() || (self.is_finished(now_ms) && (self.record.is_some() || self.outcome.is_some()))
    }
}

async fn get_optional(store: &Store, key: &object_store::path::Path) -> Result<Option<Bytes>, StoreError> {
    match store.get(key).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the outcome once; answers the decision that won (ours, or one already there).
pub(super) async fn decide(
    store: &Store,
    volume: &VolumeId,
    uuid: &str,
    generation: u64,
    decision: Decision,
    writer: &str,
) -> Result<Decision, SnapshotError> {
    let key = layout::snapshot_marker_key(volume, uuid, generation, layout::OUTCOME);
    let outcome = Outcome {
        outcome: decision,
        writer: writer.to_string(),
    };
    let body = Bytes::from(serde_json::to_vec(&outcome).expect("outcome serialises"));
    match store.put_if_absent(&key, body).await {
        Ok(()) => Ok(decision),
        Err(StoreError::AlreadyExists { .. }) => {
            let bytes = match store.get(&key).await {
                Ok(bytes) => bytes,
                // Decided and already cleared away: only a release does that.
                Err(StoreError::NotFound { .. }) => return Ok(Decision::Aborted),
                Err(e) => return Err(e.into()),
            };
            let winner: Outcome = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Malformed {
                key: key.to_string(),
                reason: e.to_string(),
            })?;
            Ok(winner.outcome)
        }
        Err(e) => Err(e.into()),
    }
}
