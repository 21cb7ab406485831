//! Starting the limiter: load policies, build the store, serve HTTP, and
//! keep policies (and multipliers) fresh until told to stop.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    Fallback, Limiter,
    breaker::Breaker,
    config::{Config, StoreKind},
    http::{AppState, router, serve},
    metrics::Metrics,
    multiplier,
    source::{self, PolicySource},
    store::{MemoryStore, MemoryStoreConfig, RedisStore, Store, redis::display_url},
};

/// How often expired counters are dropped from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How often each policy syncs with Redis (heartbeat, multiplier).
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

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
    metrics.policies.set(keys.len() as i64);

    match config.store {
        StoreKind::Memory => {
            config.check_memory()?;
            let store = memory_store(&config);
            let limiter = Arc::new(Limiter::new(loaded.policies, store.clone()));
            tokio::spawn(sweep(store));
            follow_source(&config, source, loaded.fingerprint, &limiter, &metrics);
            listen(&config, limiter, metrics).await
        }
        StoreKind::Redis => {
            let redis_config = config.redis()?;
            let url = display_url(&redis_config.url);
            let (redis, unreachable) = RedisStore::start(&redis_config)
                .await
                .with_context(|| format!("cannot use Redis at {url}"))?;
            let local = memory_store(&config);
            let fallback = Fallback {
                local: local.clone(),
                breaker: Breaker::new(config.breaker_threshold),
                metrics: metrics.clone(),
            };
            match &unreachable {
                None => tracing::info!(%url, cluster = redis_config.cluster, "Counting in Redis"),
                Some(error) => {
                    tracing::warn!(%url, %error, "Redis unreachable at start: serving degraded until it answers");
                    fallback.open_now(error);
                }
            }
            let limiter =
                Arc::new(Limiter::new(loaded.policies, redis.clone()).with_fallback(fallback));
            tokio::spawn(sweep(local));
            follow_source(&config, source, loaded.fingerprint, &limiter, &metrics);
            let probe = limiter.clone();
            let interval = config.breaker_probe_interval;
            tokio::spawn(async move { probe.probe_store(interval).await });
            tokio::spawn(multiplier::follow(
                limiter.clone(),
                redis,
                metrics.clone(),
                SYNC_INTERVAL,
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

/// Starts following the policy source for changes.
fn follow_source<S: Store>(
    config: &Config,
    source: PolicySource,
    seen: blake3::Hash,
    limiter: &Arc<Limiter<S>>,
    metrics: &Arc<Metrics>,
) {
    let watch = source::watch(
        source,
        seen,
        limiter.clone(),
        metrics.clone(),
        config.reload_interval,
    );
    tokio::spawn(watch);
}

/// Serves the HTTP API until a shutdown signal, then finishes requests in
/// flight.
async fn listen<S: Store>(
    config: &Config,
    limiter: Arc<Limiter<S>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let limits = config.serve_limits();
    let state = AppState::new(limiter, metrics, config.max_body_bytes, &limits);
    let state = Arc::new(state);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "Serving the check API");
    serve::serve(
        listener,
        serve::bounded(router(state), &limits),
        limits,
        shutdown_signal(),
    )
    .await;
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
