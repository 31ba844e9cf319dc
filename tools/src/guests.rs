//! `lazysnap guests`: a node's part of a Fusion AccelerationPlan mounted as lazy guest volumes,
//! where Couchbase's accelerator would download every file first.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use lazysnap::control::guests::{GuestsMountRequest, GuestsRequest};
use lazysnap::control::Request;
use lazysnap::paths::Paths;

use crate::commands::{absolute, AccessArgs};
use crate::daemon;

#[derive(Subcommand, Debug)]
pub enum GuestsCommand {
    /// Split NODE's volumes of the plan into at most --parts guests by storageSize and mount each
    /// read-only at ROOT/<planUUID>/guest<i>, showing kv/<bucketUUID>/kvstore-<vb>/ at the plan's
    /// manifests (pinned by its snapshots). Prints the uploadMountedVolumes body once every guest
    /// is readable; hydration starts in the background, reads a process waits for first. A plan
    /// that is malformed, names unknown volumes or manifests, or whose snapshots expired is
    /// refused whole, with nothing mounted.
    Mount {
        /// Store URL the plan's volumes are in (the bucket's log store).
        #[arg(long)]
        store: String,
        /// The AccelerationPlan, as prepareRebalance or prepareSnapshotRestore answered it.
        #[arg(long)]
        plan: PathBuf,
        /// The node whose volumes to mount, as the plan names it (ns_1@host).
        #[arg(long)]
        node: String,
        /// Folder under which the plan's guests are mounted.
        #[arg(long)]
        root: PathBuf,
        /// Most guests to split the node's volumes into.
        #[arg(long, default_value_t = 4)]
        parts: usize,
        /// Storage bytes each guest but the last holds at least (suffixes K, M, G).
        #[arg(long, default_value = "0", value_parser = lazysnap::units::parse_size)]
        min_part_size: u64,
        /// A snapshot-restore plan: volumes show under their dstVolumeID.
        #[arg(long)]
        restore: bool,
        /// Bytes per second the node's guests hydrate at together, at most (suffixes K, M, G).
        #[arg(long, value_parser = lazysnap::units::parse_size)]
        bandwidth: Option<u64>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Progress of a plan's guests as JSON: bytes local and total per guest and per vbucket,
    /// hydration rate and ETA (the download stage's progress).
    Status {
        /// The plan's planUUID.
        #[arg(long)]
        plan: String,
    },
    /// Unmount a plan's guests and stop their hydration. Refused, with nothing unmounted, while
    /// files are open under any of them, unless --lazy.
    Release {
        #[arg(long)]
        plan: String,
        /// Detach guests with open files now; each goes once its files are closed.
        #[arg(long)]
        lazy: bool,
    },
}

pub fn run(command: GuestsCommand, paths: &Paths) -> anyhow::Result<()> {
    let request = match command {
        GuestsCommand::Mount {
            store,
            plan,
            node,
            root,
            parts,
            min_part_size,
            restore,
            bandwidth,
            access,
        } => {
            let text =
                std::fs::read_to_string(&plan).with_context(|| format!("cannot read plan {}", plan.display()))?;
            let plan = serde_json::from_str(&text).with_context(|| format!("plan {} is not JSON", plan.display()))?;
            let request = Request::GuestsMount(GuestsMountRequest {
                store,
                plan,
                node,
                root: absolute(&root)?.display().to_string(),
                parts: Some(parts),
                min_part_size: Some(min_part_size),
                restore,
                bandwidth,
                access: access.request(),
            });
            return daemon::print_request(paths, &request, true);
        }
        GuestsCommand::Status { plan } => Request::GuestsStatus(GuestsRequest {
            plan_uuid: plan,
            lazy: false,
        }),
        GuestsCommand::Release { plan, lazy } => Request::GuestsRelease(GuestsRequest { plan_uuid: plan, lazy }),
    };
    daemon::print_request(paths, &request, false)
}
