//! The daemon's state: index, shared block cache, mounts; and the answer to each request.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use anyhow::{bail, Context};
use lazysnap::cache::{BlockCache, CacheConfig};
use lazysnap::control::{HydrateParams, Request, Response};
use lazysnap::index::{Index, MountRow};
use lazysnap::paths::Paths;
use serde_json::json;

use crate::mounts::{Mounts, Tuning};

pub struct Daemon {
    pub paths: Paths,
    pub mounts: Mounts,
    /// Mounts of a daemon that died, to mount again once the control socket answers.
    stale: std::sync::Mutex<Vec<MountRow>>,
    _lock: std::fs::File,
}

impl Daemon {
    pub fn start(
        paths: Paths,
        cache: CacheConfig,
        tuning: Tuning,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<Daemon>> {
        paths
            .create()
            .with_context(|| format!("cannot create {}", paths.home().display()))?;
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.daemon_lock())
            .with_context(|| format!("cannot open {}", paths.daemon_lock().display()))?;
        // SAFETY: flock on a descriptor we own; non-blocking.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another lazysnap-mountd already runs for {}", paths.home().display());
        }
        let index = Arc::new(Index::open(&paths.index())?);
        let cache = Arc::new(BlockCache::new(&cache)?);
        let mounts = Mounts::new(paths.clone(), index, cache, tuning, runtime);
        let stale = mounts.take_stale();
        tracing::info!(home = %paths.home().display(), pid = std::process::id(), "lazysnap-mountd started");
        Ok(Arc::new(Daemon {
            paths,
            mounts,
            stale: std::sync::Mutex::new(stale),
            _lock: lock,
        }))
    }

    /// Brings back what a daemon that died had mounted (see [`Mounts::restore`]).
    pub async fn restore_mounts(&self) {
        let stale = std::mem::take(&mut *self.stale.lock().unwrap_or_else(|p| p.into_inner()));
        if !stale.is_empty() {
            self.mounts.restore(stale).await;
        }
    }

    /// Answers one request; `Shutdown` is answered by the server, which then stops.
    pub async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Mount(req) => match self.mounts.mount(req).await {
                Ok(path) => Response::ok(json!({ "mountPaths": [path] })),
                Err(e) => Response::err(e.status(), e.to_string()),
            },
            Request::Umount { mount_path, lazy } => match self.mounts.unmount(&mount_path, lazy).await {
                Ok(()) => Response::ok(json!({})),
                Err(e) => Response::err(e.status(), e.to_string()),
            },
            Request::Hydrate(req) => {
                let params = HydrateParams {
                    bandwidth: req.bandwidth,
                    deadline_ms: req.deadline_ms,
                };
                match self.mounts.hydrate(&req.mount_path, req.action, &params) {
                    Ok(status) => Response::ok(json!(status)),
                    Err(e) => Response::err(e.status(), e.to_string()),
                }
            }
            Request::Mounts => Response::ok(json!(self.mounts.list())),
            Request::Status => Response::ok(json!({
                "pid": std::process::id(),
                "home": self.paths.home(),
                "mounts": self.mounts.list(),
                "cache": self.mounts.cache_stats(),
                "blockBuffers": self.mounts.buffer_stats(),
            })),
            Request::Shutdown => Response::ok(json!({})),
        }
    }

    pub fn shutdown(&self) {
        self.mounts.unmount_all();
        let _ = std::fs::remove_file(self.paths.socket());
        tracing::info!("lazysnap-mountd stopped");
    }
}
