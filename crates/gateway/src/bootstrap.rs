//! Start-up: from validated settings to a bound, ready gateway. The binary (`cli`) and the
//! in-process test harness both start the gateway here, then call [`Gateway::serve`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use provider_adapter::{Provider, ProviderKind};
use relay::Registry;
use tokio::net::TcpListener;

use crate::access::Access;
use crate::config::Settings;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routing::ModelRouter;
use crate::state::{AppState, Inner};

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

/// A gateway ready to serve: its state built, its listener bound.
pub struct Gateway {
    listener: TcpListener,
    state: AppState,
}

impl Gateway {
    /// Builds the state and binds `settings.addr` (port 0 picks a free port). On an error,
    /// whatever was started is stopped.
    pub async fn bind(settings: Settings) -> Result<Self, StartupError> {
        let addr = settings.addr;
        let state = build_state(settings).await?;
        match TcpListener::bind(addr).await {
            Ok(listener) => Ok(Self { listener, state }),
            Err(source) => {
                state.lifecycle.stop(Duration::from_secs(1)).await;
                Err(StartupError::Bind {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }

    /// The address it listens on (the real port when the settings said 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The "sluice started" line, once it listens (and, for the binary, once `listening on`
    /// is printed).
    pub fn log_started(&self) {
        tracing::info!(
            providers = self.state.router.listed_models().len(),
            open_mode = self.state.access.open_mode(),
            "sluice started"
        );
    }

    /// Serves until `shutdown` resolves; then drains: `/readyz` answers 503 so that load
    /// balancers stop sending, new generations get 503 with `Retry-After`, running streams get
    /// the shutdown grace period to finish (and can still be read and resumed, on new
    /// connections too), the rest are ended with an error event; then it stops accepting,
    /// closes the connections, and stops every task the gateway started.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let settings = &state.settings;
        let caps = state.connections.caps();
        tracing::info!(
            max_connections = caps.max_total,
            max_connections_per_ip = caps.max_per_ip,
            max_streams = state.registry.limits().max_live_streams,
            connection_rate_per_ip = caps.max_new_per_sec,
            header_read_timeout_secs = settings.header_read_timeout.as_secs(),
            client_write_timeout_secs = settings.client_write_timeout.as_secs(),
            body_read_timeout_secs = settings.body_read_timeout.as_secs(),
            "connection limits"
        );
        let serving = crate::net::Serving {
            router: crate::app::app(state.clone()),
            connections: state.connections.clone(),
            lifecycle: state.lifecycle.clone(),
            header_read_timeout: settings.header_read_timeout,
            client_write_timeout: settings.client_write_timeout,
            body_read_timeout: settings.body_read_timeout,
            accept_errors: state.metrics.accept_errors(),
        };
        let grace = settings.shutdown_grace;
        let lifecycle = state.lifecycle.clone();
        let drained = {
            let state = state.clone();
            async move {
                shutdown.await;
                tracing::info!(
                    "shutting down: /readyz answers 503 and new generations are refused; \
                     waiting up to {grace:?} for running streams"
                );
                state.lifecycle.drain(grace).await;
                // Readers on other instances get the ends just written.
                state.streams.shutdown(Duration::from_secs(2)).await;
            }
        };
        let result = crate::net::serve(self.listener, serving, drained).await;
        lifecycle.stop(Duration::from_secs(2)).await;
        result
    }
}

/// Raises the open-file limit and says, once at start, what the machine allows and what the
/// relay may hold. Both the binary and the in-process test harness call it before
/// [`Gateway::bind`] (whose default caps read the raised limit).
pub fn log_host_limits(settings: &Settings) {
    match crate::host::raise_open_files() {
        Ok(f) => tracing::info!(
            soft_before = f.soft_before,
            soft = f.soft,
            hard = f.hard,
            "open-file limit (a stream holds two sockets, three with the demo model)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    if let Some(bytes) = settings.relay_max_total_bytes {
        tracing::info!(
            relay_max_total_mib = bytes >> 20,
            "relay memory bound (configured)"
        );
    } else {
        let limit = crate::host::memory_limit();
        let bytes = crate::host::relay_bound(None, limit.as_ref().map(|l| l.bytes));
        tracing::info!(
            relay_max_total_mib = bytes >> 20,
            memory_mib = limit.as_ref().map(|l| l.bytes >> 20),
            from = limit.as_ref().map_or("unknown", |l| l.source),
            "relay memory bound: 1/8 of the memory Sluice may use, 16-256 MiB \
             (set SLUICE_RELAY_MAX_TOTAL_BYTES to choose)"
        );
    }
}

/// Builds the shared state. With the demo on, the demo upstream is started on a loopback port
/// and served through the same provider path a real upstream takes.
async fn build_state(settings: Settings) -> Result<AppState, StartupError> {
    let lifecycle = Lifecycle::new();
    let mut router = ModelRouter::default();
    if settings.demo {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(StartupError::Demo)?;
        let addr = listener.local_addr().map_err(StartupError::Demo)?;
        // Any client reaches the demo: the `mock` knobs shape its answer in test builds only.
        let cfg = mock_upstream::MockConfig {
            tokens_per_sec: settings.demo_tokens_per_sec,
            knobs: mock_upstream::TEST_KNOBS,
        };
        let stopped = lifecycle.stopped();
        lifecycle.spawn(async move {
            if let Err(e) = mock_upstream::serve(listener, cfg, stopped).await {
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
        lifecycle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                registry.sweep();
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
    // When Redis does not answer, `FailOver` goes on with this instance's own limits or refuses
    // (`on_failure`).
    let limit_store: Arc<dyn crate::access::LimitStore> = match &shared {
        Some(s) => Arc::new(crate::access::FailOver::new(
            crate::access::RedisStore::new(s.clone(), lifecycle.clone()),
            s.on_failure,
        )),
        None => Arc::new(crate::access::MemoryStore::new()),
    };
    let access = Access::with_store(
        settings.teams.clone(),
        settings.rate_limit_window,
        limit_store,
    );
    let connections = crate::net::connections::Connections::new(crate::net::connections::Caps {
        max_total: max_connections,
        max_per_ip: settings.max_connections_per_ip,
        max_new_per_sec: settings.connection_rate_per_ip,
    });
    {
        // The per-address pace keeps an entry per address seen: forget the quiet ones.
        let connections = connections.clone();
        lifecycle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                connections.forget_idle_addresses();
            }
        });
    }
    let metrics = Metrics::new(registry.clone(), connections.clone(), &access);
    let streams = match (shared, &settings.redis) {
        (Some(s), Some(r)) => crate::streams::Streams::through_redis(
            registry.clone(),
            s,
            &r.url,
            settings.stream_retention,
            lifecycle.clone(),
        )
        .map_err(|e| StartupError::Redis(e.to_string()))?,
        _ => crate::streams::Streams::in_memory(registry.clone(), lifecycle.clone()),
    }
    .keep_responses(settings.responses_retention, settings.responses_max_bytes);
    Ok(AppState(Arc::new(Inner {
        streams,
        access,
        settings,
        router,
        registry,
        lifecycle,
        metrics,
        connections,
    })))
}
