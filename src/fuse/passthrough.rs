//! How each open is answered: through the daemon, or handed to the kernel as a passthrough file
//! reading the verified local copy. The kernel refuses to mix the two on one inode, and every
//! passthrough open of an inode must name the same backing file, so opens are counted per inode:
//! an inode with ordinary opens gets ordinary ones until they close, and the first open of a fully
//! local file decides for the rest. Every open is journaled before it is answered, so a server
//! that takes the connection over continues with the same counts and backing ids.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::abi::fopen;
use super::device::Device;
use super::journal::{Journal, JournalError, OpenEntry};
use crate::fs::{LazyFs, LocalCopy};

#[derive(Debug)]
pub(super) struct Passthrough {
    enabled: AtomicBool,
    inodes: Mutex<HashMap<u64, InodeOpens>>,
}

#[derive(Debug, Default)]
struct InodeOpens {
    ordinary: usize,
    direct: Option<Direct>,
}

#[derive(Debug)]
struct Direct {
    backing: i32,
    handles: HashSet<u64>,
    /// Keeps the cached file whole while the kernel reads it; `None` when a successor found the
    /// copy gone (the kernel holds the file itself, so its reads still see the same bytes).
    _copy: Option<LocalCopy>,
}

/// How one open is answered: FOPEN flags and the backing id (0 for an ordinary open).
pub(super) type Opened = (u32, i32);

impl Passthrough {
    pub fn new(enabled: bool) -> Passthrough {
        Passthrough {
            enabled: AtomicBool::new(enabled),
            inodes: Mutex::default(),
        }
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InodeOpens>> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// Decides how open `fh` of `ino` is answered and journals it.
    pub fn open(
        &self,
        fs: &LazyFs,
        device: &Device,
        journal: &Journal,
        ino: u64,
        fh: u64,
    ) -> Result<Opened, JournalError> {
        let mut inodes = self.inodes();
        let opens = inodes.entry(ino).or_default();
        if self.enabled() && opens.ordinary == 0 {
            if let Some(direct) = &mut opens.direct {
                let backing = direct.backing;
                journal.record(OpenEntry {
                    fh,
                    ino,
                    backing: Some(backing),
                })?;
                direct.handles.insert(fh);
                fs.note_passthrough_open(ino);
                return Ok((fopen::PASSTHROUGH, backing));
            }
            if let Some(copy) = fs.local_copy(ino) {
                match device.backing_open(&copy.file) {
                    Ok(backing) => {
                        let recorded = journal.record(OpenEntry {
                            fh,
                            ino,
                            backing: Some(backing),
                        });
                        if let Err(e) = recorded {
                            device.backing_close(backing);
                            return Err(e);
                        }
                        opens.direct = Some(Direct {
                            backing,
                            handles: HashSet::from([fh]),
                            _copy: Some(copy),
                        });
                        fs.note_passthrough_open(ino);
                        return Ok((fopen::PASSTHROUGH, backing));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the kernel refused a passthrough file; every read goes through the daemon");
                        self.disable();
                    }
                }
            }
        }
        journal.record(OpenEntry { fh, ino, backing: None })?;
        opens.ordinary += 1;
        // Immutable files: keep the page cache across opens.
        Ok((fopen::KEEP_CACHE, 0))
    }

    /// Forgets open `fh` of `ino`; the backing file goes once no open of the inode uses it.
    pub fn release(&self, device: &Device, journal: &Journal, ino: u64, fh: u64) {
        journal.forget(fh);
        let mut inodes = self.inodes();
        let Some(opens) = inodes.get_mut(&ino) else { return };
        let was_direct = opens.direct.as_mut().is_some_and(|d| d.handles.remove(&fh));
        if !was_direct {
            opens.ordinary = opens.ordinary.saturating_sub(1);
        } else if opens.direct.as_ref().is_some_and(|d| d.handles.is_empty()) {
            if let Some(direct) = opens.direct.take() {
                device.backing_close(direct.backing);
            }
        }
        if opens.ordinary == 0 && opens.direct.is_none() {
            inodes.remove(&ino);
        }
    }

    /// Takes over the opens a previous server journaled. Local copies that passthrough opens read
    /// are pinned again at once, before anything could evict them.
    pub fn adopt(&self, fs: &LazyFs, entries: &[OpenEntry]) {
        let mut inodes = self.inodes();
        for entry in entries {
            let opens = inodes.entry(entry.ino).or_default();
            match entry.backing {
                None => opens.ordinary += 1,
                Some(backing) => {
                    let direct = opens.direct.get_or_insert_with(|| Direct {
                        backing,
                        handles: HashSet::new(),
                        _copy: fs.held_local_copy(entry.ino),
                    });
                    direct.handles.insert(entry.fh);
                }
            }
        }
    }
}
