//! The accept loop: admits each connection under the caps, serves it with hyper (HTTP/1.1 and
//! HTTP/2), and on shutdown drains the generations before it stops accepting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::body::{Arrival, TimedBody, Tracked};
use super::connections::Connections;
use super::socket::Conn;
use crate::gate::Gate;
use crate::lifecycle::Lifecycle;

/// Most bytes of a response the server buffers for a client before it stops pulling more from
/// the response body: a client that stops reading holds about this much, not its stream's
/// backlog (hyper's default is about 400 KB).
pub const MAX_CONN_WRITE_BUFFER: usize = 64 * 1024;

/// What the accept loop needs from the rest of the gateway.
pub struct Serving {
    /// Every request goes to this service (the gateway's router).
    pub router: axum::Router,
    pub connections: Arc<Connections>,
    /// Spawns each connection's task (and HTTP/2's per-stream tasks).
    pub lifecycle: Lifecycle,
    /// The time a client has to send a request head; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// How long a response's write may make no progress (see [`super::socket`]).
    pub client_write_timeout: Duration,
    /// The time a client has to send a whole request body.
    pub body_read_timeout: Duration,
    /// Counts failed `accept` calls (out of descriptors, say).
    pub accept_errors: prometheus_client::metrics::counter::Counter,
}

/// Accepts and serves connections until `drained` resolves (the caller's shutdown sequence:
/// until it is done, connections, new ones included, are still served, so that running streams
/// can be read and resumed); then stops accepting, gives open connections a moment to close,
/// and returns.
pub async fn serve(
    listener: TcpListener,
    serving: Serving,
    drained: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Serving {
        router,
        connections,
        lifecycle,
        header_read_timeout: header_timeout,
        client_write_timeout: write_timeout,
        body_read_timeout: body_timeout,
        accept_errors,
    } = serving;
    let mut drained = lifecycle.spawn(drained);
    let mut builder = Builder::new(Spawner(lifecycle.clone()));
    builder
        .http1()
        .max_buf_size(MAX_CONN_WRITE_BUFFER)
        // Also the idle keep-alive timeout: hyper times the wait for every request head from
        // the end of the previous response.
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // The same HTTP/1 settings, for connections known to speak HTTP/1 (see below).
    let mut h1_builder = hyper::server::conn::http1::Builder::new();
    h1_builder
        .max_buf_size(MAX_CONN_WRITE_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let h1_builder = Arc::new(h1_builder);
    // Tells every connection to finish its response and close (or, before its first byte, to
    // close); each holds a receiver, so shutdown can wait for them all.
    let (closing, _) = tokio::sync::watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut drained => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory for a moment: keep serving the connections
                    // we have, and try again shortly.
                    accept_errors.inc();
                    tracing::warn!(error = %e, "accept failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over a cap with every connection busy: refuse at once (dropping closes it).
        let Some(admitted) = connections.admit(peer.ip()) else {
            continue;
        };
        let (io, hint) = Conn::new(tcp);
        let io = io.with_write_timeout(write_timeout);
        let router = router.clone();
        let activity = admitted.activity.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            let mut req = req.map(|body| TimedBody::new(body, body_timeout, &activity));
            req.extensions_mut()
                .insert(Arrival(std::time::Instant::now()));
            req.extensions_mut().insert(hint.clone());
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let resp = router.clone().oneshot(req.map(axum::body::Body::new));
            async move {
                let resp = resp.await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let builder = builder.clone();
        let h1_builder = h1_builder.clone();
        // Counts the connection as open until its task ends (shutdown waits for them all).
        let open = closing.subscribe();
        let first_deadline = tokio::time::Instant::now() + header_timeout;
        let mut stop = Gate::new(stop_signals(&admitted, first_deadline, closing.subscribe()));
        lifecycle.spawn(async move {
            let speaks_http1 = tokio::select! {
                biased;
                first = io.speaks_http1() => match first {
                    Ok(Some(h1)) => h1,
                    // Closed (or failed) before a byte: nothing to serve.
                    Ok(None) | Err(_) => return,
                },
                // Before its first byte a connection has no response to finish: any stop,
                // a drain too, closes it.
                _ = &mut stop => return,
            };
            // Made in here, not captured: a captured connection that is then pinned keeps its
            // captured slot too, twice hyper's connection state for as long as it is open.
            // HTTP/1 goes straight to hyper's HTTP/1 server: the version sniffing of the auto
            // builder reads the first 24 bytes itself and hands them back as a first short
            // read, which makes hyper grow its read buffer from 8 to 16 KiB on every
            // connection (kept for as long as the connection is open).
            // Pinned here and lent: `run_connection` taking it by value would hold it twice.
            if speaks_http1 {
                let conn = h1_builder.serve_connection(TokioIo::new(io), svc);
                tokio::pin!(conn);
                run_connection(conn, stop, &admitted.close).await;
            } else {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), svc)
                    .into_owned();
                tokio::pin!(conn);
                run_connection(conn, stop, &admitted.close).await;
            }
            drop(open);
            drop(admitted);
        });
    }
    drop(listener);
    // Connections that stay open after every stream ended (an idle client, say) must not
    // hold the exit up for long.
    closing.send_replace(());
    let _ = tokio::time::timeout(Duration::from_secs(3), closing.closed()).await;
    Ok(())
}

/// What ends a connection besides its own traffic.
enum Stop {
    /// Close it now: the caps need its room, or it sent no request head in time.
    Close,
    /// The server is shutting down: finish the response under way, then close.
    Drain,
}

type StopSignals = Pin<Box<dyn Future<Output = Stop> + Send>>;

/// The rare events of a connection's life, as one future: the caps closing it, no request head
/// by `first_deadline`, the server draining.
fn stop_signals(
    admitted: &super::connections::Admitted,
    first_deadline: tokio::time::Instant,
    mut closing: tokio::sync::watch::Receiver<()>,
) -> StopSignals {
    let close = admitted.close.clone().cancelled_owned();
    let activity = admitted.activity.clone();
    Box::pin(async move {
        let silent = async {
            tokio::time::sleep_until(first_deadline).await;
            if activity.requests() == 0 {
                tracing::debug!("no request head within the header-read timeout: closing");
                return;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            biased;
            () = close => Stop::Close,
            () = silent => Stop::Close,
            // A dropped sender (the accept loop is gone) drains too.
            _ = closing.changed() => Stop::Drain,
        }
    })
}

/// Serves `conn` until it ends, the caps close it or the server drains. Its rare events are
/// gated: polling them on every response chunk would take a lock per token of the stream the
/// connection carries.
async fn run_connection<C>(
    mut conn: Pin<&mut C>,
    mut stop: Gate<StopSignals>,
    close: &tokio_util::sync::CancellationToken,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    loop {
        tokio::select! {
            biased;
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            s = &mut stop => match s {
                Stop::Close => return,
                Stop::Drain => {
                    // Finish the response under way, then close; unless the caps need the
                    // room first.
                    conn.as_mut().graceful_shutdown();
                    let close = close.clone().cancelled_owned();
                    stop = Gate::new(Box::pin(async move {
                        close.await;
                        Stop::Close
                    }));
                }
            },
        }
    }
}

/// hyper's executor (it spawns a task per HTTP/2 stream): through the lifecycle, like every
/// other task.
#[derive(Clone)]
struct Spawner(Lifecycle);

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}
