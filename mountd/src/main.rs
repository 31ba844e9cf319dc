//! lazysnap-mountd: owns this node's lazysnap FUSE mounts and serves the control API on
//! `<home>/mountd.sock`. `lazysnap mount` starts it on demand; run it by hand (or from systemd) to
//! choose cache sizes and logging.

mod daemon;
mod mounts;
mod server;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lazysnap::cache::CacheConfig;
use lazysnap::paths::Paths;

#[derive(Parser, Debug)]
#[command(name = "lazysnap-mountd", version, about = "The lazysnap mount daemon", long_about = None)]
struct Args {
    /// State folder: index, block cache, control socket, log [default: $LAZYSNAP_HOME, else
    /// /var/lib/lazysnap for root, else ~/.local/share/lazysnap]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Bytes of verified blocks kept in memory (suffixes K, M, G).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    cache_memory: u64,
    /// Bytes of verified blocks kept on disk under <home>/cache (suffixes K, M, G, T).
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    cache_disk: u64,
    /// FUSE worker threads per mount.
    #[arg(long, default_value_t = 16)]
    fuse_threads: usize,
}

fn parse_size(text: &str) -> Result<u64, String> {
    lazysnap::units::parse_size(text)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // fuser unmounts again after lazysnap has, and warns that the second attempt failed.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LAZYSNAP_LOG").unwrap_or_else(|_| "info,fuser::mnt=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let home = args.home.unwrap_or_else(|| {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Paths::default_home(std::env::var_os("LAZYSNAP_HOME"), euid, std::env::var_os("HOME"))
    });
    let paths = Paths::new(home);
    let cache = CacheConfig {
        memory_bytes: args.cache_memory,
        disk_dir: Some(paths.cache()),
        disk_bytes: args.cache_disk,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lazysnap-mountd")
        .build()
        .context("cannot start the async runtime")?;
    let daemon = daemon::Daemon::start(paths, cache, args.fuse_threads, runtime.handle().clone())?;
    runtime.block_on(server::serve(daemon))
}
