use super::entry::{Decision, Entry, Record};
use super::*;
use crate::index::Index;
use crate::publish::{publish, NoProgress, PublishOptions};
use crate::store::StoreConfig;

const NOW: u64 = 1_800_000_000_000;

async fn volume_with_manifest(name: &str) -> (Store, Index, VolumeId) {
    let store = Store::open(&format!("test://{name}").parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Index::open_in_memory().unwrap();
    let volume = VolumeId::parse("kv/b/kvstore-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log.1"), b"one").unwrap();
    publish(
        &store,
        &index,
        dir.path(),
        &volume,
        &PublishOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    (store, index, volume)
}

#[tokio::test]
async fn create_release_and_create_again_with_errors_for_duplicates() {
    let (store, index, volume) = volume_with_manifest("snap-cycle").await;
    let created = create(&store, &index, &volume, "s1", 60, NOW).await.unwrap();
    assert_eq!(
        (created.valid_till, created.log_files.clone()),
        (NOW + 60_000, vec!["log.1".to_string()])
    );
    assert_eq!(
        describe(&store, &volume, "s1", NOW).await.unwrap().state,
        State::Committed
    );
    let again = create(&store, &index, &volume, "s1", 60, NOW).await.unwrap_err();
    assert!(matches!(again, SnapshotError::Exists { .. }), "{again}");

    assert!(
        release(&store, &index, &volume, "s1").await.unwrap(),
        "a live snapshot was released"
    );
    assert!(
        !release(&store, &index, &volume, "s1").await.unwrap(),
        "releasing again succeeds"
    );
    assert!(!release(&store, &index, &volume, "never-made").await.unwrap());
    let gone = describe(&store, &volume, "s1", NOW).await.unwrap_err();
    assert!(matches!(gone, SnapshotError::Unknown { .. }), "{gone}");
    assert!(only_tombstones(&store, &volume).await, "nothing left behind");
    create(&store, &index, &volume, "s1", 60, NOW).await.unwrap();
}

#[tokio::test]
async fn an_expired_snapshot_pins_nothing_cannot_be_mounted_and_its_uuid_is_free() {
    let (store, index, volume) = volume_with_manifest("snap-expiry").await;
    create(&store, &index, &volume, "s1", 10, NOW).await.unwrap();
    let later = NOW + 10_001;
    let snap = describe(&store, &volume, "s1", later).await.unwrap();
    assert_eq!(snap.state, State::Expired);
    assert!(!snap.pins());
    create(&store, &index, &volume, "s1", 10, later).await.unwrap();
    assert_eq!(
        describe(&store, &volume, "s1", later).await.unwrap().state,
        State::Committed
    );
}

/// Nothing of a released or rolled-back snapshot is left but its UUID's tombstone.
async fn only_tombstones(store: &Store, volume: &VolumeId) -> bool {
    let objects = store.list(&layout::snapshots_dir(volume)).await.unwrap();
    objects.iter().all(|o| o.key.as_ref().ends_with(".released"))
}

/// What a creator that died between its two phases leaves behind.
async fn abandoned_record(store: &Store, volume: &VolumeId, uuid: &str, created_at: u64) {
    let name = crate::chain::latest_manifest_name(store, volume)
        .await
        .unwrap()
        .unwrap();
    let record = Record {
        format: FORMAT.into(),
        snapshot_uuid: uuid.into(),
        volume_id: volume.to_string(),
        log_manifest_name: name,
        created_at,
        valid_till: created_at + 3_600_000,
        writer: "dead".into(),
    };
    let body = bytes::Bytes::from(serde_json::to_vec(&record).unwrap());
    store
        .put_if_absent(&layout::snapshot_key(volume, uuid, 1), body)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_create_cut_between_its_phases_pins_until_rolled_back_then_the_uuid_is_free() {
    let (store, index, volume) = volume_with_manifest("snap-crash").await;
    abandoned_record(&store, &volume, "s1", NOW).await;
    let pending = describe(&store, &volume, "s1", NOW).await.unwrap();
    assert_eq!(pending.state, State::Pending);
    assert!(pending.pins(), "a PENDING snapshot keeps its files from GC");
    let busy = create(&store, &index, &volume, "s1", 60, NOW + 1_000)
        .await
        .unwrap_err();
    assert!(
        matches!(busy, SnapshotError::Exists { .. }),
        "a fresh PENDING may still commit: {busy}"
    );
    assert!(tidy(&store, &volume, NOW + 1_000).await.unwrap().is_empty());

    let late = NOW + PENDING_TIMEOUT_MS + 1;
    assert_eq!(tidy(&store, &volume, late).await.unwrap(), vec!["s1".to_string()]);
    assert!(matches!(
        describe(&store, &volume, "s1", late).await.unwrap_err(),
        SnapshotError::Unknown { .. }
    ));
    assert!(only_tombstones(&store, &volume).await);
    create(&store, &index, &volume, "s1", 60, late).await.unwrap();
}

#[tokio::test]
async fn a_new_create_rolls_back_an_abandoned_pending_of_its_uuid() {
    let (store, index, volume) = volume_with_manifest("snap-abandoned").await;
    abandoned_record(&store, &volume, "s1", NOW).await;
    let late = NOW + PENDING_TIMEOUT_MS + 1;
    create(&store, &index, &volume, "s1", 60, late).await.unwrap();
    assert_eq!(
        describe(&store, &volume, "s1", late).await.unwrap().state,
        State::Committed
    );
}

#[tokio::test]
async fn the_outcome_is_decided_once_so_a_recovery_and_a_slow_creator_cannot_both_win() {
    let (store, _index, volume) = volume_with_manifest("snap-outcome").await;
    abandoned_record(&store, &volume, "s1", NOW).await;
    let recovery = entry::decide(&store, &volume, "s1", 1, Decision::Aborted, "recovery")
        .await
        .unwrap();
    let creator = entry::decide(&store, &volume, "s1", 1, Decision::Committed, "dead")
        .await
        .unwrap();
    assert_eq!((recovery, creator), (Decision::Aborted, Decision::Aborted));
    let entry = Entry::read(&store, &volume, "s1").await.unwrap();
    assert!(entry.snapshot(NOW).is_none(), "a rolled-back snapshot does not count");
}

#[tokio::test]
async fn a_create_backs_off_from_a_manifest_gc_is_deleting_and_leaves_nothing() {
    let (store, index, volume) = volume_with_manifest("snap-tombstone").await;
    let head = crate::chain::latest_manifest_name(&store, &volume)
        .await
        .unwrap()
        .unwrap();
    store
        .put_if_absent(&layout::collecting_key(&volume, &head), "{}".into())
        .await
        .unwrap();
    let err = create(&store, &index, &volume, "s1", 60, NOW).await.unwrap_err();
    assert!(matches!(err, SnapshotError::RolledBack { .. }), "{err}");
    assert!(err.to_string().contains("GC was deleting manifest"), "{err}");
    assert!(only_tombstones(&store, &volume).await);
}

#[tokio::test]
async fn bad_uuids_and_empty_volumes_are_named() {
    let (store, index, _) = volume_with_manifest("snap-bad").await;
    let err = create(
        &store,
        &index,
        &VolumeId::parse("kv/b/kvstore-1").unwrap(),
        "../x",
        60,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("\"../x\""), "{err}");
    let empty = VolumeId::parse("kv/b/none").unwrap();
    let err = create(&store, &index, &empty, "s1", 60, NOW).await.unwrap_err();
    assert!(matches!(err, SnapshotError::EmptyVolume(_)), "{err}");
}

#[tokio::test]
async fn a_cleaner_with_an_old_view_cannot_touch_a_newer_generation_of_the_uuid() {
    let (store, index, volume) = volume_with_manifest("snap-generations").await;
    create(&store, &index, &volume, "s1", 1, NOW).await.unwrap();
    let later = NOW + 2_000;
    let stale_view = Entry::read(&store, &volume, "s1").await.unwrap();
    assert!(stale_view.is_finished(later), "expired");
    create(&store, &index, &volume, "s1", 60, later).await.unwrap();
    // A cleaner that read the expired first generation acts only now.
    release::finish(&store, &volume, &stale_view, false).await.unwrap();
    assert_eq!(
        describe(&store, &volume, "s1", later).await.unwrap().state,
        State::Committed
    );
    assert_eq!(tidy(&store, &volume, later).await.unwrap(), vec!["s1".to_string()]);
    let objects = store.list(&layout::snapshot_dir(&volume, "s1")).await.unwrap();
    assert_eq!(
        objects.len(),
        2,
        "the live generation's record and outcome: {objects:?}"
    );
}
