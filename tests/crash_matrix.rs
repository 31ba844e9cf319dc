//! The crash matrix of the store-side operations: SIGKILL at each failpoint of publish, GC and
//! snapshot release, on file:// and the local S3 server, then a checker proves the invariants:
//! nothing half-visible (the volume shows the last complete manifest, byte for byte, through a
//! mount), no file a live snapshot or the head needs is gone, running the operation again finishes
//! it without redoing finished work, and what it left is cleaned by the next GC. Snapshot create
//! and namespace delete are killed between their phases in `tests/lifecycle.rs`; restores,
//! hydrations and backup rounds cut by a daemon SIGKILL in `tests/restore.rs`, `tests/hydrate.rs`
//! and `tests/backup.rs`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use lazysnap::failpoint;
use serde_json::json;
use support::data;
use support::node::{gc_now_args, snapshot_args, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b21/kvstore-3";

type Tree = BTreeMap<String, Vec<u8>>;

/// Makes `src` hold exactly `files` (name, seed, length), so each publish is one version.
fn version(src: &Path, files: &[(&str, u64, usize)]) -> Tree {
    let _ = std::fs::remove_dir_all(src);
    for (name, seed, len) in files {
        data::write(src, name, &data::bytes(*seed, *len));
    }
    data::tree(src)
}

/// The checker: the volume's head (and each snapshot given) mounts and reads back exactly.
fn shows(node: &Node, store: &TestStore, expected: &Tree, snapshots: &[(&str, &Tree)]) {
    let url = store.url();
    let head = node.mount(&["--store", &url, "--volume", VOLUME]);
    assert!(
        data::tree(&head.path.join(VOLUME)) == *expected,
        "{}: the head differs",
        store.name()
    );
    head.unmount();
    for (uuid, tree) in snapshots {
        let pinned = node.mount(&["--store", &url, "--volume", VOLUME, "--snapshot", uuid]);
        assert!(
            data::tree(&pinned.path.join(VOLUME)) == **tree,
            "{}: snapshot {uuid} differs",
            store.name()
        );
        pinned.unmount();
    }
}

fn objects_under(store: &TestStore, part: &str) -> Vec<String> {
    store.objects().into_keys().filter(|k| k.contains(part)).collect()
}

#[test]
fn a_publish_killed_before_its_manifest_shows_nothing_and_the_next_one_uploads_nothing_twice() {
    require_root!();
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let src = node.path("src");
        let v1 = version(&src, &[("a.log", 1, 300_000)]);
        node.publish(&store, &src, VOLUME, &[]);
        let v2 = version(&src, &[("a.log", 1, 300_000), ("b.log", 2, 2_000_000)]);
        let url = store.url();
        node.crash_at(
            failpoint::PUBLISH_DATA_UPLOADED,
            &["publish", "--store", &url, "--volume", VOLUME, src.to_str().unwrap()],
        );
        // The data is in the store, but no manifest names it: the volume still shows v1.
        assert_eq!(objects_under(&store, "files/b.log").len(), 1, "{}", store.name());
        shows(&node, &store, &v1, &[]);
        let again = node.publish(&store, &src, VOLUME, &[]);
        assert_eq!(again["bytesUploaded"], json!(0), "{}: {again}", store.name());
        shows(&node, &store, &v2, &[]);
    }
}

#[test]
fn a_gc_killed_at_each_step_loses_nothing_needed_and_the_next_run_finishes_it() {
    require_root!();
    for point in [failpoint::GC_TOMBSTONES_WRITTEN, failpoint::GC_MANIFESTS_DELETED] {
        for store in TestStore::all() {
            let what = format!("{} at {point}", store.name());
            let (node, url) = (Node::new(store.env()), store.url());
            let src = node.path("src");
            version(&src, &[("old.log", 1, 200_000)]);
            node.publish(&store, &src, VOLUME, &[]);
            let pinned = version(&src, &[("pinned.log", 2, 200_000)]);
            node.publish(&store, &src, VOLUME, &[]);
            node.json(&snapshot_args(&url, VOLUME, "keep", "600"));
            let head = version(&src, &[("head.log", 3, 200_000)]);
            node.publish(&store, &src, VOLUME, &[]);

            node.crash_at(point, &gc_now_args(&url, VOLUME));
            // Whatever the kill cut, the head and the snapshot read back whole.
            shows(&node, &store, &head, &[("keep", &pinned)]);
            // A publish is not held up for good by the dead run's tombstones.
            let next = version(&src, &[("head.log", 3, 200_000), ("next.log", 4, 1000)]);
            node.publish(&store, &src, VOLUME, &[]);
            // The next GC finishes the job: only what nothing needs goes.
            let report = node.gc_now(&url, VOLUME);
            assert!(objects_under(&store, "files/old.log").is_empty(), "{what}: {report}");
            assert_eq!(objects_under(&store, "files/pinned.log").len(), 1, "{what}");
            assert!(
                objects_under(&store, "collecting").is_empty(),
                "{what}: tombstones left"
            );
            shows(&node, &store, &next, &[("keep", &pinned)]);
        }
    }
}

#[test]
fn a_release_killed_after_its_marker_is_released_and_the_next_release_and_gc_tidy_up() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let (node, url) = (Node::new(store.env()), store.url());
        let src = node.path("src");
        version(&src, &[("pinned.log", 1, 200_000)]);
        node.publish(&store, &src, VOLUME, &[]);
        node.json(&snapshot_args(&url, VOLUME, "gone", "600"));
        let head = version(&src, &[("head.log", 2, 200_000)]);
        node.publish(&store, &src, VOLUME, &[]);
        let release = [
            "snapshot", "release", "--store", &url, "--volume", VOLUME, "--uuid", "gone",
        ];
        node.crash_at(failpoint::SNAPSHOT_RELEASE_MARKED, &release);

        // Released from the moment its marker exists: listed as being deleted, not mountable.
        let listed = node.json(&["snapshot", "list", "--store", &url, "--volume", VOLUME]);
        assert_eq!(listed[0]["state"], json!("DELETING"), "{what}: {listed}");
        node.fails(&["mount", "--store", &url, "--volume", VOLUME, "--snapshot", "gone"]);
        // Releasing again finishes it; GC then collects what only the snapshot pinned.
        node.json(&release);
        let report = node.gc_now(&url, VOLUME);
        let listed = node.json(&["snapshot", "list", "--store", &url, "--volume", VOLUME]);
        assert_eq!(listed, json!([]), "{what}: {listed}");
        assert!(objects_under(&store, "files/pinned.log").is_empty(), "{what}: {report}");
        shows(&node, &store, &head, &[]);
    }
}
