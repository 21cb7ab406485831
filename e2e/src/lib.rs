//! A harness for end-to-end tests: starts the built sluice binaries and the
//! real servers they talk to (Redis, Prometheus) on loopback, on free
//! ports, waits for them with a deadline, and stops them when dropped.

mod binaries;
mod limiter;
mod load;
mod process;
mod prometheus;
mod redis;
mod wait;

pub use binaries::binary;
pub use limiter::{LimiterProcess, Reply};
pub use load::{BodyOf, Figures, Load, Sample, metric_value, rss_kib};
pub use process::{Process, free_port};
pub use prometheus::Prometheus;
pub use redis::{RedisCluster, RedisServer, redis_cli};
pub use wait::{eventually, wait_for_http};

/// The repository's root directory.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}
