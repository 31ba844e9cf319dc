//! The holder process: one thread, one `poll` loop over its socket, its daemon's connection and
//! the files it keeps. It never reads a FUSE request; it only notices when a kept connection ends.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

use super::protocol::{self, decode, encode};
use crate::fdpass;

#[derive(Debug, Clone)]
pub struct HolderConfig {
    pub socket: PathBuf,
    /// How long connections are kept with no daemon connected before they are let go.
    pub grace: Duration,
}

struct Kept {
    fd: OwnedFd,
    state: Vec<u8>,
}

/// Runs the holder until it is told to exit, or has held nothing (or nothing a daemon came back
/// for) for `grace` with no daemon connected.
pub fn run(config: &HolderConfig) -> io::Result<()> {
    let listener = listen_at(&config.socket)?;
    let mut kept: BTreeMap<String, Kept> = BTreeMap::new();
    let mut clients: Vec<OwnedFd> = Vec::new();
    let mut alone_since = Some(Instant::now());
    // Once a daemon has handed connections over and they are all gone, a holder with nothing to
    // keep has no reason to wait. (A client that only looked, such as a probe, does not count.)
    let mut served = false;
    tracing::info!(pid = std::process::id(), socket = %config.socket.display(), "handover holder started");
    loop {
        let timeout = match alone_since {
            Some(since) => {
                let left = config.grace.saturating_sub(since.elapsed());
                if left.is_zero() {
                    if !kept.is_empty() {
                        tracing::warn!(mounts = kept.len(), grace = ?config.grace, "no daemon came back; letting its mounts go");
                    }
                    break;
                }
                left.as_millis().min(i32::MAX as u128) as i32
            }
            None => -1,
        };
        let mut polls: Vec<libc::pollfd> = Vec::with_capacity(1 + clients.len() + kept.len());
        let watch = |fd: &OwnedFd, events| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        polls.push(watch(&listener, libc::POLLIN));
        polls.extend(clients.iter().map(|c| watch(c, libc::POLLIN)));
        // No events asked: poll still reports an error once a connection has ended.
        polls.extend(kept.values().map(|k| watch(&k.fd, 0)));
        // SAFETY: `polls` is a valid array of its length.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let (head, rest) = polls.split_at(1);
        let (client_polls, kept_polls) = rest.split_at(clients.len());
        let ended: Vec<String> = kept
            .keys()
            .zip(kept_polls)
            .filter(|(_, p)| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            tracing::debug!(path = name, "held connection ended");
            kept.remove(&name);
        }
        let mut gone = Vec::new();
        let mut exit = false;
        for (i, poll) in client_polls.iter().enumerate() {
            if poll.revents == 0 {
                continue;
            }
            match serve(&clients[i], &mut kept) {
                Ok(Served::More) => {}
                Ok(Served::Exit) => exit = true,
                Ok(Served::Closed) => gone.push(i),
                Err(e) => {
                    tracing::warn!(error = %e, "handover client failed; dropping it");
                    gone.push(i);
                }
            }
        }
        if exit {
            tracing::info!("handover holder told to exit");
            return Ok(());
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if head[0].revents & libc::POLLIN != 0 {
            match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept just made this descriptor for us.
                Ok(fd) => clients.push(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(e) => tracing::warn!(error = %e, "cannot accept a handover client"),
            }
        }
        served |= !kept.is_empty();
        if served && clients.is_empty() && kept.is_empty() {
            tracing::info!("handover holder has nothing left to keep");
            return Ok(());
        }
        alone_since = match (clients.is_empty(), alone_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
    }
    Ok(())
}

enum Served {
    More,
    Closed,
    Exit,
}

fn serve(client: &OwnedFd, kept: &mut BTreeMap<String, Kept>) -> io::Result<Served> {
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    let (n, fd) = fdpass::recv(client.as_fd(), &mut buf)?;
    if n == 0 {
        return Ok(Served::Closed);
    }
    let (kind, name, state) = decode(&buf[..n])?;
    let answer = |kind: u8, body: &[u8]| fdpass::send(client.as_fd(), &encode(kind, "", body)?, None);
    match kind {
        protocol::PUT => match fd {
            Some(fd) => {
                kept.insert(
                    name.to_string(),
                    Kept {
                        fd,
                        state: state.to_vec(),
                    },
                );
                answer(protocol::OK, b"")?;
            }
            None => answer(protocol::REFUSED, b"no descriptor attached")?,
        },
        protocol::DROP => {
            kept.remove(name);
            answer(protocol::OK, b"")?;
        }
        protocol::LIST => {
            for (name, k) in kept.iter() {
                fdpass::send(
                    client.as_fd(),
                    &encode(protocol::ITEM, name, &k.state)?,
                    Some(k.fd.as_fd()),
                )?;
            }
            answer(protocol::END, b"")?;
        }
        protocol::STATUS => {
            let status = serde_json::json!({ "pid": std::process::id(), "held": kept.len() });
            answer(protocol::OK, status.to_string().as_bytes())?;
        }
        protocol::EXIT => {
            kept.clear();
            answer(protocol::OK, b"")?;
            return Ok(Served::Exit);
        }
        other => answer(protocol::REFUSED, format!("unknown message {other}").as_bytes())?,
    }
    Ok(Served::More)
}

fn listen_at(path: &Path) -> io::Result<OwnedFd> {
    let raw = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    // A socket file left by a holder that died is in the way; a live holder answers before
    // anyone starts a second one (the daemon tries to connect first).
    let _ = std::fs::remove_file(path);
    bind(raw.as_raw_fd(), &UnixAddr::new(path)?)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listen(&raw, Backlog::new(16).expect("a small backlog"))?;
    Ok(raw)
}
