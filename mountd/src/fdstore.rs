//! systemd's file descriptor store as the keeper of mounts' FUSE connections. Under systemd the
//! holder process would die with the service's cgroup; systemd itself keeps what the daemon gives
//! it (`FDSTORE=1`, `FileDescriptorStoreMax=` in the unit) and hands it to the next start of the
//! service (`LISTEN_FDS`, `LISTEN_FDNAMES`) after a crash or a restart it makes.
//!
//! systemd keeps a descriptor and a name, nothing else: each connection's session state is written
//! beside its journal, under a file named like its descriptor.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use lazysnap::fuse::Mount;
use lazysnap::handover::Held;
use sd_notify::NotifyState;

/// Names of connections in the store start so; anything else passed in is not ours.
const PREFIX: &str = "fuse-";

pub struct FdStore {
    sessions: PathBuf,
    /// Mount path -> descriptor name, for what this daemon gave systemd.
    kept: Mutex<HashMap<String, String>>,
}

/// A name systemd accepts (printable ASCII, no ':', at most 255 bytes) for a mount path.
fn fd_name(path: &str) -> String {
    format!("{PREFIX}{}", &blake3::hash(path.as_bytes()).to_hex()[..32])
}

impl FdStore {
    pub fn new(sessions: PathBuf) -> FdStore {
        FdStore {
            sessions,
            kept: Mutex::default(),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.sessions.join(format!("{name}.state"))
    }

    /// The connections systemd passed to this start of the service.
    pub fn take_all(&self) -> Vec<Held> {
        let passed = match sd_notify::listen_fds_with_names() {
            Ok(passed) => passed.collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the descriptors systemd passed");
                return Vec::new();
            }
        };
        let mut held = Vec::new();
        for (raw, name) in passed {
            // SAFETY: systemd passed this descriptor to this process, which owns it from now on.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if !name.starts_with(PREFIX) {
                tracing::warn!(name, "closing a descriptor systemd passed that is not a mount's");
                continue;
            }
            let state = match std::fs::read(self.state_file(&name)) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(name, error = %e, "a kept connection without its session state; letting it go");
                    remove(&name);
                    continue;
                }
            };
            let Ok(session) = serde_json::from_slice::<lazysnap::fuse::SessionState>(&state) else {
                tracing::warn!(name, "unreadable session state; letting the connection go");
                remove(&name);
                continue;
            };
            let path = session.path.display().to_string();
            self.kept().insert(path.clone(), name);
            held.push(Held { name: path, state, fd });
        }
        held
    }

    /// Gives `mount`'s connection to systemd, its state written first.
    pub fn keep(&self, mount: &Mount) {
        let Some(state) = mount.state() else { return };
        let path = mount.path().display().to_string();
        let name = fd_name(&path);
        let file = self.state_file(&name);
        let written = serde_json::to_vec(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&file, &bytes));
        let stored = written.and_then(|()| {
            sd_notify::notify_with_fds(
                &[
                    NotifyState::FdStore,
                    NotifyState::FdName(&name),
                    NotifyState::Custom("FDPOLL=0"),
                ],
                &[mount.device().as_fd()],
            )
        });
        match stored {
            Ok(()) => {
                self.kept().insert(path, name);
            }
            Err(e) => tracing::warn!(
                path,
                error = %e,
                "systemd did not take the mount's connection; it will not survive a daemon crash"
            ),
        }
    }

    /// Takes a mount's connection back out of the store (it was unmounted).
    pub fn forget(&self, path: &str) {
        if let Some(name) = self.kept().remove(path) {
            remove(&name);
            let _ = std::fs::remove_file(self.state_file(&name));
        }
    }

    pub fn held(&self) -> usize {
        self.kept().len()
    }

    /// Takes everything out of the store: a clean stop leaves nothing to hand over.
    pub fn exit(&self) {
        let all: Vec<String> = self.kept().keys().cloned().collect();
        for path in all {
            self.forget(&path);
        }
    }
}

fn remove(name: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]) {
        tracing::debug!(name, error = %e, "systemd did not let a kept connection go");
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("state.partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}
