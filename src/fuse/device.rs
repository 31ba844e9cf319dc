//! One FUSE connection's `/dev/fuse` file: requests are read from it without blocking a thread,
//! answers are written to it (header and data pieces in one `writev`, no gathering copy), and it
//! carries the connection's ioctls and notifications.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::abi::{self, OUT_HEADER};

#[derive(Debug)]
pub struct Device {
    fd: AsyncFd<OwnedFd>,
}

/// Opens a new `/dev/fuse` file, to be mounted.
pub fn open() -> io::Result<OwnedFd> {
    let file = File::options().read(true).write(true).open("/dev/fuse")?;
    Ok(file.into())
}

impl Device {
    /// Serves `fd` (a fresh one, or a live connection handed over) from the current runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Device> {
        set_nonblocking(&fd)?;
        // SAFETY: the descriptor is owned by the AsyncFd for its whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::ERROR) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Device { fd })
    }

    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// The device file, to be held for a successor (the connection lives while anyone holds it).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.get_ref().as_fd()
    }

    /// Waits until a request can be read.
    pub async fn readable(&self) -> io::Result<Readable<'_>> {
        // A connection that ended reports only an error (EPOLLERR), never readable: wait for
        // either, and let the read say which.
        Ok(Readable(self.fd.ready(Interest::READABLE | Interest::ERROR).await?))
    }

    /// Answers request `unique`: `error` 0 with `pieces` as the payload, or a negative errno alone.
    /// A request that no longer exists (interrupted, or its connection gone) is not an error.
    pub fn reply(&self, unique: u64, error: i32, pieces: &[&[u8]]) -> io::Result<()> {
        let len: usize = OUT_HEADER + pieces.iter().map(|p| p.len()).sum::<usize>();
        let mut header = [0u8; OUT_HEADER];
        header[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        header[4..8].copy_from_slice(&error.to_ne_bytes());
        header[8..].copy_from_slice(&unique.to_ne_bytes());
        match self.write(&header, pieces) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV)) => Ok(()),
            other => other,
        }
    }

    fn write(&self, header: &[u8], pieces: &[&[u8]]) -> io::Result<()> {
        let mut iov = Vec::with_capacity(1 + pieces.len());
        iov.push(libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        });
        iov.extend(pieces.iter().filter(|p| !p.is_empty()).map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        }));
        // SAFETY: every iovec points into a slice that outlives the call. The kernel takes a
        // whole answer in one write or none of it.
        let written = unsafe { libc::writev(self.raw(), iov.as_ptr(), iov.len() as libc::c_int) };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Asks the kernel to queue again every request of this connection that was read but not
    /// answered (a server that died had them). Sent once, before anything is read.
    pub fn notify_resend(&self) -> io::Result<()> {
        let mut header = [0u8; OUT_HEADER];
        header[..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
        header[4..8].copy_from_slice(&abi::NOTIFY_RESEND.to_ne_bytes());
        self.write(&header, &[])
    }

    /// Registers `file` as a passthrough backing file of this connection; answers its id.
    pub fn backing_open(&self, file: &File) -> io::Result<i32> {
        // struct fuse_backing_map { int32 fd; uint32 flags; uint64 padding; }
        let mut map = [0u8; 16];
        map[..4].copy_from_slice(&file.as_raw_fd().to_ne_bytes());
        // SAFETY: the ioctl reads 16 bytes from `map`.
        let id = unsafe { libc::ioctl(self.raw(), abi::DEV_IOC_BACKING_OPEN, map.as_ptr()) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(id)
    }

    /// Lets the kernel drop a backing file once no open uses it any more.
    pub fn backing_close(&self, id: i32) {
        let id = id as u32;
        // SAFETY: the ioctl reads one u32.
        if unsafe { libc::ioctl(self.raw(), abi::DEV_IOC_BACKING_CLOSE, &id) } < 0 {
            tracing::debug!(id, error = %io::Error::last_os_error(), "cannot close a passthrough backing file");
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own. The flag is shared with every duplicate, which is
    // what a handed-over connection needs: nobody else reads from it.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The device had a request to read; [`Readable::read`] reads it unless another reader was first.
pub struct Readable<'a>(tokio::io::unix::AsyncFdReadyGuard<'a, OwnedFd>);

impl Readable<'_> {
    /// Reads one request into `buf`: `Some(Ok(0))` when the connection has ended (unmounted or
    /// aborted), `None` when there was nothing to read after all (wait again).
    pub fn read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        // SAFETY: reading into a buffer we own, of its length.
        let read =
            self.0.try_io(
                |fd| match unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } {
                    n if n >= 0 => Ok(n as usize),
                    _ => Err(io::Error::last_os_error()),
                },
            );
        match read {
            Ok(Ok(n)) => Some(Ok(n)),
            Ok(Err(e)) => match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ECONNABORTED) => Some(Ok(0)),
                // The request was interrupted before it could be read, or a signal came.
                Some(libc::ENOENT) | Some(libc::EINTR) => None,
                _ => Some(Err(e)),
            },
            // Readiness was cleared: wait again.
            Err(_would_block) => None,
        }
    }
}
