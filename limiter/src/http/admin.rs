//! Health, readiness, metrics and the served policies.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sluice_crds::{Limit, OnStoreFailure};

use super::{ApiError, AppState, json};
use crate::{metrics::PolicyLabels, policy::effective_limit, store::Store};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: at least one policy is served, so checks can be answered.
pub async fn readyz<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    match state.limiter.policies().is_empty() {
        false => (StatusCode::OK, "ready\n").into_response(),
        true => (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n").into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    let policies = state.limiter.policies();
    state.metrics.policies.set(policies.len() as i64);
    for served in policies.iter() {
        let labels = PolicyLabels {
            policy: served.policy.key.to_string(),
        };
        state
            .metrics
            .multiplier
            .get_or_create(&labels)
            .set(served.multiplier.get());
    }
    if let Some(counters) = state.limiter.store().local_counters() {
        state.metrics.memory_counters.set(counters as i64);
    }
    let mut response = state.metrics.encode().into_response();
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[derive(Serialize)]
struct PolicyView<'a> {
    policy: &'a str,
    multiplier: f64,
    on_store_failure: OnStoreFailure,
    limits: Vec<LimitView<'a>>,
}

#[derive(Serialize)]
struct LimitView<'a> {
    #[serde(flatten)]
    spec: &'a Limit,
    effective: u64,
}

/// `GET /v1/policies`: every served policy with its effective limits.
pub async fn policies<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    let policies = state.limiter.policies();
    let views: Vec<PolicyView> = policies
        .iter()
        .map(|served| {
            let multiplier = served.multiplier.get();
            let spec = &served.policy.source.spec;
            let limits = spec
                .limits
                .iter()
                .map(|spec| LimitView {
                    spec,
                    effective: effective_limit(spec.requests, multiplier),
                })
                .collect();
            PolicyView {
                policy: &served.policy.key,
                multiplier,
                on_store_failure: spec.limiter.on_store_failure,
                limits,
            }
        })
        .collect();
    json(&serde_json::json!({ "policies": views }))
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        None,
        "no such endpoint; see /v1/check, /v1/policies, /healthz, /readyz, /metrics",
    )
}
