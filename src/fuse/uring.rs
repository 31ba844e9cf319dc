//! FUSE over io_uring (Linux 6.14+, with the `fuse` module's `enable_uring` set): once INIT agreed
//! to it, the kernel hands a connection's requests to one queue per CPU as completions of commands
//! the server keeps posted on an io_uring, and takes each answer with the command that asks for
//! the next. A request is served by a thread pinned to the CPU its reader ran on, so the reader,
//! the kernel and the daemon meet on one core with one system call per answer and no read of
//! `/dev/fuse`.
//!
//! The daemon has one such thread and ring per CPU ([`RingPool`]), shared by every mount served
//! this way; each mount posts a fixed set of entries (a header and a payload buffer each) on every
//! CPU's ring. An answer is written into its entry's buffers by whichever thread has it and
//! committed by the CPU's thread, which an eventfd wakes. Forgets and interrupts still come through
//! `/dev/fuse`, which the session keeps reading.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::abi::{IN_HEADER, MIN_READ_BUFFER, OUT_HEADER};
use super::request::{ParseError, Request};

/// `struct fuse_uring_req_header`: the in/out header (128), the op's own header (128) and
/// `struct fuse_uring_ent_in_out` (flags, commit_id, payload_sz, padding, reserved).
const HEADER_AREA: usize = 128 + 128 + 32;
const OP_IN: usize = 128;
const PAYLOAD_SIZE_AT: usize = 256 + 16;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// The completion of the wake eventfd's read; an entry's is its queue's key and its index.
const WAKE: u64 = u64::MAX;
const INDEX_BITS: u32 = 20;

/// One entry's buffers. The kernel writes a request into them and reads the answer back; between
/// the two, only the one holder of the entry's [`Slot`] touches them.
struct Buffers {
    header: *mut u8,
    payload: *mut u8,
    payload_len: usize,
    iov: [libc::iovec; 2],
}

// SAFETY: the pointers are owned by the queue for its whole life; access is handed over by the
// protocol (kernel -> queue thread -> slot holder -> kernel), never shared at once.
unsafe impl Send for Buffers {}
unsafe impl Sync for Buffers {}

impl Buffers {
    fn new(payload_len: usize) -> Buffers {
        let header = Box::into_raw(vec![0u8; HEADER_AREA].into_boxed_slice()) as *mut u8;
        let payload = Box::into_raw(vec![0u8; payload_len].into_boxed_slice()) as *mut u8;
        let iov = [
            libc::iovec {
                iov_base: header.cast(),
                iov_len: HEADER_AREA,
            },
            libc::iovec {
                iov_base: payload.cast(),
                iov_len: payload_len,
            },
        ];
        Buffers {
            header,
            payload,
            payload_len,
            iov,
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: made from boxes of these lengths in `new`.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.header,
                HEADER_AREA,
            )));
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.payload,
                self.payload_len,
            )));
        }
    }
}

/// One CPU's queue of one connection: its entries, posted on that CPU's ring.
pub(super) struct Queue {
    qid: u16,
    device: RawFd,
    entries: Vec<Buffers>,
    serve: Serve,
    cpu: Arc<Cpu>,
    /// Where the CPU's thread keeps this queue, set before any entry is posted.
    key: AtomicU64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("qid", &self.qid).finish_non_exhaustive()
    }
}

/// What other threads hand one CPU's thread.
struct Cpu {
    inbox: Mutex<Inbox>,
    wake: OwnedFd,
}

#[derive(Default)]
struct Inbox {
    added: Vec<Arc<Queue>>,
    /// Answered entries to commit: (queue, entry, commit id).
    commits: Vec<(Arc<Queue>, usize, u64)>,
    stop: bool,
}

thread_local! {
    /// The CPU whose thread this is: what it hands itself needs no wake-up.
    static CPU_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Cpu {
    fn send(self: &Arc<Self>, put: impl FnOnce(&mut Inbox)) {
        put(&mut self.inbox.lock().unwrap_or_else(|p| p.into_inner()));
        if CPU_THREAD.get() != Arc::as_ptr(self) as usize {
            let one = 1u64;
            // SAFETY: an 8-byte write to an eventfd we own.
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn take(&self) -> Inbox {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The right to answer one request that came through a queue.
#[derive(Debug)]
pub(super) struct Slot {
    queue: Arc<Queue>,
    index: usize,
    commit_id: u64,
}

impl Slot {
    /// Writes the answer into the entry and has its CPU's thread commit it.
    pub fn answer(self, unique: u64, error: i32, pieces: &[&[u8]]) -> io::Result<()> {
        let entry = &self.queue.entries[self.index];
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let (error, total) = if total > entry.payload_len {
            (-libc::EIO, 0)
        } else {
            (error, total)
        };
        // SAFETY: the entry is ours until committed (see `Buffers`); lengths checked above.
        unsafe {
            let header = std::slice::from_raw_parts_mut(entry.header, HEADER_AREA);
            header[..4].copy_from_slice(&((OUT_HEADER + total) as u32).to_ne_bytes());
            header[4..8].copy_from_slice(&error.to_ne_bytes());
            header[8..16].copy_from_slice(&unique.to_ne_bytes());
            header[PAYLOAD_SIZE_AT..PAYLOAD_SIZE_AT + 4].copy_from_slice(&(total as u32).to_ne_bytes());
            if error == 0 {
                let mut at = entry.payload;
                for piece in pieces {
                    std::ptr::copy_nonoverlapping(piece.as_ptr(), at, piece.len());
                    at = at.add(piece.len());
                }
            }
        }
        let Slot {
            queue,
            index,
            commit_id,
        } = self;
        let cpu = queue.cpu.clone();
        cpu.send(|inbox| inbox.commits.push((queue, index, commit_id)));
        Ok(())
    }
}

impl Queue {
    /// The request the kernel wrote into entry `index`, laid out as a device read would have it.
    fn request(&self, index: usize) -> Result<Request, ParseError> {
        let entry = &self.entries[index];
        // SAFETY: the kernel has completed this entry's command: its buffers are ours.
        let header = unsafe { std::slice::from_raw_parts(entry.header, HEADER_AREA) };
        let len = u32::from_ne_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let payload_len = u32::from_ne_bytes(
            header[PAYLOAD_SIZE_AT..PAYLOAD_SIZE_AT + 4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        // The op's own header is what the length counts beyond the common header and the payload.
        let op_len = len.checked_sub(IN_HEADER + payload_len).filter(|n| *n <= OP_IN);
        let (Some(op_len), true) = (op_len, payload_len <= entry.payload_len) else {
            return Err(ParseError::Length {
                claimed: len as u32,
                read: IN_HEADER + payload_len,
            });
        };
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&header[..IN_HEADER]);
        buf.extend_from_slice(&header[128..128 + op_len]);
        // SAFETY: as above; payload_len checked against the buffer's length.
        buf.extend_from_slice(unsafe { std::slice::from_raw_parts(entry.payload, payload_len) });
        Request::parse(&buf)
    }

    fn commit_id(&self, index: usize) -> u64 {
        // SAFETY: the entry's command completed, so its header is ours; ring_ent_in_out's
        // commit_id is at 256 + 8.
        let header = unsafe { std::slice::from_raw_parts(self.entries[index].header, HEADER_AREA) };
        u64::from_ne_bytes(header[264..272].try_into().expect("8 bytes"))
    }

    fn command(&self, index: usize, cmd_op: u32, commit_id: u64) -> squeue::Entry128 {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let entry = &self.entries[index];
        let user_data = self.key.load(Ordering::Relaxed) << INDEX_BITS | index as u64;
        let mut sqe = opcode::UringCmd80::new(types::Fd(self.device), cmd_op)
            .cmd(cmd)
            .addr(Some(entry.iov.as_ptr() as u64))
            .build()
            .user_data(user_data);
        // sqe->len is the number of iovecs (header, payload); the builder has no setter for it.
        // SAFETY: Entry128 starts with the C `struct io_uring_sqe`, whose `len` is at byte 24.
        unsafe { *((&mut sqe as *mut squeue::Entry128 as *mut u8).add(24) as *mut u32) = 2 };
        sqe
    }
}

/// What a ring's thread does with a request: serve it, answering through the slot.
pub(super) type Serve = Arc<dyn Fn(Request, Slot) + Send + Sync>;

/// The daemon's io_uring threads, one per CPU, started with the first mount that uses them.
pub(super) struct RingPool {
    cpus: Vec<Arc<Cpu>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPool").field("cpus", &self.cpus.len()).finish()
    }
}

impl RingPool {
    /// A thread and ring per possible CPU, serving on the current tokio runtime.
    pub fn start() -> io::Result<RingPool> {
        let mut pool = RingPool {
            cpus: Vec::new(),
            threads: Vec::new(),
        };
        for qid in 0..possible_cpus()? {
            // SAFETY: eventfd returns a new descriptor or -1.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if wake < 0 {
                return Err(io::Error::last_os_error());
            }
            let cpu = Arc::new(Cpu {
                inbox: Mutex::default(),
                // SAFETY: a fresh descriptor, owned from here.
                wake: unsafe { OwnedFd::from_raw_fd(wake) },
            });
            let ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder().build(256)?;
            let (thread_cpu, runtime) = (cpu.clone(), tokio::runtime::Handle::current());
            let thread = std::thread::Builder::new()
                .name(format!("fuse-uring-{qid}"))
                .spawn(move || {
                    let _runtime = runtime.enter();
                    if let Err(e) = run(ring, &thread_cpu, qid) {
                        tracing::error!(qid, error = %e, "a FUSE io_uring thread stopped; its mounts' requests on this CPU wait");
                    }
                })?;
            pool.cpus.push(cpu);
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Posts `depth` entries of `device`'s connection on every CPU's ring, with payload buffers
    /// of `max_payload` bytes; `serve` gets its requests. They stop when the connection ends.
    pub fn serve(&self, device: RawFd, depth: usize, max_payload: usize, serve: Serve) {
        for (qid, cpu) in self.cpus.iter().enumerate() {
            let queue = Arc::new(Queue {
                qid: qid as u16,
                device,
                entries: (0..depth.clamp(1, 1 << INDEX_BITS))
                    .map(|_| Buffers::new(max_payload.max(MIN_READ_BUFFER)))
                    .collect(),
                serve: serve.clone(),
                cpu: cpu.clone(),
                key: AtomicU64::new(0),
            });
            cpu.send(|inbox| inbox.added.push(queue));
        }
    }
}

impl Drop for RingPool {
    fn drop(&mut self) {
        for cpu in &self.cpus {
            cpu.send(|inbox| inbox.stop = true);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn possible_cpus() -> io::Result<usize> {
    // "0-1" or "0-3,5": the highest CPU number + 1.
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let last = text
        .trim()
        .rsplit([',', '-'])
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot read possible CPUs {text:?}"),
            )
        })?;
    Ok(last + 1)
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(cpu, error = %io::Error::last_os_error(), "cannot pin a FUSE io_uring thread");
        }
    }
}

/// A submission the kernel could not take now (a signal, or its completion queue overflowed):
/// reaping completions and submitting again makes progress.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

/// Pushes what is pending onto the submission queue, submitting when it is full; what the
/// kernel cannot take now stays pending for the next round.
fn push_all(
    ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
    pending: &mut Vec<squeue::Entry128>,
) -> io::Result<()> {
    while !pending.is_empty() {
        {
            let mut sq = ring.submission();
            while let Some(sqe) = pending.last() {
                // SAFETY: every buffer an entry names lives as long as its queue, which the
                // thread keeps until the kernel has ended all of the queue's commands (or the
                // ring, dropped first, cancels them).
                if unsafe { sq.push(sqe) }.is_err() {
                    break;
                }
                pending.pop();
            }
        }
        if !pending.is_empty() {
            match ring.submit() {
                Ok(_) => {}
                Err(e) if transient(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One CPU's thread: posts the entries of the queues it is given, serves what completes, and
/// commits answers.
fn run(ring: IoUring<squeue::Entry128, cqueue::Entry>, cpu: &Arc<Cpu>, qid: usize) -> io::Result<()> {
    pin_to(qid);
    CPU_THREAD.set(Arc::as_ptr(cpu) as usize);
    let wake_buffer = Box::new([0u8; 8]);
    let wake_read = || {
        let read = opcode::Read::new(types::Fd(cpu.wake.as_raw_fd()), wake_buffer.as_ptr() as *mut u8, 8)
            .build()
            .user_data(WAKE);
        squeue::Entry128::from(read)
    };
    // Each queue with the number of its entries the kernel has not ended.
    let mut queues: Vec<Option<(Arc<Queue>, usize)>> = Vec::new();
    let mut pending = vec![wake_read()];
    // Declared after the buffers, so dropped before them: closing the ring cancels what the
    // kernel could still write into them.
    let mut ring = ring;
    loop {
        let inbox = cpu.take();
        if inbox.stop {
            // Answers already written still go back; dropping the ring cancels the rest.
            pending.extend(
                inbox
                    .commits
                    .iter()
                    .map(|(queue, index, id)| queue.command(*index, CMD_COMMIT_AND_FETCH, *id)),
            );
            push_all(&mut ring, &mut pending)?;
            ring.submit()?;
            return Ok(());
        }
        for queue in inbox.added {
            let key = queues.iter().position(Option::is_none).unwrap_or_else(|| {
                queues.push(None);
                queues.len() - 1
            });
            queue.key.store(key as u64, Ordering::Relaxed);
            pending.extend((0..queue.entries.len()).map(|i| queue.command(i, CMD_REGISTER, 0)));
            queues[key] = Some((queue.clone(), queue.entries.len()));
        }
        for (queue, index, id) in inbox.commits {
            pending.push(queue.command(index, CMD_COMMIT_AND_FETCH, id));
        }
        push_all(&mut ring, &mut pending)?;
        // Only a submission that cannot succeed ends the thread: its CPU's requests would wait
        // from then on, so a full completion queue or a signal is waited out instead.
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e),
        }
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (user_data, result) in done {
            if user_data == WAKE {
                pending.push(wake_read());
                continue;
            }
            let (key, index) = (
                (user_data >> INDEX_BITS) as usize,
                (user_data & ((1 << INDEX_BITS) - 1)) as usize,
            );
            let Some(Some((queue, live))) = queues.get_mut(key) else {
                continue;
            };
            if result == -libc::EAGAIN {
                // The kernel had not finished INIT yet: register again shortly.
                std::thread::sleep(std::time::Duration::from_millis(1));
                pending.push(queue.command(index, CMD_REGISTER, 0));
                continue;
            }
            if result < 0 {
                // The connection ended (ENOTCONN, or a commit for it found nothing), or the kernel
                // refused the entry: then the mount stays on /dev/fuse, which an operator should hear.
                let error = io::Error::from_raw_os_error(-result);
                if [libc::ENOTCONN, libc::ECANCELED, libc::ENOENT, libc::ECONNABORTED].contains(&-result) {
                    tracing::debug!(qid, index, %error, "FUSE io_uring entry ended");
                } else {
                    tracing::warn!(qid, index, %error, "the kernel refused a FUSE io_uring entry");
                }
                *live -= 1;
                if *live == 0 {
                    queues[key] = None;
                }
                continue;
            }
            let queue = queue.clone();
            let commit_id = queue.commit_id(index);
            let request = queue.request(index);
            let slot = Slot {
                queue: queue.clone(),
                index,
                commit_id,
            };
            match request {
                Ok(request) => (queue.serve)(request, slot),
                Err(e) => {
                    tracing::warn!(error = %e, "malformed FUSE request from io_uring; answered EIO");
                    let _ = slot.answer(commit_id, -libc::EIO, &[]);
                }
            }
        }
    }
}
