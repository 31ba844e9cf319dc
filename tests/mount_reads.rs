//! Real FUSE mounts through the real binaries, on a local-directory store and on the S3 server:
//! every byte read back equals what was published, concurrently too, and the mount is read-only.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use support::data;
use support::node::{is_mounted, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/bucket-1/kvstore-0";
const BLOCK: usize = 64 * 1024;

/// Files whose sizes sit on every edge of the block arithmetic.
fn edge_files() -> Vec<(String, Vec<u8>)> {
    let sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, 5 << 20];
    let mut files: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| (format!("log.{i:04}"), data::bytes(i as u64, size)))
        .collect();
    files.push(("a/b/c/deep.sst".into(), data::bytes(99, 3 * BLOCK)));
    files
}

fn publish(node: &Node, store: &TestStore, src: &Path, volume: &str) -> serde_json::Value {
    node.publish(store, src, volume, &["--block-size", "64K"])
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the size passed.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).to_string())
}

#[test]
fn every_byte_reads_back_and_the_mount_is_read_only() {
    require_root!();
    for store in TestStore::all() {
        every_byte_reads_back_on(&store, &Node::new(store.env()));
    }
}

/// Reads every edge file, lists, asks xattrs and statfs, and tries every kind of change.
fn every_byte_reads_back_on(store: &TestStore, node: &Node) {
    let src = node.path("src");
    let files = edge_files();
    for (path, bytes) in &files {
        data::write(&src, path, bytes);
    }
    let report = publish(node, store, &src, VOLUME);
    assert_eq!(report["files"], files.len() as u64, "{}: {report}", store.name());
    assert_eq!(report["volumeID"], VOLUME);
    let snap = node.snapshot(store, VOLUME, "snap-1");
    assert_eq!(snap["logManifestName"], report["logManifestName"]);
    assert_eq!(snap["logFiles"].as_array().unwrap().len(), files.len());

    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME, "--snapshot", "snap-1"]);
    let root = mount.path.join(VOLUME);
    for (path, bytes) in &files {
        let got = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{}: read {path}: {e}", store.name()));
        assert!(
            got == *bytes,
            "{}: {path} differs from what was published",
            store.name()
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.contains(&"a".to_string()));

    // Read-only: every kind of change is refused with EROFS.
    let erofs = |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("log.0001"))
            .map(drop),
    );
    erofs(std::fs::write(root.join("new-file"), b"x"));
    erofs(std::fs::create_dir(root.join("new-dir")));
    erofs(std::fs::remove_file(root.join("log.0001")));
    erofs(std::fs::rename(root.join("log.0001"), root.join("log.renamed")));
    use std::os::unix::fs::PermissionsExt;
    erofs(std::fs::set_permissions(
        root.join("log.0001"),
        std::fs::Permissions::from_mode(0o777),
    ));

    // statfs answers the bytes shown; xattrs say what is cached.
    let c_root = CString::new(mount.path.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and an out-pointer to a zeroed struct.
    assert_eq!(unsafe { libc::statvfs(c_root.as_ptr(), &mut st) }, 0);
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(st.f_blocks as usize * st.f_frsize as usize, total.div_ceil(4096) * 4096);
    let big = root.join("log.0006");
    assert_eq!(xattr(&big, "user.lazysnap.block_size").as_deref(), Some("65536"));
    assert_eq!(xattr(&big, "user.lazysnap.blocks_total").as_deref(), Some("80"));
    assert_eq!(
        xattr(&big, "user.lazysnap.cached_bytes").as_deref(),
        Some(&*(5 << 20).to_string())
    );
    assert_eq!(xattr(&big, "user.lazysnap.volume").as_deref(), Some(VOLUME));

    let mounts = node.json(&["mounts"]);
    assert_eq!(mounts[0]["volumes"][0]["snapshotUUID"], "snap-1");
    assert_eq!(mounts[0]["stats"]["readErrors"], 0);
    let path = mount.path.clone();
    mount.unmount();
    assert!(!is_mounted(&path), "{}: still mounted after umount", store.name());
    assert!(!path.exists(), "the daemon removes the folder it created");
}

#[test]
fn sixteen_threads_reading_at_once_get_correct_bytes() {
    require_root!();
    for store in TestStore::all() {
        sixteen_threads_on(&store, &Node::new(store.env()));
    }
}

fn sixteen_threads_on(store: &TestStore, node: &Node) {
    let src = node.path("src");
    let files: Vec<Vec<u8>> = (0..4).map(|i| data::bytes(100 + i, 8 << 20)).collect();
    for (i, bytes) in files.iter().enumerate() {
        data::write(&src, &format!("f{i}"), bytes);
    }
    publish(node, store, &src, VOLUME);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    let root = mount.path.join(VOLUME);
    std::thread::scope(|scope| {
        for t in 0..16u64 {
            let (root, files) = (&root, &files);
            scope.spawn(move || {
                let which = (t % 4) as usize;
                let file = std::fs::File::open(root.join(format!("f{which}"))).unwrap();
                let expected = &files[which];
                let mut state = t + 1;
                for _ in 0..64 {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let offset = (state >> 20) as usize % expected.len();
                    let len = ((state >> 8) as usize % (300 << 10)).min(expected.len() - offset);
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, offset as u64).unwrap();
                    assert!(
                        buf == expected[offset..offset + len],
                        "thread {t}: wrong bytes at {offset}+{len}"
                    );
                }
            });
        }
    });
    mount.unmount();
}

#[test]
fn the_kernel_reads_ahead_as_far_as_the_daemon_is_told() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    data::write(&src, "a.sst", &data::bytes(7, 1 << 20));
    publish(&node, &store, &src, VOLUME);
    let readahead_kb = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(path).unwrap().dev();
        let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
        std::fs::read_to_string(knob).unwrap().trim().to_string()
    };
    // The daemon's default is the kernel's own, 128 KiB.
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    assert_eq!(readahead_kb(&mount.path), "128");
    mount.unmount();
    node.ok(&["daemon", "stop"]);

    node.ok(&["daemon", "start", "--", "--kernel-readahead=1M"]);
    let mount = node.mount(&["--store", &store.url(), "--volume", VOLUME]);
    assert_eq!(readahead_kb(&mount.path), "1024");
    mount.unmount();
    node.ok(&["daemon", "stop"]);

    let refused = node.fails(&["daemon", "start", "--", "--kernel-readahead=6K"]);
    assert!(refused.contains("multiple of 4K from 4K to 16M"), "{refused}");
}

/// Turns the kernel's FUSE over io_uring on for the test and back to what it was after, also on
/// failure (other servers only use it when they ask for it at INIT).
struct UringEnabled(Option<String>);

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

impl UringEnabled {
    fn on() -> UringEnabled {
        let before = std::fs::read_to_string(ENABLE_URING)
            .unwrap_or_else(|e| panic!("{ENABLE_URING}: {e} (a kernel with FUSE over io_uring is needed, 6.14+)"));
        std::fs::write(ENABLE_URING, "Y").unwrap();
        UringEnabled(Some(before.trim().to_string()))
    }
}

impl Drop for UringEnabled {
    fn drop(&mut self) {
        if let Some(before) = self.0.take() {
            let _ = std::fs::write(ENABLE_URING, before);
        }
    }
}

#[test]
fn requests_through_fuse_over_io_uring_get_the_same_answers() {
    require_root!();
    let _uring = UringEnabled::on();
    for store in TestStore::all() {
        // Two entries per CPU queue: sixteen readers keep every entry busy and requests queue.
        let mut env = store.env();
        env.push(("LAZYSNAP_FUSE_URING_DEPTH".into(), "2".into()));
        let (readers, edges) = (Node::new(env.clone()), Node::new(env));
        sixteen_threads_on(&store, &readers);
        every_byte_reads_back_on(&store, &edges);
        for node in [&readers, &edges] {
            let log = node.daemon_log();
            assert!(
                log.contains("FUSE requests come through io_uring queues"),
                "{}: the mount did not use io_uring:\n{log}",
                store.name()
            );
        }

        // A daemon that crashes cannot hand such a connection on: the next one mounts it again
        // at the same path instead of taking over a connection whose requests it would never see.
        let mount = readers.mount(&["--store", &store.url(), "--volume", VOLUME]);
        // The volume's latest manifest is the edge files, published last.
        let file = mount.path.join(VOLUME).join("log.0006");
        let expected = data::bytes(6, 5 << 20);
        assert!(std::fs::read(&file).unwrap() == expected);
        // The daemon's rings serve every such mount: a second one reads, and unmounting it leaves
        // the first serving.
        let second = readers.mount(&["--store", &store.url(), "--volume", VOLUME]);
        let other = second.path.join(VOLUME).join("log.0005");
        assert!(std::fs::read(&other).unwrap() == data::bytes(5, 3 * BLOCK + 17));
        second.unmount();
        let reopened = std::fs::File::open(&file).unwrap();
        let mut tail = vec![0u8; 4096];
        reopened.read_exact_at(&mut tail, (5 << 20) - 4096).unwrap();
        assert!(tail[..] == expected[(5 << 20) - 4096..]);
        readers.kill_daemon();
        readers.restart_daemon_and_wait_for_mounts();
        assert!(
            readers.daemon_log().contains("served through FUSE over io_uring"),
            "{}: {}",
            store.name(),
            readers.daemon_log()
        );
        assert!(
            std::fs::read(&file).unwrap() == expected,
            "{}: wrong bytes after the restart",
            store.name()
        );
        mount.unmount();
    }
}
