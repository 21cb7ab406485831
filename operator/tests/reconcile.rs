//! Reconcile against a mock API server: one scenario per path, each
//! stating every call the operator makes — method, path, field manager and
//! body — in order, and failing on any call missing or extra.

mod support;

use std::{sync::Arc, time::Duration};

use kube::runtime::controller::Action;
use serde_json::{Value, json};
use sluice_crds::RateLimitPolicy;
use sluice_operator::{
    reconcile::{Error, error_policy, reconcile},
    render::{Children, POLICY_KEY, render},
};
use support::{
    api::{Call, MockApi, mock_client, spawn},
    fixtures::{context, policy, render_config, spec},
};

const CONFIG_MAP: &str = "/api/v1/namespaces/shop/configmaps/checkout-policy";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout-limiter";
const SERVICE: &str = "/api/v1/namespaces/shop/services/checkout-limiter";
const PDB: &str = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/checkout-limiter";
const STATUS: &str = "/apis/sluice.dev/v1alpha1/namespaces/shop/ratelimitpolicies/checkout/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

/// The test clock, as conditions print it.
const NOW: &str = "2026-01-01T00:00:00Z";
/// A minute earlier: when earlier statuses were written.
const BEFORE: &str = "2025-12-31T23:59:00Z";

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn children(policy: &RateLimitPolicy) -> Children {
    render(policy, &render_config()).unwrap()
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    since: &str,
) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": since,
    })
}

fn accepted(generation: i64, since: &str) -> Value {
    condition(
        "Accepted",
        "True",
        "Valid",
        "the spec is valid",
        generation,
        since,
    )
}

fn healthy(generation: i64, since: &str) -> Value {
    condition(
        "Degraded",
        "False",
        "Healthy",
        "the limiters run as the policy asks",
        generation,
        since,
    )
}

fn ready(generation: i64, since: &str) -> Value {
    let message = format!(
        "2 of 2 limiter pods are ready; \
         ConfigMap checkout-policy holds the policy of generation {generation}"
    );
    condition(
        "Ready",
        "True",
        "LimitersReady",
        &message,
        generation,
        since,
    )
}

/// The status of a policy of one limit of `requests`, served by two ready
/// pods since [`BEFORE`].
fn ready_status(generation: i64, requests: u64) -> Value {
    json!({
        "effectiveLimits": [{"name": "global", "requests": requests, "effective": requests}],
        "readyReplicas": 2,
        "observedGeneration": generation,
        "conditions": [
            accepted(generation, BEFORE),
            ready(generation, BEFORE),
            healthy(generation, BEFORE),
        ],
    })
}

fn with_status(mut policy: RateLimitPolicy, status: Value) -> RateLimitPolicy {
    policy.status = Some(serde_json::from_value(status).unwrap());
    policy
}

/// A Deployment status with `ready` of two pods ready, all updated.
fn deployment_status(ready: i32) -> Value {
    json!({"status": {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": ready, "availableReplicas": ready,
    }})
}

/// The status a status write applies, after checking the rest of the body.
fn applied_status(call: &Call) -> Value {
    call.assert_applied();
    assert_eq!(call.body["apiVersion"], "sluice.dev/v1alpha1");
    assert_eq!(call.body["kind"], "RateLimitPolicy");
    assert_eq!(
        call.body["metadata"],
        json!({"name": "checkout", "namespace": "shop"})
    );
    assert_eq!(
        call.body.as_object().unwrap().len(),
        4,
        "only the status is written: {}",
        call.body
    );
    call.body["status"].clone()
}

/// Answers a status write with the whole policy, as the API server does.
fn reply_policy(call: Call, policy: &RateLimitPolicy) {
    let mut stored = json_of(policy);
    stored["status"] = call.body["status"].clone();
    call.reply(200, &stored);
}

/// Checks an Event's body and answers it.
fn expect_event(call: Call, type_: &str, reason: &str, action: &str, note_has: &str) {
    assert_eq!(call.body["type"], type_);
    assert_eq!(call.body["reason"], reason);
    assert_eq!(call.body["action"], action);
    let note = call.body["note"].as_str().unwrap_or_default();
    assert!(note.contains(note_has), "note {note:?} lacks {note_has:?}");
    assert_eq!(call.body["regarding"]["kind"], "RateLimitPolicy");
    assert_eq!(call.body["regarding"]["name"], "checkout");
    assert_eq!(call.body["reportingController"], "sluice-operator");
    assert_eq!(call.body["reportingInstance"], "sluice-operator-0");
    let body = call.body.clone();
    call.reply(201, &body);
}

/// Expects the four applies of `children`, answering the Deployment's
/// with `deployment`; the budget's with a deletion when there is none.
async fn expect_children(api: &mut MockApi, children: &Children, deployment: Value) {
    let call = api.expect("PATCH", CONFIG_MAP).await;
    call.assert_applies(&json_of(&children.config_map));
    call.reply_stored(json!({}));

    let call = api.expect("PATCH", DEPLOYMENT).await;
    call.assert_applies(&json_of(&children.deployment));
    call.reply_stored(deployment);

    let call = api.expect("PATCH", SERVICE).await;
    call.assert_applies(&json_of(&children.service));
    call.reply_stored(json!({}));

    match &children.pdb {
        Some(pdb) => {
            let call = api.expect("PATCH", PDB).await;
            call.assert_applies(&json_of(pdb));
            call.reply_stored(json!({}));
        }
        None => {
            let call = api.expect("DELETE", PDB).await;
            assert_eq!(
                call.body["propagationPolicy"], "Background",
                "{}",
                call.body
            );
            call.reply_failure(
                404,
                "NotFound",
                "poddisruptionbudgets \"checkout-limiter\" not found",
            );
        }
    }
}

#[tokio::test]
async fn new_policy_gets_its_children_then_a_status_and_an_event() {
    let policy = policy(&spec(100, 2), 1);
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let metrics = ctx.metrics.clone();
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    expect_children(&mut api, &children(&policy), json!({})).await;
    let call = api.expect("PATCH", STATUS).await;
    let rolling = "Deployment checkout-limiter is rolling out: 0 of 2 pods updated, 0 ready";
    let expected = json!({
        "effectiveLimits": [{"name": "global", "requests": 100, "effective": 100}],
        "readyReplicas": 0,
        "observedGeneration": 1,
        "conditions": [
            accepted(1, NOW),
            condition("Ready", "False", "RollingOut", rolling, 1, NOW),
            healthy(1, NOW),
        ],
    });
    assert_eq!(applied_status(&call), expected);
    reply_policy(call, &policy);
    expect_event(
        api.expect("POST", EVENTS).await,
        "Normal",
        "RollingOut",
        "Rollout",
        rolling,
    );

    let action = api.finish(task, ctx).await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    assert!(
        metrics
            .encode()
            .contains("sluice_operator_reconciles_total{result=\"applied\"} 1")
    );
}

#[tokio::test]
async fn policy_becomes_ready_when_its_pods_are() {
    let rolling = "Deployment checkout-limiter is rolling out: 0 of 2 pods updated, 0 ready";
    let old = json!({
        "effectiveLimits": [{"name": "global", "requests": 100, "effective": 100}],
        "readyReplicas": 0,
        "observedGeneration": 1,
        "conditions": [
            accepted(1, BEFORE),
            condition("Ready", "False", "RollingOut", rolling, 1, BEFORE),
            healthy(1, BEFORE),
        ],
    });
    let policy = with_status(policy(&spec(100, 2), 1), old);
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    expect_children(&mut api, &children(&policy), deployment_status(2)).await;
    let call = api.expect("PATCH", STATUS).await;
    let mut expected = ready_status(1, 100);
    expected["conditions"][1] = ready(1, NOW);
    assert_eq!(applied_status(&call), expected);
    reply_policy(call, &policy);
    expect_event(
        api.expect("POST", EVENTS).await,
        "Normal",
        "LimitersReady",
        "Rollout",
        "2 of 2",
    );

    api.finish(task, ctx).await.expect("reconciled");
}

#[tokio::test]
async fn unchanged_ready_policy_is_reapplied_without_status_write_or_event() {
    let policy = with_status(policy(&spec(100, 2), 1), ready_status(1, 100));
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    expect_children(&mut api, &children(&policy), deployment_status(2)).await;

    let action = api.finish(task, ctx).await.expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
}

#[tokio::test]
async fn spec_change_rewrites_the_configmap_and_leaves_the_pods_alone() {
    let first = policy(&spec(100, 2), 1);
    let changed = with_status(policy(&spec(250, 2), 2), ready_status(1, 100));
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(changed.clone()), ctx.clone()));

    let (before, after) = (children(&first), children(&changed));
    let document = &after.config_map.data.as_ref().unwrap()[POLICY_KEY];
    assert!(document.contains("requests: 250"), "{document}");
    assert_eq!(
        before.deployment, after.deployment,
        "the pod template must not change"
    );
    expect_children(&mut api, &after, deployment_status(2)).await;
    let call = api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(
        status["effectiveLimits"],
        json!([{"name": "global", "requests": 250, "effective": 250}])
    );
    assert_eq!(
        status["conditions"][1],
        ready(2, BEFORE),
        "still ready: no transition"
    );
    reply_policy(call, &changed);

    api.finish(task, ctx).await.expect("reconciled");
}

#[tokio::test]
async fn invalid_spec_gets_only_a_status_listing_every_problem_and_an_event() {
    let invalid = "limits: [{name: global, requests: 0, window: 48h}]\nlimiter: {replicas: 2}";
    let policy = with_status(policy(invalid, 3), ready_status(2, 100));
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let metrics = ctx.metrics.clone();
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    let call = api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    let problems = "the spec has 2 problems: spec.limits[0].requests: must be between 1 and 1000000000, \
                    got 0; spec.limits[0].window: must be between 10ms and 24h, got 48h";
    assert_eq!(
        status["conditions"][0],
        condition("Accepted", "False", "InvalidSpec", problems, 3, NOW)
    );
    let ready = &status["conditions"][1];
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("InvalidSpec"))
    );
    assert!(ready["message"].as_str().unwrap().contains(problems));
    assert_eq!(
        status["conditions"][2],
        healthy(2, BEFORE),
        "what runs is unchanged"
    );
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(
        status["effectiveLimits"],
        json!([{"name": "global", "requests": 100, "effective": 100}])
    );
    assert_eq!(status["observedGeneration"], 3);
    reply_policy(call, &policy);
    expect_event(
        api.expect("POST", EVENTS).await,
        "Warning",
        "InvalidSpec",
        "Validate",
        problems,
    );

    let action = api
        .finish(task, ctx)
        .await
        .expect("an invalid spec is no failure to retry");
    assert_eq!(action, Action::await_change());
    assert!(
        metrics
            .encode()
            .contains("sluice_operator_reconciles_total{result=\"rejected\"} 1")
    );
}

#[tokio::test]
async fn invalid_spec_already_reported_makes_no_call() {
    let invalid = "limits: [{name: global, requests: 0, window: 1s}]";
    let problems =
        "the spec has 1 problem: spec.limits[0].requests: must be between 1 and 1000000000, got 0";
    let not_served = format!(
        "this generation is not served because the spec is invalid; \
         limiter pods keep the last valid policy, if any ({problems})"
    );
    let reported = json!({
        "observedGeneration": 3,
        "conditions": [
            condition("Accepted", "False", "InvalidSpec", problems, 3, BEFORE),
            condition("Ready", "False", "InvalidSpec", &not_served, 3, BEFORE),
        ],
    });
    let policy = with_status(policy(invalid, 3), reported);
    let (client, api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    let action = api.finish(task, ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn transient_api_error_is_reported_and_retried_with_growing_backoff() {
    let policy = policy(&spec(100, 2), 1);
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    let call = api.expect("PATCH", CONFIG_MAP).await;
    call.assert_applies(&json_of(&children(&policy).config_map));
    call.reply_stored(json!({}));
    let call = api.expect("PATCH", DEPLOYMENT).await;
    call.assert_applied();
    call.reply_failure(503, "ServiceUnavailable", "etcdserver: leader changed");
    let failure = "failed to apply Deployment shop/checkout-limiter: \
                   503 ServiceUnavailable: etcdserver: leader changed";
    let call = api.expect("PATCH", STATUS).await;
    let message =
        format!("{failure}; the objects applied before keep running, and the operator retries");
    let expected =
        json!({"conditions": [condition("Degraded", "True", "ApplyFailed", &message, 1, NOW)]});
    assert_eq!(applied_status(&call), expected);
    reply_policy(call, &policy);
    expect_event(
        api.expect("POST", EVENTS).await,
        "Warning",
        "ApplyFailed",
        "Apply",
        failure,
    );

    let error = api.finish(task, ctx).await.expect_err("the pass failed");
    assert!(matches!(error, Error::ApplyDeployment { .. }), "{error}");
    assert_eq!(error.to_string(), failure);
    let (ctx, _leader) = context(mock_client().0, true);
    let policy = Arc::new(policy);
    let first = error_policy(policy.clone(), &error, ctx.clone());
    let second = error_policy(policy, &error, ctx);
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn deleted_child_is_applied_again() {
    let policy = with_status(policy(&spec(100, 2), 1), ready_status(1, 100));
    let expected = children(&policy);
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    // The ConfigMap was deleted by hand: the apply creates it anew.
    let call = api.expect("PATCH", CONFIG_MAP).await;
    call.assert_applies(&json_of(&expected.config_map));
    let created = call.body.clone();
    call.reply(201, &created);
    let call = api.expect("PATCH", DEPLOYMENT).await;
    call.assert_applies(&json_of(&expected.deployment));
    call.reply_stored(deployment_status(2));
    let call = api.expect("PATCH", SERVICE).await;
    call.assert_applies(&json_of(&expected.service));
    call.reply_stored(json!({}));
    let call = api.expect("PATCH", PDB).await;
    call.assert_applies(&json_of(expected.pdb.as_ref().unwrap()));
    call.reply_stored(json!({}));

    api.finish(task, ctx).await.expect("reconciled");
}

#[tokio::test]
async fn single_replica_removes_the_disruption_budget() {
    let policy = with_status(policy(&spec(100, 1), 2), ready_status(1, 100));
    let rendered = children(&policy);
    assert_eq!(rendered.pdb, None);
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    let one_ready = json!({"status": {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1,
    }});
    expect_children(&mut api, &rendered, one_ready).await;
    let call = api.expect("PATCH", STATUS).await;
    let status = applied_status(&call);
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(status["conditions"][1]["status"], "True");
    reply_policy(call, &policy);

    api.finish(task, ctx).await.expect("reconciled");
}

#[tokio::test]
async fn replica_that_does_not_lead_makes_no_call() {
    let policy = policy(&spec(100, 2), 1);
    let (client, api) = mock_client();
    let (ctx, _leader) = context(client, false);
    let metrics = ctx.metrics.clone();
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    let action = api
        .finish(task, ctx)
        .await
        .expect("not leading is no failure");
    assert_eq!(action, Action::await_change());
    assert!(
        metrics
            .encode()
            .contains("sluice_operator_reconciles_total{result=\"skipped\"} 1")
    );
}

#[tokio::test]
async fn leadership_lost_mid_pass_stops_before_the_next_write() {
    let policy = policy(&spec(100, 2), 1);
    let (client, mut api) = mock_client();
    let (ctx, leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    let call = api.expect("PATCH", CONFIG_MAP).await;
    call.assert_applies(&json_of(&children(&policy).config_map));
    leader.set(false);
    call.reply_stored(json!({}));

    let action = api
        .finish(task, ctx)
        .await
        .expect("not leading is no failure");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_status_write_failure_is_retried() {
    let policy = policy(&spec(100, 2), 1);
    let (client, mut api) = mock_client();
    let (ctx, _leader) = context(client, true);
    let task = spawn(reconcile(Arc::new(policy.clone()), ctx.clone()));

    expect_children(&mut api, &children(&policy), deployment_status(2)).await;
    let call = api.expect("PATCH", STATUS).await;
    call.reply_failure(
        500,
        "InternalError",
        "the server has received too many requests",
    );

    let error = api
        .finish(task, ctx)
        .await
        .expect_err("the status was not written");
    assert!(matches!(error, Error::WriteStatus { .. }), "{error}");
}
