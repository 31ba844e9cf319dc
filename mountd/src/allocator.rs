//! How the daemon's memory goes back to the kernel: glibc's settings, and a thread that trims
//! free allocator memory once the daemon is quiet.

use std::time::{Duration, Instant};

/// glibc raises its mmap threshold after large buffers are freed, after which new fetch buffers
/// (megabytes each) come from per-thread arenas that keep the memory when they are freed: RSS
/// then grows far past the cache cap. A fixed threshold and few arenas keep it near the cap.
/// Setting the threshold also fixes glibc's trim threshold at 128 KiB, so nearly every free
/// handed pages back (`brk`, `madvise`) that the next buffer faulted in again, zeroed: 2% of the
/// daemon's CPU in a cold sequential read, and more in the faults. Free memory at the top of a
/// heap is kept up to [`TRIM_THRESHOLD`] instead; [`start_trimmer`] gives it back once the daemon
/// is quiet. Call before any other thread exists.
pub fn limit_retention() {
    // SAFETY: mallopt only changes allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Free bytes a heap keeps at its top between trims (two arenas: twice this at most).
const TRIM_THRESHOLD: libc::c_int = 32 << 20;

/// Blocks are freed in any order, so free space ends up between live blocks where glibc keeps it;
/// trimming hands whole free pages back to the kernel. Started once logging works, so a failure
/// is reported.
pub fn start_trimmer() {
    let trimmer = std::thread::Builder::new().name("lazysnap-trim".into()).spawn(|| {
        let mut last_cpu = process_cpu();
        let mut trimmed = Instant::now();
        loop {
            std::thread::sleep(CHECK_INTERVAL);
            let cpu = process_cpu();
            let used = cpu.saturating_sub(last_cpu);
            last_cpu = cpu;
            if should_trim(used, trimmed.elapsed()) {
                // SAFETY: malloc_trim only releases memory the allocator holds free.
                unsafe { libc::malloc_trim(0) };
                trimmed = Instant::now();
            }
        }
    });
    if let Err(e) = trimmer {
        tracing::warn!(error = %e, "cannot start the allocator trimmer; memory may stay above the cap");
    }
}

/// How often the trimmer looks: after a burst, an idle daemon drops back to its working set within
/// about this (measured: 129 MiB -> 45 MiB after 64 readers).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// CPU used over one check interval above which the daemon counts as busy: a tenth of a core.
const BUSY_CPU: Duration = Duration::from_millis(100);

/// How often a busy daemon trims all the same, so a long burst gives back what it no longer uses.
const BUSY_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Trim when the daemon used little CPU over the last interval, or when it has been busy for
/// [`BUSY_TRIM_INTERVAL`]. A busy daemon reuses what it frees within milliseconds: trimming hands
/// those pages back, and each reuse faults them in again, zeroed. With a trim each second and on
/// nearly every free, page faults and the calls that gave pages back took 11% of the daemon's
/// samples in a 1 GiB cold read, and 7.5% with this rule and [`TRIM_THRESHOLD`] (what is left is a
/// fresh daemon's first touch of its working set); trimming every 20 ms cost a third of the rate.
fn should_trim(cpu_over_interval: Duration, since_trim: Duration) -> bool {
    cpu_over_interval < BUSY_CPU || since_trim >= BUSY_TRIM_INTERVAL
}

/// User and system CPU the process has used since it started.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF always exists.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_daemon_trims_a_busy_one_only_now_and_then() {
        let quiet = Duration::from_millis(5);
        let busy = Duration::from_millis(900);
        assert!(should_trim(quiet, Duration::from_secs(1)));
        assert!(!should_trim(busy, Duration::from_secs(1)));
        assert!(!should_trim(busy, Duration::from_secs(9)));
        assert!(should_trim(busy, BUSY_TRIM_INTERVAL));
    }

    #[test]
    fn the_process_cpu_grows_with_work() {
        let before = process_cpu();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while process_cpu() < before + Duration::from_millis(20) {
            assert!(Instant::now() < deadline, "10 s of spinning did not count 20 ms of CPU");
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }
}
