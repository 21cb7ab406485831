//! Where the operator publishes a policy's multiplier for its limiters:
//! behind a trait, so that reconcile tests need no Redis.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use futures::future::BoxFuture;
use sluice_limiter::store::{RedisConfig, RedisStore};

/// The Redis a policy's limiters share, with the password read from its
/// Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis://host:port` or `rediss://host:port`; for a cluster, a seed
    /// node.
    pub url: String,
    /// Whether `url` names Redis Cluster nodes.
    pub cluster: bool,
    /// The password, when the policy names a Secret.
    pub password: Option<String>,
}

// The password never reaches a log line.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.url)
            .field("cluster", &self.cluster)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Why a multiplier was not published.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// The Redis password could not be read from its Secret.
    #[error("failed to read the Redis password from Secret {secret}: {reason}")]
    ReadPassword {
        /// `<namespace>/<name>` of the Secret.
        secret: String,
        /// What went wrong.
        reason: String,
    },
    /// No connection to Redis could be made.
    #[error("failed to connect to Redis at {url}: {reason}")]
    Connect {
        /// The Redis URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Redis did not take the multiplier.
    #[error("failed to publish the multiplier in Redis at {url}: {reason}")]
    Publish {
        /// The Redis URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Publishes multipliers.
pub trait MultiplierSink: Send + Sync {
    /// Stores `multiplier` for the policy `<namespace>/<name>` in `redis`,
    /// to expire after `ttl` unless published again.
    fn publish<'a>(
        &'a self,
        redis: &'a RedisTarget,
        policy: &'a str,
        multiplier: f64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), PublishError>>;
}

/// Redis, through the limiter's own store: one connection per URL, opened
/// on first use and kept; a changed password opens a new one in its place.
/// A URL no policy uses any more keeps its connection until the operator
/// restarts; there are as many as distinct Redis URLs in the policies.
pub struct RedisSink {
    timeout: Duration,
    stores: Mutex<HashMap<Address, Connected>>,
}

/// A Redis URL and whether it names a cluster.
type Address = (String, bool);

/// A connection, and the password it was opened with.
struct Connected {
    password: Option<String>,
    store: RedisStore,
}

impl RedisSink {
    /// A sink whose connecting and publishing each take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            stores: Mutex::default(),
        }
    }

    async fn store(&self, redis: &RedisTarget) -> Result<RedisStore, PublishError> {
        let key = (redis.url.clone(), redis.cluster);
        if let Some(connected) = self.lock().get(&key)
            && connected.password == redis.password
        {
            return Ok(connected.store.clone());
        }
        let config = RedisConfig {
            url: redis.url.clone(),
            cluster: redis.cluster,
            password: redis.password.clone(),
            ca_cert: None,
            timeout: self.timeout,
        };
        let failed = |reason: String| PublishError::Connect {
            url: redis.url.clone(),
            reason,
        };
        // Connecting retries inside the client; the tick must not wait on
        // it for longer than a query may take.
        let store = tokio::time::timeout(self.timeout, RedisStore::connect(&config))
            .await
            .map_err(|_| failed(format!("no connection within {:?}", self.timeout)))?
            .map_err(|e| failed(e.to_string()))?;
        let connected = Connected {
            password: redis.password.clone(),
            store: store.clone(),
        };
        self.lock().insert(key, connected);
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Address, Connected>> {
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MultiplierSink for RedisSink {
    fn publish<'a>(
        &'a self,
        redis: &'a RedisTarget,
        policy: &'a str,
        multiplier: f64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let store = self.store(redis).await?;
            store
                .publish_multiplier(policy, multiplier, ttl)
                .await
                .map_err(|e| PublishError::Publish {
                    url: redis.url.clone(),
                    reason: e.to_string(),
                })
        })
    }
}
