//! Which Kubernetes Events a reconcile publishes: one for each failure,
//! each change of readiness and each change of `Adapting` between `True`
//! and `False`, decided from the statuses before and after.
//! Pure; [`crate::reconcile`] publishes what this returns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType};
use sluice_crds::RateLimitPolicyStatus;

use crate::conditions::{self, ACCEPTED, ADAPTING, DEGRADED, READY, reason};

/// The most an Event's note may hold, in bytes.
pub const MAX_NOTE: usize = 1024;

/// An Event about a policy, before it is published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// CamelCase, as `kubectl describe` shows it.
    pub reason: String,
    /// What the operator was doing.
    pub action: &'static str,
    /// What happened, for a person; at most [`MAX_NOTE`] bytes.
    pub note: String,
}

impl Notice {
    fn new(warning: bool, reason: &str, action: &'static str, note: &str) -> Self {
        Self {
            warning,
            reason: reason.to_owned(),
            action,
            note: truncate(note, MAX_NOTE),
        }
    }

    /// The Event to publish.
    pub fn to_event(&self) -> Event {
        Event {
            type_: if self.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: self.reason.clone(),
            note: Some(self.note.clone()),
            action: self.action.to_owned(),
            secondary: None,
        }
    }
}

/// Events for what changed from `old` to `new`: a spec newly rejected (or
/// rejected for other problems), `Ready` changing, a new kind of
/// degradation, `Adapting` turning `True` or `False`. Rewriting an
/// unchanged status yields none, so that a reconcile repeated on the same
/// generation stays quiet; so does an adaptation tick that changes only
/// the multiplier, the signals or the reason.
///
/// `old` comes from the controller's cache, which can lag the operator's
/// own last status write by a moment; a reconcile in that moment repeats
/// an Event, which the recorder folds into a series of the first.
pub fn changes(old: Option<&RateLimitPolicyStatus>, new: &RateLimitPolicyStatus) -> Vec<Notice> {
    let before = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let after = new.conditions.as_slice();
    let mut notices = Vec::new();
    let rejected = conditions::find(after, ACCEPTED).filter(|c| c.status == "False");
    if let Some(rejected) = rejected
        && !same(conditions::find(before, ACCEPTED), rejected)
    {
        let notice = Notice::new(true, &rejected.reason, "Validate", &rejected.message);
        notices.push(notice);
    }
    if let Some(ready) = conditions::find(after, READY) {
        let was = conditions::find(before, READY).map(|c| c.status.as_str());
        if was != Some(ready.status.as_str()) && ready.reason != reason::INVALID_SPEC {
            let warning = ready.status == "False" && ready.reason != reason::ROLLING_OUT;
            notices.push(Notice::new(
                warning,
                &ready.reason,
                "Rollout",
                &ready.message,
            ));
        }
    }
    if let Some(degraded) = conditions::find(after, DEGRADED).filter(|c| c.status == "True") {
        // An apply failure has its own Event, published each time.
        let fresh = conditions::find(before, DEGRADED)
            .is_none_or(|c| c.status != "True" || c.reason != degraded.reason);
        if fresh && degraded.reason != reason::APPLY_FAILED {
            notices.push(Notice::new(
                true,
                &degraded.reason,
                "Rollout",
                &degraded.message,
            ));
        }
    }
    if let Some(adapting) = conditions::find(after, ADAPTING) {
        let was = conditions::find(before, ADAPTING).map(|c| c.status.as_str());
        if was != Some(adapting.status.as_str()) {
            notices.push(Notice::new(
                adapting.status == "False",
                &adapting.reason,
                "Adapt",
                &adapting.message,
            ));
        }
    }
    notices
}

/// The Event for a failed write of a child.
pub fn apply_failure(error: &str) -> Notice {
    Notice::new(true, reason::APPLY_FAILED, "Apply", error)
}

fn same(old: Option<&Condition>, new: &Condition) -> bool {
    old.is_some_and(|o| {
        o.status == new.status && o.reason == new.reason && o.message == new.message
    })
}

/// Cuts `text` to at most `max` bytes, on a character boundary, marking
/// the cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;
    use crate::conditions::Observed;

    fn status(observed: Vec<Observed>) -> RateLimitPolicyStatus {
        let now = Time(Timestamp::from_second(1).unwrap());
        let mut status = RateLimitPolicyStatus::default();
        for o in observed {
            conditions::set(&mut status.conditions, o, Some(1), &now);
        }
        status
    }

    fn ready() -> Observed {
        Observed::holds(READY, reason::LIMITERS_READY, "2 of 2")
    }

    fn rolling() -> Observed {
        Observed::fails(READY, reason::ROLLING_OUT, "0 of 2")
    }

    #[test]
    fn becoming_ready_is_a_normal_event() {
        let notices = changes(Some(&status(vec![rolling()])), &status(vec![ready()]));
        assert_eq!(notices.len(), 1);
        assert!(!notices[0].warning);
        assert_eq!(notices[0].reason, "LimitersReady");
    }

    #[test]
    fn losing_readiness_is_a_warning() {
        let lost = Observed::fails(READY, reason::LIMITERS_UNAVAILABLE, "1 of 2");
        let notices = changes(Some(&status(vec![ready()])), &status(vec![lost]));
        assert!(notices[0].warning);
        assert_eq!(notices[0].reason, "LimitersUnavailable");
    }

    #[test]
    fn unchanged_status_publishes_nothing() {
        let same = status(vec![
            ready(),
            Observed::fails(DEGRADED, reason::HEALTHY, "ok"),
        ]);
        assert_eq!(changes(Some(&same), &same), []);
    }

    #[test]
    fn same_rejection_is_published_once() {
        let rejected = status(vec![Observed::fails(
            ACCEPTED,
            reason::INVALID_SPEC,
            "bad window",
        )]);
        assert_eq!(changes(None, &rejected).len(), 1);
        assert_eq!(changes(Some(&rejected), &rejected), []);
        let other = status(vec![Observed::fails(
            ACCEPTED,
            reason::INVALID_SPEC,
            "bad name",
        )]);
        assert_eq!(changes(Some(&rejected), &other).len(), 1);
    }

    #[test]
    fn a_stuck_rollout_is_a_warning_once() {
        let stuck = status(vec![Observed::holds(
            DEGRADED,
            reason::ROLLOUT_STUCK,
            "deadline",
        )]);
        let notices = changes(None, &stuck);
        assert_eq!(notices.len(), 1);
        assert!(notices[0].warning);
        assert_eq!(changes(Some(&stuck), &stuck), []);
    }

    #[test]
    fn adapting_turning_false_is_a_warning_and_its_reasons_are_not_news() {
        let cutting = status(vec![Observed::holds(ADAPTING, reason::CUTTING, "0.5")]);
        let holding = status(vec![Observed::holds(ADAPTING, reason::HOLDING, "0.5")]);
        assert_eq!(changes(Some(&cutting), &holding), []);

        let blind = Observed::fails(ADAPTING, reason::PROMETHEUS_UNAVAILABLE, "refused");
        let blind = status(vec![blind]);
        let notices = changes(Some(&holding), &blind);
        assert_eq!(notices.len(), 1);
        assert!(notices[0].warning);
        assert_eq!(
            (notices[0].reason.as_str(), notices[0].action),
            ("PrometheusUnavailable", "Adapt")
        );
        let back = changes(Some(&blind), &cutting);
        assert_eq!(back.len(), 1);
        assert!(!back[0].warning);
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(MAX_NOTE);
        let notice = apply_failure(&note);
        assert!(notice.note.len() <= MAX_NOTE);
        assert!(notice.note.ends_with('…'));
    }
}
