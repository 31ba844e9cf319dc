//! Added round-trip time between every client and the bench's S3 server: a TCP proxy on
//! 127.0.0.1 that hands each chunk of bytes on half the round trip after it arrived, in both
//! directions. netem would do it in the kernel, but kernels without `sch_netem` exist (this
//! machine's is one); the proxy works everywhere.
//!
//! A link's delay costs its hosts no CPU, so the proxy should cost as little: it moves bytes
//! with `splice(2)`, each chunk waiting out its delay in a pipe, never copied through user space.
//! Copied through a zeroed buffer per read, it took 0.4 of a core during a cold read at +10 ms
//! (perf over the machine), from whichever tool measured was short of CPU; spliced, 0.15-0.2.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes moved per chunk at most; each chunk is delayed as a whole, as a segment on a slow link
/// would be.
const CHUNK: usize = 256 << 10;

pub struct DelayProxy {
    endpoint: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Listens on a free port and forwards to `upstream` with `rtt` added to each round trip.
    pub fn start(upstream: SocketAddr, rtt: Duration) -> anyhow::Result<DelayProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, rtt / 2).await;
                    }
                });
            }
        });
        Ok(DelayProxy {
            endpoint,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:<port>` of the proxy.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn relay(client: TcpStream, server: TcpStream, one_way: Duration) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client, server) = (Arc::new(client), Arc::new(server));
    tokio::join!(
        pump(client.clone(), server.clone(), one_way),
        pump(server, client, one_way)
    );
}

/// A pipe that holds one chunk in the kernel while it waits out its delay.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // Room for a whole chunk (the default is 64 KiB); a smaller pipe only makes chunks smaller.
        // SAFETY: F_SETPIPE_SZ on a pipe we own takes an int and touches no memory.
        unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        Ok(pipe)
    }
}

/// Moves up to `len` bytes from `from` to `to` in the kernel, without blocking.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both are open descriptors; null offsets mean each one's own position.
    let moved = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(moved as usize)
}

/// Moves what `from` sends to `to`, each chunk handed on `delay` after it arrived; shuts `to`'s
/// sending side at the end.
async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>, delay: Duration) {
    let (send, mut receive) = mpsc::unbounded_channel::<(Instant, Pipe, usize)>();
    // Pipes that have handed their chunk on, for the next chunks.
    let (give_back, mut spare) = mpsc::unbounded_channel::<Pipe>();
    let reader = async move {
        loop {
            let Ok(pipe) = spare.try_recv().or_else(|_| Pipe::new()) else {
                break;
            };
            let into_pipe = || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK);
            let moved = loop {
                if from.readable().await.is_err() {
                    break 0;
                }
                match from.try_io(Interest::READABLE, into_pipe) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Ok(moved) => break moved,
                    Err(_) => break 0,
                }
            };
            if moved == 0 || send.send((Instant::now() + delay, pipe, moved)).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        'chunks: while let Some((due, pipe, mut left)) = receive.recv().await {
            tokio::time::sleep_until(due).await;
            while left > 0 {
                if to.writable().await.is_err() {
                    break 'chunks;
                }
                match to.try_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Ok(0) | Err(_) => break 'chunks,
                    Ok(moved) => left -= moved,
                }
            }
            let _ = give_back.send(pipe);
        }
        // SAFETY: shutdown on a socket the Arc keeps open touches no memory.
        unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    /// An upstream that sends back what it receives, on a thread of its own.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().expect("clone");
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        addr
    }

    #[test]
    fn bytes_come_back_whole_and_in_order_a_round_trip_later() {
        let rtt = Duration::from_millis(40);
        let proxy = DelayProxy::start(echo_server(), rtt).expect("proxy");
        let port = proxy.endpoint().rsplit(':').next().expect("port");
        let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");

        // One small message: its answer takes the added round trip at least.
        let started = Instant::now();
        stream.write_all(b"ping").expect("send");
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).expect("answer");
        assert_eq!(&answer, b"ping");
        assert!(
            started.elapsed() >= rtt,
            "answered in {:?}, under {rtt:?}",
            started.elapsed()
        );

        // Many chunks' worth, sent while the answer streams back: every byte, in order.
        let sent: Vec<u8> = (0..(3 * CHUNK + 12_345) as u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut writer = stream.try_clone().expect("clone");
        let to_send = sent.clone();
        let sender = std::thread::spawn(move || {
            writer.write_all(&to_send).expect("send");
            writer.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut back = Vec::new();
        stream.read_to_end(&mut back).expect("read back");
        sender.join().expect("sender");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "the bytes came back changed");
    }
}
