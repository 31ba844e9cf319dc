//! One block-sized piece of a ranged read, kept as the body chunks it arrived in.
//!
//! Joining chunks into one buffer copies every byte once more. A piece bound only for the disk
//! cache (a hydration's) is checked and written from its chunks as they are; only a piece that a
//! reader or the memory tier holds is joined, into a buffer of the pool.
//!
//! Unjoined chunks are the HTTP client's memory, not the pool's: the fetch budget still bounds
//! them (a run holds its share until its blocks are written), but the pool's live bytes
//! ([`super::BufferStats`]) do not count them.

use std::fs::File;
use std::io;

use bytes::Bytes;

use super::BlockBuffers;
use crate::checksum::{self, Crc32c};

#[derive(Debug, Clone, Default)]
pub struct Piece {
    parts: Vec<Bytes>,
    len: usize,
    /// Made from one buffer that holds nothing else (a pool buffer, a primed block). A body
    /// chunk is a slice of the HTTP client's read buffer, which may hold other blocks' bytes too.
    own_buffer: bool,
}

impl Piece {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in order, in the chunks they came in.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    pub(super) fn push(&mut self, part: Bytes) {
        self.len += part.len();
        self.parts.push(part);
        self.own_buffer = false;
    }

    /// The CRC32C of the whole piece.
    pub fn crc32c(&self) -> u32 {
        match self.parts.as_slice() {
            [one] => checksum::crc32c(one),
            parts => {
                let mut digest = Crc32c::new();
                parts.iter().for_each(|part| digest.update(part));
                digest.take()
            }
        }
    }

    /// The piece as one buffer: a buffer of its own as it is, else its chunks copied into a buffer
    /// from `buffers`, so a cached block holds no more memory than its own bytes. Even a block
    /// that came in one chunk is copied: that chunk shares the client's read buffer with the next
    /// block's bytes, and the memory tier would count only the slice.
    pub fn join(mut self, buffers: &BlockBuffers) -> Bytes {
        if self.own_buffer && self.parts.len() == 1 {
            return self.parts.pop().expect("one part");
        }
        let mut buffer = buffers.take_empty(self.len);
        self.parts.iter().for_each(|part| buffer.extend_from_slice(part));
        buffer.freeze()
    }

    /// Writes the piece into `file` from `offset`, with as few `pwritev` calls as the kernel takes
    /// (a block arrives in a few dozen chunks: a write per chunk would multiply the calls).
    pub fn write_all_at(&self, file: &File, mut offset: u64) -> io::Result<()> {
        /// Linux's IOV_MAX: the most slices one call takes.
        const MAX_SLICES: usize = 1024;
        let mut left: Vec<&[u8]> = self
            .parts
            .iter()
            .map(|part| &part[..])
            .filter(|part| !part.is_empty())
            .collect();
        let mut first = 0;
        while first < left.len() {
            let slices: Vec<io::IoSlice<'_>> = left[first..]
                .iter()
                .take(MAX_SLICES)
                .map(|part| io::IoSlice::new(part))
                .collect();
            let mut written = match nix::sys::uio::pwritev(file, &slices, offset as libc::off_t) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            offset += written as u64;
            while written > 0 {
                let part = left[first];
                if written >= part.len() {
                    written -= part.len();
                    first += 1;
                } else {
                    left[first] = &part[written..];
                    written = 0;
                }
            }
        }
        Ok(())
    }
}

impl FromIterator<Bytes> for Piece {
    fn from_iter<I: IntoIterator<Item = Bytes>>(parts: I) -> Piece {
        let mut piece = Piece::default();
        parts.into_iter().for_each(|part| piece.push(part));
        piece
    }
}

impl From<Bytes> for Piece {
    fn from(bytes: Bytes) -> Piece {
        Piece {
            len: bytes.len(),
            parts: vec![bytes],
            own_buffer: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_parts(bytes: &[u8], cuts: &[usize]) -> Piece {
        let mut from = 0;
        let mut part = |cut: usize| {
            let part = Bytes::copy_from_slice(&bytes[from..cut]);
            from = cut;
            part
        };
        cuts.iter().chain([&bytes.len()]).map(|&cut| part(cut)).collect()
    }

    #[test]
    fn a_piece_in_chunks_checks_and_joins_as_the_bytes_it_holds() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let buffers = BlockBuffers::new(1 << 20);
        for cuts in [&[][..], &[1], &[4096, 4097, 9000], &[0, 0, 10_000]] {
            let piece = in_parts(&bytes, cuts);
            assert_eq!(piece.len(), bytes.len());
            assert_eq!(piece.parts().len(), cuts.len() + 1);
            assert_eq!(piece.crc32c(), checksum::crc32c(&bytes), "cut at {cuts:?}");
            assert_eq!(&piece.join(&buffers)[..], &bytes[..], "cut at {cuts:?}");
        }
    }

    #[test]
    fn a_streamed_chunk_is_copied_when_joined_even_alone() {
        // One chunk read with the start of the next block: the joined block must not keep it.
        let read = Bytes::from(vec![3u8; 8192]);
        let buffers = BlockBuffers::new(1 << 20);
        let piece: Piece = [read.slice(..4096)].into_iter().collect();
        let joined = piece.join(&buffers);
        assert_eq!(&joined[..], &read[..4096]);
        assert_ne!(joined.as_ptr(), read.as_ptr(), "a copy, not a slice of the read buffer");
    }

    #[test]
    fn a_piece_of_one_buffer_joins_without_a_copy() {
        let bytes = Bytes::from(vec![7u8; 4096]);
        let buffers = BlockBuffers::new(1 << 20);
        let joined = Piece::from(bytes.clone()).join(&buffers);
        assert_eq!(joined.as_ptr(), bytes.as_ptr(), "the same buffer, not a copy");
        assert_eq!(buffers.stats().allocated, 0);
    }
}
