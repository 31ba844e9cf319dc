//! The daemon's state: index, shared block cache, mounts; and the answer to each request.

use std::sync::Arc;

use anyhow::Context;
use lazysnap::control::answers::{DaemonStatus, Done, LogLevelSet, Ping};
use lazysnap::control::{ops, HydrateParams, NamespaceDeleteRequest, OpError, Request, Response};
use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use lazysnap::namespace::{self, DeleteReport};
use lazysnap::paths::Paths;
use lazysnap::view::{Reading, ReadingConfig};

use crate::backups::Backups;
use crate::fdstore::FdStore;
use crate::holder::Holder;
use crate::keeper::{Handover, Keeper};
use crate::logging::LogLevel;
use crate::mounts::{Mounts, Tuning};
use crate::restores::Restores;
use crate::uploaders::Uploaders;

/// How long a hand-over waits for reads already read to be answered; any still in flight after
/// that are resent by the kernel to the successor.
const HANDOVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest a `restore_status` waits for its job to end before answering.
const MAX_STATUS_WAIT_MS: u64 = 60_000;

pub struct Daemon {
    pub paths: Paths,
    pub mounts: Mounts,
    pub(crate) uploaders: Uploaders,
    backups: Backups,
    restores: Restores,
    pub(crate) index: Arc<Index>,
    /// Set once the mounts a previous daemon left are served again.
    recovered: std::sync::atomic::AtomicBool,
    options: Options,
    metrics_bound: std::sync::OnceLock<std::net::SocketAddr>,
    _lock: std::fs::File,
}

/// How this daemon runs, beside its memory plan and limits.
pub struct Options {
    /// Who keeps mounts' connections across a restart.
    pub handover: Handover,
    /// How long the holder keeps mounts for a daemon that died.
    pub handover_grace: std::time::Duration,
    /// This daemon's command-line flags, for `lazysnap daemon restart` to start its successor alike.
    pub flags: Vec<String>,
    pub log: LogLevel,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where hydrations run: threads of lower CPU priority (`None`: the daemon's own runtime).
    pub background_runtime: Option<tokio::runtime::Handle>,
}

impl Daemon {
    pub fn start(
        paths: Paths,
        reading: ReadingConfig,
        tuning: Tuning,
        options: Options,
    ) -> anyhow::Result<Arc<Daemon>> {
        // SAFETY: geteuid has no preconditions.
        paths.create_private(unsafe { libc::geteuid() })?;
        let lock = paths
            .try_lock_daemon()
            .with_context(|| format!("cannot open {}", paths.daemon_lock().display()))?
            .with_context(|| format!("another lazysnap-mountd already runs for {}", paths.home().display()))?;
        let index = Arc::new(Index::open(&paths.index())?);
        let mut reading = Reading::open(index.clone(), &reading)?;
        if let Some(runtime) = options.background_runtime.clone() {
            reading.set_background_runtime(runtime);
        }
        let reading = Arc::new(reading);
        let keeper = match options.handover {
            Handover::Systemd => Keeper::Systemd(FdStore::new(paths.sessions())),
            Handover::None => Keeper::Nobody,
            Handover::Holder | Handover::Auto => Keeper::Holder(Holder::start(&paths, options.handover_grace)),
        };
        let mounts = Mounts::new(paths.clone(), reading.clone(), tuning, keeper);
        tracing::info!(home = %paths.home().display(), pid = std::process::id(), "lazysnap-mountd started");
        Ok(Arc::new(Daemon {
            paths,
            mounts,
            uploaders: Uploaders::new(index.clone()),
            backups: Backups::new(index.clone()),
            restores: Restores::new(reading),
            index,
            recovered: std::sync::atomic::AtomicBool::new(false),
            options,
            metrics_bound: std::sync::OnceLock::new(),
            _lock: lock,
        }))
    }

    /// Brings back what a previous daemon had mounted (live, through the holder, or mounted again:
    /// see [`Mounts::recover`]), then its background work. `admin` is the mounts' admin lock,
    /// taken by the caller before anyone could ask for a mount.
    pub async fn restore_mounts(&self, admin: tokio::sync::OwnedMutexGuard<()>) {
        let held = self.mounts.holder.take_all();
        self.mounts.recover(held, admin).await;
        self.recovered.store(true, std::sync::atomic::Ordering::Release);
        self.uploaders.restore().await;
        self.backups.restore().await;
        self.restores.restore(&self.mounts).await;
    }

    /// Answers one request of `peer` (uid, gid); `Shutdown` is answered by the server, which then
    /// stops.
    pub async fn handle(&self, request: Request, peer: (u32, u32)) -> Response {
        let index = &self.index;
        match request {
            Request::Mount(req) => Response::answer(self.mounts.mount(req, peer).await),
            Request::Umount { mount_path, lazy } => {
                Response::answer(self.mounts.unmount(&mount_path, lazy).await.map(|()| Done {}))
            }
            Request::Hydrate(req) => {
                let params = HydrateParams {
                    bandwidth: req.bandwidth,
                    deadline_ms: req.deadline_ms,
                };
                Response::answer(self.mounts.hydrate(&req.mount_path, req.action, &params))
            }
            Request::SnapshotCreate(req) => Response::answer(ops::snapshot_create(&req, index).await),
            Request::SnapshotRelease(req) => Response::answer(ops::snapshot_release(&req, index).await),
            Request::SnapshotList(req) => Response::answer(ops::snapshot_list(&req).await),
            Request::SnapshotDescribe(req) => Response::answer(ops::snapshot_describe(&req).await),
            Request::Gc(req) => Response::answer(ops::gc(&req, index).await),
            Request::UploaderStart(req) => Response::answer(self.uploaders.start(&req).await),
            Request::UploaderStop(req) => Response::answer(self.uploaders.stop(&req).await),
            Request::Uploaders => Response::answer(Ok::<_, OpError>(self.uploaders.list().await)),
            Request::BackupStart(req) => Response::answer(self.backups.start(&req).await),
            Request::BackupStop(req) => Response::answer(self.backups.stop(&req).await),
            Request::Backups => Response::answer(Ok::<_, OpError>(self.backups.list().await)),
            Request::BackupInfo(req) => Response::answer(ops::backup_info(&req.location, index).await),
            Request::RestoreStart(req) => Response::answer(self.restores.start(&self.mounts, &req).await),
            Request::RestoreStatus(req) => {
                let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0).min(MAX_STATUS_WAIT_MS));
                Response::answer(self.restores.status_within(&self.mounts, &req.id, wait).await)
            }
            Request::RestoreList => Response::answer(self.restores.list(&self.mounts)),
            Request::RestoreCancel(req) => Response::answer(self.restores.cancel(&self.mounts, &req).await),
            Request::RestoreResume(req) => Response::answer(self.restores.resume(&self.mounts, &req).await),
            Request::Sync(req) => Response::answer(self.uploaders.sync(&req).await),
            Request::NamespaceList(req) => Response::answer(ops::namespace_list(&req).await),
            Request::NamespaceDelete(req) => Response::answer(self.delete_namespaces(&req).await),
            Request::KvEngine(req) => match self.kv_engine(req, peer).await {
                Ok(answer) => Response::ok(answer),
                Err(e) => Response::err(e.status, e.message),
            },
            Request::FusionStats(req) => match self.fusion_stats(&req).await {
                Ok(answer) => Response::ok(answer),
                Err(e) => Response::err(e.status, e.message),
            },
            Request::GuestsMount(req) => Response::answer(self.mounts.mount_guests(req, peer).await),
            Request::GuestsStatus(req) => Response::answer(self.mounts.guests_status(&req)),
            Request::GuestsRelease(req) => Response::answer(self.mounts.release_guests(&req).await),
            Request::Mounts => Response::answer(Ok::<_, OpError>(self.mounts.list())),
            Request::Status => Response::answer(Ok::<_, OpError>(self.status().await)),
            Request::Ping => Response::answer(Ok::<_, OpError>(self.ping())),
            Request::LogLevel(req) => Response::answer(
                self.options
                    .log
                    .set(&req.level)
                    .map(|previous| LogLevelSet {
                        level: req.level.clone(),
                        previous,
                    })
                    .map_err(|e| OpError::invalid(e.to_string())),
            ),
            Request::Shutdown | Request::HandOver => Response::answer(Ok::<_, OpError>(Done {})),
        }
    }

    /// The figures a metrics scrape shows.
    pub async fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        crate::metrics::Snapshot {
            mounts: self.mounts.list(),
            cache: self.mounts.cache_stats(),
            buffers: self.mounts.buffer_stats(),
            limits: self.mounts.limits(),
            // Jobs that ended stay in the index for good; their series would grow without bound.
            restores: self
                .restores
                .list(&self.mounts)
                .map(|r| r.jobs)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !r.job.state.is_final())
                .collect(),
            uploaders: self.uploaders.list().await,
            backups: self.backups.list().await,
            http: lazysnap::store::http_stats(),
        }
    }

    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.options.metrics_addr
    }

    /// Where metrics are served once bound (the port chosen for port 0).
    pub fn metrics_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.metrics_bound.set(addr);
    }

    fn ping(&self) -> Ping {
        Ping {
            pid: std::process::id(),
            flags: self.options.flags.clone(),
            recovered: self.recovered.load(std::sync::atomic::Ordering::Acquire),
            supervised: crate::keeper::under_systemd(),
        }
    }

    async fn status(&self) -> DaemonStatus {
        DaemonStatus {
            pid: std::process::id(),
            home: self.paths.home().to_path_buf(),
            flags: self.options.flags.clone(),
            recovered: self.recovered.load(std::sync::atomic::Ordering::Acquire),
            log_level: self.options.log.current(),
            handover: self.mounts.holder.name().to_string(),
            metrics_addr: self.metrics_bound.get().map(|a| a.to_string()),
            mounts: self.mounts.list(),
            limits: self.mounts.limits(),
            holder: self.mounts.holder.status(),
            cache: self.mounts.cache_stats(),
            block_buffers: self.mounts.buffer_stats(),
            uploaders: self.uploaders.list().await,
        }
    }

    /// Fusion 0x77 with this node's guard: refused while the store has live mounts here, or while
    /// this node uploads a volume that would be deleted, unless forced (then those uploaders stop
    /// first and the mounts read I/O errors for what is gone). Mounts wait until it is done.
    async fn delete_namespaces(&self, req: &NamespaceDeleteRequest) -> Result<DeleteReport, OpError> {
        let store = ops::open_store(&req.logstore_uri, false)?;
        let plan = namespace::plan(&store, &req.namespaces).await?;
        self.delete_planned_namespaces(&store, plan, req.force, req.dry_run)
            .await
    }

    /// Deletes what `plan` dooms, refused (unless forced) while this node mounts the store or
    /// uploads a doomed volume.
    pub(crate) async fn delete_planned_namespaces(
        &self,
        store: &lazysnap::store::Store,
        plan: namespace::Plan,
        force: bool,
        dry_run: bool,
    ) -> Result<DeleteReport, OpError> {
        let url = store.url().to_string();
        let _no_mounts_meanwhile = self.mounts.hold().await;
        let doomed: Vec<&String> = plan.deleted.iter().flat_map(|ns| &ns.volumes).collect();
        let uploading: Vec<VolumeId> = self
            .uploaders
            .volumes_of(&url)
            .await
            .into_iter()
            .filter(|v| doomed.iter().any(|d| *d == v.as_str()))
            .collect();
        let mounted = self.mounts.of_store(&url);
        if !force && !dry_run {
            if let Some((path, _)) = mounted.first() {
                return Err(OpError::invalid(format!(
                    "store {url} has {} live mount(s) on this node, e.g. {}; unmount them or force the delete",
                    mounted.len(),
                    path.display()
                )));
            }
            if let Some(volume) = uploading.first() {
                return Err(OpError::invalid(format!(
                    "this node uploads volume {volume} of a namespace to delete; stop its uploader or force the delete"
                )));
            }
        }
        if !dry_run {
            self.uploaders.stop_volumes(&url, &uploading).await;
            for (path, volumes) in &mounted {
                tracing::warn!(path = %path.display(), ?volumes, "namespace delete forced while mounted: reads of blocks not yet local will fail");
            }
        }
        Ok(namespace::carry_out(store, &self.index, plan, dry_run).await?)
    }

    /// Background work before a clean stop: uploaders and backups finish their round (backups
    /// run their final one), restore jobs pause to resume at the next start. Handing over, the
    /// uploaders and backups stay recorded, for the successor to start again.
    pub async fn stop_background(&self, handing_over: bool) {
        self.restores.pause_all().await;
        self.backups.stop_all(!handing_over).await;
        self.uploaders.stop_all(!handing_over).await;
    }

    pub async fn shutdown(&self) {
        self.mounts.unmount_all().await;
        let _ = std::fs::remove_file(self.paths.socket());
        tracing::info!("lazysnap-mountd stopped");
    }

    /// Stops serving and leaves every mount to the next daemon.
    pub async fn hand_over(&self) {
        self.mounts.hand_over_all(HANDOVER_DRAIN).await;
        let _ = std::fs::remove_file(self.paths.socket());
        tracing::info!("lazysnap-mountd handed its mounts over and stopped");
    }

    /// Hands every mount to a new holder if the holder died.
    pub fn check_holder(&self) {
        if !self.mounts.holder.check() {
            self.mounts.hold_all();
        }
    }
}
