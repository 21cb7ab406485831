//! What the operator reports about a `RateLimitPolicy`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The observed state of a policy, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicyStatus {
    /// The factor every limit is currently scaled by: 1.0 is the base
    /// limits, 0.5 halves them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,

    /// The health signals read at the last adaptation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<ObservedSignals>,

    /// When the multiplier was last computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_adapted_time: Option<Time>,

    /// The limits as enforced now: base and effective requests per window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effective_limits: Vec<EffectiveLimit>,

    /// Limiter pods ready to serve this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Accepted`, `Ready`, `Adapting` and `Degraded`, following the
    /// Kubernetes condition conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Signal values as last read from Prometheus; absent when unknown.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSignals {
    /// CPU used over CPU requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// p99 latency of served requests, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_seconds: Option<f64>,
    /// Fraction of served requests answered with a 5xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Served requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<f64>,
}

/// One limit's base and effective size.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveLimit {
    /// The limit's name.
    pub name: String,
    /// Requests per window at multiplier 1.0.
    pub requests: u64,
    /// Requests per window under the current multiplier.
    pub effective: u64,
}
