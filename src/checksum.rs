//! Per-block CRC32C checksums: the only guard between the store's bytes and a reader.
//!
//! object_store does not verify downloads, and a local cache can be torn by a crash, so every block
//! is checked against the checksum recorded at publish time before it is served or cached.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// The CRC32C of `bytes`. Every block is checked on each fetch and each read from the disk
/// cache, so this is on every read path: crc-fast folds with VPCLMULQDQ where the CPU has it and
/// checked cold 256 KiB blocks at ~25 GB/s on the bench machine, against ~14 for the crc32c crate.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

/// A CRC32C over bytes that arrive in parts: the same value [`crc32c`] gives for them joined.
pub struct Crc32c(crc_fast::Digest);

impl Crc32c {
    pub fn new() -> Crc32c {
        Crc32c(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of every part so far; the digest starts again empty.
    pub fn take(&mut self) -> u32 {
        self.0.finalize_reset() as u32
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

/// The CRC32C of each fixed-size block of one file, in block order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockChecksums(Vec<u32>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checksum list {0}")]
pub struct ChecksumFormatError(&'static str);

/// Number of blocks a file of `size` bytes has (the last block may be short; an empty file has none).
pub fn block_count(size: u64, block_size: u64) -> u64 {
    size.div_ceil(block_size)
}

impl BlockChecksums {
    pub fn new(crcs: Vec<u32>) -> Self {
        BlockChecksums(crcs)
    }

    /// Checksums every block of `reader`, returning them with the number of bytes read.
    pub fn compute(mut reader: impl Read, block_size: u64) -> io::Result<(BlockChecksums, u64)> {
        let mut crcs = Vec::new();
        let mut buf = vec![0u8; block_size as usize];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            crcs.push(crc32c(&buf[..n]));
            total += n as u64;
            if n < buf.len() {
                break;
            }
        }
        Ok((BlockChecksums(crcs), total))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, block: u64) -> Option<u32> {
        self.0.get(block as usize).copied()
    }

    /// True when `bytes` is exactly block `block` as published.
    pub fn verify(&self, block: u64, bytes: &[u8]) -> bool {
        self.get(block) == Some(crc32c(bytes))
    }

    /// Eight lower-case hex digits per block: compact in JSON, readable in a terminal.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|crc| format!("{crc:08x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Result<BlockChecksums, ChecksumFormatError> {
        if hex.len() % 8 != 0 {
            return Err(ChecksumFormatError("length is not a multiple of 8 hex digits"));
        }
        let crcs = hex
            .as_bytes()
            .chunks(8)
            .map(|chunk| {
                let text = std::str::from_utf8(chunk).map_err(|_| ChecksumFormatError("is not ASCII"))?;
                u32::from_str_radix(text, 16).map_err(|_| ChecksumFormatError("has a non-hex digit"))
            })
            .collect::<Result<_, _>>()?;
        Ok(BlockChecksums(crcs))
    }

    /// Little-endian bytes, the form the index stores.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|crc| crc.to_le_bytes()).collect()
    }

    pub fn from_le_bytes(bytes: &[u8]) -> Result<BlockChecksums, ChecksumFormatError> {
        if bytes.len() % 4 != 0 {
            return Err(ChecksumFormatError("blob is not a multiple of 4 bytes"));
        }
        Ok(BlockChecksums(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// One number that changes when any block does: part of a cached object's identity.
    pub fn fingerprint(&self) -> u32 {
        crc32c(&self.to_le_bytes())
    }
}

/// What the blocks of one object are checked against before they are served or cached.
#[derive(Debug, Clone)]
pub enum Integrity {
    /// A CRC32C per block, recorded when lazysnap published or backed the file up.
    Published(BlockChecksums),
    /// A foreign object (a ScyllaDB sstable component) with no recorded checksums: every GET is
    /// conditional on the ETag seen at ingest, so the store either serves exactly that version or
    /// fails; each block's CRC32C is learned from its first verified fetch, after which cached
    /// copies are checked against it like published ones.
    Pinned(Pinned),
}

/// The ETag of a pinned object and the checksums learned so far, shared by every live handle on
/// the same object in this process (a restore job and a mount of one view learn together).
#[derive(Debug, Clone)]
pub struct Pinned {
    etag: String,
    learned: Learned,
}

/// The checksums learned of one pinned object, a slot per block, shared by every handle on it.
pub type Learned = Arc<LearnedSlots>;
pub type LearnedSlots = Mutex<Vec<Option<u32>>>;

/// Nothing learned yet of an object of `blocks` blocks.
pub fn unlearned(blocks: u64) -> Learned {
    Arc::new(Mutex::new(vec![None; blocks as usize]))
}

impl Pinned {
    /// A pin on `etag` that learns nothing until given where to (see [`Pinned::learning_into`]).
    pub fn new(etag: &str) -> Pinned {
        Pinned {
            etag: etag.to_string(),
            learned: Arc::default(),
        }
    }

    /// The same pin, learning into `learned`: shared with the other live handles on the object in
    /// this process (a restore job and a mount of one view learn together). What must outlive
    /// the handles is remembered elsewhere (see `fetch::ChecksumRecall`) and recalled into it.
    pub fn learning_into(self, learned: Learned) -> Pinned {
        Pinned {
            etag: self.etag,
            learned,
        }
    }

    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// True when every block's checksum is known.
    pub fn complete(&self) -> bool {
        self.learned().iter().all(Option::is_some)
    }

    /// Adds checksums learned before (by an earlier process), `(block, crc)`; blocks already known
    /// or out of range are left alone.
    pub fn recall(&self, known: &[(u64, u32)]) {
        let mut learned = self.learned();
        for &(block, crc) in known {
            if let Some(slot) = learned.get_mut(block as usize) {
                slot.get_or_insert(crc);
            }
        }
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Vec<Option<u32>>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl From<BlockChecksums> for Integrity {
    fn from(sums: BlockChecksums) -> Self {
        Integrity::Published(sums)
    }
}

impl Integrity {
    /// The checksum block `block` must have, when it is known.
    pub fn get(&self, block: u64) -> Option<u32> {
        match self {
            Integrity::Published(sums) => sums.get(block),
            Integrity::Pinned(pin) => pin.learned().get(block as usize).copied().flatten(),
        }
    }

    /// True when `bytes` is block `block` as known; a block whose checksum is not known yet never
    /// verifies (a local copy of it cannot be trusted).
    pub fn verify(&self, block: u64, bytes: &[u8]) -> bool {
        self.get(block) == Some(crc32c(bytes))
    }

    /// Checks a block just fetched from the store, by the CRC32C of its bytes (taken over the
    /// chunks it arrived in). A pinned object's block was served under its ETag condition: its
    /// first fetch teaches its checksum, later fetches must agree with it.
    pub fn verify_fetched(&self, block: u64, crc: u32) -> bool {
        match self {
            Integrity::Published(sums) => sums.get(block) == Some(crc),
            Integrity::Pinned(pin) => match pin.learned().get_mut(block as usize) {
                Some(slot) => *slot.get_or_insert(crc) == crc,
                None => false,
            },
        }
    }

    /// The ETag every GET of the object must match, for pinned objects.
    pub fn etag(&self) -> Option<&str> {
        match self {
            Integrity::Published(_) => None,
            Integrity::Pinned(pin) => Some(pin.etag()),
        }
    }

    /// Every block's checksum, once all are known.
    pub fn all(&self) -> Option<BlockChecksums> {
        match self {
            Integrity::Published(sums) => Some(sums.clone()),
            Integrity::Pinned(pin) => pin
                .learned()
                .iter()
                .copied()
                .collect::<Option<Vec<_>>>()
                .map(BlockChecksums),
        }
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_one_checksum_per_block_including_a_short_tail() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (sums, total) = BlockChecksums::compute(&data[..], 4096).unwrap();
        assert_eq!(total, 10_000);
        assert_eq!(sums.len(), 3);
        assert!(sums.verify(0, &data[..4096]));
        assert!(sums.verify(2, &data[8192..]));
        assert!(!sums.verify(1, &data[..4096]));
        assert!(!sums.verify(3, &data[..4096]), "a block past the end never verifies");
    }

    #[test]
    fn empty_input_has_no_blocks() {
        let (sums, total) = BlockChecksums::compute(&[][..], 4096).unwrap();
        assert_eq!((sums.len(), total), (0, 0));
        assert_eq!(block_count(0, 4096), 0);
        assert_eq!(block_count(4097, 4096), 2);
    }

    #[test]
    fn encodings_round_trip_and_reject_garbage() {
        let sums = BlockChecksums::new(vec![0, 1, 0xdeadbeef, u32::MAX]);
        assert_eq!(BlockChecksums::from_hex(&sums.to_hex()).unwrap(), sums);
        assert_eq!(BlockChecksums::from_le_bytes(&sums.to_le_bytes()).unwrap(), sums);
        assert!(BlockChecksums::from_hex("123").is_err());
        assert!(BlockChecksums::from_hex("zzzzzzzz").is_err());
        assert!(BlockChecksums::from_le_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn the_checksum_is_crc32c_as_published() {
        // The check value of CRC-32C (iSCSI): what every manifest ever written recorded.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    proptest::proptest! {
        /// Against the reference crate at every length and alignment (the fast path folds 256
        /// bytes at a time and handles heads and tails apart), and in parts as one piece.
        #[test]
        fn agrees_with_the_reference_crc32c_whole_and_in_parts(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..5000),
            skip in 0usize..64,
            cuts in proptest::collection::vec(0usize..5000, 0..6),
        ) {
            let data = &data[skip.min(data.len())..];
            proptest::prop_assert_eq!(crc32c(data), ::crc32c::crc32c(data));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut digest = Crc32c::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                digest.update(&data[from..cut]);
                from = cut;
            }
            proptest::prop_assert_eq!(digest.take(), crc32c(data));
            proptest::prop_assert_eq!(digest.take(), 0, "take starts the digest again empty");
        }
    }
}
