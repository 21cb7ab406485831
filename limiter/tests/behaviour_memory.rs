//! The store behaviour suite on the in-memory store.

use std::sync::Arc;

use sluice_limiter::{
    clock::ManualClock,
    store::{MemoryStore, MemoryStoreConfig},
};

async fn memory_store(clock: ManualClock) -> MemoryStore {
    MemoryStore::with_clock(MemoryStoreConfig::default(), Arc::new(clock))
}

sluice_limiter::behaviour_suite!(memory_store);
