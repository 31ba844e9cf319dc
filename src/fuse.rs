//! The thin adapter between the kernel (through fuser) and [`crate::fs::LazyFs`]: translate the
//! request, call the filesystem, translate the answer. No semantics live here.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL,
    WriteFlags,
};

use crate::fs::{Attr, FsError, Kind, LazyFs};

mod passthrough;
use passthrough::Passthrough;

/// Files never change under a mount, so the kernel may keep attributes, entries and pages as long
/// as it likes; an hour bounds what a forgotten stale mount could show.
const TTL: Duration = Duration::from_secs(3600);

thread_local! {
    /// A read that spans blocks is gathered here; it grows to the largest read (max_read).
    static REPLY_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// FUSE worker threads; reads block on fetches, so several keep other readers moving.
    pub threads: usize,
    /// Let users other than the mounting one read (the database engine may run as its own user).
    pub allow_other: bool,
    /// Largest readahead the kernel may ask for in one request.
    pub max_readahead: u32,
    /// Let the kernel read fully cached, verified files straight from the disk cache (FUSE
    /// passthrough, Linux 6.9+, needs CAP_SYS_ADMIN); falls back to ordinary reads when refused.
    pub passthrough: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            threads: 16,
            allow_other: true,
            max_readahead: 1 << 20,
            passthrough: true,
        }
    }
}

/// A live mount. [`Mount::unmount`] refuses while files are open (and gives the mount back);
/// [`Mount::detach`] and dropping detach it at once, the session ending when the last file closes.
pub struct Mount {
    session: Option<BackgroundSession>,
    fs: Arc<LazyFs>,
    path: PathBuf,
}

/// An unmount the kernel refused; the mount is still live and handed back.
pub struct Busy {
    pub mount: Mount,
    pub error: io::Error,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Mount {
    pub fn fs(&self) -> &Arc<LazyFs> {
        &self.fs
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) -> Result<(), Box<Busy>> {
        match umount2(&self.path, 0) {
            Ok(()) => {}
            // Not a mount point any more: someone unmounted it with the system tool, and the
            // session has ended (or is ending) on its own.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(path = %self.path.display(), "already unmounted outside lazysnap");
            }
            Err(error) => return Err(Box::new(Busy { mount: self, error })),
        }
        if let Some(session) = self.session.take() {
            // The kernel has let go, so the session loop ends on its own.
            if let Err(e) = session.join() {
                tracing::warn!(path = %self.path.display(), error = %e, "FUSE session ended with an error");
            }
        }
        Ok(())
    }

    /// Detaches the mount now; files already open keep working until closed.
    pub fn detach(mut self) {
        self.detach_in_background();
    }

    fn detach_in_background(&mut self) {
        let Some(session) = self.session.take() else { return };
        if let Err(e) = umount2(&self.path, libc::MNT_DETACH) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot detach mount");
        }
        let shown = self.path.display().to_string();
        std::thread::spawn(move || {
            let _ = session.join();
            tracing::debug!(path = %shown, "detached mount released");
        });
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.detach_in_background();
    }
}

/// Detaches whatever is mounted at `path`, such as the dead FUSE connection a crashed daemon left.
pub fn detach_path(path: &Path) -> io::Result<()> {
    umount2(path, libc::MNT_DETACH)
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mounts `fs` read-only at `mountpoint`; reads run on `runtime`.
pub fn mount(
    fs: Arc<LazyFs>,
    mountpoint: &Path,
    runtime: tokio::runtime::Handle,
    options: &FuseOptions,
) -> io::Result<Mount> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::FSName("lazysnap".to_string()),
        MountOption::Subtype("lazysnap".to_string()),
        MountOption::DefaultPermissions,
    ];
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    let adapter = Adapter {
        fs: fs.clone(),
        runtime,
        max_readahead: options.max_readahead,
        passthrough: Passthrough::new(options.passthrough),
    };
    let session = fuser::Session::new(adapter, mountpoint, &config)?.spawn()?;
    Ok(Mount {
        session: Some(session),
        fs,
        path: mountpoint.to_path_buf(),
    })
}

struct Adapter {
    fs: Arc<LazyFs>,
    runtime: tokio::runtime::Handle,
    max_readahead: u32,
    passthrough: Passthrough,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(max) = config.set_max_readahead(self.max_readahead) {
            let _ = config.set_max_readahead(max);
        }
        // Let the kernel keep many reads of one file in flight; each may wait on the network.
        let _ = config.set_max_background(64);
        if self.passthrough.enabled() {
            // Depth 1: backing files on an ordinary filesystem, and the mount itself may still sit
            // under an overlay. A cache on an overlay makes the kernel refuse, and reads fall back.
            let supported =
                config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(1).is_ok();
            if !supported {
                tracing::info!("this kernel has no FUSE passthrough; every read goes through the daemon");
                self.passthrough.disable();
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        match self.fs.open(ino.0, write) {
            Ok(handle) => self.passthrough.reply_open(&self.fs, ino.0, handle, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.runtime.block_on(self.fs.read(fh.0, offset, size)) {
            Ok(pieces) => match pieces.as_slices() {
                [one] => reply.data(one),
                // fuser replies with one slice: gather into this thread's buffer, which is reused
                // rather than allocated (and page-faulted in) for every read.
                many => REPLY_BUFFER.with_borrow_mut(|buffer| {
                    buffer.clear();
                    many.iter().for_each(|piece| buffer.extend_from_slice(piece));
                    reply.data(buffer);
                }),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(ino.0, fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing is ever buffered for writing.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(attr) if attr.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            // The offset handed back is where the next call resumes.
            if reply.add(INodeNo(entry.ino), (i + 1) as u64, file_type(entry.kind), &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(s.blocks, 0, 0, s.files, 0, s.block_size, s.name_max, s.block_size);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = match name.to_str().map(|n| self.fs.xattr(ino.0, n)) {
            Some(Ok(value)) => value,
            Some(Err(e)) => return reply.error(errno(&e)),
            None => return reply.error(Errno::from_i32(libc::ENODATA)),
        };
        reply_xattr(reply, &value, size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.xattr_names(ino.0) {
            Ok(names) => {
                let list: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();
                reply_xattr(reply, &list, size);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Everything that would change the tree is refused: the mount is a read-only view.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::from_i32(libc::ERANGE));
    }
}
