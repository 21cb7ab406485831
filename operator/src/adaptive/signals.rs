//! Reading the target's health from Prometheus.
//!
//! The default queries assume the common metric names and scrape setup:
//!
//! - CPU: cAdvisor's `container_cpu_usage_seconds_total` over
//!   kube-state-metrics' `kube_pod_container_resource_requests{resource="cpu"}`,
//!   both joined to the target's pods through `kube_pod_labels`;
//! - HTTP: `http_requests_total` (label `code`) and the histogram
//!   `http_request_duration_seconds`, scraped with the pod's `namespace` and
//!   its labels as target labels (what a `labelmap` of pod labels gives).
//!
//! The limiter's own 429s are left out of latency, errors and the request
//! rate: an API that mostly answers 429 is protected, not failing. A query
//! that returns nothing is an unknown signal, never zero: no query pads a
//! missing series with `or vector(0)`. The one place a zero is made up is
//! the count of 5xx when requests are served but none failed, where it is
//! made from those requests' own series, so it exists only when they do.
//! Any signal can be replaced by a query of the policy's `adaptive.queries`.

use std::{collections::BTreeMap, time::Duration};

use prometheus_http_query::{Client, response::Data};
use sluice_crds::{DEFAULT_NAMESPACE, RateLimitPolicy};

use super::controller::Observation;

/// The window `rate()` looks back over in the default queries.
pub const RATE_WINDOW: &str = "1m";

/// The PromQL of each signal of one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalQueries {
    /// CPU used over CPU requested.
    pub cpu: String,
    /// p99 latency of served requests, seconds.
    pub latency: String,
    /// 5xx ratio of served requests.
    pub errors: String,
    /// Served requests per second.
    pub requests: String,
}

impl SignalQueries {
    /// The queries for `policy`: its overrides, or the defaults scoped to
    /// its target's pods.
    pub fn for_policy(policy: &RateLimitPolicy) -> Self {
        let namespace = policy
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let labels = policy
            .spec
            .target
            .as_ref()
            .map(|t| t.selector.match_labels.clone())
            .unwrap_or_default();
        let defaults = Self::defaults(namespace, &labels);
        let Some(overrides) = policy.spec.adaptive.as_ref().map(|a| &a.queries) else {
            return defaults;
        };
        let pick = |custom: &Option<String>, default: String| custom.clone().unwrap_or(default);
        Self {
            cpu: pick(&overrides.cpu, defaults.cpu),
            latency: pick(&overrides.latency, defaults.latency),
            errors: pick(&overrides.errors, defaults.errors),
            requests: pick(&overrides.requests, defaults.requests),
        }
    }

    /// The default queries for pods in `namespace` carrying `labels`.
    pub fn defaults(namespace: &str, labels: &BTreeMap<String, String>) -> Self {
        let w = RATE_WINDOW;
        let ns = format!("namespace=\"{}\"", escape(namespace));
        let pod_labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("label_{}=\"{}\"", sanitize(k), escape(v)))
            .collect();
        let pods = format!(
            "max by (namespace, pod) (kube_pod_labels{{{ns},{}}})",
            pod_labels.join(",")
        );
        let target: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape(v)))
            .collect();
        let http = format!("{ns},{}", target.join(","));
        let served = format!("{http},code!=\"429\"");
        Self {
            cpu: format!(
                "sum(rate(container_cpu_usage_seconds_total{{{ns},container!=\"\"}}[{w}]) * on(namespace, pod) group_left() {pods}) \
                 / sum(kube_pod_container_resource_requests{{{ns},resource=\"cpu\"}} * on(namespace, pod) group_left() {pods})"
            ),
            latency: format!(
                "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{served}}}[{w}])))"
            ),
            errors: format!(
                "(sum(rate(http_requests_total{{{http},code=~\"5..\"}}[{w}])) or sum(rate(http_requests_total{{{served}}}[{w}])) * 0) \
                 / sum(rate(http_requests_total{{{served}}}[{w}]))"
            ),
            requests: format!("sum(rate(http_requests_total{{{served}}}[{w}]))"),
        }
    }
}

/// A Prometheus label name made from a Kubernetes label key, the way
/// kube-state-metrics and `labelmap` do: every other character becomes `_`.
pub fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Why a signal is unknown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignalError {
    /// Prometheus could not be asked or answered with an error.
    #[error("failed to query Prometheus: {0}")]
    QueryPrometheus(String),
    /// The query returned nothing: no such series (yet), or they are stale.
    #[error("the query returned no data")]
    Empty,
    /// The query returned several series instead of one number.
    #[error("the query returned {0} series; it must return one number")]
    NotOneNumber(usize),
    /// The value is not a finite number of 0 or more.
    #[error("the query returned {0}, which is not a usable value")]
    NotUsable(f64),
}

/// One round of reading: each signal's value or why it is unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// CPU, latency, errors, requests, in that order.
    pub values: [Result<f64, SignalError>; 4],
}

impl Reading {
    /// The observation the controller takes: unknown signals are `None`.
    pub fn observation(&self) -> Observation {
        let v = |i: usize| self.values[i].as_ref().ok().copied();
        Observation {
            cpu: v(0),
            latency: v(1),
            errors: v(2),
            request_rate: v(3),
        }
    }

    /// Whether Prometheus itself failed for every query (down or unreachable).
    pub fn prometheus_unreachable(&self) -> bool {
        self.values
            .iter()
            .all(|v| matches!(v, Err(SignalError::QueryPrometheus(_))))
    }
}

/// Asks Prometheus at `client` for every signal, concurrently, each
/// bounded by `timeout`.
pub async fn read(client: &Client, queries: &SignalQueries, timeout: Duration) -> Reading {
    let ask = |q: &str| query_one(client, q.to_owned(), timeout);
    let (cpu, latency, errors, requests) = tokio::join!(
        ask(&queries.cpu),
        ask(&queries.latency),
        ask(&queries.errors),
        ask(&queries.requests)
    );
    Reading {
        values: [cpu, latency, errors, requests],
    }
}

async fn query_one(client: &Client, query: String, timeout: Duration) -> Result<f64, SignalError> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let asked = tokio::time::timeout(timeout, client.query(query).timeout(ms).get()).await;
    let result = match asked {
        Err(_) => {
            return Err(SignalError::QueryPrometheus(format!(
                "no answer within {timeout:?}"
            )));
        }
        Ok(result) => result.map_err(|e| SignalError::QueryPrometheus(e.to_string()))?,
    };
    let value = match result.data() {
        Data::Scalar(sample) => sample.value(),
        Data::Vector(samples) => match samples.as_slice() {
            [] => return Err(SignalError::Empty),
            [one] => one.sample().value(),
            many => return Err(SignalError::NotOneNumber(many.len())),
        },
        Data::Matrix(series) => return Err(SignalError::NotOneNumber(series.len())),
    };
    match value.is_finite() && value >= 0.0 {
        true => Ok(value),
        false => Err(SignalError::NotUsable(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_queries_scope_to_the_targets_namespace_and_labels() {
        let labels = BTreeMap::from([("app.kubernetes.io/name".to_owned(), "checkout".to_owned())]);
        let q = SignalQueries::defaults("shop", &labels);
        assert!(
            q.cpu.contains(
                "kube_pod_labels{namespace=\"shop\",label_app_kubernetes_io_name=\"checkout\"}"
            ),
            "{}",
            q.cpu
        );
        assert!(
            q.requests
                .contains("namespace=\"shop\",app_kubernetes_io_name=\"checkout\",code!=\"429\""),
            "{}",
            q.requests
        );
    }

    #[test]
    fn the_limiters_own_429s_are_left_out_of_latency_errors_and_rate() {
        let q = SignalQueries::defaults(
            "shop",
            &BTreeMap::from([("app".to_owned(), "x".to_owned())]),
        );
        assert!(q.latency.contains("code!=\"429\""));
        assert!(q.requests.contains("code!=\"429\""));
        assert!(
            q.errors.ends_with(
                "/ sum(rate(http_requests_total{namespace=\"shop\",app=\"x\",code!=\"429\"}[1m]))"
            ),
            "{}",
            q.errors
        );
    }

    #[test]
    fn no_query_pads_missing_data_with_a_zero_vector() {
        let q = SignalQueries::defaults(
            "shop",
            &BTreeMap::from([("app".to_owned(), "x".to_owned())]),
        );
        for query in [&q.cpu, &q.latency, &q.errors, &q.requests] {
            assert!(!query.contains("vector(0)"), "{query}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let q = SignalQueries::defaults(
            "shop",
            &BTreeMap::from([("app".to_owned(), "a\"b".to_owned())]),
        );
        assert!(q.requests.contains("app=\"a\\\"b\""), "{}", q.requests);
    }
}
