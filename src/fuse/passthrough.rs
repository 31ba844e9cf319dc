//! Which opens the kernel serves itself from a local copy (FUSE passthrough). The kernel refuses to
//! mix passthrough and ordinary opens of one inode, and every passthrough open of an inode must
//! name the same backing file, so opens are counted per inode: an inode with ordinary opens gets
//! ordinary ones until they close, and the first open of a fully local file decides for the rest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};

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
    // Dropped before the copy: the kernel lets go of the file, then eviction may touch it.
    backing: BackingId,
    handles: HashSet<u64>,
    _copy: LocalCopy,
}

impl Passthrough {
    pub fn new(enabled: bool) -> Passthrough {
        Passthrough {
            enabled: AtomicBool::new(enabled),
            inodes: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// Answers the open of `handle` on `ino`, through the local copy when the rules allow.
    pub fn reply_open(&self, fs: &LazyFs, ino: u64, handle: u64, reply: ReplyOpen) {
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        let opens = inodes.entry(ino).or_default();
        if self.enabled() && opens.ordinary == 0 {
            if let Some(direct) = &mut opens.direct {
                direct.handles.insert(handle);
                fs.count_passthrough_open();
                return reply.opened_passthrough(FileHandle(handle), FopenFlags::empty(), &direct.backing);
            }
            if let Some(copy) = fs.local_copy(ino) {
                match reply.open_backing(&copy.file) {
                    Ok(backing) => {
                        let direct = opens.direct.insert(Direct {
                            backing,
                            handles: HashSet::from([handle]),
                            _copy: copy,
                        });
                        fs.count_passthrough_open();
                        return reply.opened_passthrough(FileHandle(handle), FopenFlags::empty(), &direct.backing);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the kernel refused a passthrough file; every read goes through the daemon");
                        self.disable();
                    }
                }
            }
        }
        opens.ordinary += 1;
        // Immutable files: keep the page cache across opens.
        reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE);
    }

    pub fn release(&self, ino: u64, handle: u64) {
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(opens) = inodes.get_mut(&ino) else { return };
        let was_direct = opens.direct.as_mut().is_some_and(|d| d.handles.remove(&handle));
        if !was_direct {
            opens.ordinary = opens.ordinary.saturating_sub(1);
        } else if opens.direct.as_ref().is_some_and(|d| d.handles.is_empty()) {
            opens.direct = None;
        }
        if opens.ordinary == 0 && opens.direct.is_none() {
            inodes.remove(&ino);
        }
    }
}
