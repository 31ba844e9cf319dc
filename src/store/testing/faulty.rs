//! A store wrapper that injects the faults object stores really produce into GETs, seeded so a
//! failing run can be replayed: errors before the body (5xx, SlowDown), a connection reset in the
//! middle of a body, bodies cut short, a flipped bit in a body, stalls before the first byte and in
//! the middle, a changed ETag, and the object gone under the reader. At most one fault per GET;
//! every fault injected is counted by kind, so a test can show its faults were really exercised.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// The kinds of fault, in the order their rates are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 SlowDown (or any 5xx) before a byte of the body.
    ServerError,
    /// The connection drops after part of the body.
    Reset,
    /// The body ends early, without an error.
    Truncated,
    /// One bit of the body flipped.
    Corrupted,
    /// No byte for `stall`, then the answer.
    StallFirstByte,
    /// Part of the body, nothing for `stall`, then the rest.
    StallMidBody,
    /// The answer carries an ETag other than the object's.
    ChangedEtag,
    /// The object is not found (deleted under the reader).
    Vanished,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::ServerError,
        Fault::Reset,
        Fault::Truncated,
        Fault::Corrupted,
        Fault::StallFirstByte,
        Fault::StallMidBody,
        Fault::ChangedEtag,
        Fault::Vanished,
    ];

    fn index(self) -> usize {
        Fault::ALL.iter().position(|&f| f == self).expect("listed")
    }
}

/// What to inject: a probability per GET for each kind (their sum at most 1), the length of a
/// stall, and the seed.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub rates: Vec<(Fault, f64)>,
    pub stall: Duration,
    pub seed: u64,
}

impl FaultPlan {
    /// `total` of GETs faulty, spread evenly over the kinds given.
    pub fn mixed(total: f64, kinds: &[Fault], stall: Duration, seed: u64) -> FaultPlan {
        let each = total / kinds.len().max(1) as f64;
        FaultPlan {
            rates: kinds.iter().map(|&k| (k, each)).collect(),
            stall,
            seed,
        }
    }
}

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct Injected {
    counts: [AtomicU64; Fault::ALL.len()],
    gets: AtomicU64,
}

impl Injected {
    pub fn count(&self, fault: Fault) -> u64 {
        self.counts[fault.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// GETs seen, faulty or not.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: FaultPlan,
    rng: Mutex<u64>,
    on: Arc<std::sync::atomic::AtomicBool>,
    injected: Arc<Injected>,
}

/// Turns a [`FaultyStore`]'s faults on and off (a test checks recovery once they stop).
#[derive(Debug, Clone)]
pub struct FaultSwitch(Arc<std::sync::atomic::AtomicBool>);

impl FaultSwitch {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> (FaultyStore, Arc<Injected>, FaultSwitch) {
        let injected = Arc::new(Injected::default());
        let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let store = FaultyStore {
            inner,
            rng: Mutex::new(plan.seed),
            plan,
            on: on.clone(),
            injected: injected.clone(),
        };
        (store, injected, FaultSwitch(on))
    }

    /// The fault for the next GET, if any (splitmix64 over the seed: the same seed and order of
    /// GETs give the same faults).
    fn draw(&self) -> Option<Fault> {
        self.injected.gets.fetch_add(1, Ordering::Relaxed);
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let roll = {
            let mut state = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        };
        let mut below = 0.0;
        let fault = self.plan.rates.iter().find_map(|&(fault, rate)| {
            below += rate;
            (roll < below).then_some(fault)
        })?;
        self.injected.counts[fault.index()].fetch_add(1, Ordering::Relaxed);
        Some(fault)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("{what} (injected)").into(),
    }
}

/// The body with `fault` applied after its first half (or its first byte, for a flip).
fn faulty_body(
    body: BoxStream<'static, Result<Bytes>>,
    len: u64,
    fault: Fault,
    stall: Duration,
) -> BoxStream<'static, Result<Bytes>> {
    let half = len / 2;
    let mut seen = 0u64;
    let mut done = false;
    // Each item carries the pause to take before it is passed on.
    body.flat_map(move |chunk| {
        let items: Vec<(Duration, Result<Bytes>)> = match chunk {
            Err(e) => vec![(Duration::ZERO, Err(e))],
            Ok(_) if done => Vec::new(),
            Ok(chunk) => {
                let (start, end) = (seen, seen + chunk.len() as u64);
                seen = end;
                let crosses_half = start <= half && end > half;
                match fault {
                    Fault::Corrupted if start == 0 && !chunk.is_empty() => {
                        let mut bytes = chunk.to_vec();
                        bytes[0] ^= 0x01;
                        vec![(Duration::ZERO, Ok(Bytes::from(bytes)))]
                    }
                    Fault::Truncated | Fault::Reset if crosses_half => {
                        done = true;
                        let kept = chunk.slice(..(half - start) as usize);
                        let mut items = vec![(Duration::ZERO, Ok(kept))];
                        if fault == Fault::Reset {
                            items.push((Duration::ZERO, Err(injected("connection reset by peer"))));
                        }
                        items
                    }
                    Fault::StallMidBody if crosses_half => vec![(stall, Ok(chunk))],
                    _ => vec![(Duration::ZERO, Ok(chunk))],
                }
            }
        };
        futures::stream::iter(items)
    })
    .then(|(pause, item)| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        item
    })
    .boxed()
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(fault) = self.draw() else {
            return self.inner.get_opts(location, options).await;
        };
        let stall = self.plan.stall;
        match fault {
            Fault::ServerError => return Err(injected("503 SlowDown")),
            Fault::Vanished => {
                return Err(object_store::Error::NotFound {
                    path: location.to_string(),
                    source: "deleted under the reader (injected)".into(),
                })
            }
            Fault::StallFirstByte => tokio::time::sleep(stall).await,
            _ => {}
        }
        let mut result = self.inner.get_opts(location, options).await?;
        if fault == Fault::ChangedEtag {
            result.meta.e_tag = Some("\"changed-by-a-fault\"".into());
            return Ok(result);
        }
        if matches!(fault, Fault::StallFirstByte) {
            return Ok(result);
        }
        let empty = GetResultPayload::Stream(futures::stream::empty().boxed());
        let range = result.range.clone();
        let body = match std::mem::replace(&mut result.payload, empty) {
            GetResultPayload::Stream(body) => body,
            GetResultPayload::File(file, path) => {
                // A local directory's answer: read the range now and stream it as one chunk.
                let mut buf = vec![0; (range.end - range.start) as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, range.start).map_err(|source| {
                    object_store::Error::Generic {
                        store: "faulty",
                        source: format!("read {}: {source}", path.display()).into(),
                    }
                })?;
                futures::stream::once(async move { Ok(Bytes::from(buf)) }).boxed()
            }
        };
        result.payload = GetResultPayload::Stream(faulty_body(body, range.end - range.start, fault, stall));
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // Through get_opts, one GET per range, so each can be faulty.
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let options = GetOptions {
                range: Some(range.clone().into()),
                ..Default::default()
            };
            out.push(self.get_opts(location, options).await?.bytes().await?);
        }
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    use super::*;

    const KEY: &str = "volumes/v/files/f";

    async fn faulty(fault: Fault, stall: Duration) -> (FaultyStore, Arc<Injected>, Vec<u8>) {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let raw = Arc::new(InMemory::new());
        raw.put(&Path::from(KEY), data.clone().into()).await.unwrap();
        let plan = FaultPlan {
            rates: vec![(fault, 1.0)],
            stall,
            seed: 1,
        };
        let (store, injected, _) = FaultyStore::new(raw, plan);
        (store, injected, data)
    }

    /// A GET of the whole object through a store whose every GET has `fault`: the body (or the
    /// error), the ETag it claimed, and how long it took.
    async fn get(store: &FaultyStore) -> (Result<Bytes>, Option<String>, Duration) {
        let started = Instant::now();
        match store.get_opts(&Path::from(KEY), GetOptions::default()).await {
            Ok(result) => {
                let etag = result.meta.e_tag.clone();
                (result.bytes().await, etag, started.elapsed())
            }
            Err(e) => (Err(e), None, started.elapsed()),
        }
    }

    #[tokio::test]
    async fn each_fault_does_what_it_names_and_is_counted() {
        let stall = Duration::from_millis(60);
        let (clean, _, data) = faulty(Fault::ServerError, stall).await;
        let clean_etag = clean.inner.head(&Path::from(KEY)).await.unwrap().e_tag;
        for fault in Fault::ALL {
            let (store, injected, _) = faulty(fault, stall).await;
            let (body, etag, took) = get(&store).await;
            assert_eq!(injected.count(fault), 1, "{fault:?} counted");
            assert_eq!(injected.total(), 1, "{fault:?}: one fault per GET");
            match fault {
                Fault::ServerError | Fault::Reset => assert!(body.is_err(), "{fault:?}"),
                Fault::Vanished => assert!(matches!(body, Err(object_store::Error::NotFound { .. }))),
                Fault::Truncated => assert_eq!(&body.unwrap()[..], &data[..data.len() / 2]),
                Fault::Corrupted => {
                    let body = body.unwrap();
                    assert_eq!(body.len(), data.len());
                    assert_eq!(body[0], data[0] ^ 1);
                    assert_eq!(&body[1..], &data[1..]);
                }
                Fault::StallFirstByte | Fault::StallMidBody => {
                    assert_eq!(&body.unwrap()[..], &data[..], "{fault:?} delays, never changes");
                    assert!(took >= stall, "{fault:?} took {took:?}");
                }
                Fault::ChangedEtag => {
                    assert_eq!(&body.unwrap()[..], &data[..]);
                    assert_ne!(etag, clean_etag);
                }
            }
        }
    }

    #[tokio::test]
    async fn the_same_seed_injects_the_same_faults_and_the_switch_stops_them() {
        let run = |seed| async move {
            let raw = Arc::new(InMemory::new());
            raw.put(&Path::from(KEY), Bytes::from_static(b"0123456789").into())
                .await
                .unwrap();
            let plan = FaultPlan::mixed(0.5, &[Fault::ServerError, Fault::Vanished], Duration::ZERO, seed);
            let (store, injected, switch) = FaultyStore::new(raw, plan);
            let mut outcomes = Vec::new();
            for _ in 0..64 {
                outcomes.push(get(&store).await.0.is_ok());
            }
            switch.set(false);
            let after = get(&store).await.0.is_ok();
            (outcomes, injected.total(), after)
        };
        let (first, faults, recovered) = run(7).await;
        let (again, _, _) = run(7).await;
        let (other, _, _) = run(8).await;
        assert_eq!(first, again, "a seed replays");
        assert_ne!(first, other, "another seed differs");
        assert!((16..=48).contains(&faults), "{faults} faults in 64 GETs at 50%");
        assert_eq!(first.iter().filter(|ok| !**ok).count() as u64, faults);
        assert!(recovered, "no fault once switched off");
    }
}
