//! Reconcile: one pass per policy, as a pipeline.
//!
//! 1. validate — the spec's rules and the policy's name ([`crate::validate`]);
//!    an invalid spec gets a status saying why, and nothing else changes;
//! 2. render — the children, as pure functions ([`crate::render`]);
//! 3. apply — server-side apply of each child, owned by the policy
//!    ([`crate::apply`]);
//! 4. adapt — for a policy with `spec.adaptive`, one tick of its
//!    controller when one is due, published for the limiters
//!    ([`crate::adapt`]);
//! 5. status — conditions, ready replicas, effective limits and the
//!    adaptive fields ([`crate::status`]), and an Event for each failure,
//!    change of readiness or of adaptation ([`crate::events`]).
//!
//! Every write first checks that this replica leads: a replica that lost
//! its lease stops writing mid-pass.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{Resource, runtime::controller::Action};
use sluice_crds::{RateLimitPolicy, RateLimitPolicyStatus};

use crate::{
    adapt::{Step, adapt},
    apply::{apply, apply_status, delete_if_present},
    context::Context,
    events::{self, Notice},
    metrics::ReconcileResult,
    render::{Children, Owner, RenderError, render},
    status::{self, Rollout},
    validate::validate,
};

/// How often a healthy policy is reconciled again without any change, to
/// repair drift that a missed watch event would hide. An adaptive policy
/// comes back sooner: when its next tick is due.
pub const RESYNC: Duration = Duration::from_secs(600);

/// Why a reconcile failed; each is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The children could not be rendered.
    #[error("failed to render the children of {policy}: {source}")]
    Render {
        /// `<namespace>/<name>` of the policy.
        policy: String,
        /// Why.
        source: RenderError,
    },
    /// Applying the ConfigMap failed.
    #[error("failed to apply ConfigMap {name}: {}", describe(.source))]
    ApplyConfigMap {
        /// `<namespace>/<name>` of the ConfigMap.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Applying the Deployment failed.
    #[error("failed to apply Deployment {name}: {}", describe(.source))]
    ApplyDeployment {
        /// `<namespace>/<name>` of the Deployment.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Applying the Service failed.
    #[error("failed to apply Service {name}: {}", describe(.source))]
    ApplyService {
        /// `<namespace>/<name>` of the Service.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Applying the PodDisruptionBudget failed.
    #[error("failed to apply PodDisruptionBudget {name}: {}", describe(.source))]
    ApplyPodDisruptionBudget {
        /// `<namespace>/<name>` of the PodDisruptionBudget.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Deleting a PodDisruptionBudget no longer needed failed.
    #[error("failed to delete PodDisruptionBudget {name}: {}", describe(.source))]
    DeletePodDisruptionBudget {
        /// `<namespace>/<name>` of the PodDisruptionBudget.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Writing the policy's status failed.
    #[error("failed to write the status of {policy}: {}", describe(.source))]
    WriteStatus {
        /// `<namespace>/<name>` of the policy.
        policy: String,
        /// What the API answered.
        source: kube::Error,
    },
}

/// An API error as a person reads it: code, reason and message, without
/// the client's debug dump.
pub(crate) fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// How a pass ended, short of a failure.
enum Outcome {
    /// Children applied, status written; the next pass is due after this
    /// long.
    Applied(Duration),
    /// The spec is invalid; the status says why.
    Rejected,
}

/// Why a pass stopped early.
enum Halt {
    /// This replica does not lead: it must not write.
    NotLeader,
    /// A step failed.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Self::Failed(error)
    }
}

/// Reconciles one policy; the controller calls this for every change of
/// the policy or of a child it owns.
pub async fn reconcile(policy: Arc<RateLimitPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let key = policy.key();
    let (result, action) = match pipeline(&policy, &ctx).await {
        Ok(Outcome::Applied(next)) => (ReconcileResult::applied, Ok(Action::requeue(next))),
        // An invalid spec stays invalid until someone edits it.
        Ok(Outcome::Rejected) => (ReconcileResult::rejected, Ok(Action::await_change())),
        // The next leader reconciles every policy when it starts.
        Err(Halt::NotLeader) => (ReconcileResult::skipped, Ok(Action::await_change())),
        Err(Halt::Failed(error)) => (ReconcileResult::failed, Err(error)),
    };
    if action.is_ok() {
        ctx.retries.succeeded(&key);
    }
    ctx.metrics.reconciled(result, started.elapsed());
    tracing::debug!(policy = %key, result = ?result, "Reconciled");
    action
}

/// Waits before retrying a failed policy, longer after each failure in a
/// row.
pub fn error_policy(policy: Arc<RateLimitPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = policy.key();
    let delay = ctx.retries.failed(&key);
    tracing::warn!(policy = %key, error = %error, retry_in = ?delay, "Reconcile failed");
    Action::requeue(delay)
}

async fn pipeline(policy: &RateLimitPolicy, ctx: &Context) -> Result<Outcome, Halt> {
    let render_failed = |source| Error::Render {
        policy: policy.key(),
        source,
    };
    let owner = Owner::of(policy).map_err(render_failed)?;
    if let Err(problems) = validate(policy) {
        let status = status::rejected(
            policy.status.as_ref(),
            generation(policy),
            &problems,
            &now(ctx),
        );
        write_status(policy, &owner, status, ctx).await?;
        tracing::info!(policy = %owner.key(), problems = %problems, "Rejected an invalid spec");
        return Ok(Outcome::Rejected);
    }

    let children = render(policy, &ctx.render).map_err(render_failed)?;

    let deployment = match apply_children(&children, &owner, ctx).await {
        Ok(deployment) => deployment,
        Err(Halt::Failed(error)) => {
            report_failure(policy, &owner, &error, ctx).await;
            return Err(Halt::Failed(error));
        }
        Err(halt) => return Err(halt),
    };

    // Adapting publishes in Redis: a write, for the leader only.
    if !ctx.leadership.is_leader() {
        return Err(Halt::NotLeader);
    }
    let adapted = adapt(policy, ctx).await;

    let rollout = Rollout::of(&deployment);
    let old = policy.status.as_ref();
    let mut status = status::serving(
        old,
        generation(policy),
        &owner,
        &policy.spec,
        &rollout,
        &now(ctx),
    );
    let next = record_adaptation(&mut status, policy, adapted.as_ref());
    write_status(policy, &owner, status, ctx).await?;
    Ok(Outcome::Applied(next))
}

/// Writes what adaptation reported into `status`, or clears it for a
/// policy that does not adapt; returns when the next pass is due.
fn record_adaptation(
    status: &mut RateLimitPolicyStatus,
    policy: &RateLimitPolicy,
    step: Option<&Step>,
) -> Duration {
    let Some(step) = step else {
        status::adapting::stopped(status, &policy.spec);
        return RESYNC;
    };
    if let Some(report) = &step.report {
        status::adapting::record(status, &policy.spec, report, generation(policy));
    }
    step.next.min(RESYNC)
}

/// Applies every child, the ConfigMap first so that new pods find it, and
/// returns the Deployment as stored, with its status.
async fn apply_children(
    children: &Children,
    owner: &Owner,
    ctx: &Context,
) -> Result<Deployment, Halt> {
    let client = &ctx.client;
    let at = |name: String| format!("{}/{name}", owner.namespace);
    let (config_map, limiter) = (at(owner.config_map_name()), at(owner.limiter_name()));

    guarded(ctx, apply(client, &children.config_map), |source| {
        Error::ApplyConfigMap {
            name: config_map,
            source,
        }
    })
    .await?;

    let deployment = guarded(ctx, apply(client, &children.deployment), |source| {
        Error::ApplyDeployment {
            name: limiter.clone(),
            source,
        }
    })
    .await?;

    guarded(ctx, apply(client, &children.service), |source| {
        Error::ApplyService {
            name: limiter.clone(),
            source,
        }
    })
    .await?;

    match &children.pdb {
        Some(pdb) => {
            let fail = |source| Error::ApplyPodDisruptionBudget {
                name: limiter,
                source,
            };
            guarded(ctx, apply(client, pdb), fail).await?;
        }
        None => {
            // Replicas went down to one: the budget must go.
            let name = owner.limiter_name();
            let delete = delete_if_present::<PodDisruptionBudget>(client, &owner.namespace, &name);
            let fail = |source| Error::DeletePodDisruptionBudget {
                name: limiter,
                source,
            };
            guarded(ctx, delete, fail).await?;
        }
    }
    Ok(deployment)
}

/// Runs `write` only while this replica leads.
async fn guarded<T>(
    ctx: &Context,
    write: impl Future<Output = Result<T, kube::Error>>,
    failed: impl FnOnce(kube::Error) -> Error,
) -> Result<T, Halt> {
    if !ctx.leadership.is_leader() {
        return Err(Halt::NotLeader);
    }
    write.await.map_err(|e| Halt::Failed(failed(e)))
}

/// Writes `status` when it differs from the policy's, then publishes the
/// Events its changes call for.
async fn write_status(
    policy: &RateLimitPolicy,
    owner: &Owner,
    status: RateLimitPolicyStatus,
    ctx: &Context,
) -> Result<(), Halt> {
    let old = policy.status.as_ref();
    if old == Some(&status) {
        return Ok(());
    }
    let fail = |source| Error::WriteStatus {
        policy: owner.key(),
        source,
    };
    guarded(ctx, apply_status(&ctx.client, owner, &status), fail).await?;
    for notice in events::changes(old, &status) {
        publish(policy, &notice, ctx).await;
    }
    Ok(())
}

/// Says in the status and in an Event that applying failed. Both are best
/// effort: the failure itself is returned and retried either way.
async fn report_failure(policy: &RateLimitPolicy, owner: &Owner, error: &Error, ctx: &Context) {
    let message = error.to_string();
    let status = status::apply_failed(
        policy.status.as_ref(),
        generation(policy),
        &message,
        &now(ctx),
    );
    if let Err(Halt::Failed(e)) = write_status(policy, owner, status, ctx).await {
        let key = owner.key();
        tracing::warn!(policy = %key, error = %e, "Failed to report a failure in the status");
    }
    publish(policy, &events::apply_failure(&message), ctx).await;
}

/// Publishes an Event about `policy`, if this replica leads. A failure to
/// publish is logged and otherwise ignored.
async fn publish(policy: &RateLimitPolicy, notice: &Notice, ctx: &Context) {
    if !ctx.leadership.is_leader() {
        return;
    }
    let published = ctx
        .recorder
        .publish(&notice.to_event(), &policy.object_ref(&()))
        .await;
    if let Err(error) = published {
        let (key, reason) = (policy.key(), &notice.reason);
        tracing::warn!(policy = %key, reason = %reason, error = %error, "Failed to publish event");
    }
}

fn generation(policy: &RateLimitPolicy) -> Option<i64> {
    policy.meta().generation
}

fn now(ctx: &Context) -> Time {
    Time(ctx.clock.now())
}
