//! The operator's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once the operator reached the API server and started; cleared
    /// when it shuts down.
    pub ready: Arc<AtomicBool>,
}

/// The router of the endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the endpoints on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "Serving metrics and health");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `GET /healthz`: the process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the operator reached the API server and runs, as leader
/// or as standby.
async fn readyz(State(state): State<HttpState>) -> Response {
    match state.ready.load(Ordering::Relaxed) {
        true => (StatusCode::OK, "ready\n").into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<HttpState>) -> Response {
    let mut response = state.metrics.encode().into_response();
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::ReconcileResult;

    fn state(ready: bool) -> HttpState {
        HttpState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(ready)),
        }
    }

    async fn get(state: HttpState, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_fails_until_the_operator_has_started() {
        assert_eq!(
            get(state(false), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(state(true), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(state(false), "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_count_reconciles_by_result_and_time_them() {
        let state = state(true);
        state
            .metrics
            .reconciled(ReconcileResult::applied, Duration::from_millis(20));
        state
            .metrics
            .reconciled(ReconcileResult::rejected, Duration::from_millis(1));
        let (status, body) = get(state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("sluice_operator_reconciles_total{result=\"applied\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("sluice_operator_reconciles_total{result=\"rejected\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("sluice_operator_reconcile_duration_seconds_count 2"),
            "{body}"
        );
        assert!(
            body.contains("sluice_operator_policies{readiness=\"ready\"} 0"),
            "{body}"
        );
        assert!(body.contains("sluice_operator_leader 0"), "{body}");
    }
}
