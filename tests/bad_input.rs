//! Bad input gets one clear line naming it, a non-zero exit, and leaves nothing mounted or
//! half-written; a missing or corrupt object is EIO for the reads that need it while the mount
//! stays up and never returns wrong bytes.

mod support;

use std::path::Path;

use support::data;
use support::node::{snapshot_args, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-7";
const MANIFEST_1: &str = "00000000000000000001.json";

fn setup(store: &TestStore) -> Node {
    let node = Node::new(store.env());
    let src = node.path("src");
    for name in ["good", "missing", "corrupt"] {
        data::write(&src, &format!("{name}.log"), &data::bytes(name.len() as u64, 300_000));
    }
    node.publish(store, &src, VOLUME, &[]);
    node
}

/// The failure's line contains every `needle`, and nothing is left mounted.
fn refused(node: &Node, args: &[&str], needles: &[&str]) {
    let line = node.fails(args);
    eprintln!("{args:?}\n    -> {line}");
    for needle in needles {
        assert!(line.contains(needle), "{args:?}: expected {needle:?} in {line:?}");
    }
    assert!(node.mounts_below().is_empty(), "{args:?} left a mount behind");
    let mnt = node.home().join("mnt");
    let left: Vec<_> = std::fs::read_dir(&mnt).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "{args:?} left folders in {}", mnt.display());
}

fn manifest_with_path(path: &str) -> String {
    format!(
        r#"{{"format":"lazysnap.log-manifest","version":1,"volume_id":"evil","term":0,"seq":1,"created_at_ms":1,
            "writer":"w","block_size":4096,"files":[{{"path":"{path}","size":1,"crc32c":"00000000"}}]}}"#
    )
}

#[test]
fn bad_names_and_unknown_things_are_refused_clearly() {
    require_root!();
    for store in TestStore::all() {
        let node = setup(&store);
        let url = store.url();
        fn with<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
            let mut args = vec!["mount", "--store", url];
            args.extend_from_slice(extra);
            args
        }
        let mount = |extra: &[&'static str]| with(&url, extra);
        refused(
            &node,
            &mount(&["--volume", "kv/b/nope"]),
            &["volume kv/b/nope not found", "NotMyVbucket"],
        );
        refused(
            &node,
            &mount(&["--volume", VOLUME, "--snapshot", "nope"]),
            &["snapshot nope", "not found"],
        );
        refused(
            &node,
            &mount(&["--volume", VOLUME, "--manifest", "x.json"]),
            &["manifest x.json", "not found"],
        );
        refused(&node, &mount(&["--volume", "a/../b"]), &["invalid volume ID", "Einval"]);
        refused(
            &node,
            &mount(&["--volume", VOLUME, "--snapshot", "../x"]),
            &["invalid snapshot UUID"],
        );
        refused(
            &node,
            &["mount", "--store", "ftp://host/x", "--volume", VOLUME],
            &["unknown scheme"],
        );
        refused(
            &node,
            &["mount", "--store", "file:///nonexistent/lazysnap", "--volume", VOLUME],
            &["/nonexistent/lazysnap", "does not exist"],
        );
        refused(
            &node,
            &["ls", "file:///nonexistent/lazysnap"],
            &["/nonexistent/lazysnap"],
        );
        if let Some(server) = store.server() {
            let endpoint = server.endpoint();
            let missing = format!("s3://no-such-bucket/x?endpoint={endpoint}&region=us-east-1&allow_http=true");
            refused(
                &node,
                &["mount", "--store", &missing, "--volume", VOLUME],
                &["no-such-bucket", "NoSuchBucket"],
            );
        }
        refused(
            &node,
            &["cat", &format!("{url}#{VOLUME}:nope.log")],
            &["no file nope.log"],
        );
        refused(
            &node,
            &["cat", &format!("{url}#{VOLUME}:../x")],
            &["escapes its volume"],
        );

        // Manifests written by someone else: not JSON, or naming a path outside the volume.
        store.put(&format!("volumes/garbage/manifests/{MANIFEST_1}"), b"{not json");
        refused(&node, &mount(&["--volume", "garbage"]), &["is not valid JSON"]);
        store.put(
            &format!("volumes/evil/manifests/{MANIFEST_1}"),
            manifest_with_path("../../etc/passwd").as_bytes(),
        );
        refused(
            &node,
            &mount(&["--volume", "evil"]),
            &["../../etc/passwd", "escapes its volume"],
        );
        refused(&node, &["ls", &format!("{url}#evil")], &["escapes its volume"]);
        store.put(
            &format!("volumes/evil2/manifests/{MANIFEST_1}"),
            manifest_with_path("/etc/passwd")
                .replace("\"evil\"", "\"evil2\"")
                .as_bytes(),
        );
        refused(&node, &mount(&["--volume", "evil2"]), &["is absolute"]);

        // Snapshots: a duplicate UUID and a volume with nothing to pin.
        node.snapshot(&store, VOLUME, "s1");
        let create = |volume, uuid| snapshot_args(&url, volume, uuid, "60");
        refused(&node, &create(VOLUME, "s1"), &["s1", "already exists"]);
        refused(&node, &create("kv/b/none", "s2"), &["kv/b/none", "no manifest"]);

        // Files are immutable: new content under a published name is refused, and nothing changes.
        let src = node.path("src");
        data::write(&src, "good.log", b"different content");
        refused(
            &node,
            &["publish", src.to_str().unwrap(), "--store", &url, "--volume", VOLUME],
            &["good.log", "immutable"],
        );
        let ls = node.ok(&["ls", &format!("{url}#{VOLUME}")]);
        assert!(ls.contains("300000  good.log"), "{ls}");
    }
}

#[test]
fn busy_mountpoints_are_refused() {
    require_root!();
    for store in TestStore::all() {
        let node = setup(&store);
        let url = store.url();
        let full = node.path("full");
        data::write(&full, "something", b"x");
        let full_s = full.to_str().unwrap().to_string();
        refused(
            &node,
            &["mount", "--store", &url, "--volume", VOLUME, "--mountpoint", &full_s],
            &["not empty"],
        );
        assert!(full.join("something").exists(), "the refused mountpoint is untouched");

        let target = node.path("target");
        let target_s = target.to_str().unwrap().to_string();
        let mount = node.mount(&["--store", &url, "--volume", VOLUME, "--mountpoint", &target_s]);
        // The same request again answers the mount that is there; another one is refused.
        let again = node.json(&["mount", "--store", &url, "--volume", VOLUME, "--mountpoint", &target_s]);
        assert_eq!(again["mountPaths"][0], target_s, "{again}");
        assert_eq!(node.mounts_below().len(), 1);
        let manifest = node.json(&["mounts"])[0]["volumes"][0]["logManifestName"].clone();
        let other = [
            "mount",
            "--store",
            &url,
            "--volume",
            VOLUME,
            "--manifest",
            manifest.as_str().unwrap(),
            "--mountpoint",
            &target_s,
        ];
        let line = node.fails(&other);
        assert!(line.contains("busy"), "{line}");

        // An open file makes unmount refuse; the mount stays and serves; --lazy detaches it.
        let file = std::fs::File::open(target.join(VOLUME).join("good.log")).unwrap();
        let line = node.fails(&["umount", &target_s]);
        assert!(line.contains("busy"), "{line}");
        assert_eq!(
            std::fs::read(target.join(VOLUME).join("good.log")).unwrap().len(),
            300_000
        );
        node.ok(&["umount", "--lazy", &target_s]);
        assert!(node.mounts_below().is_empty());
        let mut buf = vec![0u8; 10];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 1000).unwrap();
        assert_eq!(
            buf,
            data::bytes(4, 300_000)[1000..1010],
            "open files keep reading after a lazy unmount"
        );
        drop(file);
        drop(mount);
    }
}

fn read_err(path: &Path) -> Option<i32> {
    std::fs::read(path).err().and_then(|e| e.raw_os_error())
}

#[test]
fn missing_and_corrupt_objects_are_io_errors_never_wrong_bytes() {
    require_root!();
    for store in TestStore::all() {
        let node = setup(&store);
        let url = store.url();
        store.delete(&format!("volumes/{VOLUME}/files/missing.log"));
        store.corrupt(&format!("volumes/{VOLUME}/files/corrupt.log"));

        refused(
            &node,
            &["cat", &format!("{url}#{VOLUME}:missing.log")],
            &["missing.log", "not found"],
        );
        refused(
            &node,
            &["cat", &format!("{url}#{VOLUME}:corrupt.log")],
            &["corrupt.log", "checksum"],
        );

        let mount = node.mount(&["--store", &url, "--volume", VOLUME]);
        let root = mount.path.join(VOLUME);
        assert_eq!(read_err(&root.join("missing.log")), Some(libc::EIO), "{}", store.name());
        assert_eq!(read_err(&root.join("corrupt.log")), Some(libc::EIO), "{}", store.name());
        // Blocks past the corruption are intact and still served; the corrupt block never is.
        let file = std::fs::File::open(root.join("corrupt.log")).unwrap();
        let mut tail = vec![0u8; 1000];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut tail, 299_000).unwrap();
        assert_eq!(tail, data::bytes(7, 300_000)[299_000..]);
        drop(file);
        // The mount is still up and other files read correctly.
        assert_eq!(std::fs::read(root.join("good.log")).unwrap(), data::bytes(4, 300_000));
        let mounts = node.json(&["mounts"]);
        assert!(mounts[0]["stats"]["readErrors"].as_u64().unwrap() >= 2, "{mounts}");
        assert!(
            mounts[0]["stats"]["store"]["checksumFailures"].as_u64().unwrap() >= 1,
            "{mounts}"
        );
        mount.unmount();
    }
}
