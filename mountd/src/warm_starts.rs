//! Warm starts of new mounts (see `lazysnap::warm`): each replays the first-touch profiles of its
//! volumes into the cache on the background lane and, once its own first touches are recorded
//! (or it is unmounted first), saves them as the volumes' new profiles. Both are hints: a failure
//! is logged and costs only the next warm start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use lazysnap::fs::{FirstTouches, LazyFs};
use lazysnap::names::VolumeId;
use lazysnap::store::{Primed, Store};
use lazysnap::warm;

/// How long after a mount its first reads are recorded.
pub const RECORD_WINDOW: Duration = Duration::from_secs(30);

/// Profiles being read for a mount, with the GETs they prime; dropped with the mount when it fails.
pub struct Profiles(JoinHandle<Loaded>);

/// The profiles read, by view part, and what priming their GETs holds.
type Loaded = (Vec<(usize, warm::Profile)>, Option<Primed>);

impl Drop for Profiles {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The warm starts of a daemon's mounts, so that a clean stop can let them save what they recorded.
#[derive(Default)]
pub struct WarmStarts {
    tasks: Mutex<JoinSet<()>>,
    /// Set by a stop: recorders save what they have now, replays stop.
    stopping: Arc<AtomicBool>,
}

impl WarmStarts {
    /// Starts reading the profiles of `volumes` from `store`, for [`WarmStarts::start`], and the
    /// GETs they recorded: a mount asks before it resolves its manifests, so that the profiles'
    /// round trips overlap the manifests'.
    pub fn load(&self, store: Store, volumes: Vec<VolumeId>) -> Profiles {
        Profiles(tokio::spawn(async move {
            let profiles = warm::load(&store, &volumes).await;
            let primed = warm::prime(&store, &profiles);
            (profiles, primed)
        }))
    }

    /// Records `fs`'s first touches up to `bytes`, replays `profiles` (its volumes'), saves its own.
    pub fn start(&self, fs: &Arc<LazyFs>, bytes: u64, mut profiles: Profiles) {
        let touches = Arc::new(FirstTouches::new(bytes, RECORD_WINDOW));
        fs.record_first_touches(touches.clone());
        let mounted = Arc::downgrade(fs);
        let stopping = self.stopping.clone();
        let live = move || mounted.strong_count() > 0 && !stopping.load(Ordering::Relaxed);
        let view = fs.view().clone();
        let inheriting = touches.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let replay = async {
                // The primed GETs are kept until the replay has taken what it needs of them.
                let (profiles, _primed) = (&mut profiles.0).await.unwrap_or_default();
                if profiles.is_empty() {
                    return;
                }
                inheriting.inherit(warm::first_reads_by_inode(&view, &profiles));
                let started = std::time::Instant::now();
                let fetched = warm::replay(&view, &profiles, &live).await;
                tracing::info!(fetched, took = ?started.elapsed(), "warm start: fetched what the volumes' last mounts read first");
            };
            let record = async {
                while !touches.is_done() && live() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                match warm::save(&view, &touches).await {
                    Ok(volumes) if !volumes.is_empty() => {
                        tracing::info!(?volumes, "first-touch profiles saved for the next mounts")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot save first-touch profiles; the next mount starts cold")
                    }
                }
            };
            tokio::join!(replay, record);
        });
    }

    /// At a stop, after the mounts are gone: has every recorder save what it has, and waits up to
    /// `within` for the saves.
    pub async fn finish(&self, within: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                ?within,
                "first-touch profiles not saved in time; the next mounts start cold"
            );
        }
    }
}
