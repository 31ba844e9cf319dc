//! Namespaces: the groups volumes belong to (`kv/<bucketUUID>` for `kv/<bucketUUID>/kvstore-0`,
//! see [`VolumeId::namespace`]). Fusion's Delete Namespaces drops every namespace of a store but
//! those it is told to keep.
//!
//! A volume is deleted data first, then snapshot records, then manifests: until its last manifest
//! is gone the volume is still listed, so a delete that crashed half-way is found and finished by
//! the next one, and a reader meanwhile gets I/O errors for missing objects, never wrong bytes.
//! Only a volume's own `files`, `snapshots` and `manifests` folders are deleted, never a prefix, so
//! a volume nested under another one's ID (`a/b` and `a/b/c`) is untouched unless it is dropped too.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::chain;
use crate::index::{Index, IndexError};
use crate::names::{NameError, VolumeId};
use crate::store::{layout, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace to keep {namespace:?} is not a namespace name: {source}")]
    InvalidKeep {
        namespace: String,
        #[source]
        source: NameError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// One namespace of a store and its volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Namespace {
    pub namespace: String,
    pub volumes: Vec<String>,
}

/// What [`delete_except`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    pub dry_run: bool,
    pub deleted: Vec<Namespace>,
    pub kept: Vec<Namespace>,
    pub objects_deleted: u64,
    pub bytes_deleted: u64,
}

/// Every namespace of the store with its volumes, sorted.
pub async fn list(store: &Store) -> Result<Vec<Namespace>, StoreError> {
    Ok(group(chain::list_volumes(store).await?))
}

fn group(volumes: Vec<VolumeId>) -> Vec<Namespace> {
    let mut by_namespace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for volume in volumes {
        by_namespace
            .entry(volume.namespace().to_string())
            .or_default()
            .push(volume.to_string());
    }
    by_namespace
        .into_iter()
        .map(|(namespace, volumes)| Namespace { namespace, volumes })
        .collect()
}

/// True when `namespace` is one of `keep` or nested under one (keeping `kv` keeps `kv/b1`): a keep
/// entry never lets a namespace inside it go.
pub fn is_kept(namespace: &str, keep: &[String]) -> bool {
    keep.iter().any(|k| {
        namespace == k || (namespace.starts_with(k.as_str()) && namespace.as_bytes().get(k.len()) == Some(&b'/'))
    })
}

/// Checks that each entry of a keep-list is a well-formed namespace name.
pub fn validate_keep(keep: &[String]) -> Result<(), NamespaceError> {
    for namespace in keep {
        VolumeId::parse(namespace).map_err(|source| NamespaceError::InvalidKeep {
            namespace: namespace.clone(),
            source,
        })?;
    }
    Ok(())
}

/// What a delete with a keep-list would do, decided from one listing of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub deleted: Vec<Namespace>,
    pub kept: Vec<Namespace>,
}

/// Splits the store's namespaces by the keep-list.
pub async fn plan(store: &Store, keep: &[String]) -> Result<Plan, NamespaceError> {
    validate_keep(keep)?;
    let (deleted, kept) = list(store)
        .await?
        .into_iter()
        .partition(|ns| !is_kept(&ns.namespace, keep));
    Ok(Plan { deleted, kept })
}

/// Splits the store's namespaces into `namespace` (with those nested in it) and the rest: a delete
/// of one namespace (kv_engine's 0x77 today), decided from one listing like [`plan`].
pub async fn plan_one(store: &Store, namespace: &str) -> Result<Plan, NamespaceError> {
    validate_keep(&[namespace.to_string()])?;
    let one = [namespace.to_string()];
    let (deleted, kept) = list(store)
        .await?
        .into_iter()
        .partition(|ns| is_kept(&ns.namespace, &one));
    Ok(Plan { deleted, kept })
}

/// Deletes every namespace of the store except those in `keep` (an empty list deletes all), and
/// forgets their volumes in the index.
pub async fn delete_except(
    store: &Store,
    index: &Index,
    keep: &[String],
    dry_run: bool,
) -> Result<DeleteReport, NamespaceError> {
    let plan = plan(store, keep).await?;
    carry_out(store, index, plan, dry_run).await
}

/// Deletes what `plan` dooms (a caller that checked the plan first need not list again).
pub async fn carry_out(
    store: &Store,
    index: &Index,
    plan: Plan,
    dry_run: bool,
) -> Result<DeleteReport, NamespaceError> {
    let Plan { deleted, kept } = plan;
    let mut report = DeleteReport {
        dry_run,
        ..DeleteReport::default()
    };
    for namespace in &deleted {
        for volume in &namespace.volumes {
            let volume = VolumeId::parse(volume).expect("listed volumes are valid");
            let (objects, bytes) = delete_volume(store, index, &volume, dry_run).await?;
            report.objects_deleted += objects;
            report.bytes_deleted += bytes;
        }
        if !dry_run {
            tracing::info!(store = %store.url(), namespace = %namespace.namespace, "namespace deleted");
        }
    }
    report.deleted = deleted;
    report.kept = kept;
    Ok(report)
}

/// Deletes one volume's objects in crash-safe order; answers (objects, bytes).
async fn delete_volume(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    dry_run: bool,
) -> Result<(u64, u64), NamespaceError> {
    let mut totals = (0, 0);
    let folders = [
        layout::files_dir(volume),
        layout::snapshots_dir(volume),
        layout::manifests_dir(volume),
    ];
    for (i, folder) in folders.iter().enumerate() {
        let objects = store.list(folder).await?;
        totals.0 += objects.len() as u64;
        totals.1 += objects.iter().map(|o| o.size).sum::<u64>();
        if dry_run {
            continue;
        }
        // Collected first: a stream over a borrowing closure makes rustc doubt the future is Send.
        let deletes: Vec<_> = objects.iter().map(|o| store.delete(&o.key)).collect();
        futures::stream::iter(deletes)
            .buffered(DELETES_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        if i == 0 {
            crate::failpoint::reached(crate::failpoint::NAMESPACE_FILES_DELETED);
        }
    }
    if !dry_run {
        index.forget_volume(store.url(), volume)?;
    }
    Ok(totals)
}

/// Deletes sent at once: enough to hide per-request latency, few enough not to be throttled.
const DELETES_IN_FLIGHT: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_a_namespace_keeps_the_namespaces_inside_it_only() {
        let keep = vec!["kv/b1".to_string()];
        assert!(is_kept("kv/b1", &keep));
        assert!(is_kept("kv/b1/inner", &keep));
        assert!(!is_kept("kv/b10", &keep));
        assert!(!is_kept("kv", &keep));
        assert!(!is_kept("kv/b1", &[]));
    }

    #[test]
    fn volumes_group_by_namespace() {
        let volumes = ["kv/b1/kvstore-0", "kv/b1/kvstore-1", "kv/b2/kvstore-0", "solo"]
            .iter()
            .map(|v| VolumeId::parse(v).unwrap())
            .collect();
        let groups = group(volumes);
        let names: Vec<_> = groups.iter().map(|n| (n.namespace.as_str(), n.volumes.len())).collect();
        assert_eq!(names, [("kv/b1", 2), ("kv/b2", 1), ("solo", 1)]);
    }

    async fn publish_one(store: &Store, index: &Index, volume: &str) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data"), volume.as_bytes()).unwrap();
        let volume = VolumeId::parse(volume).unwrap();
        let options = crate::publish::PublishOptions::default();
        crate::publish::publish(store, index, dir.path(), &volume, &options, &crate::publish::NoProgress)
            .await
            .unwrap();
        crate::snapshot::create(store, index, &volume, "s1", 60, crate::time::now_ms())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn delete_drops_every_object_of_unkept_namespaces_and_nothing_else() {
        let url = "test://namespaces".parse().unwrap();
        let store = Store::open(&url, &crate::store::StoreConfig::default()).unwrap();
        let index = Index::open_in_memory().unwrap();
        // "a/b" is a volume of namespace "a"; "a/b/c" one of namespace "a/b", nested in its folder.
        for volume in ["kv/b1/kvstore-0", "kv/b2/kvstore-0", "a/b", "a/b/c"] {
            publish_one(&store, &index, volume).await;
        }
        let all_objects = store.list(&layout::VOLUMES.into()).await.unwrap().len();

        let dry = delete_except(&store, &index, &["kv/b1".into(), "a/b".into()], true)
            .await
            .unwrap();
        assert_eq!(store.list(&layout::VOLUMES.into()).await.unwrap().len(), all_objects);
        let doomed: Vec<_> = dry.deleted.iter().map(|n| n.namespace.as_str()).collect();
        assert_eq!(doomed, ["a", "kv/b2"]);

        let report = delete_except(&store, &index, &["kv/b1".into(), "a/b".into()], false)
            .await
            .unwrap();
        assert_eq!(report.objects_deleted, dry.objects_deleted);
        let left: Vec<_> = list(&store).await.unwrap().into_iter().map(|n| n.namespace).collect();
        assert_eq!(left, ["a/b", "kv/b1"]);
        let remaining = store.list(&layout::VOLUMES.into()).await.unwrap();
        assert_eq!(remaining.len() as u64, all_objects as u64 - report.objects_deleted);
        assert!(remaining.iter().all(|o| {
            let key = o.key.as_ref();
            key.starts_with("volumes/kv/b1/") || key.starts_with("volumes/a/b/c/")
        }));
        let b2 = VolumeId::parse("kv/b2/kvstore-0").unwrap();
        assert!(
            index.snapshot(&url, &b2, "s1").unwrap().is_none(),
            "index forgets deleted volumes"
        );

        let everything = delete_except(&store, &index, &[], false).await.unwrap();
        assert_eq!(everything.kept, []);
        assert!(store.list(&layout::VOLUMES.into()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_malformed_keep_entry_is_refused_before_anything_is_deleted() {
        let url = "test://namespaces-bad".parse().unwrap();
        let store = Store::open(&url, &crate::store::StoreConfig::default()).unwrap();
        let index = Index::open_in_memory().unwrap();
        publish_one(&store, &index, "kv/b1/kvstore-0").await;
        let err = delete_except(&store, &index, &["../etc".into()], false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"../etc\""), "{err}");
        assert_eq!(list(&store).await.unwrap().len(), 1);
    }
}
