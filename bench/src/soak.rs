//! `lazysnap bench --profile soak`: one daemon under everything at once for `--soak-seconds`
//! (10 minutes; a minute in `make test`): 64 threads of random reads and 4 sequential readers over
//! 16 mounts, every answer compared with the source, while four of the mounts hydrate, a restore
//! copies a volume and GC runs on every volume in a loop, and the S3 server makes 1% of GETs
//! faulty (every kind). The kernel's page cache is dropped every 2 s and the daemon's disk cache
//! holds a quarter of the data, so reads keep going to the store. A watchdog polls the daemon: the oldest FUSE request waiting, requests
//! stuck past 30 s, and the daemon's RSS against its memory cap.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lazysnap::catalog::Selector;
use lazysnap::control::answers::DaemonStatus;
use lazysnap::control::records::{JobState, RestoreJobStatus};
use lazysnap::control::{GcRequest, Request, RestoreStartRequest};
use lazysnap_faults::{Fault, FaultPlan};
use serde::Serialize;

use super::node::{BenchNode, Mounted};
use super::report::{check, Check};
use super::targets::Target;
use crate::daemon;

const MOUNTS: usize = 16;
const FILES_PER_VOLUME: usize = 2;
const RANDOM_READERS: usize = 64;
const SEQUENTIAL_READERS: usize = 4;
const HYDRATED: usize = 4;
const FAULTY_SHARE: f64 = 0.01;
/// The daemon's memory cap for the run and what it may use beyond it (threads, index, buffers).
/// Its disk cache holds a quarter of the data, so blocks keep being evicted and fetched again
/// (through the faults) rather than served from local copies after the first minute.
const CACHE_MEMORY: u64 = 64 << 20;
const RSS_ALLOWANCE: u64 = 64 << 20;
const STUCK_MS: u64 = 30_000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakFigures {
    pub seconds: f64,
    pub mounts: usize,
    pub bytes: u64,
    pub random_reads: u64,
    pub sequential_reads: u64,
    pub errors: u64,
    pub wrong: u64,
    pub gets: u64,
    pub faults: u64,
    pub kinds: String,
    pub gc_runs: u64,
    pub restore_completed: bool,
    pub hydrations_completed: usize,
    pub oldest_request_ms: u64,
    pub stuck_requests: u64,
    pub peak_rss_bytes: u64,
    pub rss_limit_bytes: u64,
}

/// One volume per mount, published from `<data>/soak-<i>/`.
pub fn measure(
    target: &Target,
    work: &Path,
    daemon_args: &[String],
    namespace: &str,
    total: u64,
    run: Duration,
) -> anyhow::Result<SoakFigures> {
    let server = target.server().context("the soak profile needs the local S3 server")?;
    let data = work.join("soak-data");
    let file_bytes = (total / (MOUNTS * FILES_PER_VOLUME) as u64).max(1 << 20);
    super::say(&format!(
        "soak: publishing {MOUNTS} volumes of {FILES_PER_VOLUME} x {} MiB",
        file_bytes >> 20
    ));
    let mut volumes = Vec::new();
    for i in 0..MOUNTS {
        let dir = data.join(format!("soak-{i}"));
        for f in 0..FILES_PER_VOLUME {
            let seed = (i * FILES_PER_VOLUME + f) as u64 * 0x1000_0001 + 7;
            super::write_seeded_file(&dir.join(format!("f{f}.data")), file_bytes, seed)?;
        }
        let volume = format!("{namespace}/soak-{i}");
        super::publish_dir(target, &dir, &volume)?;
        volumes.push((volume, dir));
    }
    let mut args = daemon_args.to_vec();
    args.push(format!("--cache-memory={}M", CACHE_MEMORY >> 20));
    args.push(format!("--cache-disk={}M", (total / 4).max(16 << 20) >> 20));
    let node = BenchNode::start(target, work, &args)?;
    let mut mounts: Vec<(Mounted, PathBuf)> = Vec::new();
    for (volume, dir) in &volumes {
        mounts.push((node.mount(volume, None)?.0, dir.clone()));
    }
    let files: Arc<Vec<(PathBuf, PathBuf)>> = Arc::new(
        mounts
            .iter()
            .flat_map(|(m, dir)| {
                (0..FILES_PER_VOLUME).map(move |f| {
                    let name = format!("f{f}.data");
                    (m.volume_dir.join(&name), dir.join(&name))
                })
            })
            .collect(),
    );

    let faults = server.inject_faults(FaultPlan::mixed(
        FAULTY_SHARE,
        &Fault::ALL,
        Duration::from_secs(5),
        0x50a4,
    ));
    super::say(&format!("soak: {} s under load", run.as_secs()));
    for (mounted, _) in mounts.iter().take(HYDRATED) {
        node.hydrate(mounted, true)?;
    }
    let restored = tempfile::Builder::new().prefix("soak-restore-").tempdir_in(work)?;
    let restore: RestoreJobStatus = daemon::call_as(
        &node.paths,
        &Request::RestoreStart(RestoreStartRequest {
            store: target.url.clone(),
            volume: Some(volumes[MOUNTS - 1].0.clone()),
            selector: Selector::Latest,
            dest: restored.path().display().to_string(),
            bandwidth: Some(32 << 20),
            in_place: false,
            scylla: None,
        }),
    )?;
    let restore_id = restore.job.id.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut threads = Vec::new();
    for t in 0..RANDOM_READERS {
        let (files, stop, tally) = (files.clone(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            random_reader(&files, t as u64, &stop, &tally)
        }));
    }
    for t in 0..SEQUENTIAL_READERS {
        let (files, stop, tally) = (files.clone(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || sequential_reader(&files, t, &stop, &tally)));
    }
    let (mut gc_runs, mut peak_rss, mut oldest, mut stuck) = (0u64, 0u64, 0u64, 0u64);
    let pid = node.status()?["pid"].as_u64().context("status has no pid")?;
    while started.elapsed() < run {
        let (volume, _) = &volumes[gc_runs as usize % MOUNTS];
        let gc = Request::Gc(GcRequest {
            store: target.url.clone(),
            volume: volume.clone(),
            retention: Some(0),
            upload_grace: Some(0),
            term: None,
            dry_run: false,
        });
        daemon::call(&node.paths, &gc).with_context(|| format!("gc of {volume}"))?;
        gc_runs += 1;
        let status: DaemonStatus = daemon::call_as(&node.paths, &Request::Status)?;
        oldest = oldest.max(status.limits.oldest_fuse_request_ms);
        stuck = stuck.max(status.limits.stuck_fuse_requests);
        peak_rss = peak_rss.max(rss(pid)?);
        // The kernel's page cache would answer most reads after the first minute: drop it, so
        // reads keep reaching the daemon, its small cache and the faulty store (root only).
        if gc_runs % 4 == 0 {
            let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Relaxed);
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let injected = faults.injected();
    let (gets, total_faults, kinds) = (injected.gets(), injected.total(), injected.summary());
    server.stop_faults();

    let restore_status: RestoreJobStatus = daemon::call_as(
        &node.paths,
        &Request::RestoreStatus(lazysnap::control::RestoreStatusRequest {
            id: restore_id,
            wait_ms: Some(60_000),
        }),
    )?;
    let mut hydrations_completed = 0;
    for (mounted, _) in mounts.iter().take(HYDRATED) {
        if node.hydrate(mounted, false)?["state"] == "COMPLETED" {
            hydrations_completed += 1;
        }
    }
    for (mounted, _) in &mounts {
        node.unmount(mounted)?;
    }
    Ok(SoakFigures {
        seconds,
        mounts: MOUNTS,
        bytes: file_bytes * (MOUNTS * FILES_PER_VOLUME) as u64,
        random_reads: tally.random.load(Relaxed),
        sequential_reads: tally.sequential.load(Relaxed),
        errors: tally.errors.load(Relaxed),
        wrong: tally.wrong.load(Relaxed),
        gets,
        faults: total_faults,
        kinds,
        gc_runs,
        restore_completed: restore_status.job.state == JobState::Completed,
        hydrations_completed,
        oldest_request_ms: oldest,
        stuck_requests: stuck,
        peak_rss_bytes: peak_rss,
        rss_limit_bytes: CACHE_MEMORY + RSS_ALLOWANCE,
    })
}

#[derive(Default)]
struct Tally {
    random: AtomicU64,
    sequential: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
}

impl Tally {
    /// Reads `len` bytes at `offset` through the mount and from the source, and compares.
    fn check(&self, mounted: &std::fs::File, source: &std::fs::File, offset: u64, len: usize, buf: &mut [Vec<u8>; 2]) {
        let [got, want] = buf;
        let (got, want) = (&mut got[..len], &mut want[..len]);
        if source.read_exact_at(want, offset).is_err() {
            return;
        }
        match mounted.read_at(got, offset) {
            Ok(n) if n == len && got == want => {}
            Ok(_) => {
                self.wrong.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

fn open_pair(files: &[(PathBuf, PathBuf)], i: usize) -> Option<(std::fs::File, std::fs::File, u64)> {
    let (mounted, source) = &files[i % files.len()];
    let source = std::fs::File::open(source).ok()?;
    let size = source.metadata().ok()?.len();
    Some((std::fs::File::open(mounted).ok()?, source, size))
}

fn random_reader(files: &[(PathBuf, PathBuf)], seed: u64, stop: &AtomicBool, tally: &Tally) {
    let mut state = (seed + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut buf = [vec![0u8; 256 << 10], vec![0u8; 256 << 10]];
    while !stop.load(Relaxed) {
        let Some((mounted, source, size)) = open_pair(files, next() as usize) else {
            tally.errors.fetch_add(1, Relaxed);
            continue;
        };
        for _ in 0..16 {
            let len = (4096 + next() % (252 << 10)).min(size) as usize;
            let offset = next() % (size - len as u64 + 1);
            tally.check(&mounted, &source, offset, len, &mut buf);
            tally.random.fetch_add(1, Relaxed);
        }
    }
}

fn sequential_reader(files: &[(PathBuf, PathBuf)], first: usize, stop: &AtomicBool, tally: &Tally) {
    let mut buf = [vec![0u8; 1 << 20], vec![0u8; 1 << 20]];
    let mut i = first;
    while !stop.load(Relaxed) {
        let Some((mounted, source, size)) = open_pair(files, i) else {
            tally.errors.fetch_add(1, Relaxed);
            continue;
        };
        let mut offset = 0;
        while offset < size && !stop.load(Relaxed) {
            let len = (1u64 << 20).min(size - offset) as usize;
            tally.check(&mounted, &source, offset, len, &mut buf);
            tally.sequential.fetch_add(1, Relaxed);
            offset += len as u64;
        }
        i += SEQUENTIAL_READERS;
    }
}

fn rss(pid: u64) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

pub fn checks(s: &SoakFigures) -> Vec<Check> {
    let reads = s.random_reads + s.sequential_reads;
    let load = format!("{reads} reads in {:.0} s, {} faults", s.seconds, s.faults);
    vec![
        check("soak", "failed reads", s.errors as f64, load, "0", s.errors == 0),
        check(
            "soak",
            "wrong or short answers",
            s.wrong as f64,
            format!("{reads} reads"),
            "0",
            s.wrong == 0,
        ),
        check(
            "soak",
            "FUSE requests stuck past 30 s",
            s.stuck_requests as f64,
            format!("oldest seen waiting {} ms", s.oldest_request_ms),
            "0",
            s.stuck_requests == 0 && s.oldest_request_ms < STUCK_MS,
        ),
        check(
            "soak",
            "peak daemon RSS / (cap + 64 MiB)",
            s.peak_rss_bytes as f64 / s.rss_limit_bytes as f64,
            format!("{} MiB, cap {} MiB", s.peak_rss_bytes >> 20, CACHE_MEMORY >> 20),
            "<= 1.0",
            s.peak_rss_bytes <= s.rss_limit_bytes,
        ),
        check(
            "soak",
            "background work finished",
            (s.hydrations_completed + s.restore_completed as usize) as f64,
            format!(
                "{} of {HYDRATED} hydrations, restore {}, {} GC runs",
                s.hydrations_completed, s.restore_completed, s.gc_runs
            ),
            "all",
            s.hydrations_completed == HYDRATED && s.restore_completed && s.gc_runs > 0,
        ),
    ]
}

/// The soak as a row of `make reliability`'s table.
pub fn table(s: &SoakFigures) -> String {
    format!(
        "| soak: {RANDOM_READERS} random + {SEQUENTIAL_READERS} sequential readers, {} mounts, {HYDRATED} hydrating, a restore, GC | {:.0} s, {} MiB, peak RSS {} MiB | {} in {} GETs ({}) | {} reads | {} | {} |\n",
        s.mounts,
        s.seconds,
        s.bytes >> 20,
        s.peak_rss_bytes >> 20,
        s.faults,
        s.gets,
        s.kinds,
        s.random_reads + s.sequential_reads,
        s.errors + s.stuck_requests,
        s.wrong
    )
}
