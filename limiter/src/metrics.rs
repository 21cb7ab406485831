//! The limiter's Prometheus metrics, registered in one place.
//!
//! Labels carry policy and limit names, which come from configuration and
//! are few; user ids and endpoints never become labels.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// How a check ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values follow Prometheus' lower case convention
pub enum Outcome {
    /// Admitted.
    allowed,
    /// Denied by a limit (429).
    denied,
    /// Refused because the store failed and the policy says deny (503).
    unavailable,
}

/// Labels of a decided check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `<namespace>/<name>` of the policy.
    pub policy: String,
    /// The deciding limit, empty when none applied.
    pub limit: String,
    /// How it ended.
    pub decision: Outcome,
}

/// Why a request was refused before any decision.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values follow Prometheus' lower case convention
pub enum RejectKind {
    /// Malformed or out-of-range input (400).
    bad_request,
    /// The named policy is not loaded (404).
    unknown_policy,
    /// The body is over the size bound (413).
    too_large,
    /// The body did not arrive in time (408).
    slow_body,
    /// The limiter was at its bound of requests in flight (503).
    overloaded,
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Why.
    pub kind: RejectKind,
}

/// Labels of a failed store call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    /// `timeout` or `backend`.
    pub kind: &'static str,
}

/// Labels of a decision made without the shared store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DegradedLabels {
    /// The policy's `onStoreFailure`: `local`, `allow` or `deny`.
    pub mode: &'static str,
}

/// Labels naming a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `<namespace>/<name>`.
    pub policy: String,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric of a limiter.
pub struct Metrics {
    registry: Registry,
    /// Checks decided, by policy, deciding limit and decision.
    pub checks: Family<CheckLabels, Counter>,
    /// Requests refused before deciding, by kind.
    pub rejects: Family<RejectLabels, Counter>,
    /// Time to decide a check, from parsed request to decision.
    pub check_duration: Histogram,
    /// Policy reloads, by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Policies served now.
    pub policies: Gauge,
    /// The multiplier applied to each policy's limits.
    pub multiplier: Family<PolicyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 when a policy's published multiplier is stale and being eased
    /// back toward 1.0.
    pub multiplier_stale: Family<PolicyLabels, Gauge>,
    /// Counters held by the in-memory store.
    pub memory_counters: Gauge,
    /// Failed calls to the shared store, by kind.
    pub store_errors: Family<StoreErrorLabels, Counter>,
    /// Checks decided without the shared store, by `onStoreFailure` mode.
    pub degraded_checks: Family<DegradedLabels, Counter>,
    /// 1 while the breaker keeps checks away from the shared store.
    pub breaker_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `sluice` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        // 20µs to ~80ms: a check should take well under a millisecond.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(20e-6, 2.0, 13);
        let metrics = Self {
            checks: Family::default(),
            rejects: Family::default(),
            check_duration: Histogram::new(buckets),
            reloads: Family::default(),
            policies: Gauge::default(),
            multiplier: Family::default(),
            multiplier_stale: Family::default(),
            memory_counters: Gauge::default(),
            store_errors: Family::default(),
            degraded_checks: Family::default(),
            breaker_open: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("checks", "Checks decided", metrics.checks.clone());
        registry.register(
            "check_rejects",
            "Checks refused before a decision",
            metrics.rejects.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time to decide a check",
            metrics.check_duration.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reload attempts",
            metrics.reloads.clone(),
        );
        registry.register("policies", "Policies served", metrics.policies.clone());
        registry.register(
            "multiplier",
            "Multiplier applied to a policy's limits",
            metrics.multiplier.clone(),
        );
        registry.register(
            "multiplier_stale",
            "Whether a policy's published multiplier is stale and eased back toward 1.0",
            metrics.multiplier_stale.clone(),
        );
        registry.register(
            "memory_counters",
            "Counters held in memory",
            metrics.memory_counters.clone(),
        );
        registry.register(
            "store_errors",
            "Failed calls to the shared store",
            metrics.store_errors.clone(),
        );
        registry.register(
            "degraded_checks",
            "Checks decided without the shared store",
            metrics.degraded_checks.clone(),
        );
        registry.register(
            "store_breaker_open",
            "Whether the breaker keeps checks away from the shared store",
            metrics.breaker_open.clone(),
        );
        metrics.start_at_zero();
        Self {
            registry,
            ..metrics
        }
    }

    /// Creates every series whose labels are known in advance, at zero, so
    /// that a fresh limiter exports them and `rate()` over them starts from
    /// its first scrape rather than from the first event.
    fn start_at_zero(&self) {
        use RejectKind::*;
        for kind in [
            bad_request,
            unknown_policy,
            too_large,
            slow_body,
            overloaded,
        ] {
            drop(self.rejects.get_or_create(&RejectLabels { kind }));
        }
        for result in ["ok", "error", "unreadable"] {
            drop(self.reloads.get_or_create(&ReloadLabels { result }));
        }
        for kind in ["timeout", "backend"] {
            drop(self.store_errors.get_or_create(&StoreErrorLabels { kind }));
        }
        for mode in ["local", "allow", "deny"] {
            drop(self.degraded_checks.get_or_create(&DegradedLabels { mode }));
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names the API reference documents, from its table.
    fn documented() -> Vec<String> {
        let doc = include_str!("../../docs/api.md");
        let table = doc
            .split("## `GET /metrics`")
            .nth(1)
            .expect("a metrics section");
        table
            .lines()
            .filter_map(|line| line.strip_prefix("| `sluice_"))
            .filter_map(|rest| rest.split('`').next())
            .map(|name| format!("sluice_{}", name.trim_end_matches("_total")))
            .collect()
    }

    #[test]
    fn a_fresh_limiter_exports_counters_of_known_labels_at_zero() {
        let text = Metrics::new().encode();
        for series in [
            "sluice_check_rejects_total{kind=\"overloaded\"} 0",
            "sluice_policy_reloads_total{result=\"error\"} 0",
            "sluice_store_errors_total{kind=\"timeout\"} 0",
            "sluice_degraded_checks_total{mode=\"deny\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn every_documented_metric_is_exported() {
        // Families print only once they hold a series: give each one.
        let m = Metrics::new();
        let policy = PolicyLabels {
            policy: "ns/p".into(),
        };
        let check = CheckLabels {
            policy: "ns/p".into(),
            limit: "l".into(),
            decision: Outcome::allowed,
        };
        m.checks.get_or_create(&check).inc();
        m.rejects
            .get_or_create(&RejectLabels {
                kind: RejectKind::bad_request,
            })
            .inc();
        m.reloads
            .get_or_create(&ReloadLabels { result: "ok" })
            .inc();
        m.multiplier.get_or_create(&policy).set(1.0);
        m.multiplier_stale.get_or_create(&policy).set(0);
        m.store_errors
            .get_or_create(&StoreErrorLabels { kind: "timeout" })
            .inc();
        m.degraded_checks
            .get_or_create(&DegradedLabels { mode: "local" })
            .inc();
        let text = m.encode();
        let names = documented();
        assert!(names.len() >= 10, "found only {names:?}");
        for name in names {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is documented but not exported"
            );
        }
    }
}
