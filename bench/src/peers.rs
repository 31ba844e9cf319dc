//! `--peers`: the same work through the tools operators use today, against the same S3 server in
//! the same run, on loopback and with added round-trip time: copying objects to local disk
//! (`lazysnap restore` against `rclone copy`), a cold sequential read and cold random 4 KiB reads
//! through a mount (lazysnap against s3fs, rclone mount with its VFS cache off and full, and
//! Mountpoint for S3 when `mount-s3` is on PATH). A peer not installed is reported as skipped.
//!
//! Every measurement starts cold: a fresh lazysnap node, a fresh peer mount with an empty cache
//! folder, an empty destination. Tools take turns within each repetition, so a slow spell of the
//! shared 2-core machine hits all of them, and figures are medians of the repetitions.

mod delay;
mod tools;
pub mod warm;

pub use tools::on_path;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::node::BenchNode;
use super::stats::{self, Latencies};
use super::targets::Target;
use lazysnap_tools::daemon;

/// Where the peers' work lives in the S3 bucket and on disk, and how to reach the server.
pub struct Work<'a> {
    pub target: &'a Target,
    pub work: &'a Path,
    pub daemon_args: &'a [String],
    /// `volume -> manifest` of the one big file and of the folder of many files.
    pub big: (&'a str, &'a str),
    pub many: (&'a str, &'a str),
    pub big_file: &'a str,
    pub big_size: u64,
    pub many_size: u64,
    pub offsets: &'a [u64],
    pub runs: usize,
    pub kinds: &'a [PeerWork],
    /// The RocksDB database of the warm-start figure, when `ldb` is installed.
    pub database: Option<&'a warm::Database<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerWork {
    Copy,
    Reads,
    /// With added latency only: mount to the first RocksDB `ldb get`, with and without a
    /// first-touch profile, beside a download of the whole database.
    Warm,
}

/// One network condition's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerFigures {
    /// "loopback" or "+10ms".
    pub network: String,
    pub added_rtt_ms: u64,
    pub rows: Vec<PeerRow>,
    /// Peers not measured, and why.
    pub skipped: Vec<String>,
}

/// One tool doing one kind of work: medians over the runs, with the spread.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRow {
    pub work: String,
    pub tool: String,
    /// Copies: seconds; sequential reads: MB/s; random reads: p50 microseconds.
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Random reads only: the median run's p99 microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
}

pub const COPY_ONE: &str = "copy one object (s)";
pub const COPY_MANY: &str = "copy 100 files (s)";
pub const COLD_SEQUENTIAL: &str = "cold sequential (MB/s)";
pub const RANDOM: &str = "cold random 4K p50 (us)";
pub const WARM_START: &str = "mount to first ldb get (ms)";
pub const LAZYSNAP: &str = "lazysnap";
pub const COLD_START: &str = "lazysnap, no profile";
pub const PROFILED_START: &str = "lazysnap, first-touch profile";
pub const DOWNLOAD_FIRST: &str = "download first (restore)";
/// `ldb get` alone on the downloaded copy: what no mount can take away from the first answer.
pub const LDB_LOCAL: &str = "ldb get on the local copy";
pub const RCLONE_COPY: &str = "rclone copy";

/// Measures every installed peer beside lazysnap, with `added_rtt` on the server's traffic.
pub fn measure(w: &Work, added_rtt: Duration) -> anyhow::Result<PeerFigures> {
    let network = match added_rtt.is_zero() {
        true => "loopback".to_owned(),
        false => format!("+{}ms", added_rtt.as_millis()),
    };
    // With latency, every client talks to the server through a delaying proxy: a target of its own.
    let proxy = match added_rtt.is_zero() {
        true => None,
        false => {
            let port = w.target.port().context("peers need the local S3 server")?;
            Some(delay::DelayProxy::start(([127, 0, 0, 1], port).into(), added_rtt)?)
        }
    };
    let proxied = proxy.as_ref().map(|p| w.target.through(p.endpoint()));
    let w = &Work {
        target: proxied.as_ref().unwrap_or(w.target),
        ..*w
    };
    let (peers, mut skipped) = tools::installed();
    if !added_rtt.is_zero() && w.kinds.contains(&PeerWork::Warm) && w.database.is_none() {
        skipped.push("ldb: not on PATH, no warm-start figure".into());
    }
    let mut samples: Vec<(String, String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut record =
        |work: &str, tool: &str, value: f64, p99: f64| match samples.iter_mut().find(|s| s.0 == work && s.1 == tool) {
            Some(s) => {
                s.2.push(value);
                s.3.push(p99);
            }
            None => samples.push((work.into(), tool.into(), vec![value], vec![p99])),
        };
    let s3 = tools::S3Access::of(w.target)?;
    for run in 0..w.runs {
        super::say(&format!("peers, {network}: run {} of {}", run + 1, w.runs));
        if w.kinds.contains(&PeerWork::Copy) {
            // Without rclone (reported as skipped) the copies are measured for lazysnap alone.
            let rclone = tools::on_path("rclone");
            stats::settle_disk();
            record(COPY_ONE, LAZYSNAP, restore(w, w.big)?.as_secs_f64(), 0.0);
            if rclone {
                let one = s3.file_key(w.big.0, w.big_file);
                stats::settle_disk();
                let took = tools::rclone_copy(&s3, &one, w.work, w.big_size)?;
                record(COPY_ONE, RCLONE_COPY, took.as_secs_f64(), 0.0);
            }
            stats::settle_disk();
            record(COPY_MANY, LAZYSNAP, restore(w, w.many)?.as_secs_f64(), 0.0);
            if rclone {
                let dir = s3.files_dir(w.many.0);
                stats::settle_disk();
                let took = tools::rclone_copy(&s3, &dir, w.work, w.many_size)?;
                record(COPY_MANY, RCLONE_COPY, took.as_secs_f64(), 0.0);
            }
        }
        if let (Some(db), false, true) = (w.database, added_rtt.is_zero(), w.kinds.contains(&PeerWork::Warm)) {
            stats::settle_disk();
            let figures = warm::measure(w, db)?;
            record(WARM_START, COLD_START, figures.cold_ms, 0.0);
            record(WARM_START, PROFILED_START, figures.warm_ms, 0.0);
            record(WARM_START, DOWNLOAD_FIRST, figures.download_ms, 0.0);
            record(WARM_START, LDB_LOCAL, figures.ldb_local_ms, 0.0);
        }
        if !w.kinds.contains(&PeerWork::Reads) {
            continue;
        }
        stats::settle_disk();
        let (mbps, random) = lazysnap_reads(w)?;
        record(COLD_SEQUENTIAL, LAZYSNAP, mbps, 0.0);
        record(RANDOM, LAZYSNAP, random.p50_us, random.p99_us);
        for peer in &peers {
            stats::settle_disk();
            let (mbps, random) = tools::mount_reads(peer, &s3, w)?;
            record(COLD_SEQUENTIAL, peer.name(), mbps, 0.0);
            record(RANDOM, peer.name(), random.p50_us, random.p99_us);
        }
    }
    let rows = samples
        .into_iter()
        .map(|(work, tool, values, p99s)| {
            let (median, min, max) = spread(&values);
            let p99 = (work == RANDOM).then(|| p99s[median_index(&values)]);
            PeerRow {
                work,
                tool,
                median,
                min,
                max,
                p99_us: p99,
            }
        })
        .collect();
    Ok(PeerFigures {
        network,
        added_rtt_ms: added_rtt.as_millis() as u64,
        rows,
        skipped,
    })
}

/// `lazysnap restore start --wait` on a fresh node: the time from the request to the job's end.
pub(crate) fn restore(w: &Work, volume: (&str, &str)) -> anyhow::Result<Duration> {
    let dest = tempfile::Builder::new().prefix("restored-").tempdir_in(w.work)?;
    restore_into(w, volume, dest.path())
}

/// As [`restore`], into `dest` (an empty folder), which keeps the files.
pub(crate) fn restore_into(w: &Work, (volume, manifest): (&str, &str), dest: &Path) -> anyhow::Result<Duration> {
    use lazysnap::catalog::Selector;
    use lazysnap::control::records::{JobState, RestoreJobStatus};
    use lazysnap::control::{Request, RestoreStartRequest, RestoreStatusRequest};
    let node = BenchNode::start(w.target, w.work, w.daemon_args)?;
    let request = Request::RestoreStart(RestoreStartRequest {
        store: w.target.url.clone(),
        volume: Some(volume.to_owned()),
        selector: Selector::Manifest(manifest.to_owned()),
        dest: dest.display().to_string(),
        bandwidth: None,
        in_place: false,
        scylla: None,
    });
    let started = Instant::now();
    let mut status: RestoreJobStatus = daemon::call_as(&node.paths, &request)?;
    let id = status.job.id.clone();
    while !status.job.state.is_final() {
        let wait = Request::RestoreStatus(RestoreStatusRequest {
            id: id.clone(),
            wait_ms: Some(1000),
        });
        status = daemon::call_as(&node.paths, &wait)?;
    }
    let took = started.elapsed();
    anyhow::ensure!(
        status.job.state == JobState::Completed,
        "restore {id} ended {:?}: {}",
        status.job.state,
        status.job.error.as_deref().unwrap_or("no error recorded")
    );
    Ok(took)
}

/// A cold sequential read of the big file and cold random reads, each through a fresh mount.
fn lazysnap_reads(w: &Work) -> anyhow::Result<(f64, Latencies)> {
    let node = BenchNode::start(w.target, w.work, w.daemon_args)?;
    let (mounted, _) = node.mount(w.big.0, Some(w.big.1))?;
    let (n, took) = super::reads::sequential(&mounted.volume_dir.join(w.big_file))?;
    anyhow::ensure!(n == w.big_size, "read {n} of {} bytes through lazysnap", w.big_size);
    drop(node);
    let node = BenchNode::start(w.target, w.work, w.daemon_args)?;
    let (mounted, _) = node.mount(w.big.0, Some(w.big.1))?;
    let random = super::reads::random_4k(&mounted.volume_dir.join(w.big_file), w.offsets)?;
    Ok((stats::mbps(n, took), random))
}

/// (median, min, max) of `values`.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let median = values[median_index(values)];
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median, min, max)
}

fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[values.len() / 2]
}

/// lazysnap against its peers, held to the targets of issue 20: a restore at most 0.8x the time
/// of `rclone copy`; a cold sequential read at least 1.0x s3fs and 1.2x Mountpoint on loopback,
/// 1.2x both with added latency.
pub fn checks(p: &PeerFigures) -> Vec<super::report::Check> {
    let median = |work: &str, tool: &str| {
        p.rows
            .iter()
            .find(|r| r.work == work && r.tool == tool)
            .map(|r| r.median)
    };
    let mut checks = Vec::new();
    let store = format!("peers {}", p.network);
    for work in [COPY_ONE, COPY_MANY] {
        if let (Some(ours), Some(theirs)) = (median(work, LAZYSNAP), median(work, RCLONE_COPY)) {
            let ratio = ours / theirs;
            let figure = format!("{} / rclone copy", work.trim_end_matches(" (s)"));
            let detail = format!("{ours:.2} vs {theirs:.2} s");
            checks.push(super::report::check(
                &store,
                &figure,
                ratio,
                detail,
                "<= 0.8",
                ratio <= 0.8,
            ));
        }
    }
    if let (Some(profiled), Some(download)) = (median(WARM_START, PROFILED_START), median(WARM_START, DOWNLOAD_FIRST)) {
        let ratio = profiled / download;
        let cold = median(WARM_START, COLD_START).unwrap_or(0.0);
        let local = median(WARM_START, LDB_LOCAL).unwrap_or(0.0);
        let detail = format!("{profiled:.0} ms ({cold:.0} cold, ldb alone {local:.0}) vs {download:.0} ms");
        let figure = "warm ldb get / download first";
        checks.push(super::report::check(
            &store,
            figure,
            ratio,
            detail,
            "<= 0.05",
            ratio <= 0.05,
        ));
    }
    let loopback = p.added_rtt_ms == 0;
    for (peer, want) in [("s3fs", if loopback { 1.0 } else { 1.2 }), ("mount-s3", 1.2)] {
        if let (Some(ours), Some(theirs)) = (median(COLD_SEQUENTIAL, LAZYSNAP), median(COLD_SEQUENTIAL, peer)) {
            let ratio = ours / theirs;
            let figure = format!("cold sequential / {peer}");
            let detail = format!("{ours:.0} vs {theirs:.0} MB/s");
            checks.push(super::report::check(
                &store,
                &figure,
                ratio,
                detail,
                &format!(">= {want}"),
                ratio >= want,
            ));
        }
    }
    checks
}

/// Every tool's figures of one network condition, medians with their range.
pub fn table(p: &PeerFigures) -> String {
    use std::fmt::Write;
    let mut out = format!("peers, {}:\n", p.network);
    for row in &p.rows {
        let p99 = row.p99_us.map(|v| format!(", p99 {v:.0} us")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<26} {:<24} {:>9.2} ({:.2}-{:.2}){p99}",
            row.work, row.tool, row.median, row.min, row.max
        );
    }
    for skipped in &p.skipped {
        let _ = writeln!(out, "  skipped: {skipped}");
    }
    out
}
