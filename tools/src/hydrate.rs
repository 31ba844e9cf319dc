//! `lazysnap hydrate`: fetch every block of a mount into the node's disk cache in the background,
//! and pause, resume, cancel or watch that.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use lazysnap::control::{HydrateAction, HydrateRequest, Request};
use lazysnap::hydrate::{HydrationState, HydrationStatus};
use lazysnap::paths::Paths;

use crate::commands::absolute;
use crate::progress::{JobStatus, StatusBar};
use crate::{daemon, print_json};

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("action").multiple(false))]
pub struct HydrateArgs {
    /// The mount path printed by `lazysnap mount`.
    path: PathBuf,
    /// Bytes per second at most (suffixes K, M, G); a deadline may raise it to what finishes in time.
    #[arg(long, value_parser = lazysnap::units::parse_size)]
    bandwidth: Option<u64>,
    /// Finish by this time, in Unix milliseconds (default for a snapshot mount: its validTill).
    #[arg(long, value_name = "UNIX_MS")]
    deadline_ms: Option<u64>,
    /// Pause fetching; blocks already fetched stay.
    #[arg(long, group = "action")]
    pause: bool,
    /// Resume a paused hydration.
    #[arg(long, group = "action")]
    resume: bool,
    /// Stop for good; blocks already fetched stay.
    #[arg(long, group = "action")]
    cancel: bool,
    /// Only report progress.
    #[arg(long, group = "action")]
    status: bool,
    /// Stay until the hydration ends: a progress bar on a terminal, then the final status; exits
    /// non-zero unless it completed.
    #[arg(long)]
    wait: bool,
}

pub fn hydrate(args: HydrateArgs, paths: &Paths) -> anyhow::Result<()> {
    let action = match (args.pause, args.resume, args.cancel, args.status) {
        (true, ..) => HydrateAction::Pause,
        (_, true, ..) => HydrateAction::Resume,
        (_, _, true, _) => HydrateAction::Cancel,
        (.., true) => HydrateAction::Status,
        _ => HydrateAction::Start,
    };
    let mount_path = absolute(&args.path)?.display().to_string();
    if !paths.socket().exists() {
        bail!(
            "{mount_path} is not mounted: no lazysnap-mountd runs for {}",
            paths.home().display()
        );
    }
    let request = |action| {
        Request::Hydrate(HydrateRequest {
            mount_path: mount_path.clone(),
            action,
            bandwidth: args.bandwidth,
            deadline_ms: args.deadline_ms,
        })
    };
    let mut status: HydrationStatus = daemon::call_as(paths, &request(action))?;
    if args.wait {
        let bar = StatusBar::new("hydrating", &status);
        while !status.is_final() {
            bar.show(&status);
            std::thread::sleep(Duration::from_millis(500));
            status = daemon::call_as(paths, &request(HydrateAction::Status))?;
        }
        bar.finish();
    }
    print_json(&status);
    if args.wait && status.state != HydrationState::Completed {
        bail!(
            "hydration of {mount_path} ended {}: {}",
            status.state(),
            status.error().unwrap_or("no error recorded")
        );
    }
    Ok(())
}
