//! lazysnap-mountd: owns this node's lazysnap FUSE mounts and serves the control API on
//! `<home>/mountd.sock`. `lazysnap mount` starts it on demand; run it by hand (or from systemd) to
//! choose cache sizes and logging.

mod allocator;
mod backups;
mod config;
mod daemon;
mod expiry;
mod fdstore;
mod fusion;
mod guests;
mod holder;
mod hydrations;
mod keeper;
mod logging;
mod metrics;
mod mounts;
mod recover;
mod restores;
mod server;
mod uploaders;
mod warm_starts;

use std::path::PathBuf;

use anyhow::Context;
use lazysnap::fuse::{FuseOptions, Server};
use lazysnap::paths::Paths;
use lazysnap::view::ReadingConfig;

#[derive(clap::Parser, Debug)]
#[command(
    name = "lazysnap-mountd",
    version,
    about = "The lazysnap mount daemon",
    long_about = "The lazysnap mount daemon: owns this node's lazysnap FUSE mounts and background work \
(hydration, uploads, backups, restores) and serves the control API on <home>/mountd.sock.\n\n\
Every option can also be set in a TOML file (--config FILE, else <home>/config.toml, else \
/etc/lazysnap/config.toml), under its long name (cache-memory = \"1G\"), and by an environment \
variable LAZYSNAP_<NAME> (LAZYSNAP_CACHE_MEMORY=1G). Flags beat the environment, which beats the \
file. --print-config shows the result and where each value came from.",
    args_override_self = true
)]
struct Args {
    /// State folder: index, block cache, control socket, log [default: /var/lib/lazysnap for
    /// root, else ~/.local/share/lazysnap]
    #[arg(long, value_name = "DIR", global = true, env = "LAZYSNAP_HOME")]
    home: Option<PathBuf>,
    /// Configuration file [default: <home>/config.toml, else /etc/lazysnap/config.toml, if they
    /// exist].
    #[arg(long, value_name = "FILE", env = "LAZYSNAP_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration, and where each value came from, and exit.
    #[arg(long)]
    print_config: bool,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives
    /// (info,lazysnap::fetch=debug); `lazysnap daemon log-level` changes it while running.
    #[arg(long, value_name = "FILTER", default_value = "info", env = "LAZYSNAP_LOG")]
    log: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off by default.
    #[arg(long, value_name = "ADDR", env = "LAZYSNAP_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Memory for block data (suffixes K, M, G): blocks being fetched (up to half of it, at most
    /// --fetch-request-size x --fetch-concurrency) and verified blocks kept in memory (the rest).
    #[arg(long, env = "LAZYSNAP_CACHE_MEMORY", default_value = "256M", value_parser = parse_size)]
    cache_memory: u64,
    /// Bytes of verified blocks kept on disk under <home>/cache (suffixes K, M, G, T).
    #[arg(long, env = "LAZYSNAP_CACHE_DISK", default_value = "10G", value_parser = parse_size)]
    cache_disk: u64,
    /// Largest ranged GET: runs of missing blocks are fetched in requests up to this size.
    #[arg(long, env = "LAZYSNAP_FETCH_REQUEST_SIZE", default_value = "8M", value_parser = parse_size)]
    fetch_request_size: u64,
    /// Ranged GETs in flight at once, shared by all mounts (reads a process waits for keep a
    /// sixteenth of them, at least one, from readahead and hydration); with --fetch-request-size it
    /// bounds the bytes in flight.
    #[arg(long, env = "LAZYSNAP_FETCH_CONCURRENCY", default_value_t = 16)]
    fetch_concurrency: usize,
    /// Furthest a sequential reader's readahead window grows. The window is what keeps GETs in
    /// flight: at S3's ~25 ms to first byte and ~90 MB/s per stream an 8 MiB GET takes ~100 ms, so
    /// 128 MiB keeps 16 streams busy (measured: 64M -> 128M took cold reads from 354 to 460 MB/s).
    /// A window also fits the memory tier (what --cache-memory leaves beside fetches in flight,
    /// less 2 MiB: 94 MiB by default), so a reader finds what was fetched for it still in memory.
    #[arg(long, env = "LAZYSNAP_READAHEAD_MAX", default_value = "128M", value_parser = parse_size)]
    readahead_max: u64,
    /// How far ahead the kernel reads a file read in sequence through a mount (4K to 16M; set
    /// as each new mount's read_ahead_kb). Measured on a 2-core machine: cold sequential reads on
    /// loopback S3 860 MB/s at 128K, 971 at 512K, 1145 at 1M; but the kernel reads ahead of
    /// engines too (pread without POSIX_FADV_RANDOM, mmap faults): at 512K column-chunk reads
    /// fetched half as much again and a RocksDB warm start took 53 ms instead of ~40, and at 1M
    /// S3-like sequential reads fell from ~400 to ~290 MB/s. Raise it for mounts read by scans.
    #[arg(long, env = "LAZYSNAP_KERNEL_READAHEAD", default_value = "128K", value_parser = parse_kernel_readahead)]
    kernel_readahead: u32,
    /// A GET that sends nothing for this long (no answer yet, or no bytes in the middle of its
    /// body) is abandoned and sent again, up to 4 GETs within 30 s per read: a stuck connection
    /// costs a read seconds, not the whole deadline.
    #[arg(long, env = "LAZYSNAP_STALL_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    stall_timeout: std::time::Duration,
    /// Serve every read through the daemon, never letting the kernel read a fully cached file
    /// straight from the disk cache (FUSE passthrough, used by default where the kernel has it).
    #[arg(long, env = "LAZYSNAP_NO_PASSTHROUGH")]
    no_passthrough: bool,
    /// Most mounts served at once; a mount request beyond it is refused with this limit named.
    #[arg(long, env = "LAZYSNAP_MAX_MOUNTS", default_value_t = 10_000)]
    max_mounts: usize,
    /// Files shown by all mounts together (each costs a few hundred bytes of memory while
    /// mounted); a mount beyond it is refused with this limit named.
    #[arg(long, env = "LAZYSNAP_MAX_FILES", default_value_t = 20_000_000)]
    max_files: u64,
    /// Bytes of blocks a new mount records as first read (within 30 s) and keeps in the store
    /// beside the volume's manifests, so that the next mount of the volume, on any node, fetches
    /// them first: a warm start. 0 records and replays nothing.
    #[arg(long, env = "LAZYSNAP_FIRST_TOUCH", default_value = "64M", value_parser = parse_size)]
    first_touch: u64,
    /// FUSE requests served at once across all mounts; more wait in the kernel's queues.
    #[arg(long, env = "LAZYSNAP_MAX_FUSE_REQUESTS", default_value_t = 1024)]
    max_fuse_requests: usize,
    /// Files one mount may have open at once; an open beyond it fails with ENFILE.
    #[arg(long, env = "LAZYSNAP_MAX_OPEN_FILES", default_value_t = 65_536)]
    max_open_files: usize,
    /// Take FUSE requests through io_uring (Linux 6.14+, after `echo Y >
    /// /sys/module/fuse/parameters/enable_uring`): a thread and ring per CPU for all mounts, each
    /// mount with this many entries of 1 MiB per CPU (touched as used); 0 reads them from
    /// /dev/fuse. Cold sequential reads on loopback S3 were 1.18x faster with 16 on a 2-core
    /// machine, but the kernel cannot hand such a connection to a restarted or upgraded daemon:
    /// the mount is mounted again at its path, and files that were open on it fail (ENOTCONN).
    #[arg(long, env = "LAZYSNAP_FUSE_URING_DEPTH", default_value_t = 0)]
    fuse_uring_depth: usize,
    /// Threads serving FUSE requests, the control socket and fetches, for all mounts together
    /// (hydrations run on half as many more, at a lower CPU priority).
    #[arg(long, env = "LAZYSNAP_WORKER_THREADS", default_value_t = 4)]
    worker_threads: usize,
    /// Threads for blocking work (cache writes, mount and unmount calls, uploads), at most
    /// (hydrations have a quarter as many more of their own).
    #[arg(long, env = "LAZYSNAP_BLOCKING_THREADS", default_value_t = 32)]
    blocking_threads: usize,
    /// How long the handover holder keeps mounts alive for a daemon that died to come back
    /// (their reads wait meanwhile); after it, they fail with ENOTCONN.
    #[arg(long, env = "LAZYSNAP_HANDOVER_GRACE", default_value = "120s", value_parser = humantime::parse_duration)]
    handover_grace: std::time::Duration,
    /// Who keeps mounts' connections while the daemon restarts: auto is systemd's file
    /// descriptor store when systemd runs the daemon, else a holder process.
    #[arg(long, env = "LAZYSNAP_HANDOVER", value_enum, default_value = "auto")]
    handover: keeper::Handover,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run as the handover holder of a home (the daemon starts it): keep mounts' FUSE connections
    /// open while the daemon restarts, and nothing else.
    #[command(hide = true)]
    Hold {
        /// How long to keep connections with no daemon connected.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Write this daemon's man page (lazysnap-mountd.8) into DIR, for packages.
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
}

fn parse_size(text: &str) -> Result<u64, String> {
    lazysnap::units::parse_size(text)
}

fn parse_kernel_readahead(text: &str) -> Result<u32, String> {
    match parse_size(text)? {
        bytes @ (4096..=16_777_216) if bytes % 4096 == 0 => Ok(bytes as u32),
        bytes => Err(format!("{bytes} bytes: give a multiple of 4K from 4K to 16M")),
    }
}

fn main() -> std::process::ExitCode {
    let loaded = match config::load::<Args>(std::env::args_os().collect(), |m| {
        home_of(m.get_one::<PathBuf>("home").cloned())
    }) {
        Ok(loaded) => loaded,
        Err(e) => {
            // clap's own errors (and --help, --version) print themselves.
            if let Some(clap) = e.downcast_ref::<clap::Error>() {
                clap.exit();
            }
            eprintln!("lazysnap-mountd: error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if loaded.args.print_config {
        print!("{}", loaded.render());
        return std::process::ExitCode::SUCCESS;
    }
    match run(loaded.args) {
        // systemd restarts a daemon that exits so (RestartForceExitStatus= in the unit), passing
        // the successor the connections kept in its store.
        Ok(server::Ended::HandedOver) if keeper::under_systemd() => std::process::ExitCode::from(HANDED_OVER),
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Also logged, for the journal; this line is what a starter shows.
            tracing::error!(error = format!("{e:#}"), "lazysnap-mountd failed");
            eprintln!("lazysnap-mountd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status of a daemon that handed its mounts over under systemd (EX_TEMPFAIL): the unit
/// restarts the service on it.
const HANDED_OVER: u8 = 75;

fn run(args: Args) -> anyhow::Result<server::Ended> {
    allocator::limit_retention();
    let log = logging::init(&args.log)?;
    raise_descriptor_limit();
    match args.command {
        Some(Command::Hold { grace }) => return hold(args.home, grace).map(|()| server::Ended::Stopped),
        Some(Command::GenerateMan { dir }) => return generate_man(&dir).map(|()| server::Ended::Stopped),
        None => {}
    }
    allocator::start_trimmer();
    // Tests make a process hang at a named point to kill it there (see lazysnap::failpoint).
    if let Some(name) = std::env::var_os("LAZYSNAP_FAILPOINT") {
        lazysnap::failpoint::arm(&name.to_string_lossy());
    }
    let paths = Paths::new(home_of(args.home.clone()));
    let reading = ReadingConfig {
        cache_memory: args.cache_memory,
        cache_dir: Some(paths.cache()),
        cache_disk: args.cache_disk,
        request_size: args.fetch_request_size,
        concurrency: args.fetch_concurrency,
        readahead_max: args.readahead_max,
        stall_timeout: args.stall_timeout,
    };
    // Every thread the daemon has, whatever the number of mounts: the workers, the blocking
    // pool, the background runtime's (below), and a few named ones (allocator trimmer, holder
    // reaper, cache verifiers).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(args.worker_threads.max(1))
        .max_blocking_threads(args.blocking_threads.max(1))
        .thread_name("lazysnap-mountd")
        .build()
        .context("cannot start the async runtime")?;
    let fuse = FuseOptions {
        max_requests: args.max_fuse_requests,
        passthrough: !args.no_passthrough,
        max_open_files: args.max_open_files,
        max_readahead: args.kernel_readahead,
        uring_depth: args.fuse_uring_depth,
    };
    let tuning = mounts::Tuning {
        server: Server::new(fuse),
        max_mounts: args.max_mounts,
        max_files: args.max_files,
        first_touch: args.first_touch,
    };
    // Hydrations run here, on threads of lower CPU priority: half the workers, a quarter of the
    // blocking threads (their cache writes and local-store reads).
    let background =
        lazysnap::fetch::BackgroundRuntime::start((args.worker_threads / 2).max(1), (args.blocking_threads / 4).max(1))
            .context("cannot start the background runtime")?;
    let _entered = runtime.enter();
    runtime.spawn(watch_fuse_requests(tuning.server.clone()));
    // Building an HTTP client loads the root certificates: done now, off the first mount's path.
    runtime.spawn_blocking(|| lazysnap::store::prepare_http_clients(&lazysnap::store::StoreConfig::default()));
    let options = daemon::Options {
        handover: args.handover.resolve(),
        handover_grace: args.handover_grace,
        flags: own_flags(),
        log,
        metrics_addr: args.metrics_addr,
        background_runtime: Some(background.handle()),
    };
    let daemon = daemon::Daemon::start(paths, reading, tuning, options)?;
    runtime.block_on(server::serve(daemon))
}

/// A FUSE request waiting this long is stuck: every read's fetch gives up well before (its
/// deadline is 30 s, its stalls a few seconds), so one past it is a lost wakeup or a deadlock.
const STUCK_FUSE_REQUEST: std::time::Duration = std::time::Duration::from_secs(30);

/// Reports each FUSE request that waits past [`STUCK_FUSE_REQUEST`], once; `lazysnap daemon status`
/// and the metrics count them.
async fn watch_fuse_requests(server: std::sync::Arc<Server>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for slow in server.newly_slow(STUCK_FUSE_REQUEST) {
            tracing::error!(
                op = slow.op,
                waited = ?slow.waited,
                "a FUSE request has waited past 30 s: the process that made it is blocked (a bug: please report it)"
            );
        }
    }
}

fn home_of(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Paths::default_home(std::env::var_os("LAZYSNAP_HOME"), euid, std::env::var_os("HOME"))
    })
}

/// The man page, from the same definitions `--help` shows; a daemon's page is in section 8.
fn generate_man(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let command = Args::command();
    let page = clap_mangen::Man::new(command).section("8");
    let path = dir.join("lazysnap-mountd.8");
    let mut text = Vec::new();
    page.render(&mut text)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The handover holder: nothing but its poll loop (see `lazysnap::handover`).
fn hold(home: Option<PathBuf>, grace: std::time::Duration) -> anyhow::Result<()> {
    // Terminal signals are not for it: it outlives the daemon on purpose. Named apart from the
    // daemon in `ps` and `pgrep`.
    // SAFETY: ignoring signals and naming the thread have no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_NAME, c"lazysnap-holder".as_ptr());
    }
    let paths = Paths::new(home_of(home));
    let config = lazysnap::handover::HolderConfig {
        socket: paths.holder_socket(),
        grace,
    };
    lazysnap::handover::run_holder(&config).context("handover holder failed")
}

/// The flags this daemon was started with, but its home (the starter gives that).
fn own_flags() -> Vec<String> {
    let mut flags = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--home" => {
                args.next();
            }
            a if a.starts_with("--home=") => {}
            _ => flags.push(arg),
        }
    }
    flags
}

/// Thousands of mounts need thousands of descriptors: take the hard limit, as servers do.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!("cannot raise the open-file limit to its maximum");
            }
        }
    }
}
