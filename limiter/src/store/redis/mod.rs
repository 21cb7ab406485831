//! The shared store: counters in Redis or a Redis Cluster, so that a limit
//! holds whichever limiter replica a request reaches.
//!
//! A check is one round trip per Redis slot it touches: the [`script::CHECK`]
//! script evaluates all the check's counters of that slot at once and
//! increments them only if all have room. On a standalone server, or when
//! every counter hashes to one slot, that is a single atomic call. On a
//! cluster, counters in different slots are evaluated concurrently, one
//! call per slot; if any slot denies, the slots that admitted get their
//! increments back from [`script::REFUND`], so a denied request consumes no
//! quota. Between the two calls, concurrent checks may see the refunded
//! units as taken: the cost of a split check is a moment of extra
//! strictness, never extra admission.

mod connection;
mod keys;
mod script;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use self::connection::{Connection, backend_error};
pub use keys::{counter_key, limiters_key, slot};
pub use script::CHECK_LUA;

use super::{CounterSpec, Outcome, Store, StoreError};
use crate::{clock::Clock, window::Snapshot};

/// Checks each comma-separated Redis URL: the scheme, and that it holds no
/// credentials, neither before an `@` (any `@` is refused: a password with
/// a `/` would end the authority early) nor as a `password` parameter.
/// The message never repeats the URL, which may hold a secret.
pub fn check_url(url: &str) -> Result<(), String> {
    for one in url.split(',').map(str::trim) {
        if !(one.starts_with("redis://") || one.starts_with("rediss://")) {
            return Err("must start with redis:// or rediss://".into());
        }
        let query = one.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let secret_param = query
            .split('&')
            .any(|p| p.starts_with("password=") || p.starts_with("user="));
        if one.contains('@') || secret_param {
            return Err(
                "must not hold credentials; use SLUICE_REDIS_PASSWORD or a password file".into(),
            );
        }
    }
    Ok(())
}

/// A Redis URL without its query: what logs may print.
pub fn display_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port` or `rediss://host:port`; for a cluster, one seed
    /// node (more can follow, comma separated).
    pub url: String,
    /// Whether `url` names Redis Cluster nodes.
    pub cluster: bool,
    /// The password, kept out of the URL and the command line.
    pub password: Option<String>,
    /// For `rediss://`: PEM certificates of the authorities that may sign
    /// the server's certificate, in place of the system's trusted roots.
    pub ca_cert: Option<Vec<u8>>,
    /// The longest a call may take before it counts as failed.
    pub timeout: Duration,
}

/// The Redis store. Cheap to clone; clones share connections.
///
/// The connection is made on first use and made again on the next use
/// after it could not be made, so a store can exist while Redis is down:
/// a limiter starts and decides by its fallback until Redis answers.
#[derive(Clone)]
pub struct RedisStore {
    config: Arc<RedisConfig>,
    connection: Arc<OnceCell<Connection>>,
    clock: Option<Arc<dyn Clock>>,
    /// On a cluster, a key of the last failed call, until a probe reaches
    /// its slot again.
    failed_key: Arc<Mutex<Option<String>>>,
}

impl RedisStore {
    /// Connects to Redis as `config` says; fails if Redis cannot be reached.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let store = Self::lazy(config);
        store.connection().await?;
        Ok(store)
    }

    /// A store that connects on first use.
    pub fn lazy(config: &RedisConfig) -> Self {
        Self {
            config: Arc::new(config.clone()),
            connection: Arc::default(),
            clock: None,
            failed_key: Arc::default(),
        }
    }

    /// Tries to connect once, for a limiter starting up: `Ok` with the
    /// reason when Redis cannot be reached now (the store keeps trying on
    /// use), `Err` only when Redis refuses us, which no retry mends.
    pub async fn start(config: &RedisConfig) -> Result<(Self, Option<StoreError>), StoreError> {
        let store = Self::lazy(config);
        let wait = config.timeout.max(Duration::from_secs(2));
        let first = tokio::time::timeout(wait, store.connection()).await;
        match first.unwrap_or(Err(StoreError::Timeout)) {
            Ok(_) => Ok((store, None)),
            Err(refused @ StoreError::Refused(_)) => Err(refused),
            Err(unreachable) => Ok((store, Some(unreachable))),
        }
    }

    /// The connection, made now if it was not yet.
    async fn connection(&self) -> Result<Connection, StoreError> {
        self.connection
            .get_or_try_init(|| connection::open(&self.config))
            .await
            .cloned()
    }

    /// Takes time from `clock` instead of Redis `TIME`. For tests that need
    /// to move time, such as the shared behaviour suite; production never
    /// calls it.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let call = async {
            self.connection()
                .await?
                .invoke(invocation)
                .await
                .map_err(backend_error)
        };
        tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// One limiter's once-a-second exchange with Redis about a policy:
    /// records this replica's heartbeat, and reads the policy's published
    /// multiplier (raw), the number of live replicas, and Redis time.
    pub async fn sync_policy(
        &self,
        policy_key: &str,
        instance: &str,
        liveness: Duration,
    ) -> Result<PolicySync, StoreError> {
        let mut invocation = script::SYNC.prepare_invoke();
        invocation
            .key(sluice_crds::multiplier_key(policy_key))
            .key(keys::limiters_key(policy_key));
        invocation.arg(instance).arg(liveness.as_millis() as u64);
        let (multiplier, now_ms, replicas): (String, u64, u32) = self.invoke(&invocation).await?;
        let multiplier = (!multiplier.is_empty()).then_some(multiplier);
        Ok(PolicySync {
            multiplier,
            now_ms,
            replicas,
        })
    }

    /// Publishes `multiplier` for policy `<namespace>/<name>`, stamped with
    /// Redis time; the key expires after `ttl`. What the operator calls.
    pub async fn publish_multiplier(
        &self,
        policy_key: &str,
        multiplier: f64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = script::PUBLISH.prepare_invoke();
        invocation.key(sluice_crds::multiplier_key(policy_key));
        invocation
            .arg(multiplier.to_string())
            .arg(ttl.as_millis().max(1) as u64);
        self.invoke::<i64>(&invocation).await.map(drop)
    }

    /// Checks the counters at `indexes` (all in one slot) in one call.
    async fn check_slot(
        &self,
        counters: &[CounterSpec],
        keys: &[String],
        indexes: &[usize],
        cost: u64,
    ) -> Result<SlotOutcome, StoreError> {
        let mut invocation = script::CHECK.prepare_invoke();
        let now = self
            .clock
            .as_ref()
            .map(|c| c.now_ms().to_string())
            .unwrap_or_default();
        invocation.arg(now).arg(cost);
        for &i in indexes {
            invocation
                .key(&keys[i])
                .arg(counters[i].window_ms)
                .arg(counters[i].limit);
        }
        let reply: Vec<i64> = self.invoke(&invocation).await?;
        SlotOutcome::read(&reply, counters, indexes)
    }

    /// Gives back what a slot's counters took, at the window it took it in.
    async fn refund(
        &self,
        counters: &[CounterSpec],
        keys: &[String],
        slot: &SlotOutcome,
        cost: u64,
    ) -> Result<(), StoreError> {
        let mut invocation = script::REFUND.prepare_invoke();
        invocation.arg(cost);
        for &i in &slot.indexes {
            let window = counters[i].window_ms;
            invocation
                .key(&keys[i])
                .arg(slot.now_ms - slot.now_ms % window)
                .arg(window);
        }
        self.invoke::<i64>(&invocation).await.map(drop)
    }

    /// On a cluster, keeps a key of a failed call for the breaker's probe.
    fn remember_failed_key<T>(
        &self,
        keys: &[String],
        groups: &[Vec<usize>],
        results: &[Result<T, StoreError>],
    ) {
        if !self.config.cluster {
            return;
        }
        let failed = groups.iter().zip(results).find(|(_, r)| r.is_err());
        if let Some((group, _)) = failed {
            *self.failed_key.lock() = Some(keys[group[0]].clone());
        }
    }

    /// Counter indexes grouped by the slot they live in; one group on a
    /// standalone server.
    fn group_by_slot(&self, keys: &[String]) -> Vec<Vec<usize>> {
        match self.config.cluster {
            false => vec![(0..keys.len()).collect()],
            true => {
                let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
                for (i, key) in keys.iter().enumerate() {
                    groups.entry(slot(key)).or_default().push(i);
                }
                groups.into_values().collect()
            }
        }
    }
}

/// What [`RedisStore::sync_policy`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySync {
    /// The stored multiplier value, if any.
    pub multiplier: Option<String>,
    /// Redis time, ms since the epoch.
    pub now_ms: u64,
    /// Replicas whose heartbeat is fresh, this one included.
    pub replicas: u32,
}

/// What one slot's call answered.
struct SlotOutcome {
    admitted: bool,
    now_ms: u64,
    indexes: Vec<usize>,
    before: Vec<Snapshot>,
}

impl SlotOutcome {
    fn read(
        reply: &[i64],
        counters: &[CounterSpec],
        indexes: &[usize],
    ) -> Result<Self, StoreError> {
        let malformed = || {
            StoreError::Backend(format!(
                "check script answered {} values for {} counters",
                reply.len(),
                indexes.len()
            ))
        };
        if reply.len() != 2 + 2 * indexes.len() {
            return Err(malformed());
        }
        let count = |x: i64| u64::try_from(x).unwrap_or(0);
        let now_ms = count(reply[1]);
        let before = indexes
            .iter()
            .enumerate()
            .map(|(n, &i)| Snapshot {
                prev: count(reply[2 + 2 * n]),
                cur: count(reply[3 + 2 * n]),
                elapsed_ms: now_ms % counters[i].window_ms.max(1),
            })
            .collect();
        Ok(Self {
            admitted: reply[0] == 1,
            now_ms,
            indexes: indexes.to_vec(),
            before,
        })
    }
}

impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let failed = self.failed_key.lock().clone();
        let call = async {
            let probe = probe_command(failed.as_deref());
            self.connection()
                .await?
                .query::<()>(&probe)
                .await
                .map_err(backend_error)
        };
        let result = tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout));
        if result.is_ok() && failed.is_some() {
            let mut key = self.failed_key.lock();
            if *key == failed {
                *key = None;
            }
        }
        result
    }

    async fn check(&self, counters: &[CounterSpec], cost: u64) -> Result<Outcome, StoreError> {
        let keys: Vec<String> = counters
            .iter()
            .map(|c| counter_key(&c.prefix, &c.key))
            .collect();
        let groups = self.group_by_slot(&keys);
        let calls = groups
            .iter()
            .map(|indexes| self.check_slot(counters, &keys, indexes, cost));
        let results = futures::future::join_all(calls).await;
        self.remember_failed_key(&keys, &groups, &results);

        let admitted = results.iter().all(|r| r.as_ref().is_ok_and(|s| s.admitted));
        if !admitted && cost > 0 {
            let took = results.iter().flatten().filter(|s| s.admitted);
            let refunds = took.map(|slot| self.refund(counters, &keys, slot, cost));
            for refund in futures::future::join_all(refunds).await {
                if let Err(error) = refund {
                    tracing::warn!(%error, "Failed to refund a split check; its counters stay high until their window ends");
                }
            }
        }

        let mut before = vec![Snapshot::default(); counters.len()];
        let mut now_ms = 0;
        for slot in results {
            let slot = slot?;
            now_ms = now_ms.max(slot.now_ms);
            for (i, snapshot) in slot.indexes.iter().zip(slot.before) {
                before[*i] = snapshot;
            }
        }
        Ok(Outcome {
            admitted,
            now_ms,
            before,
            degraded: false,
        })
    }
}

/// What the breaker's probe sends: `PING`, or on a cluster where a call
/// failed, `EXISTS` of one of its keys. A `PING` would not do there: the
/// client sends it to any node it can reach, so it answers while a dead
/// master's slots are still unserved, and the breaker would close (and open
/// again) at every probe until a replica takes over. A key's command goes
/// to the master of its slot, and answers once one serves it.
fn probe_command(failed_key: Option<&str>) -> redis::Cmd {
    match failed_key {
        Some(key) => {
            let mut exists = redis::cmd("EXISTS");
            exists.arg(key);
            exists
        }
        None => redis::cmd("PING"),
    }
}
