//! Who may read a mount: private to the user who asked for it by default, handed to an engine's
//! service user with --uid/--gid/--file-mode, opened with --allow-other; the kernel enforces the
//! modes, the settings survive a daemon restart, and bad values are refused with nothing left.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use support::data;
use support::node::{is_mounted, MountGuard, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-7";
/// `nobody` on Debian; the other is a number with no account.
const NOBODY: u32 = 65534;
const STRANGER: u32 = 43210;

/// Whether `uid` (with group `uid`, and no other groups) can read `path` whole.
fn reads_as(uid: u32, path: &Path) -> bool {
    Command::new("cat")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run cat")
        .status
        .success()
}

/// A node whose mountpoints other users can reach (the test folder is private to root).
fn node_with_files(store: &TestStore) -> (Node, Vec<u8>) {
    let node = Node::new(store.env());
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let src = node.path("src");
    let bytes = data::bytes(7, 300_000);
    data::write(&src, "log.0001", &bytes);
    node.publish(store, &src, VOLUME, &[]);
    (node, bytes)
}

/// Mounts the test volume at `<test folder>/<name>`, which other users can reach.
fn mount_at<'a>(node: &'a Node, store: &TestStore, name: &str, extra: &[&str]) -> MountGuard<'a> {
    let (url, at) = (store.url(), node.path(name));
    let mut args = vec![
        "--store",
        &url,
        "--volume",
        VOLUME,
        "--mountpoint",
        at.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    node.mount(&args)
}

#[test]
fn a_default_mount_is_private_to_the_user_who_asked() {
    require_root!();
    let store = TestStore::file();
    let (node, bytes) = node_with_files(&store);
    let mount = mount_at(&node, &store, "private", &[]);
    let file = mount.path.join(VOLUME).join("log.0001");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 0, 0o400));
    assert_eq!(std::fs::metadata(&mount.path).unwrap().mode() & 0o7777, 0o500);
    assert!(!reads_as(NOBODY, &file), "another user read a private mount");
    let listed = Command::new("ls")
        .arg(&mount.path)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(!listed.status.success(), "another user listed a private mount");
    mount.unmount();
}

#[test]
fn an_owner_and_modes_hand_the_files_to_a_service_user_across_restarts() {
    require_root!();
    let store = TestStore::file();
    let (node, bytes) = node_with_files(&store);
    let nobody = NOBODY.to_string();
    let mount = mount_at(&node, &store, "owned", &["--uid", &nobody, "--file-mode", "0400"]);
    let file = mount.path.join(VOLUME).join("log.0001");
    let check = |what: &str| {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (NOBODY, NOBODY, 0o400),
            "{what}"
        );
        assert!(reads_as(NOBODY, &file), "{what}: the owner cannot read");
        assert!(
            !reads_as(STRANGER, &file),
            "{what}: another user read the owner's files"
        );
    };
    check("mounted");
    // Kept in the mount's record: a daemon that died brings the mount back as it was.
    node.kill_daemon();
    let mounts = node.restart_daemon_and_wait_for_mounts();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    check("after a daemon crash");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // Opened to every user, with the modes still enforced.
    let extra = ["--uid", "nobody", "--gid", "0", "--allow-other", "--file-mode", "0440"];
    let guard = mount_at(&node, &store, "open", &extra);
    let file = guard.path.join(VOLUME).join("log.0001");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (NOBODY, 0, 0o440));
    assert!(reads_as(NOBODY, &file));
    assert!(!reads_as(STRANGER, &file), "0440 let a user outside the group read");
    let guard_wide = mount_at(&node, &store, "wide", &["--allow-other"]);
    assert!(reads_as(STRANGER, &guard_wide.path.join(VOLUME).join("log.0001")));
    guard_wide.unmount();
    guard.unmount();
    mount.unmount();
}

#[test]
fn bad_owners_and_modes_are_refused_by_name_and_leave_nothing() {
    require_root!();
    let store = TestStore::file();
    let (node, _) = node_with_files(&store);
    let url = store.url();
    let target = node.path("m");
    let at = target.to_str().unwrap();
    let base = ["mount", "--store", &url, "--volume", VOLUME, "--mountpoint", at];
    let refused = |extra: &[&str], expected: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = node.run(&args);
        assert!(!out.status.success(), "{extra:?} was accepted");
        let error = String::from_utf8_lossy(&out.stderr);
        for part in expected {
            assert!(error.contains(part), "{extra:?}: {error}");
        }
        assert!(!is_mounted(&target), "{extra:?} left a mount");
        assert!(!target.exists(), "{extra:?} left the folder it made");
    };
    refused(&["--uid", "no-such-user-here"], &["no user named", "no-such-user-here"]);
    refused(
        &["--gid", "no-such-group-here"],
        &["no group named", "no-such-group-here"],
    );
    refused(&["--file-mode", "1777"], &["1777", "0777"]);
    refused(&["--dir-mode", "0o9"], &["0o9"]);
    refused(&["--file-mode", "0444"], &["file mode 0444", "allow_other"]);
    refused(&["--dir-mode", "0750"], &["dir mode 0750", "allow_other"]);
    let mounts = node.json(&["mounts"]);
    assert_eq!(mounts.as_array().map(Vec::len), Some(0), "{mounts}");
}

#[test]
fn a_home_or_cache_that_another_user_owns_or_can_write_is_refused_by_name() {
    require_root!();
    let node = Node::new(Vec::new());
    let (home, cache) = (node.home(), node.home().join("cache"));
    let mode = |path: &Path, bits: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap();

    std::fs::create_dir_all(&home).unwrap();
    mode(&home, 0o777);
    let error = node.fails(&["daemon", "start"]);
    assert!(
        error.contains(home.to_str().unwrap()) && error.contains("can be written by other users"),
        "{error}"
    );

    mode(&home, 0o700);
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let error = node.fails(&["daemon", "start"]);
    assert!(error.contains(&format!("belongs to user {NOBODY}")), "{error}");

    std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    std::fs::create_dir(&cache).unwrap();
    mode(&cache, 0o775);
    let error = node.fails(&["daemon", "start"]);
    assert!(
        error.contains(cache.to_str().unwrap()) && error.contains("mode 0775"),
        "{error}"
    );
    assert!(!home.join("index.db").exists(), "nothing was set up in a refused home");

    mode(&cache, 0o700);
    node.ok(&["daemon", "start"]);
    node.ok(&["daemon", "stop"]);
}

#[test]
fn the_control_socket_refuses_other_users_even_when_its_mode_is_loosened() {
    require_root!();
    let node = Node::new(Vec::new());
    node.ok(&["daemon", "start"]);
    // Loosened by hand: another user can reach and connect to the socket now.
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(node.home(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(node.home().join("mountd.sock"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = node.command().arg("mounts").uid(NOBODY).gid(NOBODY).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "another user controlled the daemon: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(&format!("user {NOBODY} may not control")), "{stderr}");
    node.ok(&["mounts"]);
    node.ok(&["daemon", "stop"]);
}

#[test]
fn cached_blocks_are_readable_by_the_daemons_user_only() {
    require_root!();
    let store = TestStore::file();
    let (node, bytes) = node_with_files(&store);
    let mount = mount_at(&node, &store, "cached", &[]);
    assert_eq!(std::fs::read(mount.path.join(VOLUME).join("log.0001")).unwrap(), bytes);
    mount.unmount();
    let cache = node.home().join("cache");
    assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
    let mut files = 0;
    for entry in walk(&cache) {
        let meta = std::fs::metadata(&entry).unwrap();
        if meta.is_file() {
            files += 1;
            assert_eq!(meta.mode() & 0o077, 0, "{} is open to others", entry.display());
            assert!(!reads_as(NOBODY, &entry), "another user read {}", entry.display());
        }
    }
    assert!(files >= 2, "the read left cache files ({files})");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
