//! Plans written as text, for flags and environment variables: `10%` (every kind, evenly), or
//! `30%,kinds=reset+truncated,stall=2s,seed=7`.

use std::time::Duration;

use super::{Fault, FaultPlan};

/// A plan's text that cannot be read, with the part at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fault plan: {}", self.0)
    }
}

impl std::error::Error for PlanError {}

/// A stall long enough to trip a reader's first-byte and idle timeouts, short enough that a test
/// waiting it out does not time out itself.
const DEFAULT_STALL: Duration = Duration::from_secs(5);

impl std::str::FromStr for FaultPlan {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<FaultPlan, PlanError> {
        let mut items = text.split(',').map(str::trim);
        let rate = items.next().unwrap_or_default();
        let total = rate
            .strip_suffix('%')
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| PlanError(format!("{rate:?} is not a share of GETs such as 10%")))?
            / 100.0;
        let (mut kinds, mut stall, mut seed) = (Fault::ALL.to_vec(), DEFAULT_STALL, 1);
        for item in items {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| PlanError(format!("{item:?} is not key=value")))?;
            match key {
                "kinds" => kinds = value.split('+').map(kind).collect::<Result<_, _>>()?,
                "stall" => stall = duration(value)?,
                "seed" => {
                    seed = value
                        .parse()
                        .map_err(|_| PlanError(format!("seed {value:?} is not a number")))?
                }
                _ => return Err(PlanError(format!("unknown key {key:?} (kinds, stall, seed)"))),
            }
        }
        Ok(FaultPlan::mixed(total, &kinds, stall, seed))
    }
}

fn kind(name: &str) -> Result<Fault, PlanError> {
    Fault::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
        let known: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
        PlanError(format!("unknown fault {name:?} (one of {})", known.join(", ")))
    })
}

fn duration(text: &str) -> Result<Duration, PlanError> {
    let bad = || PlanError(format!("stall {text:?} is not a duration such as 2s or 500ms"));
    let (number, unit) = match text.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (text.strip_suffix('s').ok_or_else(bad)?, 1.0),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    (n.is_finite() && n >= 0.0 && n * unit < 3600.0)
        .then(|| Duration::from_secs_f64(n * unit))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_read_from_text_and_bad_text_names_its_part() {
        let plan: FaultPlan = "10%".parse().unwrap();
        assert_eq!(plan.rates.len(), Fault::ALL.len());
        assert!((plan.total() - 0.1).abs() < 1e-9);
        let plan: FaultPlan = "30%, kinds=reset+truncated, stall=250ms, seed=9".parse().unwrap();
        assert_eq!(plan.rates, vec![(Fault::Reset, 0.15), (Fault::Truncated, 0.15)]);
        assert_eq!((plan.stall, plan.seed), (Duration::from_millis(250), 9));
        for (bad, names) in [
            ("ten", "\"ten\""),
            ("120%", "\"120%\""),
            ("5%,kinds=reset+melt", "\"melt\""),
            ("5%,stall=forever", "\"forever\""),
            ("5%,seed=x", "\"x\""),
            ("5%,colour=red", "\"colour\""),
            ("5%,reset", "\"reset\""),
        ] {
            let err = bad.parse::<FaultPlan>().unwrap_err().to_string();
            assert!(err.contains(names), "{bad}: {err}");
        }
    }

    #[test]
    fn a_seed_replays_its_draws_and_rates_hold() {
        let draws = |seed| {
            let faults = super::super::Faults::new(FaultPlan::mixed(0.3, &Fault::ALL, Duration::ZERO, seed));
            let seq: Vec<_> = (0..10_000).map(|_| faults.draw()).collect();
            (seq, faults.injected().total())
        };
        let (first, total) = draws(3);
        assert_eq!(first, draws(3).0);
        assert_ne!(first, draws(4).0);
        assert!((2700..3300).contains(&total), "{total} of 10000 at 30%");
    }
}
