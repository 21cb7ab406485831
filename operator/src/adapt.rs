//! Adapt: the reconcile step that moves an adaptive policy's multiplier,
//! at most once per `adaptive.interval`.
//!
//! When a tick is due: read the signals, tick the policy's controller,
//! publish the multiplier for the limiters (with the Redis password from
//! the policy's Secret), record it in metrics, and report it for the
//! status. Reconciles in between (a child changed, the status was written)
//! do not tick: they report what the last tick did, so that a status
//! written meanwhile does not go back to an older multiplier.
//!
//! Nothing here fails a reconcile. Prometheus or Redis failing is told by
//! the `Adapting` condition and the metrics; the multiplier then holds (the
//! controller's rule when it is blind) and the next tick tries again.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{Api, Client};
use sluice_crds::{DEFAULT_NAMESPACE, RateLimitPolicy, RedisSpec, SecretKeyRef};

use crate::{
    adaptive::{
        adapter::Adapter,
        adapters::Turn,
        sink::{PublishError, RedisTarget},
    },
    context::Context,
    reconcile::describe,
    status::adapting::{Adapted, Publication},
};

/// How many stale periods a published multiplier lives in Redis: long
/// enough for limiters to see it go stale and ease back, short enough that
/// a policy gone leaves nothing behind for long.
pub const TTL_STALE_PERIODS: u32 = 3;

/// What adaptation contributes to a reconcile of an adaptive policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// What to record in the status: this tick's report, or the last one
    /// this process took. `None` when this process has not ticked the
    /// policy yet and no tick is due; the status then keeps what it holds.
    pub report: Option<Adapted>,
    /// How long until the next tick is due.
    pub next: Duration,
}

/// Ticks `policy` if a tick is due. `None` when it does not adapt; its
/// controller and metrics are then dropped.
pub async fn adapt(policy: &RateLimitPolicy, ctx: &Context) -> Option<Step> {
    let key = policy.key();
    let now = ctx.clock.now();
    let Some(turn) = ctx.adapters.turn(policy, now) else {
        ctx.metrics.forget_policy(&key);
        return None;
    };
    let adapter = match turn {
        Turn::Wait { report, due_in } => {
            return Some(Step {
                report,
                next: due_in,
            });
        }
        Turn::Due(adapter) => *adapter,
    };
    let next = adapter.interval;
    let (adapter, report) = tick(policy, adapter, now, ctx).await;
    let previous = ctx.adapters.ticked(&key, adapter, now, report.clone());
    log(&key, previous.as_ref(), &report);
    Some(Step {
        report: Some(report),
        next,
    })
}

/// Drops what adaptation keeps about `key`, a policy gone.
pub fn forget(ctx: &Context, key: &str) {
    ctx.adapters.forget(key);
    ctx.metrics.forget_policy(key);
}

/// Drops what adaptation keeps about every policy: this replica stops or
/// starts leading, and whatever it remembers may be older than the status.
pub fn forget_all(ctx: &Context) {
    for key in ctx.adapters.clear() {
        ctx.metrics.forget_policy(&key);
    }
}

async fn tick(
    policy: &RateLimitPolicy,
    mut adapter: Adapter,
    now: Timestamp,
    ctx: &Context,
) -> (Adapter, Adapted) {
    let signals = &ctx.adaptation.signals;
    let reading = signals
        .read(&adapter.prometheus_url, &adapter.queries)
        .await;
    let tick = adapter.tick(&reading, since_epoch(now));
    let strongest = adapter.strongest(&reading);

    let publication = publish(policy, tick.multiplier, ctx).await;
    ctx.metrics.adapted(&tick.policy, tick.multiplier, &reading);
    if let Publication::Failed(_) = &publication {
        ctx.metrics.publish_failed(&tick.policy);
    }

    let report = Adapted::new(&tick, &reading, strongest.as_ref(), &publication, Time(now));
    (adapter, report)
}

/// Publishes `multiplier` in the policy's Redis, if it has one.
async fn publish(policy: &RateLimitPolicy, multiplier: f64, ctx: &Context) -> Publication {
    let Some(redis) = &policy.spec.limiter.redis else {
        return Publication::NoRedis;
    };
    let ttl = policy.spec.multiplier_stale_after().as_std() * TTL_STALE_PERIODS;
    let published = async {
        let target = redis_target(policy, redis, &ctx.client).await?;
        let sink = &ctx.adaptation.sink;
        sink.publish(&target, &policy.key(), multiplier, ttl).await
    };
    match published.await {
        Ok(()) => Publication::Published,
        Err(error) => Publication::Failed(error.to_string()),
    }
}

/// Where to publish. The password is read from its Secret at each tick,
/// so that a rotated password is used from the next tick on, at the cost
/// of one GET per tick.
async fn redis_target(
    policy: &RateLimitPolicy,
    redis: &RedisSpec,
    client: &Client,
) -> Result<RedisTarget, PublishError> {
    let password = match &redis.password_secret_ref {
        Some(reference) => {
            let namespace = policy
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(DEFAULT_NAMESPACE);
            read_password(client, namespace, reference).await?
        }
        None => None,
    };
    Ok(RedisTarget {
        url: redis.url.clone(),
        cluster: redis.cluster,
        password,
    })
}

/// The password in `reference`, as the limiter pods get it: the key's
/// bytes as they are, an empty one meaning none.
async fn read_password(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<Option<String>, PublishError> {
    let failed = |reason: String| PublishError::ReadPassword {
        secret: format!("{namespace}/{}", reference.name),
        reason,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(&reference.name)
        .await
        .map_err(|e| failed(describe(&e)))?;
    let key = &reference.key;
    let bytes = secret
        .data
        .and_then(|mut data| data.remove(key))
        .ok_or_else(|| failed(format!("it has no key {key}")))?;
    let password =
        String::from_utf8(bytes.0).map_err(|_| failed(format!("its key {key} is not text")))?;
    Ok(Some(password).filter(|p| !p.is_empty()))
}

/// `now` as the controller counts time: since the epoch.
fn since_epoch(now: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(now.as_millisecond()).unwrap_or(0))
}

/// Logs a change of the multiplier, and a failure when it begins (the
/// `Adapting` Event and the metrics tell the rest); every tick at debug.
fn log(key: &str, previous: Option<&Adapted>, report: &Adapted) {
    let (multiplier, reason) = (report.multiplier, report.condition.reason);
    if previous.is_none_or(|p| p.multiplier != multiplier) {
        tracing::info!(policy = %key, multiplier, reason, "Adapted limits");
    }
    let failing = !report.condition.status;
    if failing && previous.is_none_or(|p| p.condition.reason != reason) {
        let message = &report.condition.message;
        tracing::warn!(policy = %key, reason, message = %message, "Adaptation impaired");
    }
    tracing::debug!(policy = %key, multiplier, reason, "Adaptation ticked");
}
