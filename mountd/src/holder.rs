//! This daemon's handover holder (see `lazysnap::handover`): every mount's device file is handed
//! to it once the mount serves, and taken back by the next daemon. The holder is optional: without
//! one, mounts work as before and end with the daemon.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use lazysnap::fuse::Mount;
use lazysnap::handover::{Held, HolderLink, HolderStatus};
use lazysnap::paths::Paths;

pub struct Holder {
    link: Mutex<Option<HolderLink>>,
    socket: PathBuf,
    home: PathBuf,
    grace: Duration,
}

impl Holder {
    /// Connects to the holder a previous daemon left, or starts one.
    pub fn start(paths: &Paths, grace: Duration) -> Holder {
        let holder = Holder {
            link: Mutex::new(None),
            socket: paths.holder_socket(),
            home: paths.home().to_path_buf(),
            grace,
        };
        holder.connect();
        holder
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Option<HolderLink>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (Re)connects, starting a holder when none answers; true when one is connected.
    fn connect(&self) -> bool {
        let mut command = Command::new(own_binary());
        command
            .arg("hold")
            .arg("--home")
            .arg(&self.home)
            .arg("--grace")
            .arg(format!("{}s", self.grace.as_secs().max(1)));
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a signal to the daemon's group (Ctrl-C) must not reach it.
            command.process_group(0);
        }
        match HolderLink::connect_or_start(&self.socket, &mut command) {
            Ok(link) => {
                *self.link() = Some(link);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "no handover holder: mounts will not survive a daemon crash or restart");
                *self.link() = None;
                false
            }
        }
    }

    /// What a previous daemon handed over.
    pub fn take_all(&self) -> Vec<Held> {
        match self.link().as_ref().map(HolderLink::take_all) {
            Some(Ok(held)) => held,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot take the held mounts back from the handover holder");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Hands `mount`'s connection to the holder.
    pub fn keep(&self, mount: &Mount) {
        let Some(state) = mount.state() else { return };
        let state = serde_json::to_vec(&state).expect("session state serialises");
        let name = mount.path().display().to_string();
        let put = |link: &HolderLink| link.put(&name, &state, mount.device());
        let failed = match self.link().as_ref().map(put) {
            Some(Ok(())) => return,
            Some(Err(e)) => e.to_string(),
            None => "not connected".to_string(),
        };
        tracing::warn!(
            path = name,
            error = failed,
            "the handover holder did not take the mount; it will not survive a daemon crash"
        );
    }

    pub fn forget(&self, path: &str) {
        if let Some(link) = self.link().as_ref() {
            if let Err(e) = link.forget(path) {
                tracing::debug!(path, error = %e, "the handover holder could not let a mount go");
            }
        }
    }

    pub fn status(&self) -> Option<HolderStatus> {
        self.link().as_ref().and_then(|link| link.status().ok())
    }

    /// True when the holder answers; otherwise a new one is started and false is answered (the
    /// caller hands every live mount over again).
    pub fn check(&self) -> bool {
        if self.status().is_some() {
            return true;
        }
        tracing::warn!("the handover holder is gone; starting a new one");
        self.connect();
        false
    }

    /// Lets everything go and ends the holder (a clean stop: nothing is left to hand over).
    pub fn exit(&self) {
        if let Some(link) = self.link().take() {
            if let Err(e) = link.exit() {
                tracing::debug!(error = %e, "the handover holder did not answer its exit");
            }
        }
    }
}

/// This daemon's binary, to run as the holder. After an upgrade replaced it on disk, the running
/// daemon's own file is gone ("... (deleted)"): the binary now at that path speaks the same
/// protocol and does.
fn own_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| "lazysnap-mountd".into());
    if exe.exists() {
        return exe;
    }
    let shown = exe.display().to_string();
    shown
        .strip_suffix(" (deleted)")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(|| "lazysnap-mountd".into())
}
