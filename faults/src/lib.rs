//! The faults object stores really produce, injected into GETs for tests and the benchmark: errors
//! before the body (5xx, SlowDown), a connection reset in the middle of a body, bodies cut short,
//! a flipped bit in a body, stalls before the first byte and in the middle, a changed ETag, and the
//! object gone under the reader.
//!
//! One model at two depths: lazysnap's `FaultyStore` wraps the object-store trait for unit tests,
//! and the S3 test server (`s3dev`) applies the same [`Faults`] to the GETs it answers, for
//! integration tests and `lazysnap bench`. Draws are seeded (a failing run can be replayed), at
//! most one fault per GET, and every fault injected is counted by kind, so a test can show its
//! faults were really exercised.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};

mod plan;

pub use plan::PlanError;

/// The kinds of fault, in the order their rates are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// The name plans and tables use: `server-error`, `reset`, ...
    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerError => "server-error",
            Fault::Reset => "reset",
            Fault::Truncated => "truncated",
            Fault::Corrupted => "corrupted",
            Fault::StallFirstByte => "stall-first-byte",
            Fault::StallMidBody => "stall-mid-body",
            Fault::ChangedEtag => "changed-etag",
            Fault::Vanished => "vanished",
        }
    }
}

/// What to inject: a probability per GET for each kind (their sum at most 1), the length of a
/// stall, and the seed.
#[derive(Debug, Clone, PartialEq)]
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

    /// The share of GETs that get a fault.
    pub fn total(&self) -> f64 {
        self.rates.iter().map(|(_, r)| r).sum()
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

    /// `kind=count` for each kind injected, e.g. `reset=3 truncated=1`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = Fault::ALL
            .iter()
            .filter(|&&f| self.count(f) > 0)
            .map(|&f| format!("{}={}", f.name(), self.count(f)))
            .collect();
        parts.join(" ")
    }
}

/// A plan being applied: draws the fault of each GET, counts them, can be switched off.
#[derive(Debug)]
pub struct Faults {
    plan: FaultPlan,
    rng: Mutex<u64>,
    on: AtomicBool,
    injected: Injected,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Faults {
        Faults {
            rng: Mutex::new(plan.seed),
            plan,
            on: AtomicBool::new(true),
            injected: Injected::default(),
        }
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    pub fn injected(&self) -> &Injected {
        &self.injected
    }

    /// Turns injection on or off (a test checks recovery once faults stop).
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// The fault for the next GET, if any (splitmix64 over the seed: the same seed and order of
    /// GETs give the same faults).
    pub fn draw(&self) -> Option<Fault> {
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

/// Bits flipped so far, in every body of the process: where the next flip goes.
static FLIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A body of `len` bytes with `fault` applied: a reset or a cut after its first half, a stall
/// there, or one bit of its first chunk flipped (another bit each time, as damage on the way
/// would be: a reader that reads again must not get the same wrong bytes); other faults leave
/// the body alone. `error` makes
/// the error a reset ends the body with.
pub fn faulty_body<E, S>(
    body: S,
    len: u64,
    fault: Fault,
    stall: Duration,
    error: fn(&'static str) -> E,
) -> BoxStream<'static, Result<Bytes, E>>
where
    E: Send + 'static,
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
{
    let half = len / 2;
    let mut seen = 0u64;
    let mut done = false;
    // Each item carries the pause to take before it is passed on.
    body.flat_map(move |chunk| {
        let items: Vec<(Duration, Result<Bytes, E>)> = match chunk {
            Err(e) => vec![(Duration::ZERO, Err(e))],
            Ok(_) if done => Vec::new(),
            Ok(chunk) => {
                let (start, end) = (seen, seen + chunk.len() as u64);
                seen = end;
                let crosses_half = start <= half && end > half;
                match fault {
                    Fault::Corrupted if start == 0 && !chunk.is_empty() => {
                        let flip = FLIPS
                            .fetch_add(1, Ordering::Relaxed)
                            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        let mut bytes = chunk.to_vec();
                        let at = (flip >> 8) as usize % bytes.len();
                        bytes[at] ^= 1 << (flip & 7);
                        vec![(Duration::ZERO, Ok(Bytes::from(bytes)))]
                    }
                    Fault::Truncated | Fault::Reset if crosses_half => {
                        done = true;
                        let kept = chunk.slice(..(half - start) as usize);
                        let mut items = vec![(Duration::ZERO, Ok(kept))];
                        if fault == Fault::Reset {
                            items.push((Duration::ZERO, Err(error("connection reset by peer (injected)"))));
                        }
                        items
                    }
                    Fault::StallMidBody if crosses_half => {
                        // Half the chunk now, the rest after the stall: a reader sees bytes stop.
                        let cut = (half - start) as usize;
                        let mut rest = chunk;
                        let first = rest.split_to(cut);
                        vec![(Duration::ZERO, Ok(first)), (stall, Ok(rest))]
                    }
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
