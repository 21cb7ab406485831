//! Where the operator reads a policy's signals: behind a trait, so that
//! reconcile tests need no Prometheus.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use futures::future::BoxFuture;
use prometheus_http_query::Client;

use super::signals::{self, Reading, SignalError, SignalQueries};

/// Reads one round of signals.
pub trait SignalSource: Send + Sync {
    /// Asks the Prometheus at `url` every query of `queries`. Never fails
    /// as a whole: each signal is a value or why it is unknown.
    fn read<'a>(&'a self, url: &'a str, queries: &'a SignalQueries) -> BoxFuture<'a, Reading>;
}

/// Prometheus over HTTP, one client per URL, each query bounded by a
/// timeout.
pub struct PrometheusSignals {
    timeout: Duration,
    clients: Mutex<HashMap<String, Client>>,
}

impl PrometheusSignals {
    /// A source whose queries each take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            clients: Mutex::default(),
        }
    }

    fn client(&self, url: &str) -> Result<Client, SignalError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let client = Client::try_from(url).map_err(|e| {
            SignalError::QueryPrometheus(format!("the URL {url} is not usable: {e}"))
        })?;
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }
}

impl SignalSource for PrometheusSignals {
    fn read<'a>(&'a self, url: &'a str, queries: &'a SignalQueries) -> BoxFuture<'a, Reading> {
        Box::pin(async move {
            match self.client(url) {
                Ok(client) => signals::read(&client, queries, self.timeout).await,
                Err(error) => Reading {
                    values: std::array::from_fn(|_| Err(error.clone())),
                },
            }
        })
    }
}
