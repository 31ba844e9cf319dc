//! The log-store operations end to end, on file:// and the local S3 server: a create killed
//! between its two phases and its recovery, a zombie uploader fenced by a newer term, namespace
//! deletion with a keep-list (and killed half-way), snapshot expiry on a live mount.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::data;
use support::node::{snapshot_args, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b1/kvstore-0";

/// GC with no retention and no upload grace: only what snapshots pin and the head survive.
fn collect_now(node: &Node, url: &str) -> Value {
    node.gc_now(url, VOLUME)
}

fn describe(node: &Node, url: &str, uuid: &str) -> Value {
    node.json(&[
        "snapshot", "describe", "--store", url, "--volume", VOLUME, "--uuid", uuid,
    ])
}

#[test]
fn a_create_killed_between_its_phases_pins_until_rolled_back_and_never_commits_by_itself() {
    require_root!();
    // Both stores crash first, so the one wait for the abandoned record to time out is shared.
    let crashed: Vec<(TestStore, Node, Instant)> = TestStore::all()
        .into_iter()
        .map(|store| {
            let node = Node::new(store.env());
            let src = node.path("src");
            data::write(&src, "log.1", &data::bytes(1, 200_000));
            node.publish(&store, &src, VOLUME, &[]);
            let url = store.url();
            let args = snapshot_args(&url, VOLUME, "s1", "600");
            node.crash_at(lazysnap::failpoint::SNAPSHOT_RECORDED, &args);
            let crashed_at = Instant::now();

            // The record is durable but nothing committed it: PENDING, pinning, not mountable.
            assert_eq!(describe(&node, &url, "s1")["state"], "PENDING", "{}", store.name());
            let refused = node.fails(&["mount", "--store", &url, "--volume", VOLUME, "--snapshot", "s1"]);
            assert!(
                refused.contains("still being created") && refused.contains("NotMyVbucket"),
                "{refused}"
            );
            // The PENDING record pins its manifest: GC with no retention keeps its files.
            data::write(&src, "log.2", &data::bytes(2, 1000));
            std::fs::remove_file(src.join("log.1")).unwrap();
            node.publish(&store, &src, VOLUME, &[]);
            let gc = collect_now(&node, &url);
            assert_eq!(gc["filesDeleted"], json!([]), "{}: {gc}", store.name());
            assert!(store.objects().keys().any(|k| k.ends_with("files/log.1")));
            // Creating the same UUID while the crashed one may still be alive is refused.
            let again = node.fails(&snapshot_args(&url, VOLUME, "s1", "600"));
            assert!(again.contains("already exists") && again.contains("Einval"), "{again}");
            (store, node, crashed_at)
        })
        .collect();

    let abandoned_after = Duration::from_millis(lazysnap::snapshot::PENDING_TIMEOUT_MS + 1000);
    if let Some(wait) = abandoned_after.checked_sub(crashed[0].2.elapsed()) {
        std::thread::sleep(wait);
    }
    for (store, node, _) in &crashed {
        let url = store.url();
        // GC finds the abandoned record, rolls it back, and then the files only it pinned go.
        let gc = collect_now(node, &url);
        assert_eq!(gc["snapshotsTidied"], json!(["s1"]), "{}: {gc}", store.name());
        assert_eq!(gc["filesDeleted"], json!(["log.1"]), "{}: {gc}", store.name());
        let gone = node.fails(&[
            "snapshot", "describe", "--store", &url, "--volume", VOLUME, "--uuid", "s1",
        ]);
        assert!(gone.contains("not found") && gone.contains("NotMyVbucket"), "{gone}");
        // The UUID can be used again, and that snapshot commits and mounts.
        let created = node.json(&snapshot_args(&url, VOLUME, "s1", "600"));
        assert_eq!(created["logFiles"], json!(["log.2"]));
        assert_eq!(describe(node, &url, "s1")["state"], "COMMITTED");
        let mount = node.mount(&["--store", &url, "--volume", VOLUME, "--snapshot", "s1"]);
        let read = std::fs::read(mount.path.join(VOLUME).join("log.2")).unwrap();
        assert_eq!(read, data::bytes(2, 1000));
        mount.unmount();

        let listed = node.json(&["snapshot", "list", "--store", &url, "--volume", VOLUME]);
        assert_eq!(
            (listed[0]["snapshotUUID"].clone(), listed[0]["state"].clone()),
            (json!("s1"), json!("COMMITTED"))
        );
        let release = [
            "snapshot", "release", "--store", &url, "--volume", VOLUME, "--uuid", "s1",
        ];
        assert_eq!(node.json(&release)["released"], true);
        assert_eq!(node.json(&release)["released"], false, "releasing again is a no-op");
        assert_eq!(
            node.json(&["snapshot", "list", "--store", &url, "--volume", VOLUME]),
            json!([])
        );
        node.index_agrees(store);
    }
    support::crash_row("snapshot create", &[lazysnap::failpoint::SNAPSHOT_RECORDED]);
}

#[test]
fn a_zombie_uploader_with_an_older_term_is_fenced_and_changes_nothing() {
    require_root!();
    for store in TestStore::all() {
        let url = store.url();
        let (old, new) = (Node::new(store.env()), Node::new(store.env()));
        let (old_src, new_src) = (old.path("engine"), new.path("engine"));
        data::write(&old_src, "a.sst", &data::bytes(1, 50_000));
        data::write(&new_src, "a.sst", &data::bytes(1, 50_000));
        let start = |node: &Node, src: &std::path::Path, term: &str| {
            let src = src.to_str().unwrap();
            let args = [
                "uploader",
                "start",
                "--store",
                &url,
                "--volume",
                VOLUME,
                "--source",
                src,
                "--term",
                term,
                "--interval",
                "3600",
            ];
            node.json(&args)
        };
        assert_eq!(start(&old, &old_src, "1")["state"], "RUNNING");
        let synced = old.json(&["sync", "--store", &url, "--volume", VOLUME]);
        assert!(synced["logManifestName"].is_string(), "{synced}");

        // The role moves: the new node's term fences the old one, wherever it runs.
        start(&new, &new_src, "2");
        // The uploader may be scanning already: files arrive complete, as from an engine.
        data::write_complete(&new_src, "b.sst", &data::bytes(2, 50_000));
        let taken_over = new.json(&["sync", "--store", &url, "--volume", VOLUME]);
        assert!(taken_over["logManifestName"].is_string(), "{taken_over}");

        let before = store.objects();
        data::write_complete(&old_src, "zombie.sst", &data::bytes(3, 50_000));
        let refused = old.fails(&["sync", "--store", &url, "--volume", VOLUME]);
        assert!(
            refused.contains("fenced") && refused.contains("NotMyVbucket"),
            "{}: {refused}",
            store.name()
        );
        let listed = old.json(&["uploader", "list"]);
        assert_eq!(listed[0]["state"], "FENCED", "{listed}");
        // The same term from the CLI is refused before it writes, and so is its GC.
        let old_src_arg = old_src.to_str().unwrap();
        let publish = old.fails(&[
            "publish",
            old_src_arg,
            "--store",
            &url,
            "--volume",
            VOLUME,
            "--term",
            "1",
        ]);
        assert!(
            publish.contains("term 1 is older than the volume's current term 2"),
            "{publish}"
        );
        let gc = old.fails(&[
            "gc",
            "--store",
            &url,
            "--volume",
            VOLUME,
            "--term",
            "1",
            "--retention",
            "0",
            "--upload-grace",
            "0",
        ]);
        assert!(gc.contains("fenced") && gc.contains("Einval"), "{gc}");
        let restart = old.fails(&[
            "uploader",
            "start",
            "--store",
            &url,
            "--volume",
            VOLUME,
            "--source",
            old_src_arg,
            "--term",
            "1",
        ]);
        assert!(restart.contains("fenced") || restart.contains("older"), "{restart}");
        assert_eq!(
            store.objects(),
            before,
            "{}: the fenced uploader changed the store",
            store.name()
        );

        // The current uploader goes on; stopping answers its last state.
        let stopped = new.json(&["uploader", "stop", "--store", &url, "--volume", VOLUME]);
        assert_eq!(stopped["state"], "STOPPED");
        assert_eq!(stopped["term"], "2");
        let none = new.fails(&["sync", "--store", &url, "--volume", VOLUME]);
        assert!(none.contains("no uploader") && none.contains("NotMyVbucket"), "{none}");
    }
}

#[test]
fn namespace_delete_keeps_the_kept_refuses_live_mounts_and_finishes_after_a_crash() {
    require_root!();
    for store in TestStore::all() {
        let url = store.url();
        let node = Node::new(store.env());
        let src = node.path("src");
        data::write(&src, "data", &data::bytes(7, 100_000));
        for volume in ["kv/b1/kvstore-0", "kv/b1/kvstore-1", "kv/b2/kvstore-0", "ks/t1"] {
            node.publish(&store, &src, volume, &[]);
        }
        let namespaces = |node: &Node| -> Vec<String> {
            let listed = node.json(&["namespace", "list", "--store", &url]);
            listed
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["namespace"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(namespaces(&node), ["ks", "kv/b1", "kv/b2"]);

        let mount = node.mount(&["--store", &url, "--volume", "kv/b1/kvstore-0"]);
        let refused = node.fails(&["namespace", "delete", "--store", &url, "--keep", "kv/b1"]);
        assert!(
            refused.contains("live mount") && refused.contains("Einval"),
            "{refused}"
        );
        let dry = node.json(&["namespace", "delete", "--store", &url, "--keep", "kv/b1", "--dry-run"]);
        assert_eq!(dry["deleted"].as_array().unwrap().len(), 2, "{dry}");
        assert_eq!(namespaces(&node).len(), 3, "a dry run deletes nothing");
        mount.unmount();

        let report = node.json(&["namespace", "delete", "--store", &url, "--keep", "kv/b1"]);
        assert_eq!(report["deleted"][0]["namespace"], "ks", "{report}");
        assert_eq!(report["deleted"][1]["namespace"], "kv/b2", "{report}");
        assert_eq!(namespaces(&node), ["kv/b1"]);
        assert!(
            store.objects().keys().all(|k| k.contains("volumes/kv/b1/")),
            "{:?}",
            store.objects()
        );

        // Killed after the data went but before the manifests: the volume is still listed, so the
        // next delete finds it and finishes.
        node.ok(&["daemon", "stop"]);
        node.crash_at(
            lazysnap::failpoint::NAMESPACE_FILES_DELETED,
            &["namespace", "delete", "--store", &url, "--all"],
        );
        assert!(!namespaces(&node).is_empty(), "nothing listed after a half-done delete");
        node.index_agrees(&store);
        node.json(&["namespace", "delete", "--store", &url, "--all"]);
        assert!(namespaces(&node).is_empty());
        node.index_agrees(&store);
        assert!(
            store.objects().keys().all(|k| !k.contains("volumes/")),
            "{:?}",
            store.objects()
        );
    }
    support::crash_row("namespace delete", &[lazysnap::failpoint::NAMESPACE_FILES_DELETED]);
}

#[test]
fn a_mounted_snapshot_that_expires_with_blocks_not_local_is_reported() {
    require_root!();
    let store = TestStore::file();
    let url = store.url();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "cold", &data::bytes(9, 600_000));
    node.publish(&store, &src, VOLUME, &[]);
    node.json(&[
        "snapshot",
        "create",
        "--store",
        &url,
        "--volume",
        VOLUME,
        "--uuid",
        "short",
        "--validity",
        "3",
    ]);
    let mount = node.mount(&["--store", &url, "--volume", VOLUME, "--snapshot", "short"]);
    let state = || node.json(&["mounts"])[0]["volumes"][0]["snapshot"].clone();
    assert_eq!(state()["state"], "VALID");
    std::thread::sleep(Duration::from_millis(3200));
    let expired = state();
    assert_eq!(expired["state"], "EXPIRED", "{expired}");
    assert_eq!(expired["bytesNotLocal"], 600_000);
    assert_eq!(expired["atRisk"], true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node
        .daemon_log()
        .contains("mounted snapshot has expired with blocks not yet local")
    {
        assert!(Instant::now() < deadline, "no expiry warning: {}", node.daemon_log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The mount keeps serving; once every block is local the risk is gone.
    assert_eq!(
        std::fs::read(mount.path.join(VOLUME).join("cold")).unwrap(),
        data::bytes(9, 600_000)
    );
    assert_eq!(state()["atRisk"], false);
    mount.unmount();
}

#[test]
fn uploaders_come_back_after_a_daemon_crash_but_not_after_a_clean_stop() {
    require_root!();
    let store = TestStore::file();
    let url = store.url();
    let node = Node::new(store.env());
    let src = node.path("engine");
    data::write(&src, "a.sst", &data::bytes(4, 10_000));
    let source = src.to_str().unwrap();
    let start = [
        "uploader", "start", "--store", &url, "--volume", VOLUME, "--source", source, "--term", "3",
    ];
    node.json(&start);
    node.kill_daemon();
    node.ok(&["daemon", "start"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let restored = loop {
        let listed = node.json(&["uploader", "list"]);
        if listed.as_array().is_some_and(|l| !l.is_empty()) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "no uploader came back: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(restored[0]["term"], "3");
    assert_eq!(restored[0]["state"], "RUNNING");
    data::write_complete(&src, "b.sst", &data::bytes(5, 10_000));
    let synced = node.json(&["sync", "--store", &url, "--volume", VOLUME]);
    assert_eq!(synced["published"], true, "{synced}");

    node.ok(&["daemon", "stop"]);
    node.ok(&["daemon", "start"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.json(&["uploader", "list"]), json!([]));
}
