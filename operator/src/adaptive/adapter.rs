//! One policy's adaptation: its controller settings, its queries, and the
//! controller's state between ticks.

use std::time::Duration;

use serde::Serialize;
use sluice_crds::{PartitionKey, RateLimitPolicy};

use super::{
    controller::{Reason, Settings, State, step},
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
