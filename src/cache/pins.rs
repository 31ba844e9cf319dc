//! Objects that eviction must leave whole: the kernel reads a passthrough file straight from the
//! disk tier, so a hole punched under it would read as zeros instead of failing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ObjectId;

#[derive(Debug, Clone, Default)]
pub(crate) struct Pins(Arc<Mutex<HashMap<ObjectId, usize>>>);

impl Pins {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pin(&self, object: ObjectId) -> Pin {
        *self.map().entry(object).or_default() += 1;
        Pin {
            pins: self.clone(),
            object,
        }
    }

    pub fn contains(&self, object: &ObjectId) -> bool {
        self.map().contains_key(object)
    }
}

/// Keeps one object out of eviction until dropped.
#[derive(Debug)]
pub struct Pin {
    pins: Pins,
    object: ObjectId,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut map = self.pins.map();
        if let Some(count) = map.get_mut(&self.object) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.object);
            }
        }
    }
}
