//! The adaptive controller: how the multiplier follows the target's health.
//! Pure: `(configuration, previous state, observations at t) → (multiplier,
//! state, reason)`; no Prometheus, no Redis, no clock.
//!
//! Each signal's pressure is how far it is past its target, relative to its
//! max: `p = clamp((x − target) / (max − target), 0, 1)`. The signals
//! combine as `P = 1 − Π(1 − weight × p)`, which behaves like a maximum: one
//! bad signal is never averaged away by good ones.
//!
//! - **Cut** when `P` is material and the previous cut has had time to show
//!   in the metrics (`settle`), or sooner when `P` jumped since that cut:
//!   `m ← max(min, min(m, observed / base) × (1 − sensitivity × P))`.
//!   Pressure may rise by at most [`MAX_RISE`] per tick before it counts, so
//!   a single outlying sample cuts little, while a real rise (which lasts)
//!   is followed within a few ticks.
//! - **Recover** by `recoveryStep` once every known signal has been under
//!   90 % of its target for [`HEALTHY_TICKS`] intervals; by a quarter step
//!   near the multiplier at which the last overload began.
//! - **Hold** in between: the band between 90 % of a target and the target
//!   is where the controller rests, which is what keeps it from oscillating.
//! - A signal that is missing, NaN, stale or based on too few requests is
//!   **unknown**: it neither cuts nor recovers. When every signal is
//!   unknown the controller is **blind**: it holds for [`BLIND_TICKS`]
//!   intervals, then eases toward the upper bound by at most one recovery
//!   step per tick.

use std::time::Duration;

use sluice_crds::Adaptive;

/// Below this combined pressure nothing is cut.
pub const MATERIAL: f64 = 0.05;
/// How much the counted pressure may rise in one tick.
pub const MAX_RISE: f64 = 0.3;
/// A rise of the pressure since the last cut this large cuts again without
/// waiting for that cut to settle.
pub const JUMP: f64 = 0.2;
/// How many intervals every known signal must have been healthy before
/// recovering (a minute at the default 15 s interval).
pub const HEALTHY_TICKS: u32 = 4;
/// How many intervals a blind controller holds before easing toward the
/// upper bound (five minutes at the default 15 s interval).
pub const BLIND_TICKS: u32 = 20;
/// Recovery slows to a quarter step within this many steps below the level
/// where the last overload began.
pub const NEAR_OVERLOAD: f64 = 4.0;
/// Healthy means under this fraction of the target.
pub const HEALTHY_FRACTION: f64 = 0.9;
/// A later cut of an episode starts from the traffic actually served, but
/// never from below this fraction of the multiplier: an API that serves far
/// under its global limit (100 requests/s against 5,000) would otherwise
/// fall to the floor in one tick, and every per-user limit with it.
pub const MIN_FROM_FRACTION: f64 = 0.5;

/// The settings of one policy's controller, from `spec.adaptive`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Per-signal settings: cpu, latency (seconds), errors.
    pub signals: [Option<SignalSettings>; 3],
    /// Fraction of full pressure cut per step.
    pub sensitivity: f64,
    /// Multiplier gained per recovery step.
    pub recovery_step: f64,
    /// Lowest multiplier.
    pub min: f64,
    /// Highest multiplier.
    pub max: f64,
    /// How long a cut takes to show in the metrics: the rate window, the
    /// scrape and one interval.
    pub settle: Duration,
    /// How long every known signal must be healthy before recovering.
    pub healthy_for: Duration,
    /// How long a blind controller holds.
    pub blind_hold: Duration,
    /// Below this many served requests per second, latency and errors are
    /// unknown.
    pub min_request_rate: f64,
    /// The request rate the policy's unscaled global limit admits, if it
    /// has one: what `observed / base` compares served traffic to.
    pub base_rate: Option<f64>,
}

/// How one signal is weighed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalSettings {
    /// How much it counts, in [0, 1].
    pub weight: f64,
    /// Where cutting starts.
    pub target: f64,
    /// Where its pressure is full.
    pub max: f64,
}

/// The signals, in the order of [`Settings::signals`].
pub const SIGNAL_NAMES: [&str; 3] = ["cpu", "latency", "errors"];

/// What was read from Prometheus at one tick; `None` is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// CPU used over CPU requested.
    pub cpu: Option<f64>,
    /// p99 latency of served requests, seconds.
    pub latency: Option<f64>,
    /// 5xx ratio of served requests.
    pub errors: Option<f64>,
    /// Served requests per second.
    pub request_rate: Option<f64>,
}

/// What the controller remembers between ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The multiplier.
    pub multiplier: f64,
    /// The combined pressure counted at the last tick.
    pub pressure: f64,
    /// When the last cut happened, and the pressure it was made at.
    pub last_cut: Option<(Duration, f64)>,
    /// When the multiplier was last raised.
    pub last_raise: Option<Duration>,
    /// Since when every known signal has been healthy.
    pub healthy_since: Option<Duration>,
    /// Since when every signal has been unknown.
    pub blind_since: Option<Duration>,
    /// The multiplier at which the last overload began.
    pub overload_level: Option<f64>,
}

impl State {
    /// The state of a controller that has seen nothing yet.
    pub fn new(settings: &Settings) -> Self {
        Self {
            multiplier: settings.max,
            pressure: 0.0,
            last_cut: None,
            last_raise: None,
            healthy_since: None,
            blind_since: None,
            overload_level: None,
        }
    }
}

/// Why the multiplier moved, or did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Cut under pressure.
    Cutting,
    /// Raised after a healthy period.
    Recovering,
    /// Under pressure, waiting for the last cut to show.
    Settling,
    /// Neither healthy long enough nor under material pressure.
    Holding,
    /// Every signal unknown: holding.
    BlindHolding,
    /// Every signal unknown for long: easing toward the upper bound.
    BlindEasing,
}

impl Reason {
    /// The reason as a condition reason (`CamelCase`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Cutting => "Cutting",
            Self::Recovering => "Recovering",
            Self::Settling => "Settling",
            Self::Holding => "Holding",
            Self::BlindHolding => "BlindHolding",
            Self::BlindEasing => "BlindEasing",
        }
    }
}

impl Settings {
    /// `multiplier` within the bounds, to four decimal places: steps of a
    /// tenth or a twentieth added up in binary floating point would
    /// otherwise publish values such as 0.6500000000000001.
    fn level(&self, multiplier: f64) -> f64 {
        ((multiplier * 1e4).round() / 1e4).clamp(self.min, self.max)
    }

    /// Reads `spec.adaptive`; `base_rate` is the rate the policy's global
    /// limit admits at multiplier 1.0, if it has one.
    pub fn from_spec(adaptive: &Adaptive, base_rate: Option<f64>) -> Self {
        let ratio = |s: &sluice_crds::RatioSignal| SignalSettings {
            weight: s.weight,
            target: s.target,
            max: s.max,
        };
        let latency = |s: &sluice_crds::LatencySignal| SignalSettings {
            weight: s.weight,
            target: s.target.as_secs_f64(),
            max: s.max.as_secs_f64(),
        };
        let s = &adaptive.signals;
        Self {
            signals: [
                s.cpu.as_ref().map(ratio),
                s.latency.as_ref().map(latency),
                s.errors.as_ref().map(ratio),
            ],
            sensitivity: adaptive.sensitivity,
            recovery_step: adaptive.recovery_step,
            min: adaptive.bounds.min,
            max: adaptive.bounds.max,
            settle: Duration::from_secs(60) + adaptive.interval.as_std() * 2,
            healthy_for: adaptive.interval.as_std() * HEALTHY_TICKS,
            blind_hold: adaptive.interval.as_std() * BLIND_TICKS,
            min_request_rate: adaptive.min_request_rate,
            base_rate,
        }
    }

    /// The signals that count at this tick, with their settings: known,
    /// finite, and (for latency and errors) based on enough requests.
    fn known(&self, o: &Observation) -> Vec<(SignalSettings, f64)> {
        let enough = o
            .request_rate
            .is_some_and(|r| r.is_finite() && r >= self.min_request_rate);
        let values = [
            o.cpu,
            o.latency.filter(|_| enough),
            o.errors.filter(|_| enough),
        ];
        self.signals
            .iter()
            .zip(values)
            .filter_map(|(s, v)| {
                Some((
                    s.as_ref().copied()?,
                    v.filter(|v| v.is_finite() && *v >= 0.0)?,
                ))
            })
            .collect()
    }
}

/// One signal's pressure, in [0, 1].
pub fn signal_pressure(s: &SignalSettings, value: f64) -> f64 {
    ((value - s.target) / (s.max - s.target)).clamp(0.0, 1.0)
}

/// The combined pressure of signals `(settings, value)`: `1 − Π(1 − w·p)`.
pub fn combined_pressure(signals: &[(SignalSettings, f64)]) -> f64 {
    1.0 - signals
        .iter()
        .map(|(s, v)| 1.0 - s.weight * signal_pressure(s, *v))
        .product::<f64>()
}

/// One tick of the controller at time `now` (time since any fixed origin).
pub fn step(
    settings: &Settings,
    state: &State,
    observation: &Observation,
    now: Duration,
) -> (State, Reason) {
    let known = settings.known(observation);
    if known.is_empty() {
        return blind(settings, state, now);
    }
    let mut next = State {
        blind_since: None,
        ..state.clone()
    };
    let raw = combined_pressure(&known);
    let pressure = raw.min(state.pressure + MAX_RISE);
    next.pressure = raw;

    let healthy = known.iter().all(|(s, v)| *v < s.target * HEALTHY_FRACTION);
    next.healthy_since = match healthy {
        true => state.healthy_since.or(Some(now)),
        false => None,
    };

    if pressure >= MATERIAL {
        return cut_or_settle(settings, next, pressure, observation, now);
    }
    let healthy_long = next
        .healthy_since
        .is_some_and(|since| now.saturating_sub(since) >= settings.healthy_for);
    let cut_long_ago = state
        .last_cut
        .is_none_or(|(at, _)| now.saturating_sub(at) >= settings.healthy_for);
    if healthy_long && cut_long_ago && state.multiplier < settings.max {
        next.multiplier = recover(settings, state);
        next.last_raise = Some(now);
        return (next, Reason::Recovering);
    }
    (next, Reason::Holding)
}

fn cut_or_settle(
    settings: &Settings,
    mut next: State,
    pressure: f64,
    o: &Observation,
    now: Duration,
) -> (State, Reason) {
    // A change takes `settle` to show in the metrics: until then, only a
    // jump in pressure is news. This holds after a raise too, so that noise
    // on a signal does not undo each recovery step before it has shown.
    let since = |at: Duration| now.saturating_sub(at) >= settings.settle;
    let cut_settled = next.last_cut.is_none_or(|(at, _)| since(at));
    let jumped_since_cut = next
        .last_cut
        .is_some_and(|(_, at_pressure)| pressure >= at_pressure + JUMP);
    let raise_settled = next.last_raise.is_none_or(since) || pressure >= JUMP;
    if !((cut_settled || jumped_since_cut) && raise_settled) {
        return (next, Reason::Settling);
    }
    // Within an episode of overload, a cut that did not bite (the limit was
    // above what was served) is followed by one from the traffic actually
    // served. The first cut of an episode stays relative to the multiplier,
    // so that a passing outlier costs little.
    let in_episode = next
        .last_cut
        .is_some_and(|(at, _)| now.saturating_sub(at) < settings.healthy_for + settings.settle);
    let from = match (o.request_rate, settings.base_rate) {
        (Some(rate), Some(base)) if in_episode && rate.is_finite() && base > 0.0 => next
            .multiplier
            .min(rate / base)
            .max(next.multiplier * MIN_FROM_FRACTION),
        _ => next.multiplier,
    };
    let cut = settings.level(from * (1.0 - settings.sensitivity * pressure));
    if cut >= next.multiplier {
        return (next, Reason::Holding);
    }
    if next
        .last_cut
        .is_none_or(|(at, _)| now.saturating_sub(at) >= settings.healthy_for)
    {
        // A new episode of overload begins at the current level.
        next.overload_level = Some(next.multiplier);
    }
    next.multiplier = cut;
    next.last_cut = Some((now, pressure));
    (next, Reason::Cutting)
}

fn recover(settings: &Settings, state: &State) -> f64 {
    let step = settings.recovery_step;
    let near_overload = state
        .overload_level
        .is_some_and(|level| state.multiplier + NEAR_OVERLOAD * step >= level);
    let step = if near_overload { step / 4.0 } else { step };
    settings.level(state.multiplier + step)
}

fn blind(settings: &Settings, state: &State, now: Duration) -> (State, Reason) {
    let since = state.blind_since.unwrap_or(now);
    let mut next = State {
        blind_since: Some(since),
        healthy_since: None,
        ..state.clone()
    };
    if now.saturating_sub(since) < settings.blind_hold || state.multiplier >= settings.max {
        return (next, Reason::BlindHolding);
    }
    next.multiplier = settings.level(state.multiplier + settings.recovery_step);
    (next, Reason::BlindEasing)
}
