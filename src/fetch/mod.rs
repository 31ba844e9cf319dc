//! Fetching blocks: cache first, then ranged GETs from the store, verified before anyone sees them.
//!
//! - Single flight: concurrent misses on one block issue one GET; the others wait for its answer.
//! - Coalescing: missing blocks that are adjacent are fetched as one ranged GET of up to
//!   [`FetchConfig::max_request_bytes`], runs fetched in parallel under a concurrency limit.
//! - Deadlines: each GET has its own deadline, after which the read fails (EIO on a mount) while
//!   the mount itself stays healthy.
//! - A block whose CRC32C does not match is an error for the reads that need it, never data.

mod budget;
mod disk_writes;
mod error;
mod inflight;
mod lane;
mod sequential;
mod slots;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;

use crate::cache::{BlockCache, BlockKey, BlockShape, Learning, ObjectId};
use crate::checksum::Integrity;
use crate::store::{BlockBuffers, Piece, Store};

pub use budget::BufferBudget;
use disk_writes::DiskWrites;
pub use error::FetchError;
use inflight::{Claim, Inflight};
pub use lane::BackgroundRuntime;
pub use sequential::FileReader;
pub use slots::RequestSlots;

/// The bytes of one read in order, as slices of the blocks that hold them.
#[derive(Debug, Clone, Default)]
pub struct Pieces(Vec<Bytes>);

impl Pieces {
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    pub fn as_slices(&self) -> &[Bytes] {
        &self.0
    }

    /// One contiguous buffer: the piece itself when there is one, else a copy.
    pub fn to_bytes(&self) -> Bytes {
        match self.0.as_slice() {
            [one] => one.clone(),
            many => many.concat().into(),
        }
    }
}

/// Everything the fetcher needs to know about one immutable object.
#[derive(Debug, Clone)]
pub struct ObjectHandle {
    pub id: ObjectId,
    pub key: Path,
    pub shape: BlockShape,
    pub checksums: Arc<Integrity>,
    /// The store the object lives in (one fetcher serves the objects of several stores).
    pub store: Store,
}

impl ObjectHandle {
    /// A handle that learns a pinned object's checksums on its own (see [`Fetcher::handle`] for
    /// one that shares what the process learns).
    pub fn new(store: &Store, key: Path, size: u64, block_size: u64, checksums: impl Into<Integrity>) -> ObjectHandle {
        ObjectHandle::learning_in(store, key, size, block_size, checksums.into(), None)
    }

    fn learning_in(
        store: &Store,
        key: Path,
        size: u64,
        block_size: u64,
        mut checksums: Integrity,
        learning: Option<&Learning>,
    ) -> ObjectHandle {
        let id = ObjectId::new(store.url(), key.as_ref(), size, &checksums);
        let shape = BlockShape {
            block_size,
            object_size: size,
        };
        if let Integrity::Pinned(pin) = checksums {
            let learned = match learning {
                Some(learning) => learning.shared(id, block_size, shape.blocks()),
                None => crate::checksum::unlearned(shape.blocks()),
            };
            checksums = Integrity::Pinned(pin.learning_into(learned));
        }
        ObjectHandle {
            id,
            key,
            shape,
            checksums: Arc::new(checksums),
            store: store.clone(),
        }
    }

    pub fn size(&self) -> u64 {
        self.shape.object_size
    }

    /// The blocks that hold bytes `range` of the object.
    pub fn blocks_for(&self, range: Range<u64>) -> Range<u64> {
        let end = range.end.min(self.size());
        if range.start >= end {
            return 0..0;
        }
        range.start / self.shape.block_size..end.div_ceil(self.shape.block_size)
    }
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Largest single ranged GET. One S3 stream gives ~90 MB/s and small GETs far less, so runs of
    /// missing blocks are fetched as large requests (8 MiB, as Mountpoint for S3 and others do).
    pub max_request_bytes: u64,
    /// GETs in flight at once, shared by every fetcher given a clone (a daemon's mounts share
    /// one); bounds buffered memory to about this x max_request_bytes.
    pub slots: RequestSlots,
    /// Background fetches step over gaps of cached blocks up to this size, fetching them again
    /// rather than splitting a GET: on a store with ~25 ms to first byte a request costs about
    /// what 2 MiB of transfer does.
    pub bridge_bytes: u64,
    /// How long fetching one run may take, every attempt (and the store's own retries) together,
    /// before the reads waiting on it fail.
    pub request_deadline: Duration,
    /// The pause before a run's second GET after a failure; each later one is 4x longer.
    pub retry_pause: Duration,
    /// A GET that sends nothing for this long (no answer yet, or no bytes mid-body) is abandoned
    /// and retried: far below `request_deadline`, so one stalled connection costs a read seconds.
    pub stall_timeout: Duration,
    /// First readahead window once a run of contiguous reads has read 64 KiB, and the most it
    /// grows to.
    pub readahead_initial: u64,
    pub readahead_max: u64,
    /// Bytes that may be in flight (fetched, not yet cached) at once; shared by every fetcher
    /// given a clone of it, so a daemon's mounts together stay within one memory cap.
    pub budget: BufferBudget,
    /// Where fetched blocks' buffers come from and go back to; shared like the budget.
    pub buffers: BlockBuffers,
    /// Where background work (hydration) runs: a [`BackgroundRuntime`]'s threads of lower CPU
    /// priority, shared like the slots. `None` runs it on the runtime that asks for it.
    pub background_runtime: Option<tokio::runtime::Handle>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_request_bytes: 8 << 20,
            bridge_bytes: 1 << 20,
            slots: RequestSlots::new(16),
            request_deadline: Duration::from_secs(30),
            retry_pause: Duration::from_millis(25),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            readahead_initial: 1 << 20,
            readahead_max: 128 << 20,
            budget: BufferBudget::new(128 << 20),
            buffers: BlockBuffers::default(),
            background_runtime: None,
        }
    }
}

/// Counters since the fetcher was made: what the store was asked for.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub requests: AtomicU64,
    /// Bytes of whole blocks the store sent, counted as each is handed on (a GET cut short
    /// counts the blocks it brought).
    pub bytes_fetched: AtomicU64,
    pub checksum_failures: AtomicU64,
    pub failed_requests: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchStatsSnapshot {
    pub requests: u64,
    pub bytes_fetched: u64,
    pub checksum_failures: u64,
    pub failed_requests: u64,
}

impl FetchStats {
    pub fn snapshot(&self) -> FetchStatsSnapshot {
        FetchStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            checksum_failures: self.checksum_failures.load(Ordering::Relaxed),
            failed_requests: self.failed_requests.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
pub struct Fetcher {
    store: Store,
    cache: Arc<BlockCache>,
    config: FetchConfig,
    inflight: Arc<Inflight>,
    demand: DemandActivity,
    stats: FetchStats,
    recall: Option<Arc<dyn ChecksumRecall>>,
}

/// Where the checksums learned of pinned objects (see [`Integrity::Pinned`]) outlive the process,
/// so that after a restart their cached blocks, and files already copied from them, can be checked
/// without fetching them again. Implemented by the index; the fetcher only calls it.
pub trait ChecksumRecall: Send + Sync + std::fmt::Debug {
    /// The `(block, crc)` pairs remembered for `object` read in blocks of `block_size`.
    fn recall(&self, object: &ObjectId, block_size: u64) -> Result<Vec<(u64, u32)>, RecallError>;
    /// Remembers checksums learned from verified fetches; remembering one twice is harmless.
    fn remember(&self, object: &ObjectId, block_size: u64, learned: &[(u64, u32)]) -> Result<(), RecallError>;
}

pub type RecallError = Box<dyn std::error::Error + Send + Sync>;

/// When a process last waited on the store: background work (hydration) steps back meanwhile.
#[derive(Debug)]
struct DemandActivity {
    started: std::time::Instant,
    in_flight: AtomicU64,
    /// 1 + milliseconds after `started` when the last demand fetch ended; 0: none yet.
    last_end_ms: AtomicU64,
}

struct DemandGuard<'a>(&'a DemandActivity);

impl DemandActivity {
    fn begin(&self) -> DemandGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        DemandGuard(self)
    }
}

impl Drop for DemandGuard<'_> {
    fn drop(&mut self) {
        let now = self.0.started.elapsed().as_millis() as u64 + 1;
        self.0.last_end_ms.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Fetcher {
    pub fn new(store: Store, cache: Arc<BlockCache>, config: FetchConfig) -> Fetcher {
        Fetcher {
            store,
            cache,
            demand: DemandActivity {
                started: std::time::Instant::now(),
                in_flight: AtomicU64::new(0),
                last_end_ms: AtomicU64::new(0),
            },
            config,
            inflight: Arc::default(),
            stats: FetchStats::default(),
            recall: None,
        }
    }

    /// The same fetcher, remembering what it learns of pinned objects in `recall`, and recalling
    /// it into the handles it makes (see [`Fetcher::handle`]).
    pub fn with_recall(mut self, recall: Arc<dyn ChecksumRecall>) -> Fetcher {
        self.recall = Some(recall);
        self
    }

    /// A handle on an object of `store`, as [`ObjectHandle::new`], with what earlier processes
    /// learned of it recalled when it is pinned. A recall that cannot answer costs refetches, not
    /// the read.
    pub fn handle(&self, store: &Store, key: Path, size: u64, block_size: u64, checksums: Integrity) -> ObjectHandle {
        let object = ObjectHandle::learning_in(store, key, size, block_size, checksums, Some(self.cache.learning()));
        if let (Some(recall), Integrity::Pinned(pin)) = (&self.recall, &*object.checksums) {
            if !pin.complete() {
                match recall.recall(&object.id, block_size) {
                    Ok(known) => pin.recall(&known),
                    Err(e) => tracing::warn!(error = %e, key = %object.key, "cannot recall learned checksums"),
                }
            }
        }
        object
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    pub fn stats(&self) -> FetchStatsSnapshot {
        self.stats.snapshot()
    }

    /// Bytes `offset..offset+len` of the object (fewer at its end), every block verified.
    pub async fn read(&self, object: &ObjectHandle, offset: u64, len: u64) -> Result<Bytes, FetchError> {
        Ok(self.read_pieces(object, offset, len).await?.to_bytes())
    }

    /// The same bytes as [`Fetcher::read`], as slices of the cached blocks: no copy is made.
    pub async fn read_pieces(&self, object: &ObjectHandle, offset: u64, len: u64) -> Result<Pieces, FetchError> {
        let end = offset.saturating_add(len).min(object.size());
        if offset >= end {
            return Ok(Pieces::default());
        }
        let blocks = object.blocks_for(offset..end);
        let first = blocks.start;
        let fetched = self.blocks(object, blocks).await?;
        let pieces = fetched
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let block_start = object.shape.offset(first + i as u64);
                let from = offset.saturating_sub(block_start) as usize;
                let to = ((end - block_start) as usize).min(bytes.len());
                bytes.slice(from..to)
            })
            .collect();
        Ok(Pieces(pieces))
    }

    /// Makes sure `blocks` are cached, fetching what is missing; answers them in order.
    pub async fn blocks(&self, object: &ObjectHandle, blocks: Range<u64>) -> Result<Vec<Bytes>, FetchError> {
        loop {
            let mut found: Vec<Option<Bytes>> = Vec::with_capacity((blocks.end - blocks.start) as usize);
            let mut missing = Vec::new();
            for block in blocks.clone() {
                let hit = self.cached(object, block);
                if hit.is_none() {
                    missing.push(block);
                }
                found.push(hit);
            }
            if missing.is_empty() {
                return Ok(found.into_iter().map(|b| b.expect("all present")).collect());
            }
            let _demand = self.demand.begin();
            let claim = self.inflight.claim(object.id, &missing);
            let leader = self.fetch_claimed(object, &claim, false);
            let waits = claim.wait_others();
            let (led, waited) = futures::join!(leader, waits);
            led?;
            let Some(waited) = waited? else {
                // Another fetch was abandoned midway; look again and fetch what is still missing.
                continue;
            };
            for (block, bytes) in claim.fetched().into_iter().chain(waited) {
                found[(block - blocks.start) as usize] = Some(bytes);
            }
            // Blocks just fetched may already have been evicted under memory pressure: what we hold is
            // the fetched copy, so fill the gaps from the claim's own results.
            for (i, slot) in found.iter_mut().enumerate() {
                if slot.is_none() {
                    *slot = self.cached(object, blocks.start + i as u64);
                }
            }
            if found.iter().all(Option::is_some) {
                return Ok(found.into_iter().map(|b| b.expect("all present")).collect());
            }
        }
    }

    /// Starts fetching the missing blocks of `blocks` in the background and returns at once. They
    /// are claimed before this returns, so a read that needs one of them next waits for this fetch
    /// instead of starting a small one of its own. Needs a tokio runtime.
    pub fn prefetch(self: &Arc<Self>, object: &Arc<ObjectHandle>, blocks: Range<u64>) {
        let missing = self.missing(object, blocks);
        if missing.is_empty() {
            return;
        }
        let claim = Arc::new(self.inflight.claim_ahead(object.id, &missing));
        let led = self.not_cached_since(object, &claim);
        for run in coalesce(led, object.shape.block_size, self.config.max_request_bytes, 0) {
            let (fetcher, object, claim) = (self.clone(), object.clone(), claim.clone());
            tokio::spawn(async move {
                if let Err(e) = fetcher.fetch_run(&object, run.collect(), &claim, true).await {
                    tracing::debug!(key = %object.key, error = %e, "prefetch failed; demand reads will retry");
                }
            });
        }
    }

    /// Runs background work (a hydration) on the background runtime when there is one, so it
    /// yields the CPU to reads a process waits for; on the current runtime otherwise.
    pub fn spawn_background<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.config.background_runtime {
            Some(runtime) => runtime.spawn(work),
            None => tokio::spawn(work),
        }
    }

    /// Counts as a read a process waits for, fetching until the answer is dropped.
    #[cfg(test)]
    pub(crate) fn demand_for_tests(&self) -> impl Sized + '_ {
        self.demand.begin()
    }

    /// True while a read that a process waits for is fetching, or did within `quiet`.
    pub fn demand_active(&self, quiet: Duration) -> bool {
        let d = &self.demand;
        let last_end = d.last_end_ms.load(Ordering::Relaxed);
        let since_end = (d.started.elapsed().as_millis() as u64 + 1).saturating_sub(last_end);
        d.in_flight.load(Ordering::Relaxed) > 0 || (last_end > 0 && since_end < quiet.as_millis() as u64)
    }

    /// The blocks of `blocks` that no cache tier holds (not verified: for planning fetches).
    /// Blocks no cache tier holds, or that a cache holds but cannot be checked (a pinned object's
    /// block whose checksum this process has not learned).
    fn missing(&self, object: &ObjectHandle, blocks: Range<u64>) -> Vec<u64> {
        blocks
            .filter(|&block| {
                let key = BlockKey {
                    object: object.id,
                    block,
                };
                !self.cache.contains(&key) || object.checksums.get(block).is_none()
            })
            .collect()
    }

    /// Bytes of `blocks` that no cache tier holds.
    pub fn missing_bytes(&self, object: &ObjectHandle, blocks: Range<u64>) -> u64 {
        let missing = self.missing(object, blocks);
        missing.into_iter().map(|block| object.shape.len(block)).sum()
    }

    /// Fetches the missing blocks of `blocks` into the cache on the background lane and waits
    /// until they are there (or fetched by someone else); bytes this call fetched itself. Reads
    /// that need these blocks meanwhile wait for this fetch (a warm start's replay is what they
    /// are about to read).
    pub async fn fetch_in_background(&self, object: &ObjectHandle, blocks: Range<u64>) -> Result<u64, FetchError> {
        self.fill(object, blocks, false).await
    }

    /// [`Fetcher::fetch_in_background`] for a hydration: a read that needs one of these blocks
    /// meanwhile fetches it itself rather than waiting for this large GET to reach it.
    pub async fn hydrate(&self, object: &ObjectHandle, blocks: Range<u64>) -> Result<u64, FetchError> {
        self.fill(object, blocks, true).await
    }

    async fn fill(&self, object: &ObjectHandle, blocks: Range<u64>, yields_to_reads: bool) -> Result<u64, FetchError> {
        let missing = self.missing(object, blocks);
        if missing.is_empty() {
            return Ok(0);
        }
        let claim = match yields_to_reads {
            true => self.inflight.claim_to_hydrate(object.id, &missing),
            false => self.inflight.claim_to_fill(object.id, &missing),
        };
        let (fetched, waited) = futures::join!(self.fetch_claimed(object, &claim, true), claim.wait_others());
        waited?;
        fetched
    }

    /// Block `block` from a cache tier, verified; `None` when no tier holds it (or it cannot be
    /// checked yet: a pinned object's block whose checksum is not learned).
    pub fn cached_block(&self, object: &ObjectHandle, block: u64) -> Option<Bytes> {
        self.cached(object, block)
    }

    /// Fetches `run` with a ranged GET (resumed if it fails) on the background lane and answers its blocks verified,
    /// in order, without caching them: for a caller that keeps the bytes itself (a restore writes
    /// them to their destination, where the engine will read them, so a cached copy would cost a
    /// write and memory nobody reads). Not single-flight with other fetches. The bytes count
    /// against the fetch budget until the answer is dropped. A block that fails its checksum fails
    /// the whole call; checksums learned of a pinned object are remembered as with cached fetches.
    pub async fn fetch_uncached(&self, object: &ObjectHandle, run: Range<u64>) -> Result<Uncached<'_>, FetchError> {
        let range = object.shape.byte_range(run.clone());
        let budget = self.config.budget.reserve(range.end - range.start, true).await;
        let mut blocks = Vec::with_capacity((run.end - run.start) as usize);
        let (mut learned, mut failed, mut next) = (Vec::new(), None, run.start);
        let mut take = |piece: Piece| {
            let block = next;
            next += 1;
            if failed.is_some() {
                return;
            }
            let known = object.checksums.get(block).is_some();
            if object.checksums.verify_fetched(block, piece.crc32c()) {
                if let Some(crc) = object.checksums.get(block).filter(|_| !known) {
                    learned.push((block, crc));
                }
                blocks.push(piece);
            } else {
                self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                object.store.forget_primed(&object.key);
                tracing::error!(key = %object.key, block, "block failed its checksum: the object changed or is corrupt in the store");
                failed = Some(block);
            }
        };
        let got = self
            .get_run(object, range, true, self.config.request_deadline, &mut take)
            .await;
        self.write_to_disk(object, Vec::new(), learned).await;
        got?;
        // A body that ended early is an error from the store; this guards the count all the same.
        let failed = failed.or((blocks.len() as u64 != run.end - run.start).then_some(run.start + blocks.len() as u64));
        if let Some(block) = failed {
            return Err(FetchError::Checksum {
                key: object.key.to_string(),
                block,
            });
        }
        Ok(Uncached {
            blocks,
            _budget: budget,
        })
    }

    fn cached(&self, object: &ObjectHandle, block: u64) -> Option<Bytes> {
        let crc = object.checksums.get(block)?;
        let key = BlockKey {
            object: object.id,
            block,
        };
        self.cache.get(&key, object.shape, crc)
    }

    /// Fetches the blocks this caller leads, as coalesced runs in parallel; the bytes fetched.
    async fn fetch_claimed(&self, object: &ObjectHandle, claim: &Claim, background: bool) -> Result<u64, FetchError> {
        let led = self.not_cached_since(object, claim);
        let bytes = led.iter().map(|&block| object.shape.len(block)).sum();
        // Background work (hydration) fetches what earlier reads left between cached blocks:
        // bridging small cached gaps turns a scatter of one-block GETs into a few large ones.
        let bridge = if background { self.config.bridge_bytes } else { 0 };
        let runs = coalesce(
            led.clone(),
            object.shape.block_size,
            self.config.max_request_bytes,
            bridge,
        );
        let fetches = runs.into_iter().map(|run| {
            let blocks = led.iter().copied().filter(|b| run.contains(b)).collect();
            self.fetch_run(object, blocks, claim, background)
        });
        let results = futures::future::join_all(fetches).await;
        results.into_iter().collect::<Result<(), _>>().map(|()| bytes)
    }

    /// The led blocks still to fetch. A fetch that finished between the caller's look at the cache
    /// and its claim has cached some already: those are answered from the cache, not fetched twice.
    fn not_cached_since(&self, object: &ObjectHandle, claim: &Claim) -> Vec<u64> {
        let mut led = claim.led();
        led.retain(|&block| match self.cached(object, block) {
            Some(bytes) => {
                claim.complete(block, Ok(bytes));
                false
            }
            None => true,
        });
        led
    }

    /// Fetches one run (`blocks`, sorted; a background run may skip cached ones, fetched again
    /// inside its GET and dropped) and hands each block to its waiters as soon as it has arrived and passed
    /// its checksum, so a reader waiting for the first block of a large GET does not wait for the
    /// whole GET. A failed GET is resumed by `get_run`; blocks that fail their checksum are
    /// fetched again here (up to [`ATTEMPTS`] GETs, with backoff) before any waiter sees an error:
    /// a store answers 503s, resets connections and flips or cuts bodies now and then, and one
    /// such answer must not become an EIO. What still fails then is an error for those blocks (a demand
    /// fetch) or abandoned (a background one, so a read waiting on them fetches them itself
    /// rather than failing for a prefetch it never asked for).
    async fn fetch_run(
        &self,
        object: &ObjectHandle,
        blocks: Vec<u64>,
        claim: &Claim,
        background: bool,
    ) -> Result<(), FetchError> {
        let (Some(&first), Some(&last)) = (blocks.first(), blocks.last()) else {
            return Ok(());
        };
        let run = first..last + 1;
        let bridge = if background { self.config.bridge_bytes } else { 0 };
        // The budget covers the blocks until they are on disk, not only while they download: a
        // fast store would otherwise pile up fetched blocks waiting for the cache disk.
        let range = object.shape.byte_range(run.clone());
        let asked = std::time::Instant::now();
        let _buffer = self.config.budget.reserve(range.end - range.start, background).await;
        let budget_wait = asked.elapsed();
        let mut writes = DiskWrites::new(self, object);
        // A hydration's blocks that nobody waits for go to disk only: through the memory tier
        // they would push out what readers use and keep their buffers from being reused. They
        // stay claimed until written, so a reader meanwhile waits for them rather than fetching.
        let disk_only = claim.fills_only() && self.cache.has_disk();
        let mut held_until_written = Vec::new();
        // Only a run that bridges cached blocks has blocks it does not want (kept sorted to look
        // them up); a read's run wants all of it and allocates nothing for this.
        let gaps = (run.end - run.start != blocks.len() as u64).then(|| blocks.clone());
        let wanted = |block: &u64| gaps.as_ref().is_none_or(|sorted| sorted.binary_search(block).is_ok());
        let mut todo = blocks;
        let (mut last_error, mut gave_up) = (None, false);
        // One deadline for the run, not one per attempt: retries never stretch a read beyond it.
        let started = std::time::Instant::now();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(self.config.retry_pause, attempt)).await;
            }
            let left = self.config.request_deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let mut failed = Vec::new();
            for part in coalesce(std::mem::take(&mut todo), object.shape.block_size, u64::MAX, bridge) {
                let mut next = part.start;
                let mut hand_over = |piece: Piece| {
                    let block = next;
                    next += 1;
                    // A bridged block: cached already (or another fetch's), its bytes unused.
                    if !wanted(&block) {
                        return;
                    }
                    let key = BlockKey {
                        object: object.id,
                        block,
                    };
                    let known = object.checksums.get(block).is_some();
                    if object.checksums.verify_fetched(block, piece.crc32c()) {
                        // A read took this hydration's block over and caches it itself.
                        if claim.taken_over(block) {
                            claim.complete(block, Ok(piece.join(&self.config.buffers)));
                            return;
                        }
                        let learned = object.checksums.get(block).filter(|_| !known);
                        if disk_only && !claim.awaited(block) {
                            // Written from the chunks it came in, never joined: once it is on
                            // disk, whoever asks meanwhile finds it there.
                            held_until_written.push(block);
                            writes.add(key, piece, learned);
                        } else {
                            let bytes = piece.join(&self.config.buffers);
                            // In memory before the claim ends, so no reader misses it in between.
                            self.cache.insert_memory(key, bytes.clone());
                            claim.complete(block, Ok(bytes.clone()));
                            writes.add(key, Piece::from(bytes), learned);
                        }
                    } else {
                        self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                        // Bytes primed from a stale pack would fail every attempt: GET instead.
                        object.store.forget_primed(&object.key);
                        tracing::warn!(key = %object.key, block, attempt, "block failed its checksum; fetching it again");
                        failed.push(block);
                        last_error = Some(FetchError::Checksum {
                            key: object.key.to_string(),
                            block,
                        });
                    }
                };
                let got = self
                    .get_run(
                        object,
                        object.shape.byte_range(part.clone()),
                        background,
                        left,
                        &mut hand_over,
                    )
                    .await;
                if let Err(e) = got {
                    // `get_run` retried the GET already: what it could not deliver stays failed.
                    failed.extend((next..part.end).filter(|b| wanted(b)));
                    last_error = Some(e);
                    gave_up = true;
                }
            }
            failed.sort_unstable();
            todo = failed;
            if todo.is_empty() || gave_up {
                break;
            }
        }
        let outcome = match last_error.filter(|_| !todo.is_empty()) {
            None => Ok(()),
            Some(e) if background => {
                todo.iter().for_each(|&block| claim.abandon(block));
                Err(e)
            }
            Some(e) => {
                if let FetchError::Checksum { .. } = e {
                    tracing::error!(key = %object.key, blocks = ?todo, "blocks failed their checksum on every attempt: the object changed or is corrupt in the store");
                }
                let shared = Arc::new(e);
                for &block in &todo {
                    claim.complete(block, Err(shared.clone()));
                }
                Err(FetchError::Shared(shared))
            }
        };
        // Blocks that arrived whole and verified are kept, whatever happened to the others.
        let writing = std::time::Instant::now();
        writes.finish().await;
        tracing::debug!(key = %object.key, ?range, ?budget_wait, written_in = ?writing.elapsed(), took = ?asked.elapsed(), "run cached");
        // Their waiters (a warm start's replay that came meanwhile) look again and find them
        // cached; one whose write failed is fetched again by whoever needs it.
        for block in held_until_written {
            claim.abandon(block);
        }
        outcome
    }

    /// Disk-cache writes run on a blocking thread: on an async worker, megabytes of writes would
    /// stall every read that worker serves. Waiters have their bytes already; the fetch itself
    /// ends once the blocks are on disk, which paces background work to the disk and leaves
    /// nothing half-written when the daemon stops. Checksums just learned of a pinned object
    /// (`learned`) are remembered first, so a block on disk after a crash is one a restarted
    /// process can check.
    async fn write_to_disk(&self, object: &ObjectHandle, blocks: Vec<(BlockKey, Piece)>, learned: Vec<(u64, u32)>) {
        if let Some(write) = self.start_disk_write(object, blocks, learned) {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "a disk cache write did not finish");
            }
        }
    }

    /// Starts [`Fetcher::write_to_disk`]'s work; `None` when there is none.
    fn start_disk_write(
        &self,
        object: &ObjectHandle,
        blocks: Vec<(BlockKey, Piece)>,
        learned: Vec<(u64, u32)>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let recall = self.recall.clone().filter(|_| !learned.is_empty());
        let to_disk = self.cache.has_disk() && !blocks.is_empty();
        if recall.is_none() && !to_disk {
            return None;
        }
        let (cache, id, shape) = (self.cache.clone(), object.id, object.shape);
        Some(tokio::task::spawn_blocking(move || {
            if let Some(recall) = recall {
                if let Err(e) = recall.remember(&id, shape.block_size, &learned) {
                    tracing::warn!(error = %e, object = %id.hex(), "cannot remember learned checksums");
                }
            }
            if to_disk {
                for (key, piece) in blocks {
                    cache.insert_disk(key, shape, &piece, true);
                }
            }
        }))
    }

    /// Ranged GETs of `range` (whole blocks) until every block has been handed to `on_block`, in
    /// order, as it arrives: a GET that fails (a 5xx, a reset, a body cut short, a stall) is
    /// resumed from its first block not handed over, with backoff, until [`ATTEMPTS`] GETs in a
    /// row deliver nothing new, all within `deadline`. Only whole blocks are handed over, so a cut
    /// body's tail is fetched again whole rather than seen short by the caller.
    async fn get_run(
        &self,
        object: &ObjectHandle,
        range: Range<u64>,
        background: bool,
        deadline: Duration,
        on_block: &mut (dyn FnMut(Piece) + Send),
    ) -> Result<(), FetchError> {
        let started = std::time::Instant::now();
        let shape = object.shape;
        let mut next = range.start / shape.block_size;
        // Failed GETs in a row that delivered nothing new: a GET that got further before it
        // failed starts the count again, so a long run through a flaky store keeps going while
        // it progresses (the deadline still bounds it), and gives up when it stops progressing.
        let mut fruitless = 0;
        loop {
            let from = shape.offset(next);
            let before = next;
            let left = deadline.saturating_sub(started.elapsed());
            let mut whole = |piece: Piece| {
                // A shorter piece is the tail of a cut body: this GET fails, the retry brings it.
                if piece.len() as u64 == shape.len(next) {
                    next += 1;
                    on_block(piece);
                }
            };
            let error = match self
                .get_once(object, from..range.end, background, left, &mut whole)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            fruitless = if next > before { 1 } else { fruitless + 1 };
            let pause = backoff(self.config.retry_pause, fruitless);
            if fruitless >= ATTEMPTS || started.elapsed() + pause >= deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One ranged GET of `range` (whole blocks), each piece handed to `on_block` as it arrives,
    /// given up after `deadline`.
    async fn get_once(
        &self,
        object: &ObjectHandle,
        range: Range<u64>,
        background: bool,
        deadline: Duration,
        on_block: &mut (dyn FnMut(Piece) + Send),
    ) -> Result<(), FetchError> {
        // However much readahead is queued, a read that a process waits for finds a slot free.
        let asked = std::time::Instant::now();
        let _slot = self.config.slots.acquire(background).await;
        let slot_wait = asked.elapsed();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        // Counted as each block is handed on, not once the GET ends: a reader may have its last
        // block, and a caller the mount's figures, while the GET is still winding up.
        let mut counted = |piece: Piece| {
            self.stats
                .bytes_fetched
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
            on_block(piece)
        };
        let get = object.store.get_range_pieces(
            &object.key,
            object.checksums.etag(),
            range.clone(),
            object.shape.block_size,
            &self.config.buffers,
            self.config.stall_timeout,
            &mut counted,
        );
        match tokio::time::timeout(deadline, get).await {
            Ok(Ok(())) => {
                tracing::debug!(key = %object.key, ?range, background, ?slot_wait, took = ?asked.elapsed(), "fetched");
                Ok(())
            }
            Ok(Err(source)) => {
                self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %object.key, ?range, error = %source, "fetch failed");
                Err(FetchError::Store(source))
            }
            Err(_) => {
                self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %object.key, ?range, ?deadline, "fetch timed out");
                Err(FetchError::Timeout {
                    key: object.key.to_string(),
                    deadline,
                })
            }
        }
    }
}

/// Blocks fetched by [`Fetcher::fetch_uncached`], in order, held against the fetch budget, each
/// in the chunks it arrived in (written out as they are, never joined).
pub struct Uncached<'a> {
    pub blocks: Vec<Piece>,
    _budget: budget::Reservation<'a>,
}

/// GETs in a row that bring nothing new before a run's waiters see an error; also the rounds a
/// block failing its checksum is fetched in.
const ATTEMPTS: u32 = 4;

/// How long a GET may send nothing: S3's time to first byte is tens of milliseconds, rarely a
/// second under load; a store silent for 3 s has a stuck connection, and a fresh GET does better.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause before attempt `attempt` (1, 2, 3...): `first`, 4x, 16x (25, 100, 400 ms by
/// default), each with up to a quarter more at random, so many readers failing together do not
/// retry in step.
fn backoff(first: Duration, attempt: u32) -> Duration {
    let base = first * 4u32.pow(attempt.saturating_sub(1));
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % 1000;
    base + base * jitter / 4000
}

/// Sorted blocks as GET-sized runs of at most `max_bytes`. A run may step over up to
/// `bridge_bytes` of blocks not asked for (cached ones), when fetching them again costs less than
/// the request a gap would add.
fn coalesce(blocks: Vec<u64>, block_size: u64, max_bytes: u64, bridge_bytes: u64) -> Vec<Range<u64>> {
    let per_run = (max_bytes / block_size).max(1);
    let bridge = bridge_bytes / block_size;
    let mut runs: Vec<Range<u64>> = Vec::new();
    for block in blocks {
        match runs.last_mut() {
            Some(run) if block >= run.end && block - run.end <= bridge && block + 1 - run.start <= per_run => {
                run.end = block + 1
            }
            _ => runs.push(block..block + 1),
        }
    }
    runs
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
