use super::*;
use crate::publish::{publish, start_term, NoProgress, PublishError, PublishOptions};
use crate::store::StoreConfig;

struct Volume {
    store: Store,
    index: Index,
    volume: VolumeId,
}

impl Volume {
    fn new(name: &str) -> Volume {
        Volume {
            store: Store::open(&format!("test://{name}").parse().unwrap(), &StoreConfig::default()).unwrap(),
            index: Index::open_in_memory().unwrap(),
            volume: VolumeId::parse("kv/b/kvstore-2").unwrap(),
        }
    }

    /// Publishes exactly these files (name = content) as the next manifest.
    async fn publish(&self, files: &[&str], term: Option<u64>) -> Result<String, PublishError> {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), f.as_bytes()).unwrap();
        }
        let options = PublishOptions {
            term,
            ..PublishOptions::default()
        };
        let report = publish(
            &self.store,
            &self.index,
            dir.path(),
            &self.volume,
            &options,
            &NoProgress,
        )
        .await?;
        Ok(report.log_manifest_name)
    }

    async fn files(&self) -> Vec<String> {
        let prefix = layout::files_dir(&self.volume);
        let mut names: Vec<String> = self
            .store
            .list(&prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.filename().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    async fn gc(&self, options: GcOptions) -> Result<GcReport, GcError> {
        collect(&self.store, &self.index, &self.volume, &options, crate::time::now_ms()).await
    }
}

fn now_only() -> GcOptions {
    GcOptions {
        retention_ms: 0,
        upload_grace_ms: 0,
        ..GcOptions::default()
    }
}

#[tokio::test]
async fn deletes_what_only_superseded_manifests_name_and_keeps_what_a_snapshot_pins() {
    let v = Volume::new("gc-basic");
    v.publish(&["a", "b"], None).await.unwrap();
    let pinned = v.publish(&["b", "c"], None).await.unwrap();
    crate::snapshot::create(&v.store, &v.index, &v.volume, "keep", 3600, crate::time::now_ms())
        .await
        .unwrap();
    let head = v.publish(&["c", "d"], None).await.unwrap();

    let dry = v
        .gc(GcOptions {
            dry_run: true,
            ..now_only()
        })
        .await
        .unwrap();
    assert_eq!(dry.files_deleted, vec!["a".to_string()]);
    assert_eq!(v.files().await, ["a", "b", "c", "d"], "a dry run deletes nothing");

    let report = v.gc(now_only()).await.unwrap();
    assert_eq!(report.files_deleted, vec!["a".to_string()]);
    assert_eq!(report.manifests_kept, vec![pinned.clone(), head.clone()]);
    assert_eq!(report.manifests_deleted, vec![layout::manifest_name(1)]);
    assert_eq!(v.files().await, ["b", "c", "d"]);

    crate::snapshot::release(&v.store, &v.index, &v.volume, "keep")
        .await
        .unwrap();
    let report = v.gc(now_only()).await.unwrap();
    assert_eq!(report.files_deleted, vec!["b".to_string()]);
    assert_eq!(v.files().await, ["c", "d"]);
    assert_eq!(
        crate::chain::manifest_names(&v.store, &v.volume).await.unwrap(),
        vec![head]
    );
}

#[tokio::test]
async fn retention_keeps_young_manifests_and_the_grace_keeps_fresh_unnamed_uploads() {
    let v = Volume::new("gc-retention");
    v.publish(&["a"], None).await.unwrap();
    v.publish(&["b"], None).await.unwrap();
    v.store
        .put(
            &layout::file_key(&v.volume, &RelPath::parse("uploading").unwrap()),
            "x".into(),
        )
        .await
        .unwrap();
    let report = v.gc(GcOptions::default()).await.unwrap();
    assert!(report.files_deleted.is_empty(), "{report:?}");
    assert_eq!(v.files().await, ["a", "b", "uploading"]);
    let report = v.gc(now_only()).await.unwrap();
    assert_eq!(report.files_deleted, vec!["a".to_string(), "uploading".to_string()]);
}

#[tokio::test]
async fn an_older_term_is_fenced_from_gc_and_from_publishing() {
    let v = Volume::new("gc-fenced");
    v.publish(&["a"], Some(1)).await.unwrap();
    v.publish(&["b"], Some(1)).await.unwrap();
    let started = start_term(&v.store, &v.index, &v.volume, 2).await.unwrap();
    assert_eq!(
        (started.previous_term, started.log_manifest_name.clone()),
        (Some(1), layout::manifest_name(3))
    );
    let again = start_term(&v.store, &v.index, &v.volume, 2).await.unwrap();
    assert_eq!(
        again.log_manifest_name, started.log_manifest_name,
        "starting again writes nothing"
    );

    let err = v
        .gc(GcOptions {
            term: Some(1),
            ..now_only()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GcError::Fenced {
                requested: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(v.files().await, ["a", "b"], "a fenced GC deletes nothing");
    let err = v
        .gc(GcOptions {
            term: Some(3),
            ..now_only()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, GcError::TermNotStarted { .. }), "{err}");

    let err = v.publish(&["c"], Some(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::Fenced {
                requested: 1,
                current: 2
            }
        ),
        "{err}"
    );
    let err = start_term(&v.store, &v.index, &v.volume, 1).await.unwrap_err();
    assert!(matches!(err, PublishError::Fenced { .. }), "{err}");

    let report = v
        .gc(GcOptions {
            term: Some(2),
            ..now_only()
        })
        .await
        .unwrap();
    assert_eq!(report.files_deleted, vec!["a".to_string()]);
}

#[tokio::test]
async fn a_stale_writer_that_loses_the_race_for_the_next_manifest_learns_it_is_fenced() {
    let v = Volume::new("gc-race");
    v.publish(&["a"], Some(1)).await.unwrap();
    // The old uploader read the head (seq 1) and prepares seq 2; meanwhile term 2 starts.
    start_term(&v.store, &v.index, &v.volume, 2).await.unwrap();
    let stale = crate::manifest::Manifest {
        volume: v.volume.clone(),
        name: layout::manifest_name(2),
        term: 1,
        seq: 2,
        created_at_ms: 0,
        block_size: crate::manifest::DEFAULT_BLOCK_SIZE,
        files: Vec::new(),
    };
    let err = crate::publish::write_manifest(&v.store, &stale).await.unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::Fenced {
                requested: 1,
                current: 2
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_listing_error_or_unreadable_snapshot_stops_gc_before_any_delete() {
    let v = Volume::new("gc-malformed");
    v.publish(&["a"], None).await.unwrap();
    v.publish(&["b"], None).await.unwrap();
    let key = layout::snapshot_key(&v.volume, "broken", 1);
    v.store.put(&key, "not json".into()).await.unwrap();
    let err = v.gc(now_only()).await.unwrap_err();
    assert!(err.to_string().contains("broken"), "{err}");
    assert_eq!(v.files().await, ["a", "b"]);
}
