//! The control socket: accept, check the caller is the daemon's owner or root, read one request,
//! answer it. Stops on `shutdown`, SIGTERM or SIGINT, unmounting everything first.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use lazysnap::control::{Request, Response, Status};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::daemon::Daemon;

/// How often mounted snapshots are checked for expiry with blocks not yet local, and the
/// handover holder for life.
const EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client may take to send its request line.
const REQUEST_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Requests are one line of JSON; anything longer than this is not a request.
const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Everything unmounted.
    Stopped,
    /// Mounts left to a successor.
    HandedOver,
}

pub async fn serve(daemon: Arc<Daemon>) -> anyhow::Result<Ended> {
    // First, so that a bad or busy address fails the start before the socket exists.
    if let Some(addr) = daemon.metrics_addr() {
        let bound = crate::metrics::serve(addr, daemon.clone(), daemon.mounts.tuning.server.latencies()).await?;
        daemon.metrics_bound(bound);
    }
    // Before the socket listens: the recovery below reads the recorded mounts under this lock,
    // and a mount asked for meanwhile must not be among them.
    let recovering = daemon
        .mounts
        .admin
        .clone()
        .try_lock_owned()
        .expect("nothing else holds the admin lock before the socket listens");
    let socket = daemon.paths.socket();
    // The daemon lock is held, so a socket file here is a leftover of a daemon that died.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", socket.display()))?;
    // systemd (Type=notify) counts the daemon started once its socket listens.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd the daemon is ready");
    }
    let stop = Arc::new(Stop::default());
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    // In the background: a store that does not answer must not keep the socket from serving.
    tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.restore_mounts(recovering).await }
    });
    tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let mut ticker = tokio::time::interval(EXPIRY_CHECK);
            loop {
                ticker.tick().await;
                // Mounts unmounted with the system's umount are forgotten.
                daemon.mounts.reap_ended().await;
                let daemon = daemon.clone();
                // Reads cache maps from disk and talks to the holder: off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    daemon.mounts.check_expiry();
                    daemon.check_holder();
                })
                .await;
            }
        }
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (daemon, stop) = (daemon.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &daemon, &stop, owner).await {
                        tracing::debug!(error = %e, "control connection failed");
                    }
                });
            }
            _ = stop.notify.notified() => break,
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    let handing_over = stop.hand_over.load(std::sync::atomic::Ordering::Acquire);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Uploaders and backups finish the round they are in, so no write is cut short by a clean stop.
    daemon.stop_background(handing_over).await;
    Ok(match handing_over {
        true => {
            daemon.hand_over().await;
            Ended::HandedOver
        }
        false => {
            daemon.shutdown().await;
            Ended::Stopped
        }
    })
}

/// How the accept loop is told to end, and whether the mounts are left to a successor.
#[derive(Default)]
struct Stop {
    notify: Notify,
    hand_over: std::sync::atomic::AtomicBool,
}

async fn connection(stream: UnixStream, daemon: &Daemon, stop: &Stop, owner: u32) -> std::io::Result<()> {
    let credentials = stream.peer_cred()?;
    let peer = credentials.uid();
    let (read, mut write) = stream.into_split();
    let mut stopping = false;
    let response = if peer != owner && peer != 0 {
        Response::err(
            Status::Einval,
            format!("user {peer} may not control this lazysnap-mountd"),
        )
    } else {
        let mut line = Vec::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
        // A client that never finishes its line must not hold a task forever.
        match tokio::time::timeout(REQUEST_READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Ok(read) => read?,
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request line")),
        };
        match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Shutdown) => {
                stopping = true;
                Response::answer(Ok::<_, lazysnap::control::OpError>(lazysnap::control::answers::Done {}))
            }
            Ok(Request::HandOver) => {
                stopping = true;
                stop.hand_over.store(true, std::sync::atomic::Ordering::Release);
                Response::answer(Ok::<_, lazysnap::control::OpError>(lazysnap::control::answers::Done {}))
            }
            Ok(request) => daemon.handle(request, (peer, credentials.gid())).await,
            Err(e) => Response::err(Status::Einval, format!("malformed request: {e}")),
        }
    };
    let mut bytes = serde_json::to_vec(&response).expect("responses serialise");
    bytes.push(b'\n');
    let written = write.write_all(&bytes).await;
    // Answer first, then stop: the caller learns the daemon accepted the shutdown.
    if stopping {
        stop.notify.notify_one();
    }
    written?;
    write.shutdown().await
}
