//! The hydrations of the daemon's mounts, by mount path: at most one per mount, cancelled when
//! the mount goes away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lazysnap::control::{HydrateAction, HydrateParams};
use lazysnap::hydrate::{HydrateOptions, Hydration, HydrationStatus};
use lazysnap::view::View;

use lazysnap::control::OpError;

#[derive(Default)]
pub struct Hydrations {
    by_path: Mutex<BTreeMap<PathBuf, Arc<Hydration>>>,
}

impl Hydrations {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Arc<Hydration>>> {
        self.by_path.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts hydrating `view` mounted at `path`; one that still runs there gets the new cap and
    /// deadline (when given) and is resumed instead.
    pub fn start(&self, path: &Path, view: &Arc<View>, params: &HydrateParams) -> HydrationStatus {
        let mut map = self.map();
        if let Some(running) = map.get(path).filter(|h| !h.state().is_final()) {
            // What the request leaves out stays as it was.
            let current = running.status();
            running.set_options(HydrateOptions {
                bandwidth: params.bandwidth.or(current.bandwidth),
                deadline_ms: params.deadline_ms.or(current.deadline_ms),
            });
            running.resume();
            return running.status();
        }
        let hydration = Hydration::start(view.clone(), options(view, params));
        tracing::info!(path = %path.display(), bandwidth = ?params.bandwidth, "hydration started");
        let status = hydration.status();
        map.insert(path.to_path_buf(), hydration);
        status
    }

    /// Pauses, resumes, cancels or reports the hydration at `path`.
    pub fn act(&self, path: &Path, action: HydrateAction) -> Result<HydrationStatus, OpError> {
        let map = self.map();
        let Some(hydration) = map.get(path) else {
            return Err(OpError::invalid(format!(
                "no hydration of {} (start one with `lazysnap hydrate {}`)",
                path.display(),
                path.display()
            )));
        };
        match action {
            HydrateAction::Pause => hydration.pause(),
            HydrateAction::Resume => hydration.resume(),
            HydrateAction::Cancel => hydration.cancel(),
            HydrateAction::Status | HydrateAction::Start => {}
        }
        Ok(hydration.status())
    }

    pub fn status(&self, path: &Path) -> Option<HydrationStatus> {
        self.map().get(path).map(|h| h.status())
    }

    /// Stops and forgets the hydration of a mount that is going away.
    pub fn forget(&self, path: &Path) {
        if let Some(hydration) = self.map().remove(path) {
            hydration.cancel();
        }
    }
}

/// The request's cap and deadline; a snapshot mount finishes by the earliest validTill it shows.
fn options(view: &View, params: &HydrateParams) -> HydrateOptions {
    let valid_till = view
        .parts()
        .iter()
        .filter_map(|v| v.snapshot.as_ref().map(|s| s.valid_till_ms))
        .min();
    HydrateOptions {
        bandwidth: params.bandwidth,
        deadline_ms: params.deadline_ms.or(valid_till),
    }
}
