//! Reconcile against a mock API server: one scenario per path, each
//! stating every call the operator makes — method, path, field manager and
//! body — in order, and failing on any call missing or extra.

mod support;

use std::{sync::Arc, time::Duration};

use kube::runtime::controller::Action;
use serde_json::json;
use sluice_operator::{
    reconcile::{Error, error_policy, reconcile},
    render::POLICY_KEY,
};
use support::{
    api::{mock_client, spawn},
    fixtures::{context, policy, spec},
    scenario::*,
};

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
