//! How many chunks a copy keeps in flight. The right number depends on the link: on loopback a
//! few streams already run at memory speed and more only fight over the cores, while a store a few
//! milliseconds away needs many GETs in flight to fill the pipe. So the copy climbs: it measures
//! its rate over a round (as many chunks done as were in flight), doubles the streams while a
//! round is clearly faster than the best so far, and settles on the best once it is not.

use std::time::Instant;

/// Streams a copy starts with, and the most it climbs to (the fetcher's background slots bound
/// them further). Not fewer than 8: a round is a noisy sample on a busy node. With 10 ms to the
/// store, rounds of 4 streams ran at 0.5-0.9 of the best round of 8 or 16, and one copy settled
/// on 4; on loopback, rounds of 8 were as fast as rounds of 4.
pub(super) const FIRST: usize = 8;
pub(super) const MOST: usize = 16;

/// A round must beat the best by this factor for the climb to go on.
const GAIN: f64 = 1.15;

#[derive(Debug)]
pub(super) struct Streams {
    limit: usize,
    settled: bool,
    best: Option<(usize, f64)>,
    round_started: Instant,
    round_bytes: u64,
    round_chunks: usize,
}

impl Streams {
    pub fn new(now: Instant) -> Streams {
        Streams {
            limit: FIRST,
            settled: false,
            best: None,
            round_started: now,
            round_bytes: 0,
            round_chunks: 0,
        }
    }

    /// Chunks to keep in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts a chunk of `bytes` done at `now`; ends the round when enough are.
    pub fn chunk_done(&mut self, bytes: u64, now: Instant) {
        if self.settled {
            return;
        }
        self.round_bytes += bytes;
        self.round_chunks += 1;
        if self.round_chunks < self.limit {
            return;
        }
        let secs = now.duration_since(self.round_started).as_secs_f64().max(1e-6);
        let rate = self.round_bytes as f64 / secs;
        tracing::debug!(
            streams = self.limit,
            mb_per_s = rate / 1e6,
            "restore: a round of chunks done"
        );
        match self.best {
            Some((_, best)) if rate < best * GAIN => {
                let (limit, _) = self.best.expect("matched");
                self.limit = limit;
                self.settled = true;
            }
            _ => {
                self.best = Some((self.limit, rate));
                self.settled = self.limit >= MOST;
                self.limit = (self.limit * 2).min(MOST);
            }
        }
        if self.settled {
            tracing::debug!(
                streams = self.limit,
                "restore: settled on the streams that fetched fastest"
            );
        }
        self.round_started = now;
        self.round_bytes = 0;
        self.round_chunks = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Runs rounds where `rate(limit)` bytes per second are reached; the limit it settles on.
    fn settle(rate: impl Fn(usize) -> f64) -> usize {
        let start = Instant::now();
        let (mut streams, mut now) = (Streams::new(start), start);
        for _ in 0..100 {
            let limit = streams.limit();
            // One round: `limit` chunks of 8 MiB at that rate.
            let bytes = 8u64 << 20;
            now += Duration::from_secs_f64((limit as u64 * bytes) as f64 / rate(limit));
            for _ in 0..limit {
                streams.chunk_done(bytes, now);
            }
        }
        streams.limit()
    }

    #[test]
    fn a_link_that_more_streams_fill_climbs_and_a_saturated_one_stays_low() {
        // Latency-bound: rate grows with streams up to 16.
        assert_eq!(settle(|n| n as f64 * 60e6), MOST);
        // Loopback: the first streams already saturate; more are a little slower.
        assert_eq!(settle(|n| if n <= FIRST { 900e6 } else { 850e6 }), FIRST);
        // Gains that flatten out at 8.
        assert_eq!(settle(|n| (n.min(8)) as f64 * 100e6), 8);
    }
}
