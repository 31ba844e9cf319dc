//! A daemon with hundreds of mounts: every one readable, threads bounded whatever their number,
//! concurrent mount requests, a clean stop that unmounts them all, and a mount past the
//! configured limit refused with every other mount still serving.

mod support;

use std::time::Duration;

use support::many::{self, publish_volumes, FILE};
use support::node::Node;
use support::stores::TestStore;

const MOUNTS: usize = 512;
/// What the daemon may have beyond its thread settings (workers 4 and blocking 32 by default):
/// the main thread, the allocator trimmer, the holder reaper, cache verifiers.
const MAX_THREADS: usize = 64 + 8;

fn mount_request(store: &str, volume: &str, mountpoint: &std::path::Path) -> String {
    serde_json::json!({
        "op": "mount",
        "store": store,
        "volumes": [volume],
        "mountPath": mountpoint,
    })
    .to_string()
}

#[test]
fn five_hundred_twelve_mounts_on_one_daemon_with_bounded_threads() {
    require_root!();
    for store in TestStore::all() {
        let name = store.name();
        let node = Node::new(store.env());
        let volumes = publish_volumes(&store, MOUNTS, &node.path("scratch"));
        node.ok(&["daemon", "start"]);
        let pid = node.json(&["daemon", "status"])["pid"].as_i64().unwrap();
        let idle_threads = many::threads(pid);
        let url = store.url();

        // Sixteen clients mounting at once through the control socket.
        std::thread::scope(|scope| {
            for client in 0..16 {
                let (node, volumes, url) = (&node, &volumes, &url);
                scope.spawn(move || {
                    for i in (client..MOUNTS).step_by(16) {
                        let path = node.path(&format!("m/{i}"));
                        let answer = node.request(&mount_request(url, &volumes.ids[i], &path));
                        assert_eq!(answer["status"], "Success", "{name}: mount {i}: {answer}");
                    }
                });
            }
        });
        let threads = many::threads(pid);
        assert!(
            threads <= MAX_THREADS,
            "{name}: {threads} daemon threads with {MOUNTS} mounts (idle: {idle_threads})"
        );
        for i in 0..MOUNTS {
            let path = node.path(&format!("m/{i}")).join(&volumes.ids[i]).join(FILE);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: read {}: {e}", path.display()));
            assert!(bytes == volumes.bytes(i), "{name}: mount {i} shows other bytes");
        }
        let threads = many::threads(pid);
        eprintln!("{name}: {threads} daemon threads with {MOUNTS} mounts read (idle with none: {idle_threads})");
        assert!(
            threads <= MAX_THREADS,
            "{name}: {threads} threads after reading every mount"
        );
        assert_eq!(node.json(&["mounts"]).as_array().unwrap().len(), MOUNTS);

        let stopping = std::time::Instant::now();
        node.ok(&["daemon", "stop"]);
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "{name}: stop took {:?}",
            stopping.elapsed()
        );
        assert!(node.mounts_below().is_empty(), "{name}: stop leaves no mount behind");
    }
}

/// `count` volumes in `store` and a daemon started with `flags`.
fn limited(store: &TestStore, count: usize, flags: &[&str]) -> (Node, many::Volumes) {
    let node = Node::new(store.env());
    let volumes = publish_volumes(store, count, &node.path("scratch"));
    node.ok(&[["daemon", "start", "--"].as_slice(), flags].concat());
    (node, volumes)
}

#[test]
fn a_mount_past_the_limit_is_refused_and_the_others_keep_serving() {
    require_root!();
    for store in TestStore::all() {
        let name = store.name();
        let (node, volumes) = limited(&store, 4, &["--max-mounts", "3"]);
        let url = store.url();
        let mut guards = Vec::new();
        for i in 0..3 {
            let path = node.path(&format!("m/{i}"));
            guards.push(node.mount(&[
                "--store",
                &url,
                "--volume",
                &volumes.ids[i],
                "--mountpoint",
                path.to_str().unwrap(),
            ]));
        }
        let refused_at = node.path("m/3");
        let error = node.fails(&[
            "mount",
            "--store",
            &url,
            "--volume",
            &volumes.ids[3],
            "--mountpoint",
            refused_at.to_str().unwrap(),
        ]);
        assert!(
            error.contains("--max-mounts 3"),
            "{name}: the error names the limit: {error}"
        );
        assert!(!refused_at.exists(), "{name}: a refused mount leaves no folder");
        for (i, guard) in guards.iter().enumerate() {
            let bytes = std::fs::read(guard.path.join(&volumes.ids[i]).join(FILE)).unwrap();
            assert!(bytes == volumes.bytes(i), "{name}: mount {i} still serves");
        }
        // The same request again is not a new mount: it answers at once.
        let again = node.json(&[
            "mount",
            "--store",
            &url,
            "--volume",
            &volumes.ids[0],
            "--mountpoint",
            guards[0].path.to_str().unwrap(),
        ]);
        assert_eq!(again["mountPaths"][0], guards[0].path.to_str().unwrap());
        // Room again once one goes.
        guards.pop().unwrap().unmount();
        let path = node.path("m/3");
        let last = node.mount(&[
            "--store",
            &url,
            "--volume",
            &volumes.ids[3],
            "--mountpoint",
            path.to_str().unwrap(),
        ]);
        assert!(std::fs::read(last.path.join(&volumes.ids[3]).join(FILE)).unwrap() == volumes.bytes(3));
    }
}

#[test]
fn a_mount_past_the_file_limit_is_refused_naming_it() {
    require_root!();
    let store = TestStore::file();
    let (node, volumes) = limited(&store, 2, &["--max-files", "1"]);
    let url = store.url();
    let first = node.mount(&["--store", &url, "--volume", &volumes.ids[0]]);
    let error = node.fails(&["mount", "--store", &url, "--volume", &volumes.ids[1]]);
    assert!(error.contains("--max-files 1"), "the error names the limit: {error}");
    assert!(std::fs::read(first.path.join(&volumes.ids[0]).join(FILE)).unwrap() == volumes.bytes(0));
    assert_eq!(
        node.json(&["mounts"]).as_array().unwrap().len(),
        1,
        "nothing else was mounted"
    );
}
