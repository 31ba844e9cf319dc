//! `lazysnap-bench` (also run as `lazysnap bench`): one run measures lazysnap's reads against the fastest raw reads of the same
//! objects from the same store, and prints the ratios (see `report`) beside their targets.
//!
//! Every store gets the same data and the same steps, each on a fresh node (its own home, cache
//! and daemon) so one step's cache cannot flatter the next: raw GETs, a cold then warm sequential
//! read, cold then warm random 4 KiB reads, many concurrent readers under a small memory cap, a
//! hydration, and the same file as a foreign object (a ScyllaDB sstable's Data.db, pinned by ETag).
//! Mount time is measured for growing file counts, at two sizes per file.

mod faults;
mod foreign;
mod hydration;
mod node;
mod peers;
mod raw;
mod reads;
mod rebalance;
mod report;
mod rocksdb;
mod scale;
mod selective;
mod soak;
mod sqlite;
mod stats;
mod targets;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use lazysnap::index::Index;
use lazysnap::names::{RelPath, VolumeId};
use lazysnap::publish::{self, NoProgress, PublishOptions};
use lazysnap::store::layout;

use lazysnap_tools::{block_on, daemon};
use node::BenchNode;
use report::{MountScale, Report, StoreFigures};
use targets::Target;

pub(crate) const BIG_FILE: &str = "big.data";
/// Read at random while the mount hydrates (after `big.data` in hydration order).
const SIDE_FILE: &str = "random.data";
/// Every volume of a run lives in a namespace of its own, removed from an operator's store after.
fn run_namespace() -> String {
    format!("lazysnap-bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[derive(Parser, Debug)]
#[command(
    name = "lazysnap-bench",
    version,
    about = "Measure lazysnap's reads, mounts and restarts against raw GETs and peers; prints ratios beside their targets and writes JSON"
)]
pub struct BenchArgs {
    /// quick: 256 MiB file, mount time up to 10k files (a few minutes on 2 cores); full: 1 GiB, up
    /// to 100k files; scale: one daemon with --mounts mounts of a local directory store (threads,
    /// memory, mount time, reads across a daemon crash and restart); faults: --size (1 GiB) read
    /// through a mount while the local S3 server makes 10%, then 30% of GETs faulty (every kind
    /// mixed), then again once faults stop: failed reads, wrong bytes, faults injected; soak: 64
    /// random and 4 sequential readers over 16 mounts (--size in all, 256 MiB) for --soak-seconds
    /// while mounts hydrate, a restore and GC run and 1% of GETs fail; rebalance: --vbuckets
    /// vbuckets of 4 MiB on the S3-like store mounted as a Fusion plan's guests, until readable
    /// and until every vbucket's first read, against downloading them first (--peer-runs runs);
    /// hydration: only the hydration figures of --stores (--size, 256 MiB), --peer-runs times each.
    #[arg(long, value_enum, default_value_t = Profile::Quick)]
    profile: Profile,
    /// Vbuckets of 4 MiB the rebalance profile mounts as guests (and downloads, to compare).
    #[arg(long, default_value_t = 256)]
    vbuckets: usize,
    /// How long the soak profile keeps its load on.
    #[arg(long, default_value_t = 600)]
    soak_seconds: u64,
    /// Mounts of the scale profile, each a volume of its own at its own path.
    #[arg(long, default_value_t = 4096)]
    mounts: usize,
    /// Stores to run on: file (a local directory), s3 (a local S3 server), s3-emulated (the same
    /// server with ~25 ms to first byte and ~90 MB/s per stream).
    #[arg(long, value_delimiter = ',', default_value = "file,s3,s3-emulated")]
    stores: Vec<String>,
    /// Also run on this store (a real bucket, say); credentials come from the environment.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Size of the file read sequentially and at random [default: by profile].
    #[arg(long, value_parser = lazysnap::units::parse_size)]
    size: Option<u64>,
    /// Random 4 KiB reads per measurement (raw GETs take at most 200 of them).
    #[arg(long, default_value_t = 1000)]
    random_reads: usize,
    /// File counts to measure mount time for [default: by profile].
    #[arg(long, value_delimiter = ',')]
    mount_files: Vec<usize>,
    /// Concurrent readers in the memory measurement.
    #[arg(long, default_value_t = 64)]
    readers: usize,
    /// The daemon's memory cache cap in the memory measurement.
    #[arg(long, default_value = "64M", value_parser = lazysnap::units::parse_size)]
    memory_cap: u64,
    /// Size of each raw ranged GET in the parallel baseline.
    #[arg(long, default_value = "8M", value_parser = lazysnap::units::parse_size)]
    raw_chunk: u64,
    /// Raw ranged GETs in flight in the parallel baseline.
    #[arg(long, default_value_t = 16)]
    raw_parallelism: usize,
    /// Extra flags for every lazysnap-mountd the run starts (repeat), e.g. --daemon-arg=--readahead-max=128M.
    #[arg(long = "daemon-arg", value_name = "FLAG", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Also run the same copies and reads through the peers installed (rclone copy, rclone mount
    /// with its VFS cache off and full, s3fs, mount-s3) against one local S3 server, on loopback
    /// and with --peer-rtt added (through a delaying TCP proxy in the bench, so no `tc` or netem
    /// is needed), and print lazysnap/peer ratios. `--stores ''` runs the peers alone.
    #[arg(long)]
    peers: bool,
    /// Round-trip milliseconds added to the S3 server's traffic for the second pass of --peers
    /// (0: no second pass).
    #[arg(long, value_name = "MS", default_value_t = 10)]
    peer_rtt: u64,
    /// What --peers measures: copy (restore against rclone copy), reads (cold reads through mounts),
    /// warm (with --peer-rtt only): mount to the first RocksDB `ldb get`, with and without a
    /// first-touch profile, against downloading the database first (needs `ldb`).
    #[arg(long, value_delimiter = ',', default_value = "copy,reads,warm")]
    peer_work: Vec<peers::PeerWork>,
    /// Repetitions of each peer measurement, of the rebalance and of the hydration profile
    /// (medians are reported, with the range).
    #[arg(long, default_value_t = 3)]
    peer_runs: usize,
    /// Folder for the data, stores and nodes of the run (removed afterwards) [default: $TMPDIR].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Where to write the figures as JSON.
    #[arg(long, value_name = "FILE", default_value = "lazysnap-bench.json")]
    json: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Profile {
    Quick,
    Full,
    Scale,
    Faults,
    Soak,
    Rebalance,
    Hydration,
}

fn main() -> std::process::ExitCode {
    let args = BenchArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAZYSNAP_LOG")
        .unwrap_or_else(|_| "error,lazysnap=off,s3s=off".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazysnap-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: BenchArgs) -> anyhow::Result<()> {
    let work_root = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_root).with_context(|| format!("cannot create {}", work_root.display()))?;
    let work = tempfile::Builder::new()
        .prefix("lazysnap-bench-")
        .tempdir_in(&work_root)?;
    // Dropped before `work`: nothing may stay mounted in a folder about to be deleted.
    let _leftovers = Leftovers(work.path().to_path_buf());
    if args.profile == Profile::Scale {
        anyhow::ensure!(args.mounts > 0, "--mounts must be at least 1");
        let target = Target::builtin("file", work.path())?;
        let figures = scale::measure(&target, work.path(), &args.daemon_args, args.mounts)?;
        return finish(&args, &Report::node_scale(figures));
    }
    if args.profile == Profile::Rebalance {
        let target = Target::builtin("s3-emulated", work.path())?;
        let figures = rebalance::measure(
            &target,
            work.path(),
            &args.daemon_args,
            &run_namespace(),
            args.vbuckets,
            args.peer_runs,
        )?;
        return finish(&args, &Report::rebalance(figures));
    }
    let size = args.size.unwrap_or(match args.profile {
        Profile::Quick | Profile::Scale | Profile::Rebalance | Profile::Hydration => 256 << 20,
        Profile::Full | Profile::Faults => 1 << 30,
        Profile::Soak => 256 << 20,
    });
    if args.profile == Profile::Soak {
        let target = Target::builtin("s3", work.path())?;
        let run = std::time::Duration::from_secs(args.soak_seconds.max(1));
        let figures = soak::measure(&target, work.path(), &args.daemon_args, &run_namespace(), size, run)?;
        return finish(&args, &Report::soak(figures));
    }
    if args.profile == Profile::Faults {
        let target = Target::builtin("s3", work.path())?;
        let data = work.path().join("data");
        say(&format!("writing {} MiB of test data", size >> 20));
        write_random_file(&data.join(BIG_FILE), size)?;
        let volume = format!("{}/faults", run_namespace());
        publish_dir(&target, &data, &volume)?;
        let passes = faults::measure(
            &target,
            work.path(),
            &args.daemon_args,
            &volume,
            BIG_FILE,
            &data.join(BIG_FILE),
        )?;
        return finish(&args, &Report::faults(size, passes));
    }
    if args.profile == Profile::Hydration {
        return bench_hydration(&args, work.path(), size);
    }
    let mount_files = match (args.mount_files.is_empty(), args.profile) {
        (false, _) => args.mount_files.clone(),
        (
            true,
            Profile::Quick | Profile::Scale | Profile::Faults | Profile::Soak | Profile::Rebalance | Profile::Hydration,
        ) => {
            vec![1_000, 10_000]
        }
        (true, Profile::Full) => vec![1_000, 10_000, 100_000],
    };
    let data = work.path().join("data");
    warn_if_memory_goes_back_to_the_host();
    say(&format!("writing {} MiB of test data", size >> 20));
    write_random_file(&data.join(BIG_FILE), size)?;
    write_random_file(&data.join(SIDE_FILE), side_size(size))?;

    let namespace = run_namespace();
    let mut targets = Vec::new();
    for name in args.stores.iter().filter(|n| !n.is_empty()) {
        targets.push(Target::builtin(name, work.path())?);
    }
    if let Some(url) = &args.store {
        targets.push(Target::external(url, &namespace));
    }
    let mut stores = Vec::new();
    for target in &targets {
        stores.push(bench_store(&args, target, work.path(), &data, size, &namespace)?);
    }
    let scale = match targets.first() {
        Some(target) => mount_scale(target, work.path(), &mount_files, &namespace)?,
        None => Vec::new(),
    };
    let peers = match args.peers {
        true => bench_peers(&args, work.path(), &data, size, &namespace)?,
        false => Vec::new(),
    };
    anyhow::ensure!(
        !stores.is_empty() || !peers.is_empty(),
        "nothing to run: name --stores or --peers"
    );

    let mut report = Report::new(format!("{:?}", args.profile).to_lowercase(), size, stores, scale);
    report.add_peers(peers);
    finish(&args, &report)
}

/// `--profile hydration`: the hydration figures alone, `--peer-runs` times per store.
fn bench_hydration(args: &BenchArgs, work: &Path, size: u64) -> anyhow::Result<()> {
    let data = work.join("data");
    warn_if_memory_goes_back_to_the_host();
    write_random_file(&data.join(BIG_FILE), size)?;
    write_random_file(&data.join(SIDE_FILE), side_size(size))?;
    let volume = format!("{}/seq", run_namespace());
    let mut figures = Vec::new();
    for name in args.stores.iter().filter(|n| !n.is_empty()) {
        let target = Target::builtin(name, work)?;
        let manifest = publish_dir(&target, &data, &volume)?;
        let setup = hydration::Setup {
            work,
            daemon_args: &args.daemon_args,
            volume: &volume,
            manifest: &manifest,
            big_file: BIG_FILE,
            side_file: SIDE_FILE,
            size,
            side_size: side_size(size),
            raw_chunk: args.raw_chunk,
            raw_parallelism: args.raw_parallelism,
            runs: args.peer_runs,
        };
        figures.push(hydration::measure(&target, &setup)?);
    }
    finish(args, &Report::hydration(size, figures))
}

/// Prints the checks and writes every figure as JSON.
fn finish(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    print!("{}", report.table());
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(&args.json, json + "\n").with_context(|| format!("cannot write {}", args.json.display()))?;
    say(&format!("figures written to {}", args.json.display()));
    Ok(())
}

/// Where a VM's kernel says which freed memory blocks it hands back to the host.
const PAGE_REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

/// On a VM with free page reporting, memory freed and written again costs host page faults
/// (measured: 1 GiB into the page cache in 4.3 s instead of 0.33 s), so figures that write a GiB
/// swing with when memory was last freed. Says so; changing the machine is the operator's call.
fn warn_if_memory_goes_back_to_the_host() {
    let Ok(order) = std::fs::read_to_string(PAGE_REPORTING_ORDER) else {
        return;
    };
    // Orders above the largest (10 on x86-64) are never reported.
    if order.trim().parse::<u32>().is_ok_and(|o| o <= 10) {
        say(&format!(
            "warning: this VM hands freed memory back to its host (page_reporting_order {}); \
             writes into such memory cost host page faults and make restore and hydration figures \
             swing 2-3x; `echo 11 > {PAGE_REPORTING_ORDER}` turns it off",
            order.trim()
        ));
    }
}

fn say(message: &str) {
    eprintln!("lazysnap bench: {message}");
}

fn bench_store(
    args: &BenchArgs,
    target: &Target,
    work: &Path,
    data: &Path,
    size: u64,
    namespace: &str,
) -> anyhow::Result<StoreFigures> {
    let store = target.open()?;
    say(&format!("{}: publishing", target.name));
    let seq_volume = format!("{namespace}/seq");
    let published = publish_dir(target, data, &seq_volume)?;
    let volume = VolumeId::parse(&seq_volume)?;
    let key = layout::file_key(&volume, &RelPath::parse(BIG_FILE)?);

    say(&format!("{}: raw GETs", target.name));
    stats::settle_disk();
    let raw = block_on(raw::measure(
        &store,
        &key,
        size,
        args.raw_chunk,
        args.raw_parallelism,
        args.random_reads.min(200),
        work,
    ))?;

    say(&format!("{}: sequential reads", target.name));
    stats::settle_disk();
    let node = BenchNode::start(target, work, &args.daemon_args)?;
    let (mounted, mount_time) = node.mount(&seq_volume, Some(&published))?;
    let file = mounted.volume_dir.join(BIG_FILE);
    let cpu_before = node.daemon_cpu()?;
    let machine = stats::MachineCpu::now();
    let (n, cold) = reads::sequential(&file)?;
    let cold_machine_cores = machine.busy_cores_since();
    anyhow::ensure!(n == size, "read {n} bytes of {size} through the mount");
    let cold_cpu = node.daemon_cpu()?.saturating_sub(cpu_before);
    let fetched_sequential = node.bytes_fetched()?;
    let warm = reads::sequential_median(&file)?;
    node.unmount(&mounted)?;
    let (mounted, _) = node.mount(&seq_volume, Some(&published))?;
    let (_, block_cache) = reads::sequential(&mounted.volume_dir.join(BIG_FILE))?;
    node.unmount(&mounted)?;
    drop(node);
    let local = reads::sequential_median(&data.join(BIG_FILE))?;

    say(&format!("{}: random reads", target.name));
    let offsets = stats::random_offsets(size, 4096, args.random_reads, stats::OFFSETS_SEED);
    let node = BenchNode::start(target, work, &args.daemon_args)?;
    let (mounted, _) = node.mount(&seq_volume, Some(&published))?;
    let file = mounted.volume_dir.join(BIG_FILE);
    let random_cold = reads::random_4k(&file, &offsets)?;
    let fetched_random = node.bytes_fetched()?;
    let random_warm = reads::random_4k(&file, &offsets)?;
    let refetched = node.bytes_fetched()? - fetched_random;
    drop(node);

    say(&format!("{}: engine-shaped selective reads", target.name));
    let selective = selective::measure(
        &selective::Setting {
            target,
            work,
            daemon_args: &args.daemon_args,
            namespace,
        },
        data,
        (&seq_volume, &published),
        size,
    )?;

    say(&format!("{}: {} concurrent readers", target.name, args.readers));
    let mut daemon_args = args.daemon_args.clone();
    daemon_args.push(format!("--cache-memory={}", args.memory_cap));
    let node = BenchNode::start(target, work, &daemon_args)?;
    let (mounted, _) = node.mount(&seq_volume, Some(&published))?;
    let (n, concurrent) = reads::concurrent(&mounted.volume_dir.join(BIG_FILE), size, args.readers)?;
    anyhow::ensure!(n == size, "{} readers read {n} bytes of {size}", args.readers);
    let peak_rss = node.daemon_peak_rss()?;
    drop(node);

    say(&format!("{}: hydration", target.name));
    let side_offsets = stats::random_offsets(side_size(size), 4096, args.random_reads, 0x51de_4a11);
    // Idle demand latency, then on a node of its own a hydration with nothing else going on (no
    // read just before either: hydration holds back for 50 ms after one): its rate.
    let node = BenchNode::start(target, work, &args.daemon_args)?;
    let (mounted, _) = node.mount(&seq_volume, Some(&published))?;
    let demand_idle = reads::random_4k(&mounted.volume_dir.join(SIDE_FILE), &side_offsets)?;
    drop(node);
    stats::settle_disk();
    let node = BenchNode::start(target, work, &args.daemon_args)?;
    let (mounted, _) = node.mount(&seq_volume, Some(&published))?;
    let machine = stats::MachineCpu::now();
    node.hydrate(&mounted, true)?;
    let hydration = node.hydration_end(&mounted)?;
    let hydration_machine_cores = machine.busy_cores_since();
    drop(node);
    // The same demand reads while a hydration runs.
    stats::settle_disk();
    let node = BenchNode::start(target, work, &args.daemon_args)?;
    let (mounted, _) = node.mount(&seq_volume, Some(&published))?;
    node.hydrate(&mounted, true)?;
    let demand_hydrating = reads::random_4k_while(&mounted.volume_dir.join(SIDE_FILE), &side_offsets, || {
        node.hydrate(&mounted, false).is_ok_and(|s| s["state"] == "RUNNING")
    })?;
    node.hydration_end(&mounted)?;
    drop(node);

    say(&format!("{}: a foreign object (ScyllaDB Data.db)", target.name));
    stats::settle_disk();
    let foreign = foreign::measure(
        target,
        work,
        &args.daemon_args,
        &data.join(BIG_FILE),
        (&seq_volume, &published),
        namespace,
    )?;

    Ok(StoreFigures {
        store: target.name.clone(),
        raw,
        mount_ms: mount_time.as_secs_f64() * 1e3,
        cold_sequential_mbps: stats::mbps(size, cold),
        cold_sequential_daemon_cpu_share: cold_cpu.as_secs_f64() / cold.as_secs_f64(),
        cold_sequential_machine_cores: cold_machine_cores,
        hydration_machine_cores,
        warm_sequential_mbps: stats::mbps(size, warm),
        block_cache_sequential_mbps: stats::mbps(size, block_cache),
        local_file_mbps: stats::mbps(size, local),
        random_cold,
        random_warm,
        amplification_sequential: fetched_sequential as f64 / size as f64,
        amplification_random: fetched_random as f64 / (offsets.len() as f64 * 4096.0),
        refetched_bytes_warm: refetched,
        concurrent_readers: args.readers,
        concurrent_mbps: stats::mbps(size, concurrent),
        peak_rss_bytes: peak_rss,
        memory_cap_bytes: args.memory_cap,
        hydration_mbps: hydration["rate"].as_f64().unwrap_or(0.0) / 1e6,
        hydration_bytes: hydration["bytesFetched"].as_u64().unwrap_or(0),
        demand_idle,
        demand_hydrating,
        selective,
        foreign,
    })
}

/// Files in the folder the peers copy (their sizes add up to the big file's).
const MANY_FILES: usize = 100;

/// The copies and reads of `--peers` on a local S3 server, on loopback and with added latency.
fn bench_peers(
    args: &BenchArgs,
    work: &Path,
    data: &Path,
    size: u64,
    namespace: &str,
) -> anyhow::Result<Vec<peers::PeerFigures>> {
    let target = Target::builtin("s3", work)?;
    say("peers: publishing");
    let big_volume = format!("{namespace}/peer-big");
    let big_data = work.join("peer-big");
    std::fs::create_dir_all(&big_data)?;
    std::fs::hard_link(data.join(BIG_FILE), big_data.join(BIG_FILE))?;
    let big_manifest = publish_dir(&target, &big_data, &big_volume)?;
    let many_volume = format!("{namespace}/peer-many");
    let many_data = work.join("peer-many");
    let each = size / MANY_FILES as u64;
    write_many_files_sized(&many_data, MANY_FILES, each)?;
    let many_manifest = publish_dir(&target, &many_data, &many_volume)?;
    std::fs::remove_dir_all(&many_data)?;
    let (mut database, mut db_names) = (None, None);
    let warm = args.peer_work.contains(&peers::PeerWork::Warm) && args.peer_rtt > 0;
    let ldb = peers::on_path("ldb");
    if warm && !ldb {
        say("peers: ldb is not on PATH (apt-get install rocksdb-tools): no warm-start figure");
    }
    if warm && ldb {
        say("peers: a RocksDB database for the warm start");
        let dir = work.join("warm-db");
        let (key, value) = rocksdb::create(&dir, size / 2)?.picked();
        let volume = format!("{namespace}/warm-db");
        let manifest = publish_dir(&target, &dir, &volume)?;
        std::fs::remove_dir_all(&dir)?;
        db_names = Some((volume, manifest, key, value));
    }
    if let Some((volume, manifest, key, value)) = &db_names {
        database = Some(peers::warm::Database {
            volume,
            manifest,
            key,
            value,
        });
    }
    // Every tool reads the same places; few enough reads for a slow peer at +10 ms.
    let offsets = stats::random_offsets(size, 4096, args.random_reads.min(200), stats::OFFSETS_SEED);
    let w = peers::Work {
        target: &target,
        work,
        daemon_args: &args.daemon_args,
        big: (&big_volume, &big_manifest),
        many: (&many_volume, &many_manifest),
        big_file: BIG_FILE,
        big_size: size,
        many_size: each * MANY_FILES as u64,
        offsets: &offsets,
        runs: args.peer_runs.max(1),
        kinds: &args.peer_work,
        database: database.as_ref(),
    };
    let mut figures = vec![peers::measure(&w, std::time::Duration::ZERO)?];
    if args.peer_rtt > 0 {
        figures.push(peers::measure(&w, std::time::Duration::from_millis(args.peer_rtt))?);
    }
    Ok(figures)
}

/// `files` random files of `file_bytes` each, in one folder.
fn write_many_files_sized(dir: &Path, files: usize, file_bytes: u64) -> anyhow::Result<()> {
    for i in 0..files {
        write_random_file(&dir.join(format!("part-{i:03}.sst")), file_bytes)?;
    }
    Ok(())
}

/// Mount time by file count, at 1 KiB and 10 KiB per file: it should grow with files, not bytes.
fn mount_scale(target: &Target, work: &Path, counts: &[usize], namespace: &str) -> anyhow::Result<Vec<MountScale>> {
    let node = BenchNode::start(target, work, &[])?;
    let mut rows = Vec::new();
    for &files in counts {
        for file_bytes in [1024u64, 10 * 1024] {
            say(&format!("mount time: {files} files of {file_bytes} bytes"));
            let dir = work.join(format!("scale-{files}-{file_bytes}"));
            write_many_files(&dir, files, file_bytes)?;
            let volume = format!("{namespace}/scale-{files}-{file_bytes}");
            let manifest = publish_dir(target, &dir, &volume)?;
            std::fs::remove_dir_all(&dir)?;
            // The first mount on a node reads the manifest from the store into the index; later
            // mounts read only the index.
            let (mounted, first) = node.mount(&volume, Some(&manifest))?;
            node.unmount(&mounted)?;
            let (mounted, again) = node.mount(&volume, Some(&manifest))?;
            node.unmount(&mounted)?;
            rows.push(MountScale {
                files,
                file_bytes,
                first_mount_ms: first.as_secs_f64() * 1e3,
                mount_ms: again.as_secs_f64() * 1e3,
            });
        }
    }
    Ok(rows)
}

/// Publishes `dir` as the next manifest of `volume`; its name.
/// Detaches, when dropped, every FUSE mount still below a folder: a run that failed half-way (a
/// daemon that did not come back) leaves its mounts behind, which nothing else would remove.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            let (Some(_), Some(point), Some(kind)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let point = Path::new(point);
            if kind.starts_with("fuse") && point.starts_with(&self.0) {
                if let Err(e) = lazysnap::fuse::detach_path(point) {
                    eprintln!("lazysnap bench: cannot detach {}: {e}", point.display());
                }
            }
        }
    }
}

fn publish_dir(target: &Target, dir: &Path, volume: &str) -> anyhow::Result<String> {
    publish_dir_with(target, dir, volume, &PublishOptions::default())
}

fn publish_dir_with(target: &Target, dir: &Path, volume: &str, options: &PublishOptions) -> anyhow::Result<String> {
    let store = target.open()?;
    let index = Index::open_in_memory()?;
    let volume = VolumeId::parse(volume)?;
    let report = block_on(publish::publish(&store, &index, dir, &volume, options, &NoProgress))?;
    Ok(report.log_manifest_name)
}

fn side_size(size: u64) -> u64 {
    (size / 4).max(4 << 20)
}

fn write_random_file(path: &Path, size: u64) -> anyhow::Result<()> {
    write_seeded_file(path, size, 0x9e37_79b9_7f4a_7c15)
}

/// Random bytes of their own per seed: files a reader must not confuse.
fn write_seeded_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut buf, mut state, mut left) = (vec![0u8; 1 << 20], seed | 1, size);
    while left > 0 {
        let n = buf.len().min(left as usize);
        stats::fill_random(&mut buf[..n], &mut state);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// `files` files of `file_bytes` each, 1000 to a folder, as engines spread many files.
fn write_many_files(dir: &Path, files: usize, file_bytes: u64) -> anyhow::Result<()> {
    let mut buf = vec![0u8; file_bytes as usize];
    let mut state = files as u64 ^ file_bytes;
    for i in 0..files {
        let sub = dir.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        stats::fill_random(&mut buf, &mut state);
        std::fs::write(sub.join(format!("f{i:07}.sst")), &buf)?;
    }
    Ok(())
}
