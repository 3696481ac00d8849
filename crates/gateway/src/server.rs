//! Building the state and serving: `serve(listener, state, shutdown)` takes its listener and
//! shutdown signal from the caller (tests pass port 0 and their own signal).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use provider_adapter::{Provider, ProviderKind};
use relay::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::access::Access;
use crate::config::{Flags, Settings, Vars};
use crate::conn::Conn;
use crate::metrics::{Arrival, Metrics};
use crate::routing::ModelRouter;
use crate::state::{AppState, Inner};

/// A response body that marks its request finished when it is done with (sent or dropped), so
/// the connection counts as idle again (see `crate::connections`).
struct Tracked {
    body: axum::body::Body,
    _in_flight: crate::connections::InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body with a deadline for all of it (`SLUICE_BODY_READ_TIMEOUT_SECS`, from the end
/// of the head), whose connection counts as idle until it has arrived: a client trickling a
/// body neither holds a connection past the deadline nor keeps the connection cap from closing
/// it to make room. Once the body is complete it is a plain body.
struct TimedBody {
    inner: Incoming,
    /// Both `None` once the body has arrived (or failed).
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    awaiting: Option<crate::connections::AwaitingBody>,
}

/// The error a [`TimedBody`] ends with when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// Whether a body rejection is a [`TimedBody`]'s deadline (wrapped by axum's body limit and
/// rejection types).
pub fn is_body_timeout(rej: &axum::extract::rejection::BytesRejection) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(rej);
    while let Some(err) = e {
        if err.is::<BodyTimeout>() {
            return true;
        }
        e = err.source();
    }
    false
}

impl TimedBody {
    fn new(
        inner: Incoming,
        timeout: Duration,
        activity: &Arc<crate::connections::Activity>,
    ) -> Self {
        use hyper::body::Body as _;
        if inner.is_end_stream() {
            return Self {
                inner,
                deadline: None,
                awaiting: None,
            };
        }
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            awaiting: Some(activity.awaiting_body()),
        }
    }

    fn arrived(&mut self) {
        self.deadline = None;
        self.awaiting = None;
    }
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => this.arrived(),
            Poll::Ready(Some(Err(_))) => this.arrived(),
            Poll::Ready(Some(Ok(_))) => {
                if hyper::body::Body::is_end_stream(&this.inner) {
                    this.arrived();
                }
            }
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        this.arrived();
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                    }
                }
                return Poll::Pending;
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot set up provider {name}: {message}")]
    Provider { name: String, message: String },
    #[error("cannot start the demo model: {0}")]
    Demo(std::io::Error),
    #[error("cannot set up the redis connection: {0}")]
    Redis(String),
}

/// Builds the shared state. With the demo on, the demo upstream is started on a loopback port
/// and served through the same provider path a real upstream takes; `stop` ends it.
pub async fn build_state(
    settings: Settings,
    stop: CancellationToken,
) -> Result<AppState, StartupError> {
    let mut router = ModelRouter::default();
    if settings.demo {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(StartupError::Demo)?;
        let addr = listener.local_addr().map_err(StartupError::Demo)?;
        let cfg = mock_upstream::MockConfig {
            tokens_per_sec: settings.demo_tokens_per_sec,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = mock_upstream::serve(listener, cfg, stop.cancelled_owned()).await {
                tracing::error!(error = %e, "demo upstream stopped");
            }
        });
        let p = Provider::new(
            "sluice-demo",
            ProviderKind::OpenAi,
            format!("http://{addr}/v1"),
            None,
            settings.timeouts,
        )
        .map_err(|e| StartupError::Provider {
            name: "sluice-demo".into(),
            message: e.to_string(),
        })?;
        router.push(p, vec![mock_upstream::DEMO_MODEL.to_owned()]);
    }
    for p in &settings.providers {
        let provider = Provider::new(
            p.name.clone(),
            p.kind,
            p.base_url.clone(),
            p.api_key.clone(),
            settings.timeouts,
        )
        .map_err(|e| StartupError::Provider {
            name: p.name.clone(),
            message: e.to_string(),
        })?
        .with_headers(p.headers.clone());
        let provider = match &p.api_version {
            Some(v) => provider.with_api_version(v.clone()),
            None => provider,
        };
        router.push(provider, p.models.clone());
    }
    for r in &settings.routes {
        router.push_route(r);
    }
    // Unset caps are derived from the descriptors a stream needs (see `host::default_caps`); a
    // connection cap that is set bounds the default stream cap too.
    let derived = crate::host::default_caps(
        crate::host::open_files_soft(),
        crate::host::descriptors_per_stream(settings.demo),
    );
    let max_connections = settings.max_connections.unwrap_or(derived.max_connections);
    let registry = Arc::new(Registry::new(relay::Limits {
        retention: settings.stream_retention,
        max_stream_bytes: settings.relay_max_stream_bytes,
        // Unset: a share of the memory this process may use, read from the host here, at
        // start (the settings are pure).
        max_total_bytes: crate::host::relay_bound(
            settings.relay_max_total_bytes,
            crate::host::memory_limit().map(|l| l.bytes),
        ),
        max_readers_per_stream: settings.stream_max_readers,
        max_live_streams: match settings.max_streams {
            None => derived.max_streams.min(max_connections),
            Some(0) => usize::MAX,
            Some(n) => n,
        },
    }));
    // Expired streams are dropped in the background; lookups also check expiry themselves.
    {
        let registry = registry.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => { registry.sweep(); }
                }
            }
        });
    }
    let shared = match &settings.redis {
        None => None,
        Some(r) => {
            let s = crate::shared_state::SharedState::new(r)
                .map_err(|e| StartupError::Redis(e.to_string()))?;
            tracing::info!(redis = %s.redacted_url, instance = %s.instance, on_failure = ?s.on_failure, "shared state in redis");
            Some(Arc::new(s))
        }
    };
    // Team limits are shared through Redis when it is configured, else kept in this process.
    let limit_store: Arc<dyn crate::access::LimitStore> = match &shared {
        Some(s) => crate::access::RedisStore::new(s.clone()),
        None => Arc::new(crate::access::MemoryStore::new()),
    };
    let access = Access::with_store(
        settings.teams.clone(),
        settings.rate_limit_window,
        limit_store,
    );
    let connections = crate::connections::Connections::new(crate::connections::Caps {
        max_total: max_connections,
        max_per_ip: settings.max_connections_per_ip,
        max_new_per_sec: settings.connection_rate_per_ip,
    });
    let stop_log = stop.clone();
    {
        // The per-address pace keeps an entry per address seen: forget the quiet ones.
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => connections.forget_idle_addresses(),
                }
            }
        });
    }
    let metrics = Metrics::new(registry.clone(), connections.clone(), &access);
    let stream_log: Arc<dyn crate::stream_log::StreamLog> = match (&shared, &settings.redis) {
        (Some(s), Some(r)) => crate::stream_log::RedisStreamLog::start(
            s.clone(),
            &r.url,
            registry.clone(),
            settings.stream_retention,
            stop_log,
        )
        .map_err(|e| StartupError::Redis(e.to_string()))?,
        _ => Arc::new(crate::stream_log::LocalStreamLog),
    };
    Ok(AppState(Arc::new(Inner {
        shared,
        stream_log,
        access,
        settings,
        router,
        registry,
        pumps: tokio_util::task::TaskTracker::new(),
        shutdown: CancellationToken::new(),
        metrics,
        connections,
        draining: CancellationToken::new(),
    })))
}

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
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }
    let mut drained = {
        let token = token.clone();
        let state = state.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            state.draining.cancel();
            tracing::info!(
                "shutting down: /readyz answers 503 and new generations are refused; \
                 waiting up to {grace:?} for running streams"
            );
            crate::generation::drain(&state, grace).await;
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
    let mut builder = Builder::new(TokioExecutor::new());
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
        tokio::spawn(async move {
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

/// Re-reads the config file the server started with and applies its `[[teams]]` and limit
/// window (other settings need a restart). Limiters of unchanged teams are kept. A file that
/// does not validate changes nothing.
pub fn reload_teams(state: &AppState, flags: &Flags, vars: &Vars) -> Result<String, String> {
    if state.settings.config_path.is_none() {
        return Err("the server was started without a config file: nothing to reload".into());
    }
    let s = Settings::load(flags, vars).map_err(|e| e.to_string())?;
    state.access.reload(s.teams, s.rate_limit_window)
}

/// From now on, reloads the teams on every SIGHUP, logging the outcome. The handler is in
/// place when this returns (before the server announces itself, so an early SIGHUP does not
/// take the default action and end the process).
#[cfg(unix)]
pub fn reload_on_hangup(state: AppState, flags: Flags, vars: Vars) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: config reload is off");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reload_teams(&state, &flags, &vars) {
                Ok(summary) => tracing::info!("SIGHUP: teams reloaded: {summary}"),
                Err(e) => {
                    tracing::warn!("SIGHUP: config not reloaded, keeping the current teams: {e}")
                }
            }
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
