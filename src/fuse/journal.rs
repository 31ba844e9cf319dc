//! Which files the kernel holds open on one connection, kept in a shared file mapping so that it
//! outlives the process: a server that takes a connection over must know every open handle (reads
//! name them) and how each inode is open, because the kernel refuses to mix passthrough and
//! ordinary opens of one inode and fails such an open with EIO.
//!
//! Each open is one slot of 32 bytes: `fh`, `ino`, `backing` (the passthrough backing id, 0 for
//! an ordinary open) and a spare word. A slot is written before the kernel hears of the open and
//! cleared before its release is answered; `fh` is stored last and cleared first, so a process
//! that dies mid-way leaves either a whole slot or a free one. A slot whose open never reached the
//! kernel (the server died before answering) stays until the connection ends: its inode is then
//! treated as open, which only ever withholds passthrough, never bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use memmap2::MmapMut;

const SLOT: usize = 32;
/// The file starts with room for this many opens and doubles as they grow.
const INITIAL_SLOTS: usize = 128;

/// One open file handle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenEntry {
    pub fh: u64,
    pub ino: u64,
    /// The passthrough backing file the open reads from, if it is one.
    pub backing: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{0} files are open on this mount, its limit")]
    Full(usize),
    #[error("open-file journal: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
pub struct Journal {
    inner: Mutex<Inner>,
    max_slots: usize,
    path: std::path::PathBuf,
}

#[derive(Debug)]
struct Inner {
    map: MmapMut,
    free: Vec<usize>,
    by_fh: HashMap<u64, usize>,
}

impl Journal {
    /// A new, empty journal at `path` (replacing any file there).
    pub fn create(path: &Path, max_open: usize) -> Result<Journal, JournalError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len((INITIAL_SLOTS * SLOT) as u64)?;
        Self::from_file(file, path, max_open).map(|(journal, _)| journal)
    }

    /// The journal a previous server of the connection kept, with the opens it records.
    pub fn open(path: &Path, max_open: usize) -> Result<(Journal, Vec<OpenEntry>), JournalError> {
        let file = File::options().read(true).write(true).open(path)?;
        Self::from_file(file, path, max_open)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn from_file(file: File, path: &Path, max_open: usize) -> Result<(Journal, Vec<OpenEntry>), JournalError> {
        let len = file.metadata()?.len() as usize;
        if len == 0 || len % SLOT != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("journal of {len} bytes is not whole slots"),
            )
            .into());
        }
        // SAFETY: the file is this connection's alone; other processes only read it after the
        // writer is gone, and every access goes through atomics.
        let map = unsafe { MmapMut::map_mut(&file)? };
        // The mapping keeps the file; the descriptor goes (a daemon holds thousands of these).
        drop(file);
        let mut inner = Inner {
            map,
            free: Vec::new(),
            by_fh: HashMap::new(),
        };
        let mut entries = Vec::new();
        for slot in (0..len / SLOT).rev() {
            let fh = inner.word(slot, 0).load(Ordering::Acquire);
            if fh == 0 {
                inner.free.push(slot);
                continue;
            }
            let backing = inner.word(slot, 2).load(Ordering::Relaxed) as i64 as i32;
            entries.push(OpenEntry {
                fh,
                ino: inner.word(slot, 1).load(Ordering::Relaxed),
                backing: (backing != 0).then_some(backing),
            });
            inner.by_fh.insert(fh, slot);
        }
        entries.reverse();
        let journal = Journal {
            inner: Mutex::new(inner),
            max_slots: max_open.max(1),
            path: path.to_path_buf(),
        };
        Ok((journal, entries))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an open before the kernel hears of it.
    pub fn record(&self, entry: OpenEntry) -> Result<(), JournalError> {
        debug_assert_ne!(entry.fh, 0, "handle 0 marks a free slot");
        let mut inner = self.lock();
        let slot = match inner.free.pop() {
            Some(slot) => slot,
            None => inner.grow(&self.path, self.max_slots)?,
        };
        inner.word(slot, 1).store(entry.ino, Ordering::Relaxed);
        inner
            .word(slot, 2)
            .store(entry.backing.unwrap_or(0) as i64 as u64, Ordering::Relaxed);
        inner.word(slot, 0).store(entry.fh, Ordering::Release);
        inner.by_fh.insert(entry.fh, slot);
        Ok(())
    }

    /// Forgets a released open; releasing one that was never recorded changes nothing.
    pub fn forget(&self, fh: u64) {
        let mut inner = self.lock();
        if let Some(slot) = inner.by_fh.remove(&fh) {
            inner.word(slot, 0).store(0, Ordering::Release);
            inner.free.push(slot);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_fh.len()
    }
}

impl Inner {
    fn word(&self, slot: usize, index: usize) -> &AtomicU64 {
        let offset = slot * SLOT + index * 8;
        let bytes = &self.map[offset..offset + 8];
        // SAFETY: in bounds (sliced above), 8-byte aligned (the map is page aligned and slots
        // are 32 bytes), and this mapping is only ever accessed through atomics.
        unsafe { &*(bytes.as_ptr() as *const AtomicU64) }
    }

    fn slots(&self) -> usize {
        self.map.len() / SLOT
    }

    /// Doubles the file (up to `max` slots) and answers a free slot.
    fn grow(&mut self, path: &Path, max: usize) -> Result<usize, JournalError> {
        let old = self.slots();
        if old >= max {
            return Err(JournalError::Full(old));
        }
        let new = (old * 2).min(max);
        let file = File::options().read(true).write(true).open(path)?;
        file.set_len((new * SLOT) as u64)?;
        // SAFETY: as in `from_file`; the old mapping is dropped once replaced.
        self.map = unsafe { MmapMut::map_mut(&file)? };
        self.free.extend((old + 1..new).rev());
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fh: u64, ino: u64, backing: Option<i32>) -> OpenEntry {
        OpenEntry { fh, ino, backing }
    }

    #[test]
    fn a_successor_finds_every_open_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.opens");
        let journal = Journal::create(&path, 1 << 16).unwrap();
        for fh in 1..=300u64 {
            journal
                .record(entry(fh, fh + 1000, (fh % 3 == 0).then_some(fh as i32)))
                .unwrap();
        }
        for fh in (1..=300u64).filter(|fh| fh % 2 == 0) {
            journal.forget(fh);
        }
        journal.forget(9999);
        // Dropped without any cleanup, as a killed process would leave it.
        drop(journal);
        let (journal, entries) = Journal::open(&path, 1 << 16).unwrap();
        let mut found: Vec<OpenEntry> = entries;
        found.sort_by_key(|e| e.fh);
        let expected: Vec<OpenEntry> = (1..=300u64)
            .filter(|fh| fh % 2 == 1)
            .map(|fh| entry(fh, fh + 1000, (fh % 3 == 0).then_some(fh as i32)))
            .collect();
        assert_eq!(found, expected);
        // Freed slots are used again before the file grows.
        let size = std::fs::metadata(&path).unwrap().len();
        for fh in 1000..1150u64 {
            journal.record(entry(fh, 1, None)).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        assert_eq!(journal.len(), 300);
    }

    #[test]
    fn opens_beyond_the_limit_are_refused_and_nothing_else_changes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(&dir.path().join("c.opens"), 200).unwrap();
        for fh in 1..=200u64 {
            journal.record(entry(fh, 2, None)).unwrap();
        }
        assert!(matches!(
            journal.record(entry(201, 2, None)),
            Err(JournalError::Full(200))
        ));
        journal.forget(5);
        journal.record(entry(201, 2, None)).unwrap();
        assert_eq!(journal.len(), 200);
    }

    #[test]
    fn a_file_that_is_not_whole_slots_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.opens");
        std::fs::write(&path, [1u8; 33]).unwrap();
        assert!(Journal::open(&path, 10).is_err());
    }
}
