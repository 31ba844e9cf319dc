//! The benchmark's figures, the ratios computed from them and the targets they are held to.

use std::fmt::Write;

use serde::Serialize;

use super::foreign::ForeignFigures;
use super::raw::RawFigures;
use super::stats::Latencies;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreFigures {
    pub store: String,
    pub raw: RawFigures,
    /// Mount of a fresh node, manifest read from the store.
    pub mount_ms: f64,
    pub cold_sequential_mbps: f64,
    /// The daemon's CPU time during the cold read / its duration (2.0 = two cores busy).
    pub cold_sequential_daemon_cpu_share: f64,
    /// Cores of the whole machine busy during the cold read and during the idle hydration.
    pub cold_sequential_machine_cores: f64,
    pub hydration_machine_cores: f64,
    /// The same file again through the same mount (the kernel's page cache may serve it).
    pub warm_sequential_mbps: f64,
    /// The same file through a new mount on the same node: served by lazysnap's block cache.
    pub block_cache_sequential_mbps: f64,
    /// The source file on local disk, just written (page cache).
    pub local_file_mbps: f64,
    pub random_cold: Latencies,
    pub random_warm: Latencies,
    /// Bytes fetched from the store / bytes read.
    pub amplification_sequential: f64,
    pub amplification_random: f64,
    /// Bytes fetched again while re-reading what was already read (should be none).
    pub refetched_bytes_warm: u64,
    pub concurrent_readers: usize,
    pub concurrent_mbps: f64,
    /// The daemon's peak resident memory during the concurrent read.
    pub peak_rss_bytes: u64,
    pub memory_cap_bytes: u64,
    /// Whole-mount hydration: bytes fetched per second, and bytes.
    pub hydration_mbps: f64,
    pub hydration_bytes: u64,
    /// Cold random 4 KiB reads of another file, on an idle mount and while it hydrates.
    pub demand_idle: Latencies,
    pub demand_hydrating: Latencies,
    /// Engine-shaped selective reads: what went through FUSE and what was fetched for it.
    pub selective: SelectiveFigures,
    /// The big file read as a ScyllaDB sstable's Data.db through a view.
    pub foreign: ForeignFigures,
}

/// Bytes read through FUSE (the kernel's own readahead included) and fetched from the store by
/// 16 column chunks of 1 MiB read in 128 KiB reads, by 200 point lookups (16 KiB + 4 KiB,
/// `POSIX_FADV_RANDOM`), and by SQLite's own lookups of keys, each on a fresh node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectiveFigures {
    pub column_chunks_read: u64,
    pub column_chunks_fetched: u64,
    pub point_lookups_read: u64,
    pub point_lookups_fetched: u64,
    /// The same lookups on the file published with this finer block size ...
    pub fine_block_size: u64,
    pub fine_point_lookups_read: u64,
    pub fine_point_lookups_fetched: u64,
    /// ... and a cold sequential read of it, set against the default block size's.
    pub fine_cold_sequential_mbps: f64,
    /// The engines themselves looking up this many keys each: SQLite in a database published
    /// with a block per page, and RocksDB (`ldb query`, when installed) at the finer block size.
    pub engine_lookups: usize,
    pub sqlite_block_size: u64,
    pub sqlite_lookups_read: u64,
    pub sqlite_lookups_fetched: u64,
    pub rocksdb_lookups_read: Option<u64>,
    pub rocksdb_lookups_fetched: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountScale {
    pub files: usize,
    pub file_bytes: u64,
    /// First mount on the node: reads the manifest from the store into the index.
    pub first_mount_ms: f64,
    /// A later mount: reads only the index.
    pub mount_ms: f64,
}

/// One figure held to a target.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub store: String,
    pub figure: String,
    pub value: f64,
    pub detail: String,
    pub target: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub profile: String,
    pub file_bytes: u64,
    pub cpus: usize,
    pub stores: Vec<StoreFigures>,
    pub mount_scale: Vec<MountScale>,
    /// One daemon with thousands of mounts (`--profile scale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_scale: Option<super::scale::ScaleFigures>,
    /// `--profile rebalance`: a plan's guests mounted lazily against downloading them first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<super::rebalance::RebalanceFigures>,
    /// `--profile soak`: one daemon under every kind of load at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<super::soak::SoakFigures>,
    /// `--profile faults`: reads through a store whose GETs fail, per share of faulty GETs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<super::faults::FaultPass>,
    /// `--profile hydration`: hydration against raw GETs, several runs per store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hydration: Vec<super::hydration::HydrationFigures>,
    /// `--peers`: the same work through other tools, per network condition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<super::peers::PeerFigures>,
    pub checks: Vec<Check>,
}

/// Memory the daemon may use beyond its cache cap (threads, buffers in flight, index).
const RSS_ALLOWANCE: u64 = 64 << 20;

impl Report {
    pub fn new(profile: String, file_bytes: u64, stores: Vec<StoreFigures>, mount_scale: Vec<MountScale>) -> Report {
        let mut checks: Vec<Check> = stores.iter().flat_map(store_checks).collect();
        checks.extend(scale_checks(&mount_scale));
        Report {
            profile,
            file_bytes,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stores,
            mount_scale,
            node_scale: None,
            rebalance: None,
            soak: None,
            faults: Vec::new(),
            hydration: Vec::new(),
            peers: Vec::new(),
            checks,
        }
    }

    /// The report of `--profile rebalance`.
    pub fn rebalance(figures: super::rebalance::RebalanceFigures) -> Report {
        let mut report = Report::new("rebalance".into(), figures.bytes, Vec::new(), Vec::new());
        report.checks = super::rebalance::checks(&figures);
        report.rebalance = Some(figures);
        report
    }

    /// The report of `--profile soak`.
    pub fn soak(figures: super::soak::SoakFigures) -> Report {
        let mut report = Report::new("soak".into(), figures.bytes, Vec::new(), Vec::new());
        report.checks = super::soak::checks(&figures);
        report.soak = Some(figures);
        report
    }

    /// The report of `--profile hydration`.
    pub fn hydration(file_bytes: u64, figures: Vec<super::hydration::HydrationFigures>) -> Report {
        let mut report = Report::new("hydration".into(), file_bytes, Vec::new(), Vec::new());
        report.checks = super::hydration::checks(&figures);
        report.hydration = figures;
        report
    }

    /// The report of `--profile faults`.
    pub fn faults(file_bytes: u64, passes: Vec<super::faults::FaultPass>) -> Report {
        let mut report = Report::new("faults".into(), file_bytes, Vec::new(), Vec::new());
        report.checks = super::faults::checks(&passes);
        report.faults = passes;
        report
    }

    /// The report of `--profile scale`: one daemon, thousands of mounts.
    pub fn node_scale(figures: super::scale::ScaleFigures) -> Report {
        Report {
            profile: "scale".into(),
            file_bytes: 0,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stores: Vec::new(),
            mount_scale: Vec::new(),
            checks: super::scale::checks(&figures),
            peers: Vec::new(),
            faults: Vec::new(),
            hydration: Vec::new(),
            soak: None,
            rebalance: None,
            node_scale: Some(figures),
        }
    }

    /// Adds the peers' figures and the checks of lazysnap against them.
    pub fn add_peers(&mut self, peers: Vec<super::peers::PeerFigures>) {
        self.checks.extend(peers.iter().flat_map(super::peers::checks));
        self.peers = peers;
    }

    /// The checks as an aligned text table, then the raw figures per store.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:<44} {:>9}  {:<38} {:<10} met",
            "store", "figure", "value", "measured", "target"
        );
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<12} {:<44} {:>9.3}  {:<38} {:<10} {}",
                c.store,
                c.figure,
                c.value,
                c.detail,
                c.target,
                if c.met { "yes" } else { "NO" }
            );
        }
        out.push('\n');
        for s in &self.stores {
            let _ = writeln!(
                out,
                "{}: raw GET {:.0} MB/s single, {:.0} MB/s parallel; mount {:.0} ms; reads cold {:.0} (daemon busy \
                 {:.2} cores, machine {:.2} of {}), warm {:.0}, block cache {:.0}, local {:.0} MB/s; {} readers {:.0} \
                 MB/s; hydration machine {:.2} cores",
                s.store,
                s.raw.single_get_mbps,
                s.raw.parallel_get_mbps,
                s.mount_ms,
                s.cold_sequential_mbps,
                s.cold_sequential_daemon_cpu_share,
                s.cold_sequential_machine_cores,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                s.warm_sequential_mbps,
                s.block_cache_sequential_mbps,
                s.local_file_mbps,
                s.concurrent_readers,
                s.concurrent_mbps,
                s.hydration_machine_cores,
            );
        }
        for p in &self.peers {
            out.push_str(&super::peers::table(p));
        }
        if !self.faults.is_empty() {
            out.push_str(&super::faults::table(&self.faults));
        }
        if let Some(soak) = &self.soak {
            out.push_str(&super::soak::table(soak));
        }
        for m in &self.mount_scale {
            let _ = writeln!(
                out,
                "mount {:>7} files x {:>6} B: first {:.0} ms, from the index {:.0} ms",
                m.files, m.file_bytes, m.first_mount_ms, m.mount_ms
            );
        }
        out
    }
}

pub(super) fn check(store: &str, figure: &str, value: f64, detail: String, target: &str, met: bool) -> Check {
    Check {
        store: store.into(),
        figure: figure.into(),
        value,
        detail,
        target: target.into(),
        met,
    }
}

fn store_checks(s: &StoreFigures) -> Vec<Check> {
    let mut checks = selective_checks(s);
    let name = s.store.as_str();
    let cold = s.cold_sequential_mbps / s.raw.best_mbps();
    let warm = s.warm_sequential_mbps / s.local_file_mbps;
    let random = s.random_cold.p50_us / s.raw.get_4k.p50_us;
    let rss = s.peak_rss_bytes as f64 / (s.memory_cap_bytes + RSS_ALLOWANCE) as f64;
    let hydration = s.hydration_mbps / s.raw.parallel_get_mbps;
    let demand = s.demand_hydrating.p99_us / s.demand_idle.p99_us;
    let foreign_cold = s.foreign.cold_sequential_mbps / s.foreign.published_cold_mbps;
    let foreign_restart = s.foreign.restart_sequential_mbps / s.foreign.published_restart_mbps;
    // A 4 KiB read fetches at most its block (256 KiB by default).
    let max_amplification = 256.0 * 1024.0 / 4096.0;
    checks.extend([
        check(
            name,
            "cold sequential / best raw GET",
            cold,
            format!("{:.0} vs {:.0} MB/s", s.cold_sequential_mbps, s.raw.best_mbps()),
            ">= 1.0",
            cold >= 1.0,
        ),
        check(
            name,
            "warm re-read / local file",
            warm,
            format!("{:.0} vs {:.0} MB/s", s.warm_sequential_mbps, s.local_file_mbps),
            ">= 0.8",
            warm >= 0.8,
        ),
        check(
            name,
            "cold random 4K p50 / raw 4K GET p50",
            random,
            format!("{:.0} vs {:.0} us", s.random_cold.p50_us, s.raw.get_4k.p50_us),
            "<= 1.2",
            random <= 1.2,
        ),
        check(
            name,
            "warm random 4K p50 (us)",
            s.random_warm.p50_us,
            format!("p99 {:.0} us", s.random_warm.p99_us),
            "<= 50",
            s.random_warm.p50_us <= 50.0,
        ),
        check(
            name,
            "read amplification, random 4K",
            s.amplification_random,
            format!("refetched {} B when warm", s.refetched_bytes_warm),
            "<= 64, 0 B",
            s.amplification_random <= max_amplification && s.refetched_bytes_warm == 0,
        ),
        check(
            name,
            "read amplification, sequential",
            s.amplification_sequential,
            String::new(),
            "<= 1.05",
            s.amplification_sequential <= 1.05,
        ),
        check(
            name,
            &format!("peak RSS, {} readers / (cap + 64 MiB)", s.concurrent_readers),
            rss,
            format!("{} vs {} MiB cap", s.peak_rss_bytes >> 20, s.memory_cap_bytes >> 20),
            "<= 1.0",
            rss <= 1.0,
        ),
        check(
            name,
            "hydration / raw parallel GET",
            hydration,
            format!(
                "{:.0} vs {:.0} MB/s; GET into a file {:.0} MB/s",
                s.hydration_mbps, s.raw.parallel_get_mbps, s.raw.parallel_get_into_file_mbps
            ),
            ">= 0.9",
            hydration >= 0.9,
        ),
        check(
            name,
            "demand 4K p99 while hydrating / idle",
            demand,
            format!(
                "{:.0} vs {:.0} us ({} reads)",
                s.demand_hydrating.p99_us, s.demand_idle.p99_us, s.demand_hydrating.samples
            ),
            "<= 2.0",
            demand <= 2.0,
        ),
        check(
            name,
            "foreign cold sequential / published cold",
            foreign_cold,
            format!(
                "{:.0} vs {:.0} MB/s, amplification {:.2}",
                s.foreign.cold_sequential_mbps, s.foreign.published_cold_mbps, s.foreign.amplification
            ),
            ">= 0.9",
            foreign_cold >= 0.9 && s.foreign.amplification <= 1.05,
        ),
        check(
            name,
            "foreign after restart / published after",
            foreign_restart,
            format!(
                "{:.0} vs {:.0} MB/s, fetched {} B",
                s.foreign.restart_sequential_mbps, s.foreign.published_restart_mbps, s.foreign.restart_fetched_bytes
            ),
            ">= 0.8, 0 B",
            foreign_restart >= 0.8 && s.foreign.restart_fetched_bytes == 0,
        ),
    ]);
    checks
}

/// Engine-shaped reads: bytes fetched against bytes read through FUSE, and the fine grain's cost.
fn selective_checks(s: &StoreFigures) -> Vec<Check> {
    let name = s.store.as_str();
    let sel = &s.selective;
    let chunks = sel.column_chunks_fetched as f64 / sel.column_chunks_read.max(1) as f64;
    let lookups = sel.point_lookups_fetched as f64 / sel.point_lookups_read.max(1) as f64;
    let fine_lookups = sel.fine_point_lookups_fetched as f64 / sel.fine_point_lookups_read.max(1) as f64;
    let fine_cold = sel.fine_cold_sequential_mbps / s.cold_sequential_mbps;
    let sqlite = sel.sqlite_lookups_fetched as f64 / sel.sqlite_lookups_read.max(1) as f64;
    let fine = format!("{} KiB blocks", sel.fine_block_size >> 10);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut checks = vec![
        check(
            name,
            "column chunks: fetched / read through FUSE",
            chunks,
            format!(
                "{:.1} vs {:.1} MiB",
                mib(sel.column_chunks_fetched),
                mib(sel.column_chunks_read)
            ),
            "<= 2.0",
            chunks <= 2.0,
        ),
        check(
            name,
            "point lookups: fetched / read through FUSE",
            lookups,
            format!(
                "{:.1} vs {:.1} MiB",
                mib(sel.point_lookups_fetched),
                mib(sel.point_lookups_read)
            ),
            "<= 2.0",
            lookups <= 2.0,
        ),
        check(
            name,
            &format!("point lookups, {fine}: fetched / read"),
            fine_lookups,
            format!(
                "{:.1} vs {:.1} MiB",
                mib(sel.fine_point_lookups_fetched),
                mib(sel.fine_point_lookups_read)
            ),
            "<= 2.0",
            fine_lookups <= 2.0,
        ),
        check(
            name,
            &format!(
                "SQLite lookups, {} KiB blocks: fetched / read",
                sel.sqlite_block_size >> 10
            ),
            sqlite,
            format!(
                "{:.1} vs {:.1} MiB, {} keys",
                mib(sel.sqlite_lookups_fetched),
                mib(sel.sqlite_lookups_read),
                sel.engine_lookups
            ),
            "<= 2.0",
            sqlite <= 2.0,
        ),
    ];
    if let (Some(read), Some(fetched)) = (sel.rocksdb_lookups_read, sel.rocksdb_lookups_fetched) {
        let ratio = fetched as f64 / read.max(1) as f64;
        checks.push(check(
            name,
            &format!("RocksDB lookups, {fine}: fetched / read"),
            ratio,
            format!(
                "{:.1} vs {:.1} MiB, {} keys",
                mib(fetched),
                mib(read),
                sel.engine_lookups
            ),
            "<= 2.0",
            ratio <= 2.0,
        ));
    }
    checks.push(check(
        name,
        &format!("cold sequential, {fine} / default blocks"),
        fine_cold,
        format!(
            "{:.0} vs {:.0} MB/s",
            sel.fine_cold_sequential_mbps, s.cold_sequential_mbps
        ),
        ">= 0.8",
        fine_cold >= 0.8,
    ));
    checks
}

/// The largest file count must mount in under a second from the index, and 10x the bytes per
/// file must not make it slower (within noise: 1.5x or 50 ms).
fn scale_checks(rows: &[MountScale]) -> Vec<Check> {
    let Some(most) = rows.iter().map(|r| r.files).max() else {
        return Vec::new();
    };
    let at = |bytes| rows.iter().find(|r| r.files == most && r.file_bytes == bytes);
    let (Some(small), Some(large)) = (at(1024), at(10 * 1024)) else {
        return Vec::new();
    };
    let slowest = small.mount_ms.max(large.mount_ms);
    let flat = large.mount_ms / small.mount_ms.max(1e-3);
    vec![
        check(
            "index",
            &format!("mount time, {most} files (ms)"),
            slowest,
            format!("{:.0} ms first mount", small.first_mount_ms.max(large.first_mount_ms)),
            "< 1000",
            slowest < 1000.0,
        ),
        check(
            "index",
            &format!("mount time, {most} files, 10x bytes / 1x"),
            flat,
            format!("{:.0} vs {:.0} ms", large.mount_ms, small.mount_ms),
            "flat",
            flat <= 1.5 || large.mount_ms - small.mount_ms <= 50.0,
        ),
    ]
}
