//! Command-line configuration of `sluice-limiter`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::{http::serve::ServeLimits, store::RedisConfig};

/// Decides, over HTTP, whether API requests may pass under rate limit
/// policies.
#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-limiter", version)]
pub struct Config {
    /// A policy file (one or more YAML documents) or a directory of them.
    /// Without it, the limiter serves its embedded example policy.
    #[arg(long, env = "SLUICE_POLICY")]
    pub policy: Option<PathBuf>,

    /// The address to serve the HTTP API on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where counters are kept.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,

    /// The most counters the in-memory store holds; past it, the counter
    /// nearest to expiry is evicted.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_max_counters: usize,

    /// How often the policy file is checked for changes, such as `1s`.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// The largest check request body accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Redis for `--store redis`: `redis://host:port` or
    /// `rediss://host:port` (TLS), without a password. With
    /// `--redis-cluster`, one or more comma-separated seed nodes.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The Redis URL names nodes of a Redis Cluster.
    #[arg(long, env = "SLUICE_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// A file holding the Redis password. The password can also come from
    /// the SLUICE_REDIS_PASSWORD environment variable; it is never taken
    /// on the command line.
    #[arg(long)]
    pub redis_password_file: Option<PathBuf>,

    /// The longest a Redis call may take before it counts as failed and the
    /// check falls back to the policy's onStoreFailure.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// Failed Redis calls in a row that open the breaker: checks then stop
    /// calling Redis until a probe succeeds.
    #[arg(long, default_value_t = 3)]
    pub breaker_threshold: u32,

    /// How often an open breaker probes Redis.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub breaker_probe_interval: Duration,

    /// Open client connections at most; more are closed at once.
    #[arg(long, default_value_t = ServeLimits::default().max_connections)]
    pub max_connections: usize,

    /// Requests handled at once at most; more are refused with 503.
    #[arg(long, default_value_t = ServeLimits::default().max_in_flight)]
    pub max_in_flight: usize,

    /// Time a client has to send a request's headers, and the longest a
    /// keep-alive connection may sit idle.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time a whole request may take (408 after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

impl Config {
    /// The bounds on clients.
    pub fn serve_limits(&self) -> ServeLimits {
        ServeLimits {
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            ..ServeLimits::default()
        }
    }

    /// The Redis connection settings, with the password from its file or
    /// environment variable.
    pub fn redis(&self) -> anyhow::Result<RedisConfig> {
        let url = self.redis_url.clone().ok_or_else(|| {
            anyhow::anyhow!("--store redis needs --redis-url (or SLUICE_REDIS_URL)")
        })?;
        let scheme_ok = url
            .split(',')
            .all(|u| u.trim().starts_with("redis://") || u.trim().starts_with("rediss://"));
        anyhow::ensure!(
            scheme_ok,
            "--redis-url must start with redis:// or rediss://"
        );
        let authority = url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default();
        anyhow::ensure!(
            !authority.contains('@'),
            "--redis-url must not hold credentials; use SLUICE_REDIS_PASSWORD or --redis-password-file"
        );
        let password = match &self.redis_password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Some(text.trim_end_matches(['\n', '\r']).to_owned())
            }
            None => std::env::var("SLUICE_REDIS_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        };
        Ok(RedisConfig {
            url,
            cluster: self.redis_cluster,
            password,
            timeout: self.redis_timeout,
        })
    }
}

/// Where counters are kept.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process's memory: limits hold per limiter replica.
    Memory,
    /// In Redis, shared by every replica.
    Redis,
}

/// Parses `500ms`, `1s`, `1m` and the like.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: sluice_crds::Duration = text.parse().map_err(|e| format!("{e}"))?;
    match d.as_millis() {
        0 => Err("must be longer than 0".into()),
        _ => Ok(d.as_std()),
    }
}
