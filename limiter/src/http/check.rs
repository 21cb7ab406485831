//! `POST /v1/check`: may this request pass?

use std::{borrow::Cow, sync::Arc, time::Instant};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use sluice_crds::policy::MAX_REQUESTS;

use super::{ApiError, AppState, headers};
use crate::{
    CheckError,
    decision::Decision,
    metrics::{CheckLabels, Outcome, RejectKind},
    policy::Request,
    registry::ResolveError,
    store::Store,
};

/// The largest cost a check may carry: the largest limit a policy may set.
pub const MAX_COST: u64 = MAX_REQUESTS;

/// The body of a check, as sent.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CheckBody<'a> {
    #[serde(borrow, default)]
    policy: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    endpoint: Option<Cow<'a, str>>,
    #[serde(default)]
    cost: Option<serde_json::Number>,
}

/// The deciding limit, as answered.
#[derive(Serialize)]
struct LimitBody<'a> {
    name: &'a str,
    requests: u64,
    effective: u64,
    window_ms: u64,
}

/// The answer to a check.
#[derive(Serialize)]
struct DecisionBody<'a> {
    allowed: bool,
    policy: &'a str,
    limit: Option<LimitBody<'a>>,
    remaining: Option<u64>,
    reset_after_ms: Option<u64>,
    retry_after_ms: Option<u64>,
    reason: Option<&'static str>,
    multiplier: f64,
    degraded: bool,
}

/// Handles `POST /v1/check`.
pub async fn check<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match decide(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(kind) = error.reject_kind() {
                state
                    .metrics
                    .rejects
                    .get_or_create(&crate::metrics::RejectLabels { kind })
                    .inc();
            }
            error.into_response()
        }
    }
}

async fn decide<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(state, headers, body).await?;
    // Only a request whose body has arrived counts against the bound of
    // requests in flight: a client trickling its body holds a connection,
    // never a slot another client needs.
    let _slot = state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::overloaded())?;
    let parsed = parse(&bytes)?;
    let request = Request {
        user: parsed.user.as_deref(),
        endpoint: parsed.endpoint.as_deref(),
        cost: parse_cost(parsed.cost.as_ref())?,
    };
    let started = Instant::now();
    let (served, decision) = state
        .limiter
        .check(parsed.policy.as_deref(), &request)
        .await
        .map_err(|e| match e {
            CheckError::Policy(e @ ResolveError::Unknown(_)) => ApiError::not_found(e.to_string()),
            CheckError::Policy(e @ ResolveError::Ambiguous(_)) => {
                ApiError::bad_request("policy", e.to_string())
            }
            CheckError::Store(e) => ApiError::unavailable(format!("cannot decide now: {e}")),
            // Never a 429: the client did nothing wrong, the limiter cannot count.
            CheckError::Unavailable => ApiError::unavailable(e.to_string()).degraded(),
        })?;
    state
        .metrics
        .check_duration
        .observe(started.elapsed().as_secs_f64());
    let limit = decision
        .deciding_limit()
        .map(|l| l.name.as_ref())
        .unwrap_or_default();
    let outcome = if decision.allowed {
        Outcome::allowed
    } else {
        Outcome::denied
    };
    let labels = CheckLabels {
        policy: served.policy.key.to_string(),
        limit: limit.to_owned(),
        decision: outcome,
    };
    state.metrics.checks.get_or_create(&labels).inc();
    Ok(respond(&served.policy.key, &decision))
}

/// Reads the body: refused at once when its declared length is over the
/// bound, and cut off when it does not arrive within the body timeout.
async fn read_body<S>(
    state: &AppState<S>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let limit = state.max_body_bytes;
    let too_large = || {
        let message = format!("request body is larger than {limit} bytes");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, None, message)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let timeout = state.body_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            let message = format!("request body did not arrive within {timeout:?}");
            Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, None, message))
        }
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_length_limit(&error) => Err(too_large()),
        // The client went away or broke the framing mid-body.
        Ok(Err(_)) => Err(ApiError::bad_request(
            "body",
            "body: could not be read to its end",
        )),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

const EXAMPLE: &str = r#"{"user": "alice", "endpoint": "GET /search"}"#;

fn parse(bytes: &[u8]) -> Result<CheckBody<'_>, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            let message = format!("body: is empty; send a JSON object such as {EXAMPLE}");
            return Err(ApiError::bad_request("body", message));
        }
        Some(b'{') => {}
        Some(_) => {
            let message = format!("body: must be a JSON object such as {EXAMPLE}");
            return Err(ApiError::bad_request("body", message));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body: CheckBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // `.` is the body itself; `?` a key that could not be read, as when
        // the body ends inside the object.
        let field = match e.path().to_string() {
            p if p == "." || p == "?" => "body".to_owned(),
            p => p,
        };
        let message = format!("{field}: {}", e.inner());
        ApiError::bad_request(&field, message)
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("body: unexpected data after the JSON object: {e}"),
        )
    })?;
    for (field, value) in [
        ("policy", &body.policy),
        ("user", &body.user),
        ("endpoint", &body.endpoint),
    ] {
        if value.as_deref() == Some("") {
            let message = format!("{field}: must not be empty; leave it out instead");
            return Err(ApiError::bad_request(field, message));
        }
    }
    Ok(body)
}

/// Cost is optional (1), a whole number from 0 to [`MAX_COST`]; 0 looks at
/// the limits without consuming anything.
fn parse_cost(cost: Option<&serde_json::Number>) -> Result<u64, ApiError> {
    let Some(cost) = cost else { return Ok(1) };
    let bad = |why: &str| ApiError::bad_request("cost", format!("cost: {why}, got {cost}"));
    match cost.as_u64() {
        Some(c) if c <= MAX_COST => Ok(c),
        Some(_) => Err(bad(&format!("must be at most {MAX_COST}"))),
        None => {
            let value = cost.as_f64().unwrap_or(f64::NAN);
            if value < 0.0 {
                Err(bad("must not be negative"))
            } else if value.fract() != 0.0 {
                Err(bad("must be a whole number"))
            } else if value <= MAX_COST as f64 {
                // JSON does not tell 2 from 2.0 or 2e0: a whole number
                // counts however it is written.
                Ok(value as u64)
            } else {
                Err(bad(&format!("must be at most {MAX_COST}")))
            }
        }
    }
}

fn respond(policy: &str, decision: &Decision) -> Response {
    let deciding = decision.deciding_limit();
    let body = DecisionBody {
        allowed: decision.allowed,
        policy,
        limit: deciding.map(|l| LimitBody {
            name: &l.name,
            requests: l.requests,
            effective: l.effective,
            window_ms: l.window_ms,
        }),
        remaining: deciding.map(|l| l.remaining),
        reset_after_ms: deciding.map(|l| l.reset_after_ms),
        retry_after_ms: decision.retry_after_ms(),
        reason: decision.reason.map(|r| r.as_str()),
        multiplier: decision.multiplier,
        degraded: decision.degraded,
    };
    let status = if decision.allowed {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let mut response = (status, super::json(&body)).into_response();
    headers::insert(response.headers_mut(), decision);
    response
}

impl ApiError {
    fn reject_kind(&self) -> Option<RejectKind> {
        match self.status {
            StatusCode::BAD_REQUEST => Some(RejectKind::bad_request),
            StatusCode::NOT_FOUND => Some(RejectKind::unknown_policy),
            StatusCode::PAYLOAD_TOO_LARGE => Some(RejectKind::too_large),
            StatusCode::REQUEST_TIMEOUT => Some(RejectKind::slow_body),
            StatusCode::SERVICE_UNAVAILABLE if self.overloaded => Some(RejectKind::overloaded),
            _ => None,
        }
    }
}
