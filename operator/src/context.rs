//! What every reconcile shares: the client, the event recorder, the
//! rendering settings, leadership, metrics, the clock, retry state, and
//! what adaptation needs.

use std::{sync::Arc, time::Duration};

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};

use crate::{
    adaptive::{
        adapters::Adapters,
        sink::{MultiplierSink, RedisSink},
        source::{PrometheusSignals, SignalSource},
    },
    backoff::Retries,
    clock::Clock,
    leader::Leadership,
    metrics::Metrics,
    render::RenderConfig,
};

/// Where adaptation reads signals and publishes multipliers.
#[derive(Clone)]
pub struct Adaptation {
    /// Reads a policy's signals.
    pub signals: Arc<dyn SignalSource>,
    /// Publishes a policy's multiplier for its limiters.
    pub sink: Arc<dyn MultiplierSink>,
}

impl Adaptation {
    /// Prometheus over HTTP and Redis, each call bounded by `timeout`.
    pub fn connected(timeout: Duration) -> Self {
        Self {
            signals: Arc::new(PrometheusSignals::new(timeout)),
            sink: Arc::new(RedisSink::new(timeout)),
        }
    }
}

/// The reconciler's shared state.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events about policies.
    pub recorder: Recorder,
    /// What rendering needs besides the policy.
    pub render: RenderConfig,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The time written into conditions, and the time adaptation ticks on.
    pub clock: Clock,
    /// Consecutive failures per policy, for backoff.
    pub retries: Retries,
    /// Where adaptation reads and publishes.
    pub adaptation: Adaptation,
    /// Each adaptive policy's controller.
    pub adapters: Adapters,
}

impl Context {
    /// A context whose Events name `instance` (the pod name) as reporter.
    pub fn new(
        client: Client,
        render: RenderConfig,
        leadership: Leadership,
        metrics: Arc<Metrics>,
        clock: Clock,
        instance: Option<String>,
        adaptation: Adaptation,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::render::MANAGER.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            render,
            leadership,
            metrics,
            clock,
            retries: Retries::default(),
            adaptation,
            adapters: Adapters::default(),
        }
    }
}
