//! The limiter's HTTP API: the check endpoint, health, metrics and the
//! served policies.

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;

use std::time::Duration;

use tokio::sync::Semaphore;

use self::serve::ServeLimits;
use crate::{Limiter, metrics::Metrics, store::Store};

mod admin;
mod check;
pub mod headers;
pub mod serve;

pub use check::MAX_COST;

/// What every handler shares.
pub struct AppState<S> {
    /// The engine.
    pub limiter: Arc<Limiter<S>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The largest check body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a check's body may take to arrive.
    pub body_timeout: Duration,
    /// Checks being decided; a check that finds none free is refused.
    pub in_flight: Semaphore,
}

impl<S> AppState<S> {
    /// Handler state with the body and in-flight bounds of `limits`.
    pub fn new(
        limiter: Arc<Limiter<S>>,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
        limits: &ServeLimits,
    ) -> Self {
        Self {
            limiter,
            metrics,
            max_body_bytes,
            body_timeout: limits.body_timeout,
            in_flight: Semaphore::new(limits.max_in_flight),
        }
    }
}

/// The router of the limiter's API.
pub fn router<S: Store>(state: Arc<AppState<S>>) -> Router {
    Router::new()
        .route("/v1/check", post(check::check::<S>))
        .route("/v1/policies", get(admin::policies::<S>))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz::<S>))
        .route("/metrics", get(admin::metrics::<S>))
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .with_state(state)
}

/// An error answered to a client: a status and a JSON body naming the
/// field at fault, if any.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
    degraded: bool,
    overloaded: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
}

impl ApiError {
    fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status,
            field: field.map(str::to_owned),
            message: message.into(),
            degraded: false,
            overloaded: false,
        }
    }

    /// The limiter is at its bound of checks in flight.
    fn overloaded() -> Self {
        let message = "the limiter is at its bound of checks in flight; retry shortly";
        Self {
            overloaded: true,
            ..Self::unavailable(message)
        }
    }

    /// Marks the error as a decision made without the shared store.
    fn degraded(self) -> Self {
        Self {
            degraded: true,
            ..self
        }
    }

    fn bad_request(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(field), message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Some("policy"), message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, None, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            field: self.field.as_deref(),
            degraded: self.degraded,
        };
        let mut response = (self.status, json(&body)).into_response();
        if self.overloaded {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

/// A JSON response body.
fn json<T: Serialize>(value: &T) -> Response {
    // Serializing our own plain structs cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
