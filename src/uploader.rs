//! An uploader (Fusion 0x74-0x76): publishes an engine folder as the next manifest of its volume
//! every interval, under its term, and cleans the log store under that term now and then.
//!
//! Fencing lives in the store, not here: [`start`] first writes the term into the manifest chain,
//! and every later publish or GC of an older term is refused there. An uploader that learns it was
//! fenced stops writing, reports [`UploaderState::Fenced`] and tells its owner once (who then
//! forgets it: a fenced term never comes back). Who runs uploaders, records and restarts them is
//! the daemon's business; this module is one uploader's loop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::chain;
use crate::gc::{self, GcError, GcOptions};
use crate::index::Index;
use crate::names::VolumeId;
use crate::publish::{self, PublishError, PublishOptions, Term};
use crate::store::Store;

/// GC runs after an upload at most this often: it lists the whole volume.
const GC_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum UploaderState {
    Running,
    /// A newer term took the volume over: this uploader writes nothing more.
    Fenced,
    /// Stopped by request.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// What a sync made durable: the manifest that holds everything the folder had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Synced {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub log_manifest_name: String,
    /// False when the folder had not changed since the last manifest.
    pub published: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UploaderError {
    #[error("the uploader of volume {volume} is fenced: {reason}")]
    Fenced { volume: VolumeId, reason: String },
    #[error("the uploader of volume {0} has stopped")]
    Stopped(VolumeId),
    /// A publish failed; the next interval tries again.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Called once, from the uploader's task, when a newer term fences it.
pub type OnFenced = Box<dyn Fn(&UploaderStatus) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct UploaderOptions {
    pub term: u64,
    pub interval: Duration,
}

enum Command {
    Sync(oneshot::Sender<Result<Synced, UploaderError>>),
    Stop,
}

/// A running uploader; dropped, it ends after the round in progress.
pub struct UploaderHandle {
    volume: VolumeId,
    status: Arc<Mutex<UploaderStatus>>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(status: &Mutex<UploaderStatus>) -> std::sync::MutexGuard<'_, UploaderStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes `options.term` the volume's term (refused when a newer one holds it), then uploads
/// `source` every interval in a task. Needs a tokio runtime.
pub async fn start(
    store: Store,
    index: Arc<Index>,
    volume: VolumeId,
    source: PathBuf,
    options: UploaderOptions,
    on_fenced: OnFenced,
) -> Result<UploaderHandle, PublishError> {
    let started = publish::start_term(&store, &index, &volume, options.term).await?;
    let status = Arc::new(Mutex::new(UploaderStatus {
        store: store.url().to_string(),
        volume_id: volume.to_string(),
        source: source.clone(),
        term: Term(options.term),
        interval_seconds: options.interval.as_secs(),
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
    let worker = Worker {
        store,
        index,
        volume: volume.clone(),
        source,
        term: options.term,
        status: status.clone(),
        on_fenced,
        published: None,
        last_gc: None,
    };
    let task = tokio::spawn(worker.run(options.interval, receiver));
    Ok(UploaderHandle {
        volume,
        status,
        commands,
        task,
    })
}

impl UploaderHandle {
    pub fn status(&self) -> UploaderStatus {
        lock(&self.status).clone()
    }

    /// Uploads now (after the round in progress) and answers the durable manifest. The future
    /// does not borrow the handle, so whoever keeps handles need not hold them while it runs.
    pub fn sync(&self) -> impl std::future::Future<Output = Result<Synced, UploaderError>> + Send + 'static {
        let commands = self.commands.clone();
        let volume = self.volume.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            if commands.send(Command::Sync(reply)).await.is_err() {
                return Err(UploaderError::Stopped(volume));
            }
            answer.await.unwrap_or(Err(UploaderError::Stopped(volume)))
        }
    }

    /// Lets the round in progress finish (a publish is never cut short), then ends the task.
    pub async fn stop(self) -> UploaderStatus {
        let UploaderHandle {
            status, commands, task, ..
        } = self;
        let _ = commands.send(Command::Stop).await;
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "uploader task failed");
        }
        let mut status = lock(&status);
        if status.state == UploaderState::Running {
            status.state = UploaderState::Stopped;
        }
        status.clone()
    }
}

struct Worker {
    store: Store,
    index: Arc<Index>,
    volume: VolumeId,
    source: PathBuf,
    term: u64,
    status: Arc<Mutex<UploaderStatus>>,
    on_fenced: OnFenced,
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
            let published = outcome.as_ref().is_ok_and(|synced| synced.published);
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
            if published {
                self.collect_now_and_then().await;
            }
        }
    }

    fn fenced_error(&self) -> UploaderError {
        let status = lock(&self.status);
        UploaderError::Fenced {
            volume: self.volume.clone(),
            reason: status
                .last_error
                .clone()
                .unwrap_or_else(|| "a newer term took over".to_string()),
        }
    }

    /// Publishes the folder unless it is unchanged since the last publish; answers the manifest.
    async fn upload(&mut self) -> Result<Synced, UploaderError> {
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
            UploaderError::Publish(e)
        })
    }

    async fn try_upload(&mut self) -> Result<Synced, PublishError> {
        let fingerprint = publish::fingerprint(&self.source).await?;
        if self.published == Some(fingerprint) {
            // Nothing to write, but a newer term may have taken over: learn it now, not at the
            // next change, so the state this node reports is true.
            let head = chain::latest_manifest_name(&self.store, &self.volume).await?;
            let mut name = lock(&self.status).log_manifest_name.clone();
            if let Some(head) = head {
                let row = chain::load_manifest(&self.store, &self.index, &self.volume, &head).await?;
                if row.term > self.term {
                    return Err(PublishError::Fenced {
                        requested: self.term,
                        current: row.term,
                    });
                }
                name = head;
            }
            return Ok(self.synced(name, false));
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
        status.last_upload_at_ms = Some(crate::time::now_ms());
        drop(status);
        Ok(self.synced(report.log_manifest_name, true))
    }

    fn synced(&self, log_manifest_name: String, published: bool) -> Synced {
        Synced {
            volume_id: self.volume.to_string(),
            log_manifest_name,
            published,
        }
    }

    fn fence(&self, reason: &str) {
        let mut status = lock(&self.status);
        let newly = status.state != UploaderState::Fenced;
        status.state = UploaderState::Fenced;
        status.last_error = Some(reason.to_string());
        let snapshot = status.clone();
        drop(status);
        if newly {
            tracing::error!(volume = %self.volume, term = self.term, reason, "uploader fenced by a newer term; it writes nothing more");
            (self.on_fenced)(&snapshot);
        }
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
        match gc::collect(&self.store, &self.index, &self.volume, &options, crate::time::now_ms()).await {
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
