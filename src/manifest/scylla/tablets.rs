//! Token arithmetic of tablets: which tablet owns a token, the token range of a tablet, and where
//! an sstable's `[first_token, last_token]` falls. Tokens are Murmur3 tokens (`i64`); a tablet owns
//! the range `(last of the previous tablet, its own last]`, the first tablet starting at the
//! smallest token.

use std::fmt;

/// The tablets of a table: `count = 2^k` equal ranges, or the ranges a manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tablets {
    PowerOfTwo {
        count: u64,
    },
    /// The last token of each tablet, ascending; the last one is `i64::MAX`.
    Explicit {
        lasts: Vec<i64>,
    },
}

/// An inclusive range of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TokenRange {
    pub first: i64,
    pub last: i64,
}

impl fmt::Display for TokenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.first, self.last)
    }
}

impl TokenRange {
    /// The range `(after, last]`, as ScyllaDB writes token ranges (`--token-range A:B`).
    pub fn after(after: i64, last: i64) -> Option<TokenRange> {
        (after < last).then(|| TokenRange { first: after + 1, last })
    }

    pub fn contains(&self, other: &TokenRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    pub fn overlaps(&self, other: &TokenRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where an sstable lies relative to a token range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Inside,
    /// Partly inside: it holds tokens on both sides of a boundary of the range.
    Spans,
    Outside,
}

pub fn place(range: &TokenRange, sstable: &TokenRange) -> Placement {
    if range.contains(sstable) {
        Placement::Inside
    } else if range.overlaps(sstable) {
        Placement::Spans
    } else {
        Placement::Outside
    }
}

impl Tablets {
    /// `count` power-of-two tablets; `None` unless count is a power of two.
    pub fn power_of_two(count: u64) -> Option<Tablets> {
        count.is_power_of_two().then_some(Tablets::PowerOfTwo { count })
    }

    /// Tablets from their ranges as a manifest lists them: they must start at the smallest token,
    /// follow each other without gap or overlap, and end at `i64::MAX`.
    pub fn explicit(ranges: &[TokenRange]) -> Result<Tablets, String> {
        let Some(first) = ranges.first() else {
            return Err("the tablet list is empty".into());
        };
        if first.first > i64::MIN + 1 {
            return Err(format!("tablet 0 starts at {}, not at the smallest token", first.first));
        }
        let mut lasts: Vec<i64> = Vec::with_capacity(ranges.len());
        for (i, range) in ranges.iter().enumerate() {
            if range.first > range.last {
                return Err(format!(
                    "tablet {i} has first token {} > last token {}",
                    range.first, range.last
                ));
            }
            if let Some(&previous) = lasts.last() {
                // A tablet after one ending at the largest token has no token left to start at.
                if previous.checked_add(1) != Some(range.first) {
                    return Err(format!(
                        "tablet {i} starts at {}, but tablet {} ends at {previous}",
                        range.first,
                        i - 1
                    ));
                }
            }
            lasts.push(range.last);
        }
        if lasts.last() != Some(&i64::MAX) {
            return Err(format!(
                "the last tablet ends at {}, not at {}",
                ranges[ranges.len() - 1].last,
                i64::MAX
            ));
        }
        Ok(Tablets::Explicit { lasts })
    }

    pub fn count(&self) -> u64 {
        match self {
            Tablets::PowerOfTwo { count } => *count,
            Tablets::Explicit { lasts } => lasts.len() as u64,
        }
    }

    /// The last token of tablet `i` (`i < count`).
    fn last(&self, i: u64) -> i64 {
        match self {
            Tablets::PowerOfTwo { count } => {
                let k = count.trailing_zeros();
                // ((i + 1) << (64 - k)) - 1 with the sign bit flipped; the last tablet wraps to i64::MAX.
                let shifted = if k == 0 { 0 } else { (i + 1).wrapping_shl(64 - k) };
                (shifted.wrapping_sub(1) ^ (1 << 63)) as i64
            }
            Tablets::Explicit { lasts } => lasts[i as usize],
        }
    }

    /// The tokens tablet `i` owns, or `None` when there is no tablet `i`.
    pub fn range(&self, i: u64) -> Option<TokenRange> {
        if i >= self.count() {
            return None;
        }
        let first = match i {
            0 => i64::MIN,
            _ => self.last(i - 1) + 1,
        };
        Some(TokenRange {
            first,
            last: self.last(i),
        })
    }

    /// The tablet that owns `token`.
    pub fn tablet_of(&self, token: i64) -> u64 {
        match self {
            Tablets::PowerOfTwo { count } => {
                let k = count.trailing_zeros();
                match k {
                    0 => 0,
                    _ => ((token as u64) ^ (1 << 63)) >> (64 - k),
                }
            }
            Tablets::Explicit { lasts } => lasts.partition_point(|&last| last < token) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn four_tablets_split_the_ring_in_quarters() {
        let t = Tablets::power_of_two(4).unwrap();
        assert_eq!(
            t.range(0),
            Some(TokenRange {
                first: i64::MIN,
                last: -4611686018427387905
            })
        );
        assert_eq!(
            t.range(1),
            Some(TokenRange {
                first: -4611686018427387904,
                last: -1
            })
        );
        assert_eq!(
            t.range(2),
            Some(TokenRange {
                first: 0,
                last: 4611686018427387903
            })
        );
        assert_eq!(
            t.range(3),
            Some(TokenRange {
                first: 4611686018427387904,
                last: i64::MAX
            })
        );
        assert_eq!(t.range(4), None);
        assert_eq!(t.tablet_of(-8629266958227979430), 0);
        assert_eq!(t.tablet_of(-1), 1);
        assert_eq!(t.tablet_of(0), 2);
        assert_eq!(t.tablet_of(i64::MAX), 3);
        assert!(Tablets::power_of_two(3).is_none());
        assert!(Tablets::power_of_two(0).is_none());
    }

    #[test]
    fn one_tablet_owns_everything() {
        let t = Tablets::power_of_two(1).unwrap();
        assert_eq!(
            t.range(0),
            Some(TokenRange {
                first: i64::MIN,
                last: i64::MAX
            })
        );
        assert_eq!(t.tablet_of(i64::MIN), 0);
        assert_eq!(t.tablet_of(i64::MAX), 0);
    }

    #[test]
    fn explicit_tablets_must_tile_the_ring() {
        let ok = [
            TokenRange {
                first: i64::MIN + 1,
                last: -10,
            },
            TokenRange { first: -9, last: 100 },
            TokenRange {
                first: 101,
                last: i64::MAX,
            },
        ];
        let t = Tablets::explicit(&ok).unwrap();
        assert_eq!((t.tablet_of(-10), t.tablet_of(-9), t.tablet_of(101)), (0, 1, 2));
        let gap = [
            ok[0],
            TokenRange {
                first: -5,
                last: i64::MAX,
            },
        ];
        assert!(Tablets::explicit(&gap).unwrap_err().contains("tablet 1 starts at -5"));
        let short = [ok[0], TokenRange { first: -9, last: 5 }];
        assert!(Tablets::explicit(&short).unwrap_err().contains("not at"));
        assert!(Tablets::explicit(&[]).is_err());
        // Found by fuzzing: a tablet after one that ends at the largest token (the check added 1
        // to i64::MAX: a panic in debug builds, a wrap to i64::MIN that passed in release).
        let past_the_end = [
            ok[0],
            ok[1],
            ok[2],
            TokenRange {
                first: i64::MIN,
                last: 0,
            },
        ];
        assert!(Tablets::explicit(&past_the_end)
            .unwrap_err()
            .contains("tablet 3 starts at"));
    }

    #[test]
    fn placement_reports_spanning_sstables() {
        let range = Tablets::power_of_two(4).unwrap().range(1).unwrap();
        let inside = TokenRange { first: -100, last: -1 };
        let spans = TokenRange { first: -100, last: 5 };
        let outside = TokenRange { first: 0, last: 5 };
        assert_eq!(place(&range, &inside), Placement::Inside);
        assert_eq!(place(&range, &spans), Placement::Spans);
        assert_eq!(place(&range, &outside), Placement::Outside);
        assert_eq!(TokenRange::after(-1, 5), Some(TokenRange { first: 0, last: 5 }));
        assert_eq!(TokenRange::after(5, 5), None);
    }

    proptest! {
        #[test]
        fn every_token_is_in_the_range_of_its_tablet(token: i64, k in 0u32..=12) {
            let t = Tablets::power_of_two(1 << k).unwrap();
            let i = t.tablet_of(token);
            let range = t.range(i).unwrap();
            prop_assert!(range.first <= token && token <= range.last);
            let explicit = Tablets::explicit(&(0..t.count()).map(|i| t.range(i).unwrap()).collect::<Vec<_>>()).unwrap();
            prop_assert_eq!(explicit.tablet_of(token), i);
        }
    }
}
