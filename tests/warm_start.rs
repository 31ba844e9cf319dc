//! Warm starts: what one node's mount read first is kept in the store beside the volume's
//! manifests, and the next mount of the volume on another node fetches exactly that before anyone
//! asks for it, counted at the S3 server.

mod support;

use std::time::{Duration, Instant};

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-9";

/// Waits up to 20 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn another_node_fetches_what_the_last_mount_read_first_before_it_is_asked() {
    require_root!();
    let store = TestStore::s3();
    let server = store.server().unwrap();
    let first = Node::new(store.env());
    let src = first.path("src");
    let table = data::bytes(1, 4 << 20);
    let manifest = data::bytes(2, 64 << 10);
    data::write(&src, "db/000012.sst", &table);
    data::write(&src, "db/MANIFEST-000001", &manifest);
    data::write(&src, "db/000013.sst", &data::bytes(3, 4 << 20));
    first.publish(&store, &src, VOLUME, &[]);
    let args = ["--store", &store.url(), "--volume", VOLUME];

    // An engine opening its database: the MANIFEST, then one table's footer.
    let mount = first.mount(&args);
    let dir = mount.path.join(VOLUME).join("db");
    assert!(std::fs::read(dir.join("MANIFEST-000001")).unwrap() == manifest);
    let footer = read_at(&dir.join("000012.sst"), (4 << 20) - 4096, 4096);
    assert!(footer == table[(4 << 20) - 4096..]);
    // A clean stop unmounts, and waits for the mount's first touches to be saved.
    first.ok(&["daemon", "stop"]);
    assert!(!support::node::is_mounted(&mount.path), "the stop left the mount");
    drop(mount);
    let saved = server
        .list_keys("")
        .iter()
        .any(|(key, _)| key.ends_with("kvstore-9/profiles/first-touch.json"));
    assert!(saved, "no first-touch profile after the stop");

    // Another node: its cache is empty, and nothing reads its mount yet.
    let second = Node::new(store.env());
    server.reset_stats();
    let mount = second.mount(&args);
    eventually("the warm start", || {
        server.get_requests_for("db/MANIFEST-000001") > 0 && server.get_requests_for("db/000012.sst") > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    let fetched = server.stats().get_bytes;
    assert_eq!(
        server.get_requests_for("db/000013.sst"),
        0,
        "a file nobody read was fetched"
    );
    // One 256 KiB block of the table and the whole MANIFEST, nothing more.
    assert!(fetched <= (256 << 10) + (64 << 10) + 4096, "{fetched} bytes fetched");

    // The engine's reads now find their blocks local.
    let table_gets = server.get_requests_for("db/000012.sst");
    let dir = mount.path.join(VOLUME).join("db");
    assert!(read_at(&dir.join("000012.sst"), (4 << 20) - 4096, 4096) == table[(4 << 20) - 4096..]);
    assert!(std::fs::read(dir.join("MANIFEST-000001")).unwrap() == manifest);
    assert_eq!(
        server.get_requests_for("db/000012.sst"),
        table_gets,
        "the footer was fetched again"
    );
    mount.unmount();
}

#[test]
fn first_touch_zero_records_and_replays_nothing() {
    require_root!();
    let store = TestStore::s3();
    let server = store.server().unwrap();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "a.sst", &data::bytes(4, 1 << 20));
    node.publish(&store, &src, VOLUME, &[]);
    node.ok(&["daemon", "start", "--", "--first-touch=0"]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    std::fs::read(mount.path.join(VOLUME).join("a.sst")).unwrap();
    mount.unmount();
    std::thread::sleep(Duration::from_millis(500));
    let profiles: Vec<_> = server
        .list_keys("")
        .into_iter()
        .filter(|(k, _)| k.contains("/profiles/"))
        .collect();
    assert!(profiles.is_empty(), "{profiles:?}");
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}
