//! A progress bar on a terminal, nothing otherwise (scripts read the JSON on stdout).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
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
