//! The enforcement engine: a check in, a decision out.

use std::sync::Arc;

use arc_swap::ArcSwap;
use sluice_crds::RateLimitPolicy;

use crate::{
    decision::{Applied, Decision},
    policy::{Request, effective_limit},
    registry::{PolicySet, ResolveError, ServedPolicy},
    store::{CounterSpec, Store, StoreError},
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
}

/// Decides checks against the served policies, counting in store `S`.
pub struct Limiter<S> {
    policies: ArcSwap<PolicySet>,
    store: S,
}

impl<S: Store> Limiter<S> {
    /// A limiter serving `policies` (already validated) on `store`.
    pub fn new(policies: Vec<RateLimitPolicy>, store: S) -> Self {
        let set = PolicySet::build(policies, &PolicySet::default());
        Self {
            policies: ArcSwap::from_pointee(set),
            store,
        }
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
        let mut applied = Vec::with_capacity(served.policy.limits.len());
        let mut counters = Vec::with_capacity(served.policy.limits.len());
        for (limit, key) in served.policy.applicable(request) {
            let effective = effective_limit(limit.requests, multiplier);
            let window_ms = limit.window_ms;
            counters.push(CounterSpec {
                key,
                prefix: limit.counter_prefix.clone(),
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
        if counters.is_empty() {
            return Ok(Decision::unlimited(multiplier));
        }
        let outcome = self.store.check(&counters, request.cost).await?;
        Ok(Decision::from_outcome(
            &applied,
            &outcome,
            request.cost,
            multiplier,
        ))
    }
}
