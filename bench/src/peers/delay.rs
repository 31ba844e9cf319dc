//! Added round-trip time between every client and the bench's S3 server: a TCP proxy on
//! 127.0.0.1 that hands each chunk of bytes on half the round trip after it arrived, in both
//! directions. netem would do it in the kernel, but kernels without `sch_netem` exist (this
//! machine's is one); the proxy works everywhere and costs every tool the same CPU.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes read per chunk; each chunk is delayed as a whole, as a segment on a slow link would be.
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
    let (send, mut receive) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if send.send((Instant::now() + delay, buf)).is_err() {
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
