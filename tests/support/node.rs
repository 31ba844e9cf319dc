//! One lazysnap node per test: its own home (index, cache, daemon socket), the real `lazysnap` and
//! `lazysnap-mountd` binaries, and cleanup that runs on failure too: every mount under the test's
//! folders is unmounted and the daemon stopped when the node is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use super::stores::TestStore;

/// Where cargo put the binaries: next to the `deps` folder holding this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the integration tests (make test does)",
        path.display()
    );
    path
}

pub struct Node {
    pub dir: TempDir,
    /// Extra environment for the CLI and daemon (the S3 server's credentials).
    env: Vec<(String, String)>,
}

impl Node {
    pub fn new(env: Vec<(String, String)>) -> Node {
        Node {
            dir: tempfile::Builder::new()
                .prefix("lazysnap-test-")
                .tempdir()
                .expect("temp dir"),
            env,
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A fresh path under the test's folder (for sources, mountpoints).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("lazysnap"));
        // These machines set AWS_* of their own; a test sees only its own server's.
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LAZYSNAP_HOME", self.home()).env_remove("LAZYSNAP_LOG");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run lazysnap")
    }

    /// Runs and requires success; answers stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lazysnap {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("lazysnap {args:?} printed no JSON ({e}): {text}"))
    }

    /// Runs and requires failure with a one-line error; answers that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "lazysnap {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "lazysnap {args:?} should print one error line, printed: {stderr}"
        );
        assert!(lines[0].starts_with("lazysnap: error: "), "{stderr}");
        lines[0].to_string()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home().join("mountd.log")).unwrap_or_default()
    }

    /// Publishes `src` as the next manifest of `volume`; answers the publish report.
    pub fn publish(&self, store: &TestStore, src: &Path, volume: &str, extra: &[&str]) -> serde_json::Value {
        let url = store.url();
        let mut args = vec![
            "publish",
            src.to_str().expect("utf-8 path"),
            "--store",
            &url,
            "--volume",
            volume,
        ];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// The crash checker's last invariant: `index check` finds this node's index in agreement
    /// with the store (every manifest it holds is the store's, every snapshot it takes as live is).
    pub fn index_agrees(&self, store: &TestStore) {
        let report = self.json(&["index", "check", "--store", &store.url()]);
        assert_eq!(
            report["disagreements"],
            serde_json::json!([]),
            "{}: {report}",
            store.name()
        );
    }

    /// Creates snapshot `uuid` of `volume`, valid for ten minutes; answers Fusion's 0x70 answer.
    pub fn snapshot(&self, store: &TestStore, volume: &str, uuid: &str) -> serde_json::Value {
        let url = store.url();
        self.json(&snapshot_args(&url, volume, uuid, "600"))
    }

    /// Mounts and answers the mount path, with a guard that unmounts it.
    pub fn mount(&self, args: &[&str]) -> MountGuard<'_> {
        self.mount_answer(args).0
    }

    /// Mounts and answers the guard with the whole answer of `mount`.
    pub fn mount_answer(&self, args: &[&str]) -> (MountGuard<'_>, serde_json::Value) {
        let mut full = vec!["mount"];
        full.extend_from_slice(args);
        let answer = self.json(&full);
        let paths = answer["mountPaths"].as_array().expect("mountPaths array");
        assert_eq!(paths.len(), 1, "{answer}");
        let guard = MountGuard {
            node: self,
            path: PathBuf::from(paths[0].as_str().expect("a path")),
        };
        (guard, answer)
    }

    /// Every mount point below this test's folder.
    pub fn mounts_below(&self) -> Vec<PathBuf> {
        mounts_below(self.dir.path())
    }

    /// Sends one raw JSON line to the daemon's control socket; answers the whole response
    /// (`{"status": ..., "result"|"error": ...}`).
    pub fn request(&self, line: &str) -> serde_json::Value {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(self.home().join("mountd.sock"))
            .unwrap_or_else(|e| panic!("no daemon socket: {e}"));
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not a response ({e}): {answer:?}"))
    }

    /// Starts `lazysnap args` with `failpoint` armed, waits until the process reports it reached
    /// it, and kills it there with SIGKILL, as a crash would.
    pub fn crash_at(&self, failpoint: &str, args: &[&str]) {
        use std::io::{BufRead, BufReader};
        let mut child = self
            .command()
            .args(args)
            .env("LAZYSNAP_FAILPOINT", failpoint)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run lazysnap");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains(&format!("failpoint {failpoint} reached")) {
                child.kill().expect("SIGKILL");
                child.wait().unwrap();
                return;
            }
            seen.push(line);
        }
        let status = child.wait().unwrap();
        panic!("lazysnap {args:?} exited ({status}) without reaching {failpoint}: {seen:?}");
    }

    /// GC of `volume` with no retention and no upload grace: only what snapshots pin and the head
    /// survive. Answers the report.
    pub fn gc_now(&self, url: &str, volume: &str) -> serde_json::Value {
        self.json(&gc_now_args(url, volume))
    }

    /// Starts the daemon with `failpoint` armed (see `lazysnap::failpoint`).
    pub fn start_daemon_armed(&self, failpoint: &str) {
        let out = self
            .command()
            .args(["daemon", "start"])
            .env("LAZYSNAP_FAILPOINT", failpoint)
            .output()
            .expect("run lazysnap");
        assert!(out.status.success(), "daemon start: {out:?}");
    }

    /// Waits until the daemon says it reached `failpoint`, then kills it there with SIGKILL.
    pub fn kill_daemon_at(&self, failpoint: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.daemon_log().contains(&format!("failpoint {failpoint} reached")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon never reached {failpoint}: {}",
                self.daemon_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill_daemon();
    }

    /// Polls restore job `id` until `done` holds for its status (a minute at most); the status.
    pub fn wait_for_restore(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let status = self.json(&["restore", "status", id, "--json"]);
            if done(&status) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {status}\n{}",
                self.daemon_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill_daemon(&self) {
        let pid = self.json(&["daemon", "status"])["pid"]
            .as_i64()
            .expect("status has a pid") as i32;
        // SAFETY: sending a signal to the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        while !exited(pid) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Starts the daemon and waits until it has mounted again what it finds recorded; answers
    /// `lazysnap mounts`.
    pub fn restart_daemon_and_wait_for_mounts(&self) -> serde_json::Value {
        self.ok(&["daemon", "start"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mounts = self.json(&["mounts"]);
            if !mounts.as_array().expect("mounts is a list").is_empty() {
                return mounts;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mount came back: {}",
                self.daemon_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.command().args(["daemon", "stop"]).output();
        // A holder left by a daemon that was killed and not started again keeps its mounts alive
        // for its grace period: end it now.
        if let Ok(holder) = lazysnap::handover::HolderLink::connect(&self.home().join("holder.sock")) {
            let _ = holder.exit();
        }
        for mount in mounts_below(self.dir.path()) {
            eprintln!("test cleanup: detaching leftover mount {}", mount.display());
            detach(&mount);
        }
    }
}

/// `lazysnap gc` arguments that collect everything not needed now.
pub fn gc_now_args<'a>(url: &'a str, volume: &'a str) -> [&'a str; 9] {
    [
        "gc",
        "--store",
        url,
        "--volume",
        volume,
        "--retention",
        "0",
        "--upload-grace",
        "0",
    ]
}

/// `lazysnap snapshot create` arguments.
pub fn snapshot_args<'a>(url: &'a str, volume: &'a str, uuid: &'a str, validity: &'a str) -> [&'a str; 10] {
    [
        "snapshot",
        "create",
        "--store",
        url,
        "--volume",
        volume,
        "--uuid",
        uuid,
        "--validity",
        validity,
    ]
}

pub struct MountGuard<'a> {
    node: &'a Node,
    pub path: PathBuf,
}

impl MountGuard<'_> {
    pub fn unmount(self) {
        let path = self.path.display().to_string();
        self.node.ok(&["umount", &path]);
        // Drop finds nothing more to do.
    }
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let path = self.path.display().to_string();
            let _ = self.node.run(&["umount", &path]);
            if is_mounted(&self.path) {
                detach(&self.path);
            }
        }
    }
}

fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        // /proc/mounts escapes spaces and tabs as octal; test paths have neither.
        .map(PathBuf::from)
        .collect()
}

pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    mount_points().into_iter().filter(|m| m.starts_with(dir)).collect()
}

fn detach(path: &Path) {
    let _ = Command::new("umount").arg("-l").arg(path).status();
}

pub use lazysnap::process::exited;
