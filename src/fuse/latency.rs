//! How long FUSE requests take to answer, by operation: one Prometheus histogram per kind of
//! operation for the whole node (never per mount or file, so the series stay few), made once and
//! recorded into without looking anything up.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::request::Op;

/// The operations told apart; the rest are counted as `other`.
const KINDS: [&str; 8] = [
    "lookup", "getattr", "open", "read", "readdir", "release", "xattr", "other",
];

/// Upper bounds in seconds: from a cached getattr (tens of microseconds) to a read waiting on a
/// slow store (seconds).
const BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

pub type LatencyFamily = Family<OpLabel, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Latencies {
    family: LatencyFamily,
    by_kind: Vec<Histogram>,
}

fn histogram() -> Histogram {
    Histogram::new(BOUNDS)
}

impl Default for Latencies {
    fn default() -> Self {
        let family: LatencyFamily = Family::new_with_constructor(histogram);
        let by_kind = KINDS
            .iter()
            .map(|op| family.get_or_create(&OpLabel { op }).clone())
            .collect();
        Latencies { family, by_kind }
    }
}

/// Which histogram a request is recorded in.
#[derive(Debug, Clone, Copy)]
pub struct Kind(usize);

pub fn kind(op: &Op) -> Kind {
    Kind(match op {
        Op::Lookup { .. } => 0,
        Op::Getattr => 1,
        Op::Open { .. } | Op::Opendir => 2,
        Op::Read { .. } => 3,
        Op::Readdir { .. } => 4,
        Op::Release { .. } => 5,
        Op::Getxattr { .. } | Op::Listxattr { .. } => 6,
        _ => 7,
    })
}

impl Kind {
    /// The operation's label: `read`, `open`, ...
    pub fn name(self) -> &'static str {
        KINDS[self.0]
    }
}

impl Latencies {
    pub fn record(&self, kind: Kind, took: Duration) {
        self.by_kind[kind.0].observe(took.as_secs_f64());
    }

    /// The histograms, to register with a Prometheus registry (they share their counts).
    pub fn family(&self) -> LatencyFamily {
        self.family.clone()
    }
}
