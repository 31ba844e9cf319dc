//! Serving one connection: a task per mount reads requests as the device has them, answers the
//! cheap ones in place and runs reads and opens as tasks of their own, all on the daemon's runtime.
//! What bounds the work is node-wide: requests in flight across every mount hold a permit of the
//! [`Server`], and read buffers come from its pool, so a thousand idle mounts cost a thousand
//! parked tasks and nothing more.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::abi::{self, init, opcode, InitOut};
use super::device::Device;
use super::journal::Journal;
use super::passthrough::Passthrough;
use super::request::{Op, ParseError, Request};
use super::FuseOptions;
use crate::fs::{Attr, FsError, Kind, LazyFs};

/// Files never change under a mount, so the kernel may keep attributes, entries (and the absence
/// of entries) as long as it likes; an hour bounds what a forgotten stale mount could show.
const TTL: Duration = Duration::from_secs(3600);

/// Requests are at most a header, a small body and a name (FUSE_MIN_READ_BUFFER, with max_write
/// at its 4 KiB minimum: nothing is ever written).
const READ_BUFFER: usize = abi::MIN_READ_BUFFER;
const MAX_WRITE: u32 = 4096;
/// Read buffers kept for reuse; more are made when more requests are read at once.
const POOLED_BUFFERS: usize = 64;

/// What a connection agreed with the kernel at INIT. The kernel sends INIT once per connection, so
/// a server that takes one over must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Negotiated {
    pub minor: u32,
    pub passthrough: bool,
    pub max_write: u32,
    /// The kernel can queue again what a dead server had read (Linux 6.9+); without it, requests
    /// in flight when a server dies are never answered.
    pub resend: bool,
    /// Requests come as io_uring completions (FUSE over io_uring); forgets and interrupts still
    /// come through the device.
    #[serde(default)]
    pub uring: bool,
}

/// Node-wide limits of FUSE serving, shared by every connection.
#[derive(Debug)]
pub struct Server {
    options: FuseOptions,
    in_flight: Arc<Semaphore>,
    buffers: Mutex<Vec<Box<[u8]>>>,
    latencies: super::latency::Latencies,
    waiting: super::watchdog::Waiting,
    /// The io_uring threads, started with the first mount served through them.
    rings: Mutex<Option<Arc<super::uring::RingPool>>>,
}

impl Server {
    pub fn new(options: FuseOptions) -> Arc<Server> {
        Arc::new(Server {
            in_flight: Arc::new(Semaphore::new(options.max_requests.max(1))),
            options,
            buffers: Mutex::default(),
            latencies: super::latency::Latencies::default(),
            waiting: super::watchdog::Waiting::default(),
            rings: Mutex::default(),
        })
    }

    fn ring_pool(&self) -> std::io::Result<Arc<super::uring::RingPool>> {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = &*rings {
            return Ok(pool.clone());
        }
        let pool = Arc::new(super::uring::RingPool::start()?);
        *rings = Some(pool.clone());
        Ok(pool)
    }

    /// The requests now waiting (reads, opens) that have waited longer than `threshold` and were
    /// not reported before, each reported once: what a watchdog logs.
    pub fn newly_slow(&self, threshold: std::time::Duration) -> Vec<super::watchdog::Slow> {
        self.waiting.newly_slow(threshold)
    }

    /// How long the oldest waiting request has waited, and how many ever passed the watchdog's
    /// threshold.
    pub fn waiting_stats(&self) -> (std::time::Duration, u64) {
        (self.waiting.oldest(), self.waiting.slow_total())
    }

    pub fn options(&self) -> &FuseOptions {
        &self.options
    }

    /// How long requests took to answer, by operation (Prometheus histograms).
    pub fn latencies(&self) -> super::LatencyFamily {
        self.latencies.family()
    }

    /// Requests being served right now, across every mount.
    pub fn requests_in_flight(&self) -> usize {
        self.options.max_requests.max(1) - self.in_flight.available_permits()
    }

    fn buffer(&self) -> Box<[u8]> {
        let pooled = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.unwrap_or_else(|| vec![0u8; READ_BUFFER].into_boxed_slice())
    }

    fn give_back(&self, buffer: Box<[u8]>) {
        let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED_BUFFERS {
            pool.push(buffer);
        }
    }
}

/// One connection being served.
#[derive(Debug)]
pub(super) struct Session {
    pub device: Device,
    pub fs: Arc<LazyFs>,
    pub journal: Journal,
    pub negotiated: OnceLock<Negotiated>,
    passthrough: Passthrough,
    server: Arc<Server>,
    pub path: PathBuf,
    /// Requests that came through a ring, by unique: their answers go back through it.
    ring_slots: Mutex<HashMap<u64, super::uring::Slot>>,
    rings_on: AtomicBool,
}

impl Session {
    pub fn new(device: Device, fs: Arc<LazyFs>, journal: Journal, server: Arc<Server>, path: PathBuf) -> Session {
        Session {
            passthrough: Passthrough::new(server.options.passthrough),
            device,
            fs,
            journal,
            negotiated: OnceLock::new(),
            server,
            path,
            ring_slots: Mutex::default(),
            rings_on: AtomicBool::new(false),
        }
    }

    /// Whether this layer can serve a connection set up with `negotiated`: the kernel refuses
    /// device reads into buffers smaller than its largest write request, and a connection served
    /// through io_uring cannot change servers (Linux 6.18 neither resends the requests a dead
    /// server's ring held nor hands queued ones to a new ring's entries).
    pub fn can_serve(negotiated: &Negotiated) -> bool {
        negotiated.minor >= abi::OLDEST_MINOR && READ_BUFFER >= 80 + negotiated.max_write as usize && !negotiated.uring
    }

    /// Continues a connection another server negotiated, with the opens it journaled.
    pub fn adopt(&self, negotiated: Negotiated, opens: &[super::journal::OpenEntry]) {
        let _ = self.negotiated.set(negotiated);
        if !negotiated.passthrough {
            self.passthrough.disable();
        }
        for open in opens {
            self.fs.adopt_handle(open.fh, open.ino);
        }
        self.passthrough.adopt(&self.fs, opens);
    }

    /// Reads and serves requests until the connection ends (unmounted or aborted) or `stop` is
    /// dropped or fired. `initialized` hears the outcome of INIT.
    pub async fn run(
        self: Arc<Self>,
        mut initialized: Option<oneshot::Sender<Negotiated>>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let next = tokio::select! {
                next = self.next_request() => next,
                _ = &mut stop => break,
            };
            let (request, permit) = match next {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read from the FUSE device; the mount stops being served");
                    break;
                }
            };
            let request = match request {
                Ok(request) => request,
                Err(ParseError::Body { unique, opcode }) => {
                    tracing::warn!(opcode, "malformed FUSE request; answered EIO");
                    self.answer_error(unique, libc::EIO);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable FUSE request skipped");
                    continue;
                }
            };
            if let Op::Init { .. } = request.op {
                let negotiated = self.init(&request);
                if negotiated.is_some_and(|n| n.uring) {
                    self.start_rings();
                }
                if let (Some(tx), Some(negotiated)) = (initialized.take(), negotiated) {
                    let _ = tx.send(negotiated);
                }
                continue;
            }
            self.dispatch(request, permit, false);
        }
        tracing::debug!(path = %self.path.display(), "FUSE session ended");
    }

    /// Posts the connection's io_uring entries on the daemon's rings; requests keep coming
    /// through the device until every CPU's queue has its entries.
    fn start_rings(self: &Arc<Self>) {
        let pool = match self.server.ring_pool() {
            Ok(pool) => pool,
            Err(e) => {
                return tracing::warn!(path = %self.path.display(), error = %e, "cannot start FUSE io_uring threads; requests stay on the device");
            }
        };
        let session = Arc::downgrade(self);
        let serve: super::uring::Serve = Arc::new(move |request, slot| match session.upgrade() {
            Some(session) => session.dispatch_from_ring(request, slot),
            // The session stopped (the daemon is exiting): the request must not wait forever.
            None => {
                let _ = slot.answer(request.unique, -libc::EIO, &[]);
            }
        });
        self.rings_on.store(true, Ordering::Release);
        // A payload buffer holds the largest request or answer: 256 pages (max_pages).
        pool.serve(self.device.raw(), self.server.options.uring_depth, 256 * 4096, serve);
        tracing::info!(path = %self.path.display(), depth = self.server.options.uring_depth, "FUSE requests come through io_uring queues");
    }

    /// Serves a request that came through a ring, on the ring's thread: what can be answered at
    /// once is answered there; the rest continues on the runtime.
    fn dispatch_from_ring(self: &Arc<Self>, request: Request, slot: super::uring::Slot) {
        let in_flight = self.server.in_flight.clone();
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => futures::executor::block_on(in_flight.acquire_owned()).expect("never closed"),
        };
        if matches!(request.op, Op::Forget | Op::Interrupt | Op::Init { .. }) {
            // These come through the device; one that came here still frees its entry.
            let _ = slot.answer(request.unique, -libc::ENOSYS, &[]);
            return;
        }
        self.ring_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.unique, slot);
        self.dispatch(request, permit, true);
    }

    /// The next request with the permit it is served under; `None` once the connection ended.
    /// A mount waits for a request before it takes a permit, so idle mounts hold none.
    async fn next_request(&self) -> std::io::Result<Option<(Result<Request, ParseError>, OwnedSemaphorePermit)>> {
        loop {
            let mut readable = self.device.readable().await?;
            let permit = self
                .server
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let mut buffer = self.server.buffer();
            let read = readable.read(&mut buffer);
            let parsed = match read {
                None => None,
                Some(Ok(0)) => Some(Ok(None)),
                Some(Ok(n)) => Some(Ok(Some((Request::parse(&buffer[..n]), permit)))),
                Some(Err(e)) => Some(Err(e)),
            };
            self.server.give_back(buffer);
            if let Some(parsed) = parsed {
                return parsed;
            }
        }
    }

    /// Reads and opens wait on the cache, the index or the store: they run as tasks of their own,
    /// holding their permit. Everything else is answered from memory at once.
    /// `inline_first`: poll the work once where we are, and spawn it only if it has to wait.
    fn dispatch(self: &Arc<Self>, request: Request, permit: OwnedSemaphorePermit, inline_first: bool) {
        let (started, kind) = (std::time::Instant::now(), super::latency::kind(&request.op));
        match request.op {
            Op::Read { .. } | Op::Open { .. } | Op::Release { .. } | Op::Getxattr { .. } | Op::Listxattr { .. } => {
                let session = self.clone();
                let waiting = self.server.waiting.enter(kind);
                let mut work = Box::pin(async move {
                    let _waiting = waiting;
                    session.serve(request).await;
                    session.server.latencies.record(kind, started.elapsed());
                    drop(permit);
                });
                if inline_first {
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    if work.as_mut().poll(&mut cx).is_ready() {
                        return;
                    }
                }
                // Polled again at once on the runtime, with a waker that counts.
                tokio::spawn(work);
            }
            _ => {
                // Nothing here awaits: polled once, it completes.
                let served = self.serve_at_once(&request);
                debug_assert!(served, "only the ops above wait");
                self.server.latencies.record(kind, started.elapsed());
                drop(permit);
            }
        }
    }

    fn serve_at_once(&self, request: &Request) -> bool {
        let unique = request.unique;
        match &request.op {
            Op::Forget | Op::Interrupt => {}
            Op::Destroy | Op::Nothing | Op::Access => self.answer(unique, &[]),
            Op::Lookup { name } => match std::str::from_utf8(name).map(|name| self.fs.lookup(request.nodeid, name)) {
                Ok(Ok(attr)) => self.answer(unique, &[&abi::entry_out(&file_attr(&attr), TTL)]),
                // Negative entries are cached too: nothing ever appears in a mounted tree.
                Ok(Err(FsError::NotFound)) | Err(_) => self.answer(unique, &[&negative_entry()]),
                Ok(Err(e)) => self.answer_error(unique, e.errno()),
            },
            Op::Getattr => match self.fs.getattr(request.nodeid) {
                Ok(attr) => self.answer(unique, &[&abi::attr_out(&file_attr(&attr), TTL)]),
                Err(e) => self.answer_error(unique, e.errno()),
            },
            Op::Opendir => match self.fs.getattr(request.nodeid) {
                Ok(attr) if attr.kind == Kind::Dir => {
                    let flags = abi::fopen::CACHE_DIR | abi::fopen::KEEP_CACHE;
                    self.answer(unique, &[&abi::open_out(0, flags, 0)])
                }
                Ok(_) => self.answer_error(unique, libc::ENOTDIR),
                Err(e) => self.answer_error(unique, e.errno()),
            },
            Op::Readdir { offset, size } => match self.fs.readdir(request.nodeid) {
                Ok(entries) => {
                    let max = (*size as usize).min(1 << 20);
                    let mut buf = Vec::with_capacity(max.min(64 << 10));
                    for (i, entry) in entries.iter().enumerate().skip(*offset as usize) {
                        // The offset handed back is where the next call resumes.
                        let dtype = match entry.kind {
                            Kind::Dir => libc::DT_DIR,
                            Kind::File => libc::DT_REG,
                        };
                        if !abi::push_dirent(
                            &mut buf,
                            max,
                            entry.ino,
                            (i + 1) as u64,
                            u32::from(dtype),
                            entry.name.as_bytes(),
                        ) {
                            break;
                        }
                    }
                    self.answer(unique, &[&buf])
                }
                Err(e) => self.answer_error(unique, e.errno()),
            },
            Op::Statfs => {
                let s = self.fs.statfs();
                self.answer(unique, &[&abi::statfs_out(s.blocks, s.files, s.block_size, s.name_max)])
            }
            Op::ReadOnly => self.answer_error(unique, libc::EROFS),
            Op::NeverWritten => self.answer_error(unique, libc::ENOSYS),
            Op::Unsupported(code) => {
                if *code != opcode::READLINK {
                    tracing::debug!(opcode = code, "unsupported FUSE operation");
                }
                self.answer_error(unique, libc::ENOSYS)
            }
            Op::Init { .. }
            | Op::Read { .. }
            | Op::Open { .. }
            | Op::Release { .. }
            | Op::Getxattr { .. }
            | Op::Listxattr { .. } => return false,
        }
        true
    }

    async fn serve(&self, request: Request) {
        let unique = request.unique;
        match request.op {
            Op::Read { fh, offset, size } => match self.fs.read_at(fh, request.nodeid, offset, size).await {
                Ok(pieces) => {
                    let slices: Vec<&[u8]> = pieces.as_slices().iter().map(|b| b.as_ref()).collect();
                    self.answer(unique, &slices)
                }
                Err(e) => self.answer_error(unique, e.errno()),
            },
            Op::Open { flags } => self.open(unique, request.nodeid, flags),
            Op::Release { fh } => {
                self.passthrough
                    .release(&self.device, &self.journal, request.nodeid, fh);
                self.fs.release(fh);
                self.answer(unique, &[])
            }
            Op::Getxattr { name, size } => {
                let value = match std::str::from_utf8(&name) {
                    Ok(name) => self.fs.xattr(request.nodeid, name),
                    Err(_) => Err(FsError::NoAttribute),
                };
                match value {
                    Ok(value) => self.answer_xattr(unique, &value, size),
                    Err(e) => self.answer_error(unique, e.errno()),
                }
            }
            Op::Listxattr { size } => match self.fs.xattr_names(request.nodeid) {
                Ok(names) => {
                    let list: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();
                    self.answer_xattr(unique, &list, size)
                }
                Err(e) => self.answer_error(unique, e.errno()),
            },
            _ => {
                self.serve_at_once(&request);
            }
        }
    }

    fn open(&self, unique: u64, ino: u64, flags: u32) {
        let write = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
        let fh = match self.fs.open(ino, write) {
            Ok(fh) => fh,
            Err(e) => return self.answer_error(unique, e.errno()),
        };
        match self.passthrough.open(&self.fs, &self.device, &self.journal, ino, fh) {
            Ok((flags, backing)) => self.answer(unique, &[&abi::open_out(fh, flags, backing)]),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "open refused");
                self.fs.release(fh);
                self.answer_error(unique, libc::ENFILE)
            }
        }
    }

    fn init(&self, request: &Request) -> Option<Negotiated> {
        let Op::Init {
            major,
            minor,
            max_readahead,
            flags,
        } = request.op
        else {
            return None;
        };
        if major != abi::MAJOR || minor < abi::OLDEST_MINOR {
            tracing::error!(
                major,
                minor,
                "the kernel's FUSE protocol is too old (7.{} or newer needed)",
                abi::OLDEST_MINOR
            );
            self.answer_error(request.unique, libc::EPROTO);
            return None;
        }
        let mut wanted = init::ASYNC_READ | init::PARALLEL_DIROPS | init::MAX_PAGES | init::BIG_WRITES;
        let uring = self.server.options.uring_depth > 0 && flags & init::OVER_IO_URING != 0;
        if uring {
            wanted |= init::OVER_IO_URING;
        } else if self.server.options.uring_depth > 0 {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!("--fuse-uring-depth is set but the kernel offers no FUSE over io_uring (6.14+, and `echo Y > /sys/module/fuse/parameters/enable_uring`); requests come through /dev/fuse")
            });
        }
        let passthrough = self.server.options.passthrough && flags & init::PASSTHROUGH != 0;
        if passthrough {
            wanted |= init::PASSTHROUGH;
        } else if self.server.options.passthrough {
            tracing::info!("this kernel has no FUSE passthrough; every read goes through the daemon");
        }
        let mut granted = wanted & flags;
        if granted >> 32 != 0 {
            // Flags above bit 31 travel in flags2, which the kernel reads only with INIT_EXT.
            granted |= init::INIT_EXT;
        }
        let out = InitOut {
            minor: minor.min(abi::MINOR),
            max_readahead: max_readahead.min(self.server.options.max_readahead),
            flags: granted,
            // Let the kernel keep many reads of one file in flight; each may wait on the network.
            max_background: 64,
            congestion_threshold: 48,
            max_write: MAX_WRITE,
            // Reads of up to 1 MiB, the kernel's largest readahead request.
            max_pages: 256,
            max_stack_depth: u32::from(passthrough),
        };
        let negotiated = Negotiated {
            minor: out.minor,
            passthrough,
            max_write: MAX_WRITE,
            resend: flags & init::HAS_RESEND != 0,
            uring,
        };
        if !passthrough {
            self.passthrough.disable();
        }
        let _ = self.negotiated.set(negotiated);
        self.answer(request.unique, &[&out.encode()]);
        Some(negotiated)
    }

    /// Sends an answer the way its request came: through its ring, or the device.
    fn send(&self, unique: u64, error: i32, pieces: &[&[u8]]) -> std::io::Result<()> {
        let slot = if self.rings_on.load(Ordering::Acquire) {
            self.ring_slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&unique)
        } else {
            None
        };
        match slot {
            Some(slot) => slot.answer(unique, error, pieces),
            None => self.device.reply(unique, error, pieces),
        }
    }

    fn answer(&self, unique: u64, pieces: &[&[u8]]) {
        if let Err(e) = self.send(unique, 0, pieces) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot answer a FUSE request");
        }
    }

    fn answer_error(&self, unique: u64, errno: i32) {
        if let Err(e) = self.send(unique, -errno, &[]) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot answer a FUSE request");
        }
    }

    fn answer_xattr(&self, unique: u64, value: &[u8], size: u32) {
        if size == 0 {
            self.answer(unique, &[&abi::xattr_size_out(value.len() as u32)]);
        } else if value.len() <= size as usize {
            self.answer(unique, &[value]);
        } else {
            self.answer_error(unique, libc::ERANGE);
        }
    }
}

fn negative_entry() -> Vec<u8> {
    let none = abi::FileAttr {
        ino: 0,
        size: 0,
        mtime: std::time::UNIX_EPOCH,
        mode: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
    };
    abi::entry_out(&none, TTL)
}

fn file_attr(attr: &Attr) -> abi::FileAttr {
    let kind = match attr.kind {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
    };
    abi::FileAttr {
        ino: attr.ino,
        size: attr.size,
        mtime: attr.mtime,
        mode: kind | u32::from(attr.perm),
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
    }
}
