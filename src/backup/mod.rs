//! Continuous backup of an engine's folder into a backup location (Magma's `StartBackup`).
//!
//! [`start`] places every file of the folder in the location and calls the callback with them;
//! then, every interval, a round places the files that appeared since (hard links when the
//! location is a local directory on the same filesystem, uploads otherwise) and calls the callback
//! again with those. Each call of the callback's [`MetadataWriter`] becomes one generation,
//! `metadata.<n>.dat`, created once and never rewritten: it records the folder's files as of that
//! round with their checksums, so a generation is a point-in-time view that mounts and restores
//! read lazily. [`BackupHandle::stop`] ends the rounds after a final one. Starting again on the
//! same location continues the numbering after the newest generation found there.
//!
//! Files must be complete and immutable once they appear in the folder (engines rename or link
//! them in); a file that changes anyway is backed up again under a new object, and a hard-linked
//! copy that changed under an older generation fails its checksums there rather than serving
//! wrong bytes. A file's seqno range comes from a sidecar the engine writes before the file
//! appears: `<file>.seqnos` holding `<low> <high>` in decimal; sidecars are not backed up.

mod round;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::chain::ChainError;
use crate::manifest::ManifestError;
use crate::names::VolumeId;
use crate::publish::PublishError;
use crate::store::{Store, StoreError};

/// The suffix of a seqno sidecar: `log.0001.seqnos` describes `log.0001`.
pub const SEQNO_SIDECAR_SUFFIX: &str = ".seqnos";

/// A file that a round placed in the location (Magma's `BackupFile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupFile {
    pub name: String,
    pub len: u64,
    pub low_seqno: Option<u64>,
    pub high_seqno: Option<u64>,
}

/// Handed to the callback: each [`MetadataWriter::write`] becomes generation `n`, the next number,
/// stored right after the callback returns and before the next round.
#[derive(Debug, Default)]
pub struct MetadataWriter {
    next: u64,
    pending: Vec<String>,
}

impl MetadataWriter {
    /// Stores the engine's metadata as the next generation; answers its number.
    pub fn write(&mut self, metadata: &str) -> u64 {
        self.pending.push(metadata.to_string());
        self.next + self.pending.len() as u64 - 1
    }
}

/// Called after every round that placed files, lost files, or is the first.
pub type Callback = Box<dyn FnMut(&[BackupFile], &mut MetadataWriter) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub interval: Duration,
    /// Checksum block size of the generations written.
    pub block_size: u64,
    /// The volume a view of this location shows (`<mountPath>/<volume>/...`).
    pub volume: VolumeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackupState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    pub location: String,
    pub source: PathBuf,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    pub interval_seconds: u64,
    pub state: BackupState,
    pub rounds: u64,
    pub generations_written: u64,
    /// The newest generation in the location, written by this backup or found at start.
    pub last_generation: Option<u64>,
    pub files_linked: u64,
    pub files_uploaded: u64,
    pub bytes_placed: u64,
    pub last_round_at_ms: Option<u64>,
    /// The last round's failure; rounds go on (a store that is down now may be back next time).
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup source {0} is not a folder")]
    NotAFolder(PathBuf),
    #[error("block size {0} is not a power of two between 4 KiB and 64 MiB")]
    BlockSize(u64),
    #[error("cannot place {path} in the backup location: {source}")]
    Place {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another writer created generation {generation} in {location} at the same time; two backups must not share a location")]
    Conflict { location: String, generation: u64 },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// A running backup; dropping it without [`BackupHandle::stop`] ends the rounds at once.
pub struct BackupHandle {
    status: Arc<Mutex<BackupStatus>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(status: &Mutex<BackupStatus>) -> std::sync::MutexGuard<'_, BackupStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts backing `source` up into `location`: runs the first round (its error is the answer),
/// then one round per interval in a task. Needs a tokio runtime.
pub async fn start(
    source: PathBuf,
    location: Store,
    options: BackupOptions,
    callback: Callback,
) -> Result<BackupHandle, BackupError> {
    if !source.is_dir() {
        return Err(BackupError::NotAFolder(source));
    }
    let sizes = crate::manifest::MIN_BLOCK_SIZE..=crate::manifest::MAX_BLOCK_SIZE;
    if !sizes.contains(&options.block_size) || !options.block_size.is_power_of_two() {
        return Err(BackupError::BlockSize(options.block_size));
    }
    let status = Arc::new(Mutex::new(BackupStatus {
        location: location.url().to_string(),
        source: source.clone(),
        volume_id: options.volume.to_string(),
        interval_seconds: options.interval.as_secs(),
        state: BackupState::Running,
        rounds: 0,
        generations_written: 0,
        last_generation: None,
        files_linked: 0,
        files_uploaded: 0,
        bytes_placed: 0,
        last_round_at_ms: None,
        last_error: None,
    }));
    let mut rounds = round::Rounds::open(source, location, options.clone(), callback, status.clone()).await?;
    rounds.run_once().await?;
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let task_status = status.clone();
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = &mut stop_rx => true,
            };
            if let Err(e) = rounds.run_once().await {
                tracing::warn!(location = %rounds.location(), error = %e, "backup round failed");
            }
            if stopping {
                lock(&task_status).state = BackupState::Stopped;
                return;
            }
        }
    });
    Ok(BackupHandle {
        status,
        stop: Some(stop_tx),
        task,
    })
}

impl BackupHandle {
    pub fn status(&self) -> BackupStatus {
        lock(&self.status).clone()
    }

    /// Runs a final round and ends the backup; answers the final status (its `lastError` says
    /// whether the final round failed).
    pub async fn stop(mut self) -> BackupStatus {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        let mut status = lock(&self.status).clone();
        status.state = BackupState::Stopped;
        status
    }
}

impl Drop for BackupHandle {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
