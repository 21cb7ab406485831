//! Accepting connections, with the bounds that keep a slow or hostile
//! client from taking a replica down.
//!
//! - at most `max_connections` open connections; past it, new ones are
//!   closed at once (the accept loop never waits);
//! - a client must send a request's headers within `header_timeout`, which
//!   also closes keep-alive connections left idle that long;
//! - a request must finish within `request_timeout` (408 otherwise; this
//!   bounds slow bodies);
//! - at most `max_in_flight` requests are being handled at once; past it,
//!   requests are refused with 503 at once instead of queueing.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::{BoxError, ServiceBuilder};
use tower_http::timeout::TimeoutLayer;

/// The bounds on clients.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Requests being handled at once at most.
    pub max_in_flight: usize,
    /// Time allowed to send a request's headers (and to sit idle).
    pub header_timeout: Duration,
    /// Time allowed for a whole request.
    pub request_timeout: Duration,
    /// Time requests in flight get to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_in_flight: 4_096,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Wraps `router` in the request bounds.
pub fn bounded(router: Router, limits: &ServeLimits) -> Router {
    let layers = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(limits.max_in_flight)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    router.layer(layers)
}

async fn overloaded(_: BoxError) -> Response {
    let body = r#"{"error":"the limiter is at its bound of requests in flight; retry shortly"}"#;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and gives requests in flight `drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment.
                    tracing::warn!(%error, "Failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("Refused a connection: at the connection bound");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("Requests still in flight after the drain timeout; stopping anyway");
        }
    }
}
