//! mount(8) and fstab: `mount -t fuse.lazysnap 'STORE#VOLUME' DIR -o ...` runs the
//! `mount.fuse.lazysnap` helper (the lazysnap binary under that name), `mount -a` mounts an fstab
//! line once, plain `umount` undoes it and the daemon forgets the mount.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::data;
use support::node::{bin, is_mounted, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-9";
const HELPER: &str = "/sbin/mount.fuse.lazysnap";

/// Puts `/sbin/mount.fuse.lazysnap` -> this build's `lazysnap` in place, and puts back whatever
/// was there (an installed package's link) when dropped.
struct HelperLink {
    previous: Option<PathBuf>,
}

impl HelperLink {
    fn install() -> HelperLink {
        let previous = std::fs::read_link(HELPER).ok();
        let _ = std::fs::remove_file(HELPER);
        std::os::unix::fs::symlink(bin("lazysnap"), HELPER).expect("link the mount helper");
        HelperLink { previous }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(HELPER);
        if let Some(previous) = &self.previous {
            let _ = std::os::unix::fs::symlink(previous, HELPER);
        }
    }
}

/// Mount points at `path` (a second `mount -a` must not stack another).
fn mounts_at(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap();
    text.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(path.to_str().unwrap()))
        .count()
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run command")
}

fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the daemon has forgotten every mount (it notices a plain umount on its own).
fn wait_until_forgotten(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mounts = node.json(&["mounts"]);
        if mounts.as_array().is_some_and(Vec::is_empty) {
            return;
        }
        assert!(Instant::now() < deadline, "the daemon still lists {mounts}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mount_t_fuse_lazysnap_and_fstab_mount_through_the_daemon() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    std::fs::set_permissions(node.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let src = node.path("src");
    let bytes = data::bytes(9, 200_000);
    data::write(&src, "log.0001", &bytes);
    node.publish(&store, &src, VOLUME, &[]);
    node.snapshot(&store, VOLUME, "s9");
    let _helper = HelperLink::install();
    let home = node.home();
    let source = format!("{}#{VOLUME}", store.url());
    let target = node.path("kv0");
    std::fs::create_dir(&target).unwrap();
    let _cleanup = Unmount(vec![target.clone(), node.path("fstab-kv0")]);

    // mount -t, with an owner by name and a mode.
    let options = format!("snapshot=s9,uid=nobody,file_mode=0400,home={}", home.display());
    ok(Command::new("mount")
        .args(["-t", "fuse.lazysnap", &source])
        .arg(&target)
        .args(["-o", &options]));
    let file = target.join(VOLUME).join("log.0001");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o400));
    let as_nobody = run(Command::new("cat").arg(&file).uid(65534).gid(65534));
    assert!(as_nobody.status.success() && as_nobody.stdout == bytes);
    let mounts = node.json(&["mounts"]);
    assert_eq!(mounts[0]["mountPath"], target.display().to_string(), "{mounts}");
    let line = std::fs::read_to_string("/proc/self/mounts").unwrap();
    // The kernel escapes '#' there; mount(8) reads it back unescaped.
    let escaped = source.replace('#', "\\043");
    assert!(
        line.lines()
            .any(|l| l.starts_with(&format!("{escaped} {} fuse.lazysnap ro,", target.display()))),
        "the mount table shows the fstab source and type: {line}"
    );
    // Plain umount; the daemon forgets the mount and the folder stays (it did not make it).
    ok(Command::new("umount").arg(&target));
    wait_until_forgotten(&node);
    assert!(target.is_dir());

    // Unknown options are refused by name, and nothing is mounted.
    let refused = run(Command::new("mount")
        .args(["-t", "fuse.lazysnap", &source])
        .arg(&target)
        .args(["-o", &format!("snapshot=s9,snapshto=x,home={}", home.display())]));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("snapshto=x"),
        "{refused:?}"
    );
    assert!(!is_mounted(&target));

    // An fstab line with _netdev and the systemd ordering; mount -a twice mounts it once.
    let fstab_target = node.path("fstab-kv0");
    std::fs::create_dir(&fstab_target).unwrap();
    let fstab = node.path("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# lazysnap test\n{source} {} fuse.lazysnap ro,_netdev,nofail,x-systemd.requires=lazysnap-mountd.service,snapshot=s9,home={} 0 0\n",
            fstab_target.display(),
            home.display()
        ),
    )
    .unwrap();
    for _ in 0..2 {
        ok(Command::new("mount").arg("-a").arg("-T").arg(&fstab));
        assert_eq!(mounts_at(&fstab_target), 1);
    }
    assert_eq!(
        std::fs::read(fstab_target.join(VOLUME).join("log.0001")).unwrap(),
        bytes
    );
    ok(Command::new("umount").arg(&fstab_target));
    wait_until_forgotten(&node);
}

/// Unmounts what the test may have left mounted, also when it fails.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for path in &self.0 {
            if is_mounted(path) {
                let _ = Command::new("umount").arg("-l").arg(path).status();
            }
        }
    }
}
