//! The rules of leader election on a `coordination.k8s.io` Lease, with no
//! client and no clock of their own: the caller passes the lease it read
//! and the time, and performs the write this returns.
//!
//! A candidate takes a lease when it is free, or when nobody has renewed
//! it for a full lease duration *as measured by the candidate's own clock
//! since it last saw the lease change*. Clocks of different machines are
//! never compared. The holder counts itself leader only until its last
//! successful renewal plus the renew deadline, which is shorter than the
//! lease duration, so it stops before anyone else may start.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use tokio::time::Instant;

/// How long a lease lasts, and how often and how long it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long others wait, after the lease last changed, before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a candidate or a leader tries.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// The timings Kubernetes' own controllers use.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why a set of [`Timings`] cannot keep two leaders apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingsError {
    /// The leader could still believe it leads when others may take over.
    #[error(
        "renew deadline ({deadline:?}) must be shorter than the lease duration ({lease:?}), \
         so that a leader stops before others may take over"
    )]
    DeadlineNotBeforeExpiry {
        /// The renew deadline.
        deadline: Duration,
        /// The lease duration.
        lease: Duration,
    },
    /// The leader would not try to renew before its deadline passes.
    #[error("retry period ({retry:?}) must be shorter than the renew deadline ({deadline:?})")]
    RetryNotBeforeDeadline {
        /// The retry period.
        retry: Duration,
        /// The renew deadline.
        deadline: Duration,
    },
    /// The lease duration does not fit the Lease's whole seconds.
    #[error("lease duration ({0:?}) must be a whole number of seconds, at least 1")]
    LeaseNotWholeSeconds(Duration),
}

impl Timings {
    /// Checks that these timings keep two leaders apart.
    pub fn check(&self) -> Result<(), TimingsError> {
        if self.renew_deadline >= self.lease_duration {
            return Err(TimingsError::DeadlineNotBeforeExpiry {
                deadline: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(TimingsError::RetryNotBeforeDeadline {
                retry: self.retry_period,
                deadline: self.renew_deadline,
            });
        }
        let whole = self.lease_duration.subsec_nanos() == 0 && self.lease_duration.as_secs() >= 1;
        match whole {
            true => Ok(()),
            false => Err(TimingsError::LeaseNotWholeSeconds(self.lease_duration)),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The write a candidate should make after reading the lease.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// No lease exists: create it, held by this candidate.
    Create(LeaseSpec),
    /// Replace the lease read (same resourceVersion) with this spec: a
    /// renewal, or a take-over of a free or expired lease.
    Update(LeaseSpec),
    /// Someone else holds a live lease: write nothing.
    Wait,
}

/// One candidate's view of the election.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    timings: Timings,
    /// The lease's resourceVersion when this candidate last saw it change,
    /// and when that was on this candidate's clock.
    observed: Option<(Option<String>, Instant)>,
    /// When the last successful write of this candidate was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    /// A candidate called `identity`, which must differ from every other
    /// candidate's (the pod name is).
    pub fn new(identity: impl Into<String>, timings: Timings) -> Self {
        Self {
            identity: identity.into(),
            timings,
            observed: None,
            renewed_at: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings this candidate follows.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Decides the write to make, given the lease read at `now` (`None`
    /// when it does not exist) and the wall time `wall` to record in it.
    pub fn attempt(&mut self, lease: Option<&Lease>, now: Instant, wall: Timestamp) -> Attempt {
        let Some(lease) = lease else {
            return Attempt::Create(self.claim(None, wall));
        };
        let version = lease.metadata.resource_version.clone();
        if self.observed.as_ref().map(|(v, _)| v) != Some(&version) {
            self.observed = Some((version, now));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(self.identity.as_str());
        if !mine {
            self.renewed_at = None;
        }
        if mine || holder.is_none() || self.expired(&spec, now) {
            Attempt::Update(self.claim(Some(&spec), wall))
        } else {
            Attempt::Wait
        }
    }

    /// Records that the write decided at `sent` (the time [`attempt`] was
    /// given) was accepted: this candidate leads until the renew deadline.
    ///
    /// [`attempt`]: Self::attempt
    pub fn accepted(&mut self, sent: Instant) {
        self.renewed_at = Some(sent);
    }

    /// Records that a write was refused, such as for a conflict: another
    /// candidate wrote first.
    pub fn refused(&mut self) {
        self.renewed_at = None;
    }

    /// Whether this candidate may act as leader at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now < deadline)
    }

    /// When this candidate stops leading unless it renews first.
    pub fn deadline(&self) -> Option<Instant> {
        self.renewed_at.map(|at| at + self.timings.renew_deadline)
    }

    /// The spec that gives up `lease` at `wall`, if this candidate holds
    /// it: no holder, so that the next candidate takes it at once.
    pub fn release(&mut self, lease: &Lease, wall: Timestamp) -> Option<LeaseSpec> {
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        self.renewed_at = None;
        Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(wall)),
            ..spec
        })
    }

    /// Whether the holder has not renewed for a full lease duration, on
    /// this candidate's clock.
    fn expired(&self, spec: &LeaseSpec, now: Instant) -> bool {
        let seconds = spec
            .lease_duration_seconds
            .unwrap_or(self.timings.lease_seconds());
        let duration = Duration::from_secs(u64::try_from(seconds.max(1)).unwrap_or(1));
        self.observed
            .as_ref()
            .is_some_and(|(_, seen)| now >= *seen + duration)
    }

    /// The spec that makes this candidate the holder.
    fn claim(&self, current: Option<&LeaseSpec>, wall: Timestamp) -> LeaseSpec {
        let now = MicroTime(wall);
        let holder = current.and_then(|s| s.holder_identity.as_deref());
        let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
        let (acquired, transitions) = match (holder, current) {
            (Some(h), Some(spec)) if h == self.identity => (spec.acquire_time.clone(), transitions),
            (_, Some(_)) => (Some(now.clone()), transitions.saturating_add(1)),
            (_, None) => (Some(now.clone()), 0),
        };
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.lease_seconds()),
            acquire_time: acquired,
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..current.cloned().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests;
