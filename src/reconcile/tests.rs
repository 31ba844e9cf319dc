use super::*;
use crate::publish::{publish, NoProgress, PublishOptions};
use crate::store::StoreConfig;

/// A store with one volume of two manifests and a live snapshot of the newest, all indexed.
async fn indexed_volume(name: &str) -> (Store, Index, VolumeId) {
    let store = Store::open(&format!("test://{name}").parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Index::open_in_memory().unwrap();
    let volume = VolumeId::parse("kv/b/kvstore-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (file, bytes) in [("log.1", &b"one"[..]), ("log.2", &b"two, longer"[..])] {
        std::fs::write(dir.path().join(file), bytes).unwrap();
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
    }
    snapshot::create(&store, &index, &volume, "s1", 600, crate::time::now_ms())
        .await
        .unwrap();
    (store, index, volume)
}

async fn disagreements(store: &Store, index: &Index) -> Vec<String> {
    check(store, index, None).await.unwrap().disagreements
}

#[tokio::test]
async fn an_index_filled_by_the_operations_themselves_agrees_with_its_store() {
    let (store, index, _) = indexed_volume("reconcile-clean").await;
    let report = check(&store, &index, None).await.unwrap();
    assert_eq!(
        (report.volumes, report.manifests_compared, report.snapshots_compared),
        (1, 2, 1),
        "{report:?}"
    );
    assert_eq!(report.disagreements, Vec::<String>::new());
    // A fresh index agrees too (it lacks rows, it holds none the store does not back), and a sync
    // fills it without forgetting anything.
    let fresh = Index::open_in_memory().unwrap();
    assert_eq!(disagreements(&store, &fresh).await, Vec::<String>::new());
    let synced = sync(&store, &fresh, None).await.unwrap();
    assert_eq!((synced.manifests, synced.snapshots, synced.forgotten), (2, 1, 0));
    assert_eq!(check(&store, &fresh, None).await.unwrap().manifests_compared, 2);
}

#[tokio::test]
async fn a_snapshot_released_behind_the_index_is_found_and_sync_drops_it() {
    let (store, index, volume) = indexed_volume("reconcile-release").await;
    // Another node (its own index) releases it: ours still takes it as committed, as after a
    // release killed between its store marker and its index write.
    let other = Index::open_in_memory().unwrap();
    assert!(snapshot::release(&store, &other, &volume, "s1").await.unwrap());
    let found = disagreements(&store, &index).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("snapshot s1") && found[0].contains("released"),
        "{found:?}"
    );

    assert_eq!(sync(&store, &index, None).await.unwrap().forgotten, 1);
    assert_eq!(index.snapshot(store.url(), &volume, "s1").unwrap(), None);
    assert_eq!(disagreements(&store, &index).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_manifest_above_the_head_or_unlike_the_stores_is_found_and_read_again() {
    let (store, index, volume) = indexed_volume("reconcile-manifest").await;
    let head = chain::read_manifest(&store, &volume, &layout::manifest_name(2))
        .await
        .unwrap();
    // A manifest the store never got (a publish killed between its index and store writes)...
    let above = Manifest {
        name: layout::manifest_name(3),
        seq: 3,
        ..head.clone()
    };
    index.insert_manifest(store.url(), &above).unwrap();
    // ...and one whose indexed copy is not the store's (the index file damaged or written by
    // another build), on a second volume.
    let other = VolumeId::parse("kv/b/kvstore-2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"abc").unwrap();
    publish(
        &store,
        &Index::open_in_memory().unwrap(),
        dir.path(),
        &other,
        &PublishOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    let mut unlike = chain::read_manifest(&store, &other, &layout::manifest_name(1))
        .await
        .unwrap();
    unlike.term += 7;
    index.insert_manifest(store.url(), &unlike).unwrap();

    let found = disagreements(&store, &index).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|d| d.contains("above the store's head")), "{found:?}");
    assert!(
        found.iter().any(|d| d.contains("term is") && d.contains("kvstore-2")),
        "{found:?}"
    );

    let synced = sync(&store, &index, None).await.unwrap();
    assert_eq!(synced.forgotten, 2, "{synced:?}");
    assert_eq!(disagreements(&store, &index).await, Vec::<String>::new());
    let read_again = index
        .manifest(store.url(), &other, &layout::manifest_name(1))
        .unwrap()
        .unwrap();
    assert_eq!(read_again.term, unlike.term - 7);
}

#[tokio::test]
async fn a_volume_deleted_behind_the_index_is_found_and_sync_forgets_it() {
    let (store, index, volume) = indexed_volume("reconcile-deleted").await;
    crate::namespace::delete_except(&store, &Index::open_in_memory().unwrap(), &[], false)
        .await
        .unwrap();
    let found = disagreements(&store, &index).await;
    assert_eq!(found.len(), 3, "two manifests and the snapshot: {found:?}");
    assert!(found.iter().all(|d| d.contains(volume.as_str())), "{found:?}");
    // A volume named for a sync must exist; the sync of all of them forgets it.
    let named = sync(&store, &index, Some(vec![volume.clone()])).await.unwrap_err();
    assert!(named.to_string().contains("not found"), "{named}");
    assert_eq!(sync(&store, &index, None).await.unwrap().forgotten, 3);
    assert_eq!(index.indexed_volumes(store.url()).unwrap(), Vec::<VolumeId>::new());
}
