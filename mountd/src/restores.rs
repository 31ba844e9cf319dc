//! Restore jobs: copies of a view into a local folder ([`lazysnap::restore`]) that run in the
//! daemon, live in the index (so any client can ask about them) and resume after a restart.
//!
//! A job is named by its request: starting the same request again answers the same job. The view
//! is pinned when the job is made (the manifest or generation it resolved to), so a resumed job
//! copies the same files even if the volume moved on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lazysnap::control::records::{JobState, RestoreJob, RestoreJobStatus, RestoreJobs};
use lazysnap::control::{JobRequest, OpError, RestoreStartRequest};
use lazysnap::index::{Index, Kept};
use lazysnap::restore::{self, Progress, RestoreError};
use lazysnap::store::StoreUrl;
use lazysnap::view::{Reading, View};

use crate::mounts::Mounts;

mod in_place;

/// How often a waiting `restore_status` looks at a job that has no task here (an in-place one).
const IN_PLACE_LOOK: Duration = Duration::from_millis(50);

/// How often a running job writes its progress to the index.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

struct RunningJob {
    progress: Arc<Progress>,
    started: Instant,
    /// Bytes earlier runs fetched.
    fetched_before: u64,
    /// Turns true when the job's task has ended and recorded its outcome.
    ended: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

type Running = Arc<Mutex<BTreeMap<String, RunningJob>>>;

pub struct Restores {
    index: Arc<Index>,
    reading: Arc<Reading>,
    running: Running,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Restores {
    pub fn new(reading: Arc<Reading>) -> Restores {
        Restores {
            index: reading.index().clone(),
            reading,
            running: Arc::default(),
        }
    }

    /// Makes and starts the job of `req`, or answers the job the same request made before.
    pub async fn start(&self, mounts: &Mounts, req: &RestoreStartRequest) -> Result<RestoreJobStatus, OpError> {
        let req = canonical(req)?;
        if let Some(existing) = self.by_request(&req)? {
            return Ok(self.status_of(mounts, &existing));
        }
        let (view, manifests) = view(&self.reading, &req, None).await?;
        // Only once the view resolved: a bad request leaves no folder behind.
        if !req.in_place {
            let dest = PathBuf::from(&req.dest);
            std::fs::create_dir_all(&dest)
                .map_err(|e| OpError::invalid(format!("cannot create restore destination {}: {e}", dest.display())))?;
        }
        let record = RestoreJob {
            id: format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            request: req,
            manifests,
            state: JobState::Running,
            bytes_total: 0,
            bytes_done: 0,
            files_total: 0,
            files_done: 0,
            sstables_total: 0,
            sstables_done: 0,
            bytes_fetched: 0,
            bytes_fetched_this_run: 0,
            error: None,
            created_at_ms: lazysnap::time::now_ms(),
            finished_at_ms: None,
        };
        let stored = self
            .index
            .insert_restore_job(&record.id, &record.request, &record)
            .map_err(internal)?;
        if stored != record.id {
            // Another client made the same job a moment ago.
            return self.status(mounts, &stored);
        }
        tracing::info!(
            job = record.id,
            dest = record.request.dest,
            in_place = record.request.in_place,
            "restore job started"
        );
        self.launch(mounts, view, record).await?;
        self.status(mounts, &stored)
    }

    /// Runs a job: a copy in a task, or (in place) a mount at the destination that hydrates.
    async fn launch(&self, mounts: &Mounts, view: Option<Arc<View>>, record: RestoreJob) -> Result<(), OpError> {
        if let Some(view) = view {
            self.run(view, record);
            return Ok(());
        }
        if let Err(e) = in_place::start(mounts, &record.request, &record.manifests).await {
            let failed = RestoreJob {
                state: JobState::Failed,
                error: Some(e.message.clone()),
                finished_at_ms: Some(lazysnap::time::now_ms()),
                ..record
            };
            self.save(&failed);
            return Err(e);
        }
        self.save(&record);
        Ok(())
    }

    /// The job's status: live figures while it runs here, else as recorded.
    pub fn status(&self, mounts: &Mounts, id: &str) -> Result<RestoreJobStatus, OpError> {
        Ok(self.status_of(mounts, &self.record(id)?))
    }

    /// The job's status once it has ended, or after `wait`, whichever comes first.
    pub async fn status_within(&self, mounts: &Mounts, id: &str, wait: Duration) -> Result<RestoreJobStatus, OpError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self.status(mounts, id)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if status.job.state.is_final() || left.is_zero() {
                return Ok(status);
            }
            let ended = lock(&self.running).get(id).map(|job| job.ended.clone());
            match ended {
                // Woken by the task's end.
                Some(mut ended) => {
                    let _ = tokio::time::timeout(left, ended.wait_for(|done| *done)).await;
                }
                // In place (a hydration) or between runs: looked at again shortly.
                None => tokio::time::sleep(left.min(IN_PLACE_LOOK)).await,
            }
        }
    }

    pub fn list(&self, mounts: &Mounts) -> Result<RestoreJobs, OpError> {
        let rows = self.index.restore_jobs().map_err(internal)?;
        let jobs = rows
            .into_iter()
            .map(|row| parse(row).map(|record| self.status_of(mounts, &record)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RestoreJobs { jobs })
    }

    /// Stops a running job (its temporary files go; files already complete stay) or marks a job
    /// that is not running cancelled.
    pub async fn cancel(&self, mounts: &Mounts, req: &JobRequest) -> Result<RestoreJobStatus, OpError> {
        let running = lock(&self.running).remove(&req.id);
        if let Some(job) = running {
            job.progress.cancelled.store(true, Relaxed);
            let _ = job.task.await;
            return self.status(mounts, &req.id);
        }
        // An in-place job's state follows its hydration: look first.
        let _ = self.status(mounts, &req.id);
        let mut record = self.record(&req.id)?;
        if record.state == JobState::Completed {
            return Err(OpError::invalid(format!("restore job {} already completed", record.id)));
        }
        match record.request.in_place {
            // The mount stays: the engine may be using it. Only the hydration stops.
            true => in_place::cancel(mounts, &record.request),
            false => restore::remove_temp_files(Path::new(&record.request.dest), &record.id),
        }
        record.state = JobState::Cancelled;
        record.finished_at_ms = Some(lazysnap::time::now_ms());
        self.save(&record);
        Ok(self.status_of(mounts, &record))
    }

    /// Runs a job that is not running again; what it completed before is kept, not fetched.
    pub async fn resume(&self, mounts: &Mounts, req: &JobRequest) -> Result<RestoreJobStatus, OpError> {
        let record = self.record(&req.id)?;
        if lock(&self.running).contains_key(&req.id) {
            return self.status(mounts, &req.id);
        }
        self.resume_record(mounts, record).await?;
        self.status(mounts, &req.id)
    }

    async fn resume_record(&self, mounts: &Mounts, mut record: RestoreJob) -> Result<(), OpError> {
        let (view, _) = view(&self.reading, &record.request, Some(&record.manifests)).await?;
        record.state = JobState::Running;
        record.error = None;
        record.finished_at_ms = None;
        tracing::info!(job = record.id, "restore job resumed");
        self.launch(mounts, view, record).await
    }

    /// Takes up the jobs a daemon that stopped or died left running or pending.
    pub async fn restore(&self, mounts: &Mounts) {
        let rows = match self.index.restore_jobs() {
            Ok(rows) => rows,
            Err(e) => return tracing::warn!(error = %e, "cannot read the recorded restore jobs"),
        };
        for row in rows {
            let Ok(record) = parse(row) else { continue };
            // Started by a request while this daemon recovered its mounts: it runs already.
            if lock(&self.running).contains_key(&record.id) {
                continue;
            }
            if matches!(record.state, JobState::Running | JobState::Pending) {
                let id = record.id.clone();
                if let Err(e) = self.resume_record(mounts, record.clone()).await {
                    tracing::warn!(job = id, error = %e, "cannot resume a restore job after a restart");
                    let failed = RestoreJob {
                        state: JobState::Failed,
                        error: Some(e.message),
                        ..record
                    };
                    self.save(&failed);
                }
            }
        }
    }

    /// For a clean daemon stop: running jobs stop where they are and become PENDING, to resume
    /// when the daemon starts again.
    pub async fn pause_all(&self) {
        let all = std::mem::take(&mut *lock(&self.running));
        for (id, job) in all {
            job.task.abort();
            let _ = job.task.await;
            if let Ok(mut record) = self.record(&id) {
                record.state = JobState::Pending;
                fill(&mut record, &job.progress, job.fetched_before);
                self.save(&record);
            }
        }
    }

    fn run(&self, view: Arc<View>, mut record: RestoreJob) {
        let progress = Arc::new(Progress::default());
        let (index, running) = (self.index.clone(), self.running.clone());
        let task_progress = progress.clone();
        let id = record.id.clone();
        let fetched_before = record.bytes_fetched;
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        // Registered before the task can end: its last act is to remove its own entry.
        let mut registry = lock(&self.running);
        let task = tokio::spawn(async move {
            let progress = task_progress;
            let dest = PathBuf::from(&record.request.dest);
            let job_id = record.id.clone();
            let copy = restore::copy_view(&view, &dest, &job_id, record.request.bandwidth, &progress);
            tokio::pin!(copy);
            let mut ticker = tokio::time::interval(PERSIST_EVERY);
            let result = loop {
                tokio::select! {
                    result = &mut copy => break result,
                    _ = ticker.tick() => {
                        let mut snapshot = record.clone();
                        fill(&mut snapshot, &progress, fetched_before);
                        save(&index, &snapshot);
                    }
                }
            };
            fill(&mut record, &progress, fetched_before);
            record.finished_at_ms = Some(lazysnap::time::now_ms());
            match result {
                Ok(()) => record.state = JobState::Completed,
                Err(RestoreError::Cancelled) => {
                    restore::remove_temp_files(&dest, &record.id);
                    record.state = JobState::Cancelled;
                }
                Err(e) => {
                    tracing::warn!(job = record.id, error = %e, "restore job failed");
                    record.state = JobState::Failed;
                    record.error = Some(e.to_string());
                }
            }
            save(&index, &record);
            lock(&running).remove(&record.id);
            let _ = ended_tx.send(true);
            tracing::info!(job = record.id, state = ?record.state, "restore job ended");
        });
        registry.insert(
            id,
            RunningJob {
                progress,
                started: Instant::now(),
                fetched_before,
                ended,
                task,
            },
        );
    }

    fn status_of(&self, mounts: &Mounts, record: &RestoreJob) -> RestoreJobStatus {
        let mut record = record.clone();
        let mut rate = None;
        let mut eta = None;
        if record.request.in_place && matches!(record.state, JobState::Running | JobState::Pending) {
            if let Some(h) = in_place::hydration(mounts, &record.request) {
                (rate, eta) = (Some(h.rate), h.eta_seconds);
                (record.bytes_total, record.bytes_done) = (h.bytes_total, h.bytes_done);
                (record.files_total, record.files_done) = (h.files_total, h.files_done);
                (record.bytes_fetched, record.bytes_fetched_this_run) = (h.bytes_fetched, h.bytes_fetched);
                let state = in_place::job_state(h.state);
                if state != JobState::Running {
                    record.state = state;
                    record.error = h.error;
                    record.finished_at_ms = Some(lazysnap::time::now_ms());
                    self.save(&record);
                }
            }
        }
        if let Some(job) = lock(&self.running).get(&record.id) {
            fill(&mut record, &job.progress, job.fetched_before);
            record.state = JobState::Running;
            let elapsed = job.started.elapsed().as_secs_f64().max(1e-3);
            // Bytes kept from an earlier run count too: they are verified, which takes a read.
            let per_second = record.bytes_done as f64 / elapsed;
            rate = Some(per_second);
            if per_second > 0.0 {
                eta = Some(record.bytes_total.saturating_sub(record.bytes_done) as f64 / per_second);
            }
        }
        RestoreJobStatus::new(record, rate, eta)
    }

    fn record(&self, id: &str) -> Result<RestoreJob, OpError> {
        let row = self
            .index
            .restore_job(id)
            .map_err(internal)?
            .ok_or_else(|| OpError::unknown(format!("no restore job {id}")))?;
        parse(row)
    }

    fn by_request(&self, request: &RestoreStartRequest) -> Result<Option<RestoreJob>, OpError> {
        let row = self.index.restore_job_by_request(request).map_err(internal)?;
        row.map(parse).transpose()
    }

    fn save(&self, record: &RestoreJob) {
        save(&self.index, record);
    }
}

fn save(index: &Index, record: &RestoreJob) {
    if let Err(e) = index.update_restore_job(&record.id, record) {
        tracing::warn!(job = record.id, error = %e, "cannot record restore job progress");
    }
}

/// Copies a run's live figures into the record; `fetched_before` is what earlier runs fetched.
fn fill(record: &mut RestoreJob, progress: &Progress, fetched_before: u64) {
    record.bytes_total = progress.bytes_total.load(Relaxed);
    record.bytes_done = progress.bytes_done.load(Relaxed);
    record.files_total = progress.files_total.load(Relaxed);
    record.files_done = progress.files_done.load(Relaxed);
    record.sstables_total = progress.sstables_total.load(Relaxed);
    record.sstables_done = progress.sstables_done.load(Relaxed);
    record.bytes_fetched_this_run = progress.bytes_fetched.load(Relaxed);
    record.bytes_fetched = fetched_before + record.bytes_fetched_this_run;
}

fn parse(row: Kept<RestoreJob>) -> Result<RestoreJob, OpError> {
    row.record.map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> OpError {
    OpError::internal(e.to_string())
}

/// One spelling per request: the store URL canonical, the destination absolute and normalised.
fn canonical(req: &RestoreStartRequest) -> Result<RestoreStartRequest, OpError> {
    let store =
        match &req.scylla {
            Some(_) if req.in_place => return Err(OpError::invalid(
                "--in-place cannot restore a ScyllaDB view: ScyllaDB's refresh moves sstables out of the upload directory, which a read-only mount refuses; copy the view (without --in-place), or mount it for a loader with `lazysnap mount --scylla ... --hydrate`",
            )),
            Some(_) => String::new(),
            None => req.store.parse::<StoreUrl>()?.to_string(),
        };
    let dest = Path::new(&req.dest);
    if !dest.is_absolute() {
        return Err(OpError::invalid(format!(
            "restore destination {} is not absolute",
            dest.display()
        )));
    }
    if req.volume.is_none() && !req.selector.is_backup() && req.scylla.is_none() {
        return Err(OpError::invalid(
            "a restore of a store names a volume (or selects a backup generation)",
        ));
    }
    Ok(RestoreStartRequest {
        store,
        dest: dest.components().collect::<PathBuf>().display().to_string(),
        ..req.clone()
    })
}

/// The view a copy reads (none for an in-place job, which mounts instead) and the manifests it
/// shows, one per part.
async fn view(
    reading: &Reading,
    req: &RestoreStartRequest,
    pinned: Option<&[String]>,
) -> Result<(Option<Arc<View>>, Vec<String>), OpError> {
    let resolved = reading.resolve(&req.view_spec()?, pinned).await?;
    let manifests = resolved.manifest_names();
    if req.in_place {
        return Ok((None, manifests));
    }
    Ok((Some(Arc::new(reading.assemble(resolved)?)), manifests))
}
