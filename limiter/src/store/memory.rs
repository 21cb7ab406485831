//! The embedded store: counters in this process's memory.
//!
//! Counters live in a fixed number of shards, each a hash map behind its own
//! lock, so that concurrent checks of different counters rarely wait on
//! each other. A check locks the shards of its counters in index order (no
//! deadlock), decides, and writes, so that the all-or-nothing rule holds
//! under concurrency.
//!
//! The store is bounded in entries. A counter whose two windows are over is
//! worth nothing and is dropped by [`MemoryStore::sweep`] or when its shard
//! needs room. When a shard is full of live counters, a new counter evicts
//! the one that would expire soonest among a small sample; the evicted
//! counter's owner starts from zero, so under a flood of distinct ids the
//! store may admit up to one more window of requests for the evicted
//! partitions. Precision degrades; memory and availability do not.

use std::{
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard};

use super::{CounterSpec, Outcome, Store, StoreError};
use crate::{
    clock::{Clock, SystemClock},
    policy::CounterKey,
    window::{Counter, Snapshot},
};

/// How many entries a full shard samples to pick one to evict.
const EVICTION_SAMPLE: usize = 8;

/// Sizing of a [`MemoryStore`].
#[derive(Clone, Copy, Debug)]
pub struct MemoryStoreConfig {
    /// The most counters held at once, over all shards.
    pub max_counters: usize,
    /// The number of shards, rounded up to a power of two.
    pub shards: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_counters: 1_000_000,
            shards: 64,
        }
    }
}

/// A counter as stored: 40 bytes with its key.
#[derive(Clone, Copy, Debug)]
struct Slot {
    start_ms: u64,
    prev: u32,
    cur: u32,
    window_ms: u32,
}

impl Slot {
    fn counter(&self) -> Counter {
        Counter {
            start_ms: self.start_ms,
            prev: self.prev.into(),
            cur: self.cur.into(),
        }
    }

    fn expires_at(&self) -> u64 {
        self.start_ms.saturating_add(2 * u64::from(self.window_ms))
    }
}

/// Keys are already uniform digests: their first eight bytes are the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

type Shard = HashMap<CounterKey, Slot, BuildHasherDefault<DigestHasher>>;

/// The in-memory store. Cheap to clone; clones share counters.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    /// The bytes of one counter's key and value as a shard lays them out,
    /// before the map's own overhead (a control byte per bucket, and the
    /// buckets kept free so that lookups stay short).
    pub const ENTRY_BYTES: usize = size_of::<(CounterKey, Slot)>();

    /// A store on the system clock.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A store on the given clock.
    pub fn with_clock(config: MemoryStoreConfig, clock: Arc<dyn Clock>) -> Self {
        let mut shards = config.shards.max(1).next_power_of_two();
        // No more shards than counters, and each shard's share rounded
        // down: the store never holds more than `max_counters` (1 at least).
        while shards > 1 && shards > config.max_counters {
            shards /= 2;
        }
        let shard_capacity = (config.max_counters / shards).max(1);
        let shards = (0..shards).map(|_| Mutex::new(Shard::default())).collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                shard_capacity,
                clock,
            }),
        }
    }

    /// Counters held now, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most counters the store holds at once.
    pub fn capacity(&self) -> usize {
        self.inner.shard_capacity * self.inner.shards.len()
    }

    /// Drops every counter whose windows are over; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.inner.clock.now_ms();
        let mut dropped = 0;
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, slot| slot.expires_at() > now);
            dropped += before - shard.len();
        }
        dropped
    }

    /// Decides a check synchronously; [`Store::check`] wraps this.
    pub fn check_now(&self, counters: &[CounterSpec], cost: u64) -> Outcome {
        let now_ms = self.inner.clock.now_ms();
        let mut locked = self.lock_shards(counters);
        let before: Vec<Snapshot> = counters
            .iter()
            .map(|c| {
                let counter = locked.slot(c.key).map(|s| s.counter()).unwrap_or_default();
                counter.at(now_ms, c.window_ms)
            })
            .collect();
        let admitted = counters
            .iter()
            .zip(&before)
            .all(|(c, s)| s.admits(c.window_ms, c.limit, cost));
        if admitted && cost > 0 {
            for c in counters {
                locked.add(c, now_ms, cost, counters);
            }
        }
        Outcome {
            admitted,
            now_ms,
            before,
            degraded: false,
        }
    }

    fn lock_shards(&self, counters: &[CounterSpec]) -> LockedShards<'_> {
        let mask = self.inner.shards.len() - 1;
        let shard_of = |key: &CounterKey| usize::from(key[8]) << 8 | usize::from(key[9]);
        let mut order: Vec<usize> = counters.iter().map(|c| shard_of(&c.key) & mask).collect();
        order.sort_unstable();
        order.dedup();
        let guards = order
            .iter()
            .map(|&i| (i, self.inner.shards[i].lock()))
            .collect();
        LockedShards {
            guards,
            mask,
            capacity: self.inner.shard_capacity,
            shard_of,
        }
    }
}

/// The shards one check holds, locked in index order.
struct LockedShards<'a> {
    guards: Vec<(usize, MutexGuard<'a, Shard>)>,
    mask: usize,
    capacity: usize,
    shard_of: fn(&CounterKey) -> usize,
}

impl LockedShards<'_> {
    fn shard(&mut self, key: CounterKey) -> &mut Shard {
        let index = (self.shard_of)(&key) & self.mask;
        let at = self
            .guards
            .iter()
            .position(|(i, _)| *i == index)
            .expect("shard locked");
        &mut self.guards[at].1
    }

    fn slot(&mut self, key: CounterKey) -> Option<Slot> {
        self.shard(key).get(&key).copied()
    }

    fn add(&mut self, spec: &CounterSpec, now_ms: u64, cost: u64, batch: &[CounterSpec]) {
        let capacity = self.capacity;
        let shard = self.shard(spec.key);
        let old = shard.get(&spec.key).map(Slot::counter).unwrap_or_default();
        let new = old.add(now_ms, spec.window_ms, cost);
        if !shard.contains_key(&spec.key) && shard.len() >= capacity {
            make_room(shard, now_ms, batch);
        }
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let slot = Slot {
            start_ms: new.start_ms,
            prev: clamp(new.prev),
            cur: clamp(new.cur),
            window_ms: clamp(spec.window_ms),
        };
        shard.insert(spec.key, slot);
    }
}

/// Frees one entry of a full shard: an expired one if the sample holds any
/// (all of those go), else the sampled one nearest to expiry. Counters of
/// the current check are never chosen.
fn make_room(shard: &mut Shard, now_ms: u64, batch: &[CounterSpec]) {
    let in_batch = |k: &CounterKey| batch.iter().any(|c| c.key == *k);
    let sample: Vec<(CounterKey, u64)> = shard
        .iter()
        .filter(|(k, _)| !in_batch(k))
        .take(EVICTION_SAMPLE)
        .map(|(k, s)| (*k, s.expires_at()))
        .collect();
    let expired: Vec<CounterKey> = sample
        .iter()
        .filter(|(_, at)| *at <= now_ms)
        .map(|(k, _)| *k)
        .collect();
    if !expired.is_empty() {
        for key in &expired {
            shard.remove(key);
        }
        return;
    }
    if let Some((key, _)) = sample.iter().min_by_key(|(_, at)| *at) {
        shard.remove(key);
    }
}

impl Store for MemoryStore {
    async fn check(&self, counters: &[CounterSpec], cost: u64) -> Result<Outcome, StoreError> {
        Ok(self.check_now(counters, cost))
    }

    fn local_counters(&self) -> Option<usize> {
        Some(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const W: u64 = 1_000;

    fn store(max_counters: usize) -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let config = MemoryStoreConfig {
            max_counters,
            shards: 4,
        };
        (
            MemoryStore::with_clock(config, Arc::new(clock.clone())),
            clock,
        )
    }

    fn spec(n: u32, limit: u64) -> CounterSpec {
        let mut key = [0; 16];
        let digest = blake3::hash(&n.to_le_bytes());
        key.copy_from_slice(&digest.as_bytes()[..16]);
        CounterSpec {
            key,
            prefix: "t/p/l/1000".into(),
            window_ms: W,
            limit,
        }
    }

    #[test]
    fn flood_of_distinct_counters_stays_within_the_bound() {
        let (store, _) = store(100);
        for n in 0..10_000 {
            assert!(store.check_now(&[spec(n, 5)], 1).admitted);
        }
        assert!(
            store.len() <= store.capacity(),
            "{} > {}",
            store.len(),
            store.capacity()
        );
        assert!(store.capacity() <= 100, "never more than asked for");
    }

    #[test]
    fn full_store_evicts_expired_counters_before_live_ones() {
        let clock = ManualClock::new(1_000_000);
        let config = MemoryStoreConfig {
            max_counters: 3,
            shards: 1,
        };
        let store = MemoryStore::with_clock(config, Arc::new(clock.clone()));
        let short = spec(1, 1);
        let long = |n| CounterSpec {
            window_ms: 60 * W,
            ..spec(n, 1)
        };
        for s in [short, long(2), long(3)] {
            assert!(store.check_now(&[s], 1).admitted);
        }
        clock.advance(2 * W);
        assert!(store.check_now(&[long(4)], 1).admitted);
        assert_eq!(store.len(), 3);
        assert!(
            !store.check_now(&[long(2)], 1).admitted,
            "live counter 2 kept its count"
        );
        assert!(
            !store.check_now(&[long(3)], 1).admitted,
            "live counter 3 kept its count"
        );
    }

    #[test]
    fn evicted_counter_starts_over_and_the_rest_keep_counting() {
        let (store, _) = store(1);
        let (a, b) = (spec(1, 1), spec(2, 1));
        assert!(store.check_now(std::slice::from_ref(&a), 1).admitted);
        assert!(!store.check_now(std::slice::from_ref(&a), 1).admitted);
        // A capacity of one per shard: a second counter in a's shard evicts it.
        let same_shard = (3..10_000)
            .map(|n| spec(n, 1))
            .find(|s| s.key[9] % 4 == a.key[9] % 4)
            .unwrap();
        assert!(store.check_now(&[same_shard], 1).admitted);
        assert!(
            store.check_now(&[a], 1).admitted,
            "a was evicted and starts over"
        );
        assert!(store.check_now(&[b], 1).admitted);
    }

    #[test]
    fn sweep_drops_counters_whose_windows_are_over() {
        let (store, clock) = store(1_000);
        for n in 0..10 {
            store.check_now(&[spec(n, 5)], 1);
        }
        clock.advance(2 * W - 1);
        assert_eq!(store.sweep(), 0);
        clock.advance(1);
        assert_eq!(store.sweep(), 10);
        assert!(store.is_empty());
    }

    #[test]
    fn zero_cost_checks_create_no_counters() {
        let (store, _) = store(1_000);
        for n in 0..10 {
            assert!(store.check_now(&[spec(n, 5)], 0).admitted);
        }
        assert!(store.is_empty());
    }

    #[test]
    fn a_denied_check_writes_no_counter() {
        let (store, _) = store(1_000);
        let (free, full) = (spec(1, 5), spec(2, 1));
        store.check_now(std::slice::from_ref(&full), 1);
        assert!(!store.check_now(&[free, full], 1).admitted);
        assert_eq!(store.len(), 1, "the free counter was not created");
    }
}
