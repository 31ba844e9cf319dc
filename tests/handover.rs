//! A daemon crash or restart that no open file notices: a process reading a file continuously
//! while the serving daemon is killed with SIGKILL and started again, and while it is replaced by
//! `lazysnap daemon restart`, sees no error, no short read and no wrong byte, and no read waits
//! longer than the restart took. Opens made after a takeover agree with the kernel on how each
//! file is open (through the daemon or passthrough), so none fails.

mod support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::data;
use support::node::{MountGuard, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b1/kvstore-17";
const PIECE: usize = 64 << 10;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ReadReport {
    reads: u64,
    errors: Vec<String>,
    short: u64,
    wrong: u64,
    max_stall_ms: f64,
    /// Reads that ended after the `mark` file appeared.
    reads_after_mark: u64,
}

/// Reads random 64 KiB pieces of a file through one open descriptor until told to stop, dropping
/// the page cache before each so every read reaches the daemon. It runs as a process of its own
/// (this test binary, running `reader_process`): a thread of the test process waiting on a mount
/// whose daemon is being replaced would hold up the test's own fork of the CLI that restarts it.
struct Reader {
    child: std::process::Child,
    dir: PathBuf,
}

impl Reader {
    fn start(node: &Node, path: &Path, seed: u64, len: usize) -> Reader {
        let dir = node.path("reader");
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "reader_process", "--ignored", "--nocapture"])
            .env("LAZYSNAP_TEST_READ", path)
            .env("LAZYSNAP_TEST_SEED", seed.to_string())
            .env("LAZYSNAP_TEST_LEN", len.to_string())
            .env("LAZYSNAP_TEST_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("started").exists() {
            assert!(Instant::now() < deadline, "the reader process never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        Reader { child, dir }
    }

    /// From now on, reads are counted as after the mark.
    fn mark(&self) {
        std::fs::write(self.dir.join("mark"), b"").unwrap();
    }

    fn finish(mut self) -> ReadReport {
        std::fs::write(self.dir.join("stop"), b"").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "reader process failed: {status}");
        serde_json::from_slice(&std::fs::read(self.dir.join("report.json")).unwrap()).unwrap()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "the reader process of the tests here; does nothing on its own"]
fn reader_process() {
    let Some(path) = std::env::var_os("LAZYSNAP_TEST_READ") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let expected = data::bytes(
        var("LAZYSNAP_TEST_SEED").parse().unwrap(),
        var("LAZYSNAP_TEST_LEN").parse().unwrap(),
    );
    let dir = PathBuf::from(var("LAZYSNAP_TEST_DIR"));
    let file = File::open(&path).unwrap();
    std::fs::write(dir.join("started"), b"").unwrap();
    let mut report = ReadReport::default();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut buf = vec![0u8; PIECE];
    let mut marked = false;
    while !dir.join("stop").exists() {
        marked = marked || dir.join("mark").exists();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state % (expected.len() - PIECE) as u64) as usize;
        // SAFETY: advice on a descriptor we own.
        unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let started = Instant::now();
        let read = file.read_at(&mut buf, offset as u64);
        report.max_stall_ms = report.max_stall_ms.max(started.elapsed().as_secs_f64() * 1e3);
        report.reads += 1;
        report.reads_after_mark += u64::from(marked);
        match read {
            Ok(n) if n < PIECE => report.short += 1,
            Ok(_) if buf[..] != expected[offset..offset + PIECE] => report.wrong += 1,
            Ok(_) => {}
            Err(e) => {
                report.errors.push(e.to_string());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    std::fs::write(dir.join("report.json"), serde_json::to_vec(&report).unwrap()).unwrap();
}

fn pid(node: &Node) -> i64 {
    node.json(&["daemon", "status"])["pid"].as_i64().expect("pid")
}

/// Waits until the daemon serves again what the previous one left.
fn wait_recovered(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.json(&["daemon", "status"])["recovered"] != true {
        assert!(
            Instant::now() < deadline,
            "mounts never recovered: {}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Publishes `files` as the volume and mounts it at `<node>/mnt`.
fn mount_published<'a>(node: &'a Node, store: &TestStore, files: &[(&str, &[u8])]) -> MountGuard<'a> {
    let src = node.path("src");
    for (name, bytes) in files {
        data::write(&src, name, bytes);
    }
    node.publish(store, &src, VOLUME, &[]);
    let mountpoint = node.path("mnt");
    node.mount(&[
        "--store",
        &store.url(),
        "--volume",
        VOLUME,
        "--mountpoint",
        mountpoint.to_str().unwrap(),
    ])
}

fn file_in(guard: &MountGuard<'_>, name: &str) -> PathBuf {
    guard.path.join(VOLUME).join(name)
}

#[test]
fn a_reader_carries_on_across_a_kill_and_a_restart_of_the_daemon() {
    require_root!();
    for store in TestStore::all() {
        let bytes = data::bytes(17, 8 << 20);
        let node = Node::new(store.env());
        let mount = mount_published(&node, &store, &[("log.0000000001", &bytes)]);
        let node = &node;
        let path = file_in(&mount, "log.0000000001");
        let reader = Reader::start(node, &path, 17, bytes.len());
        std::thread::sleep(Duration::from_millis(300));

        let first = pid(node);
        let killed = Instant::now();
        node.kill_daemon();
        // Reads wait meanwhile: nobody serves the connection, and nobody fails it either.
        std::thread::sleep(Duration::from_millis(200));
        node.ok(&["daemon", "start"]);
        wait_recovered(node);
        let crash_gap = killed.elapsed();
        let second = pid(node);
        assert_ne!(first, second);
        std::thread::sleep(Duration::from_millis(300));

        let restarting = Instant::now();
        let answer = node.json(&["daemon", "restart"]);
        let restart_gap = restarting.elapsed();
        assert_eq!(answer["previousPid"], second, "{answer}");
        assert_eq!(answer["mounts"], 1, "{answer}");
        let third = pid(node);
        assert_ne!(third, second, "daemon status names the process now serving");
        reader.mark();
        std::thread::sleep(Duration::from_millis(300));
        let report = reader.finish();

        let name = store.name();
        assert!(
            report.errors.is_empty(),
            "{name}: reads failed: {:?}\n{}",
            report.errors,
            node.daemon_log()
        );
        assert_eq!((report.short, report.wrong), (0, 0), "{name}: short or wrong reads");
        let after = report.reads_after_mark;
        assert!(
            after > 10,
            "{name}: only {after} reads after the restart ({} in all)",
            report.reads
        );
        // No read waited longer than the longer restart, plus scheduling slack on a busy machine.
        let longest = crash_gap.max(restart_gap) + Duration::from_millis(500);
        assert!(
            report.max_stall_ms <= longest.as_secs_f64() * 1e3,
            "{name}: a read waited {} ms; the restarts took {crash_gap:?} and {restart_gap:?}",
            report.max_stall_ms
        );
        // The same file opened anew, through the third daemon.
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "{name}: a new open reads the same bytes"
        );
        let holder = &node.json(&["daemon", "status"])["holder"];
        assert_eq!(holder["held"], 1, "{name}: {holder}");
        mount.unmount();
        node.ok(&["daemon", "stop"]);
        assert!(node.mounts_below().is_empty());
    }
}

#[test]
fn opens_after_a_takeover_agree_with_how_the_kernel_holds_each_file() {
    require_root!();
    let store = TestStore::file();
    let local = data::bytes(18, (1 << 20) + 77);
    let remote = data::bytes(19, (1 << 20) + 99);
    let node = Node::new(store.env());
    let mount = mount_published(&node, &store, &[("local", &local), ("remote", &remote)]);
    let node = &node;
    let (local_path, remote_path) = (file_in(&mount, "local"), file_in(&mount, "remote"));
    let passthrough = || node.json(&["mounts"])[0]["stats"]["passthroughOpens"].as_u64().unwrap();

    // `local` is read whole, so this daemon fetched and verified it: its next opens are
    // passthrough, and one stays open across the takeover.
    assert!(std::fs::read(&local_path).unwrap() == local);
    let held_local = wait_for_passthrough(&local_path, &local, passthrough);
    // `remote` is opened before any of it is local: an ordinary open, kept across the takeover,
    // and then read whole, so the file is local by the time the next daemon looks.
    let held_remote = File::open(&remote_path).unwrap();
    let mut all = vec![0u8; remote.len()];
    held_remote.read_exact_at(&mut all, 0).unwrap();
    assert!(all == remote);

    node.kill_daemon();
    node.ok(&["daemon", "start"]);
    wait_recovered(node);
    assert_eq!(node.json(&["mounts"])[0]["openFiles"], 2, "both opens were taken over");

    // Every new open of `local` must be passthrough on the same backing file, and every new open
    // of `remote` an ordinary one while the old one lives: the kernel fails any other with EIO.
    for round in 0..20 {
        assert!(
            std::fs::read(&local_path).unwrap() == local,
            "open {round} of the passthrough file"
        );
        assert!(
            std::fs::read(&remote_path).unwrap() == remote,
            "open {round} of the ordinary file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(passthrough() >= 20, "the new daemon kept passing `local` through");
    let mut piece = vec![0u8; 4096];
    held_local.read_exact_at(&mut piece, 4096).unwrap();
    assert!(
        piece[..] == local[4096..8192],
        "the open held across the takeover still reads"
    );
    held_remote.read_exact_at(&mut piece, 8192).unwrap();
    assert!(piece[..] == remote[8192..12288]);

    // Once the old ordinary open closes, `remote` may go passthrough too.
    drop(held_remote);
    let before = passthrough();
    let _now_direct = wait_for_passthrough(&remote_path, &remote, passthrough);
    assert!(passthrough() > before);
    drop((held_local, _now_direct));
    mount.unmount();
    node.ok(&["daemon", "stop"]);
}

/// Opens `path` until an open is handed to the kernel (verification runs in the background after
/// the first look); answers that open.
fn wait_for_passthrough(path: &Path, bytes: &[u8], passthrough: impl Fn() -> u64) -> File {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = passthrough();
        let file = File::open(path).unwrap();
        let mut all = vec![0u8; bytes.len()];
        file.read_exact_at(&mut all, 0).unwrap();
        assert!(all == bytes);
        if passthrough() > before {
            return file;
        }
        drop(file);
        assert!(
            Instant::now() < deadline,
            "{} never became a passthrough open",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_holder_that_dies_is_replaced_and_the_mounts_still_survive_a_crash() {
    require_root!();
    let store = TestStore::file();
    let bytes = data::bytes(20, 300_000);
    let node = Node::new(store.env());
    let mount = mount_published(&node, &store, &[("log.0000000001", &bytes)]);
    let path = file_in(&mount, "log.0000000001");
    let held = File::open(&path).unwrap();
    let holder = |node: &Node| node.json(&["daemon", "status"])["holder"].clone();
    let first = holder(&node)["pid"].as_i64().expect("a holder runs");
    // SAFETY: killing the holder this test's daemon started.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = holder(&node);
        if now["pid"].as_i64().is_some_and(|pid| pid != first) && now["held"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new holder took the mount: {now}\n{}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new holder carries the mount through a crash as the first one would have.
    node.kill_daemon();
    node.ok(&["daemon", "start"]);
    wait_recovered(&node);
    let mut piece = vec![0u8; 1000];
    held.read_exact_at(&mut piece, 250_000).unwrap();
    assert!(
        piece[..] == bytes[250_000..251_000],
        "the file open before both deaths still reads"
    );
    assert_eq!(node.json(&["mounts"])[0]["openFiles"], 1);
    drop(held);
    mount.unmount();
}
