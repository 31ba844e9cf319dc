//! What this process learned of pinned objects, shared by every live handle on the same object:
//! a mount and a restore of one view reading one sstable learn its checksums once.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use super::ObjectId;
use crate::checksum::{self, Learned, LearnedSlots};

#[derive(Debug, Default)]
pub struct Learning {
    /// By object and block size.
    live: Mutex<HashMap<(ObjectId, u64), Weak<LearnedSlots>>>,
}

impl Learning {
    /// The learned checksums of `object` read in blocks of `block_size` (`blocks` of them), shared
    /// with every handle on it that is still alive. They live as long as one does.
    pub fn shared(&self, object: ObjectId, block_size: u64, blocks: u64) -> Learned {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(learned) = live.get(&(object, block_size)).and_then(Weak::upgrade) {
            return learned;
        }
        let learned = checksum::unlearned(blocks);
        live.insert((object, block_size), std::sync::Arc::downgrade(&learned));
        // Amortized: entries of objects no handle holds any more are dropped as the map doubles.
        if live.len() >= 64 && live.len().is_power_of_two() {
            live.retain(|_, learned| learned.strong_count() > 0);
        }
        learned
    }
}
