//! Two-phase create: the PENDING record, a check against GC, then the COMMITTED outcome.

use std::time::Instant;

use bytes::Bytes;

use super::entry::{decide, Decision, Entry, Record};
use super::release::finish;
use super::{validate_uuid, CreatedSnapshot, SnapshotError, CREATE_LIMIT, FORMAT, VERSION};
use crate::chain;
use crate::index::Index;
use crate::names::VolumeId;
use crate::store::{layout, Store, StoreError};

/// Pins the volume's newest manifest for `validity_secs` from `now_ms`.
///
/// The record (PENDING) is written before the manifest is checked for GC's tombstone, and GC
/// writes its tombstone before it reads the snapshots again: whichever order the two run in, one
/// of them sees the other, so a committed snapshot never names a manifest GC is deleting.
pub async fn create(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    uuid: &str,
    validity_secs: u64,
    now_ms: u64,
) -> Result<CreatedSnapshot, SnapshotError> {
    validate_uuid(uuid)?;
    if validity_secs == 0 {
        return Err(SnapshotError::InvalidValidity(validity_secs));
    }
    let valid_till = validity_secs
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(now_ms))
        .ok_or(SnapshotError::InvalidValidity(validity_secs))?;
    let started = Instant::now();
    let writer = uuid::Uuid::new_v4().to_string();
    let mut reason = String::new();
    // The head GC is collecting is no longer the head: the next attempt pins the newer one.
    for _ in 0..3 {
        let name = chain::latest_manifest_name(store, volume)
            .await?
            .ok_or_else(|| SnapshotError::EmptyVolume(volume.clone()))?;
        let manifest = chain::load_manifest(store, index, volume, &name).await?;
        let record = Record {
            format: FORMAT.to_string(),
            snapshot_uuid: uuid.to_string(),
            volume_id: volume.to_string(),
            log_manifest_name: name.clone(),
            created_at: now_ms,
            valid_till,
            writer: writer.clone(),
        };
        let generation = write_record(store, volume, &record, now_ms).await?;
        crate::failpoint::reached(crate::failpoint::SNAPSHOT_RECORDED);
        let collecting = store.head(&layout::collecting_key(volume, &name)).await?.is_some();
        let gone = store.head(&layout::manifest_key(volume, &name)).await?.is_none();
        if collecting || gone {
            roll_back(store, volume, uuid, generation, &writer).await?;
            reason = format!("GC was deleting manifest {name}");
            continue;
        }
        if started.elapsed() > CREATE_LIMIT {
            roll_back(store, volume, uuid, generation, &writer).await?;
            return Err(rolled_back(
                volume,
                uuid,
                format!("it could not commit within {CREATE_LIMIT:?}"),
            ));
        }
        if decide(store, volume, uuid, generation, Decision::Committed, &writer).await? != Decision::Committed {
            return Err(rolled_back(volume, uuid, "a recovery found it abandoned".into()));
        }
        let snapshot = super::Snapshot {
            snapshot_uuid: uuid.to_string(),
            volume_id: volume.to_string(),
            log_manifest_name: name.clone(),
            created_at: now_ms,
            valid_till,
            state: super::State::Committed,
        };
        index.put_snapshot(store.url(), &snapshot.to_row(volume))?;
        let log_files = index
            .manifest_files(manifest.id)?
            .into_iter()
            .map(|f| f.path.to_string())
            .collect();
        return Ok(CreatedSnapshot {
            created_at: now_ms,
            log_files,
            log_manifest_name: name,
            snapshot_uuid: uuid.to_string(),
            valid_till,
            version: VERSION,
            volume_id: volume.to_string(),
        });
    }
    Err(rolled_back(volume, uuid, reason))
}

/// Writes the PENDING record as the next generation of its UUID; answers the generation. A UUID
/// whose newest generation still counts is taken; an abandoned PENDING one is rolled back first.
async fn write_record(store: &Store, volume: &VolumeId, record: &Record, now_ms: u64) -> Result<u64, SnapshotError> {
    let uuid = &record.snapshot_uuid;
    let body = Bytes::from(serde_json::to_vec(record).expect("record serialises"));
    let exists = || SnapshotError::Exists {
        volume: volume.clone(),
        uuid: uuid.to_string(),
    };
    let mut latest = Entry::read(store, volume, uuid).await?;
    if latest.is_abandoned(now_ms) {
        finish(store, volume, &latest, false).await?;
        latest = Entry::read(store, volume, uuid).await?;
    }
    if latest.record.as_ref().is_some_and(|r| r.writer == record.writer) {
        // A retried request whose first attempt landed.
        return Ok(latest.generation);
    }
    if !latest.is_finished(now_ms) {
        return Err(exists());
    }
    let generation = latest.generation + 1;
    match store
        .put_if_absent(&layout::snapshot_key(volume, uuid, generation), body)
        .await
    {
        Ok(()) => Ok(generation),
        Err(StoreError::AlreadyExists { .. }) => {
            let winner = Entry::read(store, volume, uuid).await?;
            match winner.record {
                Some(r) if r.writer == record.writer && winner.generation == generation => Ok(generation),
                _ => Err(exists()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Aborts our own PENDING record and removes it, so the uuid is free again.
async fn roll_back(
    store: &Store,
    volume: &VolumeId,
    uuid: &str,
    generation: u64,
    writer: &str,
) -> Result<(), SnapshotError> {
    decide(store, volume, uuid, generation, Decision::Aborted, writer).await?;
    let entry = Entry::read(store, volume, uuid).await?;
    if entry.generation == generation {
        finish(store, volume, &entry, false).await?;
    }
    Ok(())
}

fn rolled_back(volume: &VolumeId, uuid: &str, reason: String) -> SnapshotError {
    SnapshotError::RolledBack {
        volume: volume.clone(),
        uuid: uuid.to_string(),
        reason,
    }
}
