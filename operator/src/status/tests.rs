use k8s_openapi::{
    api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use sluice_crds::FieldError;

use super::*;

fn owner() -> Owner {
    Owner {
        name: "checkout".into(),
        namespace: "shop".into(),
        uid: "u".into(),
    }
}

fn spec() -> RateLimitPolicySpec {
    let limits =
        "[{name: global, requests: 100, window: 1s}, {name: tiny, requests: 3, window: 1s}]";
    serde_yaml::from_str(&format!("limits: {limits}")).unwrap()
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

fn rollout(desired: i32, ready: i32) -> Rollout {
    Rollout {
        desired,
        ready,
        updated: desired,
        available: ready,
        current: true,
        ..Rollout::default()
    }
}

fn condition<'a>(
    status: &'a RateLimitPolicyStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions::find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_}"))
}

#[test]
fn all_pods_ready_makes_the_policy_ready() {
    let status = serving(None, Some(3), &owner(), &spec(), &rollout(2, 2), &at(1));
    let ready = condition(&status, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "LimitersReady")
    );
    assert_eq!(ready.observed_generation, Some(3));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(condition(&status, ACCEPTED).status, "True");
    assert_eq!(condition(&status, DEGRADED).status, "False");
}

#[test]
fn missing_pods_make_the_policy_not_ready_and_say_where_to_look() {
    let status = serving(None, Some(1), &owner(), &spec(), &rollout(2, 1), &at(1));
    let ready = condition(&status, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "LimitersUnavailable")
    );
    assert!(ready.message.contains("1 of 2"), "{}", ready.message);
    assert!(
        ready
            .message
            .contains("kubectl -n shop describe deployment checkout-limiter")
    );
}

#[test]
fn a_deployment_that_has_not_seen_its_spec_is_rolling_out() {
    let mut stale = rollout(2, 2);
    stale.current = false;
    let status = serving(None, Some(1), &owner(), &spec(), &stale, &at(1));
    assert_eq!(condition(&status, READY).reason, "RollingOut");
}

#[test]
fn a_stuck_rollout_is_degraded_with_the_deployments_reason() {
    let deployment = Deployment {
        metadata: ObjectMeta {
            generation: Some(2),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            ..DeploymentSpec::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: Some(2),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet has timed out progressing.".into()),
                ..DeploymentCondition::default()
            }]),
            ..DeploymentStatus::default()
        }),
    };
    let status = serving(
        None,
        Some(1),
        &owner(),
        &spec(),
        &Rollout::of(&deployment),
        &at(1),
    );
    let degraded = condition(&status, DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolloutStuck")
    );
    assert!(
        degraded.message.contains("ProgressDeadlineExceeded"),
        "{}",
        degraded.message
    );
}

#[test]
fn effective_limits_follow_the_multiplier_and_never_reach_zero() {
    let old = RateLimitPolicyStatus {
        multiplier: Some(0.25),
        ..RateLimitPolicyStatus::default()
    };
    let status = serving(
        Some(&old),
        Some(1),
        &owner(),
        &spec(),
        &rollout(1, 1),
        &at(1),
    );
    let effective: Vec<_> = status
        .effective_limits
        .iter()
        .map(|l| (l.requests, l.effective))
        .collect();
    assert_eq!(effective, [(100, 25), (3, 1)]);
    assert_eq!(
        status.multiplier,
        Some(0.25),
        "the multiplier is not the operator's to change here"
    );
}

#[test]
fn effective_requests_ignore_a_multiplier_that_is_not_a_fraction() {
    assert_eq!(effective_requests(100, f64::NAN), 100);
    assert_eq!(effective_requests(100, 7.0), 100);
    assert_eq!(effective_requests(100, -1.0), 1);
}

#[test]
fn rejection_lists_every_problem_and_keeps_what_runs() {
    let running = serving(None, Some(1), &owner(), &spec(), &rollout(2, 2), &at(1));
    let problems = ValidationErrors(vec![
        FieldError {
            path: "spec.limits[0].window".into(),
            message: "too long".into(),
        },
        FieldError {
            path: "spec.limiter.replicas".into(),
            message: "too many".into(),
        },
    ]);
    let status = rejected(Some(&running), Some(2), &problems, &at(2));
    let accepted = condition(&status, ACCEPTED);
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        accepted.message.contains("2 problems"),
        "{}",
        accepted.message
    );
    assert!(accepted.message.contains("spec.limits[0].window: too long"));
    assert!(accepted.message.contains("spec.limiter.replicas: too many"));
    assert_eq!(condition(&status, READY).status, "False");
    assert!(
        condition(&status, READY)
            .message
            .contains("spec.limiter.replicas")
    );
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.effective_limits, running.effective_limits);
    assert_eq!(status.observed_generation, Some(2));
}

#[test]
fn apply_failure_degrades_without_touching_readiness() {
    let running = serving(None, Some(1), &owner(), &spec(), &rollout(2, 2), &at(1));
    let status = apply_failed(
        Some(&running),
        Some(1),
        "failed to apply Deployment shop/checkout-limiter: 503",
        &at(2),
    );
    let degraded = condition(&status, DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ApplyFailed")
    );
    assert!(degraded.message.starts_with("failed to apply Deployment"));
    assert_eq!(condition(&status, READY), condition(&running, READY));
}

#[test]
fn recomputing_an_unchanged_rollout_yields_the_same_status() {
    let first = serving(None, Some(1), &owner(), &spec(), &rollout(2, 2), &at(1));
    let again = serving(
        Some(&first),
        Some(1),
        &owner(),
        &spec(),
        &rollout(2, 2),
        &at(99),
    );
    assert_eq!(first, again);
}
