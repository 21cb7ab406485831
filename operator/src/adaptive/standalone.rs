//! `sluice-operator adapt`: the adaptive loop without Kubernetes.
//!
//! Reads policies from a file, and for each policy that adapts, every
//! interval: reads its signals from Prometheus, moves its multiplier,
//! publishes it in Redis for the limiters, and prints the decision as one
//! JSON line on stdout. For VMs, and for the end-to-end tests.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use prometheus_http_query::Client;
use sluice_limiter::store::{RedisConfig, RedisStore, redis::check_url};

use super::{adapter::Adapter, signals};
use sluice_crds::{RateLimitPolicy, positive_duration};

/// Settings of `sluice-operator adapt`.
#[derive(Args, Debug, Clone)]
pub struct AdaptArgs {
    /// A file of RateLimitPolicy documents; those with `adaptive` adapt.
    #[arg(long)]
    pub policy: PathBuf,

    /// Redis the limiters read multipliers from: `redis://host:port`.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    pub redis: String,

    /// The Redis URL names nodes of a Redis Cluster.
    #[arg(long)]
    pub redis_cluster: bool,

    /// A file holding the Redis password (or SLUICE_REDIS_PASSWORD).
    #[arg(long)]
    pub redis_password_file: Option<PathBuf>,

    /// Prometheus to read signals from; overrides each policy's
    /// `adaptive.prometheus.url`.
    #[arg(long)]
    pub prometheus: Option<String>,

    /// Overrides each policy's `adaptive.interval`.
    #[arg(long, value_parser = positive_duration)]
    pub interval: Option<Duration>,

    /// The longest a Prometheus query or Redis call may take.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub timeout: Duration,
}

/// Sets every adaptive policy's interval. The interval is the controller's
/// clock: its healthy period, settle time and blind hold are counted in
/// intervals, so an override replaces the policy's interval before the
/// controller is built from it, not only how often it ticks.
fn set_interval(policies: &mut [RateLimitPolicy], interval: Duration) {
    let adaptive = policies.iter_mut().filter_map(|p| p.spec.adaptive.as_mut());
    adaptive.for_each(|a| a.interval = interval.into());
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn adapt(args: AdaptArgs) -> anyhow::Result<()> {
    args.check()?;
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read {}", args.policy.display()))?;
    let mut policies = sluice_crds::parse_policies(&text, &args.policy.display().to_string())?;
    if let Some(interval) = args.interval {
        set_interval(&mut policies, interval);
    }
    let adapters: Vec<Adapter> = policies
        .iter()
        .filter_map(|p| Adapter::for_policy(p, None))
        .collect();
    anyhow::ensure!(
        !adapters.is_empty(),
        "no policy in {} has spec.adaptive",
        args.policy.display()
    );
    let redis = RedisStore::connect(&redis_config(&args)?)
        .await
        .context("cannot connect to Redis")?;
    let stale: Vec<Duration> = policies
        .iter()
        .filter(|p| p.spec.adaptive.is_some())
        .map(|p| p.spec.multiplier_stale_after().as_std())
        .collect();

    let mut loops = tokio::task::JoinSet::new();
    for (adapter, stale_after) in adapters.into_iter().zip(stale) {
        let url = args
            .prometheus
            .clone()
            .unwrap_or_else(|| adapter.prometheus_url.clone());
        let prometheus =
            Client::try_from(url.as_str()).with_context(|| format!("bad Prometheus URL {url}"))?;
        loops.spawn(run_one(
            adapter,
            prometheus,
            redis.clone(),
            stale_after * 3,
            args.timeout,
        ));
    }
    tokio::select! {
        () = crate::run::signal() => {},
        _ = loops.join_next() => {},
    }
    Ok(())
}

/// One policy's loop; the published key lives `ttl`, several intervals.
async fn run_one(
    mut adapter: Adapter,
    prometheus: Client,
    redis: RedisStore,
    ttl: Duration,
    timeout: Duration,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(adapter.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reading = signals::read(&prometheus, &adapter.queries, timeout).await;
        let decision = adapter.tick(&reading, started.elapsed());
        let published = redis
            .publish_multiplier(&adapter.policy, decision.multiplier, ttl)
            .await;
        if let Err(error) = &published {
            tracing::warn!(policy = %adapter.policy, %error, "Failed to publish the multiplier; limiters keep the last one");
        }
        let mut line = serde_json::to_value(&decision).unwrap_or_default();
        line["published"] = published.is_ok().into();
        println!("{line}");
    }
}

impl AdaptArgs {
    /// Holds the flags to the rules a policy's fields follow.
    fn check(&self) -> anyhow::Result<()> {
        check_url(&self.redis).map_err(|e| anyhow::anyhow!("--redis {e}"))?;
        if let Some(url) = &self.prometheus {
            let http = url.starts_with("http://") || url.starts_with("https://");
            anyhow::ensure!(http, "--prometheus must start with http:// or https://");
        }
        if let Some(interval) = self.interval {
            let range = Duration::from_secs(1)..=Duration::from_secs(600);
            anyhow::ensure!(
                range.contains(&interval),
                "--interval must be between 1s and 10m"
            );
        }
        Ok(())
    }
}

fn redis_config(args: &AdaptArgs) -> anyhow::Result<RedisConfig> {
    let password = match &args.redis_password_file {
        Some(path) => Some(std::fs::read_to_string(path)?.trim_end().to_owned()),
        None => std::env::var("SLUICE_REDIS_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
    };
    Ok(RedisConfig {
        url: args.redis.clone(),
        cluster: args.redis_cluster,
        password,
        ca_cert: None,
        timeout: args.timeout,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn refused(extra: &[&str]) -> String {
        let redis = ["--redis", "redis://127.0.0.1:1"];
        let redis = if extra.contains(&"--redis") {
            &[][..]
        } else {
            &redis[..]
        };
        let base = ["sluice-operator", "adapt", "--policy", "p.yaml"];
        let cli = Cli::try_parse_from(base.iter().chain(redis).chain(extra)).expect("flags parse");
        let Command::Adapt(args) = cli.command else {
            panic!("adapt")
        };
        format!("{:#}", args.check().expect_err("refused"))
    }

    #[test]
    fn adapt_flags_follow_the_rules_of_policy_fields() {
        assert!(refused(&["--interval", "1ms"]).contains("--interval"));
        assert!(refused(&["--prometheus", "ftp://127.0.0.1:1"]).contains("--prometheus"));
        let message = refused(&["--redis", "redis://:s3cret@127.0.0.1:1"]);
        assert!(
            message.contains("--redis must not hold credentials"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn an_interval_override_becomes_the_controllers_clock() {
        let text = std::fs::read_to_string("../examples/checkout.yaml").unwrap();
        let mut policies = sluice_crds::parse_policies(&text, "checkout.yaml").unwrap();
        let two = std::time::Duration::from_secs(2);
        super::set_interval(&mut policies, two);
        let adaptive = policies[0].spec.adaptive.as_ref().unwrap();
        assert_eq!(adaptive.interval.as_std(), two);
        let adapter = super::Adapter::for_policy(&policies[0], None).unwrap();
        assert_eq!(adapter.interval, two);
    }
}
