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
    // A table the engine reads whole, larger than what an unseen open notes whole.
    let whole = data::bytes(4, 2 << 20);
    data::write(&src, "db/000011.sst", &whole);
    first.publish(&store, &src, VOLUME, &[]);
    let args = ["--store", &store.url(), "--volume", VOLUME];

    // An engine opening its database: the MANIFEST, then one table's footer.
    let mount = first.mount(&args);
    let dir = mount.path.join(VOLUME).join("db");
    assert!(std::fs::read(dir.join("MANIFEST-000001")).unwrap() == manifest);
    let footer = read_at(&dir.join("000012.sst"), (4 << 20) - 4096, 4096);
    assert!(footer == table[(4 << 20) - 4096..]);
    assert!(std::fs::read(dir.join("000011.sst")).unwrap() == whole);
    // A clean stop unmounts, and waits for the mount's first touches to be saved.
    first.ok(&["daemon", "stop"]);
    assert!(!support::node::is_mounted(&mount.path), "the stop left the mount");
    drop(mount);
    let saved = server
        .list_keys("")
        .iter()
        .any(|(key, _)| key.ends_with("kvstore-9/profiles/first-touch.json"));
    assert!(saved, "no first-touch profile after the stop");

    let pack = server
        .list_keys("")
        .into_iter()
        .find(|(key, _)| key.ends_with("kvstore-9/profiles/first-touch.pack"));
    let (pack_key, _) = pack.expect("no first-touch pack beside the profile");
    let profile_key = pack_key.replace("first-touch.pack", "first-touch.json");
    let first_profile = server.get_object(&profile_key);

    // Another node: its cache is empty, and nothing reads its mount yet. Its warm start reads
    // the pack beside the profile and fetches no data object at all.
    let second = Node::new(store.env());
    server.reset_stats();
    let mount = second.mount(&args);
    eventually("the warm start", || second.daemon_log().contains("warm start: fetched"));
    assert_eq!(server.get_requests_for("profiles/first-touch.pack"), 1);
    // The pack holds the blocks read: the whole MANIFEST, one 256 KiB block of the table and
    // the table read whole.
    let fetched = server.stats().get_bytes;
    assert!(
        ((2 << 20) + (64 << 10) + 4096..=(2 << 20) + (256 << 10) + (64 << 10) + 8192).contains(&fetched),
        "{fetched} bytes fetched"
    );
    for file in ["db/MANIFEST-000001", "db/000011.sst", "db/000012.sst", "db/000013.sst"] {
        assert_eq!(server.get_requests_for(file), 0, "{file} was fetched beside the pack");
    }
    engine_reads_find_their_blocks_local(server, &mount.path, &table, &manifest);
    let dir = mount.path.join(VOLUME).join("db");
    assert!(std::fs::read(dir.join("000011.sst")).unwrap() == whole);
    mount.unmount();
    // Its own first touches are saved as it stops, a new profile and pack, with the MANIFEST and
    // the table read whole, which it read through FUSE passthrough (wholly cached by the replay,
    // their reads never reached the daemon): the MANIFEST noted whole as a small file, the table
    // as the replayed profile said it was read. Then the first node's profile is put back,
    // without its pack.
    second.ok(&["daemon", "stop"]);
    let second_profile = String::from_utf8(server.get_object(&profile_key)).unwrap();
    assert!(second_profile.contains("db/MANIFEST-000001"), "{second_profile}");
    assert!(second_profile.contains("db/000011.sst"), "{second_profile}");

    // Without the pack (an older profile, or a pack lost), a third node GETs exactly what the
    // first read, and nothing else.
    server.put_object(&profile_key, first_profile);
    server.delete_object(&pack_key);
    let third = Node::new(store.env());
    server.reset_stats();
    let mount = third.mount(&args);
    eventually("the warm start without a pack", || {
        server.get_requests_for("db/MANIFEST-000001") > 0 && server.get_requests_for("db/000012.sst") > 0
    });
    eventually("the replay's end", || {
        third.daemon_log().contains("warm start: fetched")
    });
    let fetched = server.stats().get_bytes;
    assert_eq!(
        server.get_requests_for("db/000013.sst"),
        0,
        "a file nobody read was fetched"
    );
    // One 256 KiB block of the table, the table read whole and the whole MANIFEST, beside the
    // profile itself.
    assert!(
        fetched <= (2 << 20) + (256 << 10) + (64 << 10) + 8192,
        "{fetched} bytes fetched"
    );
    engine_reads_find_their_blocks_local(server, &mount.path, &table, &manifest);
    mount.unmount();
}

/// The engine's reads find their blocks local: no GET for the table or the MANIFEST.
fn engine_reads_find_their_blocks_local(
    server: &support::s3::S3Server,
    mount: &std::path::Path,
    table: &[u8],
    manifest: &[u8],
) {
    let before = server.get_requests_for("db/000012.sst") + server.get_requests_for("db/MANIFEST-000001");
    let dir = mount.join(VOLUME).join("db");
    assert!(read_at(&dir.join("000012.sst"), (4 << 20) - 4096, 4096) == table[(4 << 20) - 4096..]);
    assert!(std::fs::read(dir.join("MANIFEST-000001")).unwrap() == manifest);
    let after = server.get_requests_for("db/000012.sst") + server.get_requests_for("db/MANIFEST-000001");
    assert_eq!(after, before, "the engine's reads were fetched again");
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
