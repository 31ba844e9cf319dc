//! The kernel side of a mount: lazysnap speaks the FUSE protocol itself, for the read-only subset
//! it needs, so that it can
//!
//! - serve thousands of mounts from one runtime: each connection is a task that reads requests as
//!   they come, with node-wide limits on requests in flight and pooled read buffers ([`Server`]);
//! - hand a live connection to another process: the device file is kept by a holder while the
//!   daemon restarts, what INIT agreed travels with it ([`SessionState`]), every open handle is
//!   journaled in a shared mapping, and the successor asks the kernel to resend what the dead
//!   server had read but not answered ([`adopt`]);
//! - let the kernel read fully local files itself (passthrough, Linux 6.9+).
//!
//! No semantics live here: every answer comes from [`crate::fs::LazyFs`]; this layer translates.

mod abi;
mod device;
mod journal;
mod kernel;
mod latency;
mod passthrough;
mod request;
mod session;
mod uring;
mod watchdog;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::fs::LazyFs;
pub use journal::JournalError;
pub use kernel::Attach;
pub use latency::{LatencyFamily, OpLabel};
use session::Session;
pub use session::{Negotiated, Server};
pub use watchdog::Slow;

/// How long a new mount may take to answer INIT before the mount is given up.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Node-wide FUSE settings.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Requests served at once across every mount; more wait in the kernel's queues.
    pub max_requests: usize,
    /// How far ahead the kernel reads a file read in sequence: the readahead offered at INIT
    /// and set as the mount's `read_ahead_kb` (INIT alone can only lower the kernel's 128 KiB).
    pub max_readahead: u32,
    /// Let the kernel read fully cached, verified files straight from the disk cache (FUSE
    /// passthrough, Linux 6.9+, needs CAP_SYS_ADMIN); falls back to ordinary reads when refused.
    pub passthrough: bool,
    /// Files one mount may have open at once; an open beyond it fails with ENFILE.
    pub max_open_files: usize,
    /// Serve requests through FUSE over io_uring (Linux 6.14+, `fuse.enable_uring=Y`): a queue
    /// of `uring_depth` entries per CPU; 0 reads them from `/dev/fuse` as before.
    pub uring_depth: usize,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            // Each waits on at most one fetch; the fetch budget bounds their bytes.
            max_requests: 1024,
            // The kernel's own default: engines read at random are not read ahead further.
            max_readahead: 128 << 10,
            passthrough: true,
            max_open_files: 1 << 16,
            uring_depth: 0,
        }
    }
}

/// What a server needs, besides the device file, to take a live connection over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    pub path: PathBuf,
    pub negotiated: Negotiated,
    /// The shared file journaling the connection's open handles.
    pub journal: PathBuf,
    /// The inode tree served ([`LazyFs::fingerprint`]): a successor must build the same one.
    pub fingerprint: String,
}

/// A live mount served by this process.
pub struct Mount {
    session: Arc<Session>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// An unmount the kernel refused; the mount is still live and handed back.
pub struct Busy {
    pub mount: Mount,
    pub error: io::Error,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.session.path)
            .finish_non_exhaustive()
    }
}

/// Mounts `fs` read-only at `mountpoint` and serves it on the current runtime; answers once the
/// kernel has been answered INIT. `journal` is where its open handles are kept.
pub async fn mount(
    server: &Arc<Server>,
    fs: Arc<LazyFs>,
    mountpoint: &Path,
    attach: Attach,
    journal: &Path,
) -> io::Result<Mount> {
    let journal_path = journal;
    let journal = journal::Journal::create(journal_path, server.options().max_open_files).map_err(io::Error::other)?;
    // A failure leaves neither a journal nor a mount behind (a mounted connection nobody serves
    // would answer every access with ENOTCONN).
    let device = match attach_device(mountpoint, attach).await {
        Ok(device) => device,
        Err(e) => {
            let _ = std::fs::remove_file(journal_path);
            return Err(e);
        }
    };
    let session = Arc::new(Session::new(
        device,
        fs,
        journal,
        server.clone(),
        mountpoint.to_path_buf(),
    ));
    let (initialized, negotiated) = oneshot::channel();
    let mut mount = Mount::start(session, Some(initialized));
    match tokio::time::timeout(INIT_TIMEOUT, negotiated).await {
        Ok(Ok(_)) => {
            let (path, readahead) = (mountpoint.to_path_buf(), server.options().max_readahead);
            // Served already: the stat that finds the mount's device is answered by this session.
            let _ = tokio::task::spawn_blocking(move || kernel::set_readahead(&path, readahead)).await;
            Ok(mount)
        }
        outcome => {
            mount.stop_serving();
            let _ = kernel::unmount(mountpoint, true);
            Err(io::Error::other(match outcome {
                Err(_) => format!("the kernel did not finish setting up {} in time", mountpoint.display()),
                _ => format!(
                    "the kernel's FUSE protocol is not supported at {}",
                    mountpoint.display()
                ),
            }))
        }
    }
}

/// Mounts a new connection at `mountpoint` and readies its device for serving; undone on failure.
async fn attach_device(mountpoint: &Path, attach: Attach) -> io::Result<device::Device> {
    let target = mountpoint.to_path_buf();
    let fd = tokio::task::spawn_blocking(move || kernel::mount(&target, &attach))
        .await
        .map_err(io::Error::other)??;
    device::Device::new(fd).inspect_err(|_| {
        let _ = kernel::unmount(mountpoint, true);
    })
}

/// Continues serving a live connection that another process served: `device` is its `/dev/fuse`
/// file and `state` what that process recorded. `fs` must be the same tree. Requests the other
/// process had read but not answered are queued again by the kernel and answered here.
pub fn adopt(server: &Arc<Server>, fs: Arc<LazyFs>, device: OwnedFd, state: &SessionState) -> io::Result<Mount> {
    if state.negotiated.uring {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} is served through FUSE over io_uring, which the kernel cannot hand to another process",
                state.path.display()
            ),
        ));
    }
    if !Session::can_serve(&state.negotiated) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} was set up by a server this one cannot continue ({:?})",
                state.path.display(),
                state.negotiated
            ),
        ));
    }
    let fingerprint = fs.view().fingerprint();
    if fingerprint != state.fingerprint {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} would show another tree than the one its files were opened in",
                state.path.display()
            ),
        ));
    }
    let (journal, opens) =
        journal::Journal::open(&state.journal, server.options().max_open_files).map_err(io::Error::other)?;
    let device = device::Device::new(device)?;
    let session = Arc::new(Session::new(device, fs, journal, server.clone(), state.path.clone()));
    session.adopt(state.negotiated, &opens);
    // Before anything is read: the kernel queues again every request that was read and not
    // answered, including any this process would have read before asking.
    if state.negotiated.resend {
        session.device.notify_resend()?;
    } else {
        tracing::warn!(path = %state.path.display(), "this kernel cannot resend requests: reads in flight when the previous server stopped stay unanswered");
    }
    tracing::info!(path = %state.path.display(), open_files = opens.len(), "took over a live mount");
    Ok(Mount::start(session, None))
}

impl Mount {
    fn start(session: Arc<Session>, initialized: Option<oneshot::Sender<Negotiated>>) -> Mount {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(session.clone().run(initialized, stopped));
        Mount {
            session,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn fs(&self) -> &Arc<LazyFs> {
        &self.session.fs
    }

    pub fn path(&self) -> &Path {
        &self.session.path
    }

    /// The connection's device file, to be held for a successor.
    pub fn device(&self) -> BorrowedFd<'_> {
        self.session.device.as_fd()
    }

    /// What a successor needs to take this connection over (once INIT is answered).
    pub fn state(&self) -> Option<SessionState> {
        Some(SessionState {
            path: self.session.path.clone(),
            negotiated: *self.session.negotiated.get()?,
            journal: self.journal_path(),
            fingerprint: self.session.fs.view().fingerprint(),
        })
    }

    fn journal_path(&self) -> PathBuf {
        self.session.journal.path().to_path_buf()
    }

    /// Whether the kernel ended the connection by itself: someone unmounted the path with the
    /// system's `umount`.
    pub fn ended(&self) -> bool {
        self.task.as_ref().is_some_and(|task| task.is_finished())
    }

    /// Lets go of a mount whose connection ended ([`Mount::ended`]): no unmount is tried, since the
    /// path may have something else mounted by now.
    pub async fn release_ended(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.stop.take();
        self.remove_journal();
    }

    /// Files open on this mount right now.
    pub fn open_files(&self) -> usize {
        self.session.journal.len()
    }

    /// Unmounts and waits for the session to end; refused (and handed back) while files are open.
    pub async fn unmount(mut self) -> Result<(), Box<Busy>> {
        let path = self.session.path.clone();
        let unmounted = tokio::task::spawn_blocking(move || kernel::unmount(&path, false)).await;
        match unmounted.unwrap_or_else(|e| Err(io::Error::other(e))) {
            Ok(()) => {}
            // Not a mount point any more: someone unmounted it with the system tool.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(path = %self.session.path.display(), "already unmounted outside lazysnap");
            }
            Err(error) => return Err(Box::new(Busy { mount: self, error })),
        }
        // The kernel has let go: the session reads the end of the connection and stops.
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.stop.take();
        self.remove_journal();
        Ok(())
    }

    /// Detaches the mount now; files already open keep working until closed.
    pub fn detach(mut self) {
        if let Err(e) = kernel::unmount(&self.session.path, true) {
            tracing::warn!(path = %self.session.path.display(), error = %e, "cannot detach mount");
        }
        // The session serves the open files until the kernel ends the connection; the stop
        // handle is kept alive with it, since dropping it would stop the session.
        let stop = self.stop.take();
        if let Some(task) = self.task.take() {
            let journal = self.journal_path();
            tokio::spawn(async move {
                let _ = task.await;
                drop(stop);
                let _ = std::fs::remove_file(journal);
            });
        }
    }

    /// Stops reading requests and leaves the mount in place for a successor; answers once the
    /// requests already read are answered (or `drain` has passed).
    pub async fn hand_over(mut self, drain: Duration) {
        self.stop_serving();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(drain, task).await;
        }
    }

    fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    fn remove_journal(&self) {
        let _ = std::fs::remove_file(self.journal_path());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A mount given up without unmounting (a failed setup) is detached; one handed over or
        // unmounted has no task left.
        if self.task.is_some() {
            if let Err(e) = kernel::unmount(&self.session.path, true) {
                tracing::debug!(path = %self.session.path.display(), error = %e, "cannot detach mount");
            }
            self.stop.take();
            self.remove_journal();
        }
    }
}

/// Detaches whatever is mounted at `path`, such as the dead FUSE connection a crashed daemon left.
pub fn detach_path(path: &Path) -> io::Result<()> {
    kernel::unmount(path, true)
}

#[cfg(test)]
mod tests;
