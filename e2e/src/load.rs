//! Steady load on limiters, and the figures it leaves: a bounded number of
//! client tasks send checks for a bounded time, each at a set pace, and
//! record when every check was sent, how long its answer took and what it
//! said.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::task::JoinHandle;

/// The longest the load waits for one answer; a check not answered by then
/// counts as an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// One check sent under load.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// How long its answer took, as the client saw it.
    pub latency: Duration,
    /// The HTTP status, or `None` when no answer came (connection error or
    /// timeout).
    pub status: Option<u16>,
    /// The `degraded` field of the answer (false when absent).
    pub degraded: bool,
    /// Which limiter it went to, as an index into the load's targets.
    pub target: usize,
    /// The longest the client's own runtime was late while the check was
    /// in flight (see [`Load`]): the part of `latency` that may be the
    /// client's, not the limiter's.
    pub client_stall: Duration,
}

/// Builds the JSON body of the `n`th check a task sends.
pub type BodyOf = dyn Fn(usize, u64) -> Value + Send + Sync;

/// Client tasks sending checks until stopped.
///
/// Beside them runs a canary: a task that sleeps a millisecond at a time and
/// notes when it wakes late. When the client process itself is starved (on
/// a shared machine, by whatever else runs), every answer it awaits seems
/// slow by as much; each sample carries the worst such lateness seen while
/// it was in flight, so that a slow answer can be told apart from a slow
/// client.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
    canary: JoinHandle<Vec<Stall>>,
}

/// The canary woke `late` after it should have, at `at` from the start.
#[derive(Clone, Copy, Debug)]
struct Stall {
    at: Duration,
    late: Duration,
}

/// How long the canary sleeps at a time, and the lateness it notes.
const CANARY_TICK: Duration = Duration::from_millis(1);
const CANARY_NOTES: Duration = Duration::from_millis(2);

impl Load {
    /// Starts `tasks` client tasks. Task `t` sends to `targets[t %
    /// targets.len()]` (base URLs), one check at a time, each at least
    /// `pace` after the previous one was sent; `body(t, n)` is its `n`th
    /// check.
    pub fn start(targets: &[String], tasks: usize, pace: Duration, body: Arc<BodyOf>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(ANSWER_TIMEOUT)
            .pool_max_idle_per_host(tasks)
            .build()
            .expect("an HTTP client");
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|task| {
                let target = task % targets.len();
                let client = Client {
                    http: client.clone(),
                    url: format!("{}/v1/check", targets[target]),
                    target,
                    started,
                };
                let (stop, body) = (stop.clone(), body.clone());
                tokio::spawn(async move { client.run(task, pace, &stop, &*body).await })
            })
            .collect();
        let canary = tokio::spawn(canary(started, stop.clone()));
        Self {
            started,
            stop,
            tasks,
            canary,
        }
    }

    /// Time since the load started: a mark between phases.
    pub fn mark(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every task and returns all samples, in the order sent.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in self.tasks {
            samples.extend(task.await.expect("a load task"));
        }
        let stalls = self.canary.await.expect("the canary");
        for sample in &mut samples {
            let (from, to) = (sample.sent, sample.sent + sample.latency);
            let during = stalls
                .iter()
                .filter(|s| s.at >= from && s.at - s.late <= to);
            sample.client_stall = during.map(|s| s.late).max().unwrap_or_default();
        }
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

/// Notes every time this process's runtime woke the canary late.
async fn canary(started: Instant, stop: Arc<AtomicBool>) -> Vec<Stall> {
    let mut stalls = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let asleep = Instant::now();
        tokio::time::sleep(CANARY_TICK).await;
        let late = asleep.elapsed().saturating_sub(CANARY_TICK);
        if late >= CANARY_NOTES {
            let at = started.elapsed();
            stalls.push(Stall { at, late });
        }
    }
    stalls
}

/// One client task's connection to one limiter.
struct Client {
    http: reqwest::Client,
    url: String,
    target: usize,
    started: Instant,
}

impl Client {
    async fn run(
        &self,
        task: usize,
        pace: Duration,
        stop: &AtomicBool,
        body: &BodyOf,
    ) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut next = Instant::now();
        for n in 0.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            samples.push(self.send(&body(task, n)).await);
            next += pace;
            // A late task sends at once rather than bunching to catch up.
            next = next.max(Instant::now());
            tokio::time::sleep_until(next.into()).await;
        }
        samples
    }

    async fn send(&self, body: &Value) -> Sample {
        let sent = Instant::now();
        let answer = self.http.post(&self.url).json(body).send().await;
        let (status, degraded) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (Some(status), body["degraded"] == true)
            }
            Err(_) => (None, false),
        };
        Sample {
            sent: sent - self.started,
            latency: sent.elapsed(),
            status,
            degraded,
            target: self.target,
            client_stall: Duration::ZERO,
        }
    }
}

/// Latency and errors of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// Checks sent.
    pub requests: usize,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest answer.
    pub max: Duration,
    /// Answers with a 5xx status.
    pub server_errors: usize,
    /// Checks that got no answer, or a status other than 200, 429 or 5xx.
    pub other_errors: usize,
    /// Answers that said they were decided without the shared store.
    pub degraded: usize,
    /// The longest the client itself was stalled while a check was in
    /// flight (see [`Load`]).
    pub client_stall: Duration,
}

impl Figures {
    /// The figures of `samples`.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let samples: Vec<&Sample> = samples.into_iter().collect();
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let at = |q: f64| {
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies
                .get(rank.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        let server_errors = samples
            .iter()
            .filter(|s| s.status.is_some_and(|c| c >= 500))
            .count();
        let other_errors = samples
            .iter()
            .filter(|s| !matches!(s.status, Some(200 | 429 | 500..)))
            .count();
        Self {
            degraded: samples.iter().filter(|s| s.degraded).count(),
            client_stall: samples
                .iter()
                .map(|s| s.client_stall)
                .max()
                .unwrap_or_default(),
            requests: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
            server_errors,
            other_errors,
        }
    }

    /// Prints one line that `scripts/bench-faults.sh` collects:
    /// `FAULT-FIGURES <scenario> <phase> key=value…`.
    pub fn report(&self, scenario: &str, phase: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "FAULT-FIGURES {scenario} {phase} requests={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} 5xx={} other_errors={} degraded={} client_stall_ms={:.2}",
            self.requests,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.server_errors,
            self.other_errors,
            self.degraded,
            ms(self.client_stall)
        );
    }
}

/// The resident memory of process `pid`, in KiB (`VmRSS` of
/// `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The value of the first sample of `metric` in Prometheus text whose
/// labels contain `labels` (empty: any), such as
/// `metric_value(text, "sluice_degraded_checks_total", "mode=\"local\"")`.
pub fn metric_value(text: &str, metric: &str, labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        let (series, value) = rest.rsplit_once(' ')?;
        let named = series.is_empty() || series.starts_with('{');
        (named && series.contains(labels)).then(|| value.parse().ok())?
    })
}
