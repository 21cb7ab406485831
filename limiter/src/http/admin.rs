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

/// `GET /readyz`: whether this replica should receive checks.
///
/// Ready when at least one policy is served and either the shared store is
/// reachable or some served policy still decides without it (`local` or
/// `allow`). A replica whose every policy says `deny` while the store is
/// unreachable would only answer 503, so it reports not ready instead; a
/// replica that can decide keeps receiving traffic, degraded or not.
pub async fn readyz<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    let policies = state.limiter.policies();
    if policies.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n").into_response();
    }
    if !state.limiter.is_degraded() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let decides = policies
        .iter()
        .any(|p| p.policy.on_store_failure != OnStoreFailure::Deny);
    match decides {
        true => (
            StatusCode::OK,
            "ready (degraded: the shared store is unreachable)\n",
        )
            .into_response(),
        false => {
            let why = "not ready: the shared store is unreachable and every policy refuses checks meanwhile\n";
            (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
        }
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
    if let Some(counters) = state.limiter.local_counters() {
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

/// A known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    let message = "method not allowed; checks are POST /v1/check, the rest are GET";
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, None, message)
}
