//! Accepting connections, with the bounds that keep a slow or hostile
//! client from taking a replica down.
//!
//! - at most `max_connections` open connections; past it, new ones are
//!   closed at once (the accept loop never waits);
//! - a client must send a request's headers within `header_timeout`, and a
//!   connection with no request in flight for that long is closed, whatever
//!   its protocol: one that never sends a whole request (not even the
//!   first bytes, which tell HTTP/1 from HTTP/2), and a keep-alive or
//!   HTTP/2 connection left idle;
//! - a request must finish within `request_timeout` (408 otherwise; this
//!   bounds slow bodies);
//! - a check's body must arrive within `body_timeout` (408 otherwise);
//! - at most `max_in_flight` checks are being decided at once; past it,
//!   checks are refused with 503 at once instead of queueing. A check
//!   counts only once its body has arrived, so clients trickling bodies
//!   hold connections (bounded above), never the slots of other clients.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::{Request, StatusCode},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

/// The bounds on clients.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Checks being decided at once at most (their bodies read).
    pub max_in_flight: usize,
    /// Time allowed for a check's body to arrive once its headers have.
    pub body_timeout: Duration,
    /// Time allowed to send a request's headers (and to sit idle).
    pub header_timeout: Duration,
    /// Time allowed for a whole request.
    pub request_timeout: Duration,
    /// Time requests in flight get to finish after a shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_in_flight: 4_096,
            body_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Wraps `router` in the bound on a whole request's time.
pub fn bounded(router: Router, limits: &ServeLimits) -> Router {
    let timeout =
        TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout);
    router.layer(timeout)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and gives requests in flight `drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment.
                    tracing::warn!(%error, "Failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("Refused a connection: at the connection bound");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: &builder,
            graceful: &graceful,
            idle: limits.header_timeout,
        };
        connection.spawn(stream, router.clone(), slot);
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("Requests still in flight after the drain timeout; stopping anyway");
        }
    }
}

/// How to serve one accepted connection.
struct Connection<'a> {
    builder: &'a Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    /// The longest a connection may have no request in flight.
    idle: Duration,
}

impl Connection<'_> {
    /// Serves `stream` on its own task, holding `slot` until it closes.
    fn spawn(&self, stream: TcpStream, router: Router, slot: OwnedSemaphorePermit) {
        let activity = Arc::new(Activity::new());
        let tracked = activity.clone();
        let service = ServiceExt::<Request<Incoming>>::map_future(router, move |response| {
            tracked.clone().track(response)
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = self.graceful.watch(connection);
        let idle = self.idle;
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {},
                () = activity.idle_for(idle) => {
                    tracing::debug!(?idle, "Closed a connection with no request in flight");
                }
            }
            drop(slot);
        });
    }
}

/// Whether a connection has requests in flight, and since when it has had
/// none. Hyper bounds the time to read HTTP/1 headers, but not the time
/// before it knows the protocol, nor how long an HTTP/2 connection may sit
/// idle; this bounds both.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request in flight ended, in ms since `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Counts `response` as in flight until it resolves (or is dropped).
    fn track<F: Future>(self: Arc<Self>, response: F) -> impl Future<Output = F::Output> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let done = InFlight(self);
        async move {
            let output = response.await;
            drop(done);
            output
        }
    }

    /// Resolves once the connection has had no request in flight for
    /// `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            // In flight first: a request that ended is then seen with the
            // time it ended.
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            let deadline = self.opened + since + limit;
            match busy {
                true => tokio::time::sleep(limit).await,
                false if Instant::now() >= deadline => return,
                false => tokio::time::sleep_until(deadline).await,
            }
        }
    }
}

/// One request in flight on a connection; ends when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ServeLimits {
            header_timeout: Duration::from_millis(200),
            ..ServeLimits::default()
        };
        tokio::spawn(serve(
            listener,
            Router::new(),
            limits,
            std::future::pending(),
        ));

        let mut silent = TcpStream::connect(address).await.unwrap();
        let opened = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut [0; 1])).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        assert!(
            opened.elapsed() < Duration::from_secs(1),
            "{:?}",
            opened.elapsed()
        );
    }
}
