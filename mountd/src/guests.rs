//! Fusion guest volumes: a node's volumes of an AccelerationPlan, split into guests and mounted
//! lazily at `<root>/<planUUID>/guest<i>`, where Couchbase's accelerator would first download
//! every file. A guest is an ordinary recorded mount (so it survives restarts like any other)
//! tagged with its plan; hydration runs on the background lane, reads a process waits for first.

use std::path::{Path, PathBuf};

use lazysnap::control::guests::{
    GuestStatus, GuestVolumeStatus, GuestsMountRequest, GuestsReleased, GuestsRequest, GuestsStatus, NodeGuests,
    UploadMountedVolumes,
};
use lazysnap::control::{GuestOf, HydrateParams, MountRequest, OpError, PlannedMount};
use lazysnap::fusion::plan::{self, Plan, PlanKind, Split};
use lazysnap::fusion::stats;
use lazysnap::names::VolumeId;

use crate::mounts::Mounts;

/// Guests per node when the request names no count (the accelerator's usual split).
const DEFAULT_PARTS: usize = 4;

impl Mounts {
    /// Mounts `node`'s volumes of the plan as guests, or nothing: the plan is checked whole and
    /// every guest resolved (volumes, snapshots, manifests) before the first is mounted, and a
    /// guest that fails to mount takes those mounted before it down again.
    pub async fn mount_guests(
        &self,
        req: GuestsMountRequest,
        requester: (u32, u32),
    ) -> Result<UploadMountedVolumes, OpError> {
        let plan = Plan::parse(&req.plan.to_string())?;
        let kind = match req.restore {
            true => PlanKind::Restore,
            false => PlanKind::Rebalance,
        };
        let root = PathBuf::from(&req.root);
        if !root.is_absolute() {
            return Err(OpError::invalid(format!(
                "root {} is not an absolute path",
                root.display()
            )));
        }
        let volumes = plan.volumes_of(&req.node, kind, lazysnap::time::now_ms())?;
        let split = Split {
            parts: req.parts.unwrap_or(DEFAULT_PARTS),
            min_part_size: req.min_part_size.unwrap_or(0),
        };
        let guests = plan::split(volumes, split)?;
        // The node's cap, shared evenly: the guests hydrate side by side.
        let bandwidth = req.bandwidth.map(|b| (b / guests.len() as u64).max(1));
        let requests: Vec<MountRequest> = guests
            .into_iter()
            .enumerate()
            .map(|(i, volumes)| MountRequest {
                store: req.store.clone(),
                volumes: Vec::new(),
                selector: lazysnap::catalog::Selector::Latest,
                mount_path: Some(guest_path(&root, &plan.plan_uuid, i).display().to_string()),
                hydrate: Some(HydrateParams {
                    bandwidth,
                    deadline_ms: None,
                }),
                scylla: None,
                access: req.access.clone(),
                planned: volumes
                    .into_iter()
                    .map(|v| PlannedMount {
                        volume_id: v.volume.to_string(),
                        log_manifest_name: v.manifest,
                        snapshot_uuid: v.snapshot,
                        shown_as: (v.shown_as != v.volume).then(|| v.shown_as.to_string()),
                    })
                    .collect(),
                guest: Some(GuestOf {
                    plan_uuid: plan.plan_uuid.clone(),
                    node: req.node.clone(),
                    guest: i,
                }),
            })
            .collect();

        let _admin = self.admin.lock().await;
        self.forget_ended().await;
        let planned = self.guest_paths(&plan.plan_uuid);
        if !planned.is_empty() {
            // A retry of the same mount (same store, same guests) answers the guests it made; anything else would have to
            // take down guests a rebalance may be reading, so it is refused and nothing is touched.
            let same = planned.len() == requests.len()
                && self.active().iter().all(|(path, active)| {
                    let asked = &active.record.request;
                    asked.guest.as_ref().is_none_or(|g| g.plan_uuid != plan.plan_uuid)
                        || requests.iter().any(|r| {
                            r.mount_path.as_deref() == Some(path.display().to_string().as_str())
                                && (&r.store, &r.planned) == (&asked.store, &asked.planned)
                        })
                });
            if same {
                return Ok(UploadMountedVolumes {
                    nodes: vec![NodeGuests {
                        name: req.node,
                        guest_volume_paths: planned,
                    }],
                });
            }
            return Err(OpError::invalid(format!(
                "plan {} already has {} guests mounted here ({}); release them first",
                plan.plan_uuid,
                planned.len(),
                planned.join(", ")
            )));
        }
        // Every guest resolved side by side, before any is mounted.
        let specs = requests
            .iter()
            .map(|r| Ok((r.view_spec()?, r.mount_path.clone().unwrap_or_default())))
            .collect::<Result<Vec<_>, OpError>>()?;
        let resolved = futures::future::try_join_all(specs.iter().map(|(spec, path)| async move {
            self.reading
                .resolve(spec, None)
                .await
                .map_err(|e| OpError::from(e).context(&format!("guest {path}")))
        }))
        .await?;
        let mut mounted = Vec::with_capacity(requests.len());
        for (request, view) in requests.into_iter().zip(resolved) {
            match self.mount_resolved(request, Some(view), None, requester).await {
                Ok(path) => mounted.push(path),
                Err(e) => {
                    for path in mounted.iter().rev() {
                        if let Err(undo) = self.unmount_held(path, true).await {
                            tracing::warn!(path, error = %undo, "cannot take a guest down again after a later guest failed");
                        }
                    }
                    remove_plan_dir(&root, &plan.plan_uuid);
                    return Err(e);
                }
            }
        }
        tracing::info!(plan = %plan.plan_uuid, node = %req.node, guests = mounted.len(), "guest volumes mounted");
        Ok(UploadMountedVolumes {
            nodes: vec![NodeGuests {
                name: req.node,
                guest_volume_paths: mounted,
            }],
        })
    }

    /// How far each guest of a plan is from being local.
    pub fn guests_status(&self, req: &GuestsRequest) -> Result<GuestsStatus, OpError> {
        let guests: Vec<(PathBuf, GuestOf, usize, std::sync::Arc<lazysnap::fs::LazyFs>)> = self
            .active()
            .iter()
            .filter_map(|(path, active)| {
                let guest = active.record.request.guest.clone()?;
                (guest.plan_uuid == req.plan_uuid).then(|| {
                    (
                        path.clone(),
                        guest,
                        active.mount.open_files(),
                        active.mount.fs().clone(),
                    )
                })
            })
            .collect();
        let Some(node) = guests.first().map(|(_, g, _, _)| g.node.clone()) else {
            return Err(self.no_guests(&req.plan_uuid));
        };
        let mut answer = GuestsStatus {
            plan_uuid: req.plan_uuid.clone(),
            node,
            bytes_local: 0,
            bytes_total: 0,
            guests: Vec::new(),
        };
        for (path, guest, open_files, fs) in guests {
            let view = fs.view();
            let volumes: Vec<GuestVolumeStatus> = view
                .parts()
                .iter()
                .enumerate()
                .map(|(i, part)| GuestVolumeStatus {
                    volume_id: part.volume.to_string(),
                    shown_as: part.folder().to_string(),
                    bytes_local: part.manifest.total_bytes.saturating_sub(view.bytes_not_local(i)),
                    bytes_total: part.manifest.total_bytes,
                })
                .collect();
            let hydration = self.hydrations.status(&path);
            let bytes_local = volumes.iter().map(|v| v.bytes_local).sum();
            let bytes_total = volumes.iter().map(|v| v.bytes_total).sum();
            answer.bytes_local += bytes_local;
            answer.bytes_total += bytes_total;
            let rate = hydration.as_ref().map_or(0.0, |h| h.rate);
            answer.guests.push(GuestStatus {
                path: path.display().to_string(),
                guest: guest.guest,
                bytes_local,
                bytes_total,
                rate,
                eta_seconds: match bytes_total - bytes_local {
                    0 => Some(0.0),
                    left if rate > 0.0 => Some(left as f64 / rate),
                    _ => None,
                },
                open_files,
                hydration,
                volumes,
            });
        }
        answer.guests.sort_by_key(|g| g.guest);
        Ok(answer)
    }

    /// Unmounts every guest of a plan: none while any has files open, unless `lazy`.
    pub async fn release_guests(&self, req: &GuestsRequest) -> Result<GuestsReleased, OpError> {
        let _admin = self.admin.lock().await;
        self.forget_ended().await;
        let paths = self.guest_paths(&req.plan_uuid);
        if paths.is_empty() {
            return Err(self.no_guests(&req.plan_uuid));
        }
        if !req.lazy {
            let busy: Vec<String> = self
                .active()
                .iter()
                .filter(|(path, active)| active.mount.open_files() > 0 && paths.contains(&path.display().to_string()))
                .map(|(path, _)| path.display().to_string())
                .collect();
            if !busy.is_empty() {
                return Err(OpError::invalid(format!(
                    "guests of plan {} have files open: {} (close them, or release --lazy); nothing was unmounted",
                    req.plan_uuid,
                    busy.join(", ")
                )));
            }
        }
        let mut unmounted = Vec::new();
        for path in &paths {
            self.unmount_held(path, req.lazy).await?;
            unmounted.push(path.clone());
        }
        if let Some(root) = Path::new(&paths[0]).parent().and_then(Path::parent) {
            remove_plan_dir(root, &req.plan_uuid);
        }
        tracing::info!(plan = %req.plan_uuid, guests = unmounted.len(), lazy = req.lazy, "guest volumes released");
        Ok(GuestsReleased {
            plan_uuid: req.plan_uuid.clone(),
            unmounted,
        })
    }

    /// The paths of a plan's guests, in guest order.
    fn guest_paths(&self, plan_uuid: &str) -> Vec<String> {
        let mut guests: Vec<(usize, String)> = self
            .active()
            .iter()
            .filter_map(|(path, active)| {
                let guest = active.record.request.guest.as_ref()?;
                (guest.plan_uuid == plan_uuid).then(|| (guest.guest, path.display().to_string()))
            })
            .collect();
        guests.sort();
        guests.into_iter().map(|(_, path)| path).collect()
    }

    fn no_guests(&self, plan_uuid: &str) -> OpError {
        OpError::invalid(format!(
            "no guest volumes of plan {plan_uuid} are mounted by this lazysnap-mountd"
        ))
    }
}

fn guest_path(root: &Path, plan_uuid: &str, guest: usize) -> PathBuf {
    root.join(plan_uuid).join(format!("guest{guest}"))
}

/// The plan's folder, once its guests' folders are gone; left alone if anything else is in it.
fn remove_plan_dir(root: &Path, plan_uuid: &str) {
    let _ = std::fs::remove_dir(root.join(plan_uuid));
}

/// What the `fusion` stats and kv_engine's mount bodies ask of the mounts.
impl Mounts {
    /// Of `paths`, the guests of this daemon that show `volume`'s folder.
    pub fn guests_holding(&self, volume: &VolumeId, paths: &[String]) -> Vec<String> {
        let active = self.active();
        paths
            .iter()
            .filter(|path| {
                active.get(Path::new(path.as_str())).is_some_and(|a| {
                    a.record.request.guest.is_some() && a.mount.fs().view().parts().iter().any(|p| p.folder() == volume)
                })
            })
            .cloned()
            .collect()
    }

    /// The path of a mount of `volume` alone that is not a guest (what kv_engine's 0x72 made).
    pub fn mount_of(&self, volume: &VolumeId) -> Option<String> {
        self.active()
            .iter()
            .find(|(_, a)| a.record.request.guest.is_none() && a.record.request.volumes == [volume.to_string()])
            .map(|(path, _)| path.display().to_string())
    }

    /// For each vbucket of `bucket` shown by a guest not yet fully local, the guests' paths.
    pub fn active_guests(&self, bucket: &str) -> Vec<(u16, Vec<String>)> {
        let guests: Vec<(String, std::sync::Arc<lazysnap::fs::LazyFs>)> = self
            .active()
            .iter()
            .filter(|(_, a)| a.record.request.guest.is_some())
            .map(|(path, a)| (path.display().to_string(), a.mount.fs().clone()))
            .collect();
        let mut by_vbucket: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
        for (path, fs) in guests {
            let view = fs.view();
            for (i, part) in view.parts().iter().enumerate() {
                let Some(vb) = stats::vbucket_of(bucket, part.folder().as_str()) else {
                    continue;
                };
                if view.bytes_not_local(i) > 0 {
                    by_vbucket.entry(vb).or_default().push(path.clone());
                }
            }
        }
        by_vbucket.into_iter().collect()
    }

    /// Bytes of `volume`'s guest folder that are local, and its total (0, 0 when no guest shows it).
    pub fn migration(&self, volume: &VolumeId) -> (u64, u64) {
        let guests: Vec<std::sync::Arc<lazysnap::fs::LazyFs>> = self
            .active()
            .values()
            .filter(|a| a.record.request.guest.is_some())
            .map(|a| a.mount.fs().clone())
            .collect();
        for fs in guests {
            let view = fs.view();
            if let Some(i) = view.parts().iter().position(|p| p.folder() == volume) {
                let total = view.parts()[i].manifest.total_bytes;
                return (total.saturating_sub(view.bytes_not_local(i)), total);
            }
        }
        (0, 0)
    }

    /// True when a mount of this daemon shows `volume`'s folder.
    pub fn shows(&self, volume: &VolumeId) -> bool {
        self.active()
            .values()
            .any(|a| a.mount.fs().view().parts().iter().any(|p| p.folder() == volume))
    }

    /// Every volume folder this daemon's mounts show.
    pub fn shown_volumes(&self) -> Vec<String> {
        self.active()
            .values()
            .flat_map(|a| {
                let view = a.mount.fs().view().clone();
                let folders: Vec<String> = view.parts().iter().map(|p| p.folder().to_string()).collect();
                folders
            })
            .collect()
    }
}
