//! The parts of a reconcile scenario against the mock API: the paths the
//! operator writes, the conditions and statuses it should write, and the
//! calls every pass makes, stated once.

use serde_json::{Value, json};
use sluice_crds::RateLimitPolicy;
use sluice_operator::render::{Children, render};

use super::{
    api::{Call, MockApi},
    fixtures::render_config,
};

/// The policy's ConfigMap.
pub const CONFIG_MAP: &str = "/api/v1/namespaces/shop/configmaps/checkout-policy";
/// The limiter Deployment.
pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout-limiter";
/// The limiter Service.
pub const SERVICE: &str = "/api/v1/namespaces/shop/services/checkout-limiter";
/// The limiter PodDisruptionBudget.
pub const PDB: &str = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/checkout-limiter";
/// The policy's status subresource.
pub const STATUS: &str =
    "/apis/sluice.dev/v1alpha1/namespaces/shop/ratelimitpolicies/checkout/status";
/// Where Events are created.
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

/// The test clock, as conditions print it.
pub const NOW: &str = "2026-01-01T00:00:00Z";
/// A minute earlier: when earlier statuses were written.
pub const BEFORE: &str = "2025-12-31T23:59:00Z";

/// `value` as JSON.
pub fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// What the operator renders for `policy`.
pub fn children(policy: &RateLimitPolicy) -> Children {
    render(policy, &render_config()).unwrap()
}

/// A condition as the status carries it.
pub fn condition(
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

/// `Accepted=True` of `generation` since `since`.
pub fn accepted(generation: i64, since: &str) -> Value {
    condition(
        "Accepted",
        "True",
        "Valid",
        "the spec is valid",
        generation,
        since,
    )
}

/// `Degraded=False` of `generation` since `since`.
pub fn healthy(generation: i64, since: &str) -> Value {
    condition(
        "Degraded",
        "False",
        "Healthy",
        "the limiters run as the policy asks",
        generation,
        since,
    )
}

/// `Ready=True` (two pods) of `generation` since `since`.
pub fn ready(generation: i64, since: &str) -> Value {
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
pub fn ready_status(generation: i64, requests: u64) -> Value {
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

/// `policy` with `status`, as the API server would hand it over.
pub fn with_status(mut policy: RateLimitPolicy, status: Value) -> RateLimitPolicy {
    policy.status = Some(serde_json::from_value(status).unwrap());
    policy
}

/// A Deployment status with `ready` of two pods ready, all updated.
pub fn deployment_status(ready: i32) -> Value {
    json!({"status": {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": ready, "availableReplicas": ready,
    }})
}

/// The status a status write applies, after checking the rest of the body.
pub fn applied_status(call: &Call) -> Value {
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
pub fn reply_policy(call: Call, policy: &RateLimitPolicy) {
    let mut stored = json_of(policy);
    stored["status"] = call.body["status"].clone();
    call.reply(200, &stored);
}

/// Checks an Event's body and answers it.
pub fn expect_event(call: Call, type_: &str, reason: &str, action: &str, note_has: &str) {
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
pub async fn expect_children(api: &mut MockApi, children: &Children, deployment: Value) {
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
