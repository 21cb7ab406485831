//! The adaptive part of the status: the multiplier, the signals, when they
//! were read, and the `Adapting` condition, from what one tick found and
//! did. Pure: [`crate::adapt`] gathers the inputs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_crds::{ObservedSignals, RateLimitPolicySpec, RateLimitPolicyStatus};

use super::effective_limits;
use crate::{
    adaptive::{
        adapter::{Adapter, Strongest, Tick},
        controller::Reason,
        signals::{Reading, SignalError},
    },
    conditions::{self, ADAPTING, Observed, reason},
};

/// What became of a tick's multiplier on its way to the limiters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publication {
    /// Stored in the limiters' Redis.
    Published,
    /// The policy has no `spec.limiter.redis`: nowhere to publish.
    NoRedis,
    /// Publishing failed, for this reason.
    Failed(String),
}

/// One tick as the status reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapted {
    /// The multiplier after the tick.
    pub multiplier: f64,
    /// The signals read, known values only; `None` when none was.
    pub signals: Option<ObservedSignals>,
    /// When the tick was taken.
    pub at: Time,
    /// The `Adapting` condition it calls for.
    pub condition: Observed,
}

impl Adapted {
    /// The report of `tick`, taken at `at` on `reading`, whose multiplier
    /// went as `publication` says.
    pub fn new(
        tick: &Tick,
        reading: &Reading,
        strongest: Option<&Strongest>,
        publication: &Publication,
        at: Time,
    ) -> Self {
        Self {
            multiplier: tick.multiplier,
            signals: known_signals(tick),
            at,
            condition: condition(tick, reading, strongest, publication),
        }
    }
}

/// Writes `adapted` into `status`: the multiplier, the signals, the time,
/// the effective limits under the multiplier, and `Adapting`.
pub fn record(
    status: &mut RateLimitPolicyStatus,
    spec: &RateLimitPolicySpec,
    adapted: &Adapted,
    generation: Option<i64>,
) {
    status.multiplier = Some(adapted.multiplier);
    status.signals = adapted.signals.clone();
    status.last_adapted_time = Some(adapted.at.clone());
    status.effective_limits = effective_limits(spec, adapted.multiplier);
    let condition = adapted.condition.clone();
    conditions::set(&mut status.conditions, condition, generation, &adapted.at);
}

/// Clears what adaptation wrote, for a policy that no longer adapts: its
/// limits are the base ones again.
pub fn stopped(status: &mut RateLimitPolicyStatus, spec: &RateLimitPolicySpec) {
    if status.multiplier.is_none()
        && status.signals.is_none()
        && status.last_adapted_time.is_none()
        && conditions::find(&status.conditions, ADAPTING).is_none()
    {
        return;
    }
    status.multiplier = None;
    status.signals = None;
    status.last_adapted_time = None;
    status.conditions.retain(|c| c.type_ != ADAPTING);
    status.effective_limits = effective_limits(spec, 1.0);
}

/// The `Adapting` condition after `tick`.
///
/// `False` when the controller is blind (every query failed, or no signal
/// could be used) or when the multiplier does not reach the limiters;
/// otherwise `True`, with the controller's reason. A blind controller
/// still publishes what it holds, so a failure to publish then is told in
/// the message.
pub fn condition(
    tick: &Tick,
    reading: &Reading,
    strongest: Option<&Strongest>,
    publication: &Publication,
) -> Observed {
    let m = number(tick.multiplier);
    if Adapter::is_blind(tick.reason) {
        let effect = match tick.reason == Reason::BlindEasing.as_str() {
            true => format!("the multiplier eases toward its upper bound, now {m}"),
            false => format!("the multiplier holds at {m}"),
        };
        let effect = match publication {
            Publication::Failed(error) => format!("{effect}; {error}"),
            _ => effect,
        };
        return blind(tick, reading, &effect);
    }
    let doing = format!("multiplier {m}, {}", tick.reason.to_lowercase());
    match publication {
        Publication::Failed(error) => Observed::fails(
            ADAPTING,
            reason::PUBLISH_FAILED,
            format!(
                "{doing}, but {error}; the limiters keep the last multiplier they read \
                 until it goes stale"
            ),
        ),
        Publication::NoRedis => Observed::fails(
            ADAPTING,
            reason::NO_REDIS,
            format!(
                "{doing}, but spec.limiter.redis is not set: limiters read the multiplier \
                 from Redis, so they cannot follow it, and each pod counts alone at the \
                 base limits"
            ),
        ),
        Publication::Published => Observed::holds(
            ADAPTING,
            controller_reason(tick.reason),
            format!("{doing}; {}", describe(strongest)),
        ),
    }
}

fn blind(tick: &Tick, reading: &Reading, effect: &str) -> Observed {
    if reading.prometheus_unreachable() {
        let error = reading.values[0]
            .as_ref()
            .err()
            .map_or_else(String::new, SignalError::to_string);
        let message = format!("{error}; every signal is unknown and {effect}");
        return Observed::fails(ADAPTING, reason::PROMETHEUS_UNAVAILABLE, message);
    }
    let why: Vec<String> = tick
        .signals
        .unknown
        .iter()
        .map(|(signal, why)| format!("{signal}: {why}"))
        .collect();
    let why = match why.is_empty() {
        true => "latency and errors count only above spec.adaptive.minRequestRate \
                 served requests per second"
            .to_owned(),
        false => why.join("; "),
    };
    let message = format!("no signal the policy weighs is known ({why}); {effect}");
    Observed::fails(ADAPTING, reason::SIGNALS_UNKNOWN, message)
}

fn controller_reason(name: &str) -> &'static str {
    match name {
        n if n == Reason::Cutting.as_str() => reason::CUTTING,
        n if n == Reason::Recovering.as_str() => reason::RECOVERING,
        n if n == Reason::Settling.as_str() => reason::SETTLING,
        _ => reason::HOLDING,
    }
}

fn describe(strongest: Option<&Strongest>) -> String {
    let Some(s) = strongest else {
        return "no signal presses".to_owned();
    };
    let unit = if s.name == "latency" { "s" } else { "" };
    format!(
        "strongest signal {} at {}{unit} against a target of {}{unit}",
        s.name,
        number(s.value),
        number(s.target)
    )
}

/// A number as a person reads it: at most three decimals, no trailing
/// zeros.
fn number(x: f64) -> String {
    // Adding zero turns -0 into 0.
    let text = format!("{:.3}", x + 0.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn known_signals(tick: &Tick) -> Option<ObservedSignals> {
    let s = &tick.signals;
    let known = ObservedSignals {
        cpu: s.cpu,
        latency_seconds: s.latency_seconds,
        error_ratio: s.error_ratio,
        request_rate: s.request_rate,
    };
    (known != ObservedSignals::default()).then_some(known)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::adaptive::adapter::Signals;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn tick(multiplier: f64, reason: Reason, signals: Signals) -> Tick {
        Tick {
            policy: "shop/checkout".into(),
            multiplier,
            reason: reason.as_str(),
            signals,
        }
    }

    fn reading(values: [Result<f64, SignalError>; 4]) -> Reading {
        Reading { values }
    }

    fn healthy() -> (Signals, Reading) {
        let signals = Signals {
            cpu: Some(0.3),
            request_rate: Some(50.0),
            ..Signals::default()
        };
        let empty = || Err(SignalError::Empty);
        let reading = reading([Ok(0.3), empty(), empty(), Ok(50.0)]);
        (signals, reading)
    }

    fn latency(value: f64) -> Strongest {
        Strongest {
            name: "latency",
            value,
            target: 0.3,
            pressure: 0.37,
        }
    }

    fn spec() -> RateLimitPolicySpec {
        let limits = "[{name: global, requests: 100, window: 1s}]";
        serde_yaml::from_str(&format!("limits: {limits}")).unwrap()
    }

    #[test]
    fn a_published_cut_is_adapting_with_the_multiplier_and_strongest_signal() {
        let (signals, reading) = healthy();
        let tick = tick(0.72, Reason::Cutting, signals);
        let strongest = latency(0.41);
        let observed = condition(&tick, &reading, Some(&strongest), &Publication::Published);
        assert_eq!(
            observed,
            Observed::holds(
                ADAPTING,
                reason::CUTTING,
                "multiplier 0.72, cutting; strongest signal latency at 0.41s \
                 against a target of 0.3s"
            )
        );
    }

    #[test]
    fn every_query_failing_is_prometheus_unavailable_and_the_multiplier_holds() {
        let refused = || Err(SignalError::QueryPrometheus("connection refused".into()));
        let reading = reading([refused(), refused(), refused(), refused()]);
        let tick = tick(0.5, Reason::BlindHolding, Signals::default());
        let observed = condition(&tick, &reading, None, &Publication::Published);
        assert!(!observed.status);
        assert_eq!(observed.reason, "PrometheusUnavailable");
        assert_eq!(
            observed.message,
            "failed to query Prometheus: connection refused; \
             every signal is unknown and the multiplier holds at 0.5"
        );
    }

    #[test]
    fn signals_unknown_for_another_reason_say_why_each_is() {
        let empty = || Err(SignalError::Empty);
        let reading = reading([empty(), Ok(0.2), Ok(0.0), Ok(0.1)]);
        let signals = Signals {
            unknown: vec![("cpu".into(), "the query returned no data".into())],
            ..Signals::default()
        };
        let tick = tick(0.9, Reason::BlindEasing, signals);
        let observed = condition(&tick, &reading, None, &Publication::Published);
        assert_eq!(
            (observed.status, observed.reason),
            (false, "SignalsUnknown")
        );
        assert_eq!(
            observed.message,
            "no signal the policy weighs is known (cpu: the query returned no data); \
             the multiplier eases toward its upper bound, now 0.9"
        );
    }

    #[test]
    fn a_failed_publication_is_publish_failed_and_names_the_multiplier() {
        let (signals, reading) = healthy();
        let tick = tick(0.8, Reason::Holding, signals);
        let failed = Publication::Failed("failed to connect to Redis at redis://r:6379: x".into());
        let observed = condition(&tick, &reading, None, &failed);
        assert_eq!((observed.status, observed.reason), (false, "PublishFailed"));
        assert!(
            observed
                .message
                .starts_with("multiplier 0.8, holding, but failed to connect to Redis"),
            "{}",
            observed.message
        );
    }

    #[test]
    fn without_redis_the_condition_says_the_limiters_cannot_follow() {
        let (signals, reading) = healthy();
        let tick = tick(0.8, Reason::Settling, signals);
        let observed = condition(&tick, &reading, None, &Publication::NoRedis);
        assert_eq!((observed.status, observed.reason), (false, "NoRedis"));
        assert!(observed.message.contains("spec.limiter.redis is not set"));
        assert!(observed.message.contains("each pod counts alone"));
    }

    #[test]
    fn a_blind_tick_that_also_fails_to_publish_tells_both() {
        let refused = || Err(SignalError::QueryPrometheus("refused".into()));
        let reading = reading([refused(), refused(), refused(), refused()]);
        let tick = tick(0.5, Reason::BlindHolding, Signals::default());
        let failed = Publication::Failed("failed to publish".into());
        let observed = condition(&tick, &reading, None, &failed);
        assert_eq!(observed.reason, "PrometheusUnavailable");
        assert!(
            observed
                .message
                .ends_with("holds at 0.5; failed to publish")
        );
    }

    #[test]
    fn recording_scales_the_effective_limits_and_keeps_known_signals_only() {
        let (signals, reading) = healthy();
        let tick = tick(0.25, Reason::Cutting, signals);
        let adapted = Adapted::new(&tick, &reading, None, &Publication::Published, at(5));
        let mut status = RateLimitPolicyStatus::default();
        record(&mut status, &spec(), &adapted, Some(2));

        assert_eq!(status.multiplier, Some(0.25));
        assert_eq!(status.effective_limits[0].effective, 25);
        assert_eq!(status.last_adapted_time, Some(at(5)));
        let signals = status.signals.clone().unwrap();
        assert_eq!((signals.cpu, signals.latency_seconds), (Some(0.3), None));
        let adapting = conditions::find(&status.conditions, ADAPTING).unwrap();
        assert_eq!(adapting.observed_generation, Some(2));
        assert_eq!(adapting.last_transition_time, at(5));
    }

    #[test]
    fn a_tick_that_read_nothing_records_no_signals() {
        let empty = || Err(SignalError::Empty);
        let reading = reading([empty(), empty(), empty(), empty()]);
        let tick = tick(1.0, Reason::BlindHolding, Signals::default());
        let adapted = Adapted::new(&tick, &reading, None, &Publication::Published, at(5));
        assert_eq!(adapted.signals, None);
    }

    #[test]
    fn recording_the_same_status_again_keeps_the_transition_time() {
        let (signals, reading) = healthy();
        let first = tick(0.5, Reason::Cutting, signals.clone());
        let mut status = RateLimitPolicyStatus::default();
        let adapted = Adapted::new(&first, &reading, None, &Publication::Published, at(5));
        record(&mut status, &spec(), &adapted, Some(1));
        let later = tick(0.5, Reason::Holding, signals);
        let adapted = Adapted::new(&later, &reading, None, &Publication::Published, at(20));
        record(&mut status, &spec(), &adapted, Some(1));
        let adapting = conditions::find(&status.conditions, ADAPTING).unwrap();
        assert_eq!(adapting.reason, "Holding");
        assert_eq!(adapting.last_transition_time, at(5));
    }

    #[test]
    fn stopping_clears_what_adaptation_wrote_and_restores_the_base_limits() {
        let (signals, reading) = healthy();
        let tick = tick(0.25, Reason::Cutting, signals);
        let adapted = Adapted::new(&tick, &reading, None, &Publication::Published, at(5));
        let mut status = RateLimitPolicyStatus::default();
        record(&mut status, &spec(), &adapted, Some(1));

        stopped(&mut status, &spec());
        assert_eq!(status.multiplier, None);
        assert_eq!(status.signals, None);
        assert_eq!(status.last_adapted_time, None);
        assert!(status.conditions.is_empty());
        assert_eq!(status.effective_limits[0].effective, 100);
    }

    #[test]
    fn stopping_a_policy_that_never_adapted_changes_nothing() {
        let mut status = RateLimitPolicyStatus::default();
        stopped(&mut status, &spec());
        assert_eq!(status, RateLimitPolicyStatus::default());
    }

    #[test]
    fn numbers_are_printed_short() {
        let printed: Vec<String> = [1.0, 0.5, 0.7234, 0.0, -0.0, 12.0]
            .into_iter()
            .map(number)
            .collect();
        assert_eq!(printed, ["1", "0.5", "0.723", "0", "0", "12"]);
    }
}
