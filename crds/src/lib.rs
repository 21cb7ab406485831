//! The `RateLimitPolicy` custom resource of sluice: its Rust types, the
//! rules a valid policy follows, and reading policies from YAML.
//!
//! This crate knows nothing of the limiter or the operator; both depend on
//! it, so that a policy means the same thing wherever it is read.

mod document;
mod duration;
mod multiplier;
pub mod policy;
mod status;
mod validate;

pub use document::{
    API_VERSION, DEFAULT_NAMESPACE, DocumentError, DocumentErrors, KIND, parse_policies,
};
pub use duration::{DURATION_PATTERN, Duration, ParseDurationError, positive_duration};
pub use multiplier::{PublishedMultiplier, multiplier_key};
pub use policy::{
    Adaptive, Bounds, LabelSelector, LatencySignal, Limit, LimitMatch, LimiterSpec, OnStoreFailure,
    PartitionKey, PrometheusSource, Queries, RateLimitPolicy, RateLimitPolicySpec, RatioSignal,
    RedisSpec, SecretKeyRef, Signals, Target,
};
pub use status::{EffectiveLimit, ObservedSignals, RateLimitPolicyStatus};
pub use validate::{FieldError, ValidationErrors, is_dns_label};
