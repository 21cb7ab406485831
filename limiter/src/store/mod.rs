//! Where counters live. A store evaluates all the counters of one check
//! atomically: either every counter has room and all are incremented, or
//! none is touched.

use std::{future::Future, sync::Arc};

use crate::{policy::CounterKey, window::Snapshot};

mod memory;
pub mod redis;

pub use memory::{MemoryStore, MemoryStoreConfig};
pub use redis::{RedisConfig, RedisStore};

/// One counter a check must fit in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSpec {
    /// Which counter.
    pub key: CounterKey,
    /// The limit's counter prefix, `<namespace>/<policy>/<limit>/<window ms>`,
    /// which names the counter in a shared store.
    pub prefix: Arc<str>,
    /// Its window length in milliseconds.
    pub window_ms: u64,
    /// The effective limit the check is held to.
    pub limit: u64,
}

/// What a store decided for one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether every counter had room; if so, each was incremented by the cost.
    pub admitted: bool,
    /// The instant of the decision, in ms since the epoch, by the store's clock.
    pub now_ms: u64,
    /// Each counter as it stood just before the decision, in the order given.
    pub before: Vec<Snapshot>,
    /// Whether the decision was made without the shared store (a fallback).
    pub degraded: bool,
}

/// Why a store could not decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("store timed out")]
    Timeout,
    /// The store answered with an error or the connection failed.
    #[error("store failed: {0}")]
    Backend(String),
    /// The store refuses us: a missing or wrong password. Retrying does not
    /// help; the configuration must change.
    #[error("{0}")]
    Refused(String),
}

/// A place where counters are kept and checked.
pub trait Store: Send + Sync + 'static {
    /// Checks `cost` against every counter at once; increments them all if
    /// all have room, none otherwise. A cost of zero never changes a counter.
    fn check(
        &self,
        counters: &[CounterSpec],
        cost: u64,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Whether the store answers now; the breaker's probe.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// How many counters this process holds in its own memory, if any.
    fn local_counters(&self) -> Option<usize> {
        None
    }
}
