//! One block-sized piece of a ranged read, kept as the body chunks it arrived in.
//!
//! Joining chunks into one buffer copies every byte once more. A piece bound only for the disk
//! cache (a hydration's) is checked and written from its chunks as they are; only a piece that a
//! reader or the memory tier holds is joined, into a buffer of the pool.

use bytes::Bytes;

use super::BlockBuffers;
use crate::checksum::{self, Crc32c};

#[derive(Debug, Clone, Default)]
pub struct Piece {
    parts: Vec<Bytes>,
    len: usize,
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

    /// The piece as one buffer: its only chunk as it is, else the chunks copied into a buffer
    /// from `buffers` (so a cached block holds no more memory than its own bytes).
    pub fn join(self, buffers: &BlockBuffers) -> Bytes {
        match <[Bytes; 1]>::try_from(self.parts) {
            Ok([one]) => one,
            Err(parts) => {
                let mut buffer = buffers.take_empty(self.len);
                parts.iter().for_each(|part| buffer.extend_from_slice(part));
                buffer.freeze()
            }
        }
    }
}

impl From<Bytes> for Piece {
    fn from(bytes: Bytes) -> Piece {
        Piece {
            len: bytes.len(),
            parts: vec![bytes],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_parts(bytes: &[u8], cuts: &[usize]) -> Piece {
        let mut piece = Piece::default();
        let mut from = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            piece.push(Bytes::copy_from_slice(&bytes[from..cut]));
            from = cut;
        }
        piece
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
    fn a_piece_of_one_chunk_joins_without_a_copy() {
        let bytes = Bytes::from(vec![7u8; 4096]);
        let buffers = BlockBuffers::new(1 << 20);
        let joined = Piece::from(bytes.clone()).join(&buffers);
        assert_eq!(joined.as_ptr(), bytes.as_ptr(), "the same buffer, not a copy");
        assert_eq!(buffers.stats().allocated, 0);
    }
}
