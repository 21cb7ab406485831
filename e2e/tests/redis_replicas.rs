//! Several real `sluice-limiter` processes sharing counters in a real Redis
//! (standalone and a three-master cluster): a limit holds whichever replica
//! a request reaches.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures::future::join_all;
use serde_json::{Value, json};
use sluice_e2e::{LimiterProcess, RedisCluster, RedisServer, eventually};

/// Where the replicas keep their counters.
enum Backend {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    fn standalone() -> Self {
        Self::Standalone(RedisServer::start())
    }

    fn cluster() -> Self {
        Self::Cluster(RedisCluster::start(3, 0))
    }

    fn args(&self) -> Vec<String> {
        let (url, cluster) = match self {
            Self::Standalone(s) => (s.url(), false),
            Self::Cluster(c) => (c.url(), true),
        };
        // These tests are about accuracy: a generous timeout keeps a loaded
        // two-core machine from turning slow answers into 503s.
        let mut args = vec![
            "--store".into(),
            "redis".into(),
            "--redis-url".into(),
            url,
            "--redis-timeout".into(),
            "2s".into(),
        ];
        if cluster {
            args.push("--redis-cluster".into());
        }
        args
    }

    /// Redis server time in ms.
    fn now_ms(&self) -> u64 {
        let node = match self {
            Self::Standalone(s) => s,
            Self::Cluster(c) => &c.nodes[0],
        };
        let time = node.cli(&["TIME"]);
        let mut parts = time.lines().map(|l| l.trim().parse::<u64>().unwrap_or(0));
        parts.next().unwrap_or(0) * 1000 + parts.next().unwrap_or(0) / 1000
    }

    /// Waits, if needed, until at least `margin` is left before the current
    /// window of `window_ms` ends, so that a short test stays in one window.
    async fn away_from_window_edge(&self, window_ms: u64, margin: Duration) {
        let left = window_ms - self.now_ms() % window_ms;
        if left < margin.as_millis() as u64 {
            tokio::time::sleep(Duration::from_millis(left + 50)).await;
        }
    }

    fn nodes(&self) -> Vec<&RedisServer> {
        match self {
            Self::Standalone(s) => vec![s],
            Self::Cluster(c) => c.nodes.iter().collect(),
        }
    }
}

fn policy_file(dir: &tempfile::TempDir, limits: &str) -> PathBuf {
    let path = dir.path().join("policy.yaml");
    let text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: shared, namespace: e2e}}\nspec:\n  limits:\n{limits}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn replicas(backend: &Backend, policy: &Path, n: usize) -> Vec<LimiterProcess> {
    let args = backend.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    join_all((0..n).map(|_| LimiterProcess::start(policy, &args))).await
}

/// Sends `bodies`, all at once, round-robin over `limiters`; returns how
/// many were admitted. Anything but 200 or 429 fails the test.
async fn admitted(limiters: &[LimiterProcess], bodies: Vec<Value>) -> usize {
    let calls = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| limiters[i % limiters.len()].check(body));
    let replies = join_all(calls).await;
    for reply in &replies {
        assert!(
            reply.status == 200 || reply.status == 429,
            "unexpected {reply:?}"
        );
    }
    replies.iter().filter(|r| r.status == 200).count()
}

const HOUR_GLOBAL_100: &str = "    - {name: global, requests: 100, window: 1h}\n";
const HOUR_PER_USER_20: &str = "    - {name: per-user, requests: 20, window: 1h, by: [user]}\n";

async fn exactly_n_of_10n_simultaneous_requests(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, HOUR_GLOBAL_100);
    let limiters = replicas(&backend, &policy, 3).await;
    backend
        .away_from_window_edge(3_600_000, Duration::from_secs(30))
        .await;
    let bodies = (0..1000)
        .map(|i| json!({"user": format!("u{i}")}))
        .collect();
    assert_eq!(admitted(&limiters, bodies).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_redis_admit_exactly_n_of_10n_simultaneous_requests() {
    exactly_n_of_10n_simultaneous_requests(Backend::standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_a_cluster_admit_exactly_n_of_10n_simultaneous_requests() {
    exactly_n_of_10n_simultaneous_requests(Backend::cluster()).await;
}

async fn per_user_limits_hold_across_replicas(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        &format!("{HOUR_GLOBAL_100}{HOUR_PER_USER_20}").replace("100", "100000"),
    );
    let limiters = replicas(&backend, &policy, 3).await;
    backend
        .away_from_window_edge(3_600_000, Duration::from_secs(30))
        .await;
    let users = ["ann", "bo", "cy", "dee", "eve"];
    let bodies = (0..1000)
        .map(|i| json!({"user": users[i % users.len()]}))
        .collect();
    assert_eq!(admitted(&limiters, bodies).await, 5 * 20);
    for user in users {
        let probe = limiters[0].check(json!({"user": user, "cost": 0})).await;
        assert_eq!(probe.body["remaining"], 0, "{user} used exactly 20");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_user_limits_hold_across_replicas_on_redis() {
    per_user_limits_hold_across_replicas(Backend::standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_user_limits_hold_across_replicas_on_a_cluster() {
    per_user_limits_hold_across_replicas(Backend::cluster()).await;
}

/// Under steady overload, spread over three replicas, the replicas together
/// admit what the limit allows: at least 95 % of it, and never more than
/// one window's worth beyond it.
async fn saturated_replicas_admit_the_limit_not_less(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "    - {name: global, requests: 100, window: 1s}\n");
    let limiters = replicas(&backend, &policy, 3).await;
    backend
        .away_from_window_edge(1000, Duration::from_millis(900))
        .await;
    let started = Instant::now();
    let mut total = 0;
    // About 300 requests per second, in bursts of 30 every 100 ms, for 4 s.
    for tick in 0..40u32 {
        let due = started + Duration::from_millis(100) * tick;
        tokio::time::sleep_until(due.into()).await;
        total += admitted(&limiters, vec![json!({}); 30]).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let limit = 100.0 * seconds;
    assert!(
        total as f64 >= 0.95 * limit,
        "admitted {total} in {seconds:.2}s: under 95 % of {limit}"
    );
    assert!(
        total as f64 <= limit + 100.0,
        "admitted {total} in {seconds:.2}s: over {limit} + one window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturated_replicas_on_redis_admit_at_least_95_percent_of_the_limit() {
    saturated_replicas_admit_the_limit_not_less(Backend::standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturated_replicas_on_a_cluster_admit_at_least_95_percent_of_the_limit() {
    saturated_replicas_admit_the_limit_not_less(Backend::cluster()).await;
}

/// Replicas whose clocks are off by hours and a day (libfaketime) share
/// counters exactly as if their clocks agreed: windows come from Redis time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limiter_clock_offsets_do_not_change_decisions() {
    let backend = Backend::standalone();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "    - {name: global, requests: 30, window: 1m}\n");
    let args = backend.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let skewed = |offset: &'static str| {
        let policy = policy.clone();
        let args = args.clone();
        async move {
            let env = [
                (
                    "LD_PRELOAD",
                    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                ),
                ("FAKETIME", offset),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ];
            LimiterProcess::start_with_env(&policy, &args, &env).await
        }
    };
    let limiters = vec![
        LimiterProcess::start(&policy, &args).await,
        skewed("+3h").await,
        skewed("-1d").await,
    ];
    let year_ahead = skewed("+400d").await;
    assert!(
        !year_ahead
            .process
            .output()
            .contains(&format!("{}-", current_year())),
        "faketime did not reach the limiter: its log still shows this year"
    );
    let mut limiters = limiters;
    limiters.push(year_ahead);
    backend
        .away_from_window_edge(60_000, Duration::from_secs(10))
        .await;
    assert_eq!(admitted(&limiters, vec![json!({}); 120]).await, 30);
}

fn current_year() -> String {
    let output = std::process::Command::new("date")
        .arg("+%Y")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_started_after_counters_exist_sees_them() {
    let backend = Backend::standalone();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, HOUR_PER_USER_20);
    let first = replicas(&backend, &policy, 2).await;
    backend
        .away_from_window_edge(3_600_000, Duration::from_secs(30))
        .await;
    assert_eq!(admitted(&first, vec![json!({"user": "ann"}); 20]).await, 20);
    let fresh = replicas(&backend, &policy, 1).await;
    let reply = fresh[0].check(json!({"user": "ann"})).await;
    assert_eq!(
        reply.status, 429,
        "the fresh replica's first request for ann is denied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_continue_after_redis_restarts_without_persistence() {
    let mut backend = Backend::standalone();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, HOUR_PER_USER_20);
    let limiters = replicas(&backend, &policy, 1).await;
    assert_eq!(limiters[0].check(json!({"user": "ann"})).await.status, 200);
    let Backend::Standalone(server) = &mut backend else {
        unreachable!()
    };
    server.restart();
    assert_eq!(
        server
            .cli(&[
                "SCRIPT",
                "EXISTS",
                "0000000000000000000000000000000000000000"
            ])
            .trim(),
        "0"
    );
    eventually(
        Duration::from_secs(10),
        "checks to succeed again",
        || async { limiters[0].check(json!({"user": "bo"})).await.status == 200 },
    )
    .await;
    let after = limiters[0].check(json!({"user": "ann", "cost": 0})).await;
    assert_eq!(
        after.body["remaining"], 20,
        "counters did not survive a restart without persistence"
    );
}

async fn no_key_without_expiry(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let limits = "    - {name: global, requests: 100000, window: 1s}\n    - {name: per-user, requests: 5, window: 1m, by: [user]}\n    - {name: search, requests: 2, window: 10s, by: [user, endpoint], match: {endpoint: 'GET /s*'}}\n";
    let policy = policy_file(&dir, limits);
    let limiters = replicas(&backend, &policy, 2).await;
    let bodies = (0..300)
        .map(|i| json!({"user": format!("u{}", i % 40), "endpoint": format!("GET /s{}", i % 3)}))
        .collect();
    admitted(&limiters, bodies).await;
    let mut keys = 0;
    for node in backend.nodes() {
        for (key, ttl) in node.sluice_key_ttls() {
            // -1: no expiry. -2: the key expired between the scan that
            // listed it and the read of its TTL (the global window is one
            // second), which shows it had one.
            assert!(ttl > 0 || ttl == -2, "{key} has no expiry ({ttl})");
            keys += 1;
        }
    }
    assert!(keys > 40, "only {keys} keys found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_sluice_key_in_redis_is_left_without_an_expiry() {
    no_key_without_expiry(Backend::standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_sluice_key_in_a_cluster_is_left_without_an_expiry() {
    no_key_without_expiry(Backend::cluster()).await;
}

/// A user+endpoint limit whose counter lives in another slot than the
/// user's own counter: the check spans slots, admits exactly the limit, and
/// a denial leaves nothing consumed in the other slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_spanning_cluster_slots_admits_exactly_and_refunds_on_deny() {
    let backend = Backend::cluster();
    let dir = tempfile::tempdir().unwrap();
    let limits = "    - {name: per-user, requests: 10, window: 1h, by: [user]}\n    - {name: search, requests: 3, window: 1h, by: [user, endpoint], match: {endpoint: GET /search}}\n";
    let policy = policy_file(&dir, limits);
    let user = user_with_counters_in_two_slots(&policy);
    let limiters = replicas(&backend, &policy, 3).await;
    backend
        .away_from_window_edge(3_600_000, Duration::from_secs(30))
        .await;
    let search = json!({"user": user, "endpoint": "GET /search"});
    assert_eq!(admitted(&limiters, vec![search; 9]).await, 3);
    let probe = limiters[0].check(json!({"user": user, "cost": 0})).await;
    assert_eq!(
        probe.body["remaining"], 7,
        "six denied searches took nothing from per-user"
    );
}

/// A user id whose `per-user` and `search` counters hash to different
/// cluster slots, found by computing their real Redis keys.
fn user_with_counters_in_two_slots(policy: &Path) -> String {
    use sluice_limiter::{
        policy::{CompiledPolicy, Request},
        store::redis::{counter_key, slot},
    };
    let text = std::fs::read_to_string(policy).unwrap();
    let compiled =
        CompiledPolicy::compile(sluice_crds::parse_policies(&text, "t").unwrap().remove(0));
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|user| {
            let request = Request {
                user: Some(user),
                endpoint: Some("GET /search"),
                cost: 1,
            };
            let slots: Vec<u16> = compiled
                .applicable(&request)
                .map(|(limit, digest)| slot(&counter_key(&limit.counter_prefix, &digest)))
                .collect();
            slots.len() == 2 && slots[0] != slots[1]
        })
        .expect("some user splits")
}

/// Setting the published multiplier to 0.5 halves every effective limit on
/// every replica within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multiplier_in_redis_halves_limits_on_every_replica_within_a_second() {
    let backend = Backend::standalone();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        "    - {name: global, requests: 100, window: 1m}\n    - {name: per-user, requests: 10, window: 1m, by: [user]}\n",
    );
    let limiters = replicas(&backend, &policy, 3).await;
    let Backend::Standalone(server) = &backend else {
        unreachable!()
    };
    let value = format!("0.5 {}", backend.now_ms());
    server.cli(&["SET", "sluice:{e2e/shared}:multiplier", &value]);
    let set_at = Instant::now();
    for limiter in &limiters {
        eventually(
            Duration::from_secs(5),
            "the multiplier to reach a replica",
            || async {
                let reply = limiter.check(json!({"user": "u", "cost": 0})).await;
                reply.body["multiplier"] == 0.5 && reply.body["limit"]["effective"] == 5
            },
        )
        .await;
    }
    let took = set_at.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let policies = limiters[0].get("/v1/policies").await.body;
    let effective: Vec<&Value> = policies["policies"][0]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["effective"])
        .collect();
    assert_eq!(effective, [&json!(50), &json!(5)]);
}

/// A published value that is not a multiplier counts as 1.0, and the
/// limiter says so once in its log, not at every sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_multiplier_counts_as_one_and_is_logged_once() {
    let backend = Backend::standalone();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "    - {name: global, requests: 100, window: 1m}\n");
    let limiters = replicas(&backend, &policy, 1).await;
    let Backend::Standalone(server) = &backend else {
        unreachable!()
    };
    server.cli(&["SET", "sluice:{e2e/shared}:multiplier", "abc"]);
    let limiter = &limiters[0];
    let warning = "Published multiplier is not";
    eventually(Duration::from_secs(5), "a warning in the log", || async {
        limiter.process.output().contains(warning)
    })
    .await;
    // Three more syncs.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let reply = limiter.check(json!({"cost": 0})).await;
    assert_eq!(reply.body["multiplier"], 1.0, "{reply:?}");
    assert_eq!(limiter.process.output().matches(warning).count(), 1);
}
