//! Release (idempotent) and the clearing of whatever a crash left half done.

use bytes::Bytes;

use super::entry::{decide, Decision, Entry};
use super::{validate_uuid, SnapshotError, State};
use crate::index::Index;
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};

/// Releases a snapshot: from now on it pins nothing. Releasing one that is gone, or releasing
/// twice, succeeds; answers whether a snapshot that still counted was released.
pub async fn release(store: &Store, index: &Index, volume: &VolumeId, uuid: &str) -> Result<bool, SnapshotError> {
    validate_uuid(uuid)?;
    let entry = Entry::read(store, volume, uuid).await?;
    let live = entry
        .snapshot(crate::time::now_ms())
        .is_some_and(|s| matches!(s.state, State::Pending | State::Committed));
    finish(store, volume, &entry, true).await?;
    index.delete_snapshot(store.url(), volume, uuid)?;
    Ok(live)
}

/// Clears every snapshot of a volume that no longer counts (released, expired, rolled back) and
/// rolls back PENDING ones whose creator gave up; answers their uuids.
pub async fn tidy(store: &Store, volume: &VolumeId, now_ms: u64) -> Result<Vec<String>, SnapshotError> {
    let mut tidied = Vec::new();
    for entry in Entry::list(store, volume).await? {
        if !(entry.has_leftovers(now_ms) || entry.is_abandoned(now_ms)) {
            continue;
        }
        for key in &entry.older {
            store.delete(key).await?;
        }
        if entry.is_finished(now_ms) || entry.is_abandoned(now_ms) {
            finish(store, volume, &entry, false).await?;
        }
        tidied.push(entry.uuid);
    }
    Ok(tidied)
}

/// Takes one generation of a snapshot out of use: released marker, then record and outcome. The
/// marker stays as the UUID's tombstone (generation numbers never repeat). A PENDING one is
/// aborted first; unless `release` is set, one its creator committed meanwhile is left alone.
/// Every key names the generation, so a cleaner with an old view cannot touch a newer one.
pub(super) async fn finish(
    store: &Store,
    volume: &VolumeId,
    entry: &Entry,
    release: bool,
) -> Result<(), SnapshotError> {
    let (uuid, generation) = (&entry.uuid, entry.generation);
    if entry.record.is_none() && entry.outcome.is_none() {
        return Ok(());
    }
    if entry.record.is_some() && entry.outcome.is_none() && !entry.released {
        let writer = format!("recovery-{}", uuid::Uuid::new_v4());
        let won = decide(store, volume, uuid, generation, Decision::Aborted, &writer).await?;
        if won == Decision::Committed && !release {
            return Ok(());
        }
    }
    if !entry.released {
        let marker = layout::snapshot_marker_key(volume, uuid, generation, layout::RELEASED);
        match store.put_if_absent(&marker, Bytes::from_static(b"{}")).await {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        crate::failpoint::reached(crate::failpoint::SNAPSHOT_RELEASE_MARKED);
    }
    store.delete(&layout::snapshot_key(volume, uuid, generation)).await?;
    store
        .delete(&layout::snapshot_marker_key(volume, uuid, generation, layout::OUTCOME))
        .await?;
    Ok(())
}
