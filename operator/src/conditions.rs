//! Status conditions, following the Kubernetes conventions: one entry per
//! type, `True`/`False`/`Unknown`, a CamelCase reason, a message for
//! people, the generation it describes, and the time its status last
//! changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The spec is valid and taken; `False` lists every problem.
pub const ACCEPTED: &str = "Accepted";
/// Limiter pods serve this generation of the policy.
pub const READY: &str = "Ready";
/// The limiters run, but not as the policy asks.
pub const DEGRADED: &str = "Degraded";
/// The adaptive multiplier follows the target's health and reaches the
/// limiters.
pub const ADAPTING: &str = "Adapting";

/// Reasons the operator gives, one per situation a person may act on.
pub mod reason {
    /// `Accepted=True`: the spec passed validation.
    pub const VALID: &str = "Valid";
    /// `Accepted=False` and `Ready=False`: the spec breaks a rule.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `Ready=True`: every limiter pod is ready.
    pub const LIMITERS_READY: &str = "LimitersReady";
    /// `Ready=False`: the Deployment is still rolling out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// `Ready=False`: fewer limiter pods are ready than asked for.
    pub const LIMITERS_UNAVAILABLE: &str = "LimitersUnavailable";
    /// `Degraded=True`: writing a child failed; the last applied objects
    /// keep running.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// `Degraded=True`: the Deployment gave up progressing.
    pub const ROLLOUT_STUCK: &str = "RolloutStuck";
    /// `Degraded=True`: the Deployment cannot create pods.
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// `Degraded=False`: nothing is wrong.
    pub const HEALTHY: &str = "Healthy";
    /// `Adapting=True`: the last tick cut the multiplier under pressure.
    pub const CUTTING: &str = "Cutting";
    /// `Adapting=True`: the last tick raised the multiplier after a
    /// healthy period.
    pub const RECOVERING: &str = "Recovering";
    /// `Adapting=True`: under pressure, waiting for the last cut to show
    /// in the signals.
    pub const SETTLING: &str = "Settling";
    /// `Adapting=True`: neither healthy long enough to recover nor under
    /// pressure enough to cut.
    pub const HOLDING: &str = "Holding";
    /// `Adapting=False`: every query to Prometheus failed; the multiplier
    /// holds.
    pub const PROMETHEUS_UNAVAILABLE: &str = "PrometheusUnavailable";
    /// `Adapting=False`: Prometheus answered, but no signal could be used;
    /// the multiplier holds.
    pub const SIGNALS_UNKNOWN: &str = "SignalsUnknown";
    /// `Adapting=False`: the multiplier could not be published in Redis;
    /// the limiters keep the last one they read.
    pub const PUBLISH_FAILED: &str = "PublishFailed";
    /// `Adapting=False`: the policy has no `spec.limiter.redis`, so the
    /// limiters cannot read the multiplier.
    pub const NO_REDIS: &str = "NoRedis";
}

/// A condition before it is stamped with its transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `Accepted`, `Ready`, `Adapting` or `Degraded`.
    pub type_: &'static str,
    /// Whether the condition holds.
    pub status: bool,
    /// One of [`reason`].
    pub reason: &'static str,
    /// What happened and what to do, for a person.
    pub message: String,
}

impl Observed {
    /// A condition that holds.
    pub fn holds(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn fails(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: false,
            ..Self::holds(type_, reason, message)
        }
    }
}

/// The condition of `type_` in `conditions`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is set and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Sets `observed` in `conditions` for `generation`. The transition time
/// moves to `now` only when the status changes, so that rewriting an
/// unchanged condition changes nothing.
pub fn set(
    conditions: &mut Vec<Condition>,
    observed: Observed,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if observed.status { "True" } else { "False" };
    let since = match find(conditions, observed.type_) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: observed.type_.to_owned(),
        status: status.to_owned(),
        reason: observed.reason.to_owned(),
        message: observed.message,
        observed_generation: generation,
        last_transition_time: since,
    };
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            Observed::fails(READY, reason::ROLLING_OUT, "a"),
            Some(1),
            &at(10),
        );
        let later = Observed::fails(READY, reason::LIMITERS_UNAVAILABLE, "b");
        set(&mut conditions, later, Some(2), &at(20));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "LimitersUnavailable");
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_the_transition_time() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            Observed::fails(READY, reason::ROLLING_OUT, "a"),
            Some(1),
            &at(10),
        );
        let ready = Observed::holds(READY, reason::LIMITERS_READY, "b");
        set(&mut conditions, ready, Some(1), &at(20));
        assert_eq!(conditions[0].last_transition_time, at(20));
        assert!(is_true(&conditions, READY));
    }

    #[test]
    fn each_type_is_set_once_and_others_are_kept() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            Observed::holds(ACCEPTED, reason::VALID, "ok"),
            Some(1),
            &at(1),
        );
        set(
            &mut conditions,
            Observed::fails(READY, reason::ROLLING_OUT, "x"),
            Some(1),
            &at(1),
        );
        set(
            &mut conditions,
            Observed::holds(ACCEPTED, reason::VALID, "ok"),
            Some(2),
            &at(2),
        );
        let types: Vec<_> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Accepted", "Ready"]);
    }
}
