//! What the operator remembers of each adaptive policy between reconciles:
//! its controller, when it last ticked and what that tick reported.
//!
//! Memory only. A controller is started on first sight of a policy from its
//! status (`multiplier`, `lastAdaptedTime`), so that a restarted operator or
//! a new leader carries on from what was published; the rest of the
//! controller's state (when it last cut, how long the target has been
//! healthy) starts afresh.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use sluice_crds::RateLimitPolicy;

use super::adapter::Adapter;
use crate::status::adapting::Adapted;

/// Each adaptive policy's controller, by `<namespace>/<name>`.
#[derive(Default)]
pub struct Adapters(Mutex<HashMap<String, Tracked>>);

struct Tracked {
    uid: Option<String>,
    generation: Option<i64>,
    adapter: Adapter,
    last_tick: Option<Timestamp>,
    report: Option<Adapted>,
}

/// Whether a policy ticks now.
#[derive(Debug)]
pub enum Turn {
    /// A tick is due: take it with this controller, then hand it back with
    /// [`Adapters::ticked`].
    Due(Box<Adapter>),
    /// Not yet.
    Wait {
        /// What the last tick in this process reported, if there was one.
        report: Option<Adapted>,
        /// How long until the next tick is due.
        due_in: Duration,
    },
}

impl Adapters {
    /// The turn of `policy` at `now`; `None`, and the policy forgotten,
    /// when it does not adapt.
    ///
    /// A policy seen for the first time (or recreated under the same name)
    /// starts from its status. A new generation whose adaptive settings
    /// differ gets a new controller that keeps the multiplier; one whose
    /// settings are the same keeps its controller as it is.
    pub fn turn(&self, policy: &RateLimitPolicy, now: Timestamp) -> Option<Turn> {
        let mut adapters = self.lock();
        let key = policy.key();
        if policy.spec.adaptive.is_none() {
            adapters.remove(&key);
            return None;
        }
        let tracked = match adapters.entry(key) {
            Entry::Occupied(entry) if entry.get().uid == policy.metadata.uid => {
                let tracked = entry.into_mut();
                tracked.follow(policy);
                tracked
            }
            Entry::Occupied(mut entry) => {
                entry.insert(Tracked::start(policy)?);
                entry.into_mut()
            }
            Entry::Vacant(entry) => entry.insert(Tracked::start(policy)?),
        };
        let due_in = tracked.due_in(now);
        let turn = match due_in.is_zero() {
            true => Turn::Due(Box::new(tracked.adapter.clone())),
            false => Turn::Wait {
                report: tracked.report.clone(),
                due_in,
            },
        };
        Some(turn)
    }

    /// Keeps `adapter` as it is after the tick it took at `at`, which
    /// reported `report`; returns the report of the tick before.
    pub fn ticked(
        &self,
        key: &str,
        adapter: Adapter,
        at: Timestamp,
        report: Adapted,
    ) -> Option<Adapted> {
        let mut adapters = self.lock();
        let tracked = adapters.get_mut(key)?;
        tracked.adapter = adapter;
        tracked.last_tick = Some(at);
        tracked.report.replace(report)
    }

    /// Forgets `key`; whether it was remembered.
    pub fn forget(&self, key: &str) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Forgets every policy, returning their keys.
    pub fn clear(&self) -> Vec<String> {
        self.lock().drain().map(|(key, _)| key).collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tracked>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Tracked {
    fn start(policy: &RateLimitPolicy) -> Option<Self> {
        let status = policy.status.as_ref();
        let multiplier = status.and_then(|s| s.multiplier);
        Some(Self {
            uid: policy.metadata.uid.clone(),
            generation: policy.metadata.generation,
            adapter: Adapter::for_policy(policy, multiplier)?,
            last_tick: status
                .and_then(|s| s.last_adapted_time.as_ref())
                .map(|t| t.0),
            report: None,
        })
    }

    fn follow(&mut self, policy: &RateLimitPolicy) {
        if self.generation == policy.metadata.generation {
            return;
        }
        self.generation = policy.metadata.generation;
        let multiplier = Some(self.adapter.multiplier());
        if let Some(next) = Adapter::for_policy(policy, multiplier)
            && !self.adapter.same_settings(&next)
        {
            self.adapter = next;
        }
    }

    /// How long until the next tick; zero when due. A last tick in the
    /// future (written by a replica whose clock runs ahead) is not waited
    /// for.
    fn due_in(&self, now: Timestamp) -> Duration {
        let Some(last) = self.last_tick else {
            return Duration::ZERO;
        };
        let elapsed_ms = now.as_millisecond() - last.as_millisecond();
        let Ok(elapsed_ms) = u64::try_from(elapsed_ms) else {
            return Duration::ZERO;
        };
        self.adapter
            .interval
            .saturating_sub(Duration::from_millis(elapsed_ms))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use sluice_crds::{RateLimitPolicySpec, RateLimitPolicyStatus};

    use super::*;
    use crate::{
        adaptive::signals::{Reading, SignalError},
        conditions::{ADAPTING, Observed, reason},
    };

    const SPEC: &str = "
limits: [{name: global, requests: 100, window: 1s}]
adaptive:
  interval: 15s
  signals: {cpu: {weight: 1.0, target: 0.5, max: 0.9}}
  prometheus: {url: http://127.0.0.1:9090}
";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + seconds).unwrap()
    }

    fn policy(spec: &str, generation: i64) -> RateLimitPolicy {
        let spec: RateLimitPolicySpec = serde_yaml::from_str(spec).unwrap();
        let mut policy = RateLimitPolicy::new("checkout", spec);
        policy.metadata.namespace = Some("shop".into());
        policy.metadata.uid = Some("uid-1".into());
        policy.metadata.generation = Some(generation);
        policy
    }

    fn published(multiplier: f64, at: Timestamp) -> RateLimitPolicyStatus {
        RateLimitPolicyStatus {
            multiplier: Some(multiplier),
            last_adapted_time: Some(Time(at)),
            ..RateLimitPolicyStatus::default()
        }
    }

    fn report(multiplier: f64, at: Timestamp) -> Adapted {
        Adapted {
            multiplier,
            signals: None,
            at: Time(at),
            condition: Observed::holds(ADAPTING, reason::HOLDING, "x"),
        }
    }

    fn due(turn: Option<Turn>) -> Adapter {
        match turn {
            Some(Turn::Due(adapter)) => *adapter,
            other => panic!("not due: {other:?}"),
        }
    }

    fn waits(turn: Option<Turn>) -> (Option<Adapted>, Duration) {
        match turn {
            Some(Turn::Wait { report, due_in }) => (report, due_in),
            other => panic!("due: {other:?}"),
        }
    }

    /// Ticks `adapter` blind at `now` and hands it back.
    fn tick(adapters: &Adapters, mut adapter: Adapter, now: Timestamp) {
        let blind = Reading {
            values: std::array::from_fn(|_| Err(SignalError::Empty)),
        };
        let tick = adapter.tick(&blind, Duration::from_secs(now.as_second() as u64));
        let key = tick.policy.clone();
        adapters.ticked(&key, adapter, now, report(tick.multiplier, now));
    }

    #[test]
    fn first_sight_starts_from_the_published_multiplier_and_time() {
        let adapters = Adapters::default();
        let mut policy = policy(SPEC, 1);
        policy.status = Some(published(0.6, at(0)));

        let (report, due_in) = waits(adapters.turn(&policy, at(5)));
        assert_eq!((report, due_in), (None, Duration::from_secs(10)));
        let adapter = due(adapters.turn(&policy, at(15)));
        assert_eq!(adapter.multiplier(), 0.6);
    }

    #[test]
    fn a_tick_is_due_once_per_interval() {
        let adapters = Adapters::default();
        let policy = policy(SPEC, 1);
        let adapter = due(adapters.turn(&policy, at(0)));
        tick(&adapters, adapter, at(0));

        let (report, due_in) = waits(adapters.turn(&policy, at(1)));
        assert_eq!(report.map(|r| r.at), Some(Time(at(0))));
        assert_eq!(due_in, Duration::from_secs(14));
        waits(adapters.turn(&policy, at(14)));
        due(adapters.turn(&policy, at(15)));
    }

    #[test]
    fn a_last_tick_in_the_future_is_not_waited_for() {
        let adapters = Adapters::default();
        let mut policy = policy(SPEC, 1);
        policy.status = Some(published(0.6, at(60)));
        due(adapters.turn(&policy, at(0)));
    }

    #[test]
    fn a_new_generation_with_the_same_settings_keeps_the_controller() {
        let adapters = Adapters::default();
        let mut policy = policy(SPEC, 1);
        policy.status = Some(published(0.6, at(0)));
        let adapter = due(adapters.turn(&policy, at(15)));
        tick(&adapters, adapter, at(15));

        let mut next = self::policy(&format!("{SPEC}limiter: {{replicas: 5}}"), 2);
        next.status = Some(published(0.9, at(0)));
        let (report, _) = waits(adapters.turn(&next, at(16)));
        assert_eq!(report.map(|r| r.multiplier), Some(0.6));
        assert_eq!(due(adapters.turn(&next, at(30))).multiplier(), 0.6);
    }

    #[test]
    fn new_adaptive_settings_rebuild_the_controller_keeping_the_multiplier() {
        let adapters = Adapters::default();
        let mut policy = policy(SPEC, 1);
        policy.status = Some(published(0.6, at(0)));
        let before = due(adapters.turn(&policy, at(15)));

        let changed = SPEC.replace("interval: 15s", "interval: 30s");
        let next = self::policy(&changed, 2);
        let (_, due_in) = waits(adapters.turn(&next, at(15)));
        assert_eq!(due_in, Duration::from_secs(15), "the new interval counts");
        let after = due(adapters.turn(&next, at(30)));
        assert!(!before.same_settings(&after));
        assert_eq!(after.multiplier(), 0.6);
    }

    #[test]
    fn a_policy_that_stops_adapting_is_forgotten() {
        let adapters = Adapters::default();
        let adapter = due(adapters.turn(&policy(SPEC, 1), at(0)));
        tick(&adapters, adapter, at(0));

        let plain = policy("limits: [{name: global, requests: 100, window: 1s}]", 2);
        assert!(adapters.turn(&plain, at(1)).is_none());
        assert!(!adapters.forget("shop/checkout"));
    }

    #[test]
    fn a_policy_recreated_under_the_same_name_starts_afresh() {
        let adapters = Adapters::default();
        let adapter = due(adapters.turn(&policy(SPEC, 1), at(0)));
        tick(&adapters, adapter, at(0));

        let mut recreated = policy(SPEC, 1);
        recreated.metadata.uid = Some("uid-2".into());
        due(adapters.turn(&recreated, at(1)));
    }

    #[test]
    fn clearing_forgets_every_policy() {
        let adapters = Adapters::default();
        due(adapters.turn(&policy(SPEC, 1), at(0)));
        assert_eq!(adapters.clear(), ["shop/checkout"]);
        assert!(adapters.clear().is_empty());
    }
}
