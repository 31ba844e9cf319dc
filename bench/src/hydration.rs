//! `--profile hydration`: only the hydration figures, several times per store, so a change to the
//! background lane can be judged by medians rather than one noisy run of the whole quick profile.
//! Each run measures the raw parallel GET baseline, then a hydration on a fresh node with nothing
//! else going on (its rate), then demand 4 KiB reads idle and while another fresh node hydrates.

use std::path::Path;

use lazysnap::names::{RelPath, VolumeId};
use lazysnap::store::layout;
use serde::Serialize;

use super::node::BenchNode;
use super::report::{check, Check};
use super::stats::{self, median, range};
use super::targets::Target;
use super::{raw, reads};
use crate::block_on;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HydrationRun {
    pub raw_parallel_get_mbps: f64,
    /// The same GETs written into a local file: hydration's floor on this disk.
    pub raw_get_into_file_mbps: f64,
    pub hydration_mbps: f64,
    pub hydration_machine_cores: f64,
    pub demand_idle_p99_us: f64,
    pub demand_hydrating_p99_us: f64,
    pub demand_hydrating_reads: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HydrationFigures {
    pub store: String,
    pub bytes: u64,
    pub runs: Vec<HydrationRun>,
}

/// What the profile needs of the run: where, which data, how raw GETs are shaped.
pub struct Setup<'a> {
    pub work: &'a Path,
    pub daemon_args: &'a [String],
    pub volume: &'a str,
    pub manifest: &'a str,
    pub big_file: &'a str,
    pub side_file: &'a str,
    pub size: u64,
    pub side_size: u64,
    pub raw_chunk: u64,
    pub raw_parallelism: usize,
    pub runs: usize,
}

pub fn measure(target: &Target, setup: &Setup<'_>) -> anyhow::Result<HydrationFigures> {
    let store = target.open()?;
    let key = layout::file_key(&VolumeId::parse(setup.volume)?, &RelPath::parse(setup.big_file)?);
    let side_offsets = stats::random_offsets(setup.side_size, 4096, 200, 0x51de_4a11);
    let mut runs = Vec::new();
    for run in 1..=setup.runs.max(1) {
        crate::say(&format!("{}: hydration run {run} of {}", target.name, setup.runs));
        stats::settle_disk();
        let raw = block_on(raw::parallel_get(
            &store,
            &key,
            setup.size,
            setup.raw_chunk,
            setup.raw_parallelism,
        ))?;
        let into_file = block_on(raw::parallel_get_into_file(
            &store,
            &key,
            setup.size,
            setup.raw_chunk,
            setup.raw_parallelism,
            setup.work,
        ))?;
        // Demand reads with nothing else going on, on a node of their own: on the hydrating node
        // they would make hydration hold back (it does for 50 ms after a read a process waited
        // for), and would leave its file half cached.
        let node = BenchNode::start(target, setup.work, setup.daemon_args)?;
        let (mounted, _) = node.mount(setup.volume, Some(setup.manifest))?;
        let side = mounted.volume_dir.join(setup.side_file);
        let idle = reads::random_4k(&side, &side_offsets)?;
        drop(node);

        // The GETs into a file left a GiB to write back: not the hydration's to pay.
        stats::settle_disk();
        let node = BenchNode::start(target, setup.work, setup.daemon_args)?;
        let (mounted, _) = node.mount(setup.volume, Some(setup.manifest))?;
        let machine = stats::MachineCpu::now();
        node.hydrate(&mounted, true)?;
        let hydration = node.hydration_end(&mounted)?;
        let cores = machine.busy_cores_since();
        drop(node);

        // The same reads while the mount hydrates.
        stats::settle_disk();
        let node = BenchNode::start(target, setup.work, setup.daemon_args)?;
        let (mounted, _) = node.mount(setup.volume, Some(setup.manifest))?;
        let side = mounted.volume_dir.join(setup.side_file);
        node.hydrate(&mounted, true)?;
        let hydrating = reads::random_4k_while(&side, &side_offsets, || {
            node.hydrate(&mounted, false).is_ok_and(|s| s["state"] == "RUNNING")
        })?;
        node.hydration_end(&mounted)?;
        drop(node);
        runs.push(HydrationRun {
            raw_parallel_get_mbps: stats::mbps(setup.size, raw),
            raw_get_into_file_mbps: stats::mbps(setup.size, into_file),
            hydration_mbps: hydration["rate"].as_f64().unwrap_or(0.0) / 1e6,
            hydration_machine_cores: cores,
            demand_idle_p99_us: idle.p99_us,
            demand_hydrating_p99_us: hydrating.p99_us,
            demand_hydrating_reads: hydrating.samples,
        });
    }
    Ok(HydrationFigures {
        store: target.name.clone(),
        bytes: setup.size,
        runs,
    })
}

/// Per store: hydration against raw parallel GET and demand p99 while hydrating against idle,
/// each the median of the runs' ratios, with their range.
pub fn checks(figures: &[HydrationFigures]) -> Vec<Check> {
    let mut checks = Vec::new();
    for f in figures {
        let ratios = |of: &dyn Fn(&HydrationRun) -> f64| f.runs.iter().map(of).collect::<Vec<_>>();
        let rate = ratios(&|r| r.hydration_mbps / r.raw_parallel_get_mbps);
        let p99 = ratios(&|r| r.demand_hydrating_p99_us / r.demand_idle_p99_us);
        let (rate_lo, rate_hi) = range(&rate);
        let (p99_lo, p99_hi) = range(&p99);
        checks.push(check(
            &f.store,
            "hydration / raw parallel GET",
            median(&rate),
            format!(
                "{:.0} vs {:.0} MB/s, runs {rate_lo:.2}-{rate_hi:.2}, {:.2} cores; GET into a file {:.0} MB/s \
                 ({:.2} of it)",
                median(&ratios(&|r| r.hydration_mbps)),
                median(&ratios(&|r| r.raw_parallel_get_mbps)),
                median(&ratios(&|r| r.hydration_machine_cores)),
                median(&ratios(&|r| r.raw_get_into_file_mbps)),
                median(&ratios(&|r| r.hydration_mbps / r.raw_get_into_file_mbps)),
            ),
            ">= 0.9",
            median(&rate) >= 0.9,
        ));
        checks.push(check(
            &f.store,
            "demand 4K p99 while hydrating / idle",
            median(&p99),
            format!(
                "{:.0} vs {:.0} us, runs {p99_lo:.2}-{p99_hi:.2}",
                median(&ratios(&|r| r.demand_hydrating_p99_us)),
                median(&ratios(&|r| r.demand_idle_p99_us)),
            ),
            "<= 2.0",
            median(&p99) <= 2.0,
        ));
    }
    checks
}
