//! Configuration: one serde tree, filled in the contract's order (built-in defaults, the TOML
//! file named by `--config`/`SLUICE_CONFIG`, a `.env` file in the working directory, the process
//! environment, command-line flags) and validated at start with messages that name the key.
//!
//! Variables are read through a plain map ([`Vars`]) so tests never touch the process
//! environment.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::glob;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_KEEPALIVE_SECS: u64 = 15;
pub const DEFAULT_STREAM_GRACE_SECS: u64 = 30;
pub const DEFAULT_STREAM_RETENTION_SECS: u64 = 300;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
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
pub const DEFAULT_CONNECTION_RATE_PER_IP: u32 = 100;
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The window the teams' "per minute" limits apply to. Only tests should shorten it: a team's
/// `requests_per_minute = 60` with a 6-second window allows 60 requests per 6 seconds.
pub const DEFAULT_RATE_LIMIT_WINDOW_SECS: u64 = 60;
/// Completion tokens reserved against a team's token budget when a request sets no
/// `max_tokens` (see `crate::access`).
pub const DEFAULT_MAX_TOKENS_ESTIMATE: u64 = 1024;

/// Environment-style variables: the `.env` file overlaid by the process environment.
pub type Vars = HashMap<String, String>;

/// Reads `.env` from `dir` (if present) and overlays the process environment.
pub fn read_vars(dir: &Path) -> Result<Vars, ConfigError> {
    let mut vars = Vars::new();
    let path = dir.join(".env");
    if path.exists() {
        let iter = dotenvy::from_path_iter(&path)
            .map_err(|e| ConfigError::new(".env", format!("cannot read .env: {e}")))?;
        for item in iter {
            let (k, v) = item.map_err(|e| ConfigError::new(".env", format!("{e}")))?;
            vars.insert(k, v);
        }
    }
    vars.extend(std::env::vars());
    Ok(vars)
}

/// What is wrong with the configuration: the first problem found, and every other one found in
/// the same pass (a file is checked whole, so that one run names all of its mistakes).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    pub more: Vec<(String, String)>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.more.is_empty() {
            return write!(f, "invalid configuration: {}: {}", self.key, self.message);
        }
        write!(
            f,
            "invalid configuration, {} problems:\n  {}: {}",
            self.more.len() + 1,
            self.key,
            self.message
        )?;
        for (k, m) in &self.more {
            write!(f, "\n  {k}: {m}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// Every problem, the first one included.
    pub fn problems(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.key.as_str(), self.message.as_str()))
            .chain(self.more.iter().map(|(k, m)| (k.as_str(), m.as_str())))
    }
}

/// Problems collected while checking, so that checking goes on past the first.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, e: ConfigError) {
        self.0.extend(
            e.problems()
                .map(|(k, m)| ConfigError::new(k, m))
                .collect::<Vec<_>>(),
        );
    }

    /// The value, or `None` with its error kept.
    fn take<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    fn finish(self) -> Result<(), ConfigError> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = all.map(|e| (e.key, e.message)).collect();
                Err(first)
            }
        }
    }
}

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
    pub shutdown_grace_secs: Option<u64>,
    pub upstream_connect_timeout_secs: Option<u64>,
    pub upstream_headers_timeout_secs: Option<u64>,
    pub upstream_response_timeout_secs: Option<u64>,
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

/// What Sluice does when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Serve anyway: limits fall back to this instance's own, with a warning; streams are
    /// resumable on their own instance only.
    FailOpen,
    /// Refuse what needs shared state with 503 until Redis answers again.
    FailClosed,
}

/// Shared state in Redis, validated. Its `Debug` shows the URL redacted.
#[derive(Clone)]
pub struct RedisSettings {
    /// The URL as given (it may hold a password: never logged; see [`RedisSettings::redacted`]).
    pub url: String,
    pub on_failure: OnFailure,
    /// Every Redis call gives up after this.
    pub timeout: Duration,
    /// A concurrency slot held by an instance that stopped renewing it is freed after this.
    pub lease: Duration,
    /// Readers of a stream whose owner stopped its heartbeat get `failed` after this.
    pub owner_timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.redacted())
            .field("on_failure", &self.on_failure)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("owner_timeout", &self.owner_timeout)
            .finish()
    }
}

impl RedisSettings {
    /// The URL without its secrets, for logs (see [`redact_redis_url`]).
    pub fn redacted(&self) -> String {
        redact_redis_url(&self.url)
    }
}

/// Query parameters that carry a password in the URL forms redis-rs reads (`unix:` and
/// `redis+unix:` take `?pass=`; `password` is what people also write).
const SECRET_QUERY_KEYS: [&str; 2] = ["pass", "password"];

/// A Redis URL fit for a log: user and password (`redis://user:pass@host`) become `***`, and so
/// do the values of `pass`/`password` query parameters (`unix:///run/redis.sock?pass=...`),
/// whatever the scheme. It is parsed the way redis-rs parses it (the `url` crate), so what is
/// redacted is exactly what redis-rs would send as credentials; a URL that does not parse is
/// shown as its scheme alone, since where its password ends cannot be known.
pub fn redact_redis_url(raw: &str) -> String {
    let scheme = raw
        .split_once("://")
        .map(|(s, _)| s)
        .filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        })
        .unwrap_or("redis");
    let Ok(url) = url::Url::parse(raw) else {
        return format!("{scheme}://<unparseable URL>");
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str("***@");
    }
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if url.query().is_some() {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url.query_pairs() {
            if SECRET_QUERY_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
                q.append_pair(&k, "***");
            } else {
                q.append_pair(&k, &v);
            }
        }
        out.push('?');
        out.push_str(&q.finish());
    }
    // redis-rs reads only `#insecure`; anything else is not ours to print.
    match url.fragment() {
        None => {}
        Some("insecure") => out.push_str("#insecure"),
        Some(_) => out.push_str("#***"),
    }
    out
}

pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_CONCURRENCY_LEASE_SECS: u64 = 30;
pub const DEFAULT_OWNER_TIMEOUT_SECS: u64 = 15;

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
    /// [`DEFAULT_ROUTE_COOLDOWN_SECS`]; 0 = never).
    pub cooldown_secs: Option<u64>,
}

/// How a route orders its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In the order written.
    Fallback,
    /// Each request starts at the next target.
    RoundRobin,
}

pub const DEFAULT_ROUTE_COOLDOWN_SECS: u64 = 10;

/// A route, validated: targets split into `(provider name, upstream model)`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub model: String,
    pub targets: Vec<(String, String)>,
    pub strategy: Strategy,
    pub cooldown: Duration,
}

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
    /// `max_tokens` (default [`DEFAULT_MAX_TOKENS_ESTIMATE`]); settled with the real usage.
    pub default_max_tokens: Option<u64>,
    #[serde(default = "all_models")]
    pub models: Vec<String>,
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Command-line flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<String>,
    pub addr: Option<String>,
}

/// A provider, resolved: its key read from the variables.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: provider_adapter::ProviderKind,
    pub base_url: String,
    pub api_key: Option<provider_adapter::Secret>,
    pub api_version: Option<String>,
    /// Static headers sent upstream, validated.
    pub headers: http::HeaderMap,
    pub models: Vec<String>,
}

/// Header names a provider's static `headers` may not set: credentials (a key belongs in
/// `api_key_env`, which keeps it out of logs and config dumps), and the headers that frame the
/// request or that Sluice sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "host",
    "x-request-id",
];

/// Validates a provider's static headers; problems are named `providers[i].headers.NAME`.
fn resolve_headers(
    i: usize,
    headers: &BTreeMap<String, String>,
    p: &mut Problems,
) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    for (name, value) in headers {
        let key = format!("providers[{i}].headers.{name}");
        let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
            p.push(ConfigError::new(key, "is not a valid HTTP header name"));
            continue;
        };
        if RESERVED_HEADERS.contains(&n.as_str()) {
            p.push(ConfigError::new(
                key,
                "may not be set here (credentials go in api_key_env; Sluice sets this header itself)",
            ));
            continue;
        }
        if out.contains_key(&n) {
            p.push(ConfigError::new(
                key,
                "is given twice (header names ignore case)",
            ));
            continue;
        }
        match http::HeaderValue::from_str(value) {
            Ok(v) => {
                out.insert(n, v);
            }
            Err(_) => p.push(ConfigError::new(
                key,
                "the value must be visible ASCII characters, spaces or tabs",
            )),
        }
    }
    out
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub demo: bool,
    pub demo_tokens_per_sec: f64,
    pub allow_open: bool,
    pub keepalive: Duration,
    pub stream_grace: Duration,
    pub stream_retention: Duration,
    pub shutdown_grace: Duration,
    pub timeouts: provider_adapter::Timeouts,
    pub max_body_bytes: usize,
    pub relay_max_stream_bytes: usize,
    /// `None`: not configured; a share of the host's memory, worked out at start (see
    /// `crate::host::relay_bound`) so that reading the settings never probes the machine.
    pub relay_max_total_bytes: Option<usize>,
    pub stream_max_readers: usize,
    pub header_read_timeout: Duration,
    /// A response write that makes no progress this long closes its connection.
    pub client_write_timeout: Duration,
    pub body_read_timeout: Duration,
    /// `None`: derived from the open-file limit when serving starts.
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: usize,
    /// `None`: derived from the open-file limit; `Some(0)`: no cap.
    pub max_streams: Option<usize>,
    pub connection_rate_per_ip: u32,
    pub providers: Vec<ProviderSettings>,
    pub routes: Vec<RouteSettings>,
    pub teams: Vec<TeamConfig>,
    /// The window teams' "per minute" limits apply to.
    pub rate_limit_window: Duration,
    /// The file the settings came from, for reloading teams.
    pub config_path: Option<String>,
    /// Origins allowed to call with CORS, normalised (`*` = any); empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Extra `Host` names accepted in open mode, lower case.
    pub allowed_hosts: Vec<String>,
    /// Hashes of the keys that may read `/metrics` remotely in team mode, lower-case hex.
    pub metrics_keys_sha256: Vec<String>,
    /// `/metrics` needs a metrics key from every client, in every mode.
    pub metrics_require_key: bool,
    /// `None`: state in memory (one instance).
    pub redis: Option<RedisSettings>,
}

impl Settings {
    /// What `crate::origin::check` applies to a request. `open_mode`: no teams are configured
    /// (known to the access layer, which may reload them).
    pub fn web_policy(&self, open_mode: bool) -> crate::origin::Policy<'_> {
        crate::origin::Policy {
            listen: self.addr.ip(),
            open_mode,
            cors_origins: &self.cors_origins,
            allowed_hosts: &self.allowed_hosts,
        }
    }
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

fn var<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// The name a problem with a setting is reported under: the environment variable when it is
/// set (it wins over the file), else the TOML key.
fn key_of(vars: &Vars, env: &'static str, file_key: &'static str) -> &'static str {
    if var(vars, env).is_some() {
        env
    } else {
        file_key
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::new(name, format!("'{v}' is not a valid number")))
}

fn truthy(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!("'{v}' is not on/off, true/false or 1/0"),
        )),
    }
}

impl Settings {
    /// Builds the settings from the variables and flags, reading the config file they name.
    pub fn load(flags: &Flags, vars: &Vars) -> Result<Self, ConfigError> {
        let path = flags
            .config
            .clone()
            .or_else(|| var(vars, "SLUICE_CONFIG").map(str::to_owned));
        let file = match &path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let mut s = Self::resolve(file, flags, vars)?;
        s.config_path = path;
        Ok(s)
    }

    /// Applies the variables and flags over `file`, then validates.
    pub fn resolve(file: FileConfig, flags: &Flags, vars: &Vars) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        macro_rules! num {
            ($field:expr, $var:literal, $default:expr) => {
                match var(vars, $var) {
                    Some(v) => p.take(parse_num($var, v)).unwrap_or($default),
                    None => $field.unwrap_or($default),
                }
            };
        }
        let addr_text = flags
            .addr
            .clone()
            .or_else(|| var(vars, "SLUICE_ADDR").map(str::to_owned))
            .or(file.addr.clone())
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr_key = if flags.addr.is_some() {
            "--addr"
        } else {
            key_of(vars, "SLUICE_ADDR", "addr")
        };
        let addr = p
            .take(addr_text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    addr_key,
                    format!("'{addr_text}' is not a HOST:PORT address (e.g. 127.0.0.1:8080)"),
                )
            }))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let demo = match var(vars, "SLUICE_DEMO") {
            Some(v) => p.take(truthy("SLUICE_DEMO", v)).unwrap_or(true),
            None => file.demo.unwrap_or(true),
        };
        let allow_open = match var(vars, "SLUICE_ALLOW_OPEN") {
            Some(v) => p.take(truthy("SLUICE_ALLOW_OPEN", v)).unwrap_or(false),
            None => file.allow_open.unwrap_or(false),
        };
        let demo_tokens_per_sec: f64 = num!(
            file.demo_tokens_per_sec,
            "SLUICE_DEMO_TOKENS_PER_SEC",
            mock_upstream::DEFAULT_TOKENS_PER_SEC
        );
        let secs = Duration::from_secs;
        let keepalive: u64 = num!(
            file.keepalive_secs,
            "SLUICE_KEEPALIVE_SECS",
            DEFAULT_KEEPALIVE_SECS
        );
        if keepalive == 0 {
            p.push(ConfigError::new(
                key_of(vars, "SLUICE_KEEPALIVE_SECS", "keepalive_secs"),
                "must be at least 1",
            ));
        }
        let timeouts = provider_adapter::Timeouts {
            connect: secs(num!(
                file.upstream_connect_timeout_secs,
                "SLUICE_UPSTREAM_CONNECT_TIMEOUT_SECS",
                provider_adapter::provider::DEFAULT_CONNECT_TIMEOUT_SECS
            )),
            headers: secs(num!(
                file.upstream_headers_timeout_secs,
                "SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS",
                provider_adapter::provider::DEFAULT_HEADERS_TIMEOUT_SECS
            )),
            idle: secs(num!(
                file.upstream_idle_timeout_secs,
                "SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS",
                provider_adapter::provider::DEFAULT_IDLE_TIMEOUT_SECS
            )),
            response: secs(num!(
                file.upstream_response_timeout_secs,
                "SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS",
                provider_adapter::provider::DEFAULT_RESPONSE_TIMEOUT_SECS
            )),
        };
        for (env, toml, d) in [
            (
                "SLUICE_UPSTREAM_CONNECT_TIMEOUT_SECS",
                "upstream_connect_timeout_secs",
                timeouts.connect,
            ),
            (
                "SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS",
                "upstream_headers_timeout_secs",
                timeouts.headers,
            ),
            (
                "SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS",
                "upstream_idle_timeout_secs",
                timeouts.idle,
            ),
            (
                "SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS",
                "upstream_response_timeout_secs",
                timeouts.response,
            ),
        ] {
            if d.is_zero() {
                p.push(ConfigError::new(
                    key_of(vars, env, toml),
                    "must be at least 1",
                ));
            }
        }
        let max_body_bytes: usize = num!(
            file.max_body_bytes,
            "SLUICE_MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES
        );
        let window: u64 = num!(
            file.rate_limit_window_secs,
            "SLUICE_RATE_LIMIT_WINDOW_SECS",
            DEFAULT_RATE_LIMIT_WINDOW_SECS
        );
        if window == 0 {
            p.push(ConfigError::new(
                key_of(
                    vars,
                    "SLUICE_RATE_LIMIT_WINDOW_SECS",
                    "rate_limit_window_secs",
                ),
                "must be at least 1",
            ));
        }
        let mut s = Self {
            addr,
            demo,
            demo_tokens_per_sec,
            allow_open,
            keepalive: secs(keepalive),
            stream_grace: secs(num!(
                file.stream_grace_secs,
                "SLUICE_STREAM_GRACE_SECS",
                DEFAULT_STREAM_GRACE_SECS
            )),
            stream_retention: secs(num!(
                file.stream_retention_secs,
                "SLUICE_STREAM_RETENTION_SECS",
                DEFAULT_STREAM_RETENTION_SECS
            )),
            shutdown_grace: secs(num!(
                file.shutdown_grace_secs,
                "SLUICE_SHUTDOWN_GRACE_SECS",
                DEFAULT_SHUTDOWN_GRACE_SECS
            )),
            timeouts,
            max_body_bytes,
            relay_max_stream_bytes: num!(
                file.relay_max_stream_bytes,
                "SLUICE_RELAY_MAX_STREAM_BYTES",
                relay::registry::DEFAULT_MAX_STREAM_BYTES
            ),
            relay_max_total_bytes: match var(vars, "SLUICE_RELAY_MAX_TOTAL_BYTES") {
                Some(v) => p.take(parse_num("SLUICE_RELAY_MAX_TOTAL_BYTES", v)),
                None => file.relay_max_total_bytes,
            },
            stream_max_readers: num!(
                file.stream_max_readers,
                "SLUICE_STREAM_MAX_READERS",
                relay::registry::DEFAULT_MAX_READERS_PER_STREAM
            ),
            header_read_timeout: secs(num!(
                file.header_read_timeout_secs,
                "SLUICE_HEADER_READ_TIMEOUT_SECS",
                DEFAULT_HEADER_READ_TIMEOUT_SECS
            )),
            client_write_timeout: secs(num!(
                file.client_write_timeout_secs,
                "SLUICE_CLIENT_WRITE_TIMEOUT_SECS",
                DEFAULT_CLIENT_WRITE_TIMEOUT_SECS
            )),
            body_read_timeout: secs(num!(
                file.body_read_timeout_secs,
                "SLUICE_BODY_READ_TIMEOUT_SECS",
                DEFAULT_BODY_READ_TIMEOUT_SECS
            )),
            max_connections: match var(vars, "SLUICE_MAX_CONNECTIONS") {
                Some(v) => p.take(parse_num("SLUICE_MAX_CONNECTIONS", v)),
                None => file.max_connections,
            },
            connection_rate_per_ip: num!(
                file.connection_rate_per_ip,
                "SLUICE_CONNECTION_RATE_PER_IP",
                DEFAULT_CONNECTION_RATE_PER_IP
            ),
            max_streams: match var(vars, "SLUICE_MAX_STREAMS") {
                Some(v) => p.take(parse_num("SLUICE_MAX_STREAMS", v)),
                None => file.max_streams,
            },
            max_connections_per_ip: num!(
                file.max_connections_per_ip,
                "SLUICE_MAX_CONNECTIONS_PER_IP",
                DEFAULT_MAX_CONNECTIONS_PER_IP
            ),
            providers: Vec::new(),
            routes: Vec::new(),
            teams: file.teams.clone(),
            rate_limit_window: secs(window),
            config_path: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            metrics_keys_sha256: Vec::new(),
            metrics_require_key: match var(vars, "SLUICE_METRICS_REQUIRE_KEY") {
                Some(v) => p
                    .take(truthy("SLUICE_METRICS_REQUIRE_KEY", v))
                    .unwrap_or(false),
                None => file.metrics_require_key.unwrap_or(false),
            },
            redis: None,
        };
        s.redis = resolve_redis(file.state.clone().unwrap_or_default(), vars, &mut p);
        s.cors_origins = match var(vars, "SLUICE_CORS_ORIGINS") {
            Some(v) => p
                .take(parse_origins("SLUICE_CORS_ORIGINS", split_list(v)))
                .unwrap_or_default(),
            None => p
                .take(parse_origins(
                    "cors_origins",
                    file.cors_origins.clone().unwrap_or_default(),
                ))
                .unwrap_or_default(),
        };
        s.allowed_hosts = match var(vars, "SLUICE_ALLOWED_HOSTS") {
            Some(v) => p
                .take(parse_hosts("SLUICE_ALLOWED_HOSTS", split_list(v)))
                .unwrap_or_default(),
            None => p
                .take(parse_hosts(
                    "allowed_hosts",
                    file.allowed_hosts.clone().unwrap_or_default(),
                ))
                .unwrap_or_default(),
        };
        for (j, h) in file.metrics_api_keys_sha256.iter().flatten().enumerate() {
            if !is_sha256_hex(h) {
                p.push(ConfigError::new(
                    format!("metrics_api_keys_sha256[{j}]"),
                    "must be 64 hex characters: the SHA-256 of a key, never the key itself",
                ));
            }
            s.metrics_keys_sha256.push(h.to_ascii_lowercase());
        }
        if s.metrics_require_key && s.metrics_keys_sha256.is_empty() {
            // Otherwise nobody could ever read /metrics: surely not what was meant.
            p.push(ConfigError::new(
                key_of(vars, "SLUICE_METRICS_REQUIRE_KEY", "metrics_require_key"),
                "needs at least one key in metrics_api_keys_sha256 (`sluice gen-key` makes one)",
            ));
        }
        if s.header_read_timeout.is_zero() {
            p.push(ConfigError::new(
                key_of(
                    vars,
                    "SLUICE_HEADER_READ_TIMEOUT_SECS",
                    "header_read_timeout_secs",
                ),
                "must be at least 1",
            ));
        }
        if s.client_write_timeout.is_zero() {
            p.push(ConfigError::new(
                key_of(
                    vars,
                    "SLUICE_CLIENT_WRITE_TIMEOUT_SECS",
                    "client_write_timeout_secs",
                ),
                "must be at least 1",
            ));
        }
        if s.body_read_timeout.is_zero() {
            p.push(ConfigError::new(
                key_of(
                    vars,
                    "SLUICE_BODY_READ_TIMEOUT_SECS",
                    "body_read_timeout_secs",
                ),
                "must be at least 1",
            ));
        }
        if s.max_connections == Some(0) {
            p.push(ConfigError::new(
                key_of(vars, "SLUICE_MAX_CONNECTIONS", "max_connections"),
                "must be at least 1",
            ));
        }
        if s.stream_max_readers == 0 {
            p.push(ConfigError::new(
                key_of(vars, "SLUICE_STREAM_MAX_READERS", "stream_max_readers"),
                "must be at least 1",
            ));
        }
        if let Some(f) = var(vars, "SLUICE_LOG_FORMAT") {
            if !matches!(f.trim().to_ascii_lowercase().as_str(), "json" | "text") {
                p.push(ConfigError::new(
                    "SLUICE_LOG_FORMAT",
                    format!("'{f}' is not a log format (json | text)"),
                ));
            }
        }
        s.providers = resolve_providers(&file.providers, vars, &mut p);
        s.routes = resolve_routes(&file.routes, &s.providers, s.demo, &mut p);
        check_teams(&s.teams, &mut p);
        if s.teams.is_empty() && !s.addr.ip().is_loopback() && !s.allow_open {
            p.push(ConfigError::new(
                addr_key,
                format!(
                    "no [[teams]] are configured (open mode), which may only listen on a loopback address; \
                     '{}' is not one. Add teams, or set SLUICE_ALLOW_OPEN=1 to serve without keys",
                    s.addr
                ),
            ));
        }
        p.finish()?;
        Ok(s)
    }
}

fn resolve_providers(
    list: &[ProviderConfig],
    vars: &Vars,
    p: &mut Problems,
) -> Vec<ProviderSettings> {
    use provider_adapter::{ProviderKind, Secret};
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, prov) in list.iter().enumerate() {
        let key = |field: &str| format!("providers[{i}].{field}");
        if prov.name.trim().is_empty() {
            p.push(ConfigError::new(key("name"), "must not be empty"));
        }
        if names.contains(&prov.name) {
            p.push(ConfigError::new(
                key("name"),
                format!("'{}' is used by two providers", prov.name),
            ));
        }
        names.push(prov.name.clone());
        let kind = match prov.kind.as_str() {
            "openai" => ProviderKind::OpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "azure" => ProviderKind::Azure,
            other => {
                p.push(ConfigError::new(
                    key("kind"),
                    format!("'{other}' is not a provider kind (openai | anthropic | azure)"),
                ));
                continue;
            }
        };
        let base_url = match (&prov.base_url, kind) {
            (Some(u), _) => u.clone(),
            (None, ProviderKind::OpenAi) => DEFAULT_OPENAI_BASE_URL.to_owned(),
            (None, ProviderKind::Anthropic) => DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            (None, ProviderKind::Azure) => {
                p.push(ConfigError::new(
                    key("base_url"),
                    "is required for kind azure (https://RESOURCE.openai.azure.com)",
                ));
                String::from("https://")
            }
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            p.push(ConfigError::new(
                key("base_url"),
                format!("'{base_url}' is not an http(s) URL"),
            ));
        }
        // Refused on the other kinds rather than ignored: an `api_version` there most likely
        // means a wrong `kind`, which would otherwise show only as 404s from the upstream.
        match (kind, &prov.api_version) {
            (ProviderKind::Azure, None) => p.push(ConfigError::new(
                key("api_version"),
                "is required for kind azure (for example \"2024-10-21\")",
            )),
            (ProviderKind::Azure, Some(v))
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
            {
                p.push(ConfigError::new(
                    key("api_version"),
                    format!("'{v}' is not an API version (for example \"2024-10-21\")"),
                ))
            }
            (ProviderKind::Azure, Some(_)) | (_, None) => {}
            (_, Some(_)) => p.push(ConfigError::new(
                key("api_version"),
                "is only for kind azure",
            )),
        }
        let headers = resolve_headers(i, &prov.headers, p);
        let api_key = match &prov.api_key_env {
            Some(name) => match var(vars, name) {
                Some(v) => Some(Secret::new(v)),
                None => {
                    p.push(ConfigError::new(
                        key("api_key_env"),
                        format!("the variable {name} is not set"),
                    ));
                    None
                }
            },
            None => None,
        };
        for (j, m) in prov.models.iter().enumerate() {
            if let Err(e) = glob::validate(m) {
                p.push(ConfigError::new(format!("providers[{i}].models[{j}]"), e));
            }
        }
        out.push(ProviderSettings {
            name: prov.name.clone(),
            kind,
            base_url,
            api_key,
            api_version: prov.api_version.clone(),
            headers,
            models: prov.models.clone(),
        });
    }
    // Environment shortcuts: Anthropic claims claude-*, OpenAI every model no other claims.
    if let Some(k) = var(vars, "ANTHROPIC_API_KEY") {
        out.push(ProviderSettings {
            name: "anthropic".into(),
            kind: ProviderKind::Anthropic,
            base_url: var(vars, "ANTHROPIC_BASE_URL")
                .unwrap_or(DEFAULT_ANTHROPIC_BASE_URL)
                .to_owned(),
            api_key: Some(Secret::new(k)),
            api_version: None,
            headers: http::HeaderMap::new(),
            models: vec!["claude-*".into()],
        });
    }
    if let Some(k) = var(vars, "OPENAI_API_KEY") {
        out.push(ProviderSettings {
            name: "openai".into(),
            kind: ProviderKind::OpenAi,
            base_url: var(vars, "OPENAI_BASE_URL")
                .unwrap_or(DEFAULT_OPENAI_BASE_URL)
                .to_owned(),
            api_key: Some(Secret::new(k)),
            api_version: None,
            headers: http::HeaderMap::new(),
            models: vec!["*".into()],
        });
    }
    out
}

/// Checks `[[routes]]` against the providers (the env shortcuts `openai` and `anthropic`
/// included; `sluice-demo` when the demo is on), reporting every problem.
fn resolve_routes(
    list: &[RouteConfig],
    providers: &[ProviderSettings],
    demo: bool,
    p: &mut Problems,
) -> Vec<RouteSettings> {
    let known =
        |name: &str| providers.iter().any(|pr| pr.name == name) || (demo && name == "sluice-demo");
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let mut ok = true;
        if r.model.trim().is_empty() {
            p.push(ConfigError::new(key("model"), "must not be empty"));
            ok = false;
        } else if let Err(e) = glob::validate(&r.model) {
            p.push(ConfigError::new(key("model"), e));
            ok = false;
        }
        if let Some(j) = list[..i].iter().position(|o| o.model == r.model) {
            p.push(ConfigError::new(
                key("model"),
                format!(
                    "'{}' is already routed by routes[{j}]: this route is never reached",
                    r.model
                ),
            ));
            ok = false;
        }
        let strategy = match r.strategy.as_deref() {
            None | Some("fallback") => Strategy::Fallback,
            Some("round_robin") => Strategy::RoundRobin,
            Some(other) => {
                p.push(ConfigError::new(
                    key("strategy"),
                    format!("'{other}' is not a strategy (fallback | round_robin)"),
                ));
                ok = false;
                Strategy::Fallback
            }
        };
        if r.targets.is_empty() {
            p.push(ConfigError::new(
                key("targets"),
                "list at least one target, as provider:model",
            ));
            ok = false;
        }
        let mut targets = Vec::new();
        for (j, t) in r.targets.iter().enumerate() {
            let tkey = format!("routes[{i}].targets[{j}]");
            match t.split_once(':') {
                None => {
                    p.push(ConfigError::new(
                        tkey,
                        format!("'{t}' is not provider:model"),
                    ));
                    ok = false;
                }
                Some((prov, model)) if prov.is_empty() || model.is_empty() => {
                    p.push(ConfigError::new(
                        tkey,
                        format!("'{t}' is not provider:model (both parts are needed)"),
                    ));
                    ok = false;
                }
                Some((prov, model)) => {
                    if !known(prov) {
                        p.push(ConfigError::new(
                            tkey,
                            format!("no provider is named '{prov}'"),
                        ));
                        ok = false;
                    }
                    targets.push((prov.to_owned(), model.to_owned()));
                }
            }
        }
        if ok {
            out.push(RouteSettings {
                model: r.model.clone(),
                targets,
                strategy,
                cooldown: Duration::from_secs(
                    r.cooldown_secs.unwrap_or(DEFAULT_ROUTE_COOLDOWN_SECS),
                ),
            });
        }
    }
    out
}

fn resolve_redis(st: StateConfig, vars: &Vars, p: &mut Problems) -> Option<RedisSettings> {
    let (url, url_key) = match var(vars, "SLUICE_REDIS_URL") {
        Some(u) => (u.to_owned(), "SLUICE_REDIS_URL"),
        None => (st.redis_url?, "state.redis_url"),
    };
    if !["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        // Not the URL itself: it may carry a password.
        p.push(ConfigError::new(
            url_key,
            "must be a redis://, rediss://, unix:// or redis+unix:// URL",
        ));
    } else if let Err(e) = redis::Client::open(url.as_str()) {
        // What redis-rs itself cannot use (a bad port or database number, an unknown fragment)
        // fails here, at start, naming the key; not at the first shared call. Its message
        // names the part, never the password.
        p.push(ConfigError::new(
            url_key,
            format!("is not a URL Redis can be reached at: {e}"),
        ));
    }
    let (mode, mode_key) = match var(vars, "SLUICE_REDIS_ON_FAILURE") {
        Some(m) => (Some(m.to_owned()), "SLUICE_REDIS_ON_FAILURE"),
        None => (st.on_failure, "state.on_failure"),
    };
    let on_failure = match mode.as_deref().map(str::trim) {
        None | Some("fail_open") => OnFailure::FailOpen,
        Some("fail_closed") => OnFailure::FailClosed,
        Some(other) => {
            p.push(ConfigError::new(
                mode_key,
                format!("'{other}' is not fail_open or fail_closed"),
            ));
            OnFailure::FailOpen
        }
    };
    let mut num = |name: &'static str, toml: &'static str, file: Option<u64>, default: u64| {
        let v = match var(vars, name) {
            Some(v) => p.take(parse_num(name, v)).unwrap_or(default),
            None => file.unwrap_or(default),
        };
        if v == 0 {
            p.push(ConfigError::new(
                key_of(vars, name, toml),
                "must be at least 1",
            ));
        }
        v
    };
    let timeout = num(
        "SLUICE_REDIS_TIMEOUT_MS",
        "state.timeout_ms",
        st.timeout_ms,
        DEFAULT_REDIS_TIMEOUT_MS,
    );
    let lease = num(
        "SLUICE_CONCURRENCY_LEASE_SECS",
        "state.lease_secs",
        st.lease_secs,
        DEFAULT_CONCURRENCY_LEASE_SECS,
    );
    let owner_timeout = num(
        "SLUICE_OWNER_TIMEOUT_SECS",
        "state.owner_timeout_secs",
        st.owner_timeout_secs,
        DEFAULT_OWNER_TIMEOUT_SECS,
    );
    Some(RedisSettings {
        url,
        on_failure,
        timeout: Duration::from_millis(timeout),
        lease: Duration::from_secs(lease),
        owner_timeout: Duration::from_secs(owner_timeout),
    })
}

fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Origins as browsers serialise them: `scheme://host[:port]`, lower case, no path, no default
/// port; or `*` for any origin.
fn parse_origins(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|o| {
            crate::origin::normalize_origin(&o).ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!(
                        "'{o}' is not an origin: write scheme://host[:port] (e.g. https://chat.example.com), or * for any"
                    ),
                )
            })
        })
        .collect()
}

/// Host names (optionally with `:port`), lower case.
fn parse_hosts(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|h| {
            let lower = h.trim().to_ascii_lowercase();
            let ok = !lower.is_empty()
                && lower.len() <= 253
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_*".contains(&b));
            if ok {
                Ok(lower)
            } else {
                Err(ConfigError::new(
                    key,
                    format!(
                        "'{h}' is not a host name (e.g. chat.example.com or chat.example.com:8443)"
                    ),
                ))
            }
        })
        .collect()
}

/// Checks the `[[teams]]` (at start, and on reload), reporting every problem.
pub fn validate_teams(teams: &[TeamConfig]) -> Result<(), ConfigError> {
    let mut p = Problems::default();
    check_teams(teams, &mut p);
    p.finish()
}

fn check_teams(teams: &[TeamConfig], p: &mut Problems) {
    let mut names = Vec::new();
    let mut hashes: Vec<&str> = Vec::new();
    for (i, t) in teams.iter().enumerate() {
        let key = |field: &str| format!("teams[{i}].{field}");
        if t.name.trim().is_empty() {
            p.push(ConfigError::new(key("name"), "must not be empty"));
        }
        if names.contains(&&t.name) {
            p.push(ConfigError::new(
                key("name"),
                format!("'{}' is used by two teams", t.name),
            ));
        }
        names.push(&t.name);
        if t.api_keys_sha256.is_empty() {
            p.push(ConfigError::new(
                key("api_keys_sha256"),
                "list at least one key hash (see `sluice gen-key`)",
            ));
        }
        for (j, h) in t.api_keys_sha256.iter().enumerate() {
            if !is_sha256_hex(h) {
                p.push(ConfigError::new(
                    format!("teams[{i}].api_keys_sha256[{j}]"),
                    "must be 64 hex characters: the SHA-256 of a key, never the key itself",
                ));
            }
            if hashes.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                p.push(ConfigError::new(
                    format!("teams[{i}].api_keys_sha256[{j}]"),
                    "the same key hash is listed twice",
                ));
            }
            hashes.push(h);
        }
        if t.requests_per_minute == Some(0) {
            p.push(ConfigError::new(
                key("requests_per_minute"),
                "must be at least 1",
            ));
        }
        if t.request_burst == Some(0) {
            p.push(ConfigError::new(key("request_burst"), "must be at least 1"));
        }
        if t.tokens_per_minute == Some(0) {
            p.push(ConfigError::new(
                key("tokens_per_minute"),
                "must be at least 1",
            ));
        }
        if t.max_concurrent_streams == Some(0) {
            p.push(ConfigError::new(
                key("max_concurrent_streams"),
                "must be at least 1",
            ));
        }
        if t.default_max_tokens == Some(0) {
            p.push(ConfigError::new(
                key("default_max_tokens"),
                "must be at least 1",
            ));
        }
        for (j, m) in t.models.iter().enumerate() {
            if let Err(e) = glob::validate(m) {
                p.push(ConfigError::new(format!("teams[{i}].models[{j}]"), e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> Vars {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let file = parse_toml(
            "keepalive_secs = 0\n\
             [[providers]]\nname = \"a\"\nkind = \"nope\"\nmodels = [\"x\"]\n\
             [[providers]]\nname = \"b\"\nkind = \"azure\"\nbase_url = \"ftp://x\"\nmodels = []\n\
             [[teams]]\nname = \"t\"\napi_keys_sha256 = [\"short\"]\nrequests_per_minute = 0\n",
        )
        .unwrap();
        let e = Settings::resolve(
            file,
            &Flags::default(),
            &vars(&[
                ("SLUICE_MAX_BODY_BYTES", "lots"),
                ("SLUICE_LOG_FORMAT", "xml"),
            ]),
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                // From the file, so named by its TOML key (not SLUICE_KEEPALIVE_SECS).
                "keepalive_secs",
                "SLUICE_MAX_BODY_BYTES",
                "SLUICE_LOG_FORMAT",
                "providers[0].kind",
                "providers[1].base_url",
                "providers[1].api_version",
                "teams[0].api_keys_sha256[0]",
                "teams[0].requests_per_minute",
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with("invalid configuration, 8 problems:"),
            "{text}"
        );
        assert!(text.contains("\n  providers[1].base_url: "), "{text}");
    }

    #[test]
    fn route_problems_are_all_reported() {
        let file = parse_toml(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nmodels = [\"x\"]\n\
             [[routes]]\nmodel = \"smart\"\ntargets = [\"p:qwen2.5:7b\", \"nope:m\", \"plain\"]\nstrategy = \"random\"\n\
             [[routes]]\nmodel = \"smart\"\ntargets = [\"openai:gpt-4o\"]\n\
             [[routes]]\nmodel = \"empty\"\n",
        )
        .unwrap();
        let e = Settings::resolve(
            file,
            &Flags::default(),
            &vars(&[("OPENAI_API_KEY", "sk-x")]),
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "routes[0].strategy",
                "routes[0].targets[1]",
                "routes[0].targets[2]",
                "routes[1].model",
                "routes[2].targets",
            ],
            "{e}"
        );
        let ok = parse_toml(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nmodels = [\"x\"]\n\
             [[routes]]\nmodel = \"smart\"\ntargets = [\"p:qwen2.5:7b\"]\n",
        )
        .unwrap();
        let s = Settings::resolve(ok, &Flags::default(), &vars(&[])).unwrap();
        assert_eq!(
            s.routes[0].targets,
            [("p".to_owned(), "qwen2.5:7b".to_owned())]
        );
        assert_eq!(
            s.routes[0].cooldown,
            Duration::from_secs(DEFAULT_ROUTE_COOLDOWN_SECS)
        );
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.addr.to_string(), DEFAULT_ADDR);
        assert!(s.demo);
        assert_eq!(s.keepalive, Duration::from_secs(15));
        assert_eq!(s.stream_grace, Duration::from_secs(30));
        assert_eq!(s.max_body_bytes, 4 << 20);
        assert!(s.providers.is_empty());
        assert_eq!(s.body_read_timeout, Duration::from_secs(30));
        assert_eq!(s.timeouts.response, Duration::from_secs(600));
    }

    #[test]
    fn body_and_response_timeouts_are_checked_by_name() {
        for key in [
            "SLUICE_BODY_READ_TIMEOUT_SECS",
            "SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS",
        ] {
            for bad in ["0", "soon"] {
                let e = Settings::resolve(
                    FileConfig::default(),
                    &Flags::default(),
                    &vars(&[(key, bad)]),
                )
                .unwrap_err();
                let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
                assert_eq!(keys, vec![key], "{key}={bad}: {e}");
            }
        }
        let file = parse_toml("body_read_timeout_secs = 0\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(
            e.problems().map(|(k, _)| k).collect::<Vec<_>>(),
            vec!["body_read_timeout_secs"]
        );
        let file = parse_toml("body_read_timeout_secs = 5\nupstream_response_timeout_secs = 900\n")
            .unwrap();
        let s = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.body_read_timeout, Duration::from_secs(5));
        assert_eq!(s.timeouts.response, Duration::from_secs(900));
    }

    #[test]
    fn order_file_then_env_then_flags() {
        let file = parse_toml("addr = \"127.0.0.1:1\"\nkeepalive_secs = 3\n").unwrap();
        let s = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!((s.addr.port(), s.keepalive.as_secs()), (1, 3));
        let v = vars(&[
            ("SLUICE_ADDR", "127.0.0.1:2"),
            ("SLUICE_KEEPALIVE_SECS", "4"),
        ]);
        let s = Settings::resolve(file.clone(), &Flags::default(), &v).unwrap();
        assert_eq!((s.addr.port(), s.keepalive.as_secs()), (2, 4));
        let flags = Flags {
            addr: Some("127.0.0.1:3".into()),
            config: None,
        };
        let s = Settings::resolve(file, &flags, &v).unwrap();
        assert_eq!(s.addr.port(), 3);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse_toml("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse_toml("[[providers]]\nname = \"x\"\nkind = \"openai\"\nmodels = \"a\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("models"), "{e}");
        let file =
            parse_toml("[[providers]]\nname = \"x\"\nkind = \"grpc\"\nmodels = [\"a\"]\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "providers[0].kind");
        let e = Settings::resolve(
            FileConfig::default(),
            &Flags::default(),
            &vars(&[("SLUICE_KEEPALIVE_SECS", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "SLUICE_KEEPALIVE_SECS");
        let file = parse_toml("[[teams]]\nname = \"t\"\napi_keys_sha256 = [\"abc\"]\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "teams[0].api_keys_sha256[0]");
        let file = parse_toml("[[providers]]\nname = \"x\"\nkind = \"openai\"\napi_key_env = \"NOPE_KEY\"\nmodels = [\"a\"]\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "providers[0].api_key_env");
    }

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

    #[test]
    fn rate_limit_window() {
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.rate_limit_window, Duration::from_secs(60));
        let file = parse_toml("rate_limit_window_secs = 5\n").unwrap();
        let s = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.rate_limit_window, Duration::from_secs(5));
        let v = vars(&[("SLUICE_RATE_LIMIT_WINDOW_SECS", "2")]);
        let s = Settings::resolve(file, &Flags::default(), &v).unwrap();
        assert_eq!(s.rate_limit_window, Duration::from_secs(2));
        let v = vars(&[("SLUICE_RATE_LIMIT_WINDOW_SECS", "0")]);
        let e = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap_err();
        assert_eq!(e.key, "SLUICE_RATE_LIMIT_WINDOW_SECS");
        let file = parse_toml("[[teams]]\nname = \"t\"\napi_keys_sha256 = [\"0000000000000000000000000000000000000000000000000000000000000000\"]\ndefault_max_tokens = 0\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "teams[0].default_max_tokens");
    }

    #[test]
    fn client_write_timeout() {
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.client_write_timeout, Duration::from_secs(30));
        let file = parse_toml("client_write_timeout_secs = 5\n").unwrap();
        let s = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.client_write_timeout, Duration::from_secs(5));
        let v = vars(&[("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "1")]);
        let s = Settings::resolve(file, &Flags::default(), &v).unwrap();
        assert_eq!(s.client_write_timeout, Duration::from_secs(1));
        for (v, key) in [
            (
                vars(&[("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "0")]),
                "SLUICE_CLIENT_WRITE_TIMEOUT_SECS",
            ),
            (
                vars(&[("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "x")]),
                "SLUICE_CLIENT_WRITE_TIMEOUT_SECS",
            ),
        ] {
            let e = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap_err();
            assert_eq!(e.key, key);
        }
        let file = parse_toml("client_write_timeout_secs = 0\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "client_write_timeout_secs");
    }

    #[test]
    fn open_mode_refuses_public_address() {
        let v = vars(&[("SLUICE_ADDR", "0.0.0.0:8080")]);
        let e = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap_err();
        assert_eq!(e.key, "SLUICE_ADDR");
        let v = vars(&[("SLUICE_ADDR", "0.0.0.0:8080"), ("SLUICE_ALLOW_OPEN", "1")]);
        assert!(Settings::resolve(FileConfig::default(), &Flags::default(), &v).is_ok());
    }

    #[test]
    fn env_shortcut_providers_come_last() {
        let v = vars(&[("OPENAI_API_KEY", "sk-a"), ("ANTHROPIC_API_KEY", "sk-b")]);
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap();
        assert_eq!(s.providers[0].models, vec!["claude-*"]);
        assert_eq!(s.providers[1].models, vec!["*"]);
        assert_eq!(s.providers[1].base_url, DEFAULT_OPENAI_BASE_URL);
        assert!(!format!("{:?}", s.providers).contains("sk-a"));
    }

    #[test]
    fn redis_urls_lose_every_secret_in_every_form() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
            (
                "redis://user:s3cret@cache:6380/1",
                "redis://***@cache:6380/1",
            ),
            ("redis://:s3cret@cache", "redis://***@cache"),
            (
                "rediss://default:s3cret@cache.example:6380",
                "rediss://***@cache.example:6380",
            ),
            (
                "rediss://u:s3cret@cache#insecure",
                "rediss://***@cache#insecure",
            ),
            ("redis://u:s3%40cret@cache", "redis://***@cache"),
            (
                "unix:///run/redis.sock?pass=s3cret",
                "unix:///run/redis.sock?pass=***",
            ),
            (
                "unix:///run/redis.sock?db=2&pass=s3cret&user=me",
                "unix:///run/redis.sock?db=2&pass=***&user=me",
            ),
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            (
                "redis://cache?password=s3cret",
                "redis://cache?password=***",
            ),
            (
                "redis://cache/0?PASSWORD=s3cret&protocol=resp3",
                "redis://cache/0?PASSWORD=***&protocol=resp3",
            ),
            (
                "unix:///run/redis.sock?pass=s3%26cret%3Dx",
                "unix:///run/redis.sock?pass=***",
            ),
        ];
        for (url, want) in cases {
            let got = redact_redis_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("s3"), "{url} -> {got}");
        }
        // Unparseable: the scheme alone (where the password ends cannot be known).
        for url in ["redis://u:s3cret@[bad", "unix://s3cret:x@host:notaport"] {
            let got = redact_redis_url(url);
            assert!(!got.contains("s3"), "{url} -> {got}");
        }
        let settings = RedisSettings {
            url: "unix:///run/redis.sock?pass=s3cret".into(),
            on_failure: OnFailure::FailOpen,
            timeout: Duration::from_millis(1),
            lease: Duration::from_secs(1),
            owner_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    /// `rediss://` (managed Redis usually requires TLS) is built in: redis-rs with rustls and
    /// the webpki roots. A URL redis-rs cannot use fails at start, naming the key.
    #[test]
    fn rediss_urls_are_accepted_and_unusable_urls_fail_at_start() {
        for url in [
            "rediss://default:s3cret@cache.example:6380/0",
            "rediss://cache.example:6380#insecure",
        ] {
            let v = vars(&[("SLUICE_REDIS_URL", url)]);
            let s = Settings::resolve(FileConfig::default(), &Flags::default(), &v)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(s.redis.as_ref().map(|r| r.url.as_str()), Some(url));
            let info = redis::Client::open(url).expect("tls built in");
            assert!(
                matches!(
                    info.get_connection_info().addr(),
                    redis::ConnectionAddr::TcpTls { .. }
                ),
                "{url}"
            );
        }
        for url in [
            "rediss://u:s3cret@cache.example:6380#verify-none",
            "redis://u:s3cret@cache.example:6380/notadb",
        ] {
            let v = vars(&[("SLUICE_REDIS_URL", url)]);
            let e = Settings::resolve(FileConfig::default(), &Flags::default(), &v)
                .expect_err(url)
                .to_string();
            assert!(e.contains("SLUICE_REDIS_URL"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    /// Every bound that may not be 0 is named by where its 0 was written: the variable, or the
    /// file's key (which a variable set to a good value overrides).
    #[test]
    fn zero_bounds_are_named_by_their_source() {
        for (env, toml) in [
            ("SLUICE_KEEPALIVE_SECS", "keepalive_secs"),
            (
                "SLUICE_UPSTREAM_CONNECT_TIMEOUT_SECS",
                "upstream_connect_timeout_secs",
            ),
            (
                "SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS",
                "upstream_headers_timeout_secs",
            ),
            (
                "SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS",
                "upstream_idle_timeout_secs",
            ),
            (
                "SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS",
                "upstream_response_timeout_secs",
            ),
            ("SLUICE_RATE_LIMIT_WINDOW_SECS", "rate_limit_window_secs"),
            (
                "SLUICE_HEADER_READ_TIMEOUT_SECS",
                "header_read_timeout_secs",
            ),
            (
                "SLUICE_CLIENT_WRITE_TIMEOUT_SECS",
                "client_write_timeout_secs",
            ),
            ("SLUICE_BODY_READ_TIMEOUT_SECS", "body_read_timeout_secs"),
            ("SLUICE_MAX_CONNECTIONS", "max_connections"),
            ("SLUICE_STREAM_MAX_READERS", "stream_max_readers"),
        ] {
            let file = parse_toml(&format!("{toml} = 0\n")).unwrap();
            let e = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid configuration: {toml}: must be at least 1")
            );
            let e = Settings::resolve(
                FileConfig::default(),
                &Flags::default(),
                &vars(&[(env, "0")]),
            )
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid configuration: {env}: must be at least 1")
            );
            let s = Settings::resolve(file, &Flags::default(), &vars(&[(env, "7")]));
            assert!(s.is_ok(), "{env}=7 overrides {toml} = 0");
        }
    }

    #[test]
    fn state_settings_are_named_by_their_source() {
        let file = parse_toml(
            "[state]\nredis_url = \"redis://127.0.0.1:6379\"\ntimeout_ms = 0\nlease_secs = 0\n\
             owner_timeout_secs = 0\non_failure = \"panic\"\n",
        )
        .unwrap();
        let e = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap_err();
        let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "state.on_failure",
                "state.timeout_ms",
                "state.lease_secs",
                "state.owner_timeout_secs"
            ],
            "{e}"
        );
        let v = vars(&[
            ("SLUICE_REDIS_ON_FAILURE", "fail_closed"),
            ("SLUICE_REDIS_TIMEOUT_MS", "0"),
            ("SLUICE_CONCURRENCY_LEASE_SECS", "5"),
            ("SLUICE_OWNER_TIMEOUT_SECS", "6"),
        ]);
        let e = Settings::resolve(file.clone(), &Flags::default(), &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: SLUICE_REDIS_TIMEOUT_MS: must be at least 1"
        );
        let v = vars(&[
            ("SLUICE_REDIS_ON_FAILURE", "fail_closed"),
            ("SLUICE_REDIS_TIMEOUT_MS", "100"),
            ("SLUICE_CONCURRENCY_LEASE_SECS", "5"),
            ("SLUICE_OWNER_TIMEOUT_SECS", "6"),
        ]);
        let r = Settings::resolve(file, &Flags::default(), &v)
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(r.on_failure, OnFailure::FailClosed);
        assert_eq!(
            (r.timeout, r.lease, r.owner_timeout),
            (
                Duration::from_millis(100),
                Duration::from_secs(5),
                Duration::from_secs(6)
            )
        );
    }
}
