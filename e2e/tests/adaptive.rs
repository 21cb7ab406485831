//! Adaptation end to end with real processes: a test exporter standing in
//! for the API's pods, `prometheus` scraping it every second,
//! `sluice-operator adapt` publishing multipliers to Redis, and a
//! `sluice-limiter` enforcing them.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::json;
use sluice_e2e::{
    LimiterProcess, Process, Prometheus, RedisServer, binary, eventually, free_port, wait_for_http,
};
use sluice_operator::adaptive::signals::{self, SignalQueries};

/// The stand-in for the API's pods, on a free port.
struct Exporter {
    _process: Process,
    address: String,
}

impl Exporter {
    async fn start() -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let args = vec![address.clone(), "e2e".into(), "demo".into()];
        let process = Process::start("test-exporter", &binary("test-exporter"), &args, &[]);
        wait_for_http(
            &format!("http://{address}/metrics"),
            Duration::from_secs(20),
        )
        .await;
        Self {
            _process: process,
            address,
        }
    }

    async fn set(&self, traffic: serde_json::Value) {
        let url = format!("http://{}/control", self.address);
        let response = reqwest::Client::new()
            .post(url)
            .json(&traffic)
            .send()
            .await
            .expect("control");
        assert!(response.status().is_success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_queries_read_the_targets_signals_from_prometheus() {
    let exporter = Exporter::start().await;
    exporter
        .set(json!({"rps": 100, "error_ratio": 0.2, "latency_seconds": 0.05, "cpu": 0.3}))
        .await;
    let prometheus = Prometheus::start(std::slice::from_ref(&exporter.address)).await;
    let client = prometheus_http_query::Client::try_from(prometheus.url().as_str()).unwrap();
    let queries = SignalQueries::defaults(
        "e2e",
        &BTreeMap::from([("app".to_owned(), "demo".to_owned())]),
    );
    let near = |value: Option<f64>, expected: f64, tolerance: f64| {
        value.is_some_and(|v| (v - expected).abs() <= tolerance)
    };
    // Rates over the default one-minute window are right once the window
    // holds a minute of samples.
    eventually(
        Duration::from_secs(120),
        "the one-minute rate windows to fill",
        || async {
            let o = signals::read(&client, &queries, Duration::from_secs(2))
                .await
                .observation();
            near(o.cpu, 0.3, 0.05)
                && near(o.errors, 0.2, 0.02)
                && near(o.request_rate, 100.0, 15.0)
                && near(o.latency, 0.045, 0.0051)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_for_missing_series_is_unknown_not_zero() {
    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(std::slice::from_ref(&exporter.address)).await;
    let client = prometheus_http_query::Client::try_from(prometheus.url().as_str()).unwrap();
    let queries = SignalQueries::defaults(
        "elsewhere",
        &BTreeMap::from([("app".to_owned(), "nothing".to_owned())]),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reading = signals::read(&client, &queries, Duration::from_secs(2)).await;
    assert_eq!(reading.observation(), Default::default(), "{reading:?}");
}

fn adaptive_policy(dir: &Path, prometheus: &str) -> std::path::PathBuf {
    // Five-second rate windows instead of the default minute keep the test
    // short; the default queries are covered above.
    let text = format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: adaptive, namespace: e2e}}
spec:
  target: {{selector: {{matchLabels: {{app: demo}}}}}}
  limits:
    - {{name: global, requests: 100, window: 1s}}
  adaptive:
    interval: 1s
    signals:
      errors: {{weight: 1.0, target: 0.01, max: 0.10}}
    prometheus: {{url: "{prometheus}"}}
    queries:
      errors: '(sum(rate(http_requests_total{{app="demo",code=~"5.."}}[5s])) or sum(rate(http_requests_total{{app="demo"}}[5s])) * 0) / sum(rate(http_requests_total{{app="demo",code!="429"}}[5s]))'
      requests: 'sum(rate(http_requests_total{{app="demo",code!="429"}}[5s]))'
"#
    );
    let path = dir.join("adaptive.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The effective size of the global limit, as the limiter answers it.
async fn effective(limiter: &LimiterProcess) -> u64 {
    let reply = limiter.check(json!({"cost": 0})).await;
    reply.body["limit"]["effective"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_halve_the_limit_and_health_brings_it_back() {
    let redis = RedisServer::start();
    let exporter = Exporter::start().await;
    exporter.set(json!({"rps": 100, "error_ratio": 0.0})).await;
    let prometheus = Prometheus::start(std::slice::from_ref(&exporter.address)).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = adaptive_policy(dir.path(), &prometheus.url());
    let limiter =
        LimiterProcess::start(&policy, &["--store", "redis", "--redis-url", &redis.url()]).await;
    let args = vec![
        "adapt".to_owned(),
        "--policy".into(),
        policy.display().to_string(),
        "--redis".into(),
        redis.url(),
    ];
    let adapt = Process::start(
        "sluice-operator adapt",
        &binary("sluice-operator"),
        &args,
        &[],
    );

    eventually(
        Duration::from_secs(30),
        "the adaptive loop to publish a healthy multiplier",
        || async {
            adapt.output().contains("\"reason\":\"Holding\"") && effective(&limiter).await == 100
        },
    )
    .await;

    exporter.set(json!({"error_ratio": 0.2})).await;
    eventually(
        Duration::from_secs(40),
        "20 % errors to halve the limit",
        || async { effective(&limiter).await <= 50 },
    )
    .await;
    assert!(adapt.output().contains("\"reason\":\"Cutting\""));

    exporter.set(json!({"error_ratio": 0.0})).await;
    eventually(
        Duration::from_secs(120),
        "health to bring the limit back to its base",
        || async { effective(&limiter).await == 100 },
    )
    .await;
    assert!(adapt.output().contains("\"reason\":\"Recovering\""));
}
