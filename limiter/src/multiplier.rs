//! Following what the operator and the other replicas publish in Redis:
//! each policy's multiplier, and how many replicas share its limits.
//!
//! Every second, for each served policy, a limiter records its heartbeat
//! and reads the multiplier, the count of live replicas and Redis time, in
//! one call. A missing multiplier means 1.0. A multiplier older than the
//! policy's stale limit (its publisher has stopped) is eased back toward
//! 1.0 over one more stale period, so that a dead operator neither pins
//! limits low forever nor releases them all at once. The replica count is
//! what `onStoreFailure: local` divides limits by while Redis is down; the
//! last count is kept meanwhile.

use std::{sync::Arc, time::Duration};

use sluice_crds::PublishedMultiplier;

use crate::{
    Limiter,
    metrics::{Metrics, PolicyLabels},
    store::{RedisStore, Store},
};

/// How long a heartbeat counts a replica as live.
const HEARTBEAT_FRESH: Duration = Duration::from_secs(5);

/// The multiplier to apply, from what was published (if anything), its age,
/// and the stale limit; and whether it is stale.
pub fn effective_multiplier(
    published: Option<PublishedMultiplier>,
    now_ms: u64,
    stale_after_ms: u64,
) -> (f64, bool) {
    let Some(published) = published else {
        return (1.0, false);
    };
    // A stamp further ahead of Redis time than a stale period was not made
    // by a publisher on this Redis's clock: it cannot be trusted to ever
    // go stale, so it counts as stale already.
    if published.published_ms > now_ms.saturating_add(stale_after_ms) {
        return (1.0, true);
    }
    let age = now_ms.saturating_sub(published.published_ms);
    if age <= stale_after_ms {
        return (published.value, false);
    }
    let eased = (age - stale_after_ms) as f64 / stale_after_ms.max(1) as f64;
    let value = published.value + (1.0 - published.value) * eased.min(1.0);
    (value, true)
}

/// This process's name among a policy's replicas: the pod's host name
/// (or `limiter`) and the process id.
pub fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "limiter".into());
    format!("{host}-{}", std::process::id())
}

/// Syncs every served policy with Redis every `interval`, until dropped.
/// A failed sync keeps the last multiplier and replica count.
pub async fn follow<S: Store>(
    limiter: Arc<Limiter<S>>,
    redis: RedisStore,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let instance = instance_id();
    // The last unreadable value warned about, per policy: warned once, not
    // at every sync.
    let mut unreadable: std::collections::HashMap<String, String> = Default::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for served in limiter.policies().iter() {
            let key = &served.policy.key;
            let sync = match redis.sync_policy(key, &instance, HEARTBEAT_FRESH).await {
                Ok(sync) => sync,
                Err(error) => {
                    tracing::debug!(policy = %key, %error, "Cannot sync with Redis; keeping the last multiplier");
                    continue;
                }
            };
            served.replicas.set(sync.replicas);
            let published = sync
                .multiplier
                .as_deref()
                .and_then(PublishedMultiplier::decode);
            match (&sync.multiplier, &published) {
                (Some(raw), None) if unreadable.get(&**key) != Some(raw) => {
                    tracing::warn!(policy = %key, value = %raw, "Published multiplier is not `<positive value> <ms>`; using 1.0");
                    unreadable.insert(key.to_string(), raw.clone());
                }
                (_, Some(_)) => {
                    unreadable.remove(&**key);
                }
                _ => {}
            }
            let stale_after = served
                .policy
                .source
                .spec
                .multiplier_stale_after()
                .as_millis();
            let (value, stale) = effective_multiplier(published, sync.now_ms, stale_after);
            let previous = served.multiplier.get();
            served.multiplier.set(value);
            let labels = PolicyLabels {
                policy: key.to_string(),
            };
            metrics
                .multiplier_stale
                .get_or_create(&labels)
                .set(i64::from(stale));
            if (previous - value).abs() > 1e-9 {
                tracing::info!(policy = %key, multiplier = value, stale, "Multiplier changed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(value: f64) -> Option<PublishedMultiplier> {
        Some(PublishedMultiplier {
            value,
            published_ms: 1_000,
        })
    }

    #[test]
    fn missing_multiplier_means_one() {
        assert_eq!(effective_multiplier(None, 5_000, 60_000), (1.0, false));
    }

    #[test]
    fn fresh_multiplier_applies_as_published() {
        assert_eq!(
            effective_multiplier(published(0.5), 61_000, 60_000),
            (0.5, false)
        );
    }

    #[test]
    fn a_stamp_from_beyond_a_stale_period_ahead_counts_as_stale() {
        let ahead = Some(PublishedMultiplier {
            value: 0.5,
            published_ms: 200_000,
        });
        assert_eq!(effective_multiplier(ahead, 100_000, 60_000), (1.0, true));
        let slightly_ahead = Some(PublishedMultiplier {
            value: 0.5,
            published_ms: 101_000,
        });
        assert_eq!(
            effective_multiplier(slightly_ahead, 100_000, 60_000),
            (0.5, false)
        );
    }

    #[test]
    fn stale_multiplier_eases_back_to_one_over_one_more_stale_period() {
        let (halfway, stale) = effective_multiplier(published(0.5), 91_000, 60_000);
        assert!(stale);
        assert!((halfway - 0.75).abs() < 1e-9, "{halfway}");
        assert_eq!(
            effective_multiplier(published(0.5), 121_000, 60_000),
            (1.0, true)
        );
        assert_eq!(
            effective_multiplier(published(0.5), 999_000, 60_000),
            (1.0, true)
        );
    }
}
