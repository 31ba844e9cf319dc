//! Small helpers for figures: rates, latency percentiles, reproducible random offsets.

use std::time::Duration;

use serde::Serialize;

pub fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6
}

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latencies {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latencies {
    pub fn of(mut samples: Vec<Duration>) -> Latencies {
        if samples.is_empty() {
            return Latencies::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e6
        };
        Latencies {
            samples: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// The seed every measurement of a run uses, so raw GETs and mounts read the same places.
pub const OFFSETS_SEED: u64 = 0x5eed_4a11;

/// `count` offsets aligned to `align` inside `size`, the same for the same seed: every reader in a
/// run (raw GET, cold mount, warm mount) asks for the same places.
pub fn random_offsets(size: u64, align: u64, count: usize, seed: u64) -> Vec<u64> {
    let slots = (size / align).max(1);
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            // xorshift64*: enough for spreading reads, and reproducible.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % slots) * align
        })
        .collect()
}

/// Fills `buf` with bytes that do not compress, continuing from `state`.
pub fn fill_random(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Writes every dirty page back before something is timed. A copy, a publish or a hydration leaves
/// a GiB or more to write back, and on two cores the writeback of one step's bytes would otherwise
/// be paid by whichever step runs next: lazysnap's loopback cold read ran at 520-833 MB/s right
/// after the peers' copies. It takes away that cause of a dip, not the disk's own slow spells.
pub fn settle_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let samples: Vec<_> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latencies::of(samples);
        assert_eq!((l.samples, l.p50_us, l.p99_us, l.max_us), (100, 50.0, 99.0, 100.0));
    }

    #[test]
    fn offsets_are_aligned_inside_and_reproducible() {
        let a = random_offsets(1 << 20, 4096, 500, 7);
        assert!(a.iter().all(|o| o % 4096 == 0 && *o < 1 << 20));
        assert_eq!(a, random_offsets(1 << 20, 4096, 500, 7));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 100);
    }
}

/// The whole machine's CPU use (from /proc/stat), to tell a figure bound by the cores (every
/// core busy: the reader, the kernel, the daemon and a local S3 server share them) from one
/// bound by waiting.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        let total: u64 = ticks.iter().take(8).sum();
        MachineCpu {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Cores busy on average since `self` (2.0 = both cores of a two-core machine).
    pub fn busy_cores_since(&self) -> f64 {
        let now = MachineCpu::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = now.total.saturating_sub(self.total).max(1) as f64;
        now.busy.saturating_sub(self.busy) as f64 / total * cores
    }
}

/// The median of `values` (the upper one of an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The smallest and largest of `values`.
pub fn range(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}
