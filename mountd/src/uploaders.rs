//! This node's uploaders (Fusion 0x74-0x76): one task per (store, volume) that publishes an engine
//! folder as the volume's next manifest every interval, under its term, and cleans the log store
//! under that term now and then.
//!
//! Fencing lives in the store, not here: starting an uploader writes its term into the manifest
//! chain, and every later publish or GC of an older term is refused there. An uploader that learns
//! it was fenced stops writing and reports FENCED until it is stopped or replaced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lazysnap::catalog;
use lazysnap::control::{ops, OpError, Term, UploaderStartRequest, VolumeRequest};
use lazysnap::gc::{self, GcError, GcOptions};
use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use lazysnap::publish::{self, PublishError, PublishOptions};
use lazysnap::store::Store;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// Seconds between uploads when the request names none.
const DEFAULT_INTERVAL_SECS: u64 = 10;
/// GC runs after an upload at most this often: it lists the whole volume.
const GC_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum UploaderState {
    Running,
    /// A newer term took the volume over: this uploader writes nothing more.
    Fenced,
    /// Stopped by request (the answer to `uploader_stop`).
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploaderStatus {
    pub store: String,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub source: PathBuf,
    pub term: Term,
    pub interval_seconds: u64,
    pub state: UploaderState,
    /// The newest manifest this uploader wrote or found current.
    pub log_manifest_name: String,
    pub manifests_written: u64,
    pub bytes_uploaded: u64,
    pub last_upload_at_ms: Option<u64>,
    pub files_collected: u64,
    pub bytes_collected: u64,
    pub last_error: Option<String>,
}

enum Command {
    Sync(oneshot::Sender<Result<Value, OpError>>),
    Stop,
}

struct Uploader {
    status: Arc<Mutex<UploaderStatus>>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

type Key = (String, VolumeId);

pub struct Uploaders {
    index: Arc<Index>,
    active: tokio::sync::Mutex<BTreeMap<Key, Uploader>>,
}

fn lock(status: &Mutex<UploaderStatus>) -> std::sync::MutexGuard<'_, UploaderStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
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
            let current = lock(&running.status).clone();
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
        let started = publish::start_term(&store, &self.index, &volume, req.term.0).await?;
        if let Some(replaced) = active.remove(&key) {
            stop(replaced).await;
        }
        let status = Arc::new(Mutex::new(UploaderStatus {
            store: key.0.clone(),
            volume_id: volume.to_string(),
            source: source.clone(),
            term: req.term,
            interval_seconds: interval,
            state: UploaderState::Running,
            log_manifest_name: started.log_manifest_name,
            manifests_written: 0,
            bytes_uploaded: 0,
            last_upload_at_ms: None,
            files_collected: 0,
            bytes_collected: 0,
            last_error: None,
        }));
        let (commands, receiver) = mpsc::channel(16);
        let url = store.url().clone();
        let worker = Worker {
            store,
            index: self.index.clone(),
            volume: volume.clone(),
            source,
            term: req.term.0,
            status: status.clone(),
            published: None,
            last_gc: None,
        };
        let task = tokio::spawn(worker.run(Duration::from_secs(interval), receiver));
        tracing::info!(store = %key.0, volume = %volume, term = req.term.0, interval, "uploader started");
        let answer = lock(&status).clone();
        let record = UploaderStartRequest {
            store: key.0.clone(),
            source: answer.source.display().to_string(),
            interval: Some(interval),
            ..req.clone()
        };
        let record = serde_json::to_string(&record).expect("requests serialise");
        if let Err(e) = self.index.record_uploader(&url, &volume, &record) {
            tracing::warn!(error = %e, "cannot record the uploader; it will not be started again after a crash");
        }
        active.insert(key, Uploader { status, commands, task });
        Ok(answer)
    }

    pub async fn stop(&self, req: &VolumeRequest) -> Result<UploaderStatus, OpError> {
        let key = self.key(req)?;
        let Some(uploader) = self.active.lock().await.remove(&key) else {
            return Err(not_running(&key));
        };
        let status = stop(uploader).await;
        forget(&self.index, &key);
        tracing::info!(store = %key.0, volume = %key.1, "uploader stopped");
        Ok(status)
    }

    /// Uploads now and answers the durable manifest that holds everything the folder had.
    pub async fn sync(&self, req: &VolumeRequest) -> Result<Value, OpError> {
        let key = self.key(req)?;
        let commands = match self.active.lock().await.get(&key) {
            Some(uploader) => uploader.commands.clone(),
            None => return Err(not_running(&key)),
        };
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Sync(reply))
            .await
            .map_err(|_| OpError::internal(format!("the uploader of volume {} has stopped", key.1)))?;
        answer
            .await
            .map_err(|_| OpError::internal(format!("the uploader of volume {} stopped before it synced", key.1)))?
    }

    pub async fn list(&self) -> Vec<UploaderStatus> {
        self.active
            .lock()
            .await
            .values()
            .map(|u| lock(&u.status).clone())
            .collect()
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
                stop(uploader).await;
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
            stop(uploader).await;
            if forget_them {
                forget(&self.index, &key);
            }
        }
    }

    /// Starts again the uploaders a daemon that died had running, under their terms: one whose
    /// term was taken over meanwhile is refused by the store, logged and forgotten.
    pub async fn restore(&self) {
        let recorded = match self.index.uploaders() {
            Ok(recorded) => recorded,
            Err(e) => return tracing::warn!(error = %e, "cannot read the recorded uploaders"),
        };
        for text in recorded {
            let request: UploaderStartRequest = match serde_json::from_str(&text) {
                Ok(request) => request,
                Err(e) => {
                    tracing::warn!(error = %e, record = text, "not restoring an uploader recorded by an older daemon");
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

/// Lets the round in progress finish (a publish is never cut short), then ends the task.
async fn stop(uploader: Uploader) -> UploaderStatus {
    let _ = uploader.commands.send(Command::Stop).await;
    if let Err(e) = uploader.task.await {
        tracing::warn!(error = %e, "uploader task failed");
    }
    let mut status = lock(&uploader.status);
    if status.state == UploaderState::Running {
        status.state = UploaderState::Stopped;
    }
    status.clone()
}

struct Worker {
    store: Store,
    index: Arc<Index>,
    volume: VolumeId,
    source: PathBuf,
    term: u64,
    status: Arc<Mutex<UploaderStatus>>,
    /// The folder's fingerprint when it was last published.
    published: Option<[u8; 32]>,
    last_gc: Option<Instant>,
}

impl Worker {
    async fn run(mut self, interval: Duration, mut commands: mpsc::Receiver<Command>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reply = tokio::select! {
                _ = ticker.tick() => None,
                command = commands.recv() => match command {
                    Some(Command::Sync(reply)) => Some(reply),
                    Some(Command::Stop) | None => return,
                },
            };
            let fenced = lock(&self.status).state == UploaderState::Fenced;
            let outcome = match fenced {
                true => Err(self.fenced_error()),
                false => self.upload().await,
            };
            if let Some(reply) = reply {
                let _ = reply.send(outcome.clone());
            }
            if outcome.is_ok_and(|published| published["published"] == true) {
                self.collect_now_and_then().await;
            }
        }
    }

    fn fenced_error(&self) -> OpError {
        let status = lock(&self.status);
        OpError::unknown(format!(
            "the uploader of volume {} is fenced: {}",
            self.volume,
            status.last_error.as_deref().unwrap_or("a newer term took over")
        ))
    }

    /// Publishes the folder unless it is unchanged since the last publish; answers the manifest.
    async fn upload(&mut self) -> Result<Value, OpError> {
        let result = self.try_upload().await;
        let mut status = lock(&self.status);
        match &result {
            Ok(_) => status.last_error = None,
            Err(e) => {
                let fenced = matches!(e, PublishError::Fenced { .. });
                if !fenced && status.last_error.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(volume = %self.volume, error = %e, "upload failed; retrying next interval");
                }
                status.last_error = Some(e.to_string());
            }
        }
        drop(status);
        result.map_err(|e| {
            if matches!(e, PublishError::Fenced { .. }) {
                self.fence(&e.to_string());
                return self.fenced_error();
            }
            OpError::from(e)
        })
    }

    async fn try_upload(&mut self) -> Result<Value, PublishError> {
        let fingerprint = publish::fingerprint(&self.source).await?;
        if self.published == Some(fingerprint) {
            // Nothing to write, but a newer term may have taken over: learn it now, not at the
            // next change, so the state this node reports is true.
            let head = catalog::latest_manifest_name(&self.store, &self.volume).await?;
            let mut name = lock(&self.status).log_manifest_name.clone();
            if let Some(head) = head {
                let row = catalog::load_manifest(&self.store, &self.index, &self.volume, &head).await?;
                if row.term > self.term {
                    return Err(PublishError::Fenced {
                        requested: self.term,
                        current: row.term,
                    });
                }
                name = head;
            }
            return Ok(json!({ "volumeID": self.volume.as_str(), "logManifestName": name, "published": false }));
        }
        let options = PublishOptions {
            term: Some(self.term),
            ..PublishOptions::default()
        };
        let report = publish::publish(
            &self.store,
            &self.index,
            &self.source,
            &self.volume,
            &options,
            &publish::NoProgress,
        )
        .await?;
        self.published = Some(fingerprint);
        let mut status = lock(&self.status);
        status.log_manifest_name = report.log_manifest_name.clone();
        status.manifests_written += 1;
        status.bytes_uploaded += report.bytes_uploaded;
        status.last_upload_at_ms = Some(lazysnap::now_ms());
        Ok(json!({ "volumeID": self.volume.as_str(), "logManifestName": report.log_manifest_name, "published": true }))
    }

    fn fence(&self, reason: &str) {
        let mut status = lock(&self.status);
        if status.state != UploaderState::Fenced {
            // Fenced for good: a restarted daemon must not try this term again.
            forget(&self.index, &(self.store.url().to_string(), self.volume.clone()));
            tracing::error!(volume = %self.volume, term = self.term, reason, "uploader fenced by a newer term; it writes nothing more");
        }
        status.state = UploaderState::Fenced;
        status.last_error = Some(reason.to_string());
    }

    /// Cleans the log store under this uploader's term, at most every [`GC_EVERY`].
    async fn collect_now_and_then(&mut self) {
        if self.last_gc.is_some_and(|at| at.elapsed() < GC_EVERY) {
            return;
        }
        self.last_gc = Some(Instant::now());
        let options = GcOptions {
            term: Some(self.term),
            ..GcOptions::default()
        };
        match gc::collect(&self.store, &self.index, &self.volume, &options, lazysnap::now_ms()).await {
            Ok(report) => {
                let mut status = lock(&self.status);
                status.files_collected += report.files_deleted.len() as u64;
                status.bytes_collected += report.bytes_deleted;
            }
            Err(e @ GcError::Fenced { .. }) => self.fence(&e.to_string()),
            Err(e) => tracing::warn!(volume = %self.volume, error = %e, "log cleaning failed; trying again later"),
        }
    }
}
