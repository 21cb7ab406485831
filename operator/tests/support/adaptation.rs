//! Fakes for where adaptation reads signals and publishes multipliers,
//! recording what they were asked, and a clock the tests move by hand.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use sluice_operator::{
    adaptive::{
        signals::{Reading, SignalError, SignalQueries},
        sink::{MultiplierSink, PublishError, RedisTarget},
        source::SignalSource,
    },
    clock::Clock,
    context::Adaptation,
};

use super::fixtures::now;

/// Answers every read with one reading, and records each read.
pub struct FakeSignals {
    reading: Mutex<Reading>,
    asked: Mutex<Vec<(String, SignalQueries)>>,
}

impl FakeSignals {
    /// Answers with `reading` from now on.
    pub fn answer(&self, reading: Reading) {
        *self.reading.lock().unwrap() = reading;
    }

    /// The Prometheus URL and queries of each read so far.
    pub fn asked(&self) -> Vec<(String, SignalQueries)> {
        self.asked.lock().unwrap().clone()
    }
}

impl Default for FakeSignals {
    /// Answers that no query returned data.
    fn default() -> Self {
        Self {
            reading: Mutex::new(reading([None, None, None, None])),
            asked: Mutex::default(),
        }
    }
}

impl SignalSource for FakeSignals {
    fn read<'a>(&'a self, url: &'a str, queries: &'a SignalQueries) -> BoxFuture<'a, Reading> {
        let record = (url.to_owned(), queries.clone());
        self.asked.lock().unwrap().push(record);
        let reading = self.reading.lock().unwrap().clone();
        Box::pin(async move { reading })
    }
}

/// A reading of cpu, latency, errors and requests; `None` returned no
/// data.
pub fn reading(values: [Option<f64>; 4]) -> Reading {
    Reading {
        values: values.map(|v| v.ok_or(SignalError::Empty)),
    }
}

/// A reading of a Prometheus that refuses every connection.
pub fn prometheus_down() -> Reading {
    let refused = || Err(SignalError::QueryPrometheus("connection refused".into()));
    Reading {
        values: [refused(), refused(), refused(), refused()],
    }
}

/// One multiplier the operator published.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// Where to.
    pub redis: RedisTarget,
    /// `<namespace>/<name>`.
    pub policy: String,
    /// The value.
    pub multiplier: f64,
    /// How long the key lives.
    pub ttl: Duration,
}

/// Takes every multiplier (or fails as told), and records each.
#[derive(Default)]
pub struct FakeSink {
    failure: Mutex<Option<PublishError>>,
    published: Mutex<Vec<Published>>,
}

impl FakeSink {
    /// Fails every publish with `error` from now on.
    pub fn fail_with(&self, error: PublishError) {
        *self.failure.lock().unwrap() = Some(error);
    }

    /// Every publish asked for so far, failed ones included.
    pub fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap().clone()
    }
}

impl MultiplierSink for FakeSink {
    fn publish<'a>(
        &'a self,
        redis: &'a RedisTarget,
        policy: &'a str,
        multiplier: f64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        self.published.lock().unwrap().push(Published {
            redis: redis.clone(),
            policy: policy.to_owned(),
            multiplier,
            ttl,
        });
        let outcome = match self.failure.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        };
        Box::pin(async move { outcome })
    }
}

/// Both fakes, and the adaptation that uses them.
pub struct Fakes {
    /// The signal source.
    pub signals: Arc<FakeSignals>,
    /// The multiplier sink.
    pub sink: Arc<FakeSink>,
}

impl Fakes {
    /// Fresh fakes.
    pub fn new() -> Self {
        Self {
            signals: Arc::default(),
            sink: Arc::default(),
        }
    }

    /// What the context gets.
    pub fn adaptation(&self) -> Adaptation {
        Adaptation {
            signals: self.signals.clone(),
            sink: self.sink.clone(),
        }
    }
}

/// A clock that starts at [`now`] and moves only when told.
#[derive(Clone, Default)]
pub struct HandClock(Arc<AtomicI64>);

impl HandClock {
    /// Moves the clock `seconds` forward.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The clock for a context.
    pub fn clock(&self) -> Clock {
        let offset = self.0.clone();
        Clock::from_fn(move || {
            let seconds = now().as_second() + offset.load(Ordering::SeqCst);
            Timestamp::from_second(seconds).unwrap()
        })
    }
}
