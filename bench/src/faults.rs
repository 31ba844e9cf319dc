//! `lazysnap bench --profile faults`: a file read through a mount whose S3 server injects faults
//! into its GETs (every kind mixed: SlowDown, resets, bodies cut short, a flipped bit, stalls
//! before and in the middle of a body, a changed ETag, the object gone), at 10% and at 30% of
//! GETs, each on a fresh node: random reads, then the whole file in 1 MiB reads, every answer
//! compared with the source; then the faults stop and the whole file is read again on the same
//! mount. Targets: no wrong or short answer ever, no failed read at 10%, under 0.1% at 30%, none
//! once the faults stop.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use lazysnap_faults::{Fault, FaultPlan};
use serde::Serialize;

use super::node::BenchNode;
use super::report::{check, Check};
use super::targets::Target;

/// The shares of GETs made faulty, one pass each.
const SHARES: [f64; 2] = [0.10, 0.30];
const READ: usize = 1 << 20;
const RANDOM_READS: usize = 1000;
/// Longer than the daemon's stall timeout (3 s), so every stall is one it must give up on.
const STALL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultPass {
    pub share: f64,
    pub bytes: u64,
    pub reads: u64,
    pub failed: u64,
    /// Answers with other bytes, or fewer bytes than asked inside the file.
    pub wrong: u64,
    pub gets: u64,
    pub faults: u64,
    /// Faults by kind, e.g. `reset=12 truncated=9`.
    pub kinds: String,
    pub seconds: f64,
    /// Reads of the whole file once the faults stopped, and how many failed.
    pub reads_after: u64,
    pub failed_after: u64,
}

/// One pass per share of faulty GETs over `file` (`volume`'s, published from `source`).
pub fn measure(
    target: &Target,
    work: &Path,
    daemon_args: &[String],
    volume: &str,
    file: &str,
    source: &Path,
) -> anyhow::Result<Vec<FaultPass>> {
    let server = target
        .server()
        .context("the faults profile needs the local S3 server")?;
    let expected = std::fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let size = expected.metadata()?.len() as usize;
    let mut passes = Vec::new();
    for (i, share) in SHARES.into_iter().enumerate() {
        super::say(&format!("faults: {:.0}% of GETs", share * 100.0));
        let node = BenchNode::start(target, work, daemon_args)?;
        let (mounted, _) = node.mount(volume, None)?;
        let path = mounted.volume_dir.join(file);
        // After the mount: this measures data reads, not the manifest's.
        let faults = server.inject_faults(FaultPlan::mixed(share, &Fault::ALL, STALL, 0xfa + i as u64));
        let started = Instant::now();
        let mut reads = random_reads(size, 0x5eed + i as u64);
        reads.extend(whole(size));
        let during = read_all(&path, &expected, &reads)?;
        let seconds = started.elapsed().as_secs_f64();
        let injected = faults.injected();
        let (gets, total, kinds) = (injected.gets(), injected.total(), injected.summary());
        server.stop_faults();
        let after = read_all(&path, &expected, &whole(size))?;
        node.unmount(&mounted)?;
        passes.push(FaultPass {
            share,
            bytes: size as u64,
            reads: during.reads,
            failed: during.failed,
            wrong: during.wrong + after.wrong,
            gets,
            faults: total,
            kinds,
            seconds,
            reads_after: after.reads,
            failed_after: after.failed,
        });
    }
    Ok(passes)
}

#[derive(Default)]
struct Tally {
    reads: u64,
    failed: u64,
    wrong: u64,
}

fn read_all(path: &Path, expected: &std::fs::File, reads: &[(usize, usize)]) -> anyhow::Result<Tally> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (mut got, mut want) = (vec![0u8; READ], vec![0u8; READ]);
    let mut tally = Tally::default();
    for &(offset, len) in reads {
        tally.reads += 1;
        expected.read_exact_at(&mut want[..len], offset as u64)?;
        match file.read_at(&mut got[..len], offset as u64) {
            Ok(n) if n == len && got[..n] == want[..len] => {}
            Ok(_) => tally.wrong += 1,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => tally.failed += 1,
            Err(e) => return Err(e).with_context(|| format!("read {}: not EIO", path.display())),
        }
    }
    Ok(tally)
}

/// Reads of 4 KiB to 1 MiB at random offsets.
fn random_reads(size: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut state = seed | 1;
    let mut next = |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below.max(1) as u64) as usize
    };
    (0..RANDOM_READS)
        .map(|_| {
            let len = (4096 + next(READ - 4096)).min(size);
            (next(size - len + 1), len)
        })
        .collect()
}

/// The whole file in 1 MiB reads.
fn whole(size: usize) -> Vec<(usize, usize)> {
    (0..size).step_by(READ).map(|at| (at, READ.min(size - at))).collect()
}

pub fn checks(passes: &[FaultPass]) -> Vec<Check> {
    let mut out = Vec::new();
    for p in passes {
        let store = format!("faults {:.0}%", p.share * 100.0);
        let detail = format!(
            "{} of {} reads, {} faults in {} GETs",
            p.failed, p.reads, p.faults, p.gets
        );
        let failed_share = p.failed as f64 / p.reads.max(1) as f64;
        let (figure, target, met) = match p.share <= 0.10 {
            true => ("failed reads", "0", p.failed == 0),
            false => ("failed reads / reads", "< 0.001", failed_share < 0.001),
        };
        out.push(check(&store, figure, failed_share, detail, target, met));
        let wrong = format!("{} reads during, {} after", p.reads, p.reads_after);
        out.push(check(
            &store,
            "wrong or short answers",
            p.wrong as f64,
            wrong,
            "0",
            p.wrong == 0,
        ));
        let after = format!("{} reads of the whole file", p.reads_after);
        out.push(check(
            &store,
            "failed reads once faults stop",
            p.failed_after as f64,
            after,
            "0",
            p.failed_after == 0,
        ));
    }
    out
}

/// The passes as rows of `make reliability`'s table: test, load, faults injected, inputs tried,
/// failures, wrong bytes.
pub fn table(passes: &[FaultPass]) -> String {
    let mut out = String::new();
    for p in passes {
        out.push_str(&format!(
            "| faults: {:.0}% of GETs, then none | {} MiB by 1 reader, {:.0} s | {} in {} GETs ({}) | {} reads | {} | {} |\n",
            p.share * 100.0,
            p.bytes >> 20,
            p.seconds,
            p.faults,
            p.gets,
            p.kinds,
            p.reads + p.reads_after,
            p.failed + p.failed_after,
            p.wrong
        ));
    }
    out
}
