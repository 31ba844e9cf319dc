//! Added round-trip time between every client and the bench's S3 server: a TCP proxy on
//! 127.0.0.1 that hands each chunk of bytes on half the round trip after it arrived, in both
//! directions. netem would do it in the kernel, but kernels without `sch_netem` exist (this
//! machine's is one); the proxy works everywhere.
//!
//! A link's delay costs its hosts no CPU, so the proxy should cost as little: each read goes into
//! spare capacity, never zeroed. Zeroing a 256 KiB buffer for every read (most bring a few dozen
//! KiB) took the proxy to 0.4 of a core during a cold read at +10 ms, from whichever tool measured
//! was short of CPU; without it, 0.2-0.35. Splicing through pipes took it to 0.15-0.2 but did not
//! move the tools' ratio, and the one full run with it hung in rclone's read (not diagnosed), so it
//! was not kept.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read per chunk at most; each chunk is delayed as a whole, as a segment on a slow link
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
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, one_way),
        pump(server_read, client_write, one_way)
    );
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; closes `to` at the end.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let (send, mut receive) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader = async move {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(CHUNK);
            match from.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if send.send((Instant::now() + delay, buf.split().freeze())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = receive.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
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
