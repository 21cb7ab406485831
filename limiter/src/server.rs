//! Starting the limiter: load policies, build the store, serve HTTP, and
//! keep policies (and multipliers) fresh until told to stop.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    Limiter,
    config::{Config, StoreKind},
    http::{AppState, router},
    metrics::Metrics,
    multiplier,
    source::{self, Loaded, PolicySource},
    store::{MemoryStore, MemoryStoreConfig, RedisStore, Store},
};

/// How often expired counters are dropped from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How often multipliers are read from Redis.
const MULTIPLIER_INTERVAL: Duration = Duration::from_secs(1);

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
    let metrics = Arc::new(Metrics::new());

    match config.store {
        StoreKind::Memory => {
            let store = memory_store(&config);
            tokio::spawn(sweep(store.clone()));
            serve(&config, source, loaded, store, metrics).await
        }
        StoreKind::Redis => {
            let redis_config = config.redis()?;
            let store = RedisStore::connect(&redis_config)
                .await
                .with_context(|| format!("cannot connect to Redis at {}", redis_config.url))?;
            tracing::info!(url = %redis_config.url, cluster = redis_config.cluster, "Counting in Redis");
            let limiter = serve_prepare(&config, source, loaded, store.clone(), metrics.clone());
            tokio::spawn(multiplier::follow(
                limiter.clone(),
                store,
                metrics.clone(),
                MULTIPLIER_INTERVAL,
            ));
            listen(&config, limiter, metrics).await
        }
    }
}

fn memory_store(config: &Config) -> MemoryStore {
    let sizing = MemoryStoreConfig {
        max_counters: config.memory_max_counters,
        ..Default::default()
    };
    MemoryStore::new(sizing)
}

async fn serve<S: Store>(
    config: &Config,
    source: PolicySource,
    loaded: Loaded,
    store: S,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let limiter = serve_prepare(config, source, loaded, store, metrics.clone());
    listen(config, limiter, metrics).await
}

/// Builds the limiter and starts following the policy source.
fn serve_prepare<S: Store>(
    config: &Config,
    source: PolicySource,
    loaded: Loaded,
    store: S,
    metrics: Arc<Metrics>,
) -> Arc<Limiter<S>> {
    metrics.policies.set(loaded.policies.len() as i64);
    let limiter = Arc::new(Limiter::new(loaded.policies, store));
    let watch = source::watch(
        source,
        loaded.fingerprint,
        limiter.clone(),
        metrics,
        config.reload_interval,
    );
    tokio::spawn(watch);
    limiter
}

/// Serves the HTTP API until a shutdown signal, then finishes requests in
/// flight.
async fn listen<S: Store>(
    config: &Config,
    limiter: Arc<Limiter<S>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
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
