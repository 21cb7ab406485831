//! The command line of `sluice-operator`: one subcommand per way to run.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use sluice_crds::positive_duration;

use crate::leader::Timings;

/// The limiter image when `--limiter-image` is not given: the release of
/// `sluice-limiter` that matches this operator.
pub const DEFAULT_LIMITER_IMAGE: &str =
    concat!("sluice/sluice-limiter:", env!("CARGO_PKG_VERSION"));

/// Runs sluice's RateLimitPolicies on Kubernetes.
#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-operator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The ways to run the operator.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Reconcile every RateLimitPolicy in the cluster into limiter pods.
    Run(RunArgs),
    /// Print the RBAC roles and bindings the operator needs, as YAML.
    Rbac(RbacArgs),
    /// Run the adaptive loop of the policies in a file, without
    /// Kubernetes: signals from Prometheus, multipliers to Redis.
    Adapt(crate::adaptive::standalone::AdaptArgs),
}

/// Settings of `sluice-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The image of the limiter pods.
    #[arg(long, env = "SLUICE_LIMITER_IMAGE", default_value = DEFAULT_LIMITER_IMAGE)]
    pub limiter_image: String,

    /// Where to serve /metrics, /healthz and /readyz. In a pod, pass
    /// `0.0.0.0:8081` so that the kubelet and Prometheus reach it.
    #[arg(long, env = "SLUICE_OPERATOR_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// The namespace of the leader-election Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// The name of the leader-election Lease.
    #[arg(long, default_value = "sluice-operator")]
    pub lease_name: String,

    /// This replica's name in the election and in Events; the pod name.
    /// Defaults to the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long others wait for a silent leader before taking over.
    #[arg(long, default_value = "15s", value_parser = positive_duration)]
    pub lease_duration: Duration,

    /// How long a leader keeps leading without a successful renewal;
    /// shorter than the lease duration.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub renew_deadline: Duration,

    /// How often the Lease is tried.
    #[arg(long, default_value = "2s", value_parser = positive_duration)]
    pub retry_period: Duration,

    /// How long the start waits for the API server's first answer.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub api_timeout: Duration,

    /// The longest a Prometheus query, or connecting and publishing to
    /// Redis, may take during an adaptation tick.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub adaptive_timeout: Duration,
}

impl RunArgs {
    /// The election timings these arguments ask for.
    pub fn timings(&self) -> Timings {
        Timings {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }

    /// This replica's identity: `--identity`, else the host name, else one
    /// made from the process id.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("sluice-operator-{}", std::process::id()))
    }
}

/// Settings of `sluice-operator rbac`.
#[derive(Args, Debug, Clone)]
pub struct RbacArgs {
    /// The name of the roles, the bindings and the service account.
    #[arg(long, default_value = "sluice-operator")]
    pub name: String,

    /// The namespace the operator runs in.
    #[arg(long, default_value = "sluice-system")]
    pub namespace: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limiter_image_is_this_release_without_a_registry_host() {
        let cli = Cli::try_parse_from(["sluice-operator", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(
            args.limiter_image,
            format!("sluice/sluice-limiter:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(args.limiter_image.split('/').count(), 2);
        assert_eq!(args.timings(), Timings::default());
        assert_eq!(args.adaptive_timeout, Duration::from_secs(5));
    }

    #[test]
    fn run_takes_an_image_and_election_timings() {
        let cli = Cli::try_parse_from([
            "sluice-operator",
            "run",
            "--limiter-image",
            "example/limiter:dev",
            "--lease-duration",
            "30s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.limiter_image, "example/limiter:dev");
        assert_eq!(args.lease_duration, Duration::from_secs(30));
    }

    #[test]
    fn a_zero_duration_is_refused() {
        let parsed = Cli::try_parse_from(["sluice-operator", "run", "--retry-period", "0s"]);
        assert!(parsed.is_err());
    }
}
