//! The daemon's log: `tracing` events to standard error (the log file the CLI starts it with, or
//! the journal under systemd), filtered by a level an operator can change while it runs.

use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the running daemon's log filter.
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

/// Starts logging at `filter` (a level such as `debug`, or `tracing` directives such as
/// `info,lazysnap::fetch=debug`).
pub fn init(filter: &str) -> anyhow::Result<LogLevel> {
    let parsed = parse(filter)?;
    let (layer, handle) = reload::Layer::new(parsed);
    let stderr = std::io::stderr();
    tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&stderr)),
        )
        .init();
    Ok(LogLevel {
        handle,
        current: Mutex::new(filter.to_string()),
    })
}

fn parse(filter: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(filter).map_err(|e| {
        anyhow::anyhow!(
            "log level {filter:?} is not a level (error, warn, info, debug, trace) or tracing directives: {e}"
        )
    })
}

impl LogLevel {
    /// Sets a new filter; answers the one it replaces.
    pub fn set(&self, filter: &str) -> anyhow::Result<String> {
        let parsed = parse(filter)?;
        self.handle
            .reload(parsed)
            .map_err(|e| anyhow::anyhow!("cannot change the log level: {e}"))?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let previous = std::mem::replace(&mut *current, filter.to_string());
        tracing::warn!(level = filter, previous = %previous, "log level changed");
        Ok(previous)
    }

    pub fn current(&self) -> String {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
