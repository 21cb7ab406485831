//! The enforcement engine: a check in, a decision out.

use std::sync::Arc;

use arc_swap::ArcSwap;
use sluice_crds::RateLimitPolicy;

use sluice_crds::OnStoreFailure;

use crate::{
    breaker::{Breaker, Transition},
    decision::{Applied, Decision},
    metrics::{DegradedLabels, Metrics, StoreErrorLabels},
    policy::{Request, effective_limit},
    registry::{PolicySet, ResolveError, ServedPolicy},
    store::{CounterSpec, MemoryStore, Store, StoreError},
};

/// Why a check could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The check named no loaded policy.
    #[error(transparent)]
    Policy(#[from] ResolveError),
    /// The store failed and no fallback answered.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared store is unreachable and the policy says to refuse
    /// checks meanwhile (`onStoreFailure: deny`).
    #[error("the shared store is unreachable and the policy refuses checks meanwhile")]
    Unavailable,
}

/// What a limiter on a shared store does when the store fails: a breaker
/// that stops calling it after repeated failures, and local counters for
/// policies that enforce in memory meanwhile.
pub struct Fallback {
    /// Counters for `onStoreFailure: local`.
    pub local: MemoryStore,
    /// Whether the store is being called.
    pub breaker: Breaker,
    /// Where store errors and degraded decisions are counted.
    pub metrics: Arc<Metrics>,
}

impl Fallback {
    fn succeeded(&self) {
        if self.breaker.record_success() == Transition::Closed {
            self.metrics.breaker_open.set(0);
            tracing::info!("Store reachable again: breaker closed, counting in the shared store");
        }
    }

    fn failed(&self, error: &StoreError) {
        self.count_error(error);
        tracing::debug!(%error, "Store call failed");
        if self.breaker.record_failure() == Transition::Opened {
            self.opened(error);
        }
    }

    /// The store could not be reached at start: decide by the fallback from
    /// the first check, and let the probe find the store when it comes up.
    pub fn open_now(&self, error: &StoreError) {
        self.count_error(error);
        if self.breaker.open_now() == Transition::Opened {
            self.opened(error);
        }
    }

    fn opened(&self, error: &StoreError) {
        self.metrics.breaker_open.set(1);
        tracing::info!(%error, "Store failing: breaker opened, deciding by each policy's onStoreFailure");
    }

    fn count_error(&self, error: &StoreError) {
        let kind = match error {
            StoreError::Timeout => "timeout",
            StoreError::Backend(_) | StoreError::Refused(_) => "backend",
        };
        self.metrics
            .store_errors
            .get_or_create(&StoreErrorLabels { kind })
            .inc();
    }
}

/// Decides checks against the served policies, counting in store `S`.
pub struct Limiter<S> {
    policies: ArcSwap<PolicySet>,
    store: S,
    fallback: Option<Fallback>,
}

impl<S: Store> Limiter<S> {
    /// A limiter serving `policies` (already validated) on `store`. A store
    /// error fails the check; see [`with_fallback`](Self::with_fallback).
    pub fn new(policies: Vec<RateLimitPolicy>, store: S) -> Self {
        let set = PolicySet::build(policies, &PolicySet::default());
        Self {
            policies: ArcSwap::from_pointee(set),
            store,
            fallback: None,
        }
    }

    /// Decides by each policy's `onStoreFailure` while the store fails.
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Replaces the served policies at once; checks already running finish
    /// on the old set. Multipliers of policies kept are kept.
    pub fn replace_policies(&self, policies: Vec<RateLimitPolicy>) {
        let next = PolicySet::build(policies, &self.policies.load());
        self.policies.store(Arc::new(next));
    }

    /// The served policies now.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// How many counters this process holds in its own memory: the store's,
    /// or the fallback's when the store is shared.
    pub fn local_counters(&self) -> Option<usize> {
        let fallback = || self.fallback.as_ref().map(|f| f.local.len());
        self.store.local_counters().or_else(fallback)
    }

    /// Whether checks are being decided without the shared store now.
    pub fn is_degraded(&self) -> bool {
        self.fallback
            .as_ref()
            .is_some_and(|f| !f.breaker.is_closed())
    }

    /// While the breaker is open, pings the store every `interval` and
    /// closes the breaker on the first answer. Runs until dropped.
    pub async fn probe_store(&self, interval: std::time::Duration) {
        let Some(fallback) = &self.fallback else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if !fallback.breaker.is_closed() && self.store.ping().await.is_ok() {
                fallback.succeeded();
            }
        }
    }

    /// Decides whether `request` may pass under the policy named `policy`.
    pub async fn check(
        &self,
        policy: Option<&str>,
        request: &Request<'_>,
    ) -> Result<(Arc<ServedPolicy>, Decision), CheckError> {
        let set = self.policies.load();
        let served = set.resolve(policy)?.clone();
        let decision = self.decide(&served, request).await?;
        Ok((served, decision))
    }

    async fn decide(
        &self,
        served: &ServedPolicy,
        request: &Request<'_>,
    ) -> Result<Decision, CheckError> {
        let multiplier = served.multiplier.get();
        let (mut applied, mut counters) = applicable(served, request, multiplier);
        if counters.is_empty() {
            return Ok(Decision::unlimited(multiplier));
        }
        let Some(fallback) = &self.fallback else {
            let outcome = self.store.check(&counters, request.cost).await?;
            return Ok(Decision::from_outcome(
                &applied,
                &outcome,
                request.cost,
                multiplier,
            ));
        };
        if fallback.breaker.is_closed() {
            match self.store.check(&counters, request.cost).await {
                Ok(outcome) => {
                    fallback.succeeded();
                    return Ok(Decision::from_outcome(
                        &applied,
                        &outcome,
                        request.cost,
                        multiplier,
                    ));
                }
                Err(error) => fallback.failed(&error),
            }
        }
        let mode = served.policy.on_store_failure;
        fallback
            .metrics
            .degraded_checks
            .get_or_create(&DegradedLabels {
                mode: mode_name(mode),
            })
            .inc();
        match mode {
            OnStoreFailure::Allow => Ok(Decision {
                degraded: true,
                ..Decision::unlimited(multiplier)
            }),
            OnStoreFailure::Deny => Err(CheckError::Unavailable),
            OnStoreFailure::Local => {
                // Each replica enforces its share, so that together they stay
                // within the limit without talking to each other.
                let replicas = u64::from(served.replicas.get_or(served.policy.replicas));
                for (counter, applied) in counters.iter_mut().zip(&mut applied) {
                    counter.limit = (counter.limit / replicas).max(1);
                    applied.effective = counter.limit;
                }
                let mut outcome = fallback.local.check_now(&counters, request.cost);
                outcome.degraded = true;
                Ok(Decision::from_outcome(
                    &applied,
                    &outcome,
                    request.cost,
                    multiplier,
                ))
            }
        }
    }
}

/// The limits of `served` that apply to `request`, as reported and as
/// counted.
fn applicable(
    served: &ServedPolicy,
    request: &Request<'_>,
    multiplier: f64,
) -> (Vec<Applied>, Vec<CounterSpec>) {
    let limits = served.policy.limits.len();
    let (mut applied, mut counters) = (Vec::with_capacity(limits), Vec::with_capacity(limits));
    for (limit, key) in served.policy.applicable(request) {
        let effective = effective_limit(limit.requests, multiplier);
        let window_ms = limit.window_ms;
        let prefix = limit.counter_prefix.clone();
        counters.push(CounterSpec {
            key,
            prefix,
            window_ms,
            limit: effective,
        });
        applied.push(Applied {
            name: limit.name.clone(),
            requests: limit.requests,
            effective,
            window_ms,
        });
    }
    (applied, counters)
}

fn mode_name(mode: OnStoreFailure) -> &'static str {
    match mode {
        OnStoreFailure::Local => "local",
        OnStoreFailure::Allow => "allow",
        OnStoreFailure::Deny => "deny",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStoreConfig, Outcome};

    /// A shared store that never answers in time.
    struct Unreachable;

    impl Store for Unreachable {
        async fn check(&self, _: &[CounterSpec], _: u64) -> Result<Outcome, StoreError> {
            Err(StoreError::Timeout)
        }
    }

    const PER_USER: &str = "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: p}\nspec:\n  limits:\n    - {name: per-user, requests: 10, window: 1m, by: [user]}\n";

    #[tokio::test]
    async fn counters_of_the_local_fallback_count_as_held_in_memory() {
        let policies = sluice_crds::parse_policies(PER_USER, "test").unwrap();
        let fallback = Fallback {
            local: MemoryStore::new(MemoryStoreConfig::default()),
            breaker: Breaker::new(1),
            metrics: Arc::new(Metrics::new()),
        };
        let limiter = Limiter::new(policies, Unreachable).with_fallback(fallback);
        assert_eq!(limiter.local_counters(), Some(0));

        let request = Request {
            user: Some("ann"),
            endpoint: None,
            cost: 1,
        };
        let (_, decision) = limiter.check(None, &request).await.unwrap();
        assert!(decision.degraded);
        assert_eq!(limiter.local_counters(), Some(1));
    }
}
