//! Names and defaults: every environment variable Sluice reads, spelled once, and the value each
//! setting has when nothing sets it. `.env.example` documents the same list (a test keeps the two
//! in step).

// --- Variable names --------------------------------------------------------------------------

/// The TOML file (`--config` wins over it).
pub const ENV_CONFIG: &str = "SLUICE_CONFIG";
pub const ENV_ADDR: &str = "SLUICE_ADDR";
pub const ENV_DEMO: &str = "SLUICE_DEMO";
pub const ENV_DEMO_TOKENS_PER_SEC: &str = "SLUICE_DEMO_TOKENS_PER_SEC";
pub const ENV_ALLOW_OPEN: &str = "SLUICE_ALLOW_OPEN";
pub const ENV_CORS_ORIGINS: &str = "SLUICE_CORS_ORIGINS";
pub const ENV_ALLOWED_HOSTS: &str = "SLUICE_ALLOWED_HOSTS";
pub const ENV_KEEPALIVE_SECS: &str = "SLUICE_KEEPALIVE_SECS";
pub const ENV_STREAM_GRACE_SECS: &str = "SLUICE_STREAM_GRACE_SECS";
pub const ENV_STREAM_RETENTION_SECS: &str = "SLUICE_STREAM_RETENTION_SECS";
pub const ENV_RESPONSES_RETENTION_SECS: &str = "SLUICE_RESPONSES_RETENTION_SECS";
pub const ENV_RESPONSES_MAX_BYTES: &str = "SLUICE_RESPONSES_MAX_BYTES";
pub const ENV_SHUTDOWN_GRACE_SECS: &str = "SLUICE_SHUTDOWN_GRACE_SECS";
pub const ENV_UPSTREAM_CONNECT_TIMEOUT_SECS: &str = "SLUICE_UPSTREAM_CONNECT_TIMEOUT_SECS";
pub const ENV_UPSTREAM_HEADERS_TIMEOUT_SECS: &str = "SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS";
pub const ENV_UPSTREAM_IDLE_TIMEOUT_SECS: &str = "SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS";
pub const ENV_UPSTREAM_RESPONSE_TIMEOUT_SECS: &str = "SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS";
/// Seconds a stream may go from its upstream's headers to its first content (0, the default:
/// no limit). Routes override it with `first_token_timeout_secs`.
pub const ENV_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS: &str = "SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS";
pub const ENV_MAX_BODY_BYTES: &str = "SLUICE_MAX_BODY_BYTES";
pub const ENV_RELAY_MAX_STREAM_BYTES: &str = "SLUICE_RELAY_MAX_STREAM_BYTES";
pub const ENV_RELAY_MAX_TOTAL_BYTES: &str = "SLUICE_RELAY_MAX_TOTAL_BYTES";
pub const ENV_STREAM_MAX_READERS: &str = "SLUICE_STREAM_MAX_READERS";
/// The log filter (read by `crate::init_tracing`; `RUST_LOG` works too).
pub const ENV_LOG: &str = "SLUICE_LOG";
/// `json` | `text` (read by `crate::init_tracing`, checked here so that a typo fails at start).
pub const ENV_LOG_FORMAT: &str = "SLUICE_LOG_FORMAT";
pub const ENV_HEADER_READ_TIMEOUT_SECS: &str = "SLUICE_HEADER_READ_TIMEOUT_SECS";
pub const ENV_CLIENT_WRITE_TIMEOUT_SECS: &str = "SLUICE_CLIENT_WRITE_TIMEOUT_SECS";
pub const ENV_BODY_READ_TIMEOUT_SECS: &str = "SLUICE_BODY_READ_TIMEOUT_SECS";
pub const ENV_MAX_CONNECTIONS: &str = "SLUICE_MAX_CONNECTIONS";
pub const ENV_MAX_CONNECTIONS_PER_IP: &str = "SLUICE_MAX_CONNECTIONS_PER_IP";
pub const ENV_CONNECTION_RATE_PER_IP: &str = "SLUICE_CONNECTION_RATE_PER_IP";
pub const ENV_MAX_STREAMS: &str = "SLUICE_MAX_STREAMS";
pub const ENV_METRICS_REQUIRE_KEY: &str = "SLUICE_METRICS_REQUIRE_KEY";
pub const ENV_REDIS_URL: &str = "SLUICE_REDIS_URL";
pub const ENV_REDIS_ON_FAILURE: &str = "SLUICE_REDIS_ON_FAILURE";
pub const ENV_REDIS_TIMEOUT_MS: &str = "SLUICE_REDIS_TIMEOUT_MS";
pub const ENV_CONCURRENCY_LEASE_SECS: &str = "SLUICE_CONCURRENCY_LEASE_SECS";
pub const ENV_OWNER_TIMEOUT_SECS: &str = "SLUICE_OWNER_TIMEOUT_SECS";
pub const ENV_RATE_LIMIT_WINDOW_SECS: &str = "SLUICE_RATE_LIMIT_WINDOW_SECS";

/// Shortcut providers: the names their SDKs read, so that an existing shell setup just works.
pub const ENV_OPENAI_API_KEY: &str = "OPENAI_API_KEY";
pub const ENV_OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
pub const ENV_ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";
pub const ENV_ANTHROPIC_BASE_URL: &str = "ANTHROPIC_BASE_URL";

/// Every variable above, for checks that must cover them all.
pub const ALL_ENV: [&str; 42] = [
    ENV_CONFIG,
    ENV_ADDR,
    ENV_DEMO,
    ENV_DEMO_TOKENS_PER_SEC,
    ENV_ALLOW_OPEN,
    ENV_CORS_ORIGINS,
    ENV_ALLOWED_HOSTS,
    ENV_KEEPALIVE_SECS,
    ENV_STREAM_GRACE_SECS,
    ENV_STREAM_RETENTION_SECS,
    ENV_RESPONSES_RETENTION_SECS,
    ENV_RESPONSES_MAX_BYTES,
    ENV_SHUTDOWN_GRACE_SECS,
    ENV_UPSTREAM_CONNECT_TIMEOUT_SECS,
    ENV_UPSTREAM_HEADERS_TIMEOUT_SECS,
    ENV_UPSTREAM_IDLE_TIMEOUT_SECS,
    ENV_UPSTREAM_RESPONSE_TIMEOUT_SECS,
    ENV_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS,
    ENV_MAX_BODY_BYTES,
    ENV_RELAY_MAX_STREAM_BYTES,
    ENV_RELAY_MAX_TOTAL_BYTES,
    ENV_STREAM_MAX_READERS,
    ENV_LOG,
    ENV_LOG_FORMAT,
    ENV_HEADER_READ_TIMEOUT_SECS,
    ENV_CLIENT_WRITE_TIMEOUT_SECS,
    ENV_BODY_READ_TIMEOUT_SECS,
    ENV_MAX_CONNECTIONS,
    ENV_MAX_CONNECTIONS_PER_IP,
    ENV_CONNECTION_RATE_PER_IP,
    ENV_MAX_STREAMS,
    ENV_METRICS_REQUIRE_KEY,
    ENV_REDIS_URL,
    ENV_REDIS_ON_FAILURE,
    ENV_REDIS_TIMEOUT_MS,
    ENV_CONCURRENCY_LEASE_SECS,
    ENV_OWNER_TIMEOUT_SECS,
    ENV_RATE_LIMIT_WINDOW_SECS,
    ENV_OPENAI_API_KEY,
    ENV_OPENAI_BASE_URL,
    ENV_ANTHROPIC_API_KEY,
    ENV_ANTHROPIC_BASE_URL,
];

// --- Defaults --------------------------------------------------------------------------------
// Those owned by another crate are repeated here under this crate's names, so that this one
// table says what an unset setting means.

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_DEMO: bool = true;
pub const DEFAULT_DEMO_TOKENS_PER_SEC: f64 = mock_upstream::DEFAULT_TOKENS_PER_SEC;
pub const DEFAULT_ALLOW_OPEN: bool = false;
pub const DEFAULT_METRICS_REQUIRE_KEY: bool = false;
pub const DEFAULT_KEEPALIVE_SECS: u64 = 15;
pub const DEFAULT_STREAM_GRACE_SECS: u64 = 30;
pub const DEFAULT_STREAM_RETENTION_SECS: u64 = 300;
/// Seconds a finished Responses-API answer (`store` not false) is kept after its stream, for
/// `GET /v1/responses/{id}` and `item_reference`; 0 keeps none.
pub const DEFAULT_RESPONSES_RETENTION_SECS: u64 = 86_400;
/// Bytes of those answers kept in memory (without Redis): the oldest go first.
pub const DEFAULT_RESPONSES_MAX_BYTES: usize = 64 << 20;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS: u64 =
    provider_adapter::provider::DEFAULT_CONNECT_TIMEOUT_SECS;
pub const DEFAULT_UPSTREAM_HEADERS_TIMEOUT_SECS: u64 =
    provider_adapter::provider::DEFAULT_HEADERS_TIMEOUT_SECS;
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT_SECS: u64 =
    provider_adapter::provider::DEFAULT_IDLE_TIMEOUT_SECS;
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_SECS: u64 =
    provider_adapter::provider::DEFAULT_RESPONSE_TIMEOUT_SECS;
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
pub const DEFAULT_RELAY_MAX_STREAM_BYTES: usize = relay::registry::DEFAULT_MAX_STREAM_BYTES;
// The relay's total bound has no fixed default: it is a share of the host's memory, worked out at
// start (see `crate::host::relay_bound`), since reading the host is not configuration's job.
pub const DEFAULT_STREAM_MAX_READERS: usize = relay::registry::DEFAULT_MAX_READERS_PER_STREAM;
/// Seconds a client has to send a complete request head (slow-loris protection); also how long
/// an idle keep-alive connection stays open.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Seconds a response's write may make no progress (a client that stopped reading) before the
/// connection is closed, so that a stalled client cannot freeze the stream its body drives.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_SECS: u64 = 30;
/// Seconds a client has to send a whole request body, from the end of its head: a body trickled
/// byte by byte holds a connection and up to `max_body_bytes` of buffer no longer than this.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// Connections one client address may hold (not counting loopback, where a local proxy's
/// connections all come from).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// New connections a second from one client address (not loopback), twice that at once.
pub const DEFAULT_CONNECTION_RATE_PER_IP_PER_SEC: u32 = 100;
/// The window the teams' "per minute" limits apply to. Only tests should shorten it: a team's
/// `requests_per_minute = 60` with a 6-second window allows 60 requests per 6 seconds.
pub const DEFAULT_RATE_LIMIT_WINDOW_SECS: u64 = 60;
/// Completion tokens reserved against a team's token budget when a request sets no
/// `max_tokens` (see `crate::access`).
pub const DEFAULT_MAX_TOKENS_ESTIMATE: u64 = 1024;
/// How long a route's target that failed retryably is skipped.
pub const DEFAULT_ROUTE_COOLDOWN_SECS: u64 = 10;
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_CONCURRENCY_LEASE_SECS: u64 = 30;
pub const DEFAULT_OWNER_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// `#NAME=VALUE` lines of `.env.example`: every variable documented, with its default (or
    /// an example) after the `=`.
    fn example() -> BTreeMap<&'static str, &'static str> {
        include_str!("../../../../.env.example")
            .lines()
            .filter_map(|l| l.strip_prefix('#')?.split_once('='))
            .filter(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            })
            .collect()
    }

    #[test]
    fn env_example_documents_every_variable_and_no_other() {
        let documented: Vec<&str> = example().into_keys().collect();
        let mut read = ALL_ENV.to_vec();
        read.sort_unstable();
        read.dedup();
        assert_eq!(read.len(), ALL_ENV.len(), "a name is listed twice");
        assert_eq!(documented, read);
    }

    #[test]
    fn env_example_shows_the_defaults() {
        let ex = example();
        let n = |v: u64| v.to_string();
        let on = |b: bool| if b { "on" } else { "0" };
        for (name, want) in [
            (ENV_ADDR, DEFAULT_ADDR.to_owned()),
            (ENV_DEMO, on(DEFAULT_DEMO).to_owned()),
            (
                ENV_DEMO_TOKENS_PER_SEC,
                DEFAULT_DEMO_TOKENS_PER_SEC.to_string(),
            ),
            (ENV_ALLOW_OPEN, on(DEFAULT_ALLOW_OPEN).to_owned()),
            (
                ENV_METRICS_REQUIRE_KEY,
                on(DEFAULT_METRICS_REQUIRE_KEY).to_owned(),
            ),
            (ENV_OPENAI_BASE_URL, DEFAULT_OPENAI_BASE_URL.to_owned()),
            (
                ENV_ANTHROPIC_BASE_URL,
                DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            ),
            (ENV_KEEPALIVE_SECS, n(DEFAULT_KEEPALIVE_SECS)),
            (ENV_STREAM_GRACE_SECS, n(DEFAULT_STREAM_GRACE_SECS)),
            (ENV_STREAM_RETENTION_SECS, n(DEFAULT_STREAM_RETENTION_SECS)),
            (
                ENV_RESPONSES_RETENTION_SECS,
                n(DEFAULT_RESPONSES_RETENTION_SECS),
            ),
            (
                ENV_RESPONSES_MAX_BYTES,
                DEFAULT_RESPONSES_MAX_BYTES.to_string(),
            ),
            (ENV_SHUTDOWN_GRACE_SECS, n(DEFAULT_SHUTDOWN_GRACE_SECS)),
            (
                ENV_UPSTREAM_CONNECT_TIMEOUT_SECS,
                n(DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS),
            ),
            (
                ENV_UPSTREAM_HEADERS_TIMEOUT_SECS,
                n(DEFAULT_UPSTREAM_HEADERS_TIMEOUT_SECS),
            ),
            (
                ENV_UPSTREAM_IDLE_TIMEOUT_SECS,
                n(DEFAULT_UPSTREAM_IDLE_TIMEOUT_SECS),
            ),
            (
                ENV_UPSTREAM_RESPONSE_TIMEOUT_SECS,
                n(DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_SECS),
            ),
            (ENV_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS, n(0)),
            (ENV_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES.to_string()),
            (
                ENV_RELAY_MAX_STREAM_BYTES,
                DEFAULT_RELAY_MAX_STREAM_BYTES.to_string(),
            ),
            (ENV_RELAY_MAX_TOTAL_BYTES, String::new()),
            (
                ENV_STREAM_MAX_READERS,
                DEFAULT_STREAM_MAX_READERS.to_string(),
            ),
            (
                ENV_HEADER_READ_TIMEOUT_SECS,
                n(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            ),
            (
                ENV_CLIENT_WRITE_TIMEOUT_SECS,
                n(DEFAULT_CLIENT_WRITE_TIMEOUT_SECS),
            ),
            (
                ENV_BODY_READ_TIMEOUT_SECS,
                n(DEFAULT_BODY_READ_TIMEOUT_SECS),
            ),
            (ENV_MAX_CONNECTIONS, String::new()),
            (
                ENV_MAX_CONNECTIONS_PER_IP,
                DEFAULT_MAX_CONNECTIONS_PER_IP.to_string(),
            ),
            (
                ENV_CONNECTION_RATE_PER_IP,
                DEFAULT_CONNECTION_RATE_PER_IP_PER_SEC.to_string(),
            ),
            (ENV_MAX_STREAMS, String::new()),
            (ENV_REDIS_TIMEOUT_MS, n(DEFAULT_REDIS_TIMEOUT_MS)),
            (
                ENV_CONCURRENCY_LEASE_SECS,
                n(DEFAULT_CONCURRENCY_LEASE_SECS),
            ),
            (ENV_OWNER_TIMEOUT_SECS, n(DEFAULT_OWNER_TIMEOUT_SECS)),
            (
                ENV_RATE_LIMIT_WINDOW_SECS,
                n(DEFAULT_RATE_LIMIT_WINDOW_SECS),
            ),
        ] {
            assert_eq!(ex.get(name).copied(), Some(want.as_str()), "{name}");
        }
    }
}
