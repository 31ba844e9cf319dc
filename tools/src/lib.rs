//! What the `lazysnap` command line shares with other front ends on the node (the benchmark,
//! `lazysnap-bench`): the daemon client and the runtime a command runs its futures on.

pub mod daemon;

use std::path::PathBuf;

/// Runs a future on a runtime made for this command.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
        .block_on(future)
}

/// The binary `name` installed beside this one (a package or a cargo build), else `name` to be
/// found on PATH.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Prints a JSON value, pretty on a terminal and compact otherwise.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    use std::io::IsTerminal;
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    println!("{}", text.expect("JSON serialises"));
}
