//! The `RateLimitPolicy` resource: what a user writes.
//!
//! The `///` comments on these fields are what `kubectl explain
//! ratelimitpolicy.spec` prints, so they are written for the person
//! applying a policy.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, status::RateLimitPolicyStatus};

/// How many requests a limit may count in one window, at most.
pub const MAX_REQUESTS: u64 = 1_000_000_000;
/// The shortest window a limit may use.
pub const MIN_WINDOW: Duration = Duration::from_millis(10);
/// The longest window a limit may use.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How many limits one policy may hold.
pub const MAX_LIMITS: usize = 64;
/// The longest endpoint pattern a limit may match.
pub const MAX_ENDPOINT_LEN: usize = 256;

/// A set of rate limits for one API, and how they adapt to its health.
///
/// Every limit whose `match` fits a request applies to it; the request
/// passes only when every applicable limit has room.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    plural = "ratelimitpolicies",
    shortname = "rlp",
    namespaced,
    doc = "Rate limits for one API, enforced by sluice limiter pods, and how they adapt to the API's health.",
    status = "RateLimitPolicyStatus",
    printcolumn = r#"{"name":"Multiplier","type":"number","jsonPath":".status.multiplier"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicySpec {
    /// The workload whose health drives adaptation. Needed only when
    /// `adaptive` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,

    /// The limits. A request is admitted only if every limit that applies
    /// to it has room, and a denied request consumes no quota in any limit.
    /// Names must be unique.
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.name == l.name))").message("limit names must be unique"))]
    #[schemars(length(min = 1, max = 64))]
    pub limits: Vec<Limit>,

    /// Tighten every limit when the target is unhealthy, and relax it as
    /// health returns. Without it, limits stay at their base values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<Adaptive>,

    /// How the limiter pods that enforce this policy run.
    #[serde(default)]
    pub limiter: LimiterSpec,
}

/// The pods whose health signals drive the adaptive multiplier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Selects the pods of the protected workload, in the policy's
    /// namespace. Their labels scope the default Prometheus queries.
    pub selector: LabelSelector,
}

/// Equality-based label selection (`app: checkout`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Pods carrying all of these labels are selected.
    #[x_kube(validation = Rule::new("self.size() > 0").message("matchLabels must name at least one label"))]
    pub match_labels: BTreeMap<String, String>,
}

/// One rate limit: at most `requests` in any `window`, counted separately
/// for each distinct value of the `by` keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.window) >= duration('10ms') && duration(self.window) <= duration('24h')").message("window must be between 10ms and 24h"))]
pub struct Limit {
    /// Names the limit in responses, headers and metrics. Lower case
    /// letters, digits and dashes, at most 63 characters.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Which requests this limit counts. Without it, the limit counts every
    /// request of the policy.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<LimitMatch>,

    /// How many requests (or units of cost) the window admits at the base
    /// multiplier of 1.0. Between 1 and 1000000000.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: u64,

    /// The length of the sliding window, from 10ms to 24h, such as `1s`,
    /// `1m` or `1h`.
    pub window: Duration,

    /// Count separately for each distinct value of these request
    /// attributes: `user`, `endpoint`, or both. Empty means one counter
    /// shared by all matching requests. A limit partitioned by `user`
    /// applies only to requests that carry a user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[x_kube(validation = Rule::new("self.all(k, self.exists_one(m, m == k))").message("by must not repeat a key"))]
    pub by: Vec<PartitionKey>,
}

/// A request attribute that partitions a limit's counter.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum PartitionKey {
    /// The user id the check carries.
    User,
    /// The endpoint the check carries, such as `GET /search`.
    Endpoint,
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Endpoint => "endpoint",
        })
    }
}

/// Which requests a limit applies to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitMatch {
    /// The endpoint, such as `GET /search`. A trailing `*` matches every
    /// endpoint that starts with what comes before it (`GET /api/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub endpoint: Option<String>,
}

/// How the policy's multiplier follows the health of its target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.bounds) || self.bounds.min <= self.bounds.max").message("bounds.min must not exceed bounds.max"))]
#[x_kube(validation = Rule::new("!has(self.interval) || (duration(self.interval) >= duration('1s') && duration(self.interval) <= duration('10m'))").message("interval must be between 1s and 10m"))]
pub struct Adaptive {
    /// How often the operator reads the signals and moves the multiplier.
    /// From 1s to 10m; 15s when unset.
    #[serde(default = "defaults::interval")]
    pub interval: Duration,

    /// The health signals and how much each one counts.
    pub signals: Signals,

    /// The fraction of full pressure that one step cuts, in (0, 1]. At 0.5,
    /// a signal at its `max` halves the multiplier in one step.
    #[serde(default = "defaults::sensitivity")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub sensitivity: f64,

    /// How much the multiplier rises per step once the target is healthy,
    /// in (0, 1].
    #[serde(default = "defaults::recovery_step")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub recovery_step: f64,

    /// The range the multiplier moves in.
    #[serde(default)]
    pub bounds: Bounds,

    /// Where the operator reads the signals.
    pub prometheus: PrometheusSource,

    /// PromQL that replaces the default query of a signal. Each query must
    /// return one number: a fraction for `cpu` and `errors`, seconds for
    /// `latency`, requests per second for `requests`.
    #[serde(default)]
    pub queries: Queries,

    /// Below this many served requests per second, the latency and error
    /// signals are too noisy to act on and count as unknown. 1 when unset.
    #[serde(default = "defaults::min_request_rate")]
    #[schemars(range(min = 0.0))]
    pub min_request_rate: f64,
}

/// The signals the adaptive controller reads. At least one must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cpu) || has(self.latency) || has(self.errors)").message("set at least one of cpu, latency, errors"))]
pub struct Signals {
    /// CPU used by the target's containers over their CPU requests, as a
    /// fraction (0.7 is 70 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<RatioSignal>,

    /// The 99th percentile latency of served requests (the limiter's own
    /// denials excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySignal>,

    /// The fraction of served requests that fail with a 5xx status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<RatioSignal>,
}

/// A signal measured as a fraction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.target < self.max").message("target must be below max"))]
pub struct RatioSignal {
    /// How much this signal counts, from 0 (ignored) to 1 (can cut alone
    /// at full strength).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight: f64,
    /// The value at which cutting starts.
    #[schemars(range(min = 0.0))]
    pub target: f64,
    /// The value at which this signal's pressure is full.
    #[schemars(range(min = 0.0))]
    pub max: f64,
}

/// A signal measured as a duration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.target) < duration(self.max)").message("target must be below max"))]
pub struct LatencySignal {
    /// How much this signal counts, from 0 (ignored) to 1 (can cut alone
    /// at full strength).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight: f64,
    /// The latency at which cutting starts, such as `300ms`.
    pub target: Duration,
    /// The latency at which this signal's pressure is full; above target.
    pub max: Duration,
}

/// The range the multiplier moves in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    /// The lowest multiplier, in (0, 1]. 0.05 when unset.
    #[serde(default = "defaults::bound_min")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub min: f64,
    /// The highest multiplier, in (0, 1]. 1.0 when unset.
    #[serde(default = "defaults::bound_max")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub max: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            min: defaults::bound_min(),
            max: defaults::bound_max(),
        }
    }
}

/// A Prometheus server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Its base URL, such as `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
}

/// PromQL overrides, one per signal.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Queries {
    /// Replaces the default CPU query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Replaces the default p99 latency query (result in seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Replaces the default 5xx ratio query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// Replaces the default served-requests-per-second query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
}

/// How the limiter pods run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimiterSpec {
    /// How many limiter pods serve this policy, from 1 to 100. 2 when unset.
    #[serde(default = "defaults::replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// Where the limiters share their counters. Without it, each limiter
    /// counts in its own memory, and a limit holds per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,

    /// What limiters decide while Redis cannot be reached: `local` (count in
    /// memory, each pod at its share of the limit), `allow` (admit
    /// everything) or `deny` (answer 503). `local` when unset.
    #[serde(default)]
    pub on_store_failure: OnStoreFailure,
}

impl Default for LimiterSpec {
    fn default() -> Self {
        Self {
            replicas: defaults::replicas(),
            redis: None,
            on_store_failure: Default::default(),
        }
    }
}

/// A Redis server or cluster shared by the limiters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// `redis://host:port` or `rediss://host:port` (TLS), without a
    /// password: put the password in a Secret and name it in
    /// `passwordSecretRef`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^rediss?://"))]
    pub url: String,

    /// The Secret key holding the Redis password, in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,

    /// Treat `url` as a seed node of a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
}

/// A key of a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What limiters decide while their shared store cannot be reached.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum OnStoreFailure {
    /// Count in each limiter's memory, at its share of every limit.
    #[default]
    Local,
    /// Admit every request.
    Allow,
    /// Answer 503 to every check.
    Deny,
}

/// Default values of optional fields, shared with the documentation.
pub mod defaults {
    use crate::Duration;

    /// `adaptive.interval`.
    pub fn interval() -> Duration {
        Duration::from_secs(15)
    }
    /// `adaptive.sensitivity`.
    pub fn sensitivity() -> f64 {
        0.5
    }
    /// `adaptive.recoveryStep`.
    pub fn recovery_step() -> f64 {
        0.05
    }
    /// `adaptive.bounds.min`.
    pub fn bound_min() -> f64 {
        0.05
    }
    /// `adaptive.bounds.max`.
    pub fn bound_max() -> f64 {
        1.0
    }
    /// `adaptive.minRequestRate`.
    pub fn min_request_rate() -> f64 {
        1.0
    }
    /// `limiter.replicas`.
    pub fn replicas() -> i32 {
        2
    }
}
