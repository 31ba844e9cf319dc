//! The daemon's mounts: resolve a request into volume views, mount them, prove the mount readable,
//! and undo every step if any fails, so a failed mount leaves no mount and no folder behind.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lazysnap::access::{Access, AccessRequest, Parties};
use lazysnap::cache::CacheStats;
use lazysnap::control::answers::{Limits, MountInfo, Mounted, ScyllaMounted, VolumeShown};
use lazysnap::control::records::{MountRecord, ScyllaShown};
use lazysnap::control::{HydrateAction, HydrateParams, MountRequest, OpError};
use lazysnap::fs::LazyFs;
use lazysnap::fuse::{self, Attach, Busy, Mount, Server};
use lazysnap::hydrate::HydrationStatus;
use lazysnap::index::Index;
use lazysnap::paths::Paths;
use lazysnap::store::{BufferStats, StoreUrl};
use lazysnap::view::{Reading, Resolved, ViewSpec};

use crate::hydrations::Hydrations;
use crate::keeper::Keeper;

pub(crate) struct Active {
    pub(crate) mount: Mount,
    pub(crate) store: StoreUrl,
    /// The daemon made the folder, so it removes it again.
    pub(crate) created_dir: bool,
    pub(crate) record: MountRecord,
}

/// What bounds all mounts together: the node-wide FUSE server (requests in flight), the most
/// mounts served at once and the most files they show. (GET slots and the memory budget are the
/// daemon's [`Reading`], shared with restores.)
#[derive(Debug, Clone)]
pub struct Tuning {
    pub server: Arc<Server>,
    pub max_mounts: usize,
    /// Files shown by all mounts together: each costs the daemon memory for as long as it is
    /// mounted (its place in the inode tree, its name and index row).
    pub max_files: u64,
    /// Bytes of first touches a new mount records for warm starts (0: none, and no replay).
    pub first_touch: u64,
}

/// Descriptors kept free for everything but mounts: the disk cache's open objects (256 x 2),
/// passthrough files, the index, sockets and the store clients.
const DESCRIPTOR_RESERVE: u64 = 1024;

pub struct Mounts {
    pub(crate) paths: Paths,
    pub(crate) index: Arc<Index>,
    pub(crate) reading: Arc<Reading>,
    pub(crate) tuning: Tuning,
    active: Mutex<BTreeMap<PathBuf, Active>>,
    pub(crate) hydrations: Hydrations,
    pub(crate) warm_starts: crate::warm_starts::WarmStarts,
    expiry: crate::expiry::Watch,
    pub(crate) holder: Keeper,
    /// Mount and unmount run one at a time: they change the mount table and folders.
    pub(crate) admin: Arc<tokio::sync::Mutex<()>>,
}

impl Mounts {
    pub fn new(paths: Paths, reading: Arc<Reading>, tuning: Tuning, holder: Keeper) -> Mounts {
        Mounts {
            paths,
            index: reading.index().clone(),
            reading,
            tuning,
            active: Mutex::default(),
            hydrations: Hydrations::default(),
            warm_starts: Default::default(),
            expiry: crate::expiry::Watch::default(),
            holder,
            admin: Arc::default(),
        }
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.reading.cache_stats()
    }

    /// Block data this daemon holds in memory, shared by all mounts.
    pub fn buffer_stats(&self) -> BufferStats {
        self.reading.fetch_config().buffers.stats()
    }

    /// Holds off mounts and unmounts while the guard lives (a namespace delete checks, then deletes).
    pub async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.admin.lock().await
    }

    /// Paths of this daemon's mounts of `store`, with their volumes.
    pub fn of_store(&self, store: &str) -> Vec<(PathBuf, Vec<String>)> {
        self.active()
            .iter()
            .filter(|(_, active)| active.store.to_string() == store)
            .map(|(path, active)| (path.clone(), active.record.request.volume_ids()))
            .collect()
    }

    /// Mounts `request` for `requester` (uid, gid), whose it is unless the request names another
    /// owner; answers `{"mountPaths": [...]}`, with what a ScyllaDB view shows and the sstables it
    /// leaves out because they span the requested range.
    pub async fn mount(&self, request: MountRequest, requester: (u32, u32)) -> Result<Mounted, OpError> {
        let _admin = self.admin.lock().await;
        self.forget_ended().await;
        let path = self.mount_as(request, None, requester).await?;
        let shown = self
            .active()
            .get(Path::new(&path))
            .and_then(|a| a.record.scylla.clone());
        Ok(Mounted {
            mount_paths: vec![path],
            sstables: shown.as_ref().map(|s| s.sstables),
            spanning: shown.map(|s| s.spanning),
        })
    }

    /// Mounts `request`, or, with `restoring`, the mount a previous daemon recorded.
    pub(crate) async fn mount_as(
        &self,
        request: MountRequest,
        restoring: Option<&MountRecord>,
        requester: (u32, u32),
    ) -> Result<String, OpError> {
        self.mount_resolved(request, None, restoring, requester).await
    }

    /// [`Mounts::mount_as`] for a view the caller resolved already (a plan's guests are all
    /// resolved before the first is mounted): it is not read from the stores a second time.
    pub(crate) async fn mount_resolved(
        &self,
        mut request: MountRequest,
        resolved: Option<Resolved>,
        restoring: Option<&MountRecord>,
        requester: (u32, u32),
    ) -> Result<String, OpError> {
        let started = std::time::Instant::now();
        self.check_limits(&request)?;
        let access = resolve_access(&request.access, requester).await?;
        // Kept in numbers: a restarted daemon shows the same owner whatever names mean by then.
        request.access = AccessRequest::of(&access);
        let pinned = restoring.map(|r| r.manifests.as_slice());
        // Profiles live beside a lazysnap volume's manifests: a backup location or a ScyllaDB
        // bucket is someone else's layout, and nothing is written there.
        let own_volumes = request.scylla.is_none() && !request.selector.is_backup();
        let spec = request.view_spec()?;
        let profiles = match (&spec, restoring.is_none() && own_volumes && self.tuning.first_touch > 0) {
            (ViewSpec::Volumes { store, volumes, .. }, true) => {
                Some(self.warm_starts.load(self.reading.store(store)?, volumes.clone()))
            }
            _ => None,
        };
        let mut resolved = match resolved {
            Some(resolved) => resolved,
            None => self.reading.resolve(&spec, pinned).await?,
        };
        tracing::debug!(resolved_in = ?started.elapsed(), "mount resolved");
        let manifests = resolved.manifest_names();
        let scylla = resolved.scylla.take().map(|view| {
            // A view names its stores; the first stands for the mount in listings.
            request.store = view.first_store.clone().unwrap_or_default();
            ScyllaShown {
                sstables: view.sstables.len(),
                spanning: view.spanning,
            }
        });
        let fs = self.filesystem(resolved, access)?;
        let url: StoreUrl = request.store.parse()?;

        let path = match &request.mount_path {
            Some(p) => PathBuf::from(p),
            None => self.paths.mounts().join(uuid::Uuid::new_v4().simple().to_string()),
        };
        if !path.is_absolute() {
            return Err(OpError::invalid(format!(
                "mount path {} is not absolute",
                path.display()
            )));
        }
        if let Some(active) = self.active().get(&path) {
            // The same request again (a retry, or a mount a restarted daemon brought back): done.
            let asked = &active.record.request;
            let same = (
                &active.store,
                &asked.volumes,
                &asked.selector,
                &asked.scylla,
                &asked.access,
                &asked.planned,
            ) == (
                &url,
                &request.volumes,
                &request.selector,
                &request.scylla,
                &request.access,
                &request.planned,
            );
            if same {
                return Ok(path.display().to_string());
            }
            return Err(OpError::invalid(format!(
                "mount path {} is busy: lazysnap already mounts something else there",
                path.display()
            )));
        }
        let created_dir = prepare_dir(&path)? || restoring.is_some_and(|r| r.created_dir);
        let attach = Attach {
            allow_other: kernel_allow_other(&access),
            source: source_name(&request),
        };
        if let Some(profiles) = profiles {
            self.warm_starts.start(&fs, self.tuning.first_touch, profiles);
        }
        let mounted = self.mount_at(fs, &path, attach).await;
        let mount = match mounted {
            Ok(mount) => mount,
            Err(e) => {
                if created_dir {
                    let _ = std::fs::remove_dir(&path);
                }
                return Err(e);
            }
        };
        request.mount_path = Some(path.display().to_string());
        let record = MountRecord {
            request,
            manifests,
            created_dir,
            scylla,
        };
        self.record(&path, &record);
        tracing::info!(path = %path.display(), store = %url, volumes = ?record.request.volumes, took = ?started.elapsed(), "mounted");
        self.serve(Active {
            mount,
            store: url,
            created_dir,
            record,
        });
        Ok(path.display().to_string())
    }

    /// Takes a live mount into the table, resuming its hydration if its record says so.
    pub(crate) fn serve(&self, active: Active) {
        let path = active.mount.path().to_path_buf();
        if let Some(params) = &active.record.request.hydrate {
            self.hydrations.start(&path, active.mount.fs().view(), params);
        }
        self.active().insert(path, active);
    }

    /// Refuses a new mount past a limit, naming it: the daemon never runs out of what every other
    /// mount needs. A mount already served (the same request again) passes.
    fn check_limits(&self, request: &MountRequest) -> Result<(), OpError> {
        let active = self.active();
        if request
            .mount_path
            .as_ref()
            .is_some_and(|p| active.contains_key(Path::new(p)))
        {
            return Ok(());
        }
        let mounts = active.len();
        if mounts >= self.tuning.max_mounts {
            return Err(OpError::invalid(format!(
                "this lazysnap-mountd already serves {mounts} mounts, its limit (--max-mounts {}); unmount one or raise the limit",
                self.tuning.max_mounts
            )));
        }
        let descriptors = descriptor_limit();
        if mounts as u64 + DESCRIPTOR_RESERVE >= descriptors {
            return Err(OpError::invalid(format!(
                "another mount would leave this lazysnap-mountd too few file descriptors: {mounts} mounts and {DESCRIPTOR_RESERVE} kept for the cache and stores reach its limit of {descriptors} (RLIMIT_NOFILE; raise LimitNOFILE or ulimit -n)"
            )));
        }
        Ok(())
    }

    /// The filesystem of a resolved view, refused past the daemon's file limit.
    pub(crate) fn filesystem(&self, resolved: Resolved, access: Access) -> Result<Arc<LazyFs>, OpError> {
        let files = resolved.file_count();
        let shown: u64 = self.active().values().map(|a| a.mount.fs().view().file_count()).sum();
        if shown + files > self.tuning.max_files {
            return Err(OpError::invalid(format!(
                "this mount would show {files} files beside the {shown} this lazysnap-mountd shows, past its limit (--max-files {}); unmount some or raise the limit",
                self.tuning.max_files
            )));
        }
        let view = self.reading.assemble(resolved)?;
        Ok(Arc::new(LazyFs::new(Arc::new(view), access)))
    }

    /// The filesystem a recorded mount showed: from the index when it knows every manifest (and
    /// snapshot), else resolved again through the stores.
    pub(crate) async fn recorded_filesystem(&self, record: &MountRecord) -> Result<Arc<LazyFs>, OpError> {
        let spec: ViewSpec = record.request.view_spec()?;
        // Records from before access was kept have none: the daemon's own, private.
        let access = resolve_access(&record.request.access, server_ids()).await?;
        let resolved = match self.reading.resolve_indexed(&spec, &record.manifests) {
            Some(resolved) => resolved,
            None => self.reading.resolve(&spec, Some(&record.manifests)).await?,
        };
        self.filesystem(resolved, access)
    }

    pub(crate) fn record(&self, path: &Path, record: &MountRecord) {
        if let Err(e) = self.index.record_mount(&path.display().to_string(), record) {
            tracing::warn!(error = %e, "cannot record the mount in the index");
        }
    }

    /// Mounts and waits until the kernel serves the new filesystem, so callers can use it at once;
    /// then hands its connection to the holder.
    async fn mount_at(&self, fs: Arc<LazyFs>, path: &Path, attach: Attach) -> Result<Mount, OpError> {
        let sessions = self.paths.sessions();
        std::fs::create_dir_all(&sessions)
            .map_err(|e| OpError::internal(format!("cannot create {}: {e}", sessions.display())))?;
        let journal = sessions.join(format!("{}.opens", uuid::Uuid::new_v4().simple()));
        let parent_dev = std::fs::metadata(path.parent().unwrap_or(Path::new("/")))
            .map(|m| m.dev())
            .ok();
        let mount = fuse::mount(&self.tuning.server, fs, path, attach, &journal)
            .await
            .map_err(|e| OpError::internal(format!("cannot mount {}: {e}", path.display())))?;
        let target = path.to_path_buf();
        // Served by this process: looked at from a blocking thread while the runtime answers.
        let readable = tokio::task::spawn_blocking(move || {
            std::fs::metadata(&target)
                .map(|m| Some(m.dev()) != parent_dev)
                .and_then(|mounted| std::fs::read_dir(&target).map(|_| mounted))
        })
        .await
        .map_err(|e| OpError::internal(format!("mount task failed: {e}")))?;
        match readable {
            Ok(true) => {
                self.holder.keep(&mount);
                Ok(mount)
            }
            Ok(false) => Err(OpError::internal(format!("{} did not become a mount", path.display()))),
            Err(e) => Err(OpError::internal(format!(
                "mount {} is not readable: {e}",
                path.display()
            ))),
        }
    }

    pub async fn unmount(&self, path: &str, lazy: bool) -> Result<(), OpError> {
        let _admin = self.admin.lock().await;
        self.unmount_held(path, lazy).await
    }

    /// [`Mounts::unmount`] for a caller that holds the admin lock.
    pub(crate) async fn unmount_held(&self, path: &str, lazy: bool) -> Result<(), OpError> {
        let path = PathBuf::from(path);
        let Some(active) = self.active().remove(&path) else {
            return Err(OpError::invalid(format!(
                "{} is not mounted by lazysnap",
                path.display()
            )));
        };
        let Active {
            mount,
            store,
            created_dir,
            record,
        } = active;
        if lazy {
            mount.detach();
        } else {
            let unmounted = mount.unmount().await;
            if let Err(busy) = unmounted {
                let Busy { mount, error } = *busy;
                // Still mounted and serving: keep it registered.
                self.active().insert(
                    path.clone(),
                    Active {
                        mount,
                        store,
                        created_dir,
                        record,
                    },
                );
                return Err(match error.raw_os_error() {
                    Some(libc::EBUSY) => OpError::invalid(format!(
                        "{} is busy: processes have files open under it (close them, or umount --lazy to detach it now)",
                        path.display()
                    )),
                    _ => OpError::internal(format!("cannot unmount {}: {error}", path.display())),
                });
            }
        }
        self.hydrations.forget(&path);
        self.expiry.forget(&path);
        if created_dir {
            let _ = std::fs::remove_dir(&path);
        }
        let name = path.display().to_string();
        self.holder.forget(&name);
        let _ = self.index.remove_mount(&name);
        tracing::info!(path = %path.display(), lazy, "unmounted");
        Ok(())
    }

    /// Forgets mounts someone unmounted with the system's `umount` (their connection ended), unless
    /// a mount or unmount is under way (the next round, or the next mount, does it then).
    pub async fn reap_ended(&self) {
        if let Ok(_admin) = self.admin.try_lock() {
            self.forget_ended().await;
        }
    }

    /// What `unmount` would have done for mounts whose connection ended: their hydration, record,
    /// keeper copy and, if the daemon made it, their folder. Called under the admin lock: a mount
    /// at the same path meanwhile would otherwise lose its record.
    pub(crate) async fn forget_ended(&self) {
        let ended: Vec<Active> = {
            let mut active = self.active();
            let paths: Vec<PathBuf> = active
                .iter()
                .filter(|(_, a)| a.mount.ended())
                .map(|(path, _)| path.clone())
                .collect();
            paths.iter().filter_map(|path| active.remove(path)).collect()
        };
        for active in ended {
            let path = active.mount.path().to_path_buf();
            self.hydrations.forget(&path);
            self.expiry.forget(&path);
            active.mount.release_ended().await;
            if active.created_dir {
                let _ = std::fs::remove_dir(&path);
            }
            let name = path.display().to_string();
            self.holder.forget(&name);
            let _ = self.index.remove_mount(&name);
            tracing::info!(path = %path.display(), "unmounted outside lazysnap; forgotten");
        }
    }

    /// Starts or steers the hydration of one of this daemon's mounts; answers its status.
    pub fn hydrate(
        &self,
        path: &str,
        action: HydrateAction,
        params: &HydrateParams,
    ) -> Result<HydrationStatus, OpError> {
        let path = PathBuf::from(path);
        let fs = match self.active().get(&path) {
            Some(active) => active.mount.fs().clone(),
            None => {
                return Err(OpError::invalid(format!(
                    "{} is not mounted by lazysnap",
                    path.display()
                )))
            }
        };
        let status = match action {
            HydrateAction::Start => self.hydrations.start(&path, fs.view(), params),
            other => self.hydrations.act(&path, other)?,
        };
        // What a restarted daemon resumes: a running hydration with its current cap and deadline.
        let resume = match action {
            HydrateAction::Start | HydrateAction::Resume => Some(HydrateParams {
                bandwidth: status.bandwidth,
                deadline_ms: status.deadline_ms,
            }),
            HydrateAction::Pause | HydrateAction::Cancel => None,
            HydrateAction::Status => return Ok(status),
        };
        let record = self.active().get_mut(&path).map(|active| {
            active.record.request.hydrate = resume;
            active.record.clone()
        });
        if let Some(record) = record {
            self.record(&path, &record);
        }
        Ok(status)
    }

    /// Unmounts everything as the daemon stops; busy mounts are detached. The holder is let go:
    /// nothing is left for a successor.
    pub async fn unmount_all(&self) {
        let all = std::mem::take(&mut *self.active());
        for (path, active) in all {
            self.hydrations.forget(&path);
            if let Err(busy) = active.mount.unmount().await {
                tracing::warn!(path = %path.display(), error = %busy.error, "mount is busy; detaching it");
                busy.mount.detach();
            }
            if active.created_dir {
                let _ = std::fs::remove_dir(&path);
            }
            let _ = self.index.remove_mount(&path.display().to_string());
        }
        self.holder.exit();
        // Unmounted, each mount's warm start saves what it recorded: a few small PUTs.
        self.warm_starts.finish(std::time::Duration::from_secs(5)).await;
    }

    /// Stops serving every mount without unmounting, for a successor to take over: reads already
    /// read are answered first (up to `drain`); what is still in flight then is resent to the
    /// successor by the kernel. Records and the holder's copies stay.
    pub async fn hand_over_all(&self, drain: std::time::Duration) {
        let all = std::mem::take(&mut *self.active());
        let mounts = all.len();
        for (path, active) in all {
            self.hydrations.forget(&path);
            active.mount.hand_over(drain).await;
        }
        let started = std::time::Instant::now();
        while self.tuning.server.requests_in_flight() > 0 && started.elapsed() < drain {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tracing::info!(
            mounts,
            in_flight = self.tuning.server.requests_in_flight(),
            "mounts handed over"
        );
    }

    /// Hands every live mount to a new holder (the previous one died).
    pub fn hold_all(&self) {
        for active in self.active().values() {
            self.holder.keep(&active.mount);
        }
    }

    /// The limits new mounts are checked against, with what is used of them.
    pub fn limits(&self) -> Limits {
        let server = &self.tuning.server;
        let slots = &self.reading.fetch_config().slots;
        // One lock for both figures: a guard in a struct literal lives to its end.
        let (mounts, files) = {
            let active = self.active();
            let files = active.values().map(|a| a.mount.fs().view().file_count()).sum();
            (active.len(), files)
        };
        let (oldest, stuck) = server.waiting_stats();
        Limits {
            mounts,
            max_mounts: self.tuning.max_mounts,
            descriptor_limit: descriptor_limit(),
            fuse_requests_in_flight: server.requests_in_flight(),
            max_fuse_requests: server.options().max_requests,
            oldest_fuse_request_ms: oldest.as_millis() as u64,
            stuck_fuse_requests: stuck,
            gets_in_flight: slots.in_use(),
            max_gets: slots.total(),
            max_open_files_per_mount: server.options().max_open_files,
            files,
            max_files: self.tuning.max_files,
        }
    }

    /// Logs mounted snapshots that expire (or have expired) with blocks not yet local.
    pub fn check_expiry(&self) {
        let mounted: Vec<(PathBuf, Arc<LazyFs>)> = self
            .active()
            .iter()
            .map(|(path, active)| (path.clone(), active.mount.fs().clone()))
            .collect();
        let now = lazysnap::time::now_ms();
        for (path, fs) in mounted {
            self.expiry.check(&path, fs.view(), now);
        }
    }

    pub fn list(&self) -> Vec<MountInfo> {
        let now = lazysnap::time::now_ms();
        self.active()
            .iter()
            .map(|(path, active)| {
                let fs = active.mount.fs();
                let view = fs.view();
                let volumes = view
                    .parts()
                    .iter()
                    .enumerate()
                    .map(|(i, part)| VolumeShown {
                        volume_id: part.volume.to_string(),
                        shown_as: part.shown_as.as_ref().map(|id| id.to_string()),
                        log_manifest_name: part.manifest.name.clone(),
                        snapshot_uuid: part.snapshot.as_ref().map(|s| s.uuid.clone()),
                        snapshot: part.snapshot.as_ref().map(|s| crate::expiry::status(view, i, s, now)),
                    })
                    .collect();
                MountInfo {
                    mount_path: path.display().to_string(),
                    scylla: active.record.scylla.as_ref().map(|shown| ScyllaMounted {
                        view: active.record.request.scylla.clone(),
                        sstables: shown.sstables,
                        spanning: shown.spanning.clone(),
                    }),
                    store: active.store.to_string(),
                    volumes,
                    files: view.file_count(),
                    open_files: active.mount.open_files(),
                    stats: fs.stats(),
                    hydration: self.hydrations.status(path),
                }
            })
            .collect()
    }
}

/// The access `request` gives `requester`. Names are looked up in the user database, which may be
/// LDAP or another network service on a production node: off the async workers.
async fn resolve_access(request: &AccessRequest, requester: (u32, u32)) -> Result<Access, OpError> {
    let request = request.clone();
    let parties = Parties {
        requester,
        server: server_ids(),
    };
    tokio::task::spawn_blocking(move || request.resolve(parties))
        .await
        .map_err(|e| OpError::internal(format!("user lookup task failed: {e}")))?
        .map_err(OpError::from)
}

/// This daemon's (uid, gid).
pub(crate) fn server_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Whether the kernel lets users other than the daemon's into a mount. A root daemon always does,
/// and leaves who may read what to the modes (`default_permissions`): that is how a mount owned by
/// `couchbase` and private to it reaches `couchbase`. Without root, only a mount opened to others
/// asks for it (which needs `user_allow_other` in /etc/fuse.conf).
fn kernel_allow_other(access: &Access) -> bool {
    server_ids().0 == 0 || access.allow_other
}

/// What `/proc/mounts` shows as the mount's source: the `STORE#VOLUME[,VOLUME]` a mount helper is
/// given, so that `mount -a` sees an fstab line is already mounted.
fn source_name(request: &MountRequest) -> String {
    if let Some(guest) = &request.guest {
        return format!("{}#plan:{}/guest{}", request.store, guest.plan_uuid, guest.guest);
    }
    match (
        &request.scylla,
        request.volumes.is_empty() && request.planned.is_empty(),
    ) {
        (Some(filter), _) => format!("scylla:{}", filter.snapshot),
        (None, true) => request.store.clone(),
        (None, false) => format!("{}#{}", request.store, request.volume_ids().join(",")),
    }
}

/// Makes sure `path` is an empty folder that is not already a mount; true when it was created.
fn prepare_dir(path: &Path) -> Result<bool, OpError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)
                .map_err(|e| OpError::invalid(format!("cannot create mount path {}: {e}", path.display())))?;
            Ok(true)
        }
        Err(e) => Err(OpError::invalid(format!(
            "mount path {} is unusable: {e}",
            path.display()
        ))),
        Ok(meta) if !meta.is_dir() => Err(OpError::invalid(format!(
            "mount path {} is not a directory",
            path.display()
        ))),
        Ok(meta) => {
            let parent = std::fs::metadata(path.parent().unwrap_or(Path::new("/")))
                .map_err(|e| OpError::invalid(format!("mount path {}: {e}", path.display())))?;
            if parent.dev() != meta.dev() {
                return Err(OpError::invalid(format!(
                    "mount path {} is busy: something is mounted there",
                    path.display()
                )));
            }
            let mut entries =
                std::fs::read_dir(path).map_err(|e| OpError::invalid(format!("mount path {}: {e}", path.display())))?;
            if entries.next().is_some() {
                return Err(OpError::invalid(format!("mount path {} is not empty", path.display())));
            }
            Ok(false)
        }
    }
}

/// The most descriptors this process may hold (RLIMIT_NOFILE, soft).
pub fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_cur,
        _ => 1024,
    }
}
