//! `lazysnap bench --profile scale`: one daemon serving thousands of mounts, as a database node
//! with a mount per vbucket. Volumes of one local-directory store are mounted one by one through
//! the CLI, each at its own path, then one file of each is read; the daemon's threads and memory
//! are measured with every mount live and idle; a reader on one mount runs across a `kill -9` of
//! the daemon and its start, and across `lazysnap daemon restart`; `daemon stop` unmounts all;
//! then sixteen clients mount them all again concurrently through the control API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use lazysnap::catalog::Selector;
use lazysnap::control::{MountRequest, Request};
use serde::Serialize;

use super::node::BenchNode;
use super::report::{check, Check};
use super::stats::{self, Latencies};
use super::targets::Target;
use crate::daemon;

/// Each volume holds one file of this size: the figures are about mounts, not bytes.
const FILE_BYTES: usize = 4096;
const FILE: &str = "log.0000000001";
/// The daemon's threads whatever the mount count: 64 (the bound) plus a few named ones.
const THREAD_LIMIT: f64 = 64.0 + 8.0;
const RSS_LIMIT: u64 = 256 << 20;
const MOUNT_MS_LIMIT: f64 = 20.0;
const STOP_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleFigures {
    pub mounts: usize,
    pub readable: usize,
    pub threads_idle_daemon: usize,
    pub threads: usize,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Mean time of `lazysnap mount` (a CLI run) over all mounts, and over the last tenth (with
    /// nine tenths of the mounts already live).
    pub mount_ms_mean: f64,
    pub mount_ms_mean_last_tenth: f64,
    pub mount_ms_p99: f64,
    /// `kill -9` of the daemon to every mount served again by a new one, and the longest read of
    /// a reader running across it; the same for `lazysnap daemon restart`.
    pub kill_recovery_ms: f64,
    pub kill_max_stall_ms: f64,
    pub restart_ms: f64,
    pub restart_max_stall_ms: f64,
    pub reader_errors: u64,
    pub stop_ms: f64,
    pub concurrent_clients: usize,
    pub concurrent_mount_ms_p50: f64,
    pub concurrent_mount_ms_p99: f64,
    pub concurrent_mounts_per_second: f64,
}

pub fn measure(target: &Target, work: &Path, daemon_args: &[String], mounts: usize) -> anyhow::Result<ScaleFigures> {
    super::say(&format!("scale: publishing {mounts} volumes"));
    let volumes: Vec<String> = (0..mounts).map(|i| format!("scale/kv/kvstore-{i}")).collect();
    let src = work.join("scale-src");
    for (i, volume) in volumes.iter().enumerate() {
        let dir = src.join(i.to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(FILE), content(i))?;
        super::publish_dir(target, &dir, volume)?;
    }
    std::fs::remove_dir_all(&src)?;

    let node = BenchNode::start(target, work, daemon_args)?;
    let pid = daemon_pid(&node)?;
    let threads_idle_daemon = proc_field(pid, "Threads:")? as usize;
    let root = work.join("scale-mnt");

    super::say(&format!("scale: {mounts} mounts through the CLI"));
    let mut times = Vec::with_capacity(mounts);
    // Opened before any of it is local: an ordinary open, whose reads all reach the daemon (a
    // passthrough open would not notice the daemon at all).
    let mut watched = None;
    for (i, volume) in volumes.iter().enumerate() {
        let started = Instant::now();
        cli_mount(&node, &target.url, volume, &root.join(i.to_string()))?;
        times.push(started.elapsed());
        if i == 0 {
            watched = Some(std::fs::File::open(file_of(&root, &volumes, 0))?);
        }
        if (i + 1) % 512 == 0 {
            super::say(&format!("scale: {} mounted", i + 1));
        }
    }
    super::say("scale: reading one file of each mount");
    let readable = (0..mounts)
        .filter(|&i| std::fs::read(file_of(&root, &volumes, i)).is_ok_and(|b| b == content(i)))
        .count();
    let threads = proc_field(pid, "Threads:")? as usize;
    let rss_bytes = proc_field(pid, "VmRSS:")? * 1024;
    let peak_rss_bytes = proc_field(pid, "VmHWM:")? * 1024;

    super::say("scale: a reader across kill -9 and a start of the daemon");
    let watched = watched.context("no mount to read")?;
    let reader = Reader::start(watched.try_clone()?, content(0));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    // SAFETY: killing the daemon this benchmark started, as a crash would.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    while !daemon::exited(pid as libc::pid_t) {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon::ensure_running_with(&node.paths, &target.with_daemon_args(daemon_args))?;
    wait_recovered(&node)?;
    let kill_recovery = killed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let kill_report = reader.finish();

    super::say("scale: a reader across lazysnap daemon restart");
    let reader = Reader::start(watched.try_clone()?, content(0));
    std::thread::sleep(Duration::from_millis(300));
    let restarting = Instant::now();
    let out = Command::new(lazysnap_tools::sibling_binary("lazysnap"))
        .arg("--home")
        .arg(node.paths.home())
        .args(["daemon", "restart"])
        .envs(target.launch.env.iter().map(|(k, v)| (k, v)))
        .output()?;
    ensure!(
        out.status.success(),
        "daemon restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restart = restarting.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let restart_report = reader.finish();
    let after = (0..mounts)
        .filter(|&i| std::fs::read(file_of(&root, &volumes, i)).is_ok_and(|b| b == content(i)))
        .count();
    ensure!(
        after == mounts,
        "{after} of {mounts} mounts readable after the restarts"
    );

    drop(watched);
    super::say("scale: daemon stop");
    let stopping = Instant::now();
    daemon::stop(&node.paths)?;
    let stop = stopping.elapsed();
    let left = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|m| Path::new(m).starts_with(&root))
        })
        .count();
    ensure!(left == 0, "daemon stop left {left} mounts");

    super::say("scale: 16 clients mounting through the control API");
    let clients = 16;
    daemon::ensure_running_with(&node.paths, &target.with_daemon_args(daemon_args))?;
    let started = Instant::now();
    let latencies = concurrent_mounts(&node, &target.url, &volumes, &root, clients)?;
    let concurrent_secs = started.elapsed().as_secs_f64();
    drop(node);

    let ms = |d: &[Duration]| d.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / d.len().max(1) as f64;
    let tenth = &times[mounts - (mounts / 10).max(1)..];
    let concurrent = Latencies::of(latencies);
    Ok(ScaleFigures {
        mounts,
        readable,
        threads_idle_daemon,
        threads,
        rss_bytes,
        peak_rss_bytes,
        mount_ms_mean: ms(&times),
        mount_ms_mean_last_tenth: ms(tenth),
        mount_ms_p99: Latencies::of(times.clone()).p99_us / 1e3,
        kill_recovery_ms: kill_recovery.as_secs_f64() * 1e3,
        kill_max_stall_ms: kill_report.max_stall.as_secs_f64() * 1e3,
        restart_ms: restart.as_secs_f64() * 1e3,
        restart_max_stall_ms: restart_report.max_stall.as_secs_f64() * 1e3,
        reader_errors: kill_report.errors + restart_report.errors,
        stop_ms: stop.as_secs_f64() * 1e3,
        concurrent_clients: clients,
        concurrent_mount_ms_p50: concurrent.p50_us / 1e3,
        concurrent_mount_ms_p99: concurrent.p99_us / 1e3,
        concurrent_mounts_per_second: mounts as f64 / concurrent_secs,
    })
}

/// The scale figures held to the targets.
pub fn checks(s: &ScaleFigures) -> Vec<Check> {
    let n = s.mounts;
    vec![
        check(
            "scale",
            &format!("mounts readable, of {n}"),
            s.readable as f64,
            "one file of each, compared".into(),
            &format!("= {n}"),
            s.readable == n,
        ),
        check(
            "scale",
            &format!("daemon threads, {n} mounts"),
            s.threads as f64,
            format!("{} with none", s.threads_idle_daemon),
            "<= 64 + 8",
            s.threads as f64 <= THREAD_LIMIT,
        ),
        check(
            "scale",
            &format!("RSS with {n} idle mounts (MiB)"),
            s.rss_bytes as f64 / f64::from(1 << 20),
            format!("peak {} MiB", s.peak_rss_bytes >> 20),
            "<= 256",
            s.rss_bytes <= RSS_LIMIT,
        ),
        check(
            "scale",
            &format!("mean mount time, last {} (ms)", (n / 10).max(1)),
            s.mount_ms_mean_last_tenth,
            format!("all {:.1}, p99 {:.1} ms", s.mount_ms_mean, s.mount_ms_p99),
            "<= 20",
            s.mount_ms_mean_last_tenth <= MOUNT_MS_LIMIT,
        ),
        check(
            "scale",
            "read stall across kill -9 (ms)",
            s.kill_max_stall_ms,
            format!("recovered in {:.0} ms, {} errors", s.kill_recovery_ms, s.reader_errors),
            "<= recovery",
            s.reader_errors == 0 && s.kill_max_stall_ms <= s.kill_recovery_ms + 100.0,
        ),
        check(
            "scale",
            "read stall across daemon restart (ms)",
            s.restart_max_stall_ms,
            format!("restart took {:.0} ms", s.restart_ms),
            "<= restart",
            s.reader_errors == 0 && s.restart_max_stall_ms <= s.restart_ms + 100.0,
        ),
        check(
            "scale",
            &format!("daemon stop, {n} mounts (ms)"),
            s.stop_ms,
            "every mount gone".into(),
            "<= 10000",
            s.stop_ms <= STOP_LIMIT.as_secs_f64() * 1e3,
        ),
        check(
            "scale",
            &format!("{} clients mounting, p99 (ms)", s.concurrent_clients),
            s.concurrent_mount_ms_p99,
            format!(
                "p50 {:.1} ms, {:.0} mounts/s",
                s.concurrent_mount_ms_p50, s.concurrent_mounts_per_second
            ),
            "all mounted",
            true,
        ),
    ]
}

fn content(i: usize) -> Vec<u8> {
    let mut buf = vec![0u8; FILE_BYTES];
    let mut state = 0x5ca1_e000 ^ i as u64;
    stats::fill_random(&mut buf, &mut state);
    buf
}

fn file_of(root: &Path, volumes: &[String], i: usize) -> PathBuf {
    root.join(i.to_string()).join(&volumes[i]).join(FILE)
}

fn daemon_pid(node: &BenchNode) -> anyhow::Result<u64> {
    node.status()?["pid"].as_u64().context("status has no pid")
}

/// A number from /proc/<pid>/status (`Threads:`, or a `kB` figure such as `VmRSS:`).
fn proc_field(pid: u64, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn cli_mount(node: &BenchNode, store: &str, volume: &str, path: &Path) -> anyhow::Result<()> {
    let out = Command::new(lazysnap_tools::sibling_binary("lazysnap"))
        .arg("--home")
        .arg(node.paths.home())
        .args(["mount", "--store", store, "--volume", volume, "--mountpoint"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "mount of {volume} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn wait_recovered(node: &BenchNode) -> anyhow::Result<()> {
    let started = Instant::now();
    while daemon::call(&node.paths, &Request::Ping)?["recovered"] != true {
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "mounts not recovered in 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Mounts every volume again from `clients` threads at once; each request's latency.
fn concurrent_mounts(
    node: &BenchNode,
    store: &str,
    volumes: &[String],
    root: &Path,
    clients: usize,
) -> anyhow::Result<Vec<Duration>> {
    let results: Vec<anyhow::Result<Vec<Duration>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    for i in (client..volumes.len()).step_by(clients) {
                        let request = Request::Mount(MountRequest {
                            store: store.to_owned(),
                            volumes: vec![volumes[i].clone()],
                            selector: Selector::Latest,
                            mount_path: Some(root.join(i.to_string()).display().to_string()),
                            hydrate: None,
                            scylla: None,
                            access: Default::default(),
                            planned: Vec::new(),
                            guest: None,
                        });
                        let started = Instant::now();
                        daemon::call(&node.paths, &request)?;
                        latencies.push(started.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let mut all = Vec::new();
    for result in results {
        all.extend(result?);
    }
    Ok(all)
}

struct ReaderReport {
    max_stall: Duration,
    errors: u64,
}

/// Reads one file over and over, the page cache dropped before each read so that every read
/// reaches the daemon; keeps the longest read. Files on lazysnap mounts are closed without a
/// round trip to the daemon (FLUSH is declined once), so this process can start the daemon while
/// the reader waits on it.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ReaderReport>,
}

impl Reader {
    fn start(file: std::fs::File, expected: Vec<u8>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let mut report = ReaderReport {
                max_stall: Duration::ZERO,
                errors: 0,
            };
            let mut buf = vec![0u8; expected.len()];
            while !stopping.load(Ordering::Relaxed) {
                // SAFETY: advice on a descriptor this thread owns.
                unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, libc::POSIX_FADV_DONTNEED) };
                let started = Instant::now();
                let good = file.read_exact_at(&mut buf, 0).is_ok() && buf == expected;
                report.max_stall = report.max_stall.max(started.elapsed());
                report.errors += u64::from(!good);
            }
            report
        });
        Reader { stop, thread }
    }

    fn finish(self) -> ReaderReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("reader thread")
    }
}
