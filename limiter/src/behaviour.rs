//! The behaviour every store must show, as one suite of cases.
//!
//! Each case builds a limiter on a fresh store made by the caller on a
//! [`ManualClock`], drives checks, and panics when the rule it is named after
//! is broken. [`behaviour_suite!`](crate::behaviour_suite) turns the cases
//! into `#[tokio::test]`s for one store; the memory store runs them in this
//! crate's tests, the Redis stores in the end-to-end tests.
//!
//! Every case uses its own namespace, so that stores shared between cases
//! (one Redis server) never mix their counters.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use sluice_crds::RateLimitPolicy;

use crate::{
    Limiter,
    clock::ManualClock,
    decision::{Decision, DenyReason, LimitState},
    policy::Request,
    store::Store,
};

/// A start time aligned to every window the cases use (1s to 1h).
pub const T0: u64 = 1_800_000_000_000;

/// A limiter on a store made for one case, with the clock that drives it.
pub struct Harness<S> {
    /// The limiter under test.
    pub limiter: Arc<Limiter<S>>,
    /// The clock the store reads.
    pub clock: ManualClock,
    /// The case's policy key, `<namespace>/p`.
    pub policy: String,
    namespace: String,
}

impl<S: Store> Harness<S> {
    /// A harness serving one policy `p` with `limits` (YAML list items).
    pub async fn new<F, Fut>(make: F, limits: &str) -> Self
    where
        F: FnOnce(ManualClock) -> Fut,
        Fut: Future<Output = S>,
    {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("t{}-{unique}", std::process::id());
        let clock = ManualClock::new(T0);
        let store = make(clock.clone()).await;
        let limiter = Arc::new(Limiter::new(vec![policy(&namespace, limits)], store));
        let policy = format!("{namespace}/p");
        Self {
            limiter,
            clock,
            policy,
            namespace,
        }
    }

    /// Replaces the case's policy with one holding `limits`.
    pub fn set_limits(&self, limits: &str) {
        self.limiter
            .replace_policies(vec![policy(&self.namespace, limits)]);
    }

    /// Checks a request of `cost` for `user` on `endpoint`.
    pub async fn check(&self, user: Option<&str>, endpoint: Option<&str>, cost: u64) -> Decision {
        let request = Request {
            user,
            endpoint,
            cost,
        };
        let (_, decision) = self
            .limiter
            .check(Some(&self.policy), &request)
            .await
            .expect("check decided");
        decision
    }

    /// Checks one unit for `user`, no endpoint.
    pub async fn hit(&self, user: &str) -> Decision {
        self.check(Some(user), None, 1).await
    }

    /// Counts how many of `n` one-unit checks for `user` are admitted.
    pub async fn admitted(&self, user: Option<&str>, endpoint: Option<&str>, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            admitted += usize::from(self.check(user, endpoint, 1).await.allowed);
        }
        admitted
    }

    /// The time the store reads, in ms since the epoch.
    pub fn clock_now(&self) -> u64 {
        use crate::clock::Clock;
        self.clock.now_ms()
    }

    /// Sets the multiplier of the case's policy.
    pub fn set_multiplier(&self, value: f64) {
        let policies = self.limiter.policies();
        policies
            .resolve(Some(&self.policy))
            .expect("policy served")
            .multiplier
            .set(value);
    }
}

fn policy(namespace: &str, limits: &str) -> RateLimitPolicy {
    let text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\n\
         metadata: {{name: p, namespace: {namespace}}}\nspec:\n  limits:\n{limits}"
    );
    let mut policies =
        sluice_crds::parse_policies(&text, "behaviour suite").expect("valid test policy");
    policies.remove(0)
}

/// The state of the limit named `name` in a decision.
pub fn limit<'d>(decision: &'d Decision, name: &str) -> &'d LimitState {
    let found = decision.limits.iter().find(|l| l.name.as_ref() == name);
    found.unwrap_or_else(|| panic!("limit {name} applied"))
}

const PER_USER_5: &str = "    - {name: per-user, requests: 5, window: 1m, by: [user]}\n";

/// A limit admits exactly its size in one window, then denies.
pub async fn admits_up_to_the_limit_then_denies<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, PER_USER_5).await;
    for expected in (0..5).rev() {
        let d = h.hit("alice").await;
        assert!(d.allowed);
        assert_eq!(d.deciding_limit().unwrap().remaining, expected);
    }
    let denied = h.hit("alice").await;
    assert!(!denied.allowed);
    assert_eq!(denied.reason, Some(DenyReason::LimitExhausted));
    assert_eq!(denied.deciding_limit().unwrap().remaining, 0);
}

/// A request denied by one limit takes nothing from the others.
pub async fn denied_request_consumes_no_quota<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let limits = "    - {name: global, requests: 10, window: 1m}\n    - {name: per-user, requests: 2, window: 1m, by: [user]}\n";
    let h = Harness::new(make, limits).await;
    assert_eq!(h.admitted(Some("alice"), None, 5).await, 2);
    let probe = h.check(Some("bob"), None, 0).await;
    assert_eq!(
        limit(&probe, "global").remaining,
        8,
        "three denied checks consumed global quota"
    );
    assert_eq!(limit(&probe, "per-user").remaining, 2);
}

/// Global, per-user and endpoint-per-user limits combine: whichever is
/// exhausted denies, and the others are untouched by the denial.
pub async fn granularities_combine_and_the_exhausted_one_decides<
    S: Store,
    Fut: Future<Output = S>,
>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let limits = "    - {name: global, requests: 20, window: 1m}\n    - {name: per-user, requests: 6, window: 1m, by: [user]}\n    - {name: search, requests: 3, window: 1s, by: [user], match: {endpoint: GET /search}}\n";
    let h = Harness::new(make, limits).await;
    let (alice, search) = (Some("alice"), Some("GET /search"));
    assert_eq!(h.admitted(alice, search, 3).await, 3);
    let denied = h.check(alice, search, 1).await;
    assert_eq!(denied.deciding_limit().unwrap().name.as_ref(), "search");
    assert_eq!(limit(&denied, "per-user").remaining, 3);
    assert_eq!(limit(&denied, "global").remaining, 17);

    assert_eq!(h.admitted(alice, Some("GET /home"), 5).await, 3);
    let denied = h.check(alice, Some("GET /home"), 1).await;
    assert_eq!(denied.deciding_limit().unwrap().name.as_ref(), "per-user");
    assert_eq!(limit(&denied, "global").remaining, 14);

    assert_eq!(
        h.admitted(Some("bob"), search, 3).await,
        3,
        "bob has his own counters"
    );
    assert_eq!(h.admitted(None, None, 20).await, 11);
    let denied = h.check(Some("carol"), None, 1).await;
    assert_eq!(denied.deciding_limit().unwrap().name.as_ref(), "global");
    assert_eq!(
        limit(&denied, "per-user").remaining,
        6,
        "carol's own limit untouched"
    );
}

/// At a window boundary the sliding estimate blocks the classic double
/// burst: 10 requests at 0:59.9 and 10 at 1:00.1 admit at most 10 (give or
/// take one for rounding) in the trailing minute.
pub async fn sliding_window_blocks_the_double_burst_at_a_boundary<
    S: Store,
    Fut: Future<Output = S>,
>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, "    - {name: l, requests: 10, window: 1m}\n").await;
    h.clock.advance(59_900);
    let first = h.admitted(None, None, 10).await;
    h.clock.advance(200);
    let second = h.admitted(None, None, 10).await;
    assert_eq!(first, 10);
    assert!(
        first + second <= 11,
        "admitted {first} + {second} within 200ms"
    );
}

/// Waiting exactly `Retry-After` (whole seconds, rounded up) after a denial
/// is enough when nothing else arrived.
pub async fn retry_after_is_enough_when_nothing_else_arrives<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(
        make,
        "    - {name: l, requests: 3, window: 10s, by: [user]}\n",
    )
    .await;
    h.clock.advance(4_321);
    assert_eq!(h.admitted(Some("u"), None, 3).await, 3);
    let denied = h.hit("u").await;
    let wait_ms = denied.retry_after_ms().expect("a wait");
    h.clock.advance(wait_ms - 1);
    assert!(
        !h.hit("u").await.allowed,
        "retry_after_ms is the first instant, not earlier"
    );
    h.clock
        .advance(wait_ms.div_ceil(1000) * 1000 - (wait_ms - 1));
    assert!(h.hit("u").await.allowed);
}

/// Lowering or raising a limit takes effect from the next check, and the
/// counts already made still count.
pub async fn changing_a_limit_takes_effect_from_the_next_check<
    S: Store,
    Fut: Future<Output = S>,
>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, "    - {name: l, requests: 10, window: 1m}\n").await;
    assert_eq!(h.admitted(None, None, 5).await, 5);
    h.set_limits("    - {name: l, requests: 4, window: 1m}\n");
    assert!(!h.check(None, None, 1).await.allowed);
    h.set_limits("    - {name: l, requests: 8, window: 1m}\n");
    assert_eq!(h.admitted(None, None, 5).await, 3);
}

/// A cost of zero reports the limits and consumes nothing.
pub async fn zero_cost_check_consumes_nothing<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, PER_USER_5).await;
    h.hit("u").await;
    for _ in 0..3 {
        let look = h.check(Some("u"), None, 0).await;
        assert!(look.allowed);
        assert_eq!(look.deciding_limit().unwrap().remaining, 4);
    }
}

/// A cost larger than a limit can ever hold is denied with its own reason,
/// never wraps around, and consumes nothing.
pub async fn cost_that_can_never_fit_is_denied_with_a_reason<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, PER_USER_5).await;
    let d = h.check(Some("u"), None, 6).await;
    assert!(!d.allowed);
    assert_eq!(d.reason, Some(DenyReason::CostExceedsLimit));
    assert_eq!(d.retry_after_ms(), None);
    let d = h.check(Some("u"), None, 1_000_000_000).await;
    assert_eq!(d.reason, Some(DenyReason::CostExceedsLimit));
    assert_eq!(
        h.check(Some("u"), None, 5)
            .await
            .deciding_limit()
            .unwrap()
            .remaining,
        0
    );
}

/// Every distinct user id, however long or strange, has its own counter.
pub async fn every_user_id_gets_its_own_counter<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, PER_USER_5).await;
    let long = "x".repeat(10 * 1024);
    let users = [
        long.as_str(),
        "Zoë",
        "用户",
        "a\u{0}b",
        "a\nb",
        "a b",
        "ab",
        "a",
        "",
    ];
    for (i, user) in users.iter().enumerate() {
        assert_eq!(
            h.admitted(Some(user), None, 6).await,
            5,
            "user #{i} got its own 5"
        );
    }
    let long_but_one = "x".repeat(10 * 1024 - 1);
    assert_eq!(h.admitted(Some(&long_but_one), None, 1).await, 1);
}

/// The multiplier scales every limit of the policy, never below one.
pub async fn multiplier_scales_every_limit<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let limits = "    - {name: a, requests: 10, window: 1m}\n    - {name: b, requests: 3, window: 1m, by: [user]}\n";
    let h = Harness::new(make, limits).await;
    h.set_multiplier(0.5);
    let d = h.hit("u").await;
    assert_eq!((limit(&d, "a").effective, limit(&d, "b").effective), (5, 1));
    assert_eq!(h.admitted(Some("v"), None, 3).await, 1);
    h.set_multiplier(0.01);
    assert_eq!(limit(&h.hit("w").await, "a").effective, 1);
}

/// A counter idle for two whole windows holds nothing.
pub async fn idle_counters_start_over_after_two_windows<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, PER_USER_5).await;
    assert_eq!(h.admitted(Some("u"), None, 6).await, 5);
    h.clock.advance(60_000);
    assert!(
        !h.hit("u").await.allowed,
        "the previous window still weighs at its start"
    );
    h.clock.advance(60_000);
    assert_eq!(h.admitted(Some("u"), None, 6).await, 5);
}

/// Checks racing on one counter admit exactly the limit.
pub async fn concurrent_checks_admit_exactly_the_limit<S: Store, Fut: Future<Output = S>>(
    make: impl FnOnce(ManualClock) -> Fut,
) {
    let h = Harness::new(make, "    - {name: l, requests: 50, window: 1m}\n").await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (limiter, policy) = (h.limiter.clone(), h.policy.clone());
            tokio::spawn(async move {
                let request = Request {
                    user: None,
                    endpoint: None,
                    cost: 1,
                };
                limiter
                    .check(Some(&policy), &request)
                    .await
                    .expect("decided")
                    .1
                    .allowed
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.expect("task ran"));
    }
    assert_eq!(admitted, 50);
}

/// Expands to one `#[tokio::test]` per behaviour case, each calling `$make`
/// (a function from [`ManualClock`] to a future of the store) for its store.
#[macro_export]
macro_rules! behaviour_suite {
    ($make:path) => {
        $crate::behaviour_suite!(@cases $make;
            admits_up_to_the_limit_then_denies,
            denied_request_consumes_no_quota,
            granularities_combine_and_the_exhausted_one_decides,
            sliding_window_blocks_the_double_burst_at_a_boundary,
            retry_after_is_enough_when_nothing_else_arrives,
            changing_a_limit_takes_effect_from_the_next_check,
            zero_cost_check_consumes_nothing,
            cost_that_can_never_fit_is_denied_with_a_reason,
            every_user_id_gets_its_own_counter,
            multiplier_scales_every_limit,
            idle_counters_start_over_after_two_windows,
            concurrent_checks_admit_exactly_the_limit,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::behaviour::$case($make).await;
            }
        )*
    };
}
