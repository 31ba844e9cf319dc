//! This node's uploaders (Fusion 0x74-0x76), one per (store, volume): the loop is the library's
//! [`lazysnap::uploader`]; here they are started, recorded so a daemon that died starts them again,
//! replaced by newer terms, and forgotten when stopped or fenced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lazysnap::control::{ops, OpError, UploaderStartRequest, VolumeRequest};
use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use lazysnap::uploader::{self, Synced, UploaderHandle, UploaderOptions, UploaderState, UploaderStatus};

/// Seconds between uploads when the request names none.
const DEFAULT_INTERVAL_SECS: u64 = 10;

type Key = (String, VolumeId);

pub struct Uploaders {
    index: Arc<Index>,
    active: tokio::sync::Mutex<BTreeMap<Key, UploaderHandle>>,
}

impl Uploaders {
    pub fn new(index: Arc<Index>) -> Uploaders {
        Uploaders {
            index,
            active: tokio::sync::Mutex::default(),
        }
    }

    /// Starts the uploader, or answers the running one when asked again with the same term and
    /// folder; a newer term replaces this node's running uploader of the volume.
    pub async fn start(&self, req: &UploaderStartRequest) -> Result<UploaderStatus, OpError> {
        let volume = VolumeId::parse(&req.volume)?;
        let source = ops::source_folder(&req.source)?;
        let interval = ops::interval_seconds(req.interval, DEFAULT_INTERVAL_SECS)?;
        let store = ops::open_store(&req.store, true)?;
        let key = (store.url().to_string(), volume.clone());
        let mut active = self.active.lock().await;
        if let Some(running) = active.get(&key) {
            let current = running.status();
            if current.term > req.term {
                return Err(OpError::invalid(format!(
                    "term {} is older than the term {} of this node's uploader of volume {volume}",
                    req.term.0, current.term.0
                )));
            }
            let same_term = current.term == req.term && current.state == UploaderState::Running;
            if same_term && current.source != source {
                return Err(OpError::invalid(format!(
                    "this node already uploads volume {volume} from {} under term {}; stop it first",
                    current.source.display(),
                    req.term.0
                )));
            }
            if same_term && current.interval_seconds == interval {
                return Ok(current);
            }
        }
        // The term first: if the store refuses it, what ran here keeps running (or stays FENCED).
        let index = self.index.clone();
        let on_fenced: uploader::OnFenced = Box::new(move |status: &UploaderStatus| {
            // Fenced for good: a restarted daemon must not try this term again.
            if let Ok(volume) = VolumeId::parse(&status.volume_id) {
                forget(&index, &(status.store.clone(), volume));
            }
        });
        let options = UploaderOptions {
            term: req.term.0,
            interval: Duration::from_secs(interval),
        };
        let handle = uploader::start(
            store.clone(),
            self.index.clone(),
            volume.clone(),
            source,
            options,
            on_fenced,
        )
        .await?;
        if let Some(replaced) = active.remove(&key) {
            replaced.stop().await;
        }
        let url = store.url().clone();
        tracing::info!(store = %key.0, volume = %volume, term = req.term.0, interval, "uploader started");
        let answer = handle.status();
        let record = UploaderStartRequest {
            store: key.0.clone(),
            source: answer.source.display().to_string(),
            interval: Some(interval),
            ..req.clone()
        };
        if let Err(e) = self.index.record_uploader(&url, &volume, &record) {
            tracing::warn!(error = %e, "cannot record the uploader; it will not be started again after a crash");
        }
        active.insert(key, handle);
        Ok(answer)
    }

    pub async fn stop(&self, req: &VolumeRequest) -> Result<UploaderStatus, OpError> {
        let key = self.key(req)?;
        let Some(uploader) = self.active.lock().await.remove(&key) else {
            return Err(not_running(&key));
        };
        let status = uploader.stop().await;
        forget(&self.index, &key);
        tracing::info!(store = %key.0, volume = %key.1, "uploader stopped");
        Ok(status)
    }

    /// Uploads now and answers the durable manifest that holds everything the folder had.
    pub async fn sync(&self, req: &VolumeRequest) -> Result<Synced, OpError> {
        let key = self.key(req)?;
        let sync = match self.active.lock().await.get(&key) {
            Some(uploader) => uploader.sync(),
            None => return Err(not_running(&key)),
        };
        Ok(sync.await?)
    }

    pub async fn list(&self) -> Vec<UploaderStatus> {
        self.active.lock().await.values().map(UploaderHandle::status).collect()
    }

    /// The volumes of `store` this node uploads.
    pub async fn volumes_of(&self, store: &str) -> Vec<VolumeId> {
        let active = self.active.lock().await;
        active
            .keys()
            .filter(|(s, _)| s == store)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stops the uploaders of these volumes of `store` (their namespace is being deleted).
    pub async fn stop_volumes(&self, store: &str, volumes: &[VolumeId]) {
        let mut active = self.active.lock().await;
        for volume in volumes {
            let key = (store.to_string(), volume.clone());
            if let Some(uploader) = active.remove(&key) {
                uploader.stop().await;
                forget(&self.index, &key);
                tracing::warn!(store, volume = %volume, "uploader stopped: its namespace is being deleted");
            }
        }
    }

    /// Stops every uploader as the daemon stops cleanly; like its mounts, they are not started
    /// again by the next daemon (only a daemon that died brings them back).
    /// Stops every uploader after its round; `forget_them` removes their records, else the next
    /// daemon starts them again.
    pub async fn stop_all(&self, forget_them: bool) {
        let all = std::mem::take(&mut *self.active.lock().await);
        for (key, uploader) in all {
            uploader.stop().await;
            if forget_them {
                forget(&self.index, &key);
            }
        }
    }

    /// Starts again the uploaders a daemon that died had running, under their terms: one whose
    /// term was taken over meanwhile is refused by the store, logged and forgotten.
    pub async fn restore(&self) {
        let recorded = match self.index.uploaders::<UploaderStartRequest>() {
            Ok(recorded) => recorded,
            Err(e) => return tracing::warn!(error = %e, "cannot read the recorded uploaders"),
        };
        for kept in recorded {
            let request: UploaderStartRequest = match kept.record {
                Ok(request) => request,
                Err(e) => {
                    tracing::warn!(error = %e, "not restoring an uploader recorded by an older daemon");
                    continue;
                }
            };
            match self.start(&request).await {
                Ok(status) => tracing::info!(
                    volume = status.volume_id,
                    term = status.term.0,
                    "restored an uploader after a restart"
                ),
                Err(e) => {
                    tracing::warn!(volume = request.volume, error = %e, "cannot restore an uploader after a restart");
                    if let (Ok(url), Ok(volume)) = (
                        request.store.parse::<lazysnap::store::StoreUrl>(),
                        VolumeId::parse(&request.volume),
                    ) {
                        forget(&self.index, &(url.to_string(), volume));
                    }
                }
            }
        }
    }

    fn key(&self, req: &VolumeRequest) -> Result<Key, OpError> {
        let volume = VolumeId::parse(&req.volume)?;
        let store = ops::open_store(&req.store, false)?;
        Ok((store.url().to_string(), volume))
    }
}

/// Forgets a recorded uploader: it was stopped, or fenced for good.
fn forget(index: &Index, key: &Key) {
    let removed = key
        .0
        .parse()
        .map_err(|e: lazysnap::store::StoreError| e.to_string())
        .and_then(|url| index.remove_uploader(&url, &key.1).map_err(|e| e.to_string()));
    if let Err(e) = removed {
        tracing::warn!(store = %key.0, volume = %key.1, error = e, "cannot forget the uploader's record");
    }
}

fn not_running(key: &Key) -> OpError {
    OpError::unknown(format!(
        "no uploader of volume {} in store {} runs on this node",
        key.1, key.0
    ))
}
