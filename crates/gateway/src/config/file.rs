//! The TOML file's schema, exactly as written (serde; unknown keys are errors), and reading it
//! with errors that name the key, never the value.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::ConfigError;

/// The TOML file, exactly as written. Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    /// `false` turns the built-in demo model off.
    pub demo: Option<bool>,
    pub demo_tokens_per_sec: Option<f64>,
    pub allow_open: Option<bool>,
    pub keepalive_secs: Option<u64>,
    pub stream_grace_secs: Option<u64>,
    pub stream_retention_secs: Option<u64>,
    /// Finished Responses-API answers kept after their streams; 0: none.
    pub responses_retention_secs: Option<u64>,
    pub responses_max_bytes: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub upstream_connect_timeout_secs: Option<u64>,
    pub upstream_headers_timeout_secs: Option<u64>,
    pub upstream_response_timeout_secs: Option<u64>,
    /// Also `SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS`; 0 (default): off.
    pub upstream_first_token_timeout_secs: Option<u64>,
    pub upstream_idle_timeout_secs: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub relay_max_stream_bytes: Option<usize>,
    pub relay_max_total_bytes: Option<usize>,
    /// Readers one stream may have at once. Also `SLUICE_STREAM_MAX_READERS`.
    pub stream_max_readers: Option<usize>,
    /// Also `SLUICE_HEADER_READ_TIMEOUT_SECS`.
    pub header_read_timeout_secs: Option<u64>,
    /// Also `SLUICE_CLIENT_WRITE_TIMEOUT_SECS`.
    pub client_write_timeout_secs: Option<u64>,
    /// Also `SLUICE_BODY_READ_TIMEOUT_SECS`.
    pub body_read_timeout_secs: Option<u64>,
    /// Open client connections at most (default: derived from the open-file limit, see
    /// `host::default_caps`). Also
    /// `SLUICE_MAX_CONNECTIONS`.
    pub max_connections: Option<usize>,
    /// New connections a second from one client address; 0 = no pace. Also
    /// `SLUICE_CONNECTION_RATE_PER_IP`.
    pub connection_rate_per_ip: Option<u32>,
    /// Streams running at once at most (0: no cap; default: derived from the open-file limit,
    /// at most the connection cap). Also
    /// `SLUICE_MAX_STREAMS`.
    pub max_streams: Option<usize>,
    /// Open connections from one client address at most; 0 = no cap. Also
    /// `SLUICE_MAX_CONNECTIONS_PER_IP`.
    pub max_connections_per_ip: Option<usize>,
    /// Length of the window that teams' "per minute" limits apply to (default 60; tests use a
    /// few seconds). Also `SLUICE_RATE_LIMIT_WINDOW_SECS`.
    pub rate_limit_window_secs: Option<u64>,
    /// Origins (`scheme://host[:port]`) whose pages may call the gateway, with CORS. Unset:
    /// no CORS, and only the gateway's own page may send an `Origin`. Also
    /// `SLUICE_CORS_ORIGINS` (comma-separated).
    pub cors_origins: Option<Vec<String>>,
    /// `Host` names accepted in open mode besides loopback names (a proxy's public name).
    /// Also `SLUICE_ALLOWED_HOSTS` (comma-separated).
    pub allowed_hosts: Option<Vec<String>>,
    /// SHA-256 hashes of keys that may read `/metrics` from a non-loopback address when teams
    /// are configured.
    pub metrics_api_keys_sha256: Option<Vec<String>>,
    /// `true`: `/metrics` needs a metrics key from every client, loopback included (a local
    /// reverse proxy that adds no forwarding headers makes every client look local). Also
    /// `SLUICE_METRICS_REQUIRE_KEY`.
    pub metrics_require_key: Option<bool>,
    /// Shared state for several instances (`[state]`).
    pub state: Option<StateConfig>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
}

/// `[state]`: where instances share limits and streams. Without `redis_url`, in memory.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Also `SLUICE_REDIS_URL`.
    pub redis_url: Option<String>,
    /// `fail_open` | `fail_closed`. Also `SLUICE_REDIS_ON_FAILURE`.
    pub on_failure: Option<String>,
    /// Also `SLUICE_REDIS_TIMEOUT_MS`.
    pub timeout_ms: Option<u64>,
    /// Also `SLUICE_CONCURRENCY_LEASE_SECS`.
    pub lease_secs: Option<u64>,
    /// Also `SLUICE_OWNER_TIMEOUT_SECS`.
    pub owner_timeout_secs: Option<u64>,
}

/// A `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    /// The NAME of the variable holding the key.
    pub api_key_env: Option<String>,
    /// Azure's `api-version` (required for kind azure, refused for the others).
    pub api_version: Option<String>,
    /// Static headers sent upstream with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Optional: a provider without models is reached only through `[[routes]]`.
    #[serde(default)]
    pub models: Vec<String>,
}

/// A `[[routes]]` entry: a model name (or glob) served by a list of `provider:model` targets.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub model: String,
    #[serde(default)]
    pub targets: Vec<String>,
    /// `fallback` (default) or `round_robin`.
    pub strategy: Option<String>,
    /// How long a target that failed retryably is skipped (default
    /// [`DEFAULT_ROUTE_COOLDOWN_SECS`](super::DEFAULT_ROUTE_COOLDOWN_SECS); 0 = never).
    pub cooldown_secs: Option<u64>,
    /// `grace` | `cancel`: what a client that goes away means (see `config::disconnect`).
    pub on_disconnect: Option<String>,
    /// The grace period of `on_disconnect = "grace"` (default `SLUICE_STREAM_GRACE_SECS`).
    pub grace_secs: Option<u64>,
    /// Seconds from a target's headers to its first content before the next target is tried
    /// (on the last target: the stream ends with `upstream_timeout`); 0: off on this route.
    /// Unset: `upstream_first_token_timeout_secs`.
    pub first_token_timeout_secs: Option<u64>,
}

/// A `[[teams]]` entry (checked by `validate_teams`, at start and on reload).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    #[serde(default)]
    pub api_keys_sha256: Vec<String>,
    pub requests_per_minute: Option<u32>,
    /// Requests allowed at once before the per-minute pace applies (default: a sixth of the
    /// per-minute limit, at least 1).
    pub request_burst: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent_streams: Option<u32>,
    /// Completion tokens reserved against `tokens_per_minute` for a request without
    /// `max_tokens` (default
    /// [`DEFAULT_MAX_TOKENS_ESTIMATE`](super::DEFAULT_MAX_TOKENS_ESTIMATE)); settled with the
    /// real usage.
    pub default_max_tokens: Option<u64>,
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// As a route's `on_disconnect`; with both, the stricter holds (see `config::disconnect`).
    pub on_disconnect: Option<String>,
    pub grace_secs: Option<u64>,
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Reads and parses a TOML config file.
pub fn read_file(path: &str) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {path}: {e}")))?;
    parse_toml(&text)
}

pub fn parse_toml(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // The span points at the offending key or value: name the key of that line (with its
        // table), never the value, and leave string values out of the message, since a value
        // may be a secret pasted in the wrong place.
        let key = e
            .span()
            .and_then(|s| key_at(text, s.start))
            .unwrap_or_else(|| "config".to_owned());
        ConfigError::new(key, redact_strings(e.message()))
    })
}

/// The dotted key of the `key = value` line holding byte `pos`: `addr`, `teams[1].models`.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos)?;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.len() > 80 || key.starts_with('[') {
        return None;
    }
    // The table the line is in: the last header above it; for `[[name]]`, its index.
    let mut table: Option<(String, Option<usize>)> = None;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for l in before.lines().map(str::trim) {
        if let Some((name, _)) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.trim().to_owned();
            let n = seen.entry(name.clone()).or_insert(0);
            table = Some((name, Some(*n)));
            *n += 1;
        } else if let Some((name, _)) = l.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = Some((name.trim().to_owned(), None));
        }
    }
    Some(match table {
        Some((t, Some(i))) => format!("{t}[{i}].{key}"),
        Some((t, None)) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// The message with every double-quoted string replaced by `"..."`.
fn redact_strings(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut parts = msg.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for (i, p) in rest.iter().enumerate() {
        // Odd pieces are inside quotes; an unmatched last quote keeps its text out too.
        if i % 2 == 0 {
            out.push_str("\"...\"");
        } else {
            out.push_str(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_key_not_the_value() {
        let secret = "sk-sluice-AAAABBBBCCCC";
        let text = format!(
            "[[teams]]\nname = \"a\"\napi_keys_sha256 = [\"{h}\"]\n\n[[teams]]\nname = \"b\"\napi_keys_sha256 = \"{secret}\"\n",
            h = "0".repeat(64)
        );
        let e = parse_toml(&text).unwrap_err();
        assert_eq!(e.key, "teams[1].api_keys_sha256");
        assert!(!e.to_string().contains(secret), "{e}");
        let e = parse_toml("rate_limit_window_secs = \"x\"\n").unwrap_err();
        assert_eq!(e.key, "rate_limit_window_secs");
        assert_eq!(redact_strings(r#"a "b" c "d"#), r#"a "..." c "...""#);
    }
}
