//! Hydration through the real daemon: `mount --hydrate`, `lazysnap hydrate --wait`, pause, resume,
//! cancel, and resuming after a daemon restart without fetching completed blocks again (counted at
//! the S3 server, and by the daemon on `file://`).

mod support;

use std::path::Path;

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/hydrate/kvstore-0";

fn hydrate(node: &Node, mount: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["hydrate", mount.to_str().unwrap()];
    args.extend_from_slice(extra);
    node.json(&args)
}

#[test]
fn a_mount_hydrates_every_byte_once_and_reads_then_fetch_nothing() {
    require_root!();
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let src = node.path("src");
        let files = [("a.data", 9 << 20), ("dir/b.data", (1 << 20) + 7), ("empty", 0)];
        for (i, (name, size)) in files.iter().enumerate() {
            data::write(&src, name, &data::bytes(i as u64, *size));
        }
        let total: u64 = files.iter().map(|(_, size)| *size as u64).sum();
        node.publish(&store, &src, VOLUME, &[]);
        let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME, "--hydrate"]);
        let status = hydrate(&node, &mount.path, &["--status", "--wait"]);
        assert_eq!(status["state"], "COMPLETED", "{}: {status}", store.name());
        assert_eq!(status["bytesDone"], total, "{status}");
        assert_eq!(status["bytesTotal"], total, "{status}");
        assert_eq!(status["filesDone"], 3, "{status}");
        assert_eq!(status["bytesFetched"], total, "{status}");
        if let Some(server) = store.server() {
            // The manifest came from this node's index (publish recorded it): every GET was data.
            assert_eq!(server.stats().get_bytes, total, "each byte once");
            server.reset_stats();
        }
        for (i, (name, size)) in files.iter().enumerate() {
            let read = std::fs::read(mount.path.join(VOLUME).join(name)).unwrap();
            assert!(read == data::bytes(i as u64, *size), "{}: {name} differs", store.name());
        }
        if let Some(server) = store.server() {
            assert_eq!(
                server.stats().get_requests,
                0,
                "reads of a hydrated mount went to the store"
            );
        }
        let mounts = node.json(&["mounts"]);
        assert_eq!(mounts[0]["hydration"]["state"], "COMPLETED", "{mounts}");
        mount.unmount();
    }
}

#[test]
fn hydration_resumes_after_a_daemon_restart_without_refetching() {
    require_root!();
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let src = node.path("src");
        let size: u64 = 48 << 20;
        data::write(&src, "log.0001", &data::bytes(5, size as usize));
        node.publish(&store, &src, VOLUME, &[]);
        let args = ["--store", &store.url(), "--volume", VOLUME];

        let mount = node.mount(&args);
        if let Some(server) = store.server() {
            server.reset_stats();
        }
        hydrate(&node, &mount.path, &["--bandwidth", "16M"]);
        let mut before = hydrate(&node, &mount.path, &["--status"]);
        for _ in 0..100 {
            if before["bytesDone"].as_u64().unwrap() >= 16 << 20 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            before = hydrate(&node, &mount.path, &["--status"]);
        }
        let done_before = before["bytesDone"].as_u64().unwrap();
        assert!(done_before > 0 && done_before < size, "{}: {before}", store.name());
        node.ok(&["daemon", "stop"]);
        drop(mount);
        let fetched_first = store.server().map(|s| s.stats().get_bytes);

        let mount = node.mount(&args);
        if let Some(server) = store.server() {
            server.reset_stats();
        }
        let after = hydrate(&node, &mount.path, &["--wait"]);
        assert_eq!(after["state"], "COMPLETED", "{after}");
        assert_eq!(after["bytesDone"], size, "{after}");
        let fetched_again = after["bytesFetched"].as_u64().unwrap();
        assert!(
            fetched_again <= size - done_before,
            "{}: {fetched_again} bytes fetched after the restart, but {done_before} of {size} were done before",
            store.name()
        );
        if let (Some(server), Some(first)) = (store.server(), fetched_first) {
            assert_eq!(
                server.stats().get_bytes,
                fetched_again,
                "the daemon's count matches the server's"
            );
            assert!(first + fetched_again >= size);
        }
        let read = std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap();
        assert!(read == data::bytes(5, size as usize));
        mount.unmount();
    }
}

#[test]
fn pause_resume_and_cancel_answer_their_state() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "log.0001", &data::bytes(9, 32 << 20));
    node.publish(&store, &src, VOLUME, &[]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let path = mount.path.to_str().unwrap();

    let err = node.fails(&["hydrate", path, "--status"]);
    assert!(err.contains("no hydration of"), "{err}");
    assert_eq!(hydrate(&node, &mount.path, &["--bandwidth", "1M"])["state"], "RUNNING");
    assert_eq!(hydrate(&node, &mount.path, &["--pause"])["state"], "PAUSED");
    assert_eq!(hydrate(&node, &mount.path, &["--resume"])["state"], "RUNNING");
    assert_eq!(hydrate(&node, &mount.path, &["--cancel"])["state"], "CANCELLED");
    let err = node.fails(&["hydrate", path, "--status", "--wait"]);
    assert!(err.contains("ended CANCELLED"), "{err}");
    let err = node.fails(&["hydrate", "/nonexistent/mount", "--status"]);
    assert!(err.contains("/nonexistent/mount is not mounted by lazysnap"), "{err}");
    mount.unmount();
}

#[test]
fn a_hydration_cut_by_a_daemon_crash_resumes_by_itself_without_refetching() {
    require_root!();
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let src = node.path("src");
        let size: u64 = 48 << 20;
        data::write(&src, "log.0001", &data::bytes(6, size as usize));
        node.publish(&store, &src, VOLUME, &[]);
        let url = store.url();
        let mount = node.mount(&["--store", &url, "--volume", VOLUME, "--hydrate", "--bandwidth", "16M"]);
        let mut before = hydrate(&node, &mount.path, &["--status"]);
        while before["bytesDone"].as_u64().unwrap() < 16 << 20 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            before = hydrate(&node, &mount.path, &["--status"]);
        }
        node.kill_daemon();
        let done_before = hydrate_done_on_disk(&node, &url);
        assert!(
            done_before >= 16 << 20 && done_before < size,
            "{}: {done_before}",
            store.name()
        );
        if let Some(server) = store.server() {
            server.reset_stats();
        }

        node.restart_daemon_and_wait_for_mounts();
        let after = hydrate(&node, &mount.path, &["--status", "--wait"]);
        assert_eq!(after["state"], "COMPLETED", "{}: {after}", store.name());
        assert_eq!(after["bandwidth"], 16 << 20, "the cap survives the restart: {after}");
        let fetched_again = after["bytesFetched"].as_u64().unwrap();
        support::assert_fetched_only_what_was_left(&store, fetched_again, size, done_before);
        assert!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap() == data::bytes(6, size as usize));
        mount.unmount();
    }
}

/// Bytes of the volume's file in the node's disk cache, as `lazysnap stat` sees them.
fn hydrate_done_on_disk(node: &Node, url: &str) -> u64 {
    let stat = node.json(&["stat", &format!("{url}#{VOLUME}:log.0001")]);
    stat["bytesCached"].as_u64().unwrap()
}
