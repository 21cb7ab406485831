//! What every reconcile shares: the client, the event recorder, the
//! rendering settings, leadership, metrics, the clock and retry state.

use std::sync::Arc;

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};

use crate::{
    backoff::Retries, clock::Clock, leader::Leadership, metrics::Metrics, render::RenderConfig,
};

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
    /// The time written into conditions.
    pub clock: Clock,
    /// Consecutive failures per policy, for backoff.
    pub retries: Retries,
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
        }
    }
}
