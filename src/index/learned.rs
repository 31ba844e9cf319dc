//! Checksums learned of pinned objects (see `checksum::Integrity::Pinned`), kept across restarts.
//! Rows hold [`CHUNK`] blocks each, so remembering a run rewrites a few kilobytes however large the
//! object is.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::{Index, IndexError, Result};
use crate::cache::ObjectId;
use crate::fetch::{ChecksumRecall, RecallError};

const CHUNK: u64 = 1024;

impl Index {
    /// The `(block, crc)` pairs learned of `object` read in blocks of `block_size`, in block order.
    pub fn learned_checksums(&self, object: &ObjectId, block_size: u64) -> Result<Vec<(u64, u32)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT chunk, known, crcs FROM learned_checksums WHERE object = ?1 AND block_size = ?2 ORDER BY chunk",
        )?;
        let rows = stmt.query_map(params![&object.as_bytes()[..], block_size as i64], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut learned = Vec::new();
        for row in rows {
            let (chunk, known, crcs) = row?;
            if crcs.len() != known.len() * 4 {
                return Err(IndexError::Corrupt(format!(
                    "learned checksums of object {} chunk {chunk}: {} flags, {} checksum bytes",
                    object.hex(),
                    known.len(),
                    crcs.len()
                )));
            }
            for (i, _) in known.iter().enumerate().filter(|(_, &k)| k == 1) {
                let crc = u32::from_le_bytes(crcs[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
                learned.push((chunk * CHUNK + i as u64, crc));
            }
        }
        Ok(learned)
    }

    /// Adds `(block, crc)` pairs to what is learned of `object`, in one transaction. A block
    /// already known keeps its first checksum: it was learned from the same pinned version.
    pub fn remember_checksums(&self, object: &ObjectId, block_size: u64, learned: &[(u64, u32)]) -> Result<()> {
        let mut chunks: BTreeMap<u64, Vec<(usize, u32)>> = BTreeMap::new();
        for &(block, crc) in learned {
            chunks
                .entry(block / CHUNK)
                .or_default()
                .push(((block % CHUNK) as usize, crc));
        }
        let id = &object.as_bytes()[..];
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (chunk, blocks) in chunks {
            let (mut known, mut crcs): (Vec<u8>, Vec<u8>) = tx
                .prepare_cached(
                    "SELECT known, crcs FROM learned_checksums WHERE object = ?1 AND block_size = ?2 AND chunk = ?3",
                )?
                .query_row(params![id, block_size as i64, chunk as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?
                .unwrap_or_default();
            for (i, crc) in blocks {
                if known.len() <= i {
                    known.resize(i + 1, 0);
                    crcs.resize((i + 1) * 4, 0);
                }
                if known[i] != 1 {
                    known[i] = 1;
                    crcs[i * 4..i * 4 + 4].copy_from_slice(&crc.to_le_bytes());
                }
            }
            tx.prepare_cached(
                "INSERT INTO learned_checksums (object, block_size, chunk, known, crcs) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (object, block_size, chunk) DO UPDATE SET known = excluded.known, crcs = excluded.crcs",
            )?
            .execute(params![id, block_size as i64, chunk as i64, known, crcs])?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl ChecksumRecall for Index {
    fn recall(&self, object: &ObjectId, block_size: u64) -> std::result::Result<Vec<(u64, u32)>, RecallError> {
        Ok(self.learned_checksums(object, block_size)?)
    }

    fn remember(
        &self,
        object: &ObjectId,
        block_size: u64,
        learned: &[(u64, u32)],
    ) -> std::result::Result<(), RecallError> {
        Ok(self.remember_checksums(object, block_size, learned)?)
    }
}
