//! Command-line configuration of `sluice-limiter`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

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
}

/// Where counters are kept.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process's memory: limits hold per limiter replica.
    Memory,
}

/// Parses `500ms`, `1s`, `1m` and the like.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: sluice_crds::Duration = text.parse().map_err(|e| format!("{e}"))?;
    match d.as_millis() {
        0 => Err("must be longer than 0".into()),
        _ => Ok(d.as_std()),
    }
}
