//! `lazysnap hydrate`: fetch every block of a mount into the node's disk cache in the background,
//! and pause, resume, cancel or watch that.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lazysnap::control::{HydrateAction, HydrateRequest, Request};
use lazysnap::paths::Paths;
use serde_json::Value;

use crate::commands::absolute;
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
    let mut status = daemon::call(paths, &request(action))?;
    if args.wait {
        let bar = Bar::new(&status);
        while !is_final(&status) {
            bar.show(&status);
            std::thread::sleep(Duration::from_millis(500));
            status = daemon::call(paths, &request(HydrateAction::Status))?;
        }
        bar.finish();
    }
    print_json(&status);
    if args.wait && status["state"] != "COMPLETED" {
        bail!(
            "hydration of {mount_path} ended {}: {}",
            status["state"].as_str().unwrap_or("?"),
            status["error"].as_str().unwrap_or("no error recorded")
        );
    }
    Ok(())
}

fn is_final(status: &Value) -> bool {
    matches!(status["state"].as_str(), Some("COMPLETED" | "CANCELLED" | "FAILED"))
}

/// A byte progress bar on a terminal, nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(status: &Value) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new(status["bytesTotal"].as_u64().unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template("hydrating [{bar:40}] {bytes}/{total_bytes} {msg}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        Bar(Some(bar))
    }

    fn show(&self, status: &Value) {
        let Some(bar) = &self.0 else {
            return;
        };
        bar.set_position(status["bytesDone"].as_u64().unwrap_or(0));
        let rate = status["rate"].as_f64().unwrap_or(0.0) / 1e6;
        let eta = status["etaSeconds"].as_f64().map_or("?".into(), |s| format!("{s:.0}s"));
        let risk = match status["deadlineAtRisk"].as_bool() {
            Some(true) => ", will miss its deadline",
            _ => "",
        };
        bar.set_message(format!(
            "{rate:.0} MB/s, eta {eta}, {}{risk}",
            status["state"].as_str().unwrap_or("")
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
