//! The crash matrix of the store-side operations: SIGKILL at each failpoint of publish, GC and
//! snapshot release, on file:// and the local S3 server, then a checker proves the invariants:
//! nothing half-visible (the volume shows the last complete manifest, byte for byte, through a
//! mount), no file a live snapshot or the head needs is gone, running the operation again finishes
//! it without redoing finished work, what it left is cleaned by the next GC, and the node's index
//! agrees with the store (`lazysnap index check`). Snapshot create
//! and namespace delete are killed between their phases in `tests/lifecycle.rs`. The daemon's
//! jobs (a restore, a hydration, a backup round) are killed here at their failpoints, and at
//! random moments in `tests/restore.rs`, `tests/hydrate.rs` and `tests/backup.rs`.

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

/// The checker: the volume's head (and each snapshot given) mounts and reads back exactly, and
/// the node's index agrees with the store.
fn shows(node: &Node, store: &TestStore, expected: &Tree, snapshots: &[(&str, &Tree)]) {
    node.index_agrees(store);
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
    support::crash_row("publish", &[failpoint::PUBLISH_DATA_UPLOADED]);
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
    support::crash_row(
        "gc",
        &[failpoint::GC_TOMBSTONES_WRITTEN, failpoint::GC_MANIFESTS_DELETED],
    );
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
        // The kill came between the store's marker and the index: the checker sees the index
        // still taking the snapshot as live.
        let check = ["index", "check", "--store", &url];
        let stale = node.fails(&check);
        assert!(
            stale.contains("disagrees") && stale.contains("1 place"),
            "{what}: {stale}"
        );
        let listed = String::from_utf8(node.run(&check).stdout).unwrap();
        assert!(listed.contains("snapshot gone"), "{what}: {listed}");
        // Releasing again finishes it; GC then collects what only the snapshot pinned.
        node.json(&release);
        let report = node.gc_now(&url, VOLUME);
        let listed = node.json(&["snapshot", "list", "--store", &url, "--volume", VOLUME]);
        assert_eq!(listed, json!([]), "{what}: {listed}");
        assert!(objects_under(&store, "files/pinned.log").is_empty(), "{what}: {report}");
        shows(&node, &store, &head, &[]);
    }
    support::crash_row("snapshot release", &[failpoint::SNAPSHOT_RELEASE_MARKED]);
}

/// The daemon's jobs killed at their failpoints: a restore with one file complete, a hydration
/// with one piece cached. After a restart each resumes by itself, fetches only what was not done
/// (counted at the S3 server) and ends byte-identical; no file is under its final name torn.
#[test]
fn a_restore_and_a_hydration_killed_at_their_failpoints_resume_without_refetching() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let node = Node::new(store.env());
        let src = node.path("src");
        let files = [("a.log", 31, 8 << 20), ("b.log", 32, 8 << 20), ("c.log", 33, 8 << 20)];
        let expected = version(&src, &files);
        let total: u64 = files.iter().map(|f| f.2 as u64).sum();
        node.publish(&store, &src, VOLUME, &[]);
        let from = format!("{}#{VOLUME}", store.url());

        node.start_daemon_armed(failpoint::RESTORE_FILE_COMPLETED);
        let dest = node.path("dest");
        let job = node.json(&[
            "restore",
            "start",
            "--from",
            &from,
            "--dest",
            dest.to_str().unwrap(),
            "--bandwidth",
            "8M",
        ]);
        let id = job["id"].as_str().unwrap().to_string();
        node.kill_daemon_at(failpoint::RESTORE_FILE_COMPLETED);
        let complete: u64 = data::tree(&dest)
            .into_iter()
            .filter(|(name, _)| !name.contains(".lazysnap-restore-"))
            .map(|(name, bytes)| {
                assert!(
                    expected.get(&name) == Some(&bytes),
                    "{what}: {name} is torn under its final name"
                );
                bytes.len() as u64
            })
            .sum();
        assert!(
            complete >= 8 << 20 && complete < total,
            "{what}: {complete} bytes complete"
        );
        if let Some(server) = store.server() {
            server.reset_stats();
        }
        node.ok(&["daemon", "start"]);
        let done = node.wait_for_restore(&id, what, |s| s["state"] == "COMPLETED");
        let fetched = done["bytesFetchedThisRun"].as_u64().unwrap();
        support::assert_fetched_only_what_was_left(&store, fetched, total, complete);
        assert!(data::tree(&dest) == expected, "{what}: the restored folder differs");
        node.ok(&["daemon", "stop"]);

        node.start_daemon_armed(failpoint::HYDRATION_PIECE_CACHED);
        let url = store.url();
        let mount = node.mount(&["--store", &url, "--volume", VOLUME, "--hydrate", "--bandwidth", "8M"]);
        node.kill_daemon_at(failpoint::HYDRATION_PIECE_CACHED);
        let cached: u64 = files
            .iter()
            .map(|(name, _, _)| {
                node.json(&["stat", &format!("{url}#{VOLUME}:{name}")])["bytesCached"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert!(cached >= 8 << 20 && cached < total, "{what}: {cached} bytes cached");
        if let Some(server) = store.server() {
            server.reset_stats();
        }
        node.restart_daemon_and_wait_for_mounts();
        let path = mount.path.to_str().unwrap();
        let after = node.json(&["hydrate", path, "--status", "--wait"]);
        assert_eq!(after["state"], "COMPLETED", "{what}: {after}");
        let fetched = after["bytesFetched"].as_u64().unwrap();
        support::assert_fetched_only_what_was_left(&store, fetched, total, cached);
        assert!(
            data::tree(&mount.path.join(VOLUME)) == expected,
            "{what}: the mount differs"
        );
        mount.unmount();
        node.index_agrees(&store);
    }
    support::crash_row(
        "restore, hydration",
        &[failpoint::RESTORE_FILE_COMPLETED, failpoint::HYDRATION_PIECE_CACHED],
    );
}

/// A backup round killed after placing its files and before writing its generation: the
/// location shows no generation naming them; started again on the next daemon, the backup places
/// its files over what the dead round left and its first generation shows the folder byte for byte.
#[test]
fn a_backup_round_killed_before_its_generation_shows_nothing_and_starting_again_writes_it() {
    require_root!();
    for store in TestStore::all() {
        let what = store.name();
        let node = Node::new(store.env());
        let src = node.path("src");
        let expected = version(&src, &[("a.log", 41, 300_000), ("sub/b.log", 42, 70_000)]);
        let location = store.url();
        node.start_daemon_armed(failpoint::BACKUP_FILES_PLACED);
        let src_s = src.to_str().unwrap();
        // The start answers after the first round, which the failpoint holds: asked in the
        // background, answered with an error when the daemon dies.
        let mut start = node
            .command()
            .args([
                "backup",
                "start",
                "--source",
                src_s,
                "--location",
                &location,
                "--interval",
                "1s",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        node.kill_daemon_at(failpoint::BACKUP_FILES_PLACED);
        assert!(
            !start.wait().unwrap().success(),
            "{what}: the start answered without its round"
        );
        let generations: Vec<String> = store
            .objects()
            .into_keys()
            .filter(|k| k.contains("metadata."))
            .collect();
        assert!(
            generations.is_empty(),
            "{what}: a generation was written: {generations:?}"
        );

        // The start was never answered, so no backup was recorded to come back; started again,
        // it places the same files over what the dead round left and writes the generation.
        node.ok(&[
            "backup",
            "start",
            "--source",
            src_s,
            "--location",
            &location,
            "--interval",
            "1s",
        ]);
        let list = node.json(&["backup", "list"]);
        assert_eq!(list[0]["lastGeneration"], 1, "{what}: {list}");
        let mount = node.mount(&["--backup", &location]);
        let shown = data::tree(&mount.path.join("src"));
        assert!(
            shown == expected,
            "{what}: the generation differs: {:?}",
            shown.keys().collect::<Vec<_>>()
        );
        mount.unmount();
        node.ok(&["backup", "stop", "--location", &location]);
    }
    support::crash_row("backup round", &[failpoint::BACKUP_FILES_PLACED]);
}
