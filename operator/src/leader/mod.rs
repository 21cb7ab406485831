//! Leader election on a `coordination.k8s.io` Lease, so that of several
//! operator replicas exactly one writes at a time.
//!
//! [`elector`] holds the rules, [`lock`] the API calls, and [`campaign`]
//! runs them: it publishes leadership through a [`Leadership`] handle that
//! the reconciler checks before every write, and releases the Lease when
//! told to stop.

mod elector;
mod lock;

use std::future::Future;

use k8s_openapi::api::coordination::v1::Lease;
use tokio::{sync::watch, time::Instant};

pub use elector::{Attempt, Elector, Timings, TimingsError};
pub use lock::{LeaseLock, LockError, Written};

use crate::clock::Clock;

/// Whether this replica leads, as seen by the code that writes.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

/// Sets what a [`Leadership`] reports.
#[derive(Debug)]
pub struct LeadershipSender(watch::Sender<bool>);

impl Leadership {
    /// A handle and the sender that moves it, starting at `leading`.
    pub fn channel(leading: bool) -> (LeadershipSender, Self) {
        let (tx, rx) = watch::channel(leading);
        (LeadershipSender(tx), Self(rx))
    }

    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once this replica leads (at once if it does).
    pub fn acquired(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reaches(true)
    }

    /// Resolves once this replica no longer leads (at once if it does
    /// not), or when the campaign has ended.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.reaches(false)
    }

    fn reaches(&self, wanted: bool) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            // An ended campaign leads no more.
            let _ = rx.wait_for(|leading| *leading == wanted).await;
        }
    }
}

impl LeadershipSender {
    /// Publishes `leading`; returns whether it changed.
    pub fn set(&self, leading: bool) -> bool {
        self.0.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        })
    }
}

/// Runs the election until `stop` resolves, then gives the Lease up if
/// this replica holds it. Leadership is published on `sender`.
///
/// Each round reads the Lease and makes the write the [`Elector`] decides.
/// While leading, a round that has not succeeded by the renew deadline is
/// abandoned and leadership ends at that deadline, however the API behaves.
pub async fn campaign(
    mut elector: Elector,
    lock: LeaseLock,
    clock: Clock,
    sender: LeadershipSender,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut held = None;
    loop {
        let started = Instant::now();
        let limit = elector
            .deadline()
            .unwrap_or(started + elector.timings().retry_period);
        let attempt = round(&mut elector, &lock, &clock, started);
        let round = tokio::select! {
            round = tokio::time::timeout_at(limit, attempt) => round,
            // A call that hangs must not hold up shutdown.
            () = &mut stop => break,
        };
        match round {
            Ok(Ok(lease)) => held = lease.or(held),
            Ok(Err(error)) => tracing::warn!(error = %error, "Leader election round failed"),
            Err(_) => tracing::warn!("Leader election round timed out"),
        }
        publish(&sender, &elector, Instant::now());
        let next = started + elector.timings().retry_period;
        let wake = elector
            .deadline()
            .map_or(next, |deadline| next.min(deadline));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => publish(&sender, &elector, Instant::now()),
            () = &mut stop => break,
        }
    }
    sender.set(false);
    release(&mut elector, &lock, &clock, held).await;
}

/// One read and at most one write. Returns the Lease as written when this
/// replica wrote it.
async fn round(
    elector: &mut Elector,
    lock: &LeaseLock,
    clock: &Clock,
    started: Instant,
) -> Result<Option<Lease>, LockError> {
    let read = lock.read().await?;
    let written = match (elector.attempt(read.as_ref(), started, clock.now()), &read) {
        (Attempt::Create(spec), _) => lock.create(spec).await?,
        (Attempt::Update(spec), Some(read)) => lock.replace(read, spec).await?,
        // The elector asks for an update only of a lease it was shown.
        (Attempt::Wait | Attempt::Update(_), _) => return Ok(None),
    };
    match written {
        Written::Stored(lease) => {
            elector.accepted(started);
            Ok(Some(*lease))
        }
        Written::Conflict => {
            elector.refused();
            Ok(None)
        }
    }
}

fn publish(sender: &LeadershipSender, elector: &Elector, now: Instant) {
    let leading = elector.is_leader(now);
    if sender.set(leading) {
        let identity = elector.identity();
        match leading {
            true => tracing::info!(identity, "Became leader"),
            false => tracing::info!(identity, "Stopped leading"),
        }
    }
}

/// Hands the Lease back so that another replica takes over at once,
/// instead of after a full lease duration.
async fn release(elector: &mut Elector, lock: &LeaseLock, clock: &Clock, held: Option<Lease>) {
    // A lease written long ago may have been taken since: only a leader
    // gives it up.
    let Some(lease) = held.filter(|_| elector.is_leader(Instant::now())) else {
        return;
    };
    let Some(spec) = elector.release(&lease, clock.now()) else {
        return;
    };
    match lock.replace(&lease, spec).await {
        Ok(Written::Stored(_)) => {
            tracing::info!(identity = elector.identity(), "Released the lease")
        }
        Ok(Written::Conflict) => {}
        Err(error) => tracing::warn!(error = %error, "Failed to release the lease"),
    }
}
