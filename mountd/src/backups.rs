//! This node's continuous backups: one [`lazysnap::backup`] per location, started and stopped over
//! the control API, recorded in the index so that a daemon that died starts them again (a clean
//! `daemon stop` runs their final rounds and forgets them, like uploaders).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lazysnap::backup::{self, BackupHandle, BackupOptions, BackupStatus};
use lazysnap::control::{ops, BackupStartRequest, LocationRequest, OpError};
use lazysnap::index::Index;
use lazysnap::names::VolumeId;
use serde_json::json;

/// Seconds between rounds when the request names none (Magma's default backup interval).
const DEFAULT_INTERVAL_SECS: u64 = 120;

struct Running {
    request: BackupStartRequest,
    handle: BackupHandle,
}

pub struct Backups {
    index: Arc<Index>,
    active: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Locations whose first round runs now: a second start waits for no one, it is refused.
    starting: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Backups {
    pub fn new(index: Arc<Index>) -> Backups {
        Backups {
            index,
            active: tokio::sync::Mutex::default(),
            starting: std::sync::Mutex::default(),
        }
    }

    /// Starts a backup after its first round succeeded, or answers the one running with the same
    /// request. A location takes one backup at a time.
    pub async fn start(&self, req: &BackupStartRequest) -> Result<BackupStatus, OpError> {
        let source = ops::source_folder(&req.source)?;
        let interval = ops::interval_seconds(req.interval, DEFAULT_INTERVAL_SECS)?;
        let block_size = req.block_size.unwrap_or(lazysnap::manifest::DEFAULT_BLOCK_SIZE);
        let volume = match &req.volume {
            Some(v) => VolumeId::parse(v)?,
            None => default_volume(&source)?,
        };
        let location = ops::open_store(&req.location, true)?;
        let key = location.url().to_string();
        // Defaults filled in, so a request that leaves them out is the same request.
        let req = &BackupStartRequest {
            source: req.source.clone(),
            location: key.clone(),
            interval: Some(interval),
            volume: Some(volume.to_string()),
            block_size: Some(block_size),
        };
        let options = BackupOptions {
            interval: Duration::from_secs(interval),
            block_size,
            volume,
        };
        let source_text = req.source.clone();
        let callback: backup::Callback = Box::new(move |files, writer| {
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            writer.write(&json!({ "source": source_text, "newFiles": names }).to_string());
        });
        // The first round may read and upload a lot: other requests are not held up meanwhile,
        // but a second start of the same location is refused until it is done.
        if !self.starting_lock().insert(key.clone()) {
            return Err(OpError::invalid(format!(
                "a backup into {key} is starting; ask again when it answers"
            )));
        }
        if let Some(running) = self.active.lock().await.get(&key) {
            self.starting_lock().remove(&key);
            return same_or_busy(running, req, &key);
        }
        let started = backup::start(source, location, options, callback).await;
        let mut active = self.active.lock().await;
        self.starting_lock().remove(&key);
        let handle = started?;
        if let Err(e) = self.index.record_backup(&key, req) {
            tracing::warn!(error = %e, "cannot record the backup; it will not be started again after a crash");
        }
        tracing::info!(location = key, source = req.source, interval, "backup started");
        let status = handle.status();
        active.insert(
            key,
            Running {
                request: req.clone(),
                handle,
            },
        );
        Ok(status)
    }

    fn starting_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.starting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the final round and stops; answers the final status.
    pub async fn stop(&self, req: &LocationRequest) -> Result<BackupStatus, OpError> {
        let key = ops::open_store(&req.location, false)?.url().to_string();
        let running = self
            .active
            .lock()
            .await
            .remove(&key)
            .ok_or_else(|| OpError::unknown(format!("this node runs no backup into {key}")))?;
        let status = running.handle.stop().await;
        let _ = self.index.remove_backup(&key);
        tracing::info!(
            location = key,
            generations = status.generations_written,
            "backup stopped"
        );
        Ok(status)
    }

    pub async fn list(&self) -> Vec<BackupStatus> {
        self.active.lock().await.values().map(|r| r.handle.status()).collect()
    }

    /// Final rounds for all, for a clean shutdown; they are not started again.
    /// Stops every backup after its final round; `forget` removes their records, else the next
    /// daemon starts them again.
    pub async fn stop_all(&self, forget: bool) {
        let all = std::mem::take(&mut *self.active.lock().await);
        for (key, running) in all {
            running.handle.stop().await;
            if forget {
                let _ = self.index.remove_backup(&key);
            }
        }
    }

    /// Starts again the backups a daemon that died was running.
    pub async fn restore(&self) {
        let recorded = match self.index.backups::<BackupStartRequest>() {
            Ok(recorded) => recorded,
            Err(e) => return tracing::warn!(error = %e, "cannot read the recorded backups"),
        };
        for kept in recorded {
            let request = match kept.record {
                Ok(request) => request,
                Err(e) => {
                    tracing::warn!(error = %e, "not restoring a backup recorded by an older daemon");
                    continue;
                }
            };
            match self.start(&request).await {
                Ok(status) => tracing::info!(location = status.location, "restored a backup after a restart"),
                Err(e) => {
                    tracing::warn!(location = request.location, error = %e, "cannot restore a backup after a restart")
                }
            }
        }
    }
}

/// The running backup's status when `req` asks for it again, else why the location is busy.
fn same_or_busy(running: &Running, req: &BackupStartRequest, key: &str) -> Result<BackupStatus, OpError> {
    if running.request == *req {
        return Ok(running.handle.status());
    }
    Err(OpError::invalid(format!(
        "this node already backs up {} into {key}; stop that backup first",
        running.request.source
    )))
}

/// The source folder's name, as the volume a view of the location shows.
fn default_volume(source: &std::path::Path) -> Result<VolumeId, OpError> {
    let name = source.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    VolumeId::parse(name).map_err(|e| OpError::invalid(format!("{e}; name the backup's volume with \"volume\"")))
}
