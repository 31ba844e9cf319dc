//! snapshot, gc, uploader, sync and namespace: Fusion's log-store operations. Those that need only
//! the store run here through the same functions as mountd's control API; uploaders live in the
//! daemon, and a namespace delete asks the daemon when one runs (it knows the live mounts).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use lazysnap::control::records::MountRecord;
use lazysnap::control::{
    ops, GcRequest, NamespaceDeleteRequest, NamespaceListRequest, OpError, Request, SnapshotCreateRequest,
    SnapshotDescribeRequest, SnapshotReleaseRequest, Term, UploaderStartRequest, VolumeRequest, Volumes,
};
use lazysnap::index::Kept;
use lazysnap::namespace::DeleteReport;
use lazysnap::paths::Paths;
use serde_json::Value;

use crate::commands::{absolute, open_index};
use crate::{block_on, daemon, print_json};

#[derive(Args, Debug)]
pub struct VolumeArgs {
    /// Store URL.
    #[arg(long)]
    store: String,
    /// Volume ID, e.g. kv/<bucketUUID>/kvstore-0.
    #[arg(long)]
    volume: String,
}

impl VolumeArgs {
    fn request(self) -> VolumeRequest {
        VolumeRequest {
            store: self.store,
            volume: self.volume,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Pin each volume's current manifest (Fusion 0x70); prints createdAt, logFiles,
    /// logManifestName, snapshotUUID, validTill, version and volumeID, one element per volume when
    /// several are named. All volumes get the snapshot or none does.
    Create {
        #[arg(long)]
        store: String,
        /// Volume IDs to snapshot (repeat for several).
        #[arg(long = "volume", required = true)]
        volumes: Vec<String>,
        /// Snapshot UUID (default: a random UUID).
        #[arg(long)]
        uuid: Option<String>,
        /// How long the snapshot stays valid, in seconds; past it the snapshot is expired and
        /// pins nothing.
        #[arg(long)]
        validity: u64,
    },
    /// Release a snapshot of each volume (Fusion 0x71). Releasing one already gone succeeds.
    Release {
        #[arg(long)]
        store: String,
        #[arg(long = "volume", required = true)]
        volumes: Vec<String>,
        #[arg(long)]
        uuid: String,
    },
    /// The snapshots of a volume with their states: PENDING, COMMITTED, EXPIRED, DELETING.
    List(VolumeArgs),
    /// One snapshot of a volume.
    Describe {
        #[command(flatten)]
        volume: VolumeArgs,
        #[arg(long)]
        uuid: String,
    },
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    volume: VolumeArgs,
    /// Seconds a superseded manifest stays needed (and its files with it).
    #[arg(long, default_value_t = 3600)]
    retention: u64,
    /// Seconds an object no manifest names is left alone: a publish may still be writing it.
    #[arg(long, default_value_t = 3600)]
    upload_grace: u64,
    /// Run under this uploader term (default: the volume's current term); an older one is refused.
    #[arg(long)]
    term: Option<u64>,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum UploaderCommand {
    /// Upload a local engine folder as the volume's next manifest every interval, under a term
    /// (Fusion 0x75), in lazysnap-mountd. The term must be at least the volume's current one;
    /// a newer term fences every older uploader, wherever it runs.
    Start {
        #[command(flatten)]
        volume: VolumeArgs,
        /// The engine's folder of immutable data files.
        #[arg(long)]
        source: PathBuf,
        /// Uploader term (unsigned 64-bit); raise it whenever the uploader role moves.
        #[arg(long)]
        term: u64,
        /// Seconds between uploads.
        #[arg(long, default_value_t = 10)]
        interval: u64,
    },
    /// Stop this node's uploader of a volume after the round in progress (Fusion 0x76).
    Stop(VolumeArgs),
    /// This node's uploaders and their states (RUNNING or FENCED).
    List,
}

#[derive(Subcommand, Debug)]
pub enum NamespaceCommand {
    /// The namespaces of a store (a volume's ID without its last component) and their volumes.
    List {
        #[arg(long)]
        store: String,
    },
    /// Delete every namespace of a store except those kept (Fusion 0x77): their data files,
    /// snapshots and manifests. Refused while this node has live mounts of the store or uploads a
    /// volume to delete, unless --force.
    Delete {
        #[arg(long)]
        store: String,
        /// Namespaces to keep (repeat for several); namespaces inside a kept one are kept too.
        #[arg(long = "keep", required_unless_present = "all")]
        keep: Vec<String>,
        /// Keep nothing: delete every namespace of the store.
        #[arg(long, conflicts_with = "keep")]
        all: bool,
        /// Delete even with live mounts (their uncached reads then fail) or running uploaders (stopped).
        #[arg(long)]
        force: bool,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// An operation's error as the control API words it, status included.
fn failed(e: OpError) -> anyhow::Error {
    anyhow!("{} ({:?})", e.message, e.status)
}

pub fn snapshot(command: SnapshotCommand, paths: &Paths) -> anyhow::Result<()> {
    let answer = match command {
        SnapshotCommand::Create {
            store,
            volumes,
            uuid,
            validity,
        } => {
            let request = SnapshotCreateRequest {
                store,
                volumes: Volumes::Many(volumes),
                snapshot_uuid: uuid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                validity,
            };
            let index = open_index(paths)?;
            one_or_many(block_on(ops::snapshot_create(&request, &index)).map_err(failed)?)?
        }
        SnapshotCommand::Release { store, volumes, uuid } => {
            let request = SnapshotReleaseRequest {
                store,
                volumes: Volumes::Many(volumes),
                snapshot_uuid: uuid,
            };
            let index = open_index(paths)?;
            one_or_many(block_on(ops::snapshot_release(&request, &index)).map_err(failed)?)?
        }
        SnapshotCommand::List(volume) => {
            serde_json::to_value(block_on(ops::snapshot_list(&volume.request())).map_err(failed)?)?
        }
        SnapshotCommand::Describe { volume, uuid } => {
            let request = SnapshotDescribeRequest {
                store: volume.store,
                volume: volume.volume,
                snapshot_uuid: uuid,
            };
            serde_json::to_value(block_on(ops::snapshot_describe(&request)).map_err(failed)?)?
        }
    };
    print_json(&answer);
    Ok(())
}

/// One volume answers an object, several an array.
fn one_or_many<T: serde::Serialize>(mut answers: Vec<T>) -> serde_json::Result<Value> {
    match answers.len() {
        1 => serde_json::to_value(answers.remove(0)),
        _ => serde_json::to_value(answers),
    }
}

pub fn gc(args: GcArgs, paths: &Paths) -> anyhow::Result<()> {
    let request = GcRequest {
        store: args.volume.store,
        volume: args.volume.volume,
        retention: Some(args.retention),
        upload_grace: Some(args.upload_grace),
        term: args.term.map(Term),
        dry_run: args.dry_run,
    };
    let index = open_index(paths)?;
    print_json(&block_on(ops::gc(&request, &index)).map_err(failed)?);
    Ok(())
}

pub fn uploader(command: UploaderCommand, paths: &Paths) -> anyhow::Result<()> {
    match command {
        UploaderCommand::Start {
            volume,
            source,
            term,
            interval,
        } => {
            let request = Request::UploaderStart(UploaderStartRequest {
                store: volume.store,
                volume: volume.volume,
                source: absolute(&source)?.display().to_string(),
                term: Term(term),
                interval: Some(interval),
            });
            daemon::print_request(paths, &request, true)
        }
        UploaderCommand::Stop(volume) => daemon::print_request(paths, &Request::UploaderStop(volume.request()), false),
        UploaderCommand::List => daemon::print_request(paths, &Request::Uploaders, false),
    }
}

/// Fusion 0x74 through this node's uploader of the volume.
pub fn sync(volume: VolumeArgs, paths: &Paths) -> anyhow::Result<()> {
    daemon::print_request(paths, &Request::Sync(volume.request()), false)
}

pub fn namespace(command: NamespaceCommand, paths: &Paths) -> anyhow::Result<()> {
    match command {
        NamespaceCommand::List { store } => {
            let request = NamespaceListRequest { logstore_uri: store };
            print_json(&block_on(ops::namespace_list(&request)).map_err(failed)?);
            Ok(())
        }
        NamespaceCommand::Delete {
            store,
            keep,
            all: _,
            force,
            dry_run,
        } => {
            let request = NamespaceDeleteRequest {
                logstore_uri: store,
                namespaces: keep,
                force,
                dry_run,
            };
            print_json(&delete_namespaces(request, paths)?);
            Ok(())
        }
    }
}

/// Asks the running daemon, which knows its live mounts; with none running, holds the daemon's
/// lock (so none starts meanwhile) and checks the mounts a daemon that died would bring back.
fn delete_namespaces(request: NamespaceDeleteRequest, paths: &Paths) -> anyhow::Result<DeleteReport> {
    paths
        .create()
        .with_context(|| format!("cannot create {}", paths.home().display()))?;
    let Some(_no_daemon_meanwhile) = paths.try_lock_daemon()? else {
        return daemon::call_as(paths, &Request::NamespaceDelete(request));
    };
    let index = open_index(paths)?;
    let store = ops::open_store(&request.logstore_uri, false).map_err(failed)?;
    let url = store.url().to_string();
    let restorable: Vec<String> = index
        .mounts::<MountRecord>()?
        .into_iter()
        .filter(|row| recorded_store(row).as_deref() == Some(url.as_str()))
        .map(|row| row.key)
        .collect();
    if let Some(path) = restorable.first() {
        if !request.force && !request.dry_run {
            bail!(
                "store {url} has {} mount(s) that lazysnap-mountd brings back when it starts, e.g. {path}; unmount them or force the delete (Einval)",
                restorable.len()
            );
        }
    }
    block_on(ops::namespace_delete(&request, &index)).map_err(failed)
}

/// The store URL of a mount the daemon recorded, normalised; an unreadable one counts as no mount.
fn recorded_store(row: &Kept<MountRecord>) -> Option<String> {
    let record = row.record.as_ref().ok()?;
    let url: lazysnap::store::StoreUrl = record.request.store.parse().ok()?;
    Some(url.to_string())
}
