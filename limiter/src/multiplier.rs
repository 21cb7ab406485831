//! Following the multiplier the operator publishes in Redis.
//!
//! Every second, each served policy's multiplier is read together with
//! Redis time. A missing key means 1.0. A multiplier older than the
//! policy's stale limit (its publisher has stopped) is eased back toward
//! 1.0 over one more stale period, so that a dead operator neither pins
//! limits low forever nor releases them all at once.

use std::{sync::Arc, time::Duration};

use sluice_crds::{PublishedMultiplier, multiplier_key};

use crate::{
    Limiter,
    metrics::{Metrics, PolicyLabels},
    store::{RedisStore, Store, StoreError},
};

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
    let age = now_ms.saturating_sub(published.published_ms);
    if age <= stale_after_ms {
        return (published.value, false);
    }
    let eased = (age - stale_after_ms) as f64 / stale_after_ms.max(1) as f64;
    let value = published.value + (1.0 - published.value) * eased.min(1.0);
    (value, true)
}

/// Reads a policy's published multiplier and the Redis time now.
async fn read(
    redis: &RedisStore,
    policy_key: &str,
) -> Result<(Option<PublishedMultiplier>, u64), StoreError> {
    let mut pipe = redis::pipe();
    pipe.get(multiplier_key(policy_key)).cmd("TIME");
    let (value, (secs, micros)): (Option<String>, (u64, u64)) = redis.pipeline(&pipe).await?;
    let published = value.as_deref().and_then(PublishedMultiplier::decode);
    Ok((published, secs * 1000 + micros / 1000))
}

/// Refreshes every served policy's multiplier from Redis, every `interval`,
/// until the task is dropped. A failed read keeps the last value.
pub async fn follow<S: Store>(
    limiter: Arc<Limiter<S>>,
    redis: RedisStore,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for served in limiter.policies().iter() {
            let key = &served.policy.key;
            let stale_after = served
                .policy
                .source
                .spec
                .multiplier_stale_after()
                .as_millis();
            match read(&redis, key).await {
                Ok((published, now_ms)) => {
                    let (value, stale) = effective_multiplier(published, now_ms, stale_after);
                    let previous = served.multiplier.get();
                    served.multiplier.set(value);
                    let labels = PolicyLabels {
                        policy: key.to_string(),
                    };
                    metrics
                        .multiplier_stale
                        .get_or_create(&labels)
                        .set(i64::from(stale));
                    if (previous - value).abs() > f64::EPSILON {
                        tracing::info!(policy = %key, multiplier = value, stale, "Multiplier changed");
                    }
                }
                Err(error) => {
                    tracing::debug!(policy = %key, %error, "Cannot read the multiplier; keeping the last one")
                }
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
