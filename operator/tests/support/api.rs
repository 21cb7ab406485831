//! A mock Kubernetes API server on kube's tower-test service: each test
//! states, in order, every call it expects the operator to make, answers
//! it, and fails on a call that is missing, extra, different, or not
//! covered by the declared RBAC rules.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{Handle, SendResponse};

use super::authorize::{self, Permission};

/// How long a test waits for the operator's next call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Permissions used, shared by every mock of a test.
pub type Used = Arc<Mutex<BTreeSet<Permission>>>;

/// The server side of a mock client.
pub struct MockApi {
    handle: Handle<Request<Body>, Response<Body>>,
    used: Used,
    deadline: Duration,
}

/// A client whose every request reaches the returned [`MockApi`].
pub fn mock_client() -> (Client, MockApi) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api = MockApi {
        handle,
        used: Used::default(),
        deadline: CALL_DEADLINE,
    };
    (Client::new(service, "default"), api)
}

/// One request the operator made, waiting for its answer.
pub struct Call {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The URL path.
    pub path: String,
    /// The query parameters.
    pub query: BTreeMap<String, String>,
    /// The content type, when a body was sent.
    pub content_type: Option<String>,
    /// The body as JSON; null when empty.
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl MockApi {
    /// Waits this long for each call instead of [`CALL_DEADLINE`].
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The permissions the calls so far needed.
    pub fn used(&self) -> Used {
        self.used.clone()
    }

    /// The next call, checked against the RBAC rules; fails when none
    /// comes in time.
    pub async fn next(&mut self) -> Call {
        let next = tokio::time::timeout(self.deadline, self.handle.next_request()).await;
        let (request, respond) = next
            .expect("the operator made no further call in time")
            .expect("the client was dropped before the expected call");
        let call = Call::read(request, respond).await;
        self.authorize(&call);
        call
    }

    /// The next call, or `None` once the client is gone; no deadline.
    pub async fn next_or_none(&mut self) -> Option<Call> {
        let (request, respond) = self.handle.next_request().await?;
        let call = Call::read(request, respond).await;
        self.authorize(&call);
        Some(call)
    }

    /// The next call, which must be `method` on `path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            (method, path),
            "unexpected call, body: {}",
            call.body
        );
        call
    }

    fn authorize(&self, call: &Call) {
        let request = authorize::Request {
            method: &call.method,
            path: &call.path,
            watch: call
                .query
                .get("watch")
                .is_some_and(|w| w == "true" || w == "1"),
            content_type: call.content_type.as_deref(),
            body: &call.body,
        };
        for permission in authorize::required(&request) {
            assert!(
                authorize::granted(&permission),
                "{} {} needs `{permission}`, which the declared RBAC rules do not grant",
                call.method,
                call.path
            );
            self.used.lock().unwrap().insert(permission);
        }
    }

    /// Waits for `task` (one pass of the operator) to end, failing on any
    /// call it makes meanwhile; the client stays, for the next pass.
    pub async fn done<T>(&mut self, task: JoinHandle<T>) -> T {
        let mut task = task;
        tokio::select! {
            output = &mut task => output.expect("the operator's task panicked"),
            extra = self.handle.next_request() => match extra {
                Some((request, _)) => {
                    panic!("unexpected extra call: {} {}", request.method(), request.uri())
                }
                None => task.await.expect("the operator's task panicked"),
            },
        }
    }

    /// Waits for `task` (the operator's work) to end, failing on any call
    /// it makes meanwhile, then checks that no call follows once the
    /// client is gone: `keep` holds the last clones of the client and is
    /// dropped first.
    pub async fn finish<T, K>(mut self, task: JoinHandle<T>, keep: K) -> T {
        let mut task = task;
        let output = tokio::select! {
            output = &mut task => output.expect("the operator's task panicked"),
            extra = self.handle.next_request() => match extra {
                Some((request, _)) => {
                    panic!("unexpected extra call: {} {}", request.method(), request.uri())
                }
                None => (&mut task).await.expect("the operator's task panicked"),
            },
        };
        drop(keep);
        let after = tokio::time::timeout(self.deadline, self.handle.next_request()).await;
        if let Ok(Some((request, _))) = after {
            panic!(
                "unexpected extra call: {} {}",
                request.method(),
                request.uri()
            );
        }
        output
    }
}

impl Call {
    async fn read(request: Request<Body>, respond: SendResponse<Response<Body>>) -> Self {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body reads");
        let body = match bytes.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&bytes).expect("request body is JSON"),
        };
        let query = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (pair.to_owned(), String::new()),
            })
            .collect();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            content_type,
            body,
            respond,
        }
    }

    /// Asserts this is a forced server-side apply by `sluice-operator`.
    pub fn assert_applied(&self) {
        assert_eq!(self.method, "PATCH", "{}", self.path);
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{}",
            self.path
        );
        assert_eq!(
            self.query.get("fieldManager").map(String::as_str),
            Some("sluice-operator"),
            "{}",
            self.path
        );
        assert_eq!(
            self.query.get("force").map(String::as_str),
            Some("true"),
            "{}",
            self.path
        );
    }

    /// Asserts this is a forced server-side apply of exactly `expected`.
    pub fn assert_applies(&self, expected: &Value) {
        self.assert_applied();
        assert_eq!(
            &self.body, expected,
            "{} applied a different object",
            self.path
        );
    }

    /// Answers with `code` and `body`.
    pub fn reply(self, code: u16, body: &Value) {
        let response = Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers 200 with the object sent, as stored: with a uid, a
    /// resourceVersion and a generation, merged with `extra`.
    pub fn reply_stored(self, extra: Value) {
        let mut stored = self.body.clone();
        let meta = &mut stored["metadata"];
        meta["uid"] = json!("00000000-0000-4000-8000-00000000c41d");
        meta["resourceVersion"] = json!("7");
        meta["generation"] = json!(1);
        merge(&mut stored, extra);
        self.reply(200, &stored);
    }

    /// Answers with a Kubernetes `Status` failure.
    pub fn reply_failure(self, code: u16, reason: &str, message: &str) {
        let status = json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "code": code, "reason": reason, "message": message,
        });
        self.reply(code, &status);
    }
}

/// Merges `patch` into `target`, object by object.
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// Runs `future` on its own task, as the controller would.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}
