//! The block cache is the node's, not a mount's: it survives unmounts and daemon restarts, so data
//! read once is never fetched from the store again, counted at the S3 server.

mod support;

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-3";

#[test]
fn blocks_read_once_are_not_fetched_again_after_a_daemon_restart() {
    require_root!();
    let store = TestStore::s3();
    let server = store.server().unwrap();
    let node = Node::new(store.env());
    let src = node.path("src");
    let bytes = data::bytes(3, 3 << 20);
    data::write(&src, "log.0001", &bytes);
    node.publish(&store, &src, VOLUME, &[]);
    node.snapshot(&store, VOLUME, "s");
    let args = ["--store", &store.url(), "--volume", VOLUME, "--snapshot", "s"];

    let mount = node.mount(&args);
    server.reset_stats();
    assert!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap() == bytes);
    assert!(server.get_requests_for("files/log.0001") >= 1);
    mount.unmount();
    node.ok(&["daemon", "stop"]);

    let stat = node.json(&["stat", &format!("{}#{VOLUME}:log.0001", store.url()), "--snapshot", "s"]);
    assert_eq!(stat["blocksCached"], stat["blocksTotal"], "{stat}");
    assert_eq!(stat["bytesFetched"], 3 << 20, "{stat}");

    server.reset_stats();
    let mount = node.mount(&args);
    assert!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap() == bytes);
    assert_eq!(
        server.get_requests_for("files/log.0001"),
        0,
        "a cached block was fetched again"
    );
    // The CLI reads through the same cache while the daemon owns it.
    let out = node
        .command()
        .args(["cat", &format!("{}#{VOLUME}:log.0001", store.url())])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout == bytes);
    assert_eq!(server.get_requests_for("files/log.0001"), 0);
    mount.unmount();
}

#[test]
fn a_deleted_index_is_rebuilt_from_the_store() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "a/b.log", b"contents");
    node.publish(&store, &src, VOLUME, &[]);
    node.snapshot(&store, VOLUME, "s");
    for name in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(node.home().join(name));
    }
    let synced = node.json(&["index", "sync", "--store", &store.url()]);
    assert_eq!(
        synced,
        serde_json::json!({"volumes": 1, "manifests": 1, "snapshots": 1, "forgotten": 0})
    );
    let line = node.fails(&["index", "sync", "--store", &store.url(), "--volume", "kv/none"]);
    assert!(line.contains("kv/none not found"), "{line}");
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME, "--snapshot", "s"]);
    assert_eq!(
        std::fs::read(mount.path.join(VOLUME).join("a/b.log")).unwrap(),
        b"contents"
    );
    mount.unmount();
}

#[test]
fn a_killed_daemons_mounts_come_back_as_they_were_when_a_new_one_starts() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "f", b"data");
    let first = node.publish(&store, &src, VOLUME, &[]);
    let target = node.path("mnt");
    let target_s = target.to_str().unwrap().to_string();
    let args = ["--store", &store.url(), "--volume", VOLUME, "--mountpoint", &target_s];
    let _mount = node.mount(&args);
    // The volume moves on while the mount shows its first manifest.
    data::write(&src, "g", b"newer data");
    node.publish(&store, &src, VOLUME, &[]);
    node.kill_daemon();
    // The holder keeps the mount's connection: it stays mounted, its reads waiting (not failing)
    // until a daemon serves it again (tests/handover.rs reads across the gap).
    assert_eq!(
        node.mounts_below(),
        vec![target.clone()],
        "the mount outlives its daemon"
    );

    let mounts = node.restart_daemon_and_wait_for_mounts();
    assert_eq!(mounts[0]["mountPath"], target_s, "{mounts}");
    assert_eq!(
        mounts[0]["volumes"][0]["logManifestName"], first["logManifestName"],
        "{mounts}"
    );
    assert_eq!(std::fs::read(target.join(VOLUME).join("f")).unwrap(), b"data");
    assert!(
        !target.join(VOLUME).join("g").exists(),
        "the restored mount shows a newer manifest"
    );
    // Asking for the same mount again answers the one that is there.
    let again = node.mount(&args);
    assert_eq!(node.mounts_below().len(), 1, "{:?}", node.mounts_below());
    again.unmount();
    assert!(node.mounts_below().is_empty());
    node.ok(&["daemon", "stop"]);
    node.ok(&["daemon", "start"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(node.mounts_below().is_empty(), "an unmounted mount came back");
}

/// A mount asked for while a starting daemon still recovers its predecessor's mounts waits for
/// the recovery: before, its fresh record was read as a dead mount and detached from under its
/// caller, who then found an empty folder (ENOENT right after the mount answered).
#[test]
fn a_mount_asked_for_while_a_new_daemon_recovers_is_not_taken_for_a_dead_one() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "f", b"data");
    node.publish(&store, &src, VOLUME, &[]);
    let args = ["--store", &store.url(), "--volume", VOLUME];
    let recorded = node.mount(&args);
    node.kill_daemon();
    // The holder ends with the daemon, so the recorded mount is dead and is mounted again.
    if let Ok(holder) = lazysnap::handover::HolderLink::connect(&node.home().join("holder.sock")) {
        holder.exit().unwrap();
    }

    node.start_daemon_armed(lazysnap::failpoint::MOUNTS_RECOVERY_STARTED);
    // Inside the recovery's 2 s delay: the daemon listens, the recorded mount is not back yet.
    let started = std::time::Instant::now();
    let fresh = node.mount(&args);
    assert!(
        started.elapsed() > std::time::Duration::from_millis(500),
        "the mount did not wait for the recovery"
    );
    assert_ne!(fresh.path, recorded.path);
    for mount in [&fresh, &recorded] {
        assert_eq!(
            std::fs::read(mount.path.join(VOLUME).join("f")).unwrap(),
            b"data",
            "{}",
            node.daemon_log()
        );
    }
    assert_eq!(node.json(&["mounts"]).as_array().unwrap().len(), 2);
    assert_eq!(node.mounts_below().len(), 2, "{:?}", node.mounts_below());
    fresh.unmount();
    recorded.unmount();
}

#[test]
fn sigterm_stops_the_daemon_and_unmounts_everything() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "f", b"data");
    node.publish(&store, &src, VOLUME, &[]);
    let first = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let second = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    assert_eq!(node.mounts_below().len(), 2);
    let pid = node.json(&["daemon", "status"])["pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = std::time::Instant::now();
    while !support::node::exited(pid) {
        assert!(started.elapsed().as_secs() < 30, "the daemon ignored SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(node.mounts_below().is_empty(), "{:?}", node.mounts_below());
    assert!(
        !first.path.exists() && !second.path.exists(),
        "mount folders it made are removed"
    );
    assert!(!node.home().join("mountd.sock").exists());
}

#[test]
fn a_mount_unmounted_behind_lazysnaps_back_can_still_be_forgotten() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "f", b"data");
    node.publish(&store, &src, VOLUME, &[]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let path = mount.path.display().to_string();
    // An operator (or a cleanup script) unmounts it with the system tool.
    assert!(std::process::Command::new("umount")
        .arg(&path)
        .status()
        .unwrap()
        .success());
    node.ok(&["umount", &path]);
    assert_eq!(node.json(&["mounts"]), serde_json::json!([]));
    assert!(!mount.path.exists(), "the folder the daemon made is removed");
}
