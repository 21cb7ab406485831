//! The kube-runtime Controller: which watches wake which policy.
//!
//! Policies are watched in every namespace. Children are watched by their
//! `app.kubernetes.io/managed-by` label and mapped to their policy through
//! the controller owner reference, so that a child changed or deleted by
//! hand wakes its policy, whose reconcile puts the child back.

use std::{future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client,
    runtime::{
        Controller,
        controller::{self, Config},
        watcher,
    },
};
use sluice_crds::RateLimitPolicy;

use crate::{
    adapt,
    context::Context,
    reconcile::{error_policy, reconcile},
    render::{LABEL_MANAGED_BY, MANAGER},
};

/// How long the controller gathers events about one policy before a
/// reconcile, so that a burst (a rollout's status updates) costs one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// The controller, with every watch it needs.
pub fn build(client: Client) -> Controller<RateLimitPolicy> {
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    Controller::new(
        Api::<RateLimitPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ConfigMap>::all(client.clone()), children.clone())
    .owns(Api::<Deployment>::all(client.clone()), children.clone())
    .owns(Api::<Service>::all(client.clone()), children.clone())
    .owns(Api::<PodDisruptionBudget>::all(client), children)
    .with_config(Config::default().debounce(DEBOUNCE))
}

/// Runs the controller until `stop` resolves; reconciles under way finish
/// first.
///
/// Adaptive controllers are started afresh each time (from each policy's
/// status), since another replica may have led meanwhile.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = build(ctx.client.clone());
    adapt::forget_all(&ctx);
    ctx.metrics.count_policies_in(Some(controller.store()));
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let ctx = ctx.clone();
            async move { settle(result, &ctx) }
        })
        .await;
    ctx.metrics.count_policies_in(None);
    adapt::forget_all(&ctx);
}

type Ran = Result<
    (
        kube::runtime::reflector::ObjectRef<RateLimitPolicy>,
        kube::runtime::controller::Action,
    ),
    controller::Error<crate::reconcile::Error, watcher::Error>,
>;

/// Logs how a reconcile ended, and forgets a policy found gone. An
/// adaptive policy is always requeued, so its deletion shows here within
/// one interval.
fn settle(result: Ran, ctx: &Context) {
    match result {
        Ok((policy, _)) => tracing::trace!(policy = %policy, "Reconcile finished"),
        // error_policy has logged it.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        // A policy deleted between the event and the reconcile.
        Err(controller::Error::ObjectNotFound(policy)) => {
            let namespace = policy.namespace.as_deref().unwrap_or_default();
            adapt::forget(ctx, &format!("{namespace}/{}", policy.name));
            tracing::debug!(policy = %policy, "Policy gone before its reconcile")
        }
        Err(error) => tracing::warn!(error = %error, "Controller error"),
    }
}
