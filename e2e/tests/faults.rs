//! Real limiters under steady load while their Redis is killed, hung,
//! brought back or failed over, and while clients misbehave: answers stay
//! fast and sensible, and exact distributed counting comes back on its own.
//!
//! Every scenario drives a bounded number of client tasks for a few seconds
//! per phase (before, during and after the fault), records every check's
//! latency and status, asserts the rule it is named after, and prints its
//! figures as `FAULT-FIGURES` lines, which `scripts/bench-faults.sh`
//! collects into `docs/benchmarks.md`.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_e2e::{
    Figures, LimiterProcess, Load, RedisCluster, RedisServer, Sample, eventually, metric_value,
    rss_kib,
};
use tokio::sync::Mutex;

// The helpers live beside this file, in `faults/`, so that cargo does not
// take them for test targets of their own.
#[path = "faults/hostile.rs"]
mod hostile;
#[path = "faults/outage.rs"]
mod outage;

use outage::*;

/// Scenarios run one at a time: they measure latency on a shared two-core
/// machine, and two of them at once would measure each other.
static SERIAL: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_local_mode_gives_no_5xx_and_fast_answers() {
    assert_served_through(Mode::Local, Fault::Killed, &[200, 429]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_allow_mode_gives_no_5xx_and_fast_answers() {
    assert_served_through(Mode::Allow, Fault::Killed, &[200]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_answers_503_never_429_while_redis_is_down() {
    assert_refused_through(Fault::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_under_load_local_mode_gives_no_5xx_and_fast_answers() {
    assert_served_through(Mode::Local, Fault::Hung, &[200, 429]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_under_load_allow_mode_gives_no_5xx_and_fast_answers() {
    assert_served_through(Mode::Allow, Fault::Hung, &[200]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_answers_503_never_429_while_redis_hangs() {
    assert_refused_through(Fault::Hung).await;
}

/// Under `mode` (local or allow), `fault` costs no 5xx: every check while
/// Redis is gone gets one of `statuses` fast, marked degraded, with memory
/// flat, and the replica stays ready.
async fn assert_served_through(mode: Mode, fault: Fault, statuses: &[u16]) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outage = Outage::run(mode, fault, 1, dir.path()).await;
    outage.assert_no_errors();
    outage.assert_fast_degraded_answers(statuses);
    outage.assert_memory_flat();
    outage.assert_reported(mode);
    assert_eq!(outage.ready_during, [200], "/readyz while degraded");
}

/// Under `deny`, every check while Redis is gone gets a fast 503, never a
/// 429, and the replica says it is not ready.
async fn assert_refused_through(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outage = Outage::run(Mode::Deny, fault, 1, dir.path()).await;
    outage.assert_fast_degraded_answers(&[503]);
    outage.assert_memory_flat();
    outage.assert_reported(Mode::Deny);
    // Every policy refuses checks meanwhile: the replica says it cannot
    // serve, so that traffic goes to one that can.
    assert_eq!(
        outage.ready_during,
        [503],
        "/readyz with only deny policies"
    );
    assert_no_errors_outside_the_outage(&outage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiters_return_to_redis_within_2s_after_restart() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outage = Outage::run(Mode::Local, Fault::Killed, 2, dir.path()).await;
    outage.assert_returned_within(Duration::from_secs(2));
    assert_counting_is_shared(&outage.limiters, "fresh", 0).await;
    assert!(
        !outage.redis.sluice_key_ttls().is_empty(),
        "the restarted Redis holds counters again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiters_return_to_redis_within_2s_after_sigcont_and_counters_continue() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::start(Mode::Local, 2, dir.path()).await;
    for _ in 0..5 {
        assert_eq!(
            setup.limiters[0]
                .check(json!({"user": "kept"}))
                .await
                .status,
            200
        );
    }
    let outage = setup.outage(Fault::Hung).await;
    outage.assert_returned_within(Duration::from_secs(2));
    assert_counting_is_shared(&outage.limiters, "kept", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_started_while_redis_is_down_serves_degraded_then_counts_in_redis() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    redis.kill();
    let policy = policy_file(dir.path(), Mode::Local, ROOMY_PER_USER);
    let limiters = limiters(&policy, &redis.url(), 1, &[]).await;
    let limiter = &limiters[0];

    let started = Instant::now();
    let reply = limiter.check(json!({"user": "early"})).await;
    assert_eq!(
        (reply.status, &reply.body["degraded"]),
        (200, &json!(true)),
        "{reply:?}"
    );
    assert!(
        started.elapsed() < FAST,
        "the first check waited {:?}",
        started.elapsed()
    );
    assert_eq!(limiter.get("/readyz").await.status, 200);
    let metrics = limiter.metrics().await;
    assert_eq!(
        metric_value(&metrics, "sluice_store_breaker_open", ""),
        Some(1.0)
    );

    redis.restart();
    eventually(
        Duration::from_secs(2),
        "a check counted in Redis",
        || async { limiter.check(json!({"user": "late"})).await.body["degraded"] == json!(false) },
    )
    .await;
    assert!(
        !redis.sluice_key_ttls().is_empty(),
        "the counter is in Redis"
    );
}

/// `user` has used `used` checks; three more on one limiter show on the
/// other, counted in Redis.
async fn assert_counting_is_shared(limiters: &[LimiterProcess], user: &str, used: u64) {
    for _ in 0..3 {
        let reply = limiters[0].check(json!({"user": user})).await;
        assert_eq!(
            (reply.status, &reply.body["degraded"]),
            (200, &json!(false))
        );
    }
    let probe = limiters[1].check(json!({"user": user, "cost": 0})).await;
    assert_eq!(probe.body["degraded"], false);
    assert_eq!(probe.body["remaining"], 100_000 - used - 3, "{probe:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_replicas_stay_within_the_global_limit() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    // The policy expects two replicas and three run: each one's share must
    // come from the heartbeats in Redis (a third), not from the policy.
    let global = "    - {name: global, requests: 90, window: 1h}\n";
    let policy = policy_file(dir.path(), Mode::Local, global);
    let limiters = limiters(&policy, &redis.url(), 3, &[]).await;
    eventually(Duration::from_secs(5), "three heartbeats", || async {
        redis.cli(&["ZCARD", "sluice:{e2e/faults}:limiters"]).trim() == "3"
    })
    .await;
    // Each replica reads the count at its next sync, a second apart; the
    // count is not exposed, so wait out one sync.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = Arc::new(|task: usize, n: u64| json!({"user": format!("u{task}-{n}")}));
    let load = Load::start(&bases(&limiters), 3 * 2, PACE, body);
    tokio::time::sleep(PHASE).await;

    Fault::Killed.inject(&mut redis);
    let fault_at = load.mark();
    tokio::time::sleep(PHASE).await;
    let healed_at = load.mark();
    Fault::Killed.heal(&mut redis);
    tokio::time::sleep(PHASE).await;
    let samples = load.stop().await;
    report("local-shares-3-replicas", &samples, fault_at, healed_at);

    let all = Figures::of(&samples);
    assert_eq!((all.server_errors, all.other_errors), (0, 0), "{all:?}");
    // Decided in Redis: exactly the limit. Decided locally (degraded): each
    // replica its share, a third.
    let before = between(&samples, Duration::ZERO, fault_at);
    assert_eq!(
        admitted(&before, false),
        90,
        "exact in Redis before the fault"
    );
    for target in 0..3 {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.target == target).collect();
        let share = admitted(&mine, true);
        assert_eq!(share, 30, "replica {target} admitted {share} without Redis");
    }
    let local = admitted(&samples.iter().collect::<Vec<_>>(), true);
    assert!(
        local <= 90 + 3,
        "{local} admitted without Redis, over the limit of 90"
    );
}

/// How many of `samples` were admitted, in Redis or (`degraded`) not.
fn admitted(samples: &[&Sample], degraded: bool) -> usize {
    let admitted = |s: &&&Sample| s.status == Some(200) && s.degraded == degraded;
    samples.iter().filter(admitted).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_under_load_gives_no_5xx_and_follows_the_promoted_replica() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start(3, 1);
    let policy = policy_file(dir.path(), Mode::Local, ROOMY_PER_USER);
    let limiters = limiters(&policy, &cluster.url(), 1, &["--redis-cluster"]).await;
    let key = counter_key_of(&policy, "u0");
    let load = steady_load(&limiters);
    tokio::time::sleep(PHASE).await;

    let fault_at = load.mark();
    let old = cluster.master_of(&key).port;
    let node = cluster.nodes.iter_mut().find(|n| n.port == old).unwrap();
    node.kill();
    wait_until_promoted(&cluster, &key, old).await;
    let promoted_at = load.mark();
    wait_until_counted_on(cluster.master_of(&key), &key).await;
    let followed = load.mark() - promoted_at;
    let ms = followed.as_secs_f64() * 1e3;
    println!(
        "FAULT-FOLLOW cluster-failover: counting on the promoted replica {ms:.0} ms after the promotion was seen"
    );
    tokio::time::sleep(PHASE).await;
    let samples = load.stop().await;
    report("cluster-failover-local", &samples, fault_at, promoted_at);

    let all = Figures::of(&samples);
    assert_eq!(all.server_errors, 0, "5xx answers: {all:?}");
    assert_eq!(all.other_errors, 0, "unanswered checks: {all:?}");
    let after = between(&samples, promoted_at + followed, Duration::MAX);
    let flap = longest_degraded_stretch(&after);
    assert!(
        flap < FLAP,
        "degraded for {flap:?} after following the promoted replica"
    );
    let opened = assert_breaker_logged_per_transition(&limiters[0].process.output());
    println!("FAULT-FOLLOW cluster-failover: the breaker opened {opened} time(s)");
}

/// Waits until a replica serves `key` in place of the master on port `old`.
async fn wait_until_promoted(cluster: &RedisCluster, key: &str, old: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.try_master_of(key).is_none_or(|n| n.port == old) {
        if Instant::now() > deadline {
            let live = cluster.nodes.iter().filter(|n| n.port != old);
            let views: Vec<String> = live.map(|n| n.cli(&["CLUSTER", "NODES"])).collect();
            panic!(
                "no replica of {old} promoted after 20 s:\n{}",
                views.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the count of counter `key` grows on `node`: a limiter
/// counts there.
async fn wait_until_counted_on(node: &RedisServer, key: &str) {
    let counted = || {
        node.cli(&["HGET", key, "c"])
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let mut last = counted();
    eventually(
        Duration::from_secs(10),
        "a count on the promoted replica",
        || {
            let now = counted();
            let grew = now > last;
            last = now;
            async move { grew }
        },
    )
    .await;
}

/// The Redis key of `user`'s `per-user` counter under `policy`.
fn counter_key_of(policy: &Path, user: &str) -> String {
    use sluice_limiter::{
        policy::{CompiledPolicy, Request},
        store::redis::counter_key,
    };
    let text = std::fs::read_to_string(policy).unwrap();
    let parsed = sluice_crds::parse_policies(&text, "faults")
        .unwrap()
        .remove(0);
    let compiled = CompiledPolicy::compile(parsed);
    let request = Request {
        user: Some(user),
        endpoint: None,
        cost: 1,
    };
    let (limit, digest) = compiled.applicable(&request).next().unwrap();
    counter_key(&limit.counter_prefix, &digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_user_flood_on_the_memory_fallback_stays_within_its_bound() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let per_user = "    - {name: per-user, requests: 10, window: 1m, by: [user]}\n";
    let policy = policy_file(dir.path(), Mode::Local, per_user);
    let limiters = limiters(&policy, &redis.url(), 1, &["--memory-max-counters", "1000"]).await;
    let limiter = &limiters[0];
    let rss_before = watch_rss(limiter.process.pid(), Duration::from_millis(500)).await;
    Fault::Killed.inject(&mut redis);

    let body = Arc::new(|task: usize, n: u64| json!({"user": format!("flood-{task}-{n}")}));
    let load = Load::start(&bases(&limiters), TASKS, Duration::ZERO, body);
    let mut counters = Vec::new();
    let mut rss = Vec::new();
    let until = Instant::now() + PHASE;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = limiter.metrics().await;
        counters.push(metric_value(&text, "sluice_memory_counters", "").unwrap_or(-1.0));
        rss.push(rss_kib(limiter.process.pid()));
    }
    let samples = load.stop().await;
    let flood = Figures::of(&samples);
    flood.report("distinct-user-flood", "during");

    assert_eq!(
        (flood.server_errors, flood.other_errors),
        (0, 0),
        "{flood:?}"
    );
    assert!(
        flood.requests > 2000,
        "only {} distinct users sent",
        flood.requests
    );
    let peak = counters.iter().copied().fold(0.0, f64::max);
    assert!(
        peak <= 1000.0,
        "{peak} counters held, over the bound of 1000: {counters:?}"
    );
    assert!(
        peak >= 900.0,
        "the flood never filled the store: {counters:?}"
    );
    let rss_before = rss_before.into_iter().max().unwrap_or(0);
    let rss_peak = rss.iter().copied().max().unwrap_or(0);
    print_rss("distinct-user-flood", rss_before, rss_peak);
    let held = counters.last().copied().unwrap_or(0.0);
    println!("FAULT-RSS distinct-user-flood: {held} counters held at the end, bound 1000");
    assert!(
        rss_peak <= rss_before + RSS_GROWTH_KIB,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB: {rss:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_client_cannot_hold_a_replica() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), Mode::Local, ROOMY_PER_USER);
    let bounds = ["--max-connections", "64", "--header-timeout", "1s"];
    let limiter = LimiterProcess::start(&policy, &bounds).await;
    let address = limiter.base.trim_start_matches("http://").to_owned();
    let load = steady_load(std::slice::from_ref(&limiter));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Twice the connection bound, half silent, half trickling headers.
    let attack_at = load.mark();
    let lorises = (0..128).map(|i| {
        let address = address.clone();
        tokio::spawn(async move { hostile::loris(&address, i % 2 == 0).await })
    });
    let held: Vec<Option<Duration>> = futures::future::join_all(lorises)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let released_at = load.mark();
    let fresh = reqwest::Client::new()
        .post(format!("{}/v1/check", limiter.base))
        .timeout(Duration::from_secs(1))
        .json(&json!({"user": "newcomer"}))
        .send()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    report("slow-loris", &samples, attack_at, released_at);

    for (i, held) in held.iter().enumerate() {
        let held = held.unwrap_or_else(|| panic!("connection {i} still open after 5 s"));
        assert!(
            held < Duration::from_secs(2),
            "connection {i} held for {held:?}"
        );
    }
    assert_eq!(
        fresh.map(|r| r.status().as_u16()).ok(),
        Some(200),
        "a new client is served"
    );
    let all = Figures::of(&samples);
    assert_eq!((all.server_errors, all.other_errors), (0, 0), "{all:?}");
    assert_eq!(limiter.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_with_408_at_the_request_timeout() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), Mode::Local, ROOMY_PER_USER);
    let limiter = LimiterProcess::start(&policy, &["--request-timeout", "1s"]).await;
    let address = limiter.base.trim_start_matches("http://");
    let (answer, took) = hostile::slow_body(address).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(2), "cut off after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_past_the_in_flight_bound_are_refused_at_once_not_queued() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let policy = policy_file(dir.path(), Mode::Local, ROOMY_PER_USER);
    // Checks wait two seconds on a hung Redis and the breaker never opens:
    // the only thing between the limiter and a pile of waiting checks is
    // the bound on requests in flight.
    let args = [
        "--redis-timeout",
        "2s",
        "--breaker-threshold",
        "1000",
        "--max-in-flight",
        "4",
    ];
    let limiters = limiters(&policy, &redis.url(), 1, &args).await;
    redis.process().signal("STOP");
    let client = reqwest::Client::new();
    let url = format!("{}/v1/check", limiters[0].base);
    let checks = (0..20).map(|i| {
        let request = client.post(&url).json(&json!({"user": format!("u{i}")}));
        async move {
            let started = Instant::now();
            let status = request.send().await.map(|r| r.status().as_u16()).ok();
            (status, started.elapsed())
        }
    });
    let answers = futures::future::join_all(checks).await;
    redis.process().signal("CONT");

    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == Some(503)).collect();
    let waited: Vec<_> = answers.iter().filter(|(s, _)| *s == Some(200)).collect();
    assert_eq!((waited.len(), refused.len()), (4, 16), "{answers:?}");
    for (_, took) in refused {
        assert!(*took < Duration::from_millis(500), "refused after {took:?}");
    }
}
