//! publish, index sync, mount, umount.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use lazysnap::control::{HydrateParams, MountRequest, Request};
use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use lazysnap::paths::Paths;
use lazysnap::publish::{self, PublishOptions};
use lazysnap::store::{Store, StoreConfig, StoreUrl};

use crate::{block_on, daemon, print_json, progress, SelectorArgs};
use lazysnap::access::{AccessRequest, Mode, Principal};

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Local folder whose regular files become the volume's files (relative paths kept).
    dir: PathBuf,
    /// Store URL; a file:// store's folder is created if missing.
    #[arg(long)]
    store: String,
    /// Volume ID, e.g. kv/<bucketUUID>/kvstore-0.
    #[arg(long)]
    volume: String,
    /// Checksum block size: the unit of verification and of random reads (4K to 64M, power of two).
    #[arg(long, default_value = "256K", value_parser = lazysnap::units::parse_size)]
    block_size: u64,
    /// Uploader term to write under (default: the volume's current term); an older term is refused.
    #[arg(long)]
    term: Option<u64>,
    /// Files uploaded in parallel.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
}

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Read every manifest and snapshot of a store (or of some volumes) into the index, so mounts
    /// need nothing else, and drop the rows the store no longer backs (a snapshot released or a
    /// volume deleted behind this node's back); the index is otherwise filled on demand.
    Sync(IndexScope),
    /// Compare the index with a store, changing nothing: every manifest it holds is the store's,
    /// none above the store's head or of a deleted volume, every snapshot it takes as live is live
    /// in the store. Prints {"volumes", "manifestsCompared", "snapshotsCompared",
    /// "disagreements"} and exits 1 when there are any (`index sync` mends them).
    Check(IndexScope),
}

#[derive(Args, Debug)]
pub struct IndexScope {
    #[arg(long)]
    store: String,
    /// Only these volumes (repeat for several); default: every volume the store or the index knows.
    #[arg(long = "volume")]
    volumes: Vec<String>,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["store", "backup", "scylla"]))]
pub struct MountArgs {
    /// Store URL of the volumes to mount.
    #[arg(long)]
    store: Option<String>,
    /// Volume IDs to show, each under <mountPath>/<volumeID>/ (repeat for several).
    #[arg(long = "volume", requires = "store")]
    volumes: Vec<String>,
    /// Backup location URL: mount one of its generations (the newest unless --generation, --at
    /// or --seqno says otherwise), under <mountPath>/<volumeID>/.
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    backup: Option<String>,
    #[command(flatten)]
    selector: SelectorArgs,
    /// Where to mount (created if missing, must be empty); default: a new folder under <home>/mnt.
    #[arg(long, value_name = "DIR")]
    mountpoint: Option<PathBuf>,
    /// Fetch every block into the disk cache in the background (see `lazysnap hydrate`).
    #[arg(long)]
    hydrate: bool,
    /// With --hydrate: bytes per second at most (suffixes K, M, G).
    #[arg(long, requires = "hydrate", value_parser = lazysnap::units::parse_size)]
    bandwidth: Option<u64>,
    #[command(flatten)]
    scylla: ScyllaViewArgs,
    #[command(flatten)]
    access: AccessArgs,
}

/// Who may read a mount. Default: private to the user who runs `lazysnap mount` (files 0400,
/// folders 0500, owned by them); the kernel enforces the modes.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Owner of every file and folder, a user name or number (default: you). Only a daemon
    /// running as root can show files as another user's.
    #[arg(long, value_name = "USER")]
    pub uid: Option<Principal>,
    /// Group of every file and folder, a name or number (default: the owner's primary group).
    #[arg(long, value_name = "GROUP")]
    pub gid: Option<Principal>,
    /// Mode of files, octal within 0777 [default: 0400, or 0444 with --allow-other].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub file_mode: Option<Mode>,
    /// Mode of folders, octal within 0777 [default: 0500, or 0555 with --allow-other].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub dir_mode: Option<Mode>,
    /// Let users other than the owner in, as far as the modes allow (group or other bits in a
    /// mode need it).
    #[arg(long)]
    pub allow_other: bool,
}

impl AccessArgs {
    pub fn request(self) -> AccessRequest {
        AccessRequest {
            uid: self.uid,
            gid: self.gid,
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
            allow_other: self.allow_other,
        }
    }
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    Mode::parse(text).map_err(|e| e.to_string())
}

/// A view of an ingested ScyllaDB snapshot (see `lazysnap scylla ingest`).
#[derive(Args, Debug, Clone)]
pub struct ScyllaViewArgs {
    /// The sstables of this ingested ScyllaDB snapshot (with --keyspace and --table), flat, as a
    /// table's upload directory holds them. sstables that span the requested tablet or token
    /// range are left out; the answer lists them under "spanning".
    #[arg(long, value_name = "SNAPSHOT", requires_all = ["keyspace", "table"])]
    pub scylla: Option<String>,
    /// Keyspace of the table (with --scylla).
    #[arg(long, value_name = "KS", requires = "scylla")]
    pub keyspace: Option<String>,
    /// Table name (with --scylla).
    #[arg(long, value_name = "T", requires = "scylla")]
    pub table: Option<String>,
    /// Only sstables of this datacenter.
    #[arg(long, value_name = "DC", requires = "scylla")]
    pub dc: Option<String>,
    /// Only sstables of this rack.
    #[arg(long, value_name = "R", requires = "scylla")]
    pub rack: Option<String>,
    /// Only sstables of this node (its host id).
    #[arg(long, value_name = "HOST_ID", requires = "scylla")]
    pub node: Option<String>,
    /// Only sstables wholly inside tablet I (of --tablet-count power-of-two tablets; default: the
    /// table's layout in its manifests).
    #[arg(long, value_name = "I", requires = "scylla", conflicts_with = "token_range")]
    pub tablet: Option<u64>,
    /// With --tablet: how many power-of-two tablets the ring is cut into.
    #[arg(long, value_name = "N", requires = "tablet")]
    pub tablet_count: Option<u64>,
    /// Only sstables wholly inside the tokens (A, B].
    #[arg(long, value_name = "A:B", requires = "scylla", allow_hyphen_values = true)]
    pub token_range: Option<String>,
}

impl ScyllaViewArgs {
    pub fn filter(&self) -> Option<lazysnap::scylla::Filter> {
        Some(lazysnap::scylla::Filter {
            snapshot: self.scylla.clone()?,
            keyspace: self.keyspace.clone().unwrap_or_default(),
            table: self.table.clone().unwrap_or_default(),
            dc: self.dc.clone(),
            rack: self.rack.clone(),
            node: self.node.clone(),
            tablet: self.tablet,
            tablet_count: self.tablet_count,
            token_range: self.token_range.clone(),
        })
    }
}

pub fn open_store(url: &str, create: bool) -> anyhow::Result<Store> {
    let url: StoreUrl = url.parse()?;
    let config = StoreConfig {
        create_local_dir: create,
        ..StoreConfig::default()
    };
    Ok(Store::open(&url, &config)?)
}

pub fn open_index(paths: &Paths) -> anyhow::Result<Index> {
    paths
        .create()
        .with_context(|| format!("cannot create {}", paths.home().display()))?;
    Ok(Index::open(&paths.index())?)
}

pub fn publish(args: PublishArgs, paths: &Paths) -> anyhow::Result<()> {
    let volume = VolumeId::parse(&args.volume)?;
    let store = open_store(&args.store, true)?;
    let index = open_index(paths)?;
    let options = PublishOptions {
        block_size: args.block_size,
        term: args.term,
        concurrency: args.jobs,
        ..PublishOptions::default()
    };
    let bar = progress::Bar::new("uploading");
    let report = block_on(publish::publish(&store, &index, &args.dir, &volume, &options, &bar))?;
    bar.finish();
    print_json(&serde_json::to_value(report)?);
    Ok(())
}

pub fn index(command: IndexCommand, paths: &Paths) -> anyhow::Result<()> {
    let (IndexCommand::Sync(scope) | IndexCommand::Check(scope)) = &command;
    let store = open_store(&scope.store, false)?;
    let index = open_index(paths)?;
    let volumes = match scope.volumes.is_empty() {
        true => None,
        false => Some(
            scope
                .volumes
                .iter()
                .map(|v| VolumeId::parse(v))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if let IndexCommand::Sync(_) = command {
        let report = block_on(lazysnap::reconcile::sync(&store, &index, volumes))?;
        print_json(&serde_json::to_value(report)?);
        return Ok(());
    }
    let report = block_on(lazysnap::reconcile::check(&store, &index, volumes))?;
    print_json(&serde_json::to_value(&report)?);
    if !report.disagreements.is_empty() {
        bail!(
            "the index disagrees with store {} in {} place(s), listed above; `lazysnap index sync --store {}` reads them again",
            scope.store,
            report.disagreements.len(),
            scope.store
        );
    }
    Ok(())
}

pub fn mount(args: MountArgs, paths: &Paths) -> anyhow::Result<()> {
    print_json(&mount_answer(args, paths)?);
    Ok(())
}

/// Mounts through the daemon (starting it if needed); answers `{"mountPaths": [...]}`.
pub fn mount_answer(args: MountArgs, paths: &Paths) -> anyhow::Result<serde_json::Value> {
    let mount_path = args.mountpoint.as_deref().map(absolute).transpose()?;
    let scylla = args.scylla.filter();
    if scylla.is_some()
        && (args.selector.names_backup() || args.selector.snapshot.is_some() || args.selector.manifest.is_some())
    {
        bail!("--snapshot, --manifest, --generation, --at and --seqno select states of volumes or backups, not of a ScyllaDB view");
    }
    let backup = args.backup.is_some();
    if args.selector.names_backup() && !backup {
        bail!("--generation, --at and --seqno select a view of a backup location: use --backup URL");
    }
    if backup && (args.selector.snapshot.is_some() || args.selector.manifest.is_some()) {
        bail!("--snapshot and --manifest select a volume's state: use --store URL --volume ID");
    }
    if !backup && scylla.is_none() && args.volumes.is_empty() {
        bail!("--store needs at least one --volume");
    }
    let request = Request::Mount(MountRequest {
        store: args.backup.or(args.store).unwrap_or_default(),
        volumes: args.volumes,
        selector: args.selector.selector(backup),
        mount_path: mount_path.map(|p| p.display().to_string()),
        hydrate: args.hydrate.then_some(HydrateParams {
            bandwidth: args.bandwidth,
            deadline_ms: None,
        }),
        scylla,
        access: args.access.request(),
        planned: Vec::new(),
        guest: None,
    });
    daemon::ensure_running(paths)?;
    daemon::call(paths, &request)
}

pub fn umount(path: &Path, lazy: bool, paths: &Paths) -> anyhow::Result<()> {
    let path = absolute(path)?;
    if !paths.socket().exists() {
        bail!(
            "{} is not mounted: no lazysnap-mountd runs for {}",
            path.display(),
            paths.home().display()
        );
    }
    daemon::call(
        paths,
        &Request::Umount {
            mount_path: path.display().to_string(),
            lazy,
        },
    )?;
    Ok(())
}

/// An absolute path without resolving symlinks (a dead mount cannot be resolved).
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let joined = std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))?;
    // Drop "." and trailing separators so the daemon sees one spelling of each path.
    Ok(joined.components().collect())
}
