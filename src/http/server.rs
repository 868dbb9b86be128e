//! The server loop: connections accepted within a cap, HTTP/1.1 under the
//! header and idle deadlines of a [`ConnectionClock`], and a shutdown bounded
//! in time (API.md, Limits and deadlines).
//!
//! hyper and hyper-util provide the connections and graceful shutdown; what
//! is written here is the accept loop that joins them with the connection
//! cap and the clock, which `axum::serve` has no setting for.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use super::connection_clock::{ClockedBody, ConnectionClock};

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// How long a request's header section may take to arrive, from its
    /// first byte (or from the connection's opening).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Most connections open at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// How long shutdown waits for requests under way before it closes
    /// their connections.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// under way finish for at most the grace period. `open` counts the
/// connections open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServerLimits,
    open: Gauge,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The connection clock keeps the header and idle deadlines.
    http.header_read_timeout(None);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Set once the grace period is over: every connection still open is
    // dropped, which closes its socket.
    let (force_close, forced) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, slot) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let clock = ConnectionClock::start(limits.header_timeout, limits.idle_timeout);
        let io = TokioIo::new(clock.watch_io(stream));
        let connection =
            graceful.watch(http.serve_connection(io, clocked(app.clone(), clock.clone())));
        let open = open.clone();
        let mut forced = forced.clone();
        open.inc();
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, "a connection ended with an error");
                    }
                }
                () = clock.expired() => {
                    tracing::debug!("a connection's header or idle deadline passed");
                }
                _ = forced.wait_for(|forced| *forced) => {}
            }
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period are closed");
        force_close.send_replace(true);
    }
}

/// `app` as hyper serves it on one connection: each request and the end of
/// each response told to the connection's clock.
fn clocked(
    app: Router,
    clock: Arc<ConnectionClock>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = axum::http::Response<ClockedBody>,
    Error = Infallible,
    Future: Send + 'static,
> {
    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        clock.request_started();
        let clock = clock.clone();
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await?;
            Ok(response.map(|body| clock.watch_body(body)))
        }
    })
}

/// Waits for a free connection slot, then for a connection. `TCP_NODELAY`
/// stays off: with it, every event sent to every feed left as a packet of its
/// own, and delivery to 100 feeds at 200 events a second went from a p99 of
/// about 5 ms to 12 ms (measured).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the slots are never closed");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return (stream, slot),
            // Out of file descriptors, say: wait rather than spin.
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
