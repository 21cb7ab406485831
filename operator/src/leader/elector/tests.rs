use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use tokio::time::Instant;

use super::{Attempt, Elector, Timings, TimingsError};

fn wall() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn lease(holder: Option<&str>, version: u64) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("sluice-operator".into()),
            resource_version: Some(version.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    }
}

fn spec_of(attempt: Attempt) -> LeaseSpec {
    match attempt {
        Attempt::Create(spec) | Attempt::Update(spec) => spec,
        Attempt::Wait => panic!("expected a write, got Wait"),
    }
}

#[test]
fn missing_lease_is_created_held_by_the_candidate() {
    let mut a = Elector::new("a", Timings::default());
    let Attempt::Create(spec) = a.attempt(None, Instant::now(), wall()) else {
        panic!("expected Create");
    };
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.renew_time.is_some() && spec.acquire_time.is_some());
}

#[test]
fn live_lease_of_another_holder_is_left_alone() {
    let mut b = Elector::new("b", Timings::default());
    let start = Instant::now();
    assert_eq!(
        b.attempt(Some(&lease(Some("a"), 1)), start, wall()),
        Attempt::Wait
    );
    let later = start + Duration::from_secs(14);
    assert_eq!(
        b.attempt(Some(&lease(Some("a"), 1)), later, wall()),
        Attempt::Wait
    );
    assert!(!b.is_leader(later));
}

#[test]
fn lease_unchanged_for_a_lease_duration_is_taken_over() {
    let mut b = Elector::new("b", Timings::default());
    let start = Instant::now();
    b.attempt(Some(&lease(Some("a"), 1)), start, wall());
    let expired = start + Duration::from_secs(15);
    let spec = spec_of(b.attempt(Some(&lease(Some("a"), 1)), expired, wall()));
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(4));
    assert_eq!(spec.acquire_time, spec.renew_time);
}

#[test]
fn a_renewing_holder_is_never_taken_over() {
    let mut b = Elector::new("b", Timings::default());
    let start = Instant::now();
    for round in 0..60u64 {
        let now = start + Duration::from_secs(2 * round);
        let attempt = b.attempt(Some(&lease(Some("a"), round)), now, wall());
        assert_eq!(attempt, Attempt::Wait, "round {round}");
    }
}

#[test]
fn holder_renews_keeping_its_acquire_time_and_transitions() {
    let mut a = Elector::new("a", Timings::default());
    let mut held = lease(Some("a"), 7);
    let acquired = Timestamp::from_second(1_600_000_000).unwrap();
    held.spec.as_mut().unwrap().acquire_time = Some(super::MicroTime(acquired));
    let spec = spec_of(a.attempt(Some(&held), Instant::now(), wall()));
    assert_eq!(spec.acquire_time, Some(super::MicroTime(acquired)));
    assert_eq!(spec.lease_transitions, Some(3));
    assert_eq!(spec.renew_time, Some(super::MicroTime(wall())));
}

#[test]
fn leader_stops_leading_at_the_renew_deadline_without_renewal() {
    let mut a = Elector::new("a", Timings::default());
    let start = Instant::now();
    a.attempt(None, start, wall());
    a.accepted(start);
    assert!(a.is_leader(start + Duration::from_millis(9_999)));
    assert!(!a.is_leader(start + Duration::from_secs(10)));
}

#[test]
fn refused_write_ends_leadership_at_once() {
    let mut a = Elector::new("a", Timings::default());
    let start = Instant::now();
    a.accepted(start);
    a.refused();
    assert!(!a.is_leader(start));
}

#[test]
fn seeing_another_holder_ends_leadership_at_once() {
    let mut a = Elector::new("a", Timings::default());
    let start = Instant::now();
    a.accepted(start);
    a.attempt(Some(&lease(Some("b"), 9)), start, wall());
    assert!(!a.is_leader(start));
}

#[test]
fn released_lease_is_taken_at_once() {
    let mut b = Elector::new("b", Timings::default());
    let spec = spec_of(b.attempt(Some(&lease(None, 4)), Instant::now(), wall()));
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
}

#[test]
fn release_gives_up_only_a_lease_it_holds() {
    let mut a = Elector::new("a", Timings::default());
    assert_eq!(a.release(&lease(Some("b"), 1), wall()), None);
    a.accepted(Instant::now());
    let released = a.release(&lease(Some("a"), 1), wall()).expect("holds it");
    assert_eq!(released.holder_identity, None);
    assert_eq!(released.lease_duration_seconds, Some(1));
    assert!(!a.is_leader(Instant::now()));
}

#[test]
fn timings_that_let_two_leaders_overlap_are_refused() {
    let secs = Duration::from_secs;
    let timings = |lease, deadline, retry| Timings {
        lease_duration: secs(lease),
        renew_deadline: secs(deadline),
        retry_period: secs(retry),
    };
    assert!(Timings::default().check().is_ok());
    assert!(matches!(
        timings(10, 10, 2).check(),
        Err(TimingsError::DeadlineNotBeforeExpiry { .. })
    ));
    assert!(matches!(
        timings(15, 5, 5).check(),
        Err(TimingsError::RetryNotBeforeDeadline { .. })
    ));
}

/// A lease store with the API server's optimistic concurrency.
struct Server {
    lease: Option<Lease>,
    version: u64,
}

impl Server {
    fn write(&mut self, attempt: Attempt, read: Option<&Lease>) -> bool {
        let expected = read.and_then(|l| l.metadata.resource_version.clone());
        let current = self
            .lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        let spec = match attempt {
            Attempt::Wait => return false,
            Attempt::Create(_) if self.lease.is_some() => return false,
            Attempt::Update(_) if expected != current => return false,
            Attempt::Create(spec) | Attempt::Update(spec) => spec,
        };
        self.version += 1;
        let mut lease = lease(None, self.version);
        lease.spec = Some(spec);
        self.lease = Some(lease);
        true
    }
}

/// A small deterministic generator, so that a failure can be replayed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, percent: u64) -> bool {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % 100 < percent
    }
}

#[test]
fn two_candidates_never_lead_at_once_over_a_lossy_network() {
    for seed in 0..20 {
        let mut server = Server {
            lease: None,
            version: 0,
        };
        let mut dice = Dice(seed);
        let mut candidates = [
            Elector::new("a", Timings::default()),
            Elector::new("b", Timings::default()),
        ];
        let start = Instant::now();
        let mut led_steps = 0;
        let steps = 6_000; // ten minutes in steps of 100ms
        for step in 0..steps {
            let now = start + Duration::from_millis(100 * step);
            for (i, candidate) in candidates.iter_mut().enumerate() {
                // Each candidate tries every 2s, at its own offset.
                if step % 20 != 7 * i as u64 {
                    continue;
                }
                if dice.roll(30) {
                    continue; // the read or the write never reached the server
                }
                let read = server.lease.clone();
                let attempt = candidate.attempt(read.as_ref(), now, wall());
                let written = server.write(attempt, read.as_ref());
                match (written, dice.roll(10)) {
                    (true, false) => candidate.accepted(now),
                    (true, true) => {} // applied, but the answer was lost
                    (false, _) => candidate.refused(),
                }
            }
            let leaders = candidates.iter().filter(|c| c.is_leader(now)).count();
            assert!(leaders <= 1, "seed {seed}: two leaders at step {step}");
            led_steps += u64::from(leaders == 1);
        }
        assert!(
            led_steps > steps / 2,
            "seed {seed}: led only {led_steps} of {steps} steps"
        );
    }
}
