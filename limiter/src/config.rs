//! Command-line configuration of `sluice-limiter`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use sluice_crds::positive_duration;

use crate::{
    http::serve::ServeLimits,
    store::{RedisConfig, redis::check_url},
};

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
    #[arg(long, default_value_t = 1_000_000, value_parser = at_least::<1>)]
    pub memory_max_counters: usize,

    /// How often the policy file is checked for changes, such as `1s`.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub reload_interval: Duration,

    /// The largest check request body accepted, in bytes (64 or more).
    #[arg(long, default_value_t = 64 * 1024, value_parser = at_least::<64>)]
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

    /// For a `rediss://` URL: a PEM file of the certificate authorities to
    /// trust for Redis's certificate, in place of the system's. For a Redis
    /// whose certificate a private CA signed.
    #[arg(long, env = "SLUICE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// The longest a Redis call may take before it counts as failed and the
    /// check falls back to the policy's onStoreFailure.
    #[arg(long, default_value = "20ms", value_parser = positive_duration)]
    pub redis_timeout: Duration,

    /// Failed Redis calls in a row that open the breaker: checks then stop
    /// calling Redis until a probe succeeds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_threshold: u32,

    /// How often an open breaker probes Redis.
    #[arg(long, default_value = "250ms", value_parser = positive_duration)]
    pub breaker_probe_interval: Duration,

    /// Open client connections at most; more are closed at once.
    #[arg(long, default_value_t = ServeLimits::default().max_connections, value_parser = at_least::<1>)]
    pub max_connections: usize,

    /// Checks decided at once at most (counted once their body has
    /// arrived); more are refused with 503.
    #[arg(long, default_value_t = ServeLimits::default().max_in_flight, value_parser = at_least::<1>)]
    pub max_in_flight: usize,

    /// Time a client has to send a request's headers, and the longest a
    /// keep-alive connection may sit idle.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub header_timeout: Duration,

    /// Time a check's body may take to arrive once its headers have (408
    /// after it).
    #[arg(long, default_value = "2s", value_parser = positive_duration)]
    pub body_timeout: Duration,

    /// Time a whole request may take (408 after it).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
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
            body_timeout: self.body_timeout,
            ..ServeLimits::default()
        }
    }

    /// The Redis connection settings, with the password from its file or
    /// environment variable.
    pub fn redis(&self) -> anyhow::Result<RedisConfig> {
        let url = self.redis_url.clone().ok_or_else(|| {
            anyhow::anyhow!("--store redis needs --redis-url (or SLUICE_REDIS_URL)")
        })?;
        check_url(&url).map_err(|e| anyhow::anyhow!("--redis-url {e}"))?;
        anyhow::ensure!(
            self.redis_cluster || !url.contains(','),
            "--redis-url names several nodes; add --redis-cluster for a Redis Cluster"
        );
        Ok(RedisConfig {
            ca_cert: self.redis_ca_cert(&url)?,
            url,
            cluster: self.redis_cluster,
            password: self.redis_password()?,
            timeout: self.redis_timeout,
        })
    }

    /// Refuses Redis settings given to a limiter that counts in memory:
    /// each replica would silently enforce every limit on its own.
    pub fn check_memory(&self) -> anyhow::Result<()> {
        let redis_flags = self.redis_url.is_some() || self.redis_cluster;
        anyhow::ensure!(
            !redis_flags || self.store == StoreKind::Redis,
            "--redis-url or --redis-cluster is set (or SLUICE_REDIS_URL, SLUICE_REDIS_CLUSTER) \
             but the store is memory; add --store redis to count in Redis"
        );
        Ok(())
    }

    /// The password from `--redis-password-file` or from
    /// `SLUICE_REDIS_PASSWORD`; none when neither is set, an error when
    /// both are (which one was meant cannot be told).
    fn redis_password(&self) -> anyhow::Result<Option<String>> {
        self.password_from(std::env::var("SLUICE_REDIS_PASSWORD").ok())
    }

    /// [`redis_password`](Self::redis_password), given the environment
    /// variable's value.
    fn password_from(&self, from_env: Option<String>) -> anyhow::Result<Option<String>> {
        let from_env = from_env.filter(|p| !p.is_empty());
        let Some(path) = &self.redis_password_file else {
            return Ok(from_env);
        };
        anyhow::ensure!(
            from_env.is_none(),
            "both SLUICE_REDIS_PASSWORD and --redis-password-file are set; set one"
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let password = text.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(
            !password.is_empty(),
            "--redis-password-file {} is empty",
            path.display()
        );
        Ok(Some(password.to_owned()))
    }

    /// The PEM text of `--redis-ca-file`, which only a TLS URL can use.
    fn redis_ca_cert(&self, url: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.redis_ca_file else {
            return Ok(None);
        };
        anyhow::ensure!(
            url.split(',').all(|u| u.trim().starts_with("rediss://")),
            "--redis-ca-file needs a rediss:// --redis-url"
        );
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Some(pem))
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

/// Parses a whole number of at least `MIN`.
fn at_least<const MIN: usize>(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("{e}"))?;
    match n >= MIN {
        true => Ok(n),
        false => Err(format!("must be at least {MIN}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let all = ["sluice-limiter", "--store", "redis"].iter().chain(args);
        Config::try_parse_from(all).expect("arguments parse")
    }

    fn redis_error(args: &[&str]) -> String {
        let error = parse(args).redis().expect_err("refused");
        format!("{error:#}")
    }

    #[test]
    fn a_password_in_any_redis_url_is_refused_without_repeating_it() {
        for url in [
            "redis://:hunter2@127.0.0.1:6379",
            "rediss://user:hunter2@127.0.0.1:6379",
            "redis://127.0.0.1:7000, redis://:hunter2@127.0.0.1:7001",
            "redis://:hunter/2@127.0.0.1:6379",
            "redis://127.0.0.1:6379/?password=hunter2",
        ] {
            let message = redis_error(&["--redis-url", url]);
            assert!(message.contains("--redis-url"), "{message}");
            assert!(!message.contains("hunter"), "{message}");
        }
    }

    #[test]
    fn several_nodes_need_the_cluster_flag() {
        let message = redis_error(&[
            "--redis-url",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        ]);
        assert!(message.contains("add --redis-cluster"), "{message}");
        let cluster = [
            "--redis-cluster",
            "--redis-url",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
        ];
        assert!(parse(&cluster).redis().is_ok());
    }

    #[test]
    fn an_empty_password_file_is_named() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "\n").unwrap();
        let path = file.path().to_str().unwrap();
        let config = parse(&[
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--redis-password-file",
            path,
        ]);
        let message = format!("{:#}", config.password_from(None).unwrap_err());
        assert!(
            message.contains("is empty") && message.contains(path),
            "{message}"
        );
    }

    #[test]
    fn redis_settings_on_the_memory_store_are_refused() {
        let memory = |args: &[&str]| {
            let all = ["sluice-limiter"].iter().chain(args);
            Config::try_parse_from(all)
                .expect("arguments parse")
                .check_memory()
        };
        let message = format!(
            "{:#}",
            memory(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap_err()
        );
        assert!(message.contains("add --store redis"), "{message}");
        assert!(memory(&["--redis-cluster"]).is_err());
        assert!(memory(&[]).is_ok());
        assert!(
            parse(&["--redis-url", "redis://127.0.0.1:6379"])
                .check_memory()
                .is_ok()
        );
    }

    #[test]
    fn a_ca_file_needs_a_tls_url() {
        let args = ["--redis-url", "redis://127.0.0.1:6379"];
        let message = redis_error(&[&args[..], &["--redis-ca-file", "/ca.pem"]].concat());
        assert!(
            message.contains("--redis-ca-file needs a rediss://"),
            "{message}"
        );
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let args = ["--redis-url", "rediss://127.0.0.1:6379"];
        let missing = "/nonexistent/sluice-ca.pem";
        let message = redis_error(&[&args[..], &["--redis-ca-file", missing]].concat());
        assert!(message.contains(missing), "{message}");
    }

    #[test]
    fn a_password_from_both_the_environment_and_a_file_is_refused() {
        let file = std::env::temp_dir().join(format!("sluice-pw-{}", std::process::id()));
        std::fs::write(&file, "secret\n").unwrap();
        let args = [
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--redis-password-file",
        ];
        let config = parse(&[&args[..], &[file.to_str().unwrap()]].concat());
        // Read the variable through the config, not the process: other tests
        // run in this process at the same time.
        let message = format!(
            "{:#}",
            config.password_from(Some("env-secret".into())).unwrap_err()
        );
        assert!(message.contains("set one"), "{message}");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn bounds_that_could_never_serve_are_refused_at_start() {
        for (flag, value) in [
            ("--max-in-flight", "0"),
            ("--max-connections", "0"),
            ("--max-body-bytes", "10"),
            ("--breaker-threshold", "0"),
            ("--memory-max-counters", "0"),
        ] {
            let parsed = Config::try_parse_from(["sluice-limiter", flag, value]);
            let message = parsed.expect_err(flag).to_string();
            assert!(message.contains(flag), "{message}");
        }
    }
}
