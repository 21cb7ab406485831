//! The HTTP API, driven through the router without opening a port, on a
//! manual clock.

mod common;

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    http::{Request, StatusCode},
};
use common::{API_POLICY, Harness, MAX_BODY_BYTES, ORDERS_POLICY, Reply, T0};
use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_limiter::http::serve::ServeLimits;

/// Asserts a 400 whose JSON names `field`, in `field` and in the message.
fn assert_bad_request(reply: &Reply, field: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["field"], field, "{body}");
    let error = body["error"].as_str().expect("error is a string");
    assert!(
        error.contains(field),
        "error does not name {field}: {error}"
    );
}

/// Sends `user` checks until one is denied; returns how many passed.
async fn exhaust(harness: &Harness, user: &str) -> usize {
    for passed in 0..100 {
        let reply = harness.check(json!({"user": user})).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return passed;
        }
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    panic!("{user:?} was never denied");
}

fn two_policies() -> Harness {
    Harness::new(&format!("{API_POLICY}\n---\n{ORDERS_POLICY}"))
}

// Decisions.

#[tokio::test]
async fn allowed_check_is_200_with_the_deciding_limit_and_ratelimit_headers() {
    let harness = Harness::api();

    let reply = harness.check(json!({"user": "alice"})).await;

    assert_eq!(reply.status, StatusCode::OK);
    // The per-user limit has the least room left, so it decides.
    let expected = json!({
        "allowed": true,
        "policy": "default/api",
        "limit": {"name": "per-user", "requests": 3, "effective": 3, "window_ms": 60_000},
        "remaining": 2,
        "reset_after_ms": 120_000,
        "retry_after_ms": null,
        "reason": null,
        "multiplier": 1.0,
        "degraded": false,
    });
    assert_eq!(reply.json(), expected);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""global";q=1000;w=1, "per-user";q=3;w=60"#)
    );
    assert_eq!(
        reply.header("ratelimit"),
        Some(r#""global";r=999;t=2, "per-user";r=2;t=120"#)
    );
    assert_eq!(reply.header("retry-after"), None);
}

#[tokio::test]
async fn denied_check_is_429_with_retry_after_in_whole_seconds_rounded_up() {
    let harness = Harness::api();
    harness.clock.set(T0 + 333);
    assert_eq!(exhaust(&harness, "alice").await, 3);

    let reply = harness.check(json!({"user": "alice"})).await;

    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let body = reply.json();
    assert_eq!(body["allowed"], false);
    assert_eq!(body["reason"], "limit_exhausted");
    assert_eq!(body["limit"]["name"], "per-user");
    assert_eq!(body["remaining"], 0);
    // Next minute the 3 of this one weigh 3 × (1 − e/60s); one more fits
    // from e = 20s: 59 667 ms to the window's end plus 20 000.
    assert_eq!(body["retry_after_ms"], 79_667);
    assert_eq!(reply.header("retry-after"), Some("80"));
    assert_eq!(
        reply.header("ratelimit"),
        Some(r#""global";r=997;t=2, "per-user";r=0;t=120"#)
    );
}

#[tokio::test]
async fn retrying_after_retry_after_seconds_succeeds() {
    let harness = Harness::api();
    let search = json!({"user": "alice", "endpoint": "GET /search"});
    harness.clock.set(T0 + 333);
    for _ in 0..2 {
        assert_eq!(harness.check(search.clone()).await.status, StatusCode::OK);
    }
    let denied = harness.check(search.clone()).await;
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    let wait_secs: u64 = denied.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(wait_secs, 15);

    harness.clock.set(T0 + 333 + wait_secs * 1000);
    let retried = harness.check(search).await;

    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
}

#[tokio::test]
async fn retry_after_ms_is_the_exact_wait_when_nothing_else_arrives() {
    let harness = Harness::api();
    let search = json!({"user": "alice", "endpoint": "GET /search"});
    harness.clock.set(T0 + 333);
    for _ in 0..2 {
        harness.check(search.clone()).await;
    }
    let denied = harness.check(search.clone()).await;
    let wait_ms = denied.json()["retry_after_ms"].as_u64().unwrap();
    assert_eq!(wait_ms, 14_667);

    harness.clock.set(T0 + 333 + wait_ms - 1);
    let early = harness.check(search.clone()).await;
    harness.clock.set(T0 + 333 + wait_ms);
    let on_time = harness.check(search).await;

    assert_eq!(early.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(on_time.status, StatusCode::OK);
}

#[tokio::test]
async fn check_limits_are_scaled_by_the_policy_multiplier() {
    let harness = Harness::api();
    let policies = harness.limiter.policies();
    policies.resolve(None).unwrap().multiplier.set(0.5);

    let reply = harness.check(json!({"user": "alice"})).await;

    let body = reply.json();
    assert_eq!(body["multiplier"], 0.5);
    assert_eq!(body["limit"]["requests"], 3);
    assert_eq!(body["limit"]["effective"], 1);
    assert_eq!(body["remaining"], 0);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""global";q=500;w=1, "per-user";q=1;w=60"#)
    );
}

// Cost.

#[tokio::test]
async fn cost_zero_answers_remaining_without_consuming_anything() {
    let harness = Harness::api();
    harness.check(json!({"user": "alice"})).await;

    let first = harness.check(json!({"user": "alice", "cost": 0})).await;
    let second = harness.check(json!({"user": "alice", "cost": 0})).await;
    let counted = harness.check(json!({"user": "alice"})).await;

    for look in [&first, &second] {
        assert_eq!(look.status, StatusCode::OK);
        assert_eq!(look.json()["remaining"], 2, "{}", look.text());
    }
    assert_eq!(counted.json()["remaining"], 1);
}

#[tokio::test]
async fn cost_that_can_never_fit_is_429_cost_exceeds_limit_without_retry_after() {
    let harness = Harness::api();

    let reply = harness.check(json!({"user": "alice", "cost": 4})).await;

    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let body = reply.json();
    assert_eq!(body["reason"], "cost_exceeds_limit");
    assert_eq!(body["limit"]["name"], "per-user");
    assert_eq!(body["retry_after_ms"], Value::Null);
    assert_eq!(reply.header("retry-after"), None);
    // Denied, it took nothing: the whole limit still fits.
    let whole = harness.check(json!({"user": "alice", "cost": 3})).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.text());
}

#[tokio::test]
async fn largest_cost_is_valid_input_and_denied_as_never_fitting() {
    let harness = Harness::api();

    let reply = harness.check(json!({"cost": 1_000_000_000u64})).await;

    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["reason"], "cost_exceeds_limit");
}

#[tokio::test]
async fn whole_number_cost_written_with_a_fraction_counts_as_that_number() {
    let harness = Harness::api();

    for (cost, remaining) in [("1.0", 2), ("1e0", 1), ("-0.0", 1)] {
        let body = format!(r#"{{"user": "alice", "cost": {cost}}}"#);
        let reply = harness.post(body).await;
        assert_eq!(reply.status, StatusCode::OK, "{cost}: {}", reply.text());
        assert_eq!(reply.json()["remaining"], remaining, "{cost}");
    }
}

// Bad input.

#[tokio::test]
async fn malformed_json_is_400_naming_the_body() {
    let harness = Harness::api();
    for body in [
        r#"{"user": "alice""#,
        "{",
        r#"{"user": "alice",}"#,
        r#"{"user" "alice"}"#,
        r#"{1: "alice"}"#,
    ] {
        let reply = harness.post(body).await;
        assert_bad_request(&reply, "body");
    }
}

#[tokio::test]
async fn malformed_value_is_400_naming_its_field() {
    let reply = Harness::api().post(r#"{"user": alice}"#).await;
    assert_bad_request(&reply, "user");
}

#[tokio::test]
async fn trailing_data_after_the_object_is_400_naming_the_body() {
    let harness = Harness::api();
    for body in [r#"{"user": "a"} x"#, r#"{"user": "a"}{"user": "b"}"#] {
        let reply = harness.post(body).await;
        assert_bad_request(&reply, "body");
        assert!(reply.text().contains("after the JSON object"), "{body}");
    }
}

#[tokio::test]
async fn array_body_is_400_naming_the_body() {
    let reply = Harness::api().post(r#"[{"user": "a"}]"#).await;
    assert_bad_request(&reply, "body");
    assert!(reply.text().contains("must be a JSON object"));
}

#[tokio::test]
async fn string_body_is_400_naming_the_body() {
    let reply = Harness::api().post(r#""alice""#).await;
    assert_bad_request(&reply, "body");
    assert!(reply.text().contains("must be a JSON object"));
}

#[tokio::test]
async fn number_body_is_400_naming_the_body() {
    let reply = Harness::api().post("42").await;
    assert_bad_request(&reply, "body");
    assert!(reply.text().contains("must be a JSON object"));
}

#[tokio::test]
async fn empty_body_is_400_naming_the_body() {
    let reply = Harness::api().post(" \r\n\t").await;
    assert_bad_request(&reply, "body");
    assert!(reply.text().contains("is empty"));
}

#[tokio::test]
async fn missing_body_is_400_naming_the_body() {
    let reply = Harness::api().post(Body::empty()).await;
    assert_bad_request(&reply, "body");
    assert!(reply.text().contains("is empty"));
}

#[tokio::test]
async fn wrongly_typed_user_is_400_naming_user() {
    let reply = Harness::api().check(json!({"user": 42})).await;
    assert_bad_request(&reply, "user");
}

#[tokio::test]
async fn wrongly_typed_endpoint_is_400_naming_endpoint() {
    let reply = Harness::api()
        .check(json!({"endpoint": ["GET", "/"]}))
        .await;
    assert_bad_request(&reply, "endpoint");
}

#[tokio::test]
async fn wrongly_typed_policy_is_400_naming_policy() {
    let reply = Harness::api()
        .check(json!({"policy": {"name": "api"}}))
        .await;
    assert_bad_request(&reply, "policy");
}

#[tokio::test]
async fn wrongly_typed_cost_is_400_naming_cost() {
    let harness = Harness::api();
    for cost in [json!("1"), json!(true), json!([1])] {
        let reply = harness.check(json!({"cost": cost})).await;
        assert_bad_request(&reply, "cost");
    }
}

#[tokio::test]
async fn unknown_field_is_400_naming_it() {
    let reply = Harness::api().check(json!({"usr": "alice"})).await;
    assert_bad_request(&reply, "usr");
}

#[tokio::test]
async fn negative_cost_is_400_naming_cost() {
    let reply = Harness::api().check(json!({"cost": -1})).await;
    assert_bad_request(&reply, "cost");
    assert!(reply.text().contains("negative"), "{}", reply.text());
}

#[tokio::test]
async fn fractional_cost_is_400_naming_cost() {
    let reply = Harness::api().check(json!({"cost": 1.5})).await;
    assert_bad_request(&reply, "cost");
    assert!(reply.text().contains("whole number"), "{}", reply.text());
}

#[tokio::test]
async fn cost_above_the_largest_limit_is_400_naming_cost() {
    let harness = Harness::api();
    for cost in ["1000000001", "18446744073709551616", "1e30"] {
        let reply = harness.post(format!(r#"{{"cost": {cost}}}"#)).await;
        assert_bad_request(&reply, "cost");
        assert!(reply.text().contains("at most 1000000000"), "{cost}");
    }
}

#[tokio::test]
async fn empty_user_is_400_naming_user() {
    let reply = Harness::api().check(json!({"user": ""})).await;
    assert_bad_request(&reply, "user");
}

#[tokio::test]
async fn unknown_policy_is_404_naming_it() {
    let reply = Harness::api().check(json!({"policy": "nope"})).await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let body = reply.json();
    assert_eq!(body["field"], "policy");
    assert!(
        body["error"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
}

#[tokio::test]
async fn body_over_the_size_bound_is_413() {
    let padding = "x".repeat(MAX_BODY_BYTES);

    let reply = Harness::api().check(json!({"user": padding})).await;

    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let error = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains(&MAX_BODY_BYTES.to_string()), "{error}");
}

#[tokio::test]
async fn body_of_exactly_the_size_bound_is_read() {
    let frame = r#"{"user": ""}"#.len();
    let body = format!(r#"{{"user": "{}"}}"#, "x".repeat(MAX_BODY_BYTES - frame));
    assert_eq!(body.len(), MAX_BODY_BYTES);

    let reply = Harness::api().post(body).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

// Choosing the policy.

#[tokio::test]
async fn check_without_policy_is_400_naming_policy_when_several_are_served() {
    let reply = two_policies().check(json!({"user": "alice"})).await;
    assert_bad_request(&reply, "policy");
}

#[tokio::test]
async fn bare_policy_name_resolves_in_the_default_namespace() {
    let harness = two_policies();

    let bare = harness.check(json!({"policy": "api", "user": "a"})).await;
    let elsewhere = harness
        .check(json!({"policy": "orders", "user": "a"}))
        .await;

    assert_eq!(bare.status, StatusCode::OK);
    assert_eq!(bare.json()["policy"], "default/api");
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn namespaced_policy_name_selects_that_policy() {
    let harness = two_policies();

    let orders = harness
        .check(json!({"policy": "shop/orders", "user": "a"}))
        .await;
    let api = harness
        .check(json!({"policy": "default/api", "user": "a"}))
        .await;

    assert_eq!(orders.json()["policy"], "shop/orders");
    assert_eq!(orders.json()["limit"]["effective"], 7);
    assert_eq!(api.json()["policy"], "default/api");
    assert_eq!(api.json()["limit"]["effective"], 3);
}

// User ids.

const LONG_USER_BYTES: usize = 10 * 1024;

/// Ids that must each be a user of their own, some of them alike to a
/// careless eye or a careless key format.
fn unusual_users() -> Vec<String> {
    let long = "u".repeat(LONG_USER_BYTES);
    [
        "Zoë", "Zoe", "用户", "a\u{0}b", "a\nb", "a\u{7}", "ab", "a b", "a",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([long])
    .collect()
}

#[tokio::test]
async fn long_non_ascii_and_control_character_user_ids_are_accepted() {
    let harness = Harness::api();
    for user in unusual_users() {
        let reply = harness.check(json!({"user": user})).await;
        assert_eq!(reply.status, StatusCode::OK, "{user:?}: {}", reply.text());
        assert_eq!(reply.json()["remaining"], 2, "{user:?}");
    }
}

#[tokio::test]
async fn exhausting_one_user_leaves_every_other_user_untouched() {
    let users = unusual_users();
    for exhausted in &users {
        let harness = Harness::api();

        assert_eq!(exhaust(&harness, exhausted).await, 3, "{exhausted:?}");

        for other in users.iter().filter(|u| *u != exhausted) {
            let reply = harness.check(json!({"user": other})).await;
            let body = reply.json();
            assert_eq!(body["remaining"], 2, "{other:?} after {exhausted:?}");
        }
    }
}

// Health, metrics and policies.

#[tokio::test]
async fn healthz_is_200() {
    let reply = Harness::api().get("/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_200_while_policies_are_served() {
    let reply = Harness::api().get("/readyz").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_checks_by_policy_limit_and_decision() {
    let harness = Harness::api();
    exhaust(&harness, "alice").await;

    let reply = harness.get("/metrics").await;

    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.header("content-type").unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = reply.text();
    let sample = |decision: &str, n: u32| {
        format!(
            r#"sluice_checks_total{{policy="default/api",limit="per-user",decision="{decision}"}} {n}"#
        )
    };
    assert!(text.contains(&sample("allowed", 3)), "{text}");
    assert!(text.contains(&sample("denied", 1)), "{text}");
}

#[tokio::test]
async fn metrics_never_contain_a_user_id_or_a_client_policy_name() {
    let harness = Harness::api();
    let user = "user-zq-31337";
    exhaust(&harness, user).await;
    harness
        .check(json!({"user": user, "endpoint": "GET /search"}))
        .await;
    harness
        .check(json!({"user": user, "policy": "ghost-31337"}))
        .await;
    harness.check(json!({"user": user, "usr": 1})).await;

    let text = harness.get("/metrics").await.text().to_owned();

    assert!(text.contains("sluice_checks_total"), "{text}");
    assert!(!text.contains("31337"), "{text}");
}

#[tokio::test]
async fn policies_lists_each_policy_with_effective_limits_and_multiplier() {
    let harness = two_policies();
    let served = harness.limiter.policies();
    served.resolve(Some("api")).unwrap().multiplier.set(0.5);

    let reply = harness.get("/v1/policies").await;

    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let listed: Vec<(&str, f64)> = body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["policy"].as_str().unwrap(),
                p["multiplier"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [("default/api", 0.5), ("shop/orders", 1.0)]);
    let limits: Vec<(&str, u64, u64)> = body["policies"][0]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let n = |k: &str| l[k].as_u64().unwrap();
            (l["name"].as_str().unwrap(), n("requests"), n("effective"))
        })
        .collect();
    assert_eq!(
        limits,
        [
            ("global", 1000, 500),
            ("per-user", 3, 1),
            ("search-per-user", 2, 1)
        ]
    );
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let harness = Harness::new(API_POLICY);
    let reply = harness.get("/v1/check").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("POST /v1/check"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let reply = Harness::api().get("/v1/nope").await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.json()["error"].is_string(), "{}", reply.text());
}

// Nothing a client sends is a server error.

const CLIENT_STATUSES: [u16; 5] = [200, 400, 404, 413, 429];

fn status_of(body: impl Into<Body>) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let harness = Harness::new(&format!("{API_POLICY}\n---\n{ORDERS_POLICY}"));
    runtime.block_on(harness.post(body)).status.as_u16()
}

/// Short noise, noise after an opening brace, and noise around the size
/// bound.
fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = |len| prop::collection::vec(any::<u8>(), len);
    prop_oneof![
        noise(0..512),
        noise(0..512).prop_map(|tail| [b"{".as_slice(), &tail].concat()),
        noise(MAX_BODY_BYTES - 16..MAX_BODY_BYTES + 16),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..=2_000_000_000).prop_map(Value::from),
        prop_oneof![
            Just("api"),
            Just("default/api"),
            Just("shop/orders"),
            Just("GET /search"),
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_object() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop_oneof![Just("user"), Just("endpoint"), Just("policy"), Just("cost")]
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::btree_map(key, json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_yield_a_server_error(bytes in client_bytes()) {
        let status = status_of(bytes);
        prop_assert!(CLIENT_STATUSES.contains(&status), "status {}", status);
    }

    #[test]
    fn arbitrary_json_objects_never_yield_a_server_error(body in check_object()) {
        let status = status_of(body.to_string());
        prop_assert!(CLIENT_STATUSES.contains(&status), "status {} for {}", status, body);
    }
}

/// A body that never arrives.
fn never_arriving_body() -> Body {
    Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
}

#[tokio::test]
async fn declared_length_over_the_bound_is_413_without_waiting_for_the_body() {
    let harness = Harness::api();
    let request = Request::post("/v1/check")
        .header("content-length", "99999999999")
        .body(never_arriving_body())
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(1), harness.request(request)).await;
    assert_eq!(
        reply.expect("answered at once").status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_the_body_timeout_is_408() {
    let limits = ServeLimits {
        body_timeout: Duration::from_millis(100),
        ..ServeLimits::default()
    };
    let harness = Harness::with_limits(API_POLICY, &limits);
    let reply = harness
        .request(
            Request::post("/v1/check")
                .body(never_arriving_body())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive within")
    );
    assert!(
        harness
            .get("/metrics")
            .await
            .text()
            .contains("sluice_check_rejects_total{kind=\"slow_body\"} 1")
    );
}

#[tokio::test]
async fn an_abandoned_body_is_400_and_not_counted_as_too_large() {
    let harness = Harness::api();
    let broken = futures::stream::iter([
        Ok(Bytes::from_static(b"{\"user\"")),
        Err(std::io::Error::other("reset")),
    ]);
    let reply = harness
        .request(
            Request::post("/v1/check")
                .body(Body::from_stream(broken))
                .unwrap(),
        )
        .await;
    assert_bad_request(&reply, "body");
    let metrics = harness.get("/metrics").await;
    let metrics = metrics.text();
    assert!(
        metrics.contains("sluice_check_rejects_total{kind=\"too_large\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_check_rejects_total{kind=\"bad_request\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_check_finding_no_free_slot_is_refused_at_once_with_503_and_retry_after() {
    let limits = ServeLimits {
        max_in_flight: 0,
        ..ServeLimits::default()
    };
    let harness = Harness::with_limits(API_POLICY, &limits);
    let reply = harness.check(json!({"user": "alice"})).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        harness
            .get("/metrics")
            .await
            .text()
            .contains("sluice_check_rejects_total{kind=\"overloaded\"} 1")
    );
}
