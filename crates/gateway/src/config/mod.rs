//! Configuration: one serde tree, filled in the documented order (built-in defaults, the TOML
//! file named by `--config`/`SLUICE_CONFIG`, a `.env` file in the working directory, the process
//! environment, command-line flags) and validated at start with messages that name the key the
//! value came from. Every problem is reported at once, in the order `Settings::resolve` finds
//! them.
//!
//! Variables are read through a plain map ([`Vars`]) so tests never touch the process
//! environment, and nothing here probes the machine: what depends on it (the relay's memory
//! bound, the connection caps) is worked out at start, in `crate::bootstrap` and `crate::host`.
//!
//! - `env`: every variable's name, and every default.
//! - `file`: the TOML schema, and reading it.
//! - `source`: which layer set a value, and so the key its problems are named by.
//! - `server`: the address, timeouts, sizes and caps.
//! - `redis`: `[state]`, shared state in Redis.
//! - `web`: the allowed web origins and host names.
//! - `teams`: `[[teams]]` and the `/metrics` keys.
//! - `providers`, `routes`: `[[providers]]` (with the env shortcuts) and `[[routes]]`.
//! - `disconnect`: `on_disconnect` and `grace_secs` (routes and teams), and which wins.
//! - `error`: [`ConfigError`], and the problems collected on the way.

mod disconnect;
mod env;
mod error;
mod file;
mod providers;
mod redis;
mod routes;
mod server;
mod source;
mod teams;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use disconnect::{Disconnect, OnDisconnect, MAX_GRACE_SECS};
pub use env::*;
pub use error::ConfigError;
pub use file::{
    parse_toml, read_file, FileConfig, ProviderConfig, RouteConfig, StateConfig, TeamConfig,
};
pub use providers::ProviderSettings;
pub use redis::{redact_redis_url, OnFailure, RedisSettings};
pub use routes::{RouteSettings, Strategy};
pub use teams::validate_teams;

use source::Reader;

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

/// Command-line flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<String>,
    pub addr: Option<String>,
}

/// The name a problem with `--addr` is reported under.
pub const FLAG_ADDR: &str = "--addr";

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
    /// How long a finished Responses-API answer is kept after its stream (zero: not kept).
    pub responses_retention: Duration,
    /// Bytes of those answers kept in memory (without Redis).
    pub responses_max_bytes: usize,
    pub shutdown_grace: Duration,
    pub timeouts: provider_adapter::Timeouts,
    /// From a stream's headers to its first content (`None`: no limit); a route's own value
    /// wins (see `RouteSettings::first_token_timeout`).
    pub first_token_timeout: Option<Duration>,
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
    /// Builds the settings from the variables and flags, reading the config file they name.
    pub fn load(flags: &Flags, vars: &Vars) -> Result<Self, ConfigError> {
        let path = flags
            .config
            .clone()
            .or_else(|| source::var(vars, ENV_CONFIG).map(str::to_owned));
        let file = match &path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let mut s = Self::resolve(file, flags, vars)?;
        s.config_path = path;
        Ok(s)
    }

    /// Applies the variables and flags over `file`, then validates. Pure: the same arguments
    /// give the same answer on any machine.
    pub fn resolve(file: FileConfig, flags: &Flags, vars: &Vars) -> Result<Self, ConfigError> {
        let mut r = Reader::new(vars);
        let server::Read {
            settings: mut s,
            addr_key,
            metrics_require_key,
            late,
        } = server::read(&file, flags, &mut r);
        s.redis = redis::resolve(file.state.clone().unwrap_or_default(), &mut r);
        s.cors_origins = web::cors_origins(&file, &mut r);
        s.allowed_hosts = web::allowed_hosts(&file, &mut r);
        s.metrics_keys_sha256 = teams::metrics_keys(
            file.metrics_api_keys_sha256.as_deref(),
            &metrics_require_key,
            &mut r.problems,
        );
        for e in late {
            r.push(e);
        }
        if let Some(f) = r.var(ENV_LOG_FORMAT) {
            if !matches!(f.trim().to_ascii_lowercase().as_str(), "json" | "text") {
                r.push(ConfigError::new(
                    ENV_LOG_FORMAT,
                    format!("'{f}' is not a log format (json | text)"),
                ));
            }
        }
        s.providers = providers::resolve(&file.providers, &mut r);
        s.routes = routes::resolve(&file.routes, &s.providers, s.demo, &mut r.problems);
        teams::check_teams(&file.teams, &mut r.problems);
        s.teams = file.teams;
        if s.teams.is_empty() && !s.addr.ip().is_loopback() && !s.allow_open {
            r.push(ConfigError::new(
                addr_key,
                format!(
                    "no [[teams]] are configured (open mode), which may only listen on a loopback address; \
                     '{}' is not one. Add teams, or set {ENV_ALLOW_OPEN}=1 to serve without keys",
                    s.addr
                ),
            ));
        }
        r.finish()?;
        Ok(s)
    }
}

/// Variables from pairs, for tests.
#[cfg(test)]
fn vars(kv: &[(&str, &str)]) -> Vars {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn open_mode_refuses_public_address() {
        let v = vars(&[("SLUICE_ADDR", "0.0.0.0:8080")]);
        let e = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap_err();
        assert_eq!(e.key, "SLUICE_ADDR");
        let v = vars(&[("SLUICE_ADDR", "0.0.0.0:8080"), ("SLUICE_ALLOW_OPEN", "1")]);
        assert!(Settings::resolve(FileConfig::default(), &Flags::default(), &v).is_ok());
    }
}
