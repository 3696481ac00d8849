//! The accept loop: admits each connection under the caps, serves it with hyper (HTTP/1.1 and
//! HTTP/2), and on shutdown drains the generations before it stops accepting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::body::{TimedBody, Tracked};
use super::socket::Conn;
use crate::metrics::Arrival;
use crate::state::AppState;

/// Most bytes of a response the server buffers for a client before it stops pulling more from
/// the response body: a client that stops reading holds about this much, not its stream's
/// backlog (hyper's default is about 400 KB).
pub const MAX_CONN_WRITE_BUFFER: usize = 64 * 1024;

/// Serves until `shutdown` resolves; then drains: `/readyz` answers 503 so that load balancers
/// stop sending, new generations get 503 with `Retry-After`, running streams get the shutdown
/// grace period to finish (and can still be read and resumed, on new connections too), the rest
/// are ended with an error event; then it stops accepting, closes the connections and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.settings.shutdown_grace;
    let lifecycle = state.lifecycle.clone();
    let mut drained = {
        let state = state.clone();
        lifecycle.spawn(async move {
            shutdown.await;
            tracing::info!(
                "shutting down: /readyz answers 503 and new generations are refused; \
                 waiting up to {grace:?} for running streams"
            );
            state.lifecycle.drain(grace).await;
            // Readers on other instances get the ends just written.
            state.streams.shutdown(Duration::from_secs(2)).await;
        })
    };
    let metrics = state.clone();
    let connections = metrics.connections.clone();
    let header_timeout = metrics.settings.header_read_timeout;
    let write_timeout = metrics.settings.client_write_timeout;
    let body_timeout = metrics.settings.body_read_timeout;
    let registry_limits = metrics.registry.limits();
    let metrics = &metrics.metrics;
    let router = crate::app::app(state);
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
    let graceful = GracefulShutdown::new();
    let caps = connections.caps();
    tracing::info!(
        max_connections = caps.max_total,
        max_connections_per_ip = caps.max_per_ip,
        max_streams = registry_limits.max_live_streams,
        connection_rate_per_ip = caps.max_new_per_sec,
        header_read_timeout_secs = header_timeout.as_secs(),
        client_write_timeout_secs = write_timeout.as_secs(),
        body_read_timeout_secs = body_timeout.as_secs(),
        "connection limits"
    );
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut drained => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory for a moment: keep serving the connections
                    // we have, and try again shortly.
                    metrics.accept_error();
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
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        lifecycle.spawn(async move {
            let first_deadline = tokio::time::sleep(header_timeout);
            tokio::pin!(conn, first_deadline);
            let mut waiting_first = true;
            loop {
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Made room for a new connection: this one was idle. Dropping it closes it.
                    _ = admitted.close.cancelled() => break,
                    _ = &mut first_deadline, if waiting_first => {
                        if admitted.activity.requests() == 0 {
                            tracing::debug!("no request head within the header-read timeout: closing");
                            break;
                        }
                        waiting_first = false;
                    }
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    // Connections that stay open after every stream ended (an idle client, say) must not
    // hold the exit up for long.
    let _ = tokio::time::timeout(Duration::from_secs(3), graceful.shutdown()).await;
    Ok(())
}

/// hyper's executor (it spawns a task per HTTP/2 stream): through the lifecycle, like every
/// other task.
#[derive(Clone)]
struct Spawner(crate::lifecycle::Lifecycle);

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}
