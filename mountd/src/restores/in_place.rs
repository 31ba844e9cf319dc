//! In-place restores: the view is mounted at the destination and hydrated, so the engine uses the
//! mount at once; the job is the hydration, complete when every block is local.

use lazysnap::access::AccessRequest;
use std::path::Path;

use lazysnap::control::{HydrateAction, HydrateParams, MountRequest, OpError, RestoreStartRequest};
use lazysnap::hydrate::{HydrationState, HydrationStatus};

use crate::mounts::Mounts;
use lazysnap::control::records::JobState;

/// Mounts the pinned view at the destination (answering the existing mount when it is already
/// there, as after a daemon crash) and starts or resumes its hydration.
pub async fn start(mounts: &Mounts, req: &RestoreStartRequest, manifests: &[String]) -> Result<(), OpError> {
    let manifest = manifests
        .first()
        .ok_or_else(|| OpError::internal("an in-place restore job recorded no manifest"))?;
    let params = HydrateParams {
        bandwidth: req.bandwidth,
        deadline_ms: None,
    };
    let request = MountRequest {
        store: req.store.clone(),
        volumes: req.volume.iter().cloned().collect(),
        selector: req.selector.pinned(manifest),
        mount_path: Some(req.dest.clone()),
        hydrate: Some(params.clone()),
        scylla: None,
        // The engine that is to use the restored data runs as its own user: readable by all, as
        // the destination folder of a copy restore would be.
        access: AccessRequest {
            allow_other: true,
            ..AccessRequest::default()
        },
        planned: Vec::new(),
        guest: None,
    };
    mounts.mount(request, crate::mounts::server_ids()).await?;
    mounts.hydrate(&req.dest, HydrateAction::Start, &params)?;
    Ok(())
}

/// The hydration of the destination, when it is mounted here.
pub fn hydration(mounts: &Mounts, req: &RestoreStartRequest) -> Option<HydrationStatus> {
    mounts
        .hydrate(&req.dest, HydrateAction::Status, &HydrateParams::default())
        .ok()
}

pub fn cancel(mounts: &Mounts, req: &RestoreStartRequest) {
    if Path::new(&req.dest).exists() {
        let _ = mounts.hydrate(&req.dest, HydrateAction::Cancel, &HydrateParams::default());
    }
}

pub fn job_state(state: HydrationState) -> JobState {
    match state {
        HydrationState::Running | HydrationState::Paused => JobState::Running,
        HydrationState::Completed => JobState::Completed,
        HydrationState::Cancelled => JobState::Cancelled,
        HydrationState::Failed => JobState::Failed,
    }
}
