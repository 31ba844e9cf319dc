//! The disk tier: `objects/<id>.data` is a sparse file holding the object's blocks at their own
//! offsets (so a fully present object is a plain local copy), `objects/<id>.map` a 32-byte header and
//! one byte per block (1 = present). Data is written before its map byte and the map byte cleared
//! before a hole is punched, and every read is verified, so a crash or a concurrent eviction can
//! cost a refetch but never serve wrong bytes.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::pins::{Pin, Pins};
use super::{BlockKey, BlockShape, CacheError, ObjectCacheStatus, ObjectId};
use crate::store::Piece;

const MAGIC: &[u8; 8] = b"LZSMAP01";
const HEADER: u64 = 32;
/// Open file pairs kept around; beyond this the least recently used are closed.
const OPEN_OBJECTS: usize = 256;

#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    quota: u64,
    /// Held while this process owns the disk tier; `None` while another process does.
    lock: Mutex<Option<File>>,
    /// When a reader last tried to become the owner (owners come and go: CLI commands end).
    last_claim: Mutex<std::time::Instant>,
    state: Mutex<State>,
    /// Held while an object's files are opened: two threads opening one object at once would each
    /// get their own pair (and writer lock), and one could truncate a map the other just wrote.
    opening: Mutex<()>,
    pins: Pins,
}

/// How often a read-only cache tries to take over a disk tier whose owner may have exited.
const CLAIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
struct State {
    /// Every block present, least recently used first.
    blocks: LruCache<BlockKey, Entry>,
    used: u64,
    open: LruCache<ObjectId, Arc<ObjectFiles>>,
    /// Blocks dropped to stay within the quota, ever.
    evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    len: u64,
    /// Checked against its checksum by this process: written from verified bytes, or read back and
    /// verified. Blocks found on disk at start are not, until read.
    verified: bool,
}

/// Every block of an object present in the disk tier, pinned there while this is held.
#[derive(Debug)]
pub struct CompleteCopy {
    /// The data file, opened read-only; byte `n` of the object is byte `n` of the file.
    pub file: File,
    pub pin: Pin,
    /// Blocks not yet verified by this process (see [`DiskCache::verify_block`]).
    pub unverified: Vec<u64>,
}

#[derive(Debug)]
struct ObjectFiles {
    data: File,
    map: File,
    /// One writer per object at a time: the fetched-bytes counter is read, added to and written
    /// back, so two runs of one object cached at once could lose a count (the kernel serializes
    /// writes to one file anyway, so this costs no speed: measured, cold reads unchanged).
    writing: Mutex<()>,
}

impl DiskCache {
    pub fn open(dir: &Path, quota: u64) -> Result<DiskCache, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir.join("objects")).map_err(io)?;
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            quota,
            lock: Mutex::new(None),
            last_claim: Mutex::new(std::time::Instant::now()),
            state: Mutex::new(State {
                blocks: LruCache::unbounded(),
                used: 0,
                open: LruCache::unbounded(),
                evicted: 0,
            }),
            opening: Mutex::new(()),
            pins: Pins::default(),
        };
        if !cache.claim().map_err(io)? {
            tracing::debug!(dir = %dir.display(), "block cache is owned by another process; using it read-only");
        }
        Ok(cache)
    }

    /// Tries to become the one writer of the disk tier; on success rebuilds the accounting from disk,
    /// which the previous owner may have changed.
    fn claim(&self) -> std::io::Result<bool> {
        let mut lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if lock.is_some() {
            return Ok(true);
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("lock"))?;
        // SAFETY: flock on a descriptor we own; non-blocking, so it cannot hang.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(false);
        }
        {
            let mut state = self.state();
            state.blocks.clear();
            state.used = 0;
            state.open.clear();
        }
        self.load()?;
        *lock = Some(file);
        Ok(true)
    }

    pub fn writable(&self) -> bool {
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Writable now, or becomes so if the owner has gone (tried at most once per interval).
    fn writable_or_claim(&self) -> bool {
        if self.writable() {
            return true;
        }
        {
            let mut last = self.last_claim.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < CLAIM_INTERVAL {
                return false;
            }
            *last = std::time::Instant::now();
        }
        self.claim().unwrap_or(false)
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    pub fn used(&self) -> u64 {
        self.state().used
    }

    pub fn evictions(&self) -> u64 {
        self.state().evicted
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, object: &ObjectId, ext: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{}.{ext}", object.hex()))
    }

    /// Rebuilds the LRU from the maps on disk, oldest map first, so recent objects are evicted last.
    fn load(&self) -> std::io::Result<()> {
        let mut maps = Vec::new();
        for entry in fs::read_dir(self.dir.join("objects"))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".map")) else {
                continue;
            };
            let Some(object) = ObjectId::from_hex(hex) else {
                continue;
            };
            let modified = entry.metadata()?.modified()?;
            maps.push((modified, object, entry.path()));
        }
        maps.sort();
        let mut state = self.state();
        for (_, object, path) in maps {
            let map = fs::read(&path)?;
            let Some(shape) = parse_map(&map) else {
                tracing::warn!(path = %path.display(), "ignoring a cache map with a bad header");
                continue;
            };
            for (block, &present) in map[HEADER as usize..].iter().enumerate() {
                if present == 1 {
                    let len = shape.len(block as u64);
                    let key = BlockKey {
                        object,
                        block: block as u64,
                    };
                    state.blocks.put(key, Entry { len, verified: false });
                    state.used += len;
                }
            }
        }
        Ok(())
    }

    /// The object's file pair. The owner opens them read-write (creating them when `create` gives
    /// the shape), since any handle it caches may later write blocks or punch holes; a reader opens
    /// existing files read-only.
    fn files(&self, object: &ObjectId, create: Option<BlockShape>) -> std::io::Result<Option<Arc<ObjectFiles>>> {
        if let Some(files) = self.state().open.get(object) {
            return Ok(Some(files.clone()));
        }
        let _opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(files) = self.state().open.get(object) {
            return Ok(Some(files.clone()));
        }
        let (data_path, map_path) = (self.path(object, "data"), self.path(object, "map"));
        let writer = self.writable();
        let open = |path: &Path| {
            // Cached blocks are the mounts' data: readable by the daemon's user only, whatever the
            // umask (mounts decide who else sees them).
            OpenOptions::new()
                .read(true)
                .write(writer)
                .create(writer && create.is_some())
                .truncate(false)
                .mode(0o600)
                .open(path)
        };
        let (data, map) = match (open(&data_path), open(&map_path)) {
            (Ok(data), Ok(map)) => (data, map),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        if let Some(shape) = create {
            let mut header = [0u8; HEADER as usize];
            let valid = map.read_exact_at(&mut header, 0).is_ok() && parse_header(&header) == Some(shape);
            if !valid {
                map.set_len(0)?;
                map.write_all_at(&make_header(shape), 0)?;
                map.set_len(HEADER + shape.blocks())?;
                data.set_len(shape.object_size)?;
            }
        }
        let files = ObjectFiles {
            data,
            map,
            writing: Mutex::new(()),
        };
        let files = Arc::new(files);
        let mut state = self.state();
        state.open.put(*object, files.clone());
        while state.open.len() > OPEN_OBJECTS {
            state.open.pop_lru();
        }
        Ok(Some(files))
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.state().blocks.contains(key)
    }

    pub fn get(&self, key: &BlockKey, shape: BlockShape, crc: u32) -> Option<Bytes> {
        if self.writable() {
            // The owner's LRU is authoritative: a miss there needs no disk I/O.
            self.state().blocks.get(key)?;
        }
        self.read_verified(key, shape, crc).map(Bytes::from)
    }

    /// Reads one block back from disk and checks it, marking it verified (or evicting it).
    fn read_verified(&self, key: &BlockKey, shape: BlockShape, crc: u32) -> Option<Vec<u8>> {
        let files = self.files(&key.object, None).ok()??;
        let mut present = [0u8; 1];
        files.map.read_exact_at(&mut present, HEADER + key.block).ok()?;
        if present[0] != 1 {
            return None;
        }
        let buf = read_fresh_at(&files.data, shape.len(key.block) as usize, shape.offset(key.block)).ok()?;
        if crate::checksum::crc32c(&buf) != crc {
            tracing::warn!(object = %key.object.hex(), block = key.block, "cached block failed its checksum; refetching");
            if self.writable() {
                self.evict(key);
            }
            return None;
        }
        if let Some(entry) = self.state().blocks.peek_mut(key) {
            entry.verified = true;
        }
        Some(buf)
    }

    /// Checks one block on disk against its checksum without caching it anywhere else: true when
    /// it is present and correct (and now marked verified), false when missing or evicted as bad.
    pub fn verify_block(&self, key: &BlockKey, shape: BlockShape, crc: u32) -> bool {
        self.read_verified(key, shape, crc).is_some()
    }

    /// The object's data file, if this process owns the tier and every block is present; pinned
    /// against eviction before completeness is checked, so it stays complete while the pin lives.
    pub fn complete_copy(&self, object: &ObjectId, shape: BlockShape) -> Option<CompleteCopy> {
        if !self.writable() {
            // Another process evicts as it likes; its holes would show through.
            return None;
        }
        let pin = self.pins.pin(*object);
        let mut unverified = Vec::new();
        {
            let state = self.state();
            for block in 0..shape.blocks() {
                let entry = state.blocks.peek(&BlockKey { object: *object, block })?;
                if !entry.verified {
                    unverified.push(block);
                }
            }
        }
        let file = File::open(self.path(object, "data")).ok()?;
        Some(CompleteCopy { file, pin, unverified })
    }

    /// Writes a block, then counts it against the quota.
    pub fn insert(&self, key: BlockKey, shape: BlockShape, piece: &Piece, fetched: bool) {
        let len = piece.len() as u64;
        if len > self.quota || !self.writable_or_claim() {
            return;
        }
        if let Err(e) = self.write_block(key, shape, piece, fetched) {
            // A full or failing cache disk costs speed, not correctness: the read is served anyway.
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot write to the disk cache");
            return;
        }
        let victims = {
            let mut state = self.state();
            let entry = Entry { len, verified: true };
            if state.blocks.put(key, entry).is_none() {
                state.used += entry.len;
            }
            let mut victims = Vec::new();
            let mut pinned = Vec::new();
            while state.used > self.quota {
                let Some((victim, entry)) = state.blocks.pop_lru() else {
                    break;
                };
                if self.pins.contains(&victim.object) {
                    pinned.push((victim, entry));
                    continue;
                }
                state.used -= entry.len;
                state.evicted += 1;
                victims.push(victim);
            }
            // Pinned blocks are in use by a reader that bypasses the daemon; they go back as
            // recently used, and the quota is exceeded until the pin is released.
            for (key, entry) in pinned {
                state.blocks.put(key, entry);
            }
            victims
        };
        for victim in victims {
            self.punch(&victim);
        }
    }

    fn write_block(&self, key: BlockKey, shape: BlockShape, piece: &Piece, fetched: bool) -> std::io::Result<()> {
        let files = self
            .files(&key.object, Some(shape))?
            .ok_or_else(|| std::io::Error::other("cache files vanished while being created"))?;
        let _writing = files.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        piece.write_all_at(&files.data, shape.offset(key.block))?;
        files.map.write_all_at(&[1], HEADER + key.block)?;
        if fetched {
            let mut counter = [0u8; 8];
            files.map.read_exact_at(&mut counter, 24)?;
            let total = u64::from_le_bytes(counter) + piece.len() as u64;
            files.map.write_all_at(&total.to_le_bytes(), 24)?;
        }
        Ok(())
    }

    fn evict(&self, key: &BlockKey) {
        let removed = {
            let mut state = self.state();
            let removed = state.blocks.pop(key);
            if let Some(entry) = removed {
                state.used -= entry.len;
            }
            removed.is_some()
        };
        if removed {
            self.punch(key);
        }
    }

    /// Clears the block's map byte, then frees its disk space.
    fn punch(&self, key: &BlockKey) {
        let Ok(Some(files)) = self.files(&key.object, None) else {
            return;
        };
        let mut header = [0u8; HEADER as usize];
        let Some(shape) = files
            .map
            .read_exact_at(&mut header, 0)
            .ok()
            .and_then(|_| parse_header(&header))
        else {
            return;
        };
        if files.map.write_all_at(&[0], HEADER + key.block).is_err() {
            return;
        }
        // SAFETY: fallocate on a descriptor we own; KEEP_SIZE leaves the file length alone.
        let rc = unsafe {
            libc::fallocate(
                files.data.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                shape.offset(key.block) as libc::off_t,
                shape.len(key.block) as libc::off_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot punch a hole in the cache file");
        }
    }

    pub fn object_status(&self, object: &ObjectId, shape: BlockShape) -> ObjectCacheStatus {
        let mut status = ObjectCacheStatus {
            blocks_total: shape.blocks(),
            ..Default::default()
        };
        let Ok(map) = fs::read(self.path(object, "map")) else {
            return status;
        };
        if parse_map(&map) != Some(shape) {
            return status;
        }
        for (block, _) in map[HEADER as usize..].iter().enumerate().filter(|(_, &b)| b == 1) {
            status.blocks_cached += 1;
            status.bytes_cached += shape.len(block as u64);
        }
        status.bytes_fetched = u64::from_le_bytes(map[24..32].try_into().expect("8 bytes"));
        status
    }
}

fn make_header(shape: BlockShape) -> [u8; HEADER as usize] {
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&shape.block_size.to_le_bytes());
    header[16..24].copy_from_slice(&shape.object_size.to_le_bytes());
    header
}

fn parse_header(map: &[u8]) -> Option<BlockShape> {
    if map.len() < HEADER as usize || &map[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(map[i..i + 8].try_into().expect("8 bytes"));
    let shape = BlockShape {
        block_size: word(8),
        object_size: word(16),
    };
    (shape.block_size > 0).then_some(shape)
}

/// The shape of a whole map file, if its header is valid and it has a byte for every block.
fn parse_map(map: &[u8]) -> Option<BlockShape> {
    parse_header(map).filter(|shape| map.len() as u64 >= HEADER + shape.blocks())
}

/// Reads exactly `len` bytes at `offset` into a new buffer that is not zeroed first: a block read
/// back for every cold read of a scan made zeroing its buffer a visible share of the daemon's CPU.
fn read_fresh_at(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let at = offset + done as u64;
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        // SAFETY: pread writes at most `spare.len()` bytes into the spare capacity, and only the
        // bytes it reports written are then counted as initialized.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                at as libc::off_t,
            )
        };
        match n {
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            // SAFETY: the kernel initialized these `n` bytes.
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
    }
    Ok(buf)
}
