//! A stand-in for a protected API's pods, for the end-to-end tests: it
//! exposes the metrics sluice's default queries read (HTTP requests by
//! code, a latency histogram, container CPU and its request, pod labels)
//! and lets the test set what they say.
//!
//! `POST /control` with `{"rps": 100, "error_ratio": 0.2, "latency_seconds":
//! 0.05, "cpu": 0.3}` (any subset) changes the simulated traffic; counters
//! advance every 100 ms at those rates. `GET /metrics` is Prometheus text.

use std::{
    fmt::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::get};
use serde::Deserialize;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// What the simulated pods are doing.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default)]
struct Traffic {
    rps: f64,
    error_ratio: f64,
    latency_seconds: f64,
    cpu: f64,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            rps: 100.0,
            error_ratio: 0.0,
            latency_seconds: 0.05,
            cpu: 0.3,
        }
    }
}

/// Totals so far.
#[derive(Default)]
struct Totals {
    ok: f64,
    errors: f64,
    buckets: [f64; BUCKETS.len()],
    count: f64,
    sum: f64,
    cpu_seconds: f64,
}

struct Exporter {
    traffic: Mutex<Traffic>,
    totals: Mutex<Totals>,
    namespace: String,
    app: String,
}

impl Exporter {
    fn advance(&self, seconds: f64) {
        let t = *self.traffic.lock().unwrap();
        let mut totals = self.totals.lock().unwrap();
        let requests = t.rps * seconds;
        totals.errors += requests * t.error_ratio;
        totals.ok += requests * (1.0 - t.error_ratio);
        for (bound, bucket) in BUCKETS.iter().zip(totals.buckets.iter_mut()) {
            if t.latency_seconds <= *bound {
                *bucket += requests;
            }
        }
        totals.count += requests;
        totals.sum += requests * t.latency_seconds;
        // One container requesting one CPU.
        totals.cpu_seconds += t.cpu * seconds;
    }

    fn render(&self) -> String {
        let totals = self.totals.lock().unwrap();
        let (ns, app) = (&self.namespace, &self.app);
        let pod = format!("namespace=\"{ns}\",pod=\"{app}-0\"");
        let http = format!("namespace=\"{ns}\",app=\"{app}\"");
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        let _ = writeln!(
            out,
            "http_requests_total{{{http},code=\"200\"}} {}",
            totals.ok
        );
        let _ = writeln!(
            out,
            "http_requests_total{{{http},code=\"500\"}} {}",
            totals.errors
        );
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for (bound, count) in BUCKETS.iter().zip(totals.buckets) {
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{http},le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{http},le=\"+Inf\"}} {}",
            totals.count
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count{{{http}}} {}",
            totals.count
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{{http}}} {}",
            totals.sum
        );
        let _ = writeln!(out, "# TYPE container_cpu_usage_seconds_total counter");
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{{pod},container=\"api\"}} {}",
            totals.cpu_seconds
        );
        let _ = writeln!(out, "# TYPE kube_pod_container_resource_requests gauge");
        let _ = writeln!(
            out,
            "kube_pod_container_resource_requests{{{pod},container=\"api\",resource=\"cpu\"}} 1"
        );
        let _ = writeln!(out, "# TYPE kube_pod_labels gauge");
        let _ = writeln!(out, "kube_pod_labels{{{pod},label_app=\"{app}\"}} 1");
        out
    }
}

async fn metrics(State(exporter): State<Arc<Exporter>>) -> String {
    exporter.render()
}

async fn control(
    State(exporter): State<Arc<Exporter>>,
    Json(update): Json<serde_json::Value>,
) -> &'static str {
    let mut traffic = exporter.traffic.lock().unwrap();
    let mut current = serde_json::to_value(TrafficView::from(*traffic)).unwrap();
    if let (Some(current), Some(update)) = (current.as_object_mut(), update.as_object()) {
        current.extend(update.clone());
    }
    if let Ok(next) = serde_json::from_value::<Traffic>(current) {
        *traffic = next;
    }
    "ok\n"
}

#[derive(serde::Serialize)]
struct TrafficView {
    rps: f64,
    error_ratio: f64,
    latency_seconds: f64,
    cpu: f64,
}

impl From<Traffic> for TrafficView {
    fn from(t: Traffic) -> Self {
        Self {
            rps: t.rps,
            error_ratio: t.error_ratio,
            latency_seconds: t.latency_seconds,
            cpu: t.cpu,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9400".into())
        .parse()?;
    let namespace = args.next().unwrap_or_else(|| "e2e".into());
    let app = args.next().unwrap_or_else(|| "demo".into());
    let exporter = Arc::new(Exporter {
        traffic: Mutex::default(),
        totals: Mutex::default(),
        namespace,
        app,
    });
    let ticking = exporter.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            ticking.advance(0.1);
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/control", axum::routing::post(control))
        .with_state(exporter);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
