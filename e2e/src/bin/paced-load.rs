//! An open-loop load generator for the check API, for measuring latency at
//! a given rate (`scripts/bench-redis.sh`).
//!
//! wrk is closed-loop: each connection sends its next request only when the
//! last is answered, so a slow server is sent less, and the requests that
//! would have waited are never measured. Here checks fall due at a fixed
//! rate whatever the server does, and each one's latency is counted from
//! when it was due, not from when a connection got round to sending it: a
//! server that stalls is charged for every check that queued behind the
//! stall.
//!
//! A pacing thread releases checks at their due times (a thread sleep is
//! precise to tens of microseconds, where the async timer rounds to a
//! millisecond); a pool of keep-alive HTTP/1.1 connections, on one runtime
//! thread, sends each check as soon as a connection is free. Bodies are
//! those of `scripts/wrk-check.lua`: users `user-00000001` onwards on
//! `GET /search`, built once.
//!
//! Prints one line for people and one `PACED key=value…` line for scripts.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{Mutex, mpsc},
};

/// The longest a check may take before it counts as an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest sleep of the pacing thread. Waking it for every check
/// cost more CPU in context switches than sending the check (measured:
/// three switches and ~60 µs of CPU per check at 5,000/s on the shared
/// two-core machine). Releasing what fell due every 200 µs instead makes a
/// check up to that much late, which its latency includes.
const PACING_QUANTUM: Duration = Duration::from_micros(200);

/// Sends checks at a fixed rate and reports their latency.
#[derive(Parser, Debug)]
struct Args {
    /// The check endpoint, such as `http://127.0.0.1:8080/v1/check`.
    url: Uri,
    /// Checks per second.
    #[arg(long)]
    rate: f64,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// How long to send before measuring, in seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Keep-alive connections; more than the rate times the latency, so
    /// that a check rarely waits for a free one.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Distinct users the bodies cycle through.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
}

/// One check released by the pacer: its number and when it fell due.
type Due = (u64, Instant);

/// What one connection recorded.
#[derive(Default)]
struct Record {
    /// Latency of each measured check, from when it fell due.
    latencies: Vec<Duration>,
    /// Time of each measured check from when it was sent to its answer:
    /// the server's part of the latency.
    service: Vec<Duration>,
    /// How long each measured check waited, after falling due, before a
    /// connection sent it.
    start_delays: Vec<Duration>,
    /// When the last measured answer came.
    last_answer: Option<Instant>,
    non2xx: u64,
    errors: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::from_uri(&args.url)?;
    let bodies = Arc::new(bodies(args.users));
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(target.connect().await?);
    }

    let (due_tx, due_rx) = mpsc::unbounded_channel();
    let due_rx = Arc::new(Mutex::new(due_rx));
    let warmup = (args.warmup_seconds * args.rate) as u64;
    let total = warmup + (args.seconds * args.rate) as u64;
    let workers: Vec<_> = connections
        .into_iter()
        .map(|sender| {
            let worker = Worker {
                target: target.clone(),
                bodies: bodies.clone(),
                due: due_rx.clone(),
                warmup,
            };
            tokio::spawn(worker.run(sender))
        })
        .collect();
    let rate = args.rate;
    let started = Instant::now();
    let pacer = std::thread::spawn(move || pace(due_tx, started, rate, total));

    let mut all = Record::default();
    for worker in workers {
        all.merge(worker.await?);
    }
    pacer.join().expect("the pacer thread");
    report(&args, &mut all, due_at(started, args.rate, warmup));
    Ok(())
}

/// When check `n` falls due.
fn due_at(started: Instant, rate: f64, n: u64) -> Instant {
    started + Duration::from_secs_f64(n as f64 / rate)
}

/// Releases checks `0..total` once they are due, in batches at most
/// [`PACING_QUANTUM`] apart.
fn pace(due: mpsc::UnboundedSender<Due>, started: Instant, rate: f64, total: u64) {
    let mut n = 0;
    while n < total {
        let now = Instant::now();
        while n < total && due_at(started, rate, n) <= now {
            if due.send((n, due_at(started, rate, n))).is_err() {
                return;
            }
            n += 1;
        }
        let next = due_at(started, rate, n);
        std::thread::sleep(next.saturating_duration_since(now).max(PACING_QUANTUM));
    }
}

/// The server: where to connect and what to send.
#[derive(Clone)]
struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn from_uri(uri: &Uri) -> anyhow::Result<Self> {
        anyhow::ensure!(uri.scheme_str() == Some("http"), "the URL must be http://");
        let authority = uri.authority().context("the URL has no host")?;
        Ok(Self {
            authority: authority.to_string(),
            path: uri.path().to_owned(),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn request(&self, body: &Bytes) -> Request<Full<Bytes>> {
        Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("a valid request")
    }
}

/// The JSON bodies of `scripts/wrk-check.lua`, one per user.
fn bodies(users: usize) -> Vec<Bytes> {
    (1..=users.max(1))
        .map(|i| format!(r#"{{"user":"user-{i:08}","endpoint":"GET /search"}}"#).into())
        .collect()
}

/// One connection's loop: take the next due check, send it, record it.
struct Worker {
    target: Target,
    bodies: Arc<Vec<Bytes>>,
    due: Arc<Mutex<mpsc::UnboundedReceiver<Due>>>,
    warmup: u64,
}

impl Worker {
    async fn run(self, mut sender: SendRequest<Full<Bytes>>) -> Record {
        let mut record = Record::default();
        loop {
            let next = self.due.lock().await.recv().await;
            let Some((n, due)) = next else {
                return record;
            };
            let sent = Instant::now();
            let body = &self.bodies[n as usize % self.bodies.len()];
            let answer =
                tokio::time::timeout(ANSWER_TIMEOUT, send(&mut sender, self.target.request(body)))
                    .await;
            let status = match answer {
                Ok(Ok(status)) => Some(status),
                _ => None,
            };
            if status.is_none() {
                // The connection may be broken or busy with a lost answer.
                if let Ok(fresh) = self.target.connect().await {
                    sender = fresh;
                }
            }
            if n >= self.warmup {
                record.add(due, sent, status);
            }
        }
    }
}

/// Sends `request` and reads the whole answer; returns its status.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<u16> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

impl Record {
    fn add(&mut self, due: Instant, sent: Instant, status: Option<u16>) {
        let now = Instant::now();
        self.latencies.push(now - due);
        self.service.push(now - sent);
        self.start_delays.push(sent - due);
        self.last_answer = self.last_answer.max(Some(now));
        match status {
            Some(200..=299) => {}
            Some(_) => self.non2xx += 1,
            None => self.errors += 1,
        }
    }

    fn merge(&mut self, other: Record) {
        self.latencies.extend(other.latencies);
        self.service.extend(other.service);
        self.start_delays.extend(other.start_delays);
        self.last_answer = self.last_answer.max(other.last_answer);
        self.non2xx += other.non2xx;
        self.errors += other.errors;
    }
}

/// The `q` quantile of sorted `values`, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

fn report(args: &Args, all: &mut Record, measured_from: Instant) {
    for values in [&mut all.latencies, &mut all.service, &mut all.start_delays] {
        values.sort_unstable();
    }
    let answered = all.latencies.len();
    let span = all
        .last_answer
        .map(|t| t - measured_from)
        .unwrap_or_default();
    let achieved = answered as f64 / span.as_secs_f64().max(1e-9);
    let us = |values: &[Duration], q| quantile(values, q).as_micros();
    let ms = |values: &[Duration], q| us(values, q) as f64 / 1e3;
    println!(
        concat!(
            "paced {:.0}/s for {}s: {} checks at {:.0}/s; latency from due p50 {:.3} ms,",
            " p99 {:.3} ms, max {:.3} ms; from sent p50 {:.3} ms, p99 {:.3} ms;",
            " {} non-2xx, {} errors"
        ),
        args.rate,
        args.seconds,
        answered,
        achieved,
        ms(&all.latencies, 0.50),
        ms(&all.latencies, 0.99),
        ms(&all.latencies, 1.0),
        ms(&all.service, 0.50),
        ms(&all.service, 0.99),
        all.non2xx,
        all.errors,
    );
    println!(
        concat!(
            "PACED rate={:.0} answered={} duration_us={} achieved_rps={:.0} p50_us={}",
            " p90_us={} p99_us={} p999_us={} max_us={} sent_p50_us={} sent_p99_us={}",
            " start_delay_p99_us={} non2xx={} errors={}"
        ),
        args.rate,
        answered,
        span.as_micros(),
        achieved,
        us(&all.latencies, 0.50),
        us(&all.latencies, 0.90),
        us(&all.latencies, 0.99),
        us(&all.latencies, 0.999),
        us(&all.latencies, 1.0),
        us(&all.service, 0.50),
        us(&all.service, 0.99),
        us(&all.start_delays, 0.99),
        all.non2xx,
        all.errors,
    );
}
