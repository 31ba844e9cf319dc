//! Talking to lazysnap-mountd: start it when a command needs it, send requests, stop it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use lazysnap::control::answers::{DaemonStatus, Ping};
use lazysnap::control::{self, ControlError, Request};
use lazysnap::paths::Paths;

/// Mounting resolves manifests and may read them from a slow store; give it time.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub fn call(paths: &Paths, request: &Request) -> anyhow::Result<serde_json::Value> {
    call_as(paths, request)
}

/// Sends `request` and reads its answer as `T` (see `lazysnap::control::answers`).
pub fn call_as<T: serde::de::DeserializeOwned>(paths: &Paths, request: &Request) -> anyhow::Result<T> {
    control::call_as(&paths.socket(), request, CALL_TIMEOUT).map_err(|e| match e {
        ControlError::Remote { status, message } => anyhow!("{message} ({status:?})"),
        other => other.into(),
    })
}

pub fn print_request(paths: &Paths, request: &Request, start: bool) -> anyhow::Result<()> {
    if start {
        ensure_running(paths)?;
    } else if !paths.socket().exists() {
        bail!("no lazysnap-mountd runs for {}", paths.home().display());
    }
    crate::print_json(&call(paths, request)?);
    Ok(())
}

fn answers(paths: &Paths) -> bool {
    control::call(&paths.socket(), &Request::Ping, Duration::from_secs(5)).is_ok()
}

/// Flags and environment for a daemon this command starts (the benchmark sets cache sizes and the
/// credentials of its own S3 server); by default the daemon inherits this command's environment.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    pub args: Vec<String>,
    /// Variables to set; with `replace_aws_env` every inherited `AWS_*` variable is dropped first.
    pub env: Vec<(String, String)>,
    pub replace_aws_env: bool,
}

/// `lazysnap daemon start`: refuses when a daemon already runs, since its flags would not apply.
pub fn start(paths: &Paths, flags: Vec<String>) -> anyhow::Result<()> {
    if answers(paths) {
        bail!(
            "lazysnap-mountd is already running for {}; stop it first (`lazysnap daemon stop`) to change its flags",
            paths.home().display()
        );
    }
    ensure_running_with(
        paths,
        &Launch {
            args: flags,
            ..Launch::default()
        },
    )
}

/// Starts lazysnap-mountd for this home unless one already answers.
pub fn ensure_running(paths: &Paths) -> anyhow::Result<()> {
    ensure_running_with(paths, &Launch::default())
}

pub fn ensure_running_with(paths: &Paths, launch: &Launch) -> anyhow::Result<()> {
    if answers(paths) {
        return Ok(());
    }
    paths
        .create()
        .with_context(|| format!("cannot create {}", paths.home().display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .with_context(|| format!("cannot open {}", paths.daemon_log().display()))?;
    let mut command = Command::new(mountd_binary());
    if launch.replace_aws_env {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                command.env_remove(key);
            }
        }
    }
    let mut child = command
        .arg("--home")
        .arg(paths.home())
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A session of its own: the daemon outlives this command and ignores the terminal's signals.
        .process_group(0)
        .spawn()
        .context("cannot start lazysnap-mountd")?;
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if answers(paths) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            // Another command may have started it first; then ours exits and that one answers.
            if answers(paths) {
                return Ok(());
            }
            bail!(
                "lazysnap-mountd exited ({status}) at start; see {}: {}",
                paths.daemon_log().display(),
                last_line(&paths.daemon_log())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "lazysnap-mountd did not answer within {START_TIMEOUT:?}; see {}",
        paths.daemon_log().display()
    )
}

fn mountd_binary() -> PathBuf {
    crate::sibling_binary("lazysnap-mountd")
}

/// The log's last error line (a bad flag is followed by usage hints), else its last line.
fn last_line(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A backtrace (RUST_BACKTRACE=1) follows the error it belongs to: its frames say nothing.
    let frame = |l: &str| {
        let l = l.trim();
        l.starts_with("at ")
            || l == "Stack backtrace:"
            || l.split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !frame(l)).collect();
    let is_error = |l: &&&str| {
        let lower = l.to_ascii_lowercase();
        lower.contains("error") || lower.contains("panicked")
    };
    let last = lines.last().copied().unwrap_or_default();
    lines
        .iter()
        .rev()
        .take(20)
        .find(is_error)
        .copied()
        .unwrap_or(last)
        .trim()
        .to_string()
}

/// Stops the daemon and waits until its process is gone, so its mounts are gone too.
pub fn stop(paths: &Paths) -> anyhow::Result<()> {
    let status = match control::call_as::<Ping>(&paths.socket(), &Request::Ping, Duration::from_secs(5)) {
        Ok(status) => status,
        Err(ControlError::Unavailable { .. }) => {
            eprintln!("lazysnap: no lazysnap-mountd runs for {}", paths.home().display());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let pid = status.pid as libc::pid_t;
    call(paths, &Request::Shutdown)?;
    wait_for_exit(pid)
}

/// `lazysnap daemon restart`: the running daemon hands its mounts over and exits; a new one, with
/// `flags` or the old one's, takes them over. Prints the new daemon's status once it serves them.
pub fn restart(paths: &Paths, flags: Vec<String>) -> anyhow::Result<()> {
    let ping: Ping = control::call_as(&paths.socket(), &Request::Ping, Duration::from_secs(5))
        .with_context(|| format!("no lazysnap-mountd answers for {}", paths.home().display()))?;
    let pid = ping.pid as libc::pid_t;
    if ping.supervised && !flags.is_empty() {
        bail!("systemd runs this lazysnap-mountd: its flags come from the unit and the configuration file, not from restart");
    }
    let flags = match flags.is_empty() {
        true => ping.flags,
        false => flags,
    };
    call(paths, &Request::HandOver)?;
    wait_for_exit(pid)?;
    // Under systemd the daemon exits asking to be restarted, and systemd starts the successor
    // with the connections from its descriptor store.
    if !ping.supervised {
        ensure_running_with(
            paths,
            &Launch {
                args: flags,
                ..Launch::default()
            },
        )?;
    }
    let started = Instant::now();
    loop {
        let answer = control::call_as::<Ping>(&paths.socket(), &Request::Ping, Duration::from_secs(5));
        if answer
            .as_ref()
            .is_ok_and(|p| p.recovered && p.pid as libc::pid_t != pid)
        {
            let status: DaemonStatus = call_as(paths, &Request::Status)?;
            crate::print_json(&serde_json::json!({
                "pid": status.pid,
                "previousPid": pid,
                "mounts": status.mounts.len(),
                "holder": status.holder,
            }));
            return Ok(());
        }
        if started.elapsed() > CALL_TIMEOUT {
            bail!("the new lazysnap-mountd did not take the mounts over within {CALL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_exit(pid: libc::pid_t) -> anyhow::Result<()> {
    let started = Instant::now();
    // A daemon this process started (the benchmark's) stays a zombie until reaped; for any other,
    // waitpid fails with ECHILD and changes nothing.
    // SAFETY: waitpid with WNOHANG and a null status has no other effect.
    while unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } != pid && !exited(pid) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("lazysnap-mountd (pid {pid}) did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub use lazysnap::process::exited;

#[cfg(test)]
mod tests {
    #[test]
    fn the_error_line_is_found_above_a_backtrace() {
        let path = std::env::temp_dir().join(format!("lazysnap-last-line-{}", std::process::id()));
        let mut log =
            String::from("INFO started\nError: another lazysnap-mountd already runs for /h\n\nStack backtrace:\n");
        for i in 0..19 {
            log.push_str(&format!("  {i}: frame{i}\n             at src/x.rs:{i}:1\n"));
        }
        std::fs::write(&path, log).unwrap();
        let line = super::last_line(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(line, "Error: another lazysnap-mountd already runs for /h");
    }
}
