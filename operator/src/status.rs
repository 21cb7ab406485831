//! Status: what the operator reports about a policy, computed from the
//! previous status and what the last reconcile saw. Pure: the time comes
//! in as an argument. The adaptive fields are [`adapting`]'s.

use k8s_openapi::{
    api::apps::v1::{Deployment, DeploymentCondition},
    apimachinery::pkg::apis::meta::v1::Time,
};
use sluice_crds::{EffectiveLimit, RateLimitPolicySpec, RateLimitPolicyStatus, ValidationErrors};

use crate::{
    conditions::{self, ACCEPTED, DEGRADED, Observed, READY, reason},
    render::Owner,
};

pub mod adapting;

/// What a Deployment reports about its pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Pods asked for.
    pub desired: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods running the current pod template.
    pub updated: i32,
    /// Pods available (ready for at least `minReadySeconds`).
    pub available: i32,
    /// Whether the Deployment controller has seen the current spec.
    pub current: bool,
    /// Why progress stopped, when the Deployment gave up.
    pub stuck: Option<String>,
    /// Why pods cannot be created, when that happens.
    pub replica_failure: Option<String>,
}

impl Rollout {
    /// Reads the rollout from a Deployment as the API server returned it.
    pub fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        let conditions = status.conditions.unwrap_or_default();
        let condition = |type_: &str, status: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(describe)
        };
        Self {
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            current: status.observed_generation.unwrap_or(0) >= generation,
            stuck: condition("Progressing", "False"),
            replica_failure: condition("ReplicaFailure", "True"),
        }
    }

    /// Whether every asked-for pod runs the current template and is ready.
    pub fn is_complete(&self) -> bool {
        self.current
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.available >= self.desired
    }
}

fn describe(condition: &DeploymentCondition) -> String {
    let reason = condition.reason.as_deref().unwrap_or("Unknown");
    match condition.message.as_deref() {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_owned(),
    }
}

/// A limit's size under `multiplier`: never below one request, and never
/// above the base when the multiplier is above one by mistake.
pub fn effective_requests(requests: u64, multiplier: f64) -> u64 {
    let multiplier = if multiplier.is_finite() {
        multiplier.clamp(0.0, 1.0)
    } else {
        1.0
    };
    // `as` saturates; requests are at most 1e9, exact in an f64.
    ((requests as f64 * multiplier).floor() as u64).max(1)
}

/// Every limit's base and effective size under `multiplier`.
pub fn effective_limits(spec: &RateLimitPolicySpec, multiplier: f64) -> Vec<EffectiveLimit> {
    let limit = |l: &sluice_crds::Limit| EffectiveLimit {
        name: l.name.clone(),
        requests: l.requests,
        effective: effective_requests(l.requests, multiplier),
    };
    spec.limits.iter().map(limit).collect()
}

/// The status after the children of a valid spec were applied and the
/// Deployment reported `rollout`.
///
/// `Ready` means the limiter pods are ready and their ConfigMap holds this
/// generation. It does not prove the pods have loaded it yet: the kubelet
/// refreshes mounted ConfigMaps on its own schedule (about a minute at
/// most), and the limiter reloads within its reload interval after that.
/// Reading the generation each limiter serves (from `/v1/policies`) would
/// close that gap.
pub fn serving(
    old: Option<&RateLimitPolicyStatus>,
    generation: Option<i64>,
    owner: &Owner,
    spec: &RateLimitPolicySpec,
    rollout: &Rollout,
    now: &Time,
) -> RateLimitPolicyStatus {
    let mut status = old.cloned().unwrap_or_default();
    let multiplier = status.multiplier.unwrap_or(1.0);
    status.effective_limits = effective_limits(spec, multiplier);
    status.ready_replicas = Some(rollout.ready);
    status.observed_generation = generation;
    let accepted = Observed::holds(ACCEPTED, reason::VALID, "the spec is valid");
    let observed = [
        accepted,
        readiness(owner, rollout, generation),
        health(owner, rollout),
    ];
    for condition in observed {
        conditions::set(&mut status.conditions, condition, generation, now);
    }
    status
}

fn readiness(owner: &Owner, rollout: &Rollout, generation: Option<i64>) -> Observed {
    let deployment = owner.limiter_name();
    let (desired, ready) = (rollout.desired, rollout.ready);
    if rollout.is_complete() {
        let generation = generation.map_or_else(String::new, |g| format!(" of generation {g}"));
        let config_map = owner.config_map_name();
        let message = format!(
            "{ready} of {desired} limiter pods are ready; \
             ConfigMap {config_map} holds the policy{generation}"
        );
        return Observed::holds(READY, reason::LIMITERS_READY, message);
    }
    if !rollout.current || rollout.updated < desired {
        let message = format!(
            "Deployment {deployment} is rolling out: {} of {desired} pods updated, {ready} ready",
            rollout.updated
        );
        return Observed::fails(READY, reason::ROLLING_OUT, message);
    }
    let message = format!(
        "{ready} of {desired} limiter pods are ready; \
         `kubectl -n {} describe deployment {deployment}` shows why",
        owner.namespace
    );
    Observed::fails(READY, reason::LIMITERS_UNAVAILABLE, message)
}

fn health(owner: &Owner, rollout: &Rollout) -> Observed {
    let deployment = owner.limiter_name();
    if let Some(why) = &rollout.replica_failure {
        let message = format!("Deployment {deployment} cannot create pods: {why}");
        return Observed::holds(DEGRADED, reason::REPLICA_FAILURE, message);
    }
    if let Some(why) = &rollout.stuck {
        let message = format!("Deployment {deployment} stopped progressing: {why}");
        return Observed::holds(DEGRADED, reason::ROLLOUT_STUCK, message);
    }
    Observed::fails(
        DEGRADED,
        reason::HEALTHY,
        "the limiters run as the policy asks",
    )
}

/// The status of a spec that failed validation: `Accepted` and `Ready`
/// are false and list every problem. What describes the running limiters
/// (ready replicas, effective limits, `Degraded`) is kept as it was, since
/// they keep serving the last valid policy.
pub fn rejected(
    old: Option<&RateLimitPolicyStatus>,
    generation: Option<i64>,
    problems: &ValidationErrors,
    now: &Time,
) -> RateLimitPolicyStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let count = problems.0.len();
    let plural = if count == 1 { "" } else { "s" };
    let listed = format!("the spec has {count} problem{plural}: {problems}");
    let not_served = format!(
        "this generation is not served because the spec is invalid; \
         limiter pods keep the last valid policy, if any ({listed})"
    );
    let observed = [
        Observed::fails(ACCEPTED, reason::INVALID_SPEC, listed),
        Observed::fails(READY, reason::INVALID_SPEC, not_served),
    ];
    for condition in observed {
        conditions::set(&mut status.conditions, condition, generation, now);
    }
    status
}

/// The status after writing a child failed with `error`: `Degraded` says
/// so; the rest still describes what runs.
pub fn apply_failed(
    old: Option<&RateLimitPolicyStatus>,
    generation: Option<i64>,
    error: &str,
    now: &Time,
) -> RateLimitPolicyStatus {
    let mut status = old.cloned().unwrap_or_default();
    let message =
        format!("{error}; the objects applied before keep running, and the operator retries");
    let degraded = Observed::holds(DEGRADED, reason::APPLY_FAILED, message);
    conditions::set(&mut status.conditions, degraded, generation, now);
    status
}

#[cfg(test)]
mod tests;
