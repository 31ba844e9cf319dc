//! Warm starts of new mounts (see `lazysnap::warm`): each replays the first-touch profiles of its
//! volumes into the cache on the background lane and, once its own first touches are recorded
//! (or it is unmounted first), saves them as the volumes' new profiles. Both are hints: a failure
//! is logged and costs only the next warm start.

use std::sync::Arc;
use std::time::Duration;

use lazysnap::fs::{FirstTouches, LazyFs};
use lazysnap::warm;

/// How long after a mount its first reads are recorded.
pub const RECORD_WINDOW: Duration = Duration::from_secs(30);

/// Records `fs`'s first touches up to `bytes`, replays its volumes' profiles, saves its own.
pub fn start(fs: &Arc<LazyFs>, bytes: u64) {
    let touches = Arc::new(FirstTouches::new(bytes, RECORD_WINDOW));
    fs.record_first_touches(touches.clone());
    let mounted = Arc::downgrade(fs);
    let view = fs.view().clone();
    tokio::spawn(async move {
        let replay = async {
            let profiles = warm::load(&view).await;
            if profiles.is_empty() {
                return;
            }
            let fetched = warm::replay(&view, &profiles, || mounted.strong_count() > 0).await;
            tracing::info!(fetched, "warm start: fetched what the volumes' last mounts read first");
        };
        let record = async {
            while !touches.is_done() && mounted.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            match warm::save(&view, &touches).await {
                Ok(volumes) if !volumes.is_empty() => {
                    tracing::info!(?volumes, "first-touch profiles saved for the next mounts")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot save first-touch profiles; the next mount starts cold"),
            }
        };
        tokio::join!(replay, record);
    });
}
