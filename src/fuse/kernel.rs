//! Attaching a `/dev/fuse` file at a path and detaching it: `mount(2)` as root, else the setuid
//! `fusermount3` helper, which mounts and hands the device file back over a socket.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

/// How a mount looks to the rest of the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    /// Let users other than the mounting one in; `default_permissions` still applies the modes.
    pub allow_other: bool,
    /// What the mount table shows as the mount's source (`mount -a` compares it with fstab's).
    pub source: String,
}

/// Mounts a new FUSE connection read-only at `path`; answers its device file. The kernel sends
/// INIT on it straight away, and every other request waits until INIT is answered.
pub fn mount(path: &Path, attach: &Attach) -> io::Result<OwnedFd> {
    let device = match super::device::open() {
        Ok(device) => device,
        // /dev/fuse is root's alone on some systems: fusermount3 (setuid) opens it then.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => return fusermount(path, attach),
        Err(e) => return Err(e),
    };
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions",
        device.as_raw_fd()
    );
    if attach.allow_other {
        data.push_str(",allow_other");
    }
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    let c_path = c_path(path)?;
    let source = CString::new(attach.source.as_str())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a mount source with a NUL byte"))?;
    let (fstype, c_data) = (c"fuse.lazysnap", CString::new(data).expect("no NUL"));
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            c_path.as_ptr(),
            fstype.as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(device);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    drop(device);
    fusermount(path, attach)
}

/// Without CAP_SYS_ADMIN: fusermount3 opens the device, mounts it and sends it back.
fn fusermount(path: &Path, attach: &Attach) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixDatagram::pair()?;
    // The helper's end must survive exec: clear close-on-exec on it.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) };
    // fusermount3 splits its options at commas; a backslash keeps one in the name.
    let fsname = attach.source.replace('\\', "\\\\").replace(',', "\\,");
    let mut options = format!("ro,nosuid,nodev,noatime,default_permissions,fsname={fsname},subtype=lazysnap");
    if attach.allow_other {
        options.push_str(",allow_other");
    }
    let status = Command::new("fusermount3")
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(path)
        .status()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run fusermount3 (not root, so it mounts): {e}"),
            )
        })?;
    drop(theirs);
    if !status.success() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("fusermount3 could not mount {} ({status})", path.display()),
        ));
    }
    let mut byte = [0u8; 1];
    let (_, fd) = crate::fdpass::recv(ours.as_fd(), &mut byte)?;
    fd.ok_or_else(|| io::Error::other("fusermount3 mounted but sent no device"))
}

/// Unmounts `path`; `lazy` detaches it even while files are open (the connection then ends when
/// the last one closes).
pub fn unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    let c_path = c_path(path)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    let mut command = Command::new("fusermount3");
    command.arg("-u").arg("-q");
    if lazy {
        command.arg("-z");
    }
    let status = command.arg("--").arg(path).status()?;
    match status.success() {
        true => Ok(()),
        // fusermount3 says why on its standard error; the caller only needs to know it is still there.
        false => Err(io::Error::from_raw_os_error(libc::EBUSY)),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The readahead the kernel gives every new FUSE mount.
const KERNEL_DEFAULT_READAHEAD: u32 = 128 << 10;

/// Sets how far ahead the kernel reads the files of the mount at `path` (its `read_ahead_kb`).
/// The kernel starts every FUSE mount at 128 KiB and INIT can only lower that, so without this a
/// mount is read ahead no further than 128 KiB whatever the daemon is told. Best effort: without
/// root, or without sysfs, the mount keeps the kernel's default (a warning when another value was
/// asked for, since the operator then does not get it).
pub fn set_readahead(path: &Path, bytes: u32) {
    use std::os::unix::fs::MetadataExt;
    let set = std::fs::metadata(path).and_then(|meta| {
        let dev = meta.dev();
        let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
        std::fs::write(&knob, (bytes / 1024).to_string()).map(|()| knob)
    });
    match set {
        Ok(knob) => tracing::debug!(%knob, kib = bytes / 1024, "kernel readahead set"),
        Err(error) if bytes == KERNEL_DEFAULT_READAHEAD => {
            tracing::debug!(path = %path.display(), %error, "kernel readahead left at its default")
        }
        Err(error) => tracing::warn!(
            path = %path.display(),
            %error,
            kib = bytes / 1024,
            "cannot set the mount's kernel readahead; it stays at the kernel's 128 KiB"
        ),
    }
}
