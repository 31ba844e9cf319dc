//! Release (idempotent) and the clearing of whatever a crash left half done.

use bytes::Bytes;

use super::create::decide;
use super::entry::{Decision, Entry};
use super::{validate_uuid, SnapshotError, State};
use crate::catalog::CatalogError;
use crate::index::Index;
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};

/// Releases a snapshot: from now on it pins nothing. Releasing one that is gone, or releasing
/// twice, succeeds; answers whether a snapshot that still counted was released.
pub async fn release(store: &Store, index: &Index, volume: &VolumeId, uuid: &str) -> Result<bool, SnapshotError> {
    validate_uuid(uuid)?;
    let entry = Entry::read(store, volume, uuid).await?;
    let live = entry
        .snapshot(crate::now_ms())
        .is_some_and(|s| matches!(s.state, State::Pending | State::Committed));
    finish(store, volume, &entry, true).await?;
    index
        .delete_snapshot(store.url(), volume, uuid)
        .map_err(|e| SnapshotError::from(CatalogError::from(e)))?;
    Ok(live)
}

/// Clears every snapshot of a volume that no longer counts (released, expired, rolled back) and
/// rolls back PENDING ones whose creator gave up; answers their uuids.
pub async fn tidy(store: &Store, volume: &VolumeId, now_ms: u64) -> Result<Vec<String>, SnapshotError> {
    let mut tidied = Vec::new();
    for entry in Entry::list(store, volume).await? {
        if entry.is_finished(now_ms) || entry.is_abandoned(now_ms) {
            finish(store, volume, &entry, false).await?;
            tidied.push(entry.uuid);
        }
    }
    Ok(tidied)
}

/// Takes a snapshot the rest of the way out of the store: marker, record, outcome, marker. A
/// PENDING one is aborted first; unless `release` is set, one that its creator committed in the
/// meantime is left alone.
pub(super) async fn finish(
    store: &Store,
    volume: &VolumeId,
    entry: &Entry,
    release: bool,
) -> Result<(), SnapshotError> {
    let uuid = &entry.uuid;
    if entry.record.is_some() && entry.outcome.is_none() && !entry.released {
        let writer = format!("recovery-{}", uuid::Uuid::new_v4());
        if decide(store, volume, uuid, Decision::Aborted, &writer).await? == Decision::Committed && !release {
            return Ok(());
        }
    }
    let marker = layout::snapshot_marker_key(volume, uuid, layout::RELEASED);
    if !entry.released {
        match store.put_if_absent(&marker, Bytes::from_static(b"{}")).await {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.delete(&layout::snapshot_key(volume, uuid)).await?;
    store
        .delete(&layout::snapshot_marker_key(volume, uuid, layout::OUTCOME))
        .await?;
    store.delete(&marker).await?;
    Ok(())
}
