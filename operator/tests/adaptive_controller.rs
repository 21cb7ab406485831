//! The adaptive controller against a simulated service, in simulated time.
//!
//! The service serves up to its capacity comfortably: CPU tracks load,
//! p99 latency grows as load nears capacity, and errors appear past it (or
//! are injected). Metrics lag like Prometheus rate windows: what the
//! controller sees is the average of the last 60–90 s. Each test states one
//! rule of the controller and checks it over whole runs.

use std::{collections::VecDeque, time::Duration};

use sluice_operator::adaptive::controller::{
    Observation, Reason, Settings, SignalSettings, State, step,
};

/// The policy of the checkout example.
fn settings() -> Settings {
    Settings {
        signals: [
            Some(SignalSettings {
                weight: 0.5,
                target: 0.70,
                max: 0.90,
            }),
            Some(SignalSettings {
                weight: 0.7,
                target: 0.30,
                max: 0.60,
            }),
            Some(SignalSettings {
                weight: 1.0,
                target: 0.01,
                max: 0.10,
            }),
        ],
        sensitivity: 0.5,
        recovery_step: 0.05,
        min: 0.05,
        max: 1.0,
        settle: Duration::from_secs(90),
        healthy_for: Duration::from_secs(60),
        blind_hold: Duration::from_secs(300),
        min_request_rate: 1.0,
        base_rate: Some(BASE_RATE),
    }
}

/// Requests per second the policy's global limit admits at multiplier 1.
const BASE_RATE: f64 = 1600.0;
/// Requests per second the service serves at full utilisation.
const CAPACITY: f64 = 1000.0;
const INTERVAL: u64 = 15;

/// One second of the service's true state.
#[derive(Clone, Copy, Default)]
struct Second {
    served: f64,
    cpu: f64,
    latency: f64,
    errors: f64,
}

/// A small deterministic random source for signal noise.
struct Noise(u64);

impl Noise {
    /// A factor in [1 − amplitude, 1 + amplitude].
    fn factor(&mut self, amplitude: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + amplitude * (2.0 * unit - 1.0)
    }
}

struct Service {
    lag: usize,
    seconds: VecDeque<Second>,
    injected_errors: f64,
    noise: Noise,
    noise_amplitude: f64,
}

impl Service {
    fn new(lag: usize) -> Self {
        Self {
            lag,
            seconds: VecDeque::new(),
            injected_errors: 0.0,
            noise: Noise(0x9e37_79b9_7f4a_7c15),
            noise_amplitude: 0.0,
        }
    }

    /// One second of `demand` requests per second, of which the limiter
    /// admits up to `multiplier × BASE_RATE`.
    fn run_second(&mut self, demand: f64, multiplier: f64) {
        let served = demand.min(multiplier * BASE_RATE);
        let load = served / CAPACITY;
        let second = Second {
            served,
            cpu: (0.8 * load).min(1.0),
            latency: 0.05 / (1.0 - load.min(0.95)),
            errors: (0.005 + self.injected_errors + 0.5 * (load - 1.0).max(0.0)).min(1.0),
        };
        self.seconds.push_back(second);
        if self.seconds.len() > self.lag {
            self.seconds.pop_front();
        }
    }

    /// What Prometheus answers now: averages over the lag window.
    fn observe(&mut self) -> Observation {
        let n = self.seconds.len().max(1) as f64;
        let mean = |f: fn(&Second) -> f64| self.seconds.iter().map(f).sum::<f64>() / n;
        let (served, cpu, latency, errors) = (
            mean(|s| s.served),
            mean(|s| s.cpu),
            mean(|s| s.latency),
            mean(|s| s.errors),
        );
        let a = self.noise_amplitude;
        Observation {
            cpu: Some(cpu * self.noise.factor(a)),
            latency: Some(latency * self.noise.factor(a)),
            errors: Some(errors * self.noise.factor(a)),
            request_rate: Some(served),
        }
    }
}

/// A run: the controller ticking every 15 s against a service.
struct Run {
    settings: Settings,
    state: State,
    service: Service,
    now: u64,
    offset: u64,
    /// (time, multiplier, reason) after every tick.
    ticks: Vec<(u64, f64, Reason)>,
}

impl Run {
    fn new(service: Service) -> Self {
        let settings = settings();
        let state = State::new(&settings);
        Self {
            settings,
            state,
            service,
            now: 0,
            offset: 0,
            ticks: Vec::new(),
        }
    }

    /// Ticks fall `offset` seconds after every multiple of the interval.
    fn with_tick_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Runs `seconds` seconds of `demand`, ticking the controller on time.
    fn run(&mut self, seconds: u64, demand: f64) {
        self.run_observed(seconds, demand, |o| o);
    }

    /// Like [`run`], with the observations passed through `tamper`.
    fn run_observed(
        &mut self,
        seconds: u64,
        demand: f64,
        mut tamper: impl FnMut(Observation) -> Observation,
    ) {
        for _ in 0..seconds {
            self.service.run_second(demand, self.state.multiplier);
            self.now += 1;
            if self.now % INTERVAL == self.offset % INTERVAL {
                let observation = tamper(self.service.observe());
                let (state, reason) = step(
                    &self.settings,
                    &self.state,
                    &observation,
                    Duration::from_secs(self.now),
                );
                self.state = state;
                self.ticks.push((self.now, self.state.multiplier, reason));
            }
        }
    }

    fn multiplier_at(&self, t: u64) -> f64 {
        self.ticks
            .iter()
            .take_while(|(at, _, _)| *at <= t)
            .last()
            .map_or(self.settings.max, |(_, m, _)| *m)
    }

    fn ticks_after(&self, t: u64) -> impl Iterator<Item = &(u64, f64, Reason)> {
        self.ticks.iter().filter(move |(at, _, _)| *at > t)
    }
}

#[test]
fn error_step_cuts_to_half_within_a_minute_and_a_quarter_within_three() {
    for lag in [60, 75, 90] {
        for offset in [0, 4, 9, 14] {
            let mut run = Run::new(Service::new(lag)).with_tick_offset(offset);
            run.run(300, 600.0);
            assert_eq!(run.state.multiplier, 1.0, "healthy warm-up holds at 1.0");
            run.service.injected_errors = 0.195;
            run.run(300, 600.0);
            let at = |t| run.multiplier_at(t);
            assert!(
                at(360) <= 0.5,
                "lag {lag}s, offset {offset}s: {} after 60s",
                at(360)
            );
            assert!(
                at(480) <= 0.25,
                "lag {lag}s, offset {offset}s: {} after 3 min",
                at(480)
            );
            assert!(
                run.ticks.iter().all(|(_, m, _)| *m >= 0.05),
                "never below the floor"
            );
        }
    }
}

#[test]
fn recovery_waits_a_minute_then_rises_monotonically_to_the_top() {
    for lag in [60, 90] {
        let mut run = Run::new(Service::new(lag));
        run.state.multiplier = 0.05;
        run.state.overload_level = Some(1.0);
        run.run(600, 600.0);
        let healthy_at = run.ticks.first().map(|t| t.0).unwrap();
        let first_rise = run
            .ticks
            .iter()
            .find(|t| t.2 == Reason::Recovering)
            .map(|t| t.0)
            .unwrap();
        assert!(
            first_rise >= healthy_at + 60,
            "first rise at {first_rise}s, healthy since {healthy_at}s"
        );
        assert!(
            run.ticks.windows(2).all(|w| w[1].1 >= w[0].1),
            "monotone, never cut"
        );
        assert!(
            run.multiplier_at(360) >= 0.8,
            "lag {lag}: {} after 6 min",
            run.multiplier_at(360)
        );
        assert!(
            run.multiplier_at(600) >= 1.0 - 1e-9,
            "lag {lag}: {} after 10 min",
            run.multiplier_at(600)
        );
    }
}

#[test]
fn multipliers_are_published_with_at_most_four_decimals() {
    let mut run = Run::new(Service::new(60));
    run.state.multiplier = 0.05;
    run.state.overload_level = Some(0.7);
    run.run(600, 600.0);
    run.run(300, 1600.0);
    for (at, multiplier, reason) in &run.ticks {
        let text = multiplier.to_string();
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 4, "{text} at {at}s ({reason:?})");
    }
}

#[test]
fn steady_overload_with_noisy_signals_settles_without_oscillating() {
    for lag in [60, 75, 90] {
        for seed in [1u64, 7, 42, 2026, 31337] {
            let mut service = Service::new(lag);
            service.noise = Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            service.noise_amplitude = 0.2;
            let mut run = Run::new(service);
            run.run(3600, 1.6 * CAPACITY);
            let settled: Vec<&(u64, f64, Reason)> = run.ticks_after(600).collect();
            let (lo, hi) = settled.iter().fold((f64::MAX, f64::MIN), |(lo, hi), t| {
                (lo.min(t.1), hi.max(t.1))
            });
            assert!(
                hi - lo <= 0.15,
                "lag {lag}s, seed {seed}: multiplier swung from {lo:.3} to {hi:.3}"
            );
            for window_start in (600..=3300).step_by(15) {
                let episodes = cut_episodes(&run.ticks, window_start, window_start + 300);
                assert!(
                    episodes <= 2,
                    "lag {lag}s, seed {seed}: {episodes} cut episodes in 5 min from {window_start}s"
                );
            }
        }
    }
}

/// Cut episodes beginning in [from, to). An episode is a run of cuts with
/// no recovery between them, each within two minutes of the previous one.
fn cut_episodes(ticks: &[(u64, f64, Reason)], from: u64, to: u64) -> usize {
    let mut episodes = 0;
    let mut last_cut: Option<u64> = None;
    for &(at, _, reason) in ticks {
        match reason {
            Reason::Recovering => last_cut = None,
            Reason::Cutting => {
                let continues = last_cut.is_some_and(|t| at - t <= 120);
                if !continues && (from..to).contains(&at) {
                    episodes += 1;
                }
                last_cut = Some(at);
            }
            _ => {}
        }
    }
    episodes
}

#[test]
fn a_single_tick_latency_spike_costs_at_most_one_small_cut() {
    let mut run = Run::new(Service::new(75));
    run.run(600, 600.0);
    let before = run.state.multiplier;
    let mut spiked = false;
    run.run_observed(300, 600.0, |mut o| {
        if !spiked {
            o.latency = Some(0.9);
            spiked = true;
        }
        o
    });
    let cuts: Vec<_> = run
        .ticks_after(600)
        .filter(|t| t.2 == Reason::Cutting)
        .collect();
    assert!(cuts.len() <= 1, "{} cuts", cuts.len());
    let lowest = run.ticks_after(600).map(|t| t.1).fold(before, f64::min);
    assert!(
        lowest >= before * 0.85 - 1e-9,
        "cut from {before} to {lowest}"
    );
}

#[test]
fn five_ticks_of_empty_or_nan_data_change_nothing() {
    let mut run = Run::new(Service::new(75));
    run.state.multiplier = 0.6;
    run.run(600, 1.6 * CAPACITY);
    let before = run.state.multiplier;
    let mut n = 0;
    run.run_observed(75, 1.6 * CAPACITY, |o| {
        n += 1;
        match n % 2 {
            0 => Observation::default(),
            _ => Observation {
                cpu: Some(f64::NAN),
                latency: Some(f64::NAN),
                errors: Some(f64::NAN),
                ..o
            },
        }
    });
    assert_eq!(run.state.multiplier, before);
}

#[test]
fn a_prometheus_outage_holds_then_eases_one_step_per_tick() {
    let mut run = Run::new(Service::new(75));
    run.state.multiplier = 0.3;
    run.run(120, 200.0);
    let before = run.state.multiplier;
    run.run_observed(600, 200.0, |_| Observation::default());
    let outage: Vec<_> = run.ticks_after(120).collect();
    let held = outage
        .iter()
        .take_while(|t| t.0 < 120 + 300)
        .all(|t| (t.1 - before).abs() < 1e-12);
    assert!(held, "held for the first five minutes");
    for w in outage.windows(2) {
        assert!(
            w[1].1 - w[0].1 <= 0.05 + 1e-12,
            "rose {} in one tick",
            w[1].1 - w[0].1
        );
    }
    assert!(run.state.multiplier > before, "eased toward 1.0");
}

#[test]
fn mostly_our_own_429s_with_no_5xx_still_recover() {
    // Demand is ten times what the limiter admits: most answers are the
    // limiter's 429s, which the signals leave out. What is served is healthy.
    let mut run = Run::new(Service::new(75));
    run.state.multiplier = 0.2;
    run.run(600, 10.0 * BASE_RATE);
    assert!(
        run.state.multiplier > 0.2,
        "stayed at {}",
        run.state.multiplier
    );
}

#[test]
fn a_signal_with_weight_zero_never_cuts() {
    let mut run = Run::new(Service::new(75));
    run.settings.signals = [
        None,
        None,
        Some(SignalSettings {
            weight: 0.0,
            target: 0.01,
            max: 0.1,
        }),
    ];
    run.service.injected_errors = 0.5;
    run.run(900, 600.0);
    assert!(run.ticks.iter().all(|t| t.2 != Reason::Cutting));
}

#[test]
fn an_api_serving_far_under_its_global_limit_is_not_cut_to_the_floor_at_once() {
    // 100 requests/s served against a global limit of 5,000/s, and a 5xx
    // ratio that rises over two ticks, as a user saw it: the second cut may
    // start from the traffic served, but not from 2 % of the limit.
    let settings = Settings {
        base_rate: Some(5000.0),
        settle: Duration::ZERO,
        ..settings()
    };
    let errors = |ratio: f64| Observation {
        cpu: Some(0.3),
        latency: Some(0.1),
        errors: Some(ratio),
        request_rate: Some(100.0),
    };
    let mut state = State::new(&settings);
    let mut multipliers = Vec::new();
    for (tick, ratio) in [0.0, 0.076, 0.153].into_iter().enumerate() {
        let now = Duration::from_secs(15 * tick as u64);
        let (next, reason) = step(&settings, &state, &errors(ratio), now);
        multipliers.push((next.multiplier, reason));
        state = next;
    }
    let (first, second) = (multipliers[1].0, multipliers[2].0);
    assert!(first < 1.0, "{multipliers:?}");
    assert!(
        second >= first * 0.5 * (1.0 - settings.sensitivity),
        "{multipliers:?}"
    );
    assert!(second > settings.min, "{multipliers:?}");
}

#[test]
fn doubling_sensitivity_deepens_a_cut() {
    let first_cut = |sensitivity: f64| {
        let mut run = Run::new(Service::new(75));
        run.settings.sensitivity = sensitivity;
        run.service.injected_errors = 0.5;
        run.run(120, 600.0);
        run.ticks
            .iter()
            .find(|t| t.2 == Reason::Cutting)
            .map(|t| t.1)
            .unwrap()
    };
    assert!(first_cut(0.6) < first_cut(0.3));
}

/// The worked example of docs/adaptive.md, tick by tick.
#[test]
fn the_worked_example_in_the_docs_holds() {
    let settings = settings();
    let mut state = State::new(&settings);
    let ticks = [
        (15, 0.054, 0.8, 0.85),
        (30, 0.103, 0.8, 0.484),
        (45, 0.153, 0.8, 0.242),
        (60, 0.2, 0.6, 0.242),
        (120, 0.2, 0.4, 0.242),
        (135, 0.2, 0.24, 0.12),
    ];
    for (t, errors, served, expected) in ticks {
        let observation = Observation {
            cpu: Some(0.3),
            latency: Some(0.1),
            errors: Some(errors),
            request_rate: Some(served * BASE_RATE),
        };
        state = step(&settings, &state, &observation, Duration::from_secs(t)).0;
        assert!(
            (state.multiplier - expected).abs() < 0.001,
            "at {t}s: {} not {expected}",
            state.multiplier
        );
    }
}
