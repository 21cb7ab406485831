//! `sluice-operator run`: the operator's parts, wired.
//!
//! The HTTP endpoints and the election run for the whole life of the
//! process; the controller runs only while this replica leads, and starts
//! again if it leads again. On SIGTERM or Ctrl-C the controller stops
//! first (reconciles under way finish), then the Lease is released so
//! that a standby takes over at once.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::Context as _;
use kube::Client;
use tokio::sync::{oneshot, watch};

use crate::{
    cli::RunArgs,
    clock::Clock,
    context::{Adaptation, Context},
    controller,
    http::{self, HttpState},
    leader::{self, Elector, Leadership, LeaseLock},
    metrics::Metrics,
    render::RenderConfig,
};

/// Runs the operator until a shutdown signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let timings = args.timings();
    timings.check()?;
    let client = Client::try_default()
        .await
        .context("failed to configure the Kubernetes client")?;
    // A server that accepts connections and never answers must not hang
    // the start silently.
    let version = tokio::time::timeout(args.api_timeout, client.apiserver_version()).await;
    version
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", args.api_timeout))
        .and_then(|answered| answered.map_err(anyhow::Error::from))
        .context("failed to reach the Kubernetes API server")?;

    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = Shutdown::on_signals();
    let state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let server = tokio::spawn(http::serve(args.listen, state, shutdown.requested()));

    let identity = args.identity();
    let (sender, leadership) = Leadership::channel(false);
    let (stop_election, stopped) = oneshot::channel::<()>();
    let lock = LeaseLock::new(client.clone(), &args.lease_namespace, &args.lease_name);
    let elector = Elector::new(identity.clone(), timings);
    let election = tokio::spawn(leader::campaign(
        elector,
        lock,
        Clock::system(),
        sender,
        async {
            let _ = stopped.await;
        },
    ));
    let (lease, namespace) = (&args.lease_name, &args.lease_namespace);
    tracing::info!(identity = %identity, lease = %lease, namespace = %namespace, "Started");
    ready.store(true, Ordering::Relaxed);

    let render = RenderConfig {
        limiter_image: args.limiter_image,
    };
    let ctx = Context::new(
        client,
        render,
        leadership.clone(),
        metrics,
        Clock::system(),
        Some(identity),
        Adaptation::connected(args.adaptive_timeout),
    );
    lead_while_elected(Arc::new(ctx), leadership, &shutdown).await;

    ready.store(false, Ordering::Relaxed);
    let _ = stop_election.send(());
    election.await.context("the leader election task failed")?;
    server
        .await
        .context("the HTTP task failed")?
        .context("failed to serve HTTP")?;
    tracing::info!("Stopped");
    Ok(())
}

/// Runs the controller each time this replica is elected, until shutdown.
async fn lead_while_elected(ctx: Arc<Context>, leadership: Leadership, shutdown: &Shutdown) {
    loop {
        tokio::select! {
            () = leadership.acquired() => {}
            () = shutdown.requested() => return,
        }
        ctx.metrics.leader.set(1);
        let (lost, requested) = (leadership.lost(), shutdown.requested());
        let stop = async move {
            tokio::select! {
                () = lost => {}
                () = requested => {}
            }
        };
        controller::run(ctx.clone(), stop).await;
        ctx.metrics.leader.set(0);
        if shutdown.is_requested() {
            return;
        }
    }
}

/// Becomes set on SIGTERM or Ctrl-C.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            tracing::info!("Shutting down");
            let _ = tx.send(true);
        });
        Self(rx)
    }

    fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    fn requested(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|requested| *requested).await;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
