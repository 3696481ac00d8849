//! The `sluice` gateway: configuration, access control, routes, and the glue between the
//! provider-adapter (upstreams in) and the relay (numbered, resumable streams out).

/// Team keys, model permissions and the request, token and concurrency limits.
pub mod access;
/// The router: every endpoint, with body limit, auth, tracing and CORS as layers.
pub mod app;
/// Start-up: settings to a bound gateway ready to serve.
pub mod bootstrap;
/// The command line: serve, `mock-upstream`, `check-config`, `gen-key`.
pub mod cli;
/// Settings from defaults, TOML, `.env`, environment and flags, validated at start.
pub mod config;
/// Every request error, and the one place it becomes an OpenAI-shaped HTTP response.
pub mod error;
/// A future polled only when its own waker fired (rare events next to per-token work).
pub mod gate;
/// One generation's life: start, pump from the upstream into the relay, end.
pub mod generation;
/// Model-name globs for routing and team permissions.
pub mod glob;
/// What the machine allows: the memory share for the relay, the open-file limit.
pub mod host;
/// API key generation and SHA-256 hashing.
pub mod keys;
/// Every task the gateway starts, and the order of its shutdown.
pub mod lifecycle;
/// Counters for `GET /metrics` (Prometheus text).
pub mod metrics;
/// The listener, connection caps, sockets and the bodies around requests and responses.
pub mod net;
/// Which web origins and host names may reach the gateway (CSRF and DNS rebinding).
pub mod origin;
/// `x-request-id`: accepted, generated, propagated.
pub mod request_id;
/// The HTTP handlers.
pub mod routes;
/// Which provider serves which model.
pub mod routing;
/// The Redis connection instances share limits and streams through (`SLUICE_REDIS_URL`).
pub mod shared_state;
/// SIGHUP reloads the teams; SIGINT and SIGTERM shut down.
pub mod signals;
/// What every handler shares.
pub mod state;
/// Resumable streams: opened, cancelled and shared across instances (Redis), or in this
/// process only.
pub mod streams;

pub use app::app;
pub use bootstrap::Gateway;

/// Logs go to stderr (stdout carries the `listening on` line), filtered by `SLUICE_LOG` or
/// `RUST_LOG` (default `info`): one JSON object per line with `SLUICE_LOG_FORMAT=json`, else
/// human-readable text. Either way a request's lines carry its span (`request_id`, route).
pub fn init_tracing(vars: &config::Vars) {
    use tracing_subscriber::util::SubscriberInitExt;
    // `try_init` also routes the `log` crate's records into tracing.
    let _ = tracing_dispatch(vars, std::io::stderr).try_init();
}

/// The subscriber [`init_tracing`] installs, writing to `writer` instead of stderr: the
/// in-process test harness gives every gateway its own, so that gateways sharing a process
/// keep their logs apart and each logs exactly as the binary would.
pub fn tracing_dispatch<W>(vars: &config::Vars, writer: W) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = vars
        .get(config::ENV_LOG)
        .or_else(|| vars.get("RUST_LOG"))
        .cloned()
        .unwrap_or_else(|| "info".into());
    // Colours only for a person at a terminal: a log file or collector gets no escape codes
    // (and each log line costs a third less to write). NO_COLOR is read from the variables (the
    // environment, for the binary) rather than from the process environment, so that a gateway
    // started from a map of variables decides the same way the binary would.
    let ansi = vars.get("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    let json = vars
        .get(config::ENV_LOG_FORMAT)
        .is_some_and(|f| f.trim().eq_ignore_ascii_case("json"));
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .finish()
            .into()
    } else {
        builder.finish().into()
    }
}
