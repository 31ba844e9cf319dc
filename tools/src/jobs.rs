//! `lazysnap backup` (continuous backup into a backup location) and `lazysnap restore` (copy a
//! snapshot or a backup view into a local folder). Both run in lazysnap-mountd; `backup info` and
//! a `restore status` with no daemon running read the store and the index directly.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use lazysnap::control::records::{JobState, RestoreJob, RestoreJobStatus, RestoreJobs};
use lazysnap::control::{
    ops, BackupStartRequest, JobRequest, LocationRequest, Request, RestoreStartRequest, RestoreStatusRequest,
};
use lazysnap::paths::Paths;

use crate::address::Address;
use crate::commands::{absolute, open_index};
use crate::progress::{JobStatus, StatusBar};
use crate::{block_on, daemon, print_json, SelectorArgs};

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Back a folder up into a backup location: now, then every interval, new files are hard-linked
    /// (a local location on the same filesystem) or uploaded, and a generation metadata.<n>.dat
    /// records the folder as of that round. A file's seqno range comes from a sidecar
    /// <file>.seqnos holding "<low> <high>", written before the file appears. Runs in
    /// lazysnap-mountd until `backup stop`; prints the backup's status after its first round.
    Start {
        /// The engine's folder; its files must be complete once they appear (renamed or linked in).
        #[arg(long, value_name = "DIR")]
        source: PathBuf,
        /// Backup location URL (file:///dir, s3://bucket/prefix, ...).
        #[arg(long, value_name = "URL")]
        location: String,
        /// Time between rounds, e.g. 120s, 5m.
        #[arg(long, default_value = "120s", value_parser = parse_interval)]
        interval: u64,
        /// Volume ID that views of the location show (default: the source folder's name).
        #[arg(long)]
        volume: Option<String>,
        /// Checksum block size of the generations (4K to 64M, power of two).
        #[arg(long, default_value = "256K", value_parser = lazysnap::units::parse_size)]
        block_size: u64,
    },
    /// Run a final round and stop backing up into a location; prints the final status.
    Stop {
        #[arg(long, value_name = "URL")]
        location: String,
    },
    /// This node's running backups as JSON.
    List,
    /// The generations of a backup location: time, files, bytes, new files, seqno range.
    Info {
        #[arg(long, value_name = "URL")]
        location: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RestoreCommand {
    /// Copy a view into a local folder without waiting for a full download first: blocks already
    /// cached are reused, the rest fetched on the background lane, every block verified, each file
    /// written under a hidden temporary name and renamed when complete. Prints the job at once;
    /// the same request again answers the same job.
    Start(Box<RestoreStartArgs>),
    /// A job's state (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED), bytes and files done and
    /// total, rate, ETA and error. On a terminal it follows the job with a progress bar.
    Status {
        id: String,
        /// Print the status once as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every restore job this node knows.
    List,
    /// Stop a job; its temporary files are removed, files already complete stay.
    Cancel { id: String },
    /// Run a cancelled, failed or interrupted job again; what it completed is kept, not fetched.
    Resume { id: String },
}

#[derive(Args, Debug)]
pub struct RestoreStartArgs {
    /// What to restore: STORE_URL#VOLUME_ID (a volume; with --snapshot or --manifest, else its
    /// latest manifest) or a backup location URL (with --generation, --at or --seqno, else its
    /// newest generation). A view of an ingested ScyllaDB snapshot is named by --scylla instead.
    #[arg(
        long,
        value_name = "ADDRESS",
        required_unless_present = "scylla",
        conflicts_with = "scylla"
    )]
    from: Option<String>,
    #[command(flatten)]
    scylla: crate::commands::ScyllaViewArgs,
    #[command(flatten)]
    selector: SelectorArgs,
    /// The local folder to fill (created if missing); files already there must match the view.
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,
    /// Bytes per second fetched from the store at most (suffixes K, M, G).
    #[arg(long, value_parser = lazysnap::units::parse_size)]
    bandwidth: Option<u64>,
    /// Mount the view at DIR (empty or missing) and hydrate it instead of copying: the engine
    /// uses DIR/<volumeID>/ at once, and the job completes when every block is local.
    #[arg(long)]
    in_place: bool,
    /// Stay until the job ends (a progress bar on a terminal), then print its final status.
    #[arg(long)]
    wait: bool,
}

fn parse_interval(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration like 120s: {e}"))?;
    Ok(duration.as_secs())
}

pub fn backup(command: BackupCommand, paths: &Paths) -> anyhow::Result<()> {
    let request = match command {
        BackupCommand::Start {
            source,
            location,
            interval,
            volume,
            block_size,
        } => Request::BackupStart(BackupStartRequest {
            source: absolute(&source)?.display().to_string(),
            location,
            interval: Some(interval),
            volume,
            block_size: Some(block_size),
        }),
        BackupCommand::Stop { location } => Request::BackupStop(LocationRequest { location }),
        BackupCommand::List => Request::Backups,
        BackupCommand::Info { location, json } => return info(&location, json, paths),
    };
    let start = matches!(request, Request::BackupStart(_));
    daemon::print_request(paths, &request, start)
}

fn info(location: &str, json: bool, paths: &Paths) -> anyhow::Result<()> {
    let index = open_index(paths)?;
    let info = block_on(ops::backup_info(location, &index))?;
    if json || !std::io::stdout().is_terminal() {
        print_json(&info);
        return Ok(());
    }
    println!(
        "{} (volume {})",
        info.location,
        info.volume_id.as_deref().unwrap_or("-")
    );
    println!(
        "{:>6}  {:<20}  {:>6}  {:>14}  {:>5}  seqnos",
        "gen", "created", "files", "bytes", "new"
    );
    for g in &info.generations {
        let seqnos = match (g.low_seqno, g.high_seqno) {
            (Some(low), Some(high)) => format!("{low}-{high}"),
            _ => "-".into(),
        };
        println!(
            "{:>6}  {:<20}  {:>6}  {:>14}  {:>5}  {seqnos}",
            g.generation, g.created_at, g.files, g.bytes, g.new_files
        );
    }
    Ok(())
}

pub fn restore(command: RestoreCommand, paths: &Paths) -> anyhow::Result<()> {
    match command {
        RestoreCommand::Start(args) => start(args, paths),
        RestoreCommand::Status { id, json } => {
            let request = Request::RestoreStatus(RestoreStatusRequest {
                id: id.clone(),
                wait_ms: None,
            });
            if !paths.socket().exists() {
                // Any client can ask: the job lives in the index even while no daemon runs.
                let index = open_index(paths)?;
                let row = index
                    .restore_job(&id)?
                    .with_context(|| format!("no restore job {id}"))?;
                print_json(&serde_json::to_value(RestoreJobStatus::new(row.record?, None, None))?);
                return Ok(());
            }
            let status: RestoreJobStatus = daemon::call_as(paths, &request)?;
            if json || !std::io::stderr().is_terminal() {
                print_json(&status);
                return Ok(());
            }
            follow(paths, &id, status)
        }
        RestoreCommand::List => {
            if !paths.socket().exists() {
                let index = open_index(paths)?;
                let jobs = index
                    .restore_jobs::<RestoreJob>()?
                    .into_iter()
                    .map(|row| Ok(RestoreJobStatus::new(row.record?, None, None)))
                    .collect::<anyhow::Result<_>>()?;
                print_json(&serde_json::to_value(RestoreJobs { jobs })?);
                return Ok(());
            }
            daemon::print_request(paths, &Request::RestoreList, false)
        }
        RestoreCommand::Cancel { id } => daemon::print_request(paths, &Request::RestoreCancel(JobRequest { id }), true),
        RestoreCommand::Resume { id } => daemon::print_request(paths, &Request::RestoreResume(JobRequest { id }), true),
    }
}

fn start(args: Box<RestoreStartArgs>, paths: &Paths) -> anyhow::Result<()> {
    let request = match args.scylla.filter() {
        Some(filter) => Request::RestoreStart(RestoreStartRequest {
            store: String::new(),
            volume: None,
            selector: lazysnap::catalog::Selector::Latest,
            dest: absolute(&args.dest)?.display().to_string(),
            bandwidth: args.bandwidth,
            in_place: args.in_place,
            scylla: Some(filter),
        }),
        None => volume_request(&args)?,
    };
    daemon::ensure_running(paths)?;
    let status: RestoreJobStatus = daemon::call_as(paths, &request)?;
    if !args.wait {
        print_json(&status);
        return Ok(());
    }
    let id = status.job.id.clone();
    follow(paths, &id, status)
}

/// The request restoring a volume or a backup location (`--from`).
fn volume_request(args: &RestoreStartArgs) -> anyhow::Result<Request> {
    let address = Address::parse(args.from.as_deref().unwrap_or_default())?;
    if address.path.is_some() {
        bail!("--from names a volume or a backup location, not a file inside one");
    }
    let backup = address.volume.is_none();
    if backup && (args.selector.snapshot.is_some() || args.selector.manifest.is_some()) {
        bail!("--snapshot and --manifest select a volume's state: use --from STORE_URL#VOLUME_ID");
    }
    let request = Request::RestoreStart(RestoreStartRequest {
        store: address.store.to_string(),
        volume: address.volume.map(|v| v.to_string()),
        selector: args.selector.selector(backup),
        dest: absolute(&args.dest)?.display().to_string(),
        bandwidth: args.bandwidth,
        in_place: args.in_place,
        scylla: None,
    });
    Ok(request)
}

/// How often the progress bar of `--wait` moves.
const PROGRESS_EVERY_MS: u64 = 250;

/// Follows a job until it ends, with a progress bar on a terminal; fails unless it completed.
/// Each status request waits in the daemon until the job ends or the bar is due again, so the end
/// is known the moment it happens.
fn follow(paths: &Paths, id: &str, mut status: RestoreJobStatus) -> anyhow::Result<()> {
    let bar = StatusBar::new("restoring", &status);
    while !status.is_final() {
        bar.show(&status);
        let request = Request::RestoreStatus(RestoreStatusRequest {
            id: id.to_string(),
            wait_ms: Some(PROGRESS_EVERY_MS),
        });
        status = daemon::call_as(paths, &request)?;
    }
    bar.finish();
    print_json(&status);
    if status.job.state != JobState::Completed {
        bail!(
            "restore job {id} ended {}: {}",
            status.state(),
            status.error().unwrap_or("no error recorded")
        );
    }
    Ok(())
}
