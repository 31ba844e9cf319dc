//! The kernel's FUSE wire format (`include/uapi/linux/fuse.h`), for the operations a read-only
//! filesystem answers: opcodes, flags, and little encoders and decoders for the structures. Every
//! structure is written in native byte order, as the kernel reads it.

/// Protocol 7.x this layer speaks. 7.23 (Linux 3.15) fixed the sizes of every structure used here;
/// newer kernels add fields behind flags, which are negotiated at INIT.
pub const MAJOR: u32 = 7;
pub const MINOR: u32 = 45;
pub const OLDEST_MINOR: u32 = 23;

/// The kernel refuses device reads with smaller buffers (`FUSE_MIN_READ_BUFFER`).
pub const MIN_READ_BUFFER: usize = 8192;

pub const IN_HEADER: usize = 40;
pub const OUT_HEADER: usize = 16;

pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const RENAME2: u32 = 45;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const TMPFILE: u32 = 51;
}

/// INIT flags (`flags`, and `flags2` shifted up by 32).
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const HAS_RESEND: u64 = 1 << 39;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// Flags of an OPEN or OPENDIR answer.
pub mod fopen {
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const CACHE_DIR: u32 = 1 << 3;
    pub const PASSTHROUGH: u32 = 1 << 7;
}

/// Asks the kernel to queue again every request a dead server had read but not answered.
pub const NOTIFY_RESEND: i32 = 7;

/// `_IOW(229, 1, struct fuse_backing_map)` and `_IOW(229, 2, uint32_t)`.
pub const DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
pub const DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// Reads fixed-size fields from a request body in order.
pub struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { bytes }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_ne_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_ne_bytes)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes = self.bytes.get(n..)?;
        Some(())
    }

    /// A NUL-terminated name (the kernel always terminates one).
    pub fn name(&mut self) -> Option<Vec<u8>> {
        let end = self.bytes.iter().position(|&b| b == 0)?;
        let name = self.bytes[..end].to_vec();
        self.bytes = &self.bytes[end + 1..];
        Some(name)
    }
}

/// Builds a structure field by field.
#[derive(Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn u16(mut self, v: u16) -> Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn i32(mut self, v: i32) -> Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn zeros(mut self, n: usize) -> Out {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// `struct fuse_attr` (88 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttr {
    pub ino: u64,
    pub size: u64,
    pub mtime: std::time::SystemTime,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileAttr {
    pub fn encode(&self, out: Out) -> Out {
        let since = self.mtime.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
        out.u64(self.ino)
            .u64(self.size)
            .u64(self.size.div_ceil(512))
            .u64(secs)
            .u64(secs)
            .u64(secs)
            .u32(nanos)
            .u32(nanos)
            .u32(nanos)
            .u32(self.mode)
            .u32(self.nlink)
            .u32(self.uid)
            .u32(self.gid)
            .u32(0) // rdev
            .u32(4096) // blksize
            .u32(0) // flags
    }
}

/// `struct fuse_entry_out`: a name's inode and attributes, cacheable for `ttl`.
pub fn entry_out(attr: &FileAttr, ttl: std::time::Duration) -> Vec<u8> {
    let out = Out::default()
        .u64(attr.ino)
        .u64(0) // generation: inode numbers are never reused within a mount
        .u64(ttl.as_secs())
        .u64(ttl.as_secs())
        .u32(ttl.subsec_nanos())
        .u32(ttl.subsec_nanos());
    attr.encode(out).0
}

/// `struct fuse_attr_out`.
pub fn attr_out(attr: &FileAttr, ttl: std::time::Duration) -> Vec<u8> {
    let out = Out::default().u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(0);
    attr.encode(out).0
}

/// `struct fuse_open_out`; `backing_id` 0 unless the open is a passthrough one.
pub fn open_out(fh: u64, flags: u32, backing_id: i32) -> Vec<u8> {
    Out::default().u64(fh).u32(flags).i32(backing_id).0
}

/// `struct fuse_kstatfs` (80 bytes).
pub fn statfs_out(blocks: u64, files: u64, block_size: u32, name_max: u32) -> Vec<u8> {
    Out::default()
        .u64(blocks)
        .u64(0) // bfree
        .u64(0) // bavail
        .u64(files)
        .u64(0) // ffree
        .u32(block_size)
        .u32(name_max)
        .u32(block_size) // frsize
        .u32(0)
        .zeros(24)
        .0
}

/// `struct fuse_getxattr_out`: the size a value (or a name list) needs.
pub fn xattr_size_out(size: u32) -> Vec<u8> {
    Out::default().u32(size).u32(0).0
}

/// Appends one `struct fuse_dirent` to `buf` if it fits within `max`; false when it does not.
pub fn push_dirent(buf: &mut Vec<u8>, max: usize, ino: u64, next_offset: u64, dtype: u32, name: &[u8]) -> bool {
    const DIRENT: usize = 24;
    let len = (DIRENT + name.len()).next_multiple_of(8);
    if buf.len() + len > max {
        return false;
    }
    let start = buf.len();
    buf.extend_from_slice(&ino.to_ne_bytes());
    buf.extend_from_slice(&next_offset.to_ne_bytes());
    buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&dtype.to_ne_bytes());
    buf.extend_from_slice(name);
    buf.resize(start + len, 0);
    true
}

/// `struct fuse_init_out` (64 bytes since 7.23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOut {
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u64,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub max_pages: u16,
    pub max_stack_depth: u32,
}

impl InitOut {
    pub fn encode(&self) -> Vec<u8> {
        Out::default()
            .u32(MAJOR)
            .u32(self.minor)
            .u32(self.max_readahead)
            .u32(self.flags as u32)
            .u16(self.max_background)
            .u16(self.congestion_threshold)
            .u32(self.max_write)
            .u32(1) // time_gran: times are whole nanoseconds
            .u16(self.max_pages)
            .u16(0) // map_alignment
            .u32((self.flags >> 32) as u32)
            .u32(self.max_stack_depth)
            .u16(0) // request_timeout: the server never asks the kernel to give up on it
            .zeros(22)
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernels_sizes() {
        let attr = FileAttr {
            ino: 2,
            size: 1000,
            mtime: std::time::UNIX_EPOCH,
            mode: libc::S_IFREG | 0o444,
            nlink: 1,
            uid: 0,
            gid: 0,
        };
        let ttl = std::time::Duration::from_secs(1);
        assert_eq!(attr.encode(Out::default()).0.len(), 88);
        assert_eq!(entry_out(&attr, ttl).len(), 128);
        assert_eq!(attr_out(&attr, ttl).len(), 104);
        assert_eq!(open_out(1, 0, 0).len(), 16);
        assert_eq!(statfs_out(1, 1, 4096, 255).len(), 80);
        let init = InitOut {
            minor: MINOR,
            max_readahead: 0,
            flags: 0,
            max_background: 0,
            congestion_threshold: 0,
            max_write: 0,
            max_pages: 0,
            max_stack_depth: 0,
        };
        assert_eq!(init.encode().len(), 64);
    }

    #[test]
    fn dirents_are_padded_to_eight_bytes_and_stop_at_the_limit() {
        let mut buf = Vec::new();
        assert!(push_dirent(&mut buf, 64, 5, 1, 8, b"abc"));
        assert_eq!(buf.len(), 32);
        assert_eq!(&buf[24..27], b"abc");
        assert!(
            !push_dirent(&mut buf, 64, 6, 2, 8, b"a-much-longer-name"),
            "does not fit in 64"
        );
        assert_eq!(buf.len(), 32, "a dirent that does not fit leaves nothing behind");
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_macros() {
        // _IOW(type, nr, size) = 1 << 30 | size << 16 | type << 8 | nr
        let iow = |nr: u64, size: u64| ((1u64 << 30) | (size << 16) | (229 << 8) | nr) as libc::c_ulong;
        assert_eq!(DEV_IOC_BACKING_OPEN, iow(1, 16));
        assert_eq!(DEV_IOC_BACKING_CLOSE, iow(2, 4));
    }
}
