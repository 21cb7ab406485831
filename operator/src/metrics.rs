//! The operator's Prometheus metrics, registered in one place.
//!
//! Labels carry only bounded values: a result, a readiness, a signal, and
//! the `<namespace>/<name>` of an adaptive policy (bounded by the policies
//! in the cluster; a policy's series go when it stops adapting or this
//! replica stops leading).

use std::{
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use kube::runtime::reflector::Store;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use sluice_crds::RateLimitPolicy;

use crate::{
    adaptive::signals::{Reading, SignalError},
    conditions,
};

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values follow Prometheus' lower case convention
pub enum ReconcileResult {
    /// The children were applied and the status written.
    applied,
    /// The spec is invalid; only the status was written.
    rejected,
    /// An API call failed; the reconcile is retried with backoff.
    failed,
    /// This replica does not lead; nothing was written.
    skipped,
}

/// Labels of a finished reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// How it ended.
    pub result: ReconcileResult,
}

/// Whether a policy's `Ready` condition holds.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values follow Prometheus' lower case convention
pub enum Readiness {
    /// `Ready=True`.
    ready,
    /// `Ready=False`.
    not_ready,
    /// No `Ready` condition yet.
    unknown,
}

/// Labels of the policy census.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadinessLabels {
    /// The readiness counted.
    pub readiness: Readiness,
}

/// Labels of a per-policy series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `<namespace>/<name>`.
    pub policy: String,
}

/// A health signal, as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values follow Prometheus' lower case convention
pub enum Signal {
    /// CPU used over requested.
    cpu,
    /// p99 latency of served requests, seconds.
    latency,
    /// 5xx ratio of served requests.
    errors,
    /// Served requests per second.
    requests,
}

impl Signal {
    /// Every signal, in the order of [`Reading::values`].
    pub const ALL: [Signal; 4] = [Self::cpu, Self::latency, Self::errors, Self::requests];
}

/// Labels of a per-policy, per-signal series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// `<namespace>/<name>`.
    pub policy: String,
    /// The signal.
    pub signal: Signal,
}

type Ratio = Gauge<f64, AtomicU64>;

/// Every metric of the operator.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles finished, by result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Time a reconcile took, from start to result.
    pub reconcile_duration: Histogram,
    /// Policies by readiness, counted at scrape time.
    pub policies: Family<ReadinessLabels, Gauge>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Each adaptive policy's multiplier.
    pub multiplier: Family<PolicyLabels, Ratio>,
    /// Each adaptive policy's signals, known values only.
    pub signal: Family<SignalLabels, Ratio>,
    /// Queries Prometheus failed to answer, by policy and signal.
    pub prometheus_query_errors: Family<SignalLabels, Counter>,
    /// Multipliers that could not be published, by policy.
    pub publish_errors: Family<PolicyLabels, Counter>,
    census: Mutex<Option<Store<RateLimitPolicy>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `sluice_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice_operator");
        // 5ms to ~20s: a reconcile is a handful of API calls.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 12);
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(buckets),
            policies: Family::default(),
            leader: Gauge::default(),
            multiplier: Family::default(),
            signal: Family::default(),
            prometheus_query_errors: Family::default(),
            publish_errors: Family::default(),
            census: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles finished, by result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "policies",
            "Policies by readiness",
            metrics.policies.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        registry.register(
            "multiplier",
            "The multiplier of each adaptive policy",
            metrics.multiplier.clone(),
        );
        registry.register(
            "signal",
            "Each adaptive policy's signals as last read, known values only",
            metrics.signal.clone(),
        );
        registry.register(
            "prometheus_query_errors",
            "Signal queries Prometheus did not answer (no data is not an error)",
            metrics.prometheus_query_errors.clone(),
        );
        registry.register(
            "publish_errors",
            "Multipliers that could not be published for the limiters",
            metrics.publish_errors.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a finished reconcile.
    pub fn reconciled(&self, result: ReconcileResult, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { result })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Records a tick of `policy`: its multiplier, each signal read (a
    /// signal now unknown loses its series), and each query Prometheus did
    /// not answer.
    pub fn adapted(&self, policy: &str, multiplier: f64, reading: &Reading) {
        let labels = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.multiplier.get_or_create(&labels).set(multiplier);
        for (signal, value) in Signal::ALL.into_iter().zip(&reading.values) {
            let labels = SignalLabels {
                policy: policy.to_owned(),
                signal,
            };
            match value {
                Ok(value) => {
                    self.signal.get_or_create(&labels).set(*value);
                }
                Err(error) => {
                    self.signal.remove(&labels);
                    if matches!(error, SignalError::QueryPrometheus(_)) {
                        self.prometheus_query_errors.get_or_create(&labels).inc();
                    }
                }
            }
        }
    }

    /// Counts a multiplier of `policy` that could not be published.
    pub fn publish_failed(&self, policy: &str) {
        let labels = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.publish_errors.get_or_create(&labels).inc();
    }

    /// Drops every series of `policy`, which no longer adapts here.
    pub fn forget_policy(&self, policy: &str) {
        let labels = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.multiplier.remove(&labels);
        self.publish_errors.remove(&labels);
        for signal in Signal::ALL {
            let labels = SignalLabels {
                policy: policy.to_owned(),
                signal,
            };
            self.signal.remove(&labels);
            self.prometheus_query_errors.remove(&labels);
        }
    }

    /// Counts policies from `store` at each scrape; `None` while this
    /// replica does not lead, when it has no view of them.
    pub fn count_policies_in(&self, store: Option<Store<RateLimitPolicy>>) {
        *self.census.lock().unwrap_or_else(|e| e.into_inner()) = store;
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        self.take_census();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn take_census(&self) {
        let census = self.census.lock().unwrap_or_else(|e| e.into_inner());
        let policies = census.as_ref().map(Store::state).unwrap_or_default();
        for readiness in [Readiness::ready, Readiness::not_ready, Readiness::unknown] {
            let count = policies
                .iter()
                .filter(|p| readiness_of(p) == readiness)
                .count();
            let gauge = self.policies.get_or_create(&ReadinessLabels { readiness });
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

/// The readiness a policy's status reports.
pub fn readiness_of(policy: &RateLimitPolicy) -> Readiness {
    let conditions = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match conditions::find(conditions, conditions::READY).map(|c| c.status.as_str()) {
        Some("True") => Readiness::ready,
        Some("False") => Readiness::not_ready,
        _ => Readiness::unknown,
    }
}
