//! A progress bar on a terminal, nothing otherwise (scripts read the JSON on stdout).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use lazysnap::control::records::{JobState, RestoreJobStatus};
use lazysnap::hydrate::{HydrationState, HydrationStatus};
use lazysnap::publish::Progress;

pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(message: &'static str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(message);
        Bar(Some(bar))
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, _files: u64, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(bytes);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
}

/// What a progress bar shows of a job that runs in the daemon (a hydration, a restore).
pub trait JobStatus: serde::Serialize + serde::de::DeserializeOwned {
    fn bytes_total(&self) -> u64;
    fn bytes_done(&self) -> u64;
    /// Bytes per second.
    fn rate(&self) -> f64;
    fn eta_seconds(&self) -> Option<f64>;
    fn state(&self) -> &'static str;
    fn is_final(&self) -> bool;
    fn error(&self) -> Option<&str>;
    /// (done, total) sstables of a ScyllaDB copy: an sstable is usable once all of it is in.
    fn sstables(&self) -> Option<(u64, u64)> {
        None
    }
    fn deadline_at_risk(&self) -> bool {
        false
    }
}

impl JobStatus for HydrationStatus {
    fn bytes_total(&self) -> u64 {
        self.bytes_total
    }
    fn bytes_done(&self) -> u64 {
        self.bytes_done
    }
    fn rate(&self) -> f64 {
        self.rate
    }
    fn eta_seconds(&self) -> Option<f64> {
        self.eta_seconds
    }
    fn state(&self) -> &'static str {
        match self.state {
            HydrationState::Running => "RUNNING",
            HydrationState::Paused => "PAUSED",
            HydrationState::Completed => "COMPLETED",
            HydrationState::Cancelled => "CANCELLED",
            HydrationState::Failed => "FAILED",
        }
    }
    fn is_final(&self) -> bool {
        self.state.is_final()
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    fn deadline_at_risk(&self) -> bool {
        self.deadline_at_risk
    }
}

impl JobStatus for RestoreJobStatus {
    fn bytes_total(&self) -> u64 {
        self.job.bytes_total
    }
    fn bytes_done(&self) -> u64 {
        self.job.bytes_done
    }
    fn rate(&self) -> f64 {
        self.rate.unwrap_or(0.0)
    }
    fn eta_seconds(&self) -> Option<f64> {
        self.eta_seconds
    }
    fn state(&self) -> &'static str {
        match self.job.state {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }
    fn is_final(&self) -> bool {
        self.job.state.is_final()
    }
    fn error(&self) -> Option<&str> {
        self.job.error.as_deref()
    }
    fn sstables(&self) -> Option<(u64, u64)> {
        (self.job.sstables_total > 0).then_some((self.job.sstables_done, self.job.sstables_total))
    }
}

/// A byte progress bar over a job's status on a terminal, nothing otherwise.
pub struct StatusBar(Option<ProgressBar>);

impl StatusBar {
    pub fn new(label: &str, status: &impl JobStatus) -> StatusBar {
        if !std::io::stderr().is_terminal() {
            return StatusBar(None);
        }
        let bar = ProgressBar::new(status.bytes_total());
        bar.set_style(
            ProgressStyle::with_template(&format!("{label} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{msg}}"))
                .expect("template is valid")
                .progress_chars("=> "),
        );
        StatusBar(Some(bar))
    }

    pub fn show(&self, status: &impl JobStatus) {
        let Some(bar) = &self.0 else {
            return;
        };
        bar.set_position(status.bytes_done());
        let rate = status.rate() / 1e6;
        let eta = status.eta_seconds().map_or("?".into(), |s| format!("{s:.0}s"));
        let risk = match status.deadline_at_risk() {
            true => ", will miss its deadline",
            false => "",
        };
        let sstables = match status.sstables() {
            Some((done, total)) => format!(", {done}/{total} sstables"),
            None => String::new(),
        };
        bar.set_message(format!("{rate:.0} MB/s, eta {eta}{sstables}, {}{risk}", status.state()));
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
