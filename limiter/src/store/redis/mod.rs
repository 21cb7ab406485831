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

mod keys;
mod script;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use redis::{
    Client, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

pub use keys::{counter_key, limiters_key, slot};

use super::{CounterSpec, Outcome, Store, StoreError};
use crate::{clock::Clock, window::Snapshot};

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
    /// The longest a call may take before it counts as failed.
    pub timeout: Duration,
}

/// A connection shared by every check: requests from concurrent checks are
/// pipelined on it.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The Redis store. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
}

impl RedisStore {
    /// Connects to Redis as `config` says.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let connection = match config.cluster {
            false => Connection::Single(connect_single(config).await?),
            true => Connection::Cluster(connect_cluster(config).await?),
        };
        Ok(Self {
            connection,
            timeout: config.timeout,
            clock: None,
        })
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
            match &self.connection {
                Connection::Single(c) => invocation.invoke_async(&mut c.clone()).await,
                Connection::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(backend_error),
            Err(_) => Err(StoreError::Timeout),
        }
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

    /// Counter indexes grouped by the slot they live in; one group on a
    /// standalone server.
    fn group_by_slot(&self, keys: &[String]) -> Vec<Vec<usize>> {
        match self.connection {
            Connection::Single(_) => vec![(0..keys.len()).collect()],
            Connection::Cluster(_) => {
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
        let call = async {
            let ping = redis::cmd("PING");
            match &self.connection {
                Connection::Single(c) => ping.query_async::<String>(&mut c.clone()).await,
                Connection::Cluster(c) => ping.query_async::<String>(&mut c.clone()).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map(drop).map_err(backend_error),
            Err(_) => Err(StoreError::Timeout),
        }
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

async fn connect_single(config: &RedisConfig) -> Result<ConnectionManager, StoreError> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
        .map_err(backend_error)?;
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = Client::open(info).map_err(backend_error)?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(config.timeout));
    ConnectionManager::new_with_config(client, manager)
        .await
        .map_err(backend_error)
}

async fn connect_cluster(config: &RedisConfig) -> Result<ClusterConnection, StoreError> {
    let nodes: Vec<&str> = config.url.split(',').map(str::trim).collect();
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(config.timeout.max(Duration::from_secs(1)))
        .response_timeout(config.timeout);
    if let Some(password) = &config.password {
        builder = builder.password(password.clone());
    }
    let client = builder.build().map_err(backend_error)?;
    client.get_async_connection().await.map_err(backend_error)
}

fn backend_error(error: RedisError) -> StoreError {
    StoreError::Backend(error.to_string())
}
