//! Test doubles beside the store (built for unit tests and with the `testing` feature, never in a
//! shipped binary): `test://name` stores that live in the process, a store wrapper that counts
//! what is read so a test need not trust lazysnap's own counters, and one that injects faults.

mod counting;
mod faulty;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::memory::InMemory;
use object_store::ObjectStore;

pub use counting::{CountingStore, GetCounters};
pub use faulty::{Fault, FaultPlan, FaultSwitch, Faults, FaultyStore, Injected};

use super::Store;

/// `test://name` stores live as long as the process, so two opens of one name see the same data.
pub(super) fn in_process_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap();
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// The same store seen through a [`CountingStore`], and its counters.
pub fn counted(store: &Store) -> (Store, Arc<GetCounters>) {
    let (counting, counters) = CountingStore::new(store.object_store().clone());
    (
        Store::from_object_store(store.url().clone(), Arc::new(counting)),
        counters,
    )
}
