//! kv_engine's current Fusion bodies and the `fusion` stats group, answered by the daemon: each
//! body (checked by `lazysnap::fusion::bodies`) runs the operation lazysnap already has for it,
//! and answers in kv_engine's shape.

use lazysnap::catalog::Selector;
use lazysnap::control::{
    ops, MountRequest, NamespaceListRequest, OpError, SnapshotCreateRequest, SnapshotReleaseRequest, Term,
    UploaderStartRequest, VolumeRequest, Volumes,
};
use lazysnap::fusion::bodies::{self, KvCall, KvEngineRequest};
use lazysnap::fusion::stats::{
    self, FusionStatsRequest, IsMounted, Migration, StatGroup, StatTarget, SyncInfo, UploaderStat,
};
use lazysnap::gc::GcOptions;
use lazysnap::names::VolumeId;
use lazysnap::store::layout;
use serde_json::{json, Value};

use crate::daemon::Daemon;

impl Daemon {
    /// Runs one kv_engine request for `peer`; answers what kv_engine would.
    pub async fn kv_engine(&self, req: KvEngineRequest, peer: (u32, u32)) -> Result<Value, OpError> {
        let call = bodies::translate(&req)?;
        let store = req.store.clone();
        let volume_request = |volume: &VolumeId| VolumeRequest {
            store: store.clone(),
            volume: volume.to_string(),
        };
        match call {
            KvCall::SnapshotCreate {
                volumes,
                snapshot_uuid,
                valid_till_s,
            } => {
                let now_s = lazysnap::time::now_ms() / 1000;
                if valid_till_s <= now_s {
                    return Err(OpError::invalid(format!(
                        "valid_till {valid_till_s} is not in the future (now {now_s}, epoch seconds)"
                    )));
                }
                let created = ops::snapshot_create(
                    &SnapshotCreateRequest {
                        store,
                        volumes: Volumes::Many(volumes.iter().map(|v| v.to_string()).collect()),
                        snapshot_uuid,
                        validity: valid_till_s - now_s,
                    },
                    &self.index,
                )
                .await?;
                Ok(created
                    .into_iter()
                    .map(|c| {
                        json!({"createdAt": c.created_at, "logManifestName": c.log_manifest_name,
                               "snapshotUUID": c.snapshot_uuid, "validTill": c.valid_till,
                               "version": c.version, "volumeID": c.volume_id})
                    })
                    .collect())
            }
            KvCall::SnapshotRelease { volumes, snapshot_uuid } => {
                let request = SnapshotReleaseRequest {
                    store,
                    volumes: Volumes::Many(volumes.iter().map(|v| v.to_string()).collect()),
                    snapshot_uuid,
                };
                ops::snapshot_release(&request, &self.index).await?;
                Ok(json!({}))
            }
            KvCall::MountFromLogStore { volume, snapshot_uuid } => {
                let request =
                    MountRequest::of_volumes(store, vec![volume.to_string()], Selector::Snapshot(snapshot_uuid));
                let mounted = self.mounts.mount(request, peer).await?;
                Ok(json!({"deks": [], "mountPaths": mounted.mount_paths}))
            }
            KvCall::MountFromGuests { volume, mount_paths } => {
                let holding = self.mounts.guests_holding(&volume, &mount_paths);
                if holding.is_empty() && !mount_paths.is_empty() {
                    return Err(OpError::unknown(format!(
                        "volume {volume} is in none of the guest volumes {} mounted by this lazysnap-mountd",
                        mount_paths.join(", ")
                    )));
                }
                Ok(json!({"deks": [], "mountPaths": holding}))
            }
            KvCall::Unmount { volume } => {
                if let Some(path) = self.mounts.mount_of(&volume) {
                    self.mounts.unmount(&path, false).await?;
                }
                Ok(json!({}))
            }
            KvCall::Sync { volume, reset } => {
                // As kv_engine's Magma does today, `reset` is noted, not acted on: the next upload
                // sends what changed.
                tracing::info!(volume = %volume, reset, "sync asked through kv_engine's body");
                self.uploaders.sync(&volume_request(&volume)).await?;
                Ok(json!({}))
            }
            KvCall::UploaderStart { volume, source, term } => {
                let request = UploaderStartRequest {
                    store,
                    volume: volume.to_string(),
                    source,
                    term: Term(term),
                    interval: None,
                };
                self.uploaders.start(&request).await?;
                Ok(json!({}))
            }
            KvCall::UploaderStop { volume } => {
                // Stopping an uploader that is not running succeeds, as in kv_engine.
                if self.uploaders.volumes_of(&store).await.contains(&volume) {
                    self.uploaders.stop(&volume_request(&volume)).await?;
                }
                Ok(json!({}))
            }
            KvCall::DeleteNamespace { namespace } => {
                let store_handle = ops::open_store(&store, false)?;
                let plan = lazysnap::namespace::plan_one(&store_handle, &namespace).await?;
                self.delete_planned_namespaces(&store_handle, plan, false, false)
                    .await?;
                Ok(json!({}))
            }
            KvCall::Namespaces => {
                let namespaces = ops::namespace_list(&NamespaceListRequest { logstore_uri: store }).await?;
                let kv: Vec<String> = namespaces
                    .into_iter()
                    .map(|n| n.namespace)
                    .filter(|n| n.starts_with("kv/") && n.split('/').count() == 2)
                    .collect();
                Ok(json!({"version": 1, "namespaces": kv}))
            }
        }
    }

    /// Answers `fusion <group> [<vbid>|detail]` for a bucket.
    pub async fn fusion_stats(&self, req: &FusionStatsRequest) -> Result<Value, OpError> {
        let (group, target) = stats::parse_key(&req.key)?;
        bodies::volume_of(&req.bucket, 0)?;
        match target {
            StatTarget::Aggregate => {
                let mut paths: Vec<String> = self
                    .mounts
                    .active_guests(&req.bucket)
                    .into_iter()
                    .flat_map(|(_, paths)| paths)
                    .collect();
                paths.sort();
                paths.dedup();
                Ok(json!(paths))
            }
            StatTarget::Vbucket(vb) => self.vbucket_stat(req, group, vb).await,
            StatTarget::Detail => {
                let mut values = Vec::new();
                for vb in self.known_vbuckets(req).await? {
                    values.push((vb, self.vbucket_stat(req, group, vb).await?));
                }
                Ok(stats::detail(values))
            }
        }
    }

    async fn vbucket_stat(&self, req: &FusionStatsRequest, group: StatGroup, vb: u16) -> Result<Value, OpError> {
        let volume = bodies::volume_of(&req.bucket, vb)?;
        let value = match group {
            StatGroup::ActiveGuestVolumes => {
                let paths: Vec<String> = self
                    .mounts
                    .active_guests(&req.bucket)
                    .into_iter()
                    .filter(|(v, _)| *v == vb)
                    .flat_map(|(_, paths)| paths)
                    .collect();
                json!(paths)
            }
            StatGroup::Migration => {
                let (completed_bytes, total_bytes) = self.mounts.migration(&volume);
                json!(Migration {
                    completed_bytes,
                    total_bytes
                })
            }
            StatGroup::IsMounted => json!(IsMounted {
                is_mounted: self.mounts.shows(&volume)
            }),
            StatGroup::SyncInfo => json!(self.sync_info(req, &volume).await?),
            StatGroup::Uploader => json!(self.uploader_stat(req, &volume).await?),
        };
        Ok(value)
    }

    /// The store a stat reads: the request's, else the one this node uploads the volume to.
    async fn stat_store(&self, req: &FusionStatsRequest, volume: &VolumeId) -> Option<String> {
        if let Some(store) = &req.store {
            return Some(store.clone());
        }
        let uploaders = self.uploaders.list().await;
        uploaders
            .into_iter()
            .find(|u| u.volume_id == volume.as_str())
            .map(|u| u.store)
    }

    async fn sync_info(&self, req: &FusionStatsRequest, volume: &VolumeId) -> Result<SyncInfo, OpError> {
        let Some(url) = self.stat_store(req, volume).await else {
            return Err(OpError::invalid(format!(
                "sync_info of {volume} reads the log store: give the bucket's store"
            )));
        };
        let store = ops::open_store(&url, false)?;
        let (row, files) = self.newest_manifest(&store, volume).await?;
        Ok(SyncInfo {
            log_seqno: files.iter().filter_map(|f| f.high_seqno).max().unwrap_or(0),
            log_term: row.term,
        })
    }

    /// The volume's newest durable manifest and its files (NotMyVbucket when it has none).
    async fn newest_manifest(
        &self,
        store: &lazysnap::store::Store,
        volume: &VolumeId,
    ) -> Result<(lazysnap::index::ManifestRow, Vec<lazysnap::index::FileRow>), OpError> {
        let name = lazysnap::chain::head_name(store, volume).await?;
        let row = lazysnap::chain::load_manifest(store, &self.index, volume, &name).await?;
        let files = self
            .index
            .manifest_files(row.id)
            .map_err(lazysnap::catalog::CatalogError::from)?;
        Ok((row, files))
    }

    async fn uploader_stat(&self, req: &FusionStatsRequest, volume: &VolumeId) -> Result<UploaderStat, OpError> {
        let status = self
            .uploaders
            .list()
            .await
            .into_iter()
            .find(|u| u.volume_id == volume.as_str());
        let Some(url) = self.stat_store(req, volume).await else {
            return Err(OpError::invalid(format!(
                "uploader stats of {volume} read the log store: give the bucket's store"
            )));
        };
        let store = ops::open_store(&url, false)?;
        // Also NotMyVbucket for a volume the store does not hold.
        let (_, files) = self.newest_manifest(&store, volume).await?;
        let data: u64 = store
            .list(&layout::files_dir(volume))
            .await?
            .iter()
            .map(|o| o.size)
            .sum();
        let dry_run = GcOptions {
            dry_run: true,
            ..GcOptions::default()
        };
        let garbage = lazysnap::gc::collect(&store, &self.index, volume, &dry_run, lazysnap::time::now_ms())
            .await?
            .bytes_deleted;
        let running = status
            .as_ref()
            .is_some_and(|s| s.state == lazysnap::uploader::UploaderState::Running);
        let pending = match (&status, running) {
            (Some(s), true) => pending_bytes(&s.source, files).await,
            _ => 0,
        };
        Ok(UploaderStat {
            state: if running { "enabled" } else { "disabled" }.to_string(),
            term: status.filter(|_| running).map_or(0, |s| s.term.0),
            snapshot_pending_bytes: pending,
            // lazysnap uploads whole files of the folder; it has no separate checkpoint stage.
            checkpoint_pending_bytes: 0,
            logstore_data_size: data,
            logstore_garbage_size: garbage,
            logstore_fragmentation_ratio: if data == 0 { 0.0 } else { garbage as f64 / data as f64 },
            // GC deletes what it decides at once: nothing waits.
            logstore_pending_delete_size: 0,
        })
    }

    /// The vbuckets of the bucket this node knows of: those in the store (when given), uploaded
    /// or shown by a mount.
    async fn known_vbuckets(&self, req: &FusionStatsRequest) -> Result<Vec<u16>, OpError> {
        let mut volumes: Vec<String> = self.mounts.shown_volumes();
        volumes.extend(self.uploaders.list().await.into_iter().map(|u| u.volume_id));
        if let Some(url) = &req.store {
            let store = ops::open_store(url, false)?;
            volumes.extend(
                lazysnap::chain::list_volumes(&store)
                    .await?
                    .into_iter()
                    .map(|v| v.to_string()),
            );
        }
        let mut vbuckets: Vec<u16> = volumes
            .iter()
            .filter_map(|v| stats::vbucket_of(&req.bucket, v))
            .collect();
        vbuckets.sort_unstable();
        vbuckets.dedup();
        Ok(vbuckets)
    }
}

/// Bytes of the engine's folder not in the volume's newest manifest (a file new or changed in
/// size): what the next upload sends.
async fn pending_bytes(source: &std::path::Path, uploaded: Vec<lazysnap::index::FileRow>) -> u64 {
    let uploaded: std::collections::HashMap<String, u64> = uploaded
        .into_iter()
        .map(|f| (f.path.as_str().to_string(), f.size))
        .collect();
    let source = source.to_path_buf();
    tokio::task::spawn_blocking(move || {
        walkdir::WalkDir::new(&source)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let size = e.metadata().ok()?.len();
                let rel = e.path().strip_prefix(&source).ok()?.to_string_lossy().to_string();
                (uploaded.get(&rel) != Some(&size)).then_some(size)
            })
            .sum()
    })
    .await
    .unwrap_or(0)
}
