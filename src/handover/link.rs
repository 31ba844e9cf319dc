//! The daemon's side of the holder: connect (starting a holder when none answers), hand files
//! over, take them back.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use super::protocol::{self, decode, encode};
use crate::fdpass;

/// How long a new holder may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection a previous daemon handed to the holder.
#[derive(Debug)]
pub struct Held {
    pub name: String,
    pub state: Vec<u8>,
    pub fd: OwnedFd,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HolderStatus {
    pub pid: u32,
    pub held: usize,
}

/// The daemon's connection to its holder; calls are short request-answer exchanges.
#[derive(Debug)]
pub struct HolderLink {
    socket: Mutex<OwnedFd>,
    path: PathBuf,
}

impl HolderLink {
    /// Connects to the holder listening at `socket`, or starts `start` (the holder command) and
    /// connects once it listens.
    pub fn connect_or_start(socket: &Path, start: &mut Command) -> io::Result<HolderLink> {
        if let Ok(link) = Self::connect(socket) {
            return Ok(link);
        }
        let mut child = start
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start the handover holder: {e}")))?;
        let started = Instant::now();
        loop {
            match Self::connect(socket) {
                Ok(link) => {
                    // Reaped in the background: a holder that exits must not stay a zombie.
                    std::thread::Builder::new()
                        .name("lazysnap-holder-reaper".into())
                        .spawn(move || child.wait())?;
                    return Ok(link);
                }
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("the handover holder did not listen: {e}"),
                    ));
                }
                Err(_) => {
                    if let Some(status) = child.try_wait()? {
                        return Err(io::Error::other(format!(
                            "the handover holder exited at start ({status})"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    pub fn connect(path: &Path) -> io::Result<HolderLink> {
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
        connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(HolderLink {
            socket: Mutex::new(fd),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn exchange(&self, kind: u8, name: &str, state: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<Vec<u8>> {
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        fdpass::send(socket.as_fd(), &encode(kind, name, state)?, fd)?;
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        let (n, _) = fdpass::recv(socket.as_fd(), &mut buf)?;
        answer(&buf[..n])
    }

    /// Hands the holder a copy of connection `name`'s device file with the state a successor needs.
    pub fn put(&self, name: &str, state: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
        self.exchange(protocol::PUT, name, state, Some(fd)).map(drop)
    }

    /// Tells the holder to let connection `name` go.
    pub fn forget(&self, name: &str) -> io::Result<()> {
        self.exchange(protocol::DROP, name, b"", None).map(drop)
    }

    pub fn status(&self) -> io::Result<HolderStatus> {
        let body = self.exchange(protocol::STATUS, "", b"", None)?;
        serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Tells the holder to let everything go and exit.
    pub fn exit(&self) -> io::Result<()> {
        self.exchange(protocol::EXIT, "", b"", None).map(drop)
    }

    /// Every connection the holder keeps (it keeps them too, until told otherwise).
    pub fn take_all(&self) -> io::Result<Vec<Held>> {
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        fdpass::send(socket.as_fd(), &encode(protocol::LIST, "", b"")?, None)?;
        let mut held = Vec::new();
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        loop {
            let (n, fd) = fdpass::recv(socket.as_fd(), &mut buf)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            let (kind, name, state) = decode(&buf[..n])?;
            match (kind, fd) {
                (protocol::END, _) => return Ok(held),
                (protocol::ITEM, Some(fd)) => held.push(Held {
                    name: name.to_string(),
                    state: state.to_vec(),
                    fd,
                }),
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected holder answer")),
            }
        }
    }
}

fn answer(message: &[u8]) -> io::Result<Vec<u8>> {
    if message.is_empty() {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    let (kind, _, body) = decode(message)?;
    match kind {
        protocol::OK | protocol::END => Ok(body.to_vec()),
        _ => Err(io::Error::other(format!(
            "the holder refused: {}",
            String::from_utf8_lossy(body)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use super::super::{run_holder, HolderConfig};
    use super::*;

    fn holder(dir: &Path, grace: Duration) -> (PathBuf, std::thread::JoinHandle<io::Result<()>>) {
        let config = HolderConfig {
            socket: dir.join("holder.sock"),
            grace,
        };
        let socket = config.socket.clone();
        let thread = std::thread::spawn(move || run_holder(&config));
        let started = Instant::now();
        while HolderLink::connect(&socket).is_err() {
            assert!(started.elapsed() < START_TIMEOUT, "holder never listened");
            std::thread::sleep(Duration::from_millis(5));
        }
        (socket, thread)
    }

    #[test]
    fn files_outlive_the_daemon_that_handed_them_over() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, thread) = holder(dir.path(), Duration::from_secs(30));
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"connection").unwrap();
        {
            let daemon = HolderLink::connect(&socket).unwrap();
            daemon.put("/mnt/a", b"state-a", file.as_fd()).unwrap();
            daemon.put("/mnt/b", b"state-b", file.as_fd()).unwrap();
            daemon.put("/mnt/b", b"state-b2", file.as_fd()).unwrap();
            daemon.forget("/mnt/a").unwrap();
            assert_eq!(daemon.status().unwrap().held, 1);
            // The daemon dies here: its connection closes.
        }
        drop(file);
        let successor = HolderLink::connect(&socket).unwrap();
        let held = successor.take_all().unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].name.as_str(), held[0].state.as_slice()),
            ("/mnt/b", &b"state-b2"[..])
        );
        let mut back = std::fs::File::from(held.into_iter().next().unwrap().fd);
        back.rewind().unwrap();
        let mut text = String::new();
        back.read_to_string(&mut text).unwrap();
        assert_eq!(text, "connection", "the very file handed over, kept open by the holder");
        assert_eq!(
            successor.take_all().unwrap().len(),
            1,
            "the holder keeps what it hands back"
        );
        successor.exit().unwrap();
        thread.join().unwrap().unwrap();
        assert!(HolderLink::connect(&socket).is_err(), "an exited holder answers nobody");
    }

    #[test]
    fn a_holder_left_alone_lets_go_after_its_grace() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, thread) = holder(dir.path(), Duration::from_millis(300));
        let file = tempfile::tempfile().unwrap();
        HolderLink::connect(&socket)
            .unwrap()
            .put("/mnt/a", b"", file.as_fd())
            .unwrap();
        let started = Instant::now();
        thread.join().unwrap().unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "exited before its grace"
        );
    }
}
