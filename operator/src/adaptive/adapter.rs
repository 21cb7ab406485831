//! One policy's adaptation: its controller settings, its queries, and the
//! controller's state between ticks.

use std::time::Duration;

use serde::Serialize;
use sluice_crds::{PartitionKey, RateLimitPolicy};

use super::{
    controller::{Reason, SIGNAL_NAMES, Settings, SignalSettings, State, signal_pressure, step},
    signals::{Reading, SignalQueries},
};

/// A policy's adaptive loop state.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// `<namespace>/<name>`.
    pub policy: String,
    /// How often it ticks.
    pub interval: Duration,
    /// Where its signals are read.
    pub prometheus_url: String,
    /// What is asked.
    pub queries: SignalQueries,
    settings: Settings,
    state: State,
}

/// What one tick decided, as printed and reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tick {
    /// `<namespace>/<name>`.
    pub policy: String,
    /// The multiplier now.
    pub multiplier: f64,
    /// Why.
    pub reason: &'static str,
    /// Each signal's value, or why it is unknown.
    pub signals: Signals,
}

/// The signal that weighs most at one reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Strongest {
    /// `cpu`, `latency` or `errors`.
    pub name: &'static str,
    /// Its value (seconds for latency, a fraction otherwise).
    pub value: f64,
    /// Its target.
    pub target: f64,
    /// Its pressure times its weight, in [0, 1].
    pub pressure: f64,
}

/// Signal values as read (`None` when unknown) and the reasons of the
/// unknown ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    /// CPU used over requested.
    pub cpu: Option<f64>,
    /// p99 latency, seconds.
    pub latency_seconds: Option<f64>,
    /// 5xx ratio.
    pub error_ratio: Option<f64>,
    /// Served requests per second.
    pub request_rate: Option<f64>,
    /// Why signals are unknown, by signal name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<(String, String)>,
}

impl Adapter {
    /// The loop of `policy`, starting from `multiplier` (its last published
    /// value, or 1.0). `None` when the policy does not adapt.
    pub fn for_policy(policy: &RateLimitPolicy, multiplier: Option<f64>) -> Option<Self> {
        let adaptive = policy.spec.adaptive.as_ref()?;
        let settings = Settings::from_spec(adaptive, base_rate(policy));
        let mut state = State::new(&settings);
        if let Some(m) = multiplier.filter(|m| m.is_finite()) {
            state.multiplier = m.clamp(settings.min, settings.max);
        }
        Some(Self {
            policy: policy.key(),
            interval: adaptive.interval.as_std(),
            prometheus_url: adaptive.prometheus.url.clone(),
            queries: SignalQueries::for_policy(policy),
            settings,
            state,
        })
    }

    /// The multiplier now.
    pub fn multiplier(&self) -> f64 {
        self.state.multiplier
    }

    /// Takes one reading at `now` (time since any fixed origin).
    pub fn tick(&mut self, reading: &Reading, now: Duration) -> Tick {
        let (state, reason) = step(&self.settings, &self.state, &reading.observation(), now);
        self.state = state;
        Tick {
            policy: self.policy.clone(),
            multiplier: self.state.multiplier,
            reason: reason.as_str(),
            signals: signals(reading),
        }
    }

    /// Whether `other` adapts the same way: same settings, queries,
    /// interval and Prometheus. A spec change that keeps these (a new
    /// replica count, say) need not restart the controller.
    pub fn same_settings(&self, other: &Adapter) -> bool {
        self.settings == other.settings
            && self.queries == other.queries
            && self.interval == other.interval
            && self.prometheus_url == other.prometheus_url
    }

    /// The signal that weighs most in `reading`, among those the controller
    /// uses: the highest weighted pressure, or, when none presses, the
    /// closest to its target. `None` when no configured signal is known.
    pub fn strongest(&self, reading: &Reading) -> Option<Strongest> {
        let o = reading.observation();
        let enough = o
            .request_rate
            .is_some_and(|r| r.is_finite() && r >= self.settings.min_request_rate);
        let values = [
            o.cpu,
            o.latency.filter(|_| enough),
            o.errors.filter(|_| enough),
        ];
        let candidates = self.settings.signals.iter().zip(values).zip(SIGNAL_NAMES);
        let weigh = |((s, v), name): ((&Option<SignalSettings>, Option<f64>), &'static str)| {
            let s = (*s)?;
            let value = v.filter(|v| v.is_finite() && *v >= 0.0)?;
            Some(Strongest {
                name,
                value,
                target: s.target,
                pressure: s.weight * signal_pressure(&s, value),
            })
        };
        let rank = |s: &Strongest| (s.pressure, s.value / s.target);
        candidates.filter_map(weigh).max_by(|a, b| {
            rank(a)
                .partial_cmp(&rank(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    }

    /// Whether the last tick saw no signal at all.
    pub fn is_blind(reason: &str) -> bool {
        reason == Reason::BlindHolding.as_str() || reason == Reason::BlindEasing.as_str()
    }
}

fn signals(reading: &Reading) -> Signals {
    let names = ["cpu", "latency", "errors", "requests"];
    let unknown = names
        .iter()
        .zip(&reading.values)
        .filter_map(|(name, v)| v.as_ref().err().map(|e| (name.to_string(), e.to_string())))
        .collect();
    let o = reading.observation();
    Signals {
        cpu: o.cpu,
        latency_seconds: o.latency,
        error_ratio: o.errors,
        request_rate: o.request_rate,
        unknown,
    }
}

/// The request rate the policy's unscaled global limits admit: the
/// tightest limit that counts every request in one counter.
pub fn base_rate(policy: &RateLimitPolicy) -> Option<f64> {
    policy
        .spec
        .limits
        .iter()
        .filter(|l| {
            l.matches.is_none()
                && !l.by.contains(&PartitionKey::User)
                && !l.by.contains(&PartitionKey::Endpoint)
        })
        .map(|l| l.requests as f64 / l.window.as_secs_f64())
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::signals::SignalError;

    fn policy(spec: &str) -> RateLimitPolicy {
        let spec = serde_yaml::from_str(spec).unwrap();
        let mut policy = RateLimitPolicy::new("checkout", spec);
        policy.metadata.namespace = Some("shop".into());
        policy
    }

    fn adapter() -> Adapter {
        let spec = "
limits: [{name: global, requests: 100, window: 1s}]
adaptive:
  signals:
    cpu: {weight: 0.5, target: 0.7, max: 0.9}
    latency: {weight: 1.0, target: 300ms, max: 600ms}
  prometheus: {url: http://127.0.0.1:9090}
";
        Adapter::for_policy(&policy(spec), None).unwrap()
    }

    fn reading(cpu: f64, latency: f64, requests: f64) -> Reading {
        Reading {
            values: [Ok(cpu), Ok(latency), Err(SignalError::Empty), Ok(requests)],
        }
    }

    #[test]
    fn strongest_is_the_signal_with_the_highest_weighted_pressure() {
        // cpu at full pressure weighs 0.5; latency at half pressure, 0.5
        // too, but a little over: 0.46s is 0.53 of the way.
        let strongest = adapter().strongest(&reading(0.95, 0.46, 50.0)).unwrap();
        assert_eq!(strongest.name, "latency");
        assert_eq!((strongest.value, strongest.target), (0.46, 0.3));
        let strongest = adapter().strongest(&reading(0.95, 0.4, 50.0)).unwrap();
        assert_eq!(strongest.name, "cpu");
        assert_eq!(strongest.pressure, 0.5);
    }

    #[test]
    fn without_pressure_the_strongest_is_the_closest_to_its_target() {
        let strongest = adapter().strongest(&reading(0.35, 0.27, 50.0)).unwrap();
        assert_eq!((strongest.name, strongest.pressure), ("latency", 0.0));
    }

    #[test]
    fn latency_below_the_minimum_request_rate_is_never_the_strongest() {
        let strongest = adapter().strongest(&reading(0.1, 5.0, 0.5)).unwrap();
        assert_eq!(strongest.name, "cpu");
    }

    #[test]
    fn no_known_signal_has_no_strongest() {
        let empty = Reading {
            values: std::array::from_fn(|_| Err(SignalError::Empty)),
        };
        assert_eq!(adapter().strongest(&empty), None);
    }

    #[test]
    fn same_settings_ignore_the_controllers_state() {
        let (mut ticked, fresh) = (adapter(), adapter());
        ticked.tick(&reading(0.95, 0.9, 50.0), Duration::from_secs(1));
        assert!(ticked.multiplier() < fresh.multiplier());
        assert!(ticked.same_settings(&fresh));
        let mut other = adapter();
        other.interval = Duration::from_secs(30);
        assert!(!other.same_settings(&fresh));
    }
}
