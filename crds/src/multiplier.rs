//! How the operator hands a policy's multiplier to the limiters, in Redis.
//!
//! The key is `sluice:{<namespace>/<policy>}:multiplier`; its value is the
//! multiplier and the Redis time (ms since the epoch) it was published at,
//! separated by a space: `0.72 1733333333000`. Publishing stamps the value
//! with Redis time, and limiters read it together with Redis time, so the
//! age of a multiplier is measured on one clock.

use crate::{Duration, RateLimitPolicySpec};

/// The Redis key holding the multiplier of policy `<namespace>/<name>`.
pub fn multiplier_key(policy_key: &str) -> String {
    format!("sluice:{{{policy_key}}}:multiplier")
}

/// A multiplier as published.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PublishedMultiplier {
    /// The factor applied to every limit of the policy.
    pub value: f64,
    /// When it was published, in Redis time (ms since the epoch).
    pub published_ms: u64,
}

impl PublishedMultiplier {
    /// The value stored in Redis.
    pub fn encode(&self) -> String {
        format!("{} {}", self.value, self.published_ms)
    }

    /// Reads a stored value; `None` when it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let (value, published) = text.trim().split_once(' ')?;
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)?;
        Some(Self {
            value: value.min(1.0),
            published_ms: published.parse().ok()?,
        })
    }
}

impl RateLimitPolicySpec {
    /// How old a published multiplier may grow before limiters stop
    /// trusting it: four adaptation intervals, or one minute for a policy
    /// that does not adapt.
    pub fn multiplier_stale_after(&self) -> Duration {
        match &self.adaptive {
            Some(adaptive) => {
                Duration::from_millis(adaptive.interval.as_millis().saturating_mul(4))
            }
            None => Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_keeps_the_policy_in_one_hash_tag() {
        assert_eq!(
            multiplier_key("shop/checkout"),
            "sluice:{shop/checkout}:multiplier"
        );
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let m = PublishedMultiplier {
            value: 0.72,
            published_ms: 1_733_333_333_000,
        };
        assert_eq!(PublishedMultiplier::decode(&m.encode()), Some(m));
        for bad in ["", "0.5", "x 1", "0.5 x", "NaN 1", "-1 5", "0 5"] {
            assert_eq!(PublishedMultiplier::decode(bad), None, "{bad:?}");
        }
        assert_eq!(
            PublishedMultiplier::decode("7 1").map(|m| m.value),
            Some(1.0)
        );
    }
}
