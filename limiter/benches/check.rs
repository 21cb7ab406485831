//! What one check costs inside the process: `Limiter::check` against three
//! limits on the memory store, beside baselines a reader can picture (the
//! three blake3 digests that name the counters, and one update of a map
//! behind a mutex), so that results read as "a check costs N× the baseline".
//!
//! Every check is by one of 10,000 users on `GET /search`, so it counts
//! against all three limits of `policy.yaml`; the quotas are large enough
//! that every check is admitted and counted.
//!
//! Run with `cargo bench -p sluice-limiter --bench check`;
//! `scripts/bench-check.sh` runs it and prints the ratios.

use std::{
    collections::HashMap,
    hint::black_box,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Request, StatusCode},
    routing::post,
};
use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;
use sluice_limiter::{
    Limiter,
    http::{AppState, headers, router, serve::ServeLimits},
    metrics::Metrics,
    policy::{self, CounterKey},
    store::{CounterSpec, MemoryStore, MemoryStoreConfig},
};
use support::{POLICY, ready};
use tower::ServiceExt;

mod support;

const USERS: usize = 10_000;
const ENDPOINT: &str = "GET /search";

fn limiter() -> Limiter<MemoryStore> {
    let policies = sluice_crds::parse_policies(POLICY, "policy.yaml").expect("valid policy");
    Limiter::new(policies, MemoryStore::new(MemoryStoreConfig::default()))
}

fn users() -> Vec<String> {
    (0..USERS).map(|i| format!("user-{i:05}")).collect()
}

fn request(user: &str) -> policy::Request<'_> {
    policy::Request {
        user: Some(user),
        endpoint: Some(ENDPOINT),
        cost: 1,
    }
}

/// The three counters each user's check uses, as the engine names them.
fn counter_specs(limiter: &Limiter<MemoryStore>, users: &[String]) -> Vec<Vec<CounterSpec>> {
    let policies = limiter.policies();
    let served = policies.resolve(None).expect("one policy");
    let spec = |user: &String| {
        let request = request(user);
        let applicable = served.policy.applicable(&request);
        let specs = applicable.map(|(limit, key)| CounterSpec {
            key,
            prefix: limit.counter_prefix.clone(),
            window_ms: limit.window_ms,
            limit: limit.requests,
        });
        specs.collect()
    };
    users.iter().map(spec).collect()
}

/// Checks by users `first, first + step, …` in turn, forever.
fn check_loop<'a>(
    limiter: &'a Limiter<MemoryStore>,
    users: &'a [String],
    first: usize,
    step: usize,
) -> impl FnMut() -> bool + 'a {
    let mut next = first;
    move || {
        let request = request(&users[next]);
        next = (next + step) % users.len();
        let (_, decision) = ready(limiter.check(None, &request)).expect("decided");
        decision.allowed
    }
}

fn check(c: &mut Criterion) {
    let limiter = limiter();
    let users = users();
    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(1));
    group.bench_function("limiter_three_limits", |b| {
        let mut check = check_loop(&limiter, &users, 0, 1);
        b.iter(|| black_box(check()));
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("limiter_three_limits_2_threads", |b| {
        b.iter_custom(|iters| in_two_threads(iters, &limiter, &users));
    });
    group.finish();
}

/// Two threads each decide `iters` checks, by disjoint halves of the users
/// but on the same `global` counter; the time is the wall time of both.
fn in_two_threads(iters: u64, limiter: &Limiter<MemoryStore>, users: &[String]) -> Duration {
    let started = Instant::now();
    thread::scope(|scope| {
        for first in 0..2 {
            scope.spawn(move || {
                let mut check = check_loop(limiter, users, first, 2);
                for _ in 0..iters {
                    black_box(check());
                }
            });
        }
    });
    started.elapsed()
}

fn baseline(c: &mut Criterion) {
    let limiter = limiter();
    let users = users();
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("three_counter_keys", |b| {
        three_counter_keys(b, &limiter, &users)
    });
    group.bench_function("mutex_map_update", |b| {
        mutex_map_update(b, &limiter, &users)
    });
    group.finish();
}

/// The three blake3 digests of a check, and nothing else.
fn three_counter_keys(b: &mut Bencher, limiter: &Limiter<MemoryStore>, users: &[String]) {
    let policies = limiter.policies();
    let limits = &policies.resolve(None).expect("one policy").policy.limits;
    let mut next = 0;
    b.iter(|| {
        let request = request(&users[next]);
        next = (next + 1) % users.len();
        let keys = [0, 1, 2].map(|i| limits[i].counter_key(&request));
        black_box(keys)
    });
}

/// One uncontended increment of a `u64` in a std `HashMap` behind a
/// `parking_lot::Mutex`, keyed by a counter key: the smallest thing a
/// shared in-memory counter can be.
fn mutex_map_update(b: &mut Bencher, limiter: &Limiter<MemoryStore>, users: &[String]) {
    let keys: Vec<CounterKey> = counter_specs(limiter, users)
        .iter()
        .map(|specs| specs[1].key)
        .collect();
    let map = Mutex::new(HashMap::<CounterKey, u64>::new());
    let mut next = 0;
    b.iter(|| {
        let key = keys[next];
        next = (next + 1) % keys.len();
        *map.lock().entry(key).or_default() += 1;
    });
}

/// The parts of a check, to see where its time goes.
fn parts(c: &mut Criterion) {
    let limiter = limiter();
    let users = users();
    let specs = counter_specs(&limiter, &users);
    let mut group = c.benchmark_group("parts");
    group.throughput(Throughput::Elements(1));
    group.bench_function("store_three_counters", |b| {
        let mut next = 0;
        b.iter(|| {
            let counters = &specs[next];
            next = (next + 1) % specs.len();
            black_box(limiter.store().check_now(counters, 1))
        });
    });
    let (_, decision) = ready(limiter.check(None, &request(&users[0]))).expect("decided");
    group.bench_function("rate_limit_headers", |b| {
        // Reused, as a response's map already holds its other headers.
        let mut headers = HeaderMap::new();
        b.iter(|| {
            headers.clear();
            headers::insert(&mut headers, &decision);
            black_box(&headers);
        });
    });
    group.finish();
}

/// One `POST /v1/check` through the whole router, without a socket: the
/// limiter's handler (parsing, the check, metrics, the JSON answer and its
/// headers) beside an axum handler that only reads the body and answers
/// `200`, the same pair `scripts/bench-http.sh` drives over HTTP.
fn whole_request(c: &mut Criterion) {
    let limiter = Arc::new(limiter());
    let bodies: Vec<Bytes> = users()
        .iter()
        .map(|user| format!(r#"{{"user":"{user}","endpoint":"{ENDPOINT}"}}"#).into())
        .collect();
    let state = Arc::new(AppState::new(
        limiter,
        Arc::new(Metrics::new()),
        64 * 1024,
        &ServeLimits::default(),
    ));
    let bare = Router::new().route(
        "/v1/check",
        post(|body: Bytes| async {
            black_box(body);
            StatusCode::OK
        }),
    );
    // The handler bounds the time a body may take with a tokio timer, which
    // needs a runtime to exist; the futures are still polled once, by
    // `ready`, so the runtime's scheduler is not measured.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _context = runtime.enter();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_axum", |b| serve_checks(b, &bare, &bodies));
    group.bench_function("limiter_three_limits", |b| {
        serve_checks(b, &router(state.clone()), &bodies)
    });
    group.finish();
}

/// Sends `router` one check after another, by each user in turn.
fn serve_checks(b: &mut Bencher, router: &Router, bodies: &[Bytes]) {
    let mut next = 0;
    b.iter(|| {
        let body = Body::from(bodies[next].clone());
        next = (next + 1) % bodies.len();
        let request = Request::post("/v1/check")
            .body(body)
            .expect("valid request");
        let response = ready(router.clone().oneshot(request)).expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        black_box(response)
    });
}

fn config() -> Criterion {
    // Short runs: the figures are read as ratios measured side by side, and
    // the machines these run on are small and shared.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = baseline, check, parts, whole_request
}
criterion_main!(benches);
