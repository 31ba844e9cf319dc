//! FUSE passthrough: once every block of a file is cached and verified, later opens are read by the
//! kernel straight from the disk cache. The daemon sees no reads, the bytes stay exact, ordinary
//! and passthrough opens of one file never mix, and eviction never punches a hole under a reader.

mod support;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-5";

fn read_all(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn read_file(file: &mut File) -> Vec<u8> {
    use std::io::Seek;
    file.rewind().unwrap();
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

/// (reads the daemon served, opens handed to the kernel) of the node's one mount.
fn counters(node: &Node) -> (u64, u64) {
    let mounts = node.json(&["mounts"]);
    let stats = &mounts[0]["stats"];
    (
        stats["reads"].as_u64().unwrap(),
        stats["passthroughOpens"].as_u64().unwrap(),
    )
}

fn published(store: &TestStore, files: &[(&str, &[u8])]) -> Node {
    let node = Node::new(store.env());
    let src = node.path("src");
    for (name, bytes) in files {
        data::write(&src, name, bytes);
    }
    node.publish(store, &src, VOLUME, &[]);
    node
}

#[test]
fn a_file_read_whole_is_then_read_by_the_kernel_from_the_cache() {
    require_root!();
    for store in TestStore::all() {
        let bytes = data::bytes(51, (3 << 20) + 123);
        let node = published(&store, &[("log.1", &bytes)]);
        let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
        let path = mount.path.join(VOLUME).join("log.1");

        // Opened before anything is cached: an ordinary open, and it stays one while open.
        let mut first = File::open(&path).unwrap();
        assert!(read_file(&mut first) == bytes, "{}: cold read", store.name());
        let mut second = File::open(&path).unwrap();
        assert!(read_file(&mut second) == bytes);
        assert_eq!(counters(&node).1, 0, "{}: an ordinary open is still live", store.name());
        drop((first, second));

        let (reads, _) = counters(&node);
        let mut direct = File::open(&path).unwrap();
        let mut again = File::open(&path).unwrap();
        assert!(read_file(&mut direct) == bytes && read_file(&mut again) == bytes);
        assert_eq!(
            counters(&node),
            (reads, 2),
            "{}: both opens passthrough, no read reached the daemon",
            store.name()
        );
        drop((direct, again));
        mount.unmount();
    }
}

#[test]
fn after_a_restart_cached_blocks_are_verified_before_the_kernel_reads_them() {
    require_root!();
    let store = TestStore::file();
    let bytes = data::bytes(52, 2 << 20);
    let node = published(&store, &[("log.1", &bytes)]);
    let args = ["--store", &store.url(), "--volume", VOLUME];
    let mount = node.mount(&args);
    let path = mount.path.join(VOLUME).join("log.1");
    assert!(read_all(&path) == bytes);
    mount.unmount();
    node.ok(&["daemon", "stop"]);

    let mount = node.mount(&args);
    let path = mount.path.join(VOLUME).join("log.1");
    assert!(read_all(&path) == bytes);
    assert_eq!(counters(&node).1, 0, "blocks found on disk are not trusted at once");
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters(&node).1 == 0 {
        assert!(Instant::now() < deadline, "the cached copy was never verified");
        std::thread::sleep(Duration::from_millis(100));
        assert!(read_all(&path) == bytes);
    }
    mount.unmount();
}

#[test]
fn eviction_never_punches_a_hole_under_an_open_passthrough_file() {
    require_root!();
    let store = TestStore::file();
    let (a, b) = (data::bytes(53, 3 << 20), data::bytes(54, 3 << 20));
    let node = published(&store, &[("a.log", &a), ("b.log", &b)]);
    // Room for one file: reading the second must evict, and only the first is there to evict.
    node.ok(&["daemon", "start", "--", "--cache-disk", "4M"]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let dir = mount.path.join(VOLUME);
    assert!(read_all(&dir.join("a.log")) == a);
    // The last blocks reach the disk tier just after the read returns; an open before that is an
    // ordinary one (closed again here, since opens of one inode never mix).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = File::open(dir.join("a.log")).unwrap();
    while counters(&node).1 == 0 {
        assert!(
            Instant::now() < deadline,
            "a fully read file never opened as passthrough"
        );
        drop(held);
        std::thread::sleep(Duration::from_millis(50));
        held = File::open(dir.join("a.log")).unwrap();
    }
    assert_eq!(counters(&node).1, 1);
    assert!(read_all(&dir.join("b.log")) == b);
    // Drop the kernel's cached pages of the backing file, so the next read goes to the disk.
    // SAFETY: a valid fd; DONTNEED only drops clean cached pages.
    unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&held), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert!(read_file(&mut held) == a, "the pinned copy changed under its reader");
    drop(held);
    mount.unmount();
}

#[test]
fn without_passthrough_every_read_goes_through_the_daemon() {
    require_root!();
    let store = TestStore::file();
    let bytes = data::bytes(55, 1 << 20);
    let node = published(&store, &[("log.1", &bytes)]);
    node.ok(&["daemon", "start", "--", "--no-passthrough"]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let path = mount.path.join(VOLUME).join("log.1");
    assert!(read_all(&path) == bytes && read_all(&path) == bytes);
    assert_eq!(counters(&node).1, 0);
    mount.unmount();
}
