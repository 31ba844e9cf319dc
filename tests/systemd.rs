//! lazysnap-mountd under systemd: the unit passes `systemd-analyze verify`, and the daemon speaks
//! systemd's protocol: READY=1 once its socket listens, each mount's connection given to the file
//! descriptor store, taken back from LISTEN_FDS after a crash (open files carry on), exit status
//! 75 after `lazysnap daemon restart` so that systemd starts the successor, and connections taken
//! out of the store when unmounted. systemd is not PID 1 on test machines, so the test plays it:
//! it owns the notification socket and starts the daemon as systemd would.

mod support;

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::data;
use support::node::{bin, Node};
use support::stores::TestStore;

const VOLUME: &str = "kv/b/kvstore-2";

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/lazysnap-mountd.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "FileDescriptorStoreMax=",
        "LimitNOFILE=",
        "StateDirectory=lazysnap",
        "Restart=on-failure",
        "RestartForceExitStatus=75",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    // The package installs the binaries in /usr/bin; here they are in the build's folder.
    let dir = tempfile::tempdir().unwrap();
    let built = bin("lazysnap-mountd");
    let local = unit.replace("/usr/bin/", &format!("{}/", built.parent().unwrap().display()));
    let path = dir.path().join("lazysnap-mountd.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd, installed by scripts/install-deps)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// systemd's side: the notification socket and the descriptors it was given.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

/// One sd_notify message: its fields and the descriptor attached.
struct Message {
    text: String,
    fd: Option<OwnedFd>,
}

impl Manager {
    fn new(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Manager { socket, path }
    }

    /// The next message whose text contains `field`.
    fn expect(&self, field: &str) -> Message {
        loop {
            let mut buf = vec![0u8; 4096];
            let (len, fd) = lazysnap::fdpass::recv(self.socket.as_fd(), &mut buf)
                .unwrap_or_else(|e| panic!("no sd_notify message with {field}: {e}"));
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if text.lines().any(|l| l == field || l.starts_with(field)) {
                return Message { text, fd };
            }
        }
    }

    /// Starts the daemon as systemd does, passing `kept` as LISTEN_FDS (from fd 3).
    fn start(&self, node: &Node, kept: &[(&OwnedFd, &str)]) -> Daemon {
        let names: Vec<&str> = kept.iter().map(|(_, name)| *name).collect();
        let fds: Vec<i32> = kept.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
        let script = match kept.is_empty() {
            true => "exec \"$0\" --home \"$1\"".to_string(),
            false => format!(
                "LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={} exec \"$0\" --home \"$1\"",
                kept.len(),
                names.join(":")
            ),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.home().join("mountd.log"))
            .unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg(bin("lazysnap-mountd"))
            .arg(node.home())
            .env("NOTIFY_SOCKET", &self.path)
            .env_remove("LAZYSNAP_LOG")
            .stdin(Stdio::null())
            .stderr(log);
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for (i, fd) in fds.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        self.expect("READY=1");
        Daemon(Some(child))
    }
}

/// A daemon this test started; killed if the test ends early.
struct Daemon(Option<Child>);

impl Daemon {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_recovered(node: &Node) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = node.run(&["daemon", "status"]);
        if out.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if status["recovered"] == true {
                return status;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{}", node.daemon_log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process holding one file of a mount open across daemon restarts. It is a process of its own
/// because a process with a file of a mount open cannot start that mount's next server: the
/// forked child closes its copy of the file at exec, which waits for the server it is to become.
struct Reader {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Reader {
    fn open(path: &Path) -> Reader {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reader_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LAZYSNAP_TEST_READ", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let mut reader = Reader { child, lines };
        assert_eq!(reader.answer(), "open");
        reader
    }

    fn answer(&mut self) -> String {
        for line in self.lines.by_ref() {
            // The harness may have written the test's name on the same line first.
            if let Some((_, answer)) = line.unwrap().split_once("READER ") {
                return answer.to_string();
            }
        }
        panic!("the reader process ended");
    }

    /// Reads the whole file through the descriptor opened at the start; answers length and CRC.
    fn read(&mut self) -> String {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "read").unwrap();
        self.answer()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "the reader process of mounts_survive_a_crash_and_a_restart_through_the_descriptor_store"]
fn reader_process() {
    let Some(path) = std::env::var_os("LAZYSNAP_TEST_READ") else {
        return;
    };
    let mut file = std::fs::File::open(path).unwrap();
    let mut head = vec![0u8; 4096];
    file.read_exact(&mut head).unwrap();
    println!("READER open");
    for _ in std::io::stdin().lines() {
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        let answer = match file.read_to_end(&mut all) {
            Ok(len) => format!("{len} {:08x}", crc32c::crc32c(&all)),
            Err(e) => format!("error {e}"),
        };
        println!("READER {answer}");
    }
}

#[test]
fn mounts_survive_a_crash_and_a_restart_through_the_descriptor_store() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let src = node.path("src");
    let bytes = data::bytes(2, 1 << 20);
    let expected = format!("{} {:08x}", bytes.len(), crc32c::crc32c(&bytes));
    data::write(&src, "log.0001", &bytes);
    node.publish(&store, &src, VOLUME, &[]);
    std::fs::create_dir_all(node.home()).unwrap();
    let manager = Manager::new(node.dir.path());

    let mut daemon = manager.start(&node, &[]);
    let status = node.json(&["daemon", "status"]);
    assert_eq!(status["handover"], "systemd", "{status}");
    let url = store.url();
    let mount = node.mount(&["--store", &url, "--volume", VOLUME]);
    let stored = manager.expect("FDSTORE=1");
    let fd = stored.fd.expect("the connection is attached");
    let name = stored
        .text
        .lines()
        .find_map(|l| l.strip_prefix("FDNAME="))
        .expect("the connection is named")
        .to_string();
    assert!(!name.contains(':') && name.len() <= 255 && name.is_ascii(), "{name}");
    let mut reader = Reader::open(&mount.path.join(VOLUME).join("log.0001"));
    assert_eq!(reader.read(), expected);

    // A crash: systemd starts the daemon again with what its store kept.
    daemon.kill();
    let mut daemon = manager.start(&node, &[(&fd, &name)]);
    let status = wait_recovered(&node);
    assert_eq!(status["mounts"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(reader.read(), expected, "the file opened before the crash");

    // `lazysnap daemon restart`: the daemon hands over and exits 75 for systemd to restart it.
    let restart = node
        .command()
        .args(["daemon", "restart"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let code = daemon.wait().code();
    assert_eq!(code, Some(75), "{}", node.daemon_log());
    let _daemon = manager.start(&node, &[(&fd, &name)]);
    let finished = restart.wait_with_output().unwrap();
    assert!(finished.status.success(), "{}", node.daemon_log());
    assert_eq!(reader.read(), expected, "the file opened before the restart");
    drop(reader);

    // Unmounted: its connection is taken out of the store.
    mount.unmount();
    let removed = manager.expect("FDSTOREREMOVE=1");
    assert!(removed.text.contains(&format!("FDNAME={name}")), "{}", removed.text);
    node.ok(&["daemon", "stop"]);
}
