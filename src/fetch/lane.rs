//! The background lane's threads. Slots and the budget keep background work (hydration) from the
//! GETs and the memory that reads a process waits for need; this keeps it from their CPU. It runs
//! on a runtime of its own whose threads have a lower CPU priority, so when the cores are busy the
//! kernel runs the threads serving those reads first, and when they are idle it costs nothing.

use std::io;

use tokio::runtime::{Handle, Runtime};

/// How much lower than the thread that starts it (the rest of the process): CFS then gives such a
/// thread about a tenth of the CPU a normal one gets while both want it.
const NICER_BY: libc::c_int = 10;

pub struct BackgroundRuntime {
    runtime: Option<Runtime>,
}

impl BackgroundRuntime {
    /// A runtime of `workers` async threads and at most `blocking` blocking ones (cache writes and
    /// local-store reads of background work), all at the lower priority.
    pub fn start(workers: usize, blocking: usize) -> io::Result<BackgroundRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(workers.max(1))
            .max_blocking_threads(blocking.max(1))
            .thread_name("lazysnap-background")
            .on_thread_start(lower_this_threads_priority)
            .build()?;
        Ok(BackgroundRuntime { runtime: Some(runtime) })
    }

    pub fn handle(&self) -> Handle {
        self.runtime.as_ref().expect("present until dropped").handle().clone()
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; background work is abandoned at exit anyway.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's nice value (on Linux a nice value belongs to a thread: `who` 0 is the
/// calling thread alone).
fn this_threads_nice() -> libc::c_int {
    // SAFETY: getpriority has no memory preconditions.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

fn lower_this_threads_priority() {
    // A new thread starts at its creator's nice value.
    let nice = (this_threads_nice() + NICER_BY).min(19);
    // SAFETY: setpriority has no memory preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "background thread keeps its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_threads_run_at_the_lower_priority_and_the_callers_do_not() {
        let own = this_threads_nice();
        let lane = BackgroundRuntime::start(1, 1).unwrap();
        let handle = lane.handle();
        let worker = handle.block_on(handle.spawn(async { this_threads_nice() })).unwrap();
        let blocking = handle.block_on(handle.spawn_blocking(this_threads_nice)).unwrap();
        let lower = (own + NICER_BY).min(19);
        assert_eq!((worker, blocking), (lower, lower));
        assert_eq!(this_threads_nice(), own, "the caller keeps its priority");
    }
}
