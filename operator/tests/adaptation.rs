//! Adaptation inside reconcile, against the mock API server and fakes for
//! Prometheus and Redis: one scenario per path, each stating every call
//! the operator makes, what it asked Prometheus and what it published.

mod support;

use std::{sync::Arc, time::Duration};

use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sluice_crds::RateLimitPolicy;
use sluice_operator::{
    adaptive::{
        signals::{Reading, SignalQueries},
        sink::{PublishError, RedisTarget},
    },
    context::Context,
    leader::LeadershipSender,
    metrics::Metrics,
    reconcile::{Error, reconcile},
};
use support::{
    adaptation::{Fakes, HandClock, Published, prometheus_down, reading},
    api::{MockApi, mock_client, spawn},
    fixtures::{context_with, policy},
    scenario::*,
};
use tokio::task::JoinHandle;

const SECRET: &str = "/api/v1/namespaces/shop/secrets/redis-auth";
const PROMETHEUS: &str = "http://127.0.0.1:9090";
const REDIS: &str = "redis://127.0.0.1:6379";

/// Cuts when latency passes 300ms; ticks every 15s.
const ADAPTIVE: &str = "
target: {selector: {matchLabels: {app: checkout}}}
limits: [{name: global, requests: 100, window: 1s}]
adaptive:
  interval: 15s
  signals:
    cpu: {weight: 0.5, target: 0.7, max: 0.9}
    latency: {weight: 1.0, target: 300ms, max: 600ms}
  prometheus: {url: http://127.0.0.1:9090}
";

/// Two limiters sharing the Redis at [`REDIS`].
const SHARED: &str = "{replicas: 2, redis: {url: 'redis://127.0.0.1:6379'}}";

/// The adaptive policy at `generation`, its limiters as `limiter` says.
fn adaptive(limiter: &str, generation: i64) -> RateLimitPolicy {
    policy(&format!("{ADAPTIVE}limiter: {limiter}"), generation)
}

/// Latency at full pressure: the first tick cuts to 1 − 0.5 × 0.3 (the
/// most pressure may rise in one tick).
fn overloaded() -> Reading {
    reading([Some(0.5), Some(0.6), Some(0.0), Some(200.0)])
}

/// Every signal well under its target.
fn calm() -> Reading {
    reading([Some(0.3), Some(0.1), Some(0.0), Some(100.0)])
}

const CUT_MESSAGE: &str =
    "multiplier 0.85, cutting; strongest signal latency at 0.6s against a target of 0.3s";

/// The status [`ready_status`] of a policy adapted to `multiplier` at
/// `at`, its `Adapting` condition as `adapting` says.
fn adapted_status(multiplier: f64, at: &str, adapting: Value) -> Value {
    let mut status = ready_status(1, 100);
    status["effectiveLimits"][0]["effective"] = json!((100.0 * multiplier) as u64);
    status["multiplier"] = json!(multiplier);
    status["signals"] = json!({"cpu": 0.5, "latencySeconds": 0.2, "requestRate": 200.0});
    status["lastAdaptedTime"] = json!(at);
    status["conditions"].as_array_mut().unwrap().push(adapting);
    status
}

struct Scenario {
    ctx: Arc<Context>,
    _leader: LeadershipSender,
    api: MockApi,
    fakes: Fakes,
    clock: HandClock,
    metrics: Arc<Metrics>,
}

/// A leading operator on a mock API, reading `reading` from Prometheus.
fn scenario(reading: Reading) -> Scenario {
    let (client, api) = mock_client();
    let (fakes, clock) = (Fakes::new(), HandClock::default());
    fakes.signals.answer(reading);
    let (ctx, leader) = context_with(client, true, clock.clock(), fakes.adaptation());
    Scenario {
        metrics: ctx.metrics.clone(),
        ctx,
        _leader: leader,
        api,
        fakes,
        clock,
    }
}

type Pass = JoinHandle<Result<Action, Error>>;

impl Scenario {
    /// Starts a pass over `policy`.
    fn reconcile(&self, policy: &RateLimitPolicy) -> Pass {
        spawn(reconcile(Arc::new(policy.clone()), self.ctx.clone()))
    }

    /// Waits for the last pass, then checks that no call follows; what
    /// the fakes recorded and the metrics stay.
    async fn finish(self, task: Pass) -> (Result<Action, Error>, Fakes, Arc<Metrics>) {
        let Scenario {
            ctx,
            api,
            fakes,
            metrics,
            ..
        } = self;
        (api.finish(task, ctx).await, fakes, metrics)
    }
}

fn published(policy: &str, multiplier: f64, password: Option<&str>) -> Published {
    Published {
        redis: RedisTarget {
            url: REDIS.to_owned(),
            cluster: false,
            password: password.map(str::to_owned),
        },
        policy: policy.to_owned(),
        multiplier,
        // Three stale periods of four 15s intervals.
        ttl: Duration::from_secs(180),
    }
}

#[tokio::test]
async fn adaptive_policy_status_carries_the_multiplier_signals_and_adapting_condition() {
    let policy = with_status(adaptive(SHARED, 1), ready_status(1, 100));
    let mut s = scenario(overloaded());
    let task = s.reconcile(&policy);

    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let mut expected = ready_status(1, 100);
    expected["effectiveLimits"][0]["effective"] = json!(85);
    expected["multiplier"] = json!(0.85);
    expected["signals"] = json!({
        "cpu": 0.5, "latencySeconds": 0.6, "errorRatio": 0.0, "requestRate": 200.0,
    });
    expected["lastAdaptedTime"] = json!(NOW);
    let adapting = condition("Adapting", "True", "Cutting", CUT_MESSAGE, 1, NOW);
    expected["conditions"]
        .as_array_mut()
        .unwrap()
        .push(adapting);
    assert_eq!(applied_status(&call), expected);
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Normal",
        "Cutting",
        "Adapt",
        CUT_MESSAGE,
    );

    let (action, fakes, metrics) = s.finish(task).await;
    let action = action.expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(15)),
        "the next tick"
    );
    let queries = SignalQueries::for_policy(&policy);
    assert_eq!(fakes.signals.asked(), [(PROMETHEUS.to_owned(), queries)]);
    assert_eq!(
        fakes.sink.published(),
        [published("shop/checkout", 0.85, None)]
    );
    let metrics = metrics.encode();
    for line in [
        "sluice_operator_multiplier{policy=\"shop/checkout\"} 0.85",
        "sluice_operator_signal{policy=\"shop/checkout\",signal=\"latency\"} 0.6",
        "sluice_operator_signal{policy=\"shop/checkout\",signal=\"requests\"} 200",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn prometheus_outage_shows_as_adapting_false_and_nothing_else_changes() {
    let holding = "multiplier 0.6, holding; strongest signal cpu at 0.5 against a target of 0.7";
    let before = condition("Adapting", "True", "Holding", holding, 1, BEFORE);
    let old = adapted_status(0.6, BEFORE, before);
    let policy = with_status(adaptive(SHARED, 1), old.clone());
    let mut s = scenario(prometheus_down());
    let task = s.reconcile(&policy);

    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let blind = "failed to query Prometheus: connection refused; \
                 every signal is unknown and the multiplier holds at 0.6";
    let mut expected = old;
    expected.as_object_mut().unwrap().remove("signals");
    expected["lastAdaptedTime"] = json!(NOW);
    expected["conditions"][3] =
        condition("Adapting", "False", "PrometheusUnavailable", blind, 1, NOW);
    assert_eq!(
        applied_status(&call),
        expected,
        "the multiplier, the limits and the other conditions stay"
    );
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Warning",
        "PrometheusUnavailable",
        "Adapt",
        "connection refused",
    );

    let (action, fakes, metrics) = s.finish(task).await;
    let action = action.expect("no failure to retry");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert_eq!(
        fakes.sink.published(),
        [published("shop/checkout", 0.6, None)],
        "the held multiplier is published again, so that it does not go stale"
    );
    let metrics = metrics.encode();
    let errors =
        "sluice_operator_prometheus_query_errors_total{policy=\"shop/checkout\",signal=\"cpu\"} 1";
    assert!(metrics.contains(errors), "{metrics}");
    assert!(!metrics.contains("sluice_operator_signal{"), "{metrics}");
}

#[tokio::test]
async fn adaptation_ticks_no_faster_than_its_interval() {
    let policy = with_status(adaptive(SHARED, 1), ready_status(1, 100));
    let mut s = scenario(calm());

    // The first pass ticks.
    let task = s.reconcile(&policy);
    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let written = applied_status(&call);
    assert_eq!(written["lastAdaptedTime"], NOW);
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Normal",
        "Holding",
        "Adapt",
        "multiplier 1,",
    );
    let action = s.api.done(task).await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));

    // A child changes 5s later: the pass applies, but does not tick.
    s.clock.advance(5);
    let policy = with_status(policy, written.clone());
    let task = s.reconcile(&policy);
    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let action = s.api.done(task).await.expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(10)),
        "when the tick is due"
    );
    assert_eq!(s.fakes.signals.asked().len(), 1);
    assert_eq!(s.fakes.sink.published().len(), 1);

    // A full interval after the first tick, the next one.
    s.clock.advance(10);
    let task = s.reconcile(&policy);
    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let mut expected = written;
    expected["lastAdaptedTime"] = json!("2026-01-01T00:00:15Z");
    assert_eq!(
        applied_status(&call),
        expected,
        "no Event: Adapting stays True"
    );
    reply_policy(call, &policy);
    let (action, fakes, _) = s.finish(task).await;
    let action = action.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert_eq!(fakes.signals.asked().len(), 2);
    assert_eq!(fakes.sink.published().len(), 2);
}

#[tokio::test]
async fn restarted_operator_continues_from_the_published_multiplier() {
    let cutting = condition(
        "Adapting",
        "True",
        "Cutting",
        "multiplier 0.6, cutting",
        1,
        BEFORE,
    );
    let five_seconds_ago = "2025-12-31T23:59:55Z";
    let old = adapted_status(0.6, five_seconds_ago, cutting);
    let policy = with_status(adaptive(SHARED, 1), old.clone());
    let mut s = scenario(calm());

    // The last tick, by the operator before, was 5s ago: none is due yet.
    let task = s.reconcile(&policy);
    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let action = s.api.done(task).await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert!(s.fakes.signals.asked().is_empty());

    s.clock.advance(10);
    let task = s.reconcile(&policy);
    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    assert_eq!(status["multiplier"], 0.6, "not reset to 1");
    assert_eq!(status["effectiveLimits"], old["effectiveLimits"]);
    assert_eq!(status["lastAdaptedTime"], "2026-01-01T00:00:10Z");
    let holding = "multiplier 0.6, holding; strongest signal cpu at 0.3 against a target of 0.7";
    assert_eq!(
        status["conditions"][3],
        condition("Adapting", "True", "Holding", holding, 1, BEFORE),
        "still True: no transition, no Event"
    );
    reply_policy(call, &policy);
    let (action, fakes, _) = s.finish(task).await;
    action.expect("reconciled");
    assert_eq!(
        fakes.sink.published(),
        [published("shop/checkout", 0.6, None)]
    );
}

#[tokio::test]
async fn redis_password_is_read_from_the_secret_for_publishing() {
    let limiter = "{replicas: 2, redis: {url: 'redis://127.0.0.1:6379', \
                   passwordSecretRef: {name: redis-auth, key: password}}}";
    let policy = with_status(adaptive(limiter, 1), ready_status(1, 100));
    let mut s = scenario(overloaded());
    let task = s.reconcile(&policy);

    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("GET", SECRET).await;
    call.reply(
        200,
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "redis-auth", "namespace": "shop"},
            "data": {"password": "czNjcmV0"},
        }),
    );
    let call = s.api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    assert_eq!(
        status["conditions"][3],
        condition("Adapting", "True", "Cutting", CUT_MESSAGE, 1, NOW)
    );
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Normal",
        "Cutting",
        "Adapt",
        CUT_MESSAGE,
    );

    let (action, fakes, _) = s.finish(task).await;
    action.expect("reconciled");
    assert_eq!(
        fakes.sink.published(),
        [published("shop/checkout", 0.85, Some("s3cret"))]
    );
}

#[tokio::test]
async fn a_missing_password_secret_is_publish_failed_and_the_multiplier_stays_in_status() {
    let limiter = "{replicas: 2, redis: {url: 'redis://127.0.0.1:6379', \
                   passwordSecretRef: {name: redis-auth, key: password}}}";
    let policy = with_status(adaptive(limiter, 1), ready_status(1, 100));
    let mut s = scenario(overloaded());
    let task = s.reconcile(&policy);

    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("GET", SECRET).await;
    call.reply_failure(404, "NotFound", "secrets \"redis-auth\" not found");
    let call = s.api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    let failed = "multiplier 0.85, cutting, but failed to read the Redis password from Secret \
                  shop/redis-auth: 404 NotFound: secrets \"redis-auth\" not found; the limiters \
                  keep the last multiplier they read until it goes stale";
    assert_eq!(
        status["conditions"][3],
        condition("Adapting", "False", "PublishFailed", failed, 1, NOW)
    );
    assert_eq!(status["multiplier"], 0.85);
    assert_eq!(status["effectiveLimits"][0]["effective"], 85);
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Warning",
        "PublishFailed",
        "Adapt",
        "shop/redis-auth",
    );

    let (action, fakes, metrics) = s.finish(task).await;
    let action = action.expect("no failure to retry");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert!(fakes.sink.published().is_empty());
    let errors = "sluice_operator_publish_errors_total{policy=\"shop/checkout\"} 1";
    assert!(metrics.encode().contains(errors), "{}", metrics.encode());
}

#[tokio::test]
async fn a_redis_failure_is_publish_failed_and_the_multiplier_stays_in_status() {
    let policy = with_status(adaptive(SHARED, 1), ready_status(1, 100));
    let mut s = scenario(overloaded());
    s.fakes.sink.fail_with(PublishError::Connect {
        url: REDIS.to_owned(),
        reason: "connection refused".to_owned(),
    });
    let task = s.reconcile(&policy);

    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    let failed = "multiplier 0.85, cutting, but failed to connect to Redis at \
                  redis://127.0.0.1:6379: connection refused; the limiters keep the last \
                  multiplier they read until it goes stale";
    assert_eq!(
        status["conditions"][3],
        condition("Adapting", "False", "PublishFailed", failed, 1, NOW)
    );
    assert_eq!(status["multiplier"], 0.85);
    assert_eq!(
        status["conditions"][1],
        ready(1, BEFORE),
        "Ready is not Redis's"
    );
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Warning",
        "PublishFailed",
        "Adapt",
        failed,
    );

    let (action, fakes, _) = s.finish(task).await;
    action.expect("no failure to retry");
    assert_eq!(fakes.sink.published().len(), 1);
}

#[tokio::test]
async fn without_redis_the_status_says_the_limiters_cannot_follow_the_multiplier() {
    let policy = with_status(adaptive("{replicas: 2}", 1), ready_status(1, 100));
    let mut s = scenario(overloaded());
    let task = s.reconcile(&policy);

    expect_children(&mut s.api, &children(&policy), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    let alone = "multiplier 0.85, cutting, but spec.limiter.redis is not set: limiters read the \
                 multiplier from Redis, so they cannot follow it, and each pod counts alone at \
                 the base limits";
    assert_eq!(
        status["conditions"][3],
        condition("Adapting", "False", "NoRedis", alone, 1, NOW)
    );
    assert_eq!(status["multiplier"], 0.85);
    reply_policy(call, &policy);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Warning",
        "NoRedis",
        "Adapt",
        alone,
    );

    let (action, fakes, _) = s.finish(task).await;
    action.expect("reconciled");
    assert!(fakes.sink.published().is_empty(), "nowhere to publish");
}

#[tokio::test]
async fn a_policy_that_stops_adapting_loses_its_adaptive_status_and_metrics() {
    let first = with_status(adaptive(SHARED, 1), ready_status(1, 100));
    let mut s = scenario(overloaded());
    let task = s.reconcile(&first);
    expect_children(&mut s.api, &children(&first), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let adapted = applied_status(&call);
    reply_policy(call, &first);
    expect_event(
        s.api.expect("POST", EVENTS).await,
        "Normal",
        "Cutting",
        "Adapt",
        CUT_MESSAGE,
    );
    s.api.done(task).await.expect("reconciled");
    assert!(s.metrics.encode().contains("sluice_operator_multiplier{"));

    let plain = "limits: [{name: global, requests: 100, window: 1s}]\n\
                 limiter: {replicas: 2, redis: {url: 'redis://127.0.0.1:6379'}}";
    let second = with_status(policy(plain, 2), adapted);
    let task = s.reconcile(&second);
    expect_children(&mut s.api, &children(&second), deployment_status(2)).await;
    let call = s.api.expect("PATCH", STATUS).await;
    let expected = json!({
        "effectiveLimits": [{"name": "global", "requests": 100, "effective": 100}],
        "readyReplicas": 2,
        "observedGeneration": 2,
        "conditions": [accepted(2, BEFORE), ready(2, BEFORE), healthy(2, BEFORE)],
    });
    assert_eq!(applied_status(&call), expected);
    reply_policy(call, &second);

    let (action, fakes, metrics) = s.finish(task).await;
    let action = action.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    assert_eq!(fakes.signals.asked().len(), 1);
    let metrics = metrics.encode();
    assert!(
        !metrics.contains("sluice_operator_multiplier{"),
        "{metrics}"
    );
    assert!(!metrics.contains("sluice_operator_signal{"), "{metrics}");
}
