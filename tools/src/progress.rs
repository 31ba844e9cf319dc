//! A progress bar on a terminal, nothing otherwise (scripts read the JSON on stdout).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use lazysnap::publish::Progress;
use serde_json::Value;

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

pub fn is_final(status: &Value) -> bool {
    matches!(status["state"].as_str(), Some("COMPLETED" | "CANCELLED" | "FAILED"))
}

/// A byte progress bar over a job's status JSON (bytesTotal, bytesDone, rate, etaSeconds, state,
/// sstablesDone/sstablesTotal)
/// on a terminal, nothing otherwise.
pub struct StatusBar(Option<ProgressBar>);

impl StatusBar {
    pub fn new(label: &str, status: &Value) -> StatusBar {
        if !std::io::stderr().is_terminal() {
            return StatusBar(None);
        }
        let bar = ProgressBar::new(status["bytesTotal"].as_u64().unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(&format!("{label} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{msg}}"))
                .expect("template is valid")
                .progress_chars("=> "),
        );
        StatusBar(Some(bar))
    }

    pub fn show(&self, status: &Value) {
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
        // A copy of ScyllaDB sstables counts them too: an sstable is usable once all of it is in.
        let sstables = match status["sstablesTotal"].as_u64().filter(|&n| n > 0) {
            Some(total) => format!(", {}/{total} sstables", status["sstablesDone"].as_u64().unwrap_or(0)),
            None => String::new(),
        };
        bar.set_message(format!(
            "{rate:.0} MB/s, eta {eta}{sstables}, {}{risk}",
            status["state"].as_str().unwrap_or("")
        ));
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
