//! Starting the limiter: load policies, build the store, serve HTTP, and
//! keep policies fresh until told to stop.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    Limiter,
    config::{Config, StoreKind},
    http::{AppState, router},
    metrics::Metrics,
    source::{self, PolicySource},
    store::{MemoryStore, MemoryStoreConfig},
};

/// How often expired counters are dropped from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the limiter until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let source = match &config.policy {
        Some(path) => PolicySource::Path(path.clone()),
        None => PolicySource::Embedded,
    };
    let loaded = source
        .load()
        .context("cannot start without valid policies")?;
    let keys: Vec<String> = loaded.policies.iter().map(|p| p.key()).collect();
    tracing::info!(source = %source.describe(), policies = ?keys, "Loaded policies");

    let StoreKind::Memory = config.store;
    let store_config = MemoryStoreConfig {
        max_counters: config.memory_max_counters,
        ..Default::default()
    };
    let store = MemoryStore::new(store_config);
    tokio::spawn(sweep(store.clone()));

    let limiter = Arc::new(Limiter::new(loaded.policies, store));
    let metrics = Arc::new(Metrics::new());
    metrics.policies.set(keys.len() as i64);
    tokio::spawn(source::watch(
        source,
        loaded.fingerprint,
        limiter.clone(),
        metrics.clone(),
        config.reload_interval,
    ));

    let state = Arc::new(AppState {
        limiter,
        metrics,
        max_body_bytes: config.max_body_bytes,
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "Serving the check API");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("Stopped");
    Ok(())
}

async fn sweep(store: MemoryStore) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.sweep()).await;
    }
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutting down: finishing requests in flight");
}
