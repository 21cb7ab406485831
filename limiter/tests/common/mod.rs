//! What the integration suites share: test policies, a limiter on a manual
//! clock, and the router driven without a port.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Method, Request, StatusCode},
};
use serde_json::Value;
use sluice_crds::{RateLimitPolicy, parse_policies};
use sluice_limiter::{
    Limiter,
    clock::ManualClock,
    http::{AppState, router, serve::ServeLimits},
    metrics::Metrics,
    store::{MemoryStore, MemoryStoreConfig},
};
use tower::ServiceExt;

/// The tests' epoch: a whole minute, so every window of the test policies
/// starts exactly here.
pub const T0: u64 = 1_800_000_000_000;

/// The bound on check bodies the test servers use.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `default/api`: a coarse global limit, a small per-user one, and a
/// smaller one on a user's searches.
pub const API_POLICY: &str = "
apiVersion: sluice.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api}
spec:
  limits:
    - {name: global, requests: 1000, window: 1s}
    - {name: per-user, requests: 3, window: 1m, by: [user]}
    - name: search-per-user
      match: {endpoint: GET /search}
      requests: 2
      window: 10s
      by: [user]
";

/// `shop/orders`: a second policy, in another namespace.
pub const ORDERS_POLICY: &str = "
apiVersion: sluice.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders, namespace: shop}
spec:
  limits:
    - {name: per-user, requests: 7, window: 1m, by: [user]}
";

/// Parses policies the way the limiter's loader does; panics on a bad one.
pub fn policies(yaml: &str) -> Vec<RateLimitPolicy> {
    parse_policies(yaml, "test policy").expect("test policy is valid")
}

/// A limiter on a manual clock standing at [`T0`], with its router.
pub struct Harness {
    /// Moves the store's time.
    pub clock: ManualClock,
    /// The engine behind the router.
    pub limiter: Arc<Limiter<MemoryStore>>,
    router: Router,
}

impl Harness {
    /// Serves every policy in `yaml` (documents separated by `---`).
    pub fn new(yaml: &str) -> Self {
        Self::with_limits(yaml, &ServeLimits::default())
    }

    /// Like [`new`](Self::new), with these bounds on requests.
    pub fn with_limits(yaml: &str, limits: &ServeLimits) -> Self {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::with_clock(MemoryStoreConfig::default(), Arc::new(clock.clone()));
        let limiter = Arc::new(Limiter::new(policies(yaml), store));
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(AppState::new(
            limiter.clone(),
            metrics,
            MAX_BODY_BYTES,
            limits,
        ));
        Self {
            clock,
            limiter,
            router: router(state),
        }
    }

    /// Serves [`API_POLICY`] alone.
    pub fn api() -> Self {
        Self::new(API_POLICY)
    }

    /// `POST /v1/check` with `body` as JSON.
    pub async fn check(&self, body: Value) -> Reply {
        self.post(body.to_string()).await
    }

    /// `POST /v1/check` with these exact bytes.
    pub async fn post(&self, body: impl Into<Body>) -> Reply {
        self.send(Method::POST, "/v1/check", body.into()).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Body::empty()).await
    }

    async fn send(&self, method: Method, path: &str, body: Body) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body)
            .expect("request is well formed");
        self.request(request).await
    }

    /// Sends `request` as it is.
    pub async fn request(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("response body is readable");
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }

    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is visible ASCII"))
    }
}
