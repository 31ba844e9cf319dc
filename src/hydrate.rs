//! Hydration: fetching every block of a mount into the disk cache in the background, so the
//! mount ends up as fast as local disk without anyone waiting for a full download first.
//!
//! - It runs on the fetcher's background lane: reads a process waits for keep priority, for GET
//!   slots, memory and CPU (its threads run at a lower priority), and a read never waits for a
//!   block a hydration is fetching (it fetches the block itself). While such reads go on, it runs
//!   one piece at a time, spaced out, and picks up speed again once they stop.
//! - Progress comes from the cache itself: blocks already cached (by earlier reads, an earlier
//!   hydration, or a daemon that ran before) count as done and are never fetched again, which is
//!   also how a hydration resumes after a restart.
//! - A bandwidth cap limits the fetch rate; a deadline (a snapshot's validTill) raises the rate to
//!   what finishes in time, and the status says when even that cannot be met.
//! - Pause, resume and cancel take effect between requests; cancelling abandons requests in
//!   flight, whose blocks other readers then fetch themselves.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use crate::fetch::ObjectHandle;
use crate::view::{View, ViewFile};

#[derive(Debug, Clone, Default)]
pub struct HydrateOptions {
    /// Bytes per second at most (`None`: as fast as the background lane allows).
    pub bandwidth: Option<u64>,
    /// Unix milliseconds by which hydration should be complete.
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HydrationState {
    Running,
    Paused,
    Completed,
    Cancelled,
    Failed,
}

impl HydrationState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Failed)
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HydrationStatus {
    pub state: HydrationState,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub files_total: u64,
    pub files_done: u64,
    /// Bytes fetched by this hydration (the rest of `bytes_done` was cached before).
    pub bytes_fetched: u64,
    /// Fetch rate since the hydration started, bytes per second.
    pub rate: f64,
    pub eta_seconds: Option<f64>,
    pub bandwidth: Option<u64>,
    pub deadline_ms: Option<u64>,
    /// The rate that would finish by the deadline, from now.
    pub required_rate: Option<f64>,
    /// The deadline will pass (or has passed) before hydration completes at the current rate.
    pub deadline_at_risk: bool,
    pub elapsed_seconds: f64,
    pub error: Option<String>,
}

/// Requests one piece at a time covers: large enough to be an efficient GET, small enough for
/// pause, cancel and the bandwidth cap to act promptly.
const PIECE_BLOCKS_BYTES: u64 = 8 << 20;

/// While reads that processes wait for are fetching (or did this recently), hydration keeps at
/// most this many pieces in flight, so it leaves them the network, the CPU and the cache writes.
const PIECES_BESIDE_DEMAND: usize = 1;
const DEMAND_QUIET: Duration = Duration::from_millis(50);

/// Beside such reads, a piece starts at least this long after the one before it. On a local store
/// a piece takes a few milliseconds, and one piece after another still took the CPU and the cache
/// disk from those reads (their p99 went from 0.6 to 2.5 ms); on a remote store a piece takes
/// about this long or more, so one stays in flight. Reads that never stop still leave hydration
/// a piece per gap: it slows down, it never stalls.
const DEMAND_PIECE_GAP: Duration = Duration::from_millis(100);

/// Whether a piece may start beside reads a process waits for, with `in_flight` pieces running
/// and the last one started `since_last_start` ago. A hydration whose deadline needs more than a
/// piece per gap (`urgent`) keeps its one piece in flight without the gap: blocks not local when
/// a snapshot expires become unreadable, a slower read does not.
fn may_start_beside_demand(in_flight: usize, since_last_start: Option<Duration>, urgent: bool) -> bool {
    in_flight < PIECES_BESIDE_DEMAND && (urgent || since_last_start.is_none_or(|since| since >= DEMAND_PIECE_GAP))
}

/// Whether the deadline of `options` needs more than a piece per [`DEMAND_PIECE_GAP`] for the
/// `remaining` bytes.
fn deadline_needs_more_than_gaps(options: &HydrateOptions, remaining: u64) -> bool {
    let per_gap = PIECE_BLOCKS_BYTES as f64 / DEMAND_PIECE_GAP.as_secs_f64();
    options
        .deadline_ms
        .is_some_and(|deadline| required_rate(remaining, deadline) > per_gap)
}

/// Pieces in flight grow by one every this long from the start, so a hydration does not land on
/// the store, the CPU and the page cache all at once: when all its pieces started together, reads
/// a process issued then waited 5-30 ms on a local store where they take 1. Full parallelism
/// comes within a tenth of the time a piece takes from S3.
const RAMP_STEP: Duration = Duration::from_millis(4);

fn ramped_up(since_start: Duration) -> usize {
    1 + (since_start.as_micros() / RAMP_STEP.as_micros()) as usize
}

/// A running (or finished) hydration of one mount.
pub struct Hydration {
    control: watch::Sender<Control>,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
}

struct Shared {
    started: Instant,
    finished: Mutex<Option<Instant>>,
    bytes_total: u64,
    files_total: u64,
    bytes_done: AtomicU64,
    files_done: AtomicU64,
    bytes_fetched: AtomicU64,
    options: Mutex<HydrateOptions>,
    outcome: Mutex<Option<(HydrationState, Option<String>)>>,
    warned_deadline: std::sync::atomic::AtomicBool,
}

/// One request-sized piece of one file.
struct Piece {
    file: usize,
    object: Arc<ObjectHandle>,
    blocks: Range<u64>,
    bytes: u64,
}

impl Hydration {
    /// Starts hydrating every file of `view`; needs a tokio runtime.
    pub fn start(view: Arc<View>, options: HydrateOptions) -> Arc<Hydration> {
        let files = view.files();
        let shared = Arc::new(Shared {
            started: Instant::now(),
            finished: Mutex::new(None),
            bytes_total: files.iter().map(|f| f.size).sum(),
            files_total: files.len() as u64,
            bytes_done: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            options: Mutex::new(options),
            outcome: Mutex::new(None),
            warned_deadline: Default::default(),
        });
        let (control, control_rx) = watch::channel(Control::Run);
        // On the background runtime: its threads yield the CPU to reads a process waits for.
        let task = view
            .fetcher()
            .spawn_background(run(view.clone(), files, shared.clone(), control_rx));
        Arc::new(Hydration {
            control,
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn pause(&self) {
        if self.state() == HydrationState::Running {
            self.control.send_replace(Control::Pause);
        }
    }

    pub fn resume(&self) {
        self.control.send_replace(Control::Run);
    }

    /// Stops fetching; blocks already fetched stay cached.
    pub fn cancel(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        self.shared.finish(HydrationState::Cancelled, None);
    }

    /// Changes the cap and deadline of a running hydration.
    pub fn set_options(&self, options: HydrateOptions) {
        *lock(&self.shared.options) = options;
    }

    pub fn state(&self) -> HydrationState {
        match lock(&self.shared.outcome).as_ref() {
            Some((state, _)) => *state,
            None if *self.control.borrow() == Control::Pause => HydrationState::Paused,
            None => HydrationState::Running,
        }
    }

    pub fn status(&self) -> HydrationStatus {
        let s = &self.shared;
        let state = self.state();
        let options = lock(&s.options).clone();
        let error = lock(&s.outcome).as_ref().and_then(|(_, e)| e.clone());
        let elapsed = s.elapsed().as_secs_f64();
        let (done, fetched) = (s.bytes_done.load(Relaxed), s.bytes_fetched.load(Relaxed));
        let remaining = s.bytes_total.saturating_sub(done);
        let rate = fetched as f64 / elapsed.max(1e-3);
        let eta_seconds = match (state, rate > 0.0) {
            (HydrationState::Completed, _) => Some(0.0),
            (state, true) if !state.is_final() => Some(remaining as f64 / rate),
            _ => None,
        };
        let required_rate = options.deadline_ms.map(|deadline| required_rate(remaining, deadline));
        // Judged on a few seconds of history; a passed deadline with work left is always at risk.
        let unfinished = remaining > 0 && state != HydrationState::Cancelled;
        let deadline_at_risk = unfinished
            && required_rate.is_some_and(|required| required.is_infinite() || (elapsed > 3.0 && rate < required));
        HydrationStatus {
            state,
            bytes_total: s.bytes_total,
            bytes_done: done,
            files_total: s.files_total,
            files_done: s.files_done.load(Relaxed),
            bytes_fetched: fetched,
            rate,
            eta_seconds,
            bandwidth: options.bandwidth,
            deadline_ms: options.deadline_ms,
            required_rate,
            deadline_at_risk,
            elapsed_seconds: elapsed,
            error,
        }
    }
}

impl Drop for Hydration {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Shared {
    /// Records the end once; later calls (a cancel after completion) change nothing.
    fn finish(&self, state: HydrationState, error: Option<String>) {
        let mut outcome = lock(&self.outcome);
        if outcome.is_none() {
            *outcome = Some((state, error));
            *lock(&self.finished) = Some(Instant::now());
        }
    }

    /// Time from start to the end, or to now while it runs.
    fn elapsed(&self) -> Duration {
        lock(&self.finished).unwrap_or_else(Instant::now) - self.started
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes per second that finish `remaining` bytes by `deadline_ms`; infinite once it has passed.
fn required_rate(remaining: u64, deadline_ms: u64) -> f64 {
    let left_ms = deadline_ms.saturating_sub(crate::time::now_ms());
    match left_ms {
        0 => f64::INFINITY,
        ms => remaining as f64 / (ms as f64 / 1e3),
    }
}

/// The rate to hold: the cap, raised to what the deadline needs (with a margin) when there is one.
fn pace(options: &HydrateOptions, remaining: u64) -> Option<f64> {
    let cap = options.bandwidth.map(|b| b as f64)?;
    match options.deadline_ms.map(|d| required_rate(remaining, d) * 1.1) {
        Some(needed) if needed > cap => needed.is_finite().then_some(needed),
        _ => Some(cap),
    }
}

async fn run(view: Arc<View>, files: Vec<ViewFile>, shared: Arc<Shared>, control: watch::Receiver<Control>) {
    let fetcher = view.fetcher().clone();
    let parallel = fetcher.config().slots.total();
    // Pieces still to finish per file, set when the file is planned.
    let pending_per_file: Arc<Vec<AtomicU64>> = Arc::new(files.iter().map(|_| AtomicU64::new(0)).collect());
    let mut first_error: Option<String> = None;
    // Files are split into pieces as the stream reaches them, so hydrating starts at once and
    // holds only the objects it works on, however many files the mount has.
    let planned = futures::stream::iter(files.into_iter().enumerate()).flat_map({
        let (view, shared, pending_per_file) = (view.clone(), shared.clone(), pending_per_file.clone());
        move |(file, ViewFile { ino, .. })| {
            let planned = match view.object(ino) {
                Ok(object) => {
                    let pieces = split(file, &object);
                    pending_per_file[file].store(pieces.len() as u64, Relaxed);
                    if pieces.is_empty() {
                        shared.files_done.fetch_add(1, Relaxed);
                    }
                    pieces.into_iter().map(Ok).collect()
                }
                Err(e) => vec![Err(format!("inode {ino}: {e}"))],
            };
            futures::stream::iter(planned)
        }
    });

    // Pace and pause before each piece is issued; up to `parallel` pieces in flight.
    let next_slot = Arc::new(Mutex::new(Instant::now()));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let last_start: Arc<Mutex<Option<Instant>>> = Arc::default();
    let issued = planned.then(|piece| {
        let (shared, next_slot, fetcher) = (shared.clone(), next_slot.clone(), fetcher.clone());
        let (mut control, in_flight, last_start) = (control.clone(), in_flight.clone(), last_start.clone());
        async move {
            let piece = piece?;
            let _ = control.wait_for(|c| *c == Control::Run).await;
            // Cached pieces go by at once: they cost no fetch, nor a place in the pace.
            let missing = fetcher.missing_bytes(&piece.object, piece.blocks.clone());
            if missing == 0 {
                in_flight.fetch_add(1, Relaxed);
                return Ok(piece);
            }
            let since_last_start = || lock(&last_start).map(|at| at.elapsed());
            let urgent = || {
                let remaining = shared.bytes_total.saturating_sub(shared.bytes_done.load(Relaxed));
                deadline_needs_more_than_gaps(&lock(&shared.options), remaining)
            };
            while !may_start_beside_demand(in_flight.load(Relaxed), since_last_start(), urgent())
                && fetcher.demand_active(DEMAND_QUIET)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while in_flight.load(Relaxed) >= ramped_up(shared.started.elapsed()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            in_flight.fetch_add(1, Relaxed);
            *lock(&last_start) = Some(Instant::now());
            let remaining = shared.bytes_total.saturating_sub(shared.bytes_done.load(Relaxed));
            let pace = pace(&lock(&shared.options), remaining);
            // Only bytes still to fetch count against the cap.
            if let Some(rate) = pace {
                let at = {
                    let mut slot = lock(&next_slot);
                    let at = (*slot).max(Instant::now());
                    *slot = at + Duration::from_secs_f64(missing as f64 / rate.max(1.0));
                    at
                };
                tokio::time::sleep_until(at.into()).await;
                // A pause that came while this piece waited for its turn holds it too.
                let _ = control.wait_for(|c| *c == Control::Run).await;
            }
            Ok(piece)
        }
    });
    let results = issued
        .map(|piece: Result<Piece, String>| {
            let (fetcher, in_flight) = (fetcher.clone(), in_flight.clone());
            async move {
                let piece = piece?;
                let result = fetcher.hydrate(&piece.object, piece.blocks.clone()).await;
                in_flight.fetch_sub(1, Relaxed);
                Ok((piece, result))
            }
        })
        .buffer_unordered(parallel);
    let mut results = std::pin::pin!(results);
    while let Some(outcome) = results.next().await {
        let (piece, result) = match outcome {
            Ok(fetched) => fetched,
            Err(planning) => {
                tracing::warn!(error = %planning, "hydration could not plan a file");
                first_error.get_or_insert(planning);
                continue;
            }
        };
        match result {
            Ok(fetched) => {
                shared.bytes_fetched.fetch_add(fetched, Relaxed);
                shared.bytes_done.fetch_add(piece.bytes, Relaxed);
                if pending_per_file[piece.file].fetch_sub(1, Relaxed) == 1 {
                    shared.files_done.fetch_add(1, Relaxed);
                }
                if fetched > 0 {
                    crate::failpoint::stopped_at(crate::failpoint::HYDRATION_PIECE_CACHED).await;
                }
            }
            Err(e) => {
                tracing::warn!(key = %piece.object.key, error = %e, "hydration could not fetch a piece");
                first_error.get_or_insert(e.to_string());
            }
        }
        warn_if_late(&shared);
    }
    let outcome = match first_error {
        None => (HydrationState::Completed, None),
        Some(e) => (HydrationState::Failed, Some(e)),
    };
    tracing::info!(state = ?outcome.0, bytes = shared.bytes_done.load(Relaxed), "hydration ended");
    shared.finish(outcome.0, outcome.1);
}

/// The request-sized pieces of one file, in order.
fn split(file: usize, object: &Arc<ObjectHandle>) -> Vec<Piece> {
    let per_piece = (PIECE_BLOCKS_BYTES / object.shape.block_size).max(1);
    let blocks = object.shape.blocks();
    (0..blocks)
        .step_by(per_piece as usize)
        .map(|start| {
            let end = (start + per_piece).min(blocks);
            Piece {
                file,
                object: object.clone(),
                blocks: start..end,
                bytes: (start..end).map(|b| object.shape.len(b)).sum(),
            }
        })
        .collect()
}

/// Logs once when the deadline cannot be met at the rate hydration gets.
fn warn_if_late(shared: &Shared) {
    let Some(deadline) = lock(&shared.options).deadline_ms else {
        return;
    };
    let elapsed = shared.elapsed().as_secs_f64();
    let remaining = shared.bytes_total.saturating_sub(shared.bytes_done.load(Relaxed));
    let rate = shared.bytes_fetched.load(Relaxed) as f64 / elapsed.max(1e-3);
    let required = required_rate(remaining, deadline);
    let late = remaining > 0 && (required.is_infinite() || (elapsed > 3.0 && rate < required));
    if late && !shared.warned_deadline.swap(true, Relaxed) {
        tracing::warn!(
            remaining,
            rate,
            required,
            deadline_ms = deadline,
            "hydration will not finish before the deadline: blocks not yet local may become unreadable once the snapshot expires"
        );
    }
}

#[cfg(test)]
mod tests;
