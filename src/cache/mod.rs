//! The block cache: verified blocks of immutable objects, shared by every mount and command on a node.
//!
//! Blocks are keyed by object identity ([`ObjectId`]: store, key, size and checksums) and block
//! number, so a changed object can never be served from an old entry. Two tiers:
//! - [`memory`]: an LRU of blocks under a byte cap;
//! - [`disk`]: one sparse file per object plus a persistent map of the blocks present, under a byte
//!   quota, evicting least-recently-used blocks by punching holes. It survives restarts.
//!
//! The cache never trusts itself: a disk block is checked against its CRC32C on every read, so a torn
//! write after a crash, or a block evicted by another process mid-read, is a miss, never wrong bytes.
//! Only one process on a node writes the disk tier (an exclusive lock on its folder); others read it.

mod disk;
mod learning;
mod memory;
mod pins;

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;

use crate::checksum::Integrity;
use crate::store::{Piece, StoreUrl};

pub use disk::{CompleteCopy, DiskCache};
pub use learning::Learning;
pub use memory::MemoryCache;
pub use pins::Pin;

/// The identity of one immutable object's content: 128 bits of BLAKE3 over where it lives and what
/// its blocks are. Etags are used only for objects lazysnap did not write (and so has no checksums
/// of): a local store's etag changes when its directory is copied.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 16]);

impl ObjectId {
    pub fn new(store: &StoreUrl, key: &str, size: u64, integrity: &Integrity) -> ObjectId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(store.to_string().as_bytes());
        hasher.update(&[0]);
        hasher.update(key.as_bytes());
        hasher.update(&[0]);
        hasher.update(&size.to_le_bytes());
        match integrity {
            Integrity::Published(checksums) => hasher.update(&checksums.to_le_bytes()),
            // A pinned object is what its ETag names (etags are unique per version in one store).
            Integrity::Pinned(pin) => hasher.update(b"\0etag\0").update(pin.etag().as_bytes()),
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        ObjectId(id)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<ObjectId> {
        if hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ObjectId(id))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.hex())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub object: ObjectId,
    pub block: u64,
}

/// Where one block sits in its object: enough for the disk tier to place and size it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    pub block_size: u64,
    pub object_size: u64,
}

impl BlockShape {
    pub fn offset(&self, block: u64) -> u64 {
        block * self.block_size
    }

    pub fn len(&self, block: u64) -> u64 {
        self.block_size.min(self.object_size.saturating_sub(self.offset(block)))
    }

    pub fn blocks(&self) -> u64 {
        crate::checksum::block_count(self.object_size, self.block_size)
    }

    /// The bytes of the object that a run of blocks covers (`blocks` must not be empty).
    pub fn byte_range(&self, blocks: std::ops::Range<u64>) -> std::ops::Range<u64> {
        self.offset(blocks.start)..self.offset(blocks.end - 1) + self.len(blocks.end - 1)
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes of blocks kept in memory.
    pub memory_bytes: u64,
    /// Folder of the disk tier; `None` keeps blocks in memory only.
    pub disk_dir: Option<PathBuf>,
    /// Bytes of blocks the disk tier may hold.
    pub disk_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: 256 << 20,
            disk_dir: None,
            disk_bytes: 10 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("block cache folder {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub disk_quota: u64,
    pub disk_writable: bool,
    /// Lookups answered from memory, from disk, and by neither (then fetched), ever.
    #[serde(default)]
    pub memory_hits: u64,
    #[serde(default)]
    pub disk_hits: u64,
    #[serde(default)]
    pub misses: u64,
    /// Blocks dropped to stay within the memory cap and the disk quota, ever.
    #[serde(default)]
    pub memory_evictions: u64,
    #[serde(default)]
    pub disk_evictions: u64,
}

/// Lookups by outcome.
#[derive(Debug, Default)]
struct Lookups {
    memory_hits: std::sync::atomic::AtomicU64,
    disk_hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// What is known locally about one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCacheStatus {
    pub blocks_cached: u64,
    pub blocks_total: u64,
    pub bytes_cached: u64,
    pub bytes_fetched: u64,
}

#[derive(Debug)]
pub struct BlockCache {
    memory: MemoryCache,
    disk: Option<DiskCache>,
    learning: Learning,
    lookups: Lookups,
}

impl BlockCache {
    pub fn new(config: &CacheConfig) -> Result<BlockCache, CacheError> {
        let disk = match &config.disk_dir {
            Some(dir) => Some(DiskCache::open(dir, config.disk_bytes)?),
            None => None,
        };
        Ok(BlockCache {
            memory: MemoryCache::new(config.memory_bytes),
            disk,
            learning: Learning::default(),
            lookups: Lookups::default(),
        })
    }

    /// What this process learned of pinned objects, shared by every handle reading through this
    /// cache (one cache per process).
    pub fn learning(&self) -> &Learning {
        &self.learning
    }

    /// The block if a tier holds it with the expected checksum; a disk hit is promoted to memory.
    pub fn get(&self, key: &BlockKey, shape: BlockShape, crc: u32) -> Option<Bytes> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(bytes) = self.memory.get(key) {
            self.lookups.memory_hits.fetch_add(1, Relaxed);
            return Some(bytes);
        }
        let Some(bytes) = self.disk.as_ref().and_then(|d| d.get(key, shape, crc)) else {
            self.lookups.misses.fetch_add(1, Relaxed);
            return None;
        };
        self.lookups.disk_hits.fetch_add(1, Relaxed);
        self.memory.insert(*key, bytes.clone());
        Some(bytes)
    }

    /// Stores a block that has been verified. `fetched` counts it as bytes fetched from the store.
    /// `bytes` should own its buffer: a slice of a larger one would keep all of it alive while
    /// the memory tier counts only the slice (the fetcher reads each block into its own buffer).
    pub fn insert(&self, key: BlockKey, shape: BlockShape, bytes: Bytes, fetched: bool) {
        self.insert_disk(key, shape, &Piece::from(bytes.clone()), fetched);
        self.insert_memory(key, bytes);
    }

    /// The memory half of [`BlockCache::insert`]: cheap, fit for an async worker.
    pub fn insert_memory(&self, key: BlockKey, bytes: Bytes) {
        self.memory.insert(key, bytes);
    }

    /// Blocks a scan has read past go first when the memory tier needs room. In LRU order they
    /// would outlive the blocks its readahead fetched and it has yet to read, which it would then
    /// read back from the disk tier.
    pub fn demote(&self, keys: impl IntoIterator<Item = BlockKey>) {
        self.memory.demote(keys);
    }

    /// The disk half of [`BlockCache::insert`]: file writes, for a blocking thread. The block may
    /// be in the chunks it arrived in.
    pub fn insert_disk(&self, key: BlockKey, shape: BlockShape, piece: &Piece, fetched: bool) {
        if let Some(disk) = &self.disk {
            disk.insert(key, shape, piece, fetched);
        }
    }

    /// Bytes the memory tier holds at most.
    pub fn memory_cap(&self) -> u64 {
        self.memory.cap()
    }

    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// True when the block is present in a tier (not verified; for planning fetches and progress).
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.memory.contains(key) || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// The object's complete copy in the disk tier, pinned there (see [`DiskCache::complete_copy`]).
    pub fn complete_copy(&self, object: &ObjectId, shape: BlockShape) -> Option<CompleteCopy> {
        self.disk.as_ref()?.complete_copy(object, shape)
    }

    /// Checks a block in the disk tier against its checksum (see [`DiskCache::verify_block`]).
    pub fn verify_on_disk(&self, key: &BlockKey, shape: BlockShape, crc: u32) -> bool {
        self.disk.as_ref().is_some_and(|d| d.verify_block(key, shape, crc))
    }

    pub fn object_status(&self, object: &ObjectId, shape: BlockShape) -> ObjectCacheStatus {
        let mut status = match &self.disk {
            Some(disk) => disk.object_status(object, shape),
            None => ObjectCacheStatus::default(),
        };
        status.blocks_total = shape.blocks();
        if self.disk.is_none() {
            for block in 0..shape.blocks() {
                if self.memory.contains(&BlockKey { object: *object, block }) {
                    status.blocks_cached += 1;
                    status.bytes_cached += shape.len(block);
                }
            }
        }
        status
    }

    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut stats = CacheStats {
            memory_bytes: self.memory.used(),
            memory_hits: self.lookups.memory_hits.load(Relaxed),
            disk_hits: self.lookups.disk_hits.load(Relaxed),
            misses: self.lookups.misses.load(Relaxed),
            memory_evictions: self.memory.evictions(),
            ..Default::default()
        };
        if let Some(disk) = &self.disk {
            stats.disk_evictions = disk.evictions();
            stats.disk_bytes = disk.used();
            stats.disk_quota = disk.quota();
            stats.disk_writable = disk.writable();
        }
        stats
    }
}

#[cfg(test)]
mod tests;
