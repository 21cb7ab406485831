//! Turning a store's outcome into the answer a client gets. Pure.

use std::sync::Arc;

use crate::{store::Outcome, window::Snapshot};

/// One applicable limit as the check left it.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitState {
    /// The limit's name.
    pub name: Arc<str>,
    /// Requests per window at multiplier 1.0.
    pub requests: u64,
    /// Requests per window under the current multiplier.
    pub effective: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Whole requests still admissible now (after this check, if admitted).
    pub remaining: u64,
    /// Milliseconds until the whole limit is available again.
    pub reset_after_ms: u64,
    /// Milliseconds until a request of this check's cost would fit this
    /// limit; `None` when it never can.
    pub retry_after_ms: Option<u64>,
}

/// Why a check was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// A limit has no room for the cost now; it will later.
    LimitExhausted,
    /// The cost is larger than a limit's effective size: it never fits.
    CostExceedsLimit,
}

impl DenyReason {
    /// The reason as the API spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::LimitExhausted => "limit_exhausted",
            Self::CostExceedsLimit => "cost_exceeds_limit",
        }
    }
}

/// The answer to a check.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Why not, when it may not.
    pub reason: Option<DenyReason>,
    /// Every limit that applied, in policy order.
    pub limits: Vec<LimitState>,
    /// The index in `limits` of the limit that decided: the one that denied
    /// (with the longest wait), or, when allowed, the one with the least room.
    pub deciding: Option<usize>,
    /// The multiplier the limits were scaled by.
    pub multiplier: f64,
    /// Whether the decision was made without the shared store.
    pub degraded: bool,
}

/// What the engine knows about one applicable limit before deciding.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The limit's name.
    pub name: Arc<str>,
    /// Requests per window at multiplier 1.0.
    pub requests: u64,
    /// The effective limit.
    pub effective: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
}

impl Decision {
    /// The decision when no limit applies: allowed, nothing counted.
    pub fn unlimited(multiplier: f64) -> Self {
        let none = Vec::new();
        Self {
            allowed: true,
            reason: None,
            limits: none,
            deciding: None,
            multiplier,
            degraded: false,
        }
    }

    /// Builds the decision from the store's outcome for limits `applied`
    /// (in the same order as the outcome's snapshots).
    pub fn from_outcome(
        applied: &[Applied],
        outcome: &Outcome,
        cost: u64,
        multiplier: f64,
    ) -> Self {
        let limits: Vec<LimitState> = applied
            .iter()
            .zip(&outcome.before)
            .map(|(a, before)| limit_state(a, before, outcome.admitted, cost))
            .collect();
        let never_fits = limits.iter().position(|l| l.retry_after_ms.is_none());
        let (reason, deciding) = match (outcome.admitted, never_fits) {
            (true, _) => (None, least_room(&limits)),
            (false, Some(i)) => (Some(DenyReason::CostExceedsLimit), Some(i)),
            (false, None) => (Some(DenyReason::LimitExhausted), longest_wait(&limits)),
        };
        let allowed = outcome.admitted;
        Self {
            allowed,
            reason,
            limits,
            deciding,
            multiplier,
            degraded: outcome.degraded,
        }
    }

    /// The deciding limit.
    pub fn deciding_limit(&self) -> Option<&LimitState> {
        self.deciding.map(|i| &self.limits[i])
    }

    /// Milliseconds to wait before the same request would be admitted, if
    /// nothing else arrives: the longest wait over all applicable limits.
    /// `None` when allowed, or when the request can never fit.
    pub fn retry_after_ms(&self) -> Option<u64> {
        if self.allowed {
            return None;
        }
        self.limits
            .iter()
            .try_fold(0, |wait, l| l.retry_after_ms.map(|w| wait.max(w)))
    }
}

fn limit_state(a: &Applied, before: &Snapshot, admitted: bool, cost: u64) -> LimitState {
    let after = match admitted {
        true => Snapshot {
            cur: before.cur.saturating_add(cost),
            ..*before
        },
        false => *before,
    };
    LimitState {
        name: a.name.clone(),
        requests: a.requests,
        effective: a.effective,
        window_ms: a.window_ms,
        remaining: after.remaining(a.window_ms, a.effective),
        reset_after_ms: after.reset_after_ms(a.window_ms),
        retry_after_ms: before.retry_after_ms(a.window_ms, a.effective, cost),
    }
}

fn least_room(limits: &[LimitState]) -> Option<usize> {
    (0..limits.len()).min_by_key(|&i| limits[i].remaining)
}

fn longest_wait(limits: &[LimitState]) -> Option<usize> {
    (0..limits.len()).max_by_key(|&i| (limits[i].retry_after_ms, std::cmp::Reverse(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(name: &str, effective: u64) -> Applied {
        Applied {
            name: name.into(),
            requests: effective,
            effective,
            window_ms: 1000,
        }
    }

    fn outcome(admitted: bool, counts: &[u64]) -> Outcome {
        let before = counts
            .iter()
            .map(|&cur| Snapshot {
                prev: 0,
                cur,
                elapsed_ms: 500,
            })
            .collect();
        Outcome {
            admitted,
            now_ms: 500,
            before,
            degraded: false,
        }
    }

    #[test]
    fn allowed_check_reports_the_limit_with_least_room_after_counting() {
        let limits = [applied("a", 10), applied("b", 5)];
        let d = Decision::from_outcome(&limits, &outcome(true, &[1, 3]), 1, 1.0);
        assert!(d.allowed);
        assert_eq!(d.deciding_limit().unwrap().name.as_ref(), "b");
        assert_eq!(d.deciding_limit().unwrap().remaining, 1);
        assert_eq!(d.retry_after_ms(), None);
    }

    #[test]
    fn denied_check_reports_the_longest_wait_of_all_limits() {
        let limits = [applied("a", 10), applied("b", 5)];
        let d = Decision::from_outcome(&limits, &outcome(false, &[10, 5]), 1, 1.0);
        assert_eq!(d.reason, Some(DenyReason::LimitExhausted));
        // In the next window `a` still weighs 10 × (1 − e/1000) and admits
        // one more at e = 100ms; `b` weighs 5 × (1 − e/1000) and needs e = 200ms.
        assert_eq!(d.limits[0].retry_after_ms, Some(600));
        assert_eq!(d.retry_after_ms(), Some(700));
        assert_eq!(d.deciding_limit().unwrap().name.as_ref(), "b");
        assert_eq!(d.limits[1].remaining, 0);
    }

    #[test]
    fn cost_above_a_limit_is_denied_with_its_own_reason_and_no_retry() {
        let limits = [applied("a", 10), applied("b", 5)];
        let d = Decision::from_outcome(&limits, &outcome(false, &[0, 0]), 6, 1.0);
        assert_eq!(d.reason, Some(DenyReason::CostExceedsLimit));
        assert_eq!(d.deciding_limit().unwrap().name.as_ref(), "b");
        assert_eq!(d.retry_after_ms(), None);
    }
}
