//! The set of policies a limiter serves, and how a check names one.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use sluice_crds::{DEFAULT_NAMESPACE, RateLimitPolicy};

use crate::policy::CompiledPolicy;

/// The multiplier currently applied to one policy's limits, shared by every
/// compiled version of the policy so that a reload keeps it.
#[derive(Debug)]
pub struct MultiplierCell(AtomicU64);

impl MultiplierCell {
    fn new() -> Self {
        Self(AtomicU64::new(1.0f64.to_bits()))
    }

    /// The multiplier, 1.0 until someone sets another.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Sets the multiplier.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// How many limiter replicas share a policy's limits, as last counted from
/// their heartbeats in Redis; zero until counted.
#[derive(Debug, Default)]
pub struct ReplicaCount(AtomicU32);

impl ReplicaCount {
    /// The last count, or `configured` if none was made yet.
    pub fn get_or(&self, configured: u32) -> u32 {
        match self.0.load(Ordering::Relaxed) {
            0 => configured.max(1),
            counted => counted,
        }
    }

    /// Records a count.
    pub fn set(&self, count: u32) {
        self.0.store(count, Ordering::Relaxed);
    }
}

/// A policy with the state that outlives its reloads.
#[derive(Debug)]
pub struct ServedPolicy {
    /// The compiled policy.
    pub policy: CompiledPolicy,
    /// Its multiplier.
    pub multiplier: Arc<MultiplierCell>,
    /// How many replicas share it.
    pub replicas: Arc<ReplicaCount>,
}

/// Why a check's policy name found no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No loaded policy has that key.
    #[error("no policy {0:?} is loaded")]
    Unknown(String),
    /// The check named no policy and the limiter serves several (or none).
    #[error(
        "policy: is required because this limiter serves {0} policies; name one as <namespace>/<name>"
    )]
    Ambiguous(usize),
}

/// An immutable set of policies; a reload builds a new one and swaps it in.
#[derive(Debug, Default)]
pub struct PolicySet {
    by_key: HashMap<Arc<str>, Arc<ServedPolicy>>,
}

impl PolicySet {
    /// Compiles `policies`, keeping the multipliers of those already in
    /// `previous`.
    pub fn build(policies: Vec<RateLimitPolicy>, previous: &PolicySet) -> Self {
        let by_key = policies
            .into_iter()
            .map(|source| {
                let policy = CompiledPolicy::compile(source);
                let kept = previous.by_key.get(&policy.key);
                let multiplier = kept
                    .map(|p| p.multiplier.clone())
                    .unwrap_or_else(|| Arc::new(MultiplierCell::new()));
                let replicas = kept.map(|p| p.replicas.clone()).unwrap_or_default();
                let served = ServedPolicy {
                    policy,
                    multiplier,
                    replicas,
                };
                (served.policy.key.clone(), Arc::new(served))
            })
            .collect();
        Self { by_key }
    }

    /// The policy a check names: `<namespace>/<name>`, or a bare name in the
    /// `default` namespace, or nothing when exactly one policy is served.
    pub fn resolve(&self, name: Option<&str>) -> Result<&Arc<ServedPolicy>, ResolveError> {
        let Some(name) = name else {
            let mut all = self.by_key.values();
            return match (all.next(), all.next()) {
                (Some(only), None) => Ok(only),
                _ => Err(ResolveError::Ambiguous(self.by_key.len())),
            };
        };
        let found = match name.contains('/') {
            true => self.by_key.get(name),
            false => self
                .by_key
                .get(format!("{DEFAULT_NAMESPACE}/{name}").as_str()),
        };
        found.ok_or_else(|| ResolveError::Unknown(name.to_owned()))
    }

    /// Every served policy, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServedPolicy>> {
        let mut all: Vec<_> = self.by_key.values().collect();
        all.sort_by(|a, b| a.policy.key.cmp(&b.policy.key));
        all.into_iter()
    }

    /// How many policies are served.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no policy is served.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
