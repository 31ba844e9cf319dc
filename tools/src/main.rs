//! `lazysnap`: publish volumes to object storage, snapshot them, mount them lazily, inspect them.
//! This file parses arguments, runs the command and turns errors into one line and an exit code.

mod address;
mod commands;
mod fusion;
mod guests;
mod hydrate;
mod inspect;
mod jobs;
mod lifecycle;
mod mount_helper;
mod progress;
mod scylla;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lazysnap::paths::Paths;
use lazysnap_tools::{block_on, daemon, print_json};

#[derive(Parser, Debug)]
#[command(
    name = "lazysnap",
    version,
    about = "Mount database snapshots kept in object storage as lazy, verified, read-only filesystems",
    after_help = "Stores are URLs: file:///dir (or /dir), s3://bucket/prefix[?endpoint=URL&region=R&allow_http=true], \
gs://bucket/prefix, az://container/prefix. S3, GCS and Azure credentials come from the usual environment \
(AWS_ACCESS_KEY_ID, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_NAME, ...).\n\
Addresses for ls, cat and stat: STORE_URL[#VOLUME_ID[:PATH]], e.g. 'file:///srv/store#kv/b1/kvstore-0:log.0001'."
)]
struct Cli {
    /// State folder: index, block cache, daemon socket [default: $LAZYSNAP_HOME, else
    /// /var/lib/lazysnap for root, else ~/.local/share/lazysnap]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload every regular file under DIR as the next log manifest of a volume.
    Publish(commands::PublishArgs),
    /// Snapshots: pin a volume's current manifest for a while (create, release, list, describe).
    #[command(subcommand)]
    Snapshot(lifecycle::SnapshotCommand),
    /// Log cleaning: delete data files that no needed manifest names (the latest, those pinned by
    /// live snapshots, those younger than the retention). Runs only under the current term.
    Gc(lifecycle::GcArgs),
    /// Continuous uploads of an engine folder by lazysnap-mountd, fenced by terms.
    #[command(subcommand)]
    Uploader(lifecycle::UploaderCommand),
    /// Upload what this node's uploader of a volume has pending and write a manifest now; prints
    /// the manifest once it is durable.
    Sync(lifecycle::VolumeArgs),
    /// The namespaces of a store: list them, or delete all but some.
    #[command(subcommand)]
    Namespace(lifecycle::NamespaceCommand),
    /// Mount volumes, a backup location's generation, or a view of an ingested ScyllaDB snapshot,
    /// read-only; prints {"mountPaths": [...]} once the mount is readable.
    Mount(Box<commands::MountArgs>),
    /// Continuous backup of an engine folder into a backup location (start, stop, list, info).
    #[command(subcommand)]
    Backup(jobs::BackupCommand),
    /// Restore jobs: copy a snapshot or a backup view into a local folder (start, status, list,
    /// cancel, resume).
    #[command(subcommand)]
    Restore(jobs::RestoreCommand),
    /// ScyllaDB backups: ingest their manifests into the index, list what is ingested; mount views
    /// with `lazysnap mount --scylla`, restore them with `lazysnap restore start --scylla`.
    #[command(subcommand)]
    Scylla(scylla::ScyllaCommand),
    /// Fusion rebalance and snapshot restore without downloading first: mount a node's volumes of
    /// an AccelerationPlan as lazy guest volumes, watch them hydrate, release them.
    #[command(subcommand)]
    Guests(guests::GuestsCommand),
    /// A Fusion request in kv_engine's current form (0x70-0x78): the body is checked key by key as
    /// kv_engine checks it and answered in kv_engine's shape (0x70: one element per vbucket of
    /// vbucket_list; 0x72: {"deks", "mountPaths"}; 0x78: {"version", "namespaces"}).
    KvEngine(fusion::KvEngineArgs),
    /// kv_engine's `fusion` stats for a bucket: GROUP [VBID|detail], one JSON value with
    /// kv_engine's field names.
    FusionStats(fusion::FusionStatsArgs),
    /// Unmount a lazysnap mount.
    Umount {
        /// The mount path printed by `lazysnap mount`.
        path: PathBuf,
        /// Detach now even if files are open under it; it is released when they close.
        #[arg(long)]
        lazy: bool,
    },
    /// Fetch every block of a mount into the node's disk cache in the background, with a
    /// bandwidth cap and a deadline; pause, resume, cancel or watch it. Prints its status as JSON.
    Hydrate(hydrate::HydrateArgs),
    /// List this node's mounts as JSON.
    Mounts,
    /// List namespaces and volumes of a store, or the files of a volume.
    Ls(inspect::LsArgs),
    /// Write a file of a volume to standard output, verified block by block.
    Cat(inspect::AddressArgs),
    /// Show a file's size, checksum block size and what of it is cached.
    Stat(inspect::AddressArgs),
    /// Control the mount daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The node's index of manifests and snapshots.
    #[command(subcommand)]
    Index(commands::IndexCommand),
    /// Measure reads through mounts against raw GETs and local disk on file://, a local S3 server
    /// and one with S3's latency emulated; prints ratios and their targets, writes JSON. Runs
    /// lazysnap-bench (a separate binary, so the test S3 server it starts is not part of this
    /// one); `lazysnap bench --help` lists its flags.
    #[command(disable_help_flag = true)]
    Bench {
        /// Flags for lazysnap-bench.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "FLAGS")]
        flags: Vec<String>,
    },
    /// Write man pages (lazysnap.1, one per command, mount.fuse.lazysnap.8) and shell completions
    /// (bash, zsh, fish) into DIR, for packages.
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum DaemonCommand {
    /// Start the daemon with these lazysnap-mountd flags unless one is running (other commands
    /// start it with defaults when needed). Example: `lazysnap daemon start -- --cache-disk 50G`.
    Start {
        /// Flags for lazysnap-mountd (see `lazysnap-mountd --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "FLAGS")]
        flags: Vec<String>,
    },
    /// Print the daemon's pid, mounts and cache figures (starts nothing).
    Status,
    /// Unmount everything, stop the daemon and wait for it to exit.
    Stop,
    /// Replace the running daemon without disturbing its mounts: it stops serving and exits, and
    /// a new one (the lazysnap-mountd installed now: this is how to upgrade) takes every mount
    /// over live, so open files and reads in flight carry on. Prints the new daemon's status.
    Restart {
        /// Flags for the new lazysnap-mountd [default: those of the running one].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "FLAGS")]
        flags: Vec<String>,
    },
    /// Change the running daemon's log filter without a restart: a level (error, warn, info,
    /// debug, trace) or tracing directives (info,lazysnap::fetch=debug). Prints the new and the
    /// previous filter.
    LogLevel { level: String },
}

/// Flags shared by every command that reads a volume or a backup location.
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct SelectorArgs {
    /// Show the volume as pinned by this snapshot.
    #[arg(long, value_name = "UUID")]
    snapshot: Option<String>,
    /// Show the volume at this log manifest (e.g. 00000000000000000003.json).
    #[arg(long, value_name = "NAME")]
    manifest: Option<String>,
    /// Backup location: show generation N (metadata.N.dat).
    #[arg(long, value_name = "N")]
    generation: Option<u64>,
    /// Backup location: show the newest generation written at or before this time
    /// (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<u64>,
    /// Backup location: show the first generation whose files cover this seqno.
    #[arg(long, value_name = "SEQNO")]
    seqno: Option<u64>,
}

/// An RFC 3339 time as Unix milliseconds.
fn parse_time(text: &str) -> Result<u64, String> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-11-22T10:00:00Z: {e}"))?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?;
    Ok(since.as_millis() as u64)
}

impl SelectorArgs {
    /// True when a flag names a backup generation.
    pub fn names_backup(&self) -> bool {
        self.generation.is_some() || self.at.is_some() || self.seqno.is_some()
    }

    /// The selector the flags name; `backup` says the address is a backup location, whose
    /// default is its newest generation.
    pub fn selector(&self, backup: bool) -> lazysnap::catalog::Selector {
        use lazysnap::catalog::Selector;
        match (self, backup) {
            (
                SelectorArgs {
                    snapshot: Some(uuid), ..
                },
                _,
            ) => Selector::Snapshot(uuid.clone()),
            (
                SelectorArgs {
                    manifest: Some(name), ..
                },
                _,
            ) => Selector::Manifest(name.clone()),
            (
                SelectorArgs {
                    generation: Some(n), ..
                },
                _,
            ) => Selector::Generation(*n),
            (SelectorArgs { at: Some(ms), .. }, _) => Selector::At(*ms),
            (SelectorArgs { seqno: Some(s), .. }, _) => Selector::Seqno(*s),
            (_, true) => Selector::Backup,
            (_, false) => Selector::Latest,
        }
    }
}

fn main() -> ExitCode {
    if mount_helper::invoked() {
        init_logging();
        return mount_helper::main(|argv, _verbose| {
            let cli = Cli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
            let Command::Mount(args) = cli.command else {
                unreachable!("the helper only builds mount commands")
            };
            commands::mount_answer(*args, &paths_of(cli.home))
        });
    }
    let cli = Cli::parse();
    init_logging();
    // Tests make a process hang at a named point to kill it there (see lazysnap::failpoint).
    if let Some(name) = std::env::var_os("LAZYSNAP_FAILPOINT") {
        lazysnap::failpoint::arm(&name.to_string_lossy());
    }
    let paths = paths_of(cli.home.clone());
    match run(cli.command, &paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazysnap: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    // The command reports its own failure; library events would repeat it. LAZYSNAP_LOG=info shows them.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LAZYSNAP_LOG").unwrap_or_else(|_| "error,lazysnap=off".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The node's state folder: `--home`, else the default for this user.
fn paths_of(home: Option<PathBuf>) -> Paths {
    Paths::new(home.unwrap_or_else(|| {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Paths::default_home(std::env::var_os("LAZYSNAP_HOME"), euid, std::env::var_os("HOME"))
    }))
}

/// The error and its causes on one line, without repeating a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn run(command: Command, paths: &Paths) -> anyhow::Result<()> {
    match command {
        Command::Publish(args) => commands::publish(args, paths),
        Command::Snapshot(cmd) => lifecycle::snapshot(cmd, paths),
        Command::Gc(args) => lifecycle::gc(args, paths),
        Command::Uploader(cmd) => lifecycle::uploader(cmd, paths),
        Command::Sync(args) => lifecycle::sync(args, paths),
        Command::Namespace(cmd) => lifecycle::namespace(cmd, paths),
        Command::Mount(args) => commands::mount(*args, paths),
        Command::Backup(cmd) => jobs::backup(cmd, paths),
        Command::Scylla(cmd) => scylla::run(cmd, paths),
        Command::Restore(cmd) => jobs::restore(cmd, paths),
        Command::Guests(cmd) => guests::run(cmd, paths),
        Command::KvEngine(args) => fusion::kv_engine(args, paths),
        Command::FusionStats(args) => fusion::fusion_stats(args, paths),
        Command::Umount { path, lazy } => commands::umount(&path, lazy, paths),
        Command::Hydrate(args) => hydrate::hydrate(args, paths),
        Command::Mounts => daemon::print_request(paths, &lazysnap::control::Request::Mounts, false),
        Command::Ls(args) => inspect::ls(args, paths),
        Command::Cat(args) => inspect::cat(args, paths),
        Command::Stat(args) => inspect::stat(args, paths),
        Command::Daemon(DaemonCommand::Status) => {
            daemon::print_request(paths, &lazysnap::control::Request::Status, false)
        }
        Command::Daemon(DaemonCommand::Stop) => daemon::stop(paths),
        Command::Daemon(DaemonCommand::LogLevel { level }) => daemon::print_request(
            paths,
            &lazysnap::control::Request::LogLevel(lazysnap::control::LogLevelRequest { level }),
            false,
        ),
        Command::Daemon(DaemonCommand::Restart { flags }) => daemon::restart(paths, flags),
        Command::Daemon(DaemonCommand::Start { flags }) => daemon::start(paths, flags),
        Command::Index(cmd) => commands::index(cmd, paths),
        Command::Bench { flags } => run_bench(flags),
        Command::GenerateDocs { dir } => generate_docs(&dir),
    }
}

/// Man pages from the same definitions `--help` shows, and completions for the usual shells.
fn generate_docs(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    let (man, completions) = (dir.join("man"), dir.join("completions"));
    for folder in [&man, &completions] {
        std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man).context("cannot write the man pages")?;
    // mount(8) helpers are documented in section 8.
    let helper = man.join(format!("{}.8", mount_helper::NAME));
    let mut page = Vec::new();
    clap_mangen::Man::new(mount_helper::command())
        .section("8")
        .render(&mut page)?;
    std::fs::write(&helper, page).with_context(|| format!("cannot write {}", helper.display()))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "lazysnap", &completions)
            .with_context(|| format!("cannot write the {shell} completions"))?;
    }
    Ok(())
}

/// Replaces this process with lazysnap-bench, which reads `flags` itself.
fn run_bench(flags: Vec<String>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let bench = lazysnap_tools::sibling_binary("lazysnap-bench");
    let error = std::process::Command::new(&bench).args(flags).exec();
    Err(anyhow::Error::new(error).context(format!(
        "cannot run {} (installed by `cargo build --workspace --bins` or the lazysnap-bench package)",
        bench.display()
    )))
}
