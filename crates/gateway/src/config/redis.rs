//! Shared state in Redis (`[state]`, `SLUICE_REDIS_*`): its settings, checked at start, and
//! its URL redacted for logs.

use std::time::Duration;

use super::source::{Key, Reader};
use super::ConfigError;
use super::{
    StateConfig, DEFAULT_CONCURRENCY_LEASE_SECS, DEFAULT_OWNER_TIMEOUT_SECS,
    DEFAULT_REDIS_TIMEOUT_MS, ENV_CONCURRENCY_LEASE_SECS, ENV_OWNER_TIMEOUT_SECS,
    ENV_REDIS_ON_FAILURE, ENV_REDIS_TIMEOUT_MS, ENV_REDIS_URL,
};

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

/// `[state]` with the variables over it; `None` when no Redis URL is set (state in memory).
pub(super) fn resolve(st: StateConfig, r: &mut Reader) -> Option<RedisSettings> {
    let url = r.text(Key::new(ENV_REDIS_URL, "state.redis_url"), st.redis_url);
    let url_key = url.key;
    let url = url.value?;
    if !["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        // Not the URL itself: it may carry a password.
        r.push(ConfigError::new(
            url_key,
            "must be a redis://, rediss://, unix:// or redis+unix:// URL",
        ));
    } else if let Err(e) = redis::Client::open(url.as_str()) {
        // What redis-rs itself cannot use (a bad port or database number, an unknown fragment)
        // fails here, at start, naming the key; not at the first shared call. Its message
        // names the part, never the password.
        r.push(ConfigError::new(
            url_key,
            format!("is not a URL Redis can be reached at: {e}"),
        ));
    }
    let mode = r.text(
        Key::new(ENV_REDIS_ON_FAILURE, "state.on_failure"),
        st.on_failure,
    );
    let on_failure = match mode.value.as_deref().map(str::trim) {
        None | Some("fail_open") => OnFailure::FailOpen,
        Some("fail_closed") => OnFailure::FailClosed,
        Some(other) => {
            r.push(mode.problem(format!("'{other}' is not fail_open or fail_closed")));
            OnFailure::FailOpen
        }
    };
    let mut at_least_1 = |key: Key, file: Option<u64>, default: u64| -> u64 {
        let v = r.num(key, file, default);
        r.at_least_1(&v);
        v.value
    };
    let timeout = at_least_1(
        Key::new(ENV_REDIS_TIMEOUT_MS, "state.timeout_ms"),
        st.timeout_ms,
        DEFAULT_REDIS_TIMEOUT_MS,
    );
    let lease = at_least_1(
        Key::new(ENV_CONCURRENCY_LEASE_SECS, "state.lease_secs"),
        st.lease_secs,
        DEFAULT_CONCURRENCY_LEASE_SECS,
    );
    let owner_timeout = at_least_1(
        Key::new(ENV_OWNER_TIMEOUT_SECS, "state.owner_timeout_secs"),
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

#[cfg(test)]
mod tests {
    use super::super::{vars, FileConfig, Flags, Settings, Vars};
    use super::*;

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

    #[test]
    fn state_settings_are_named_by_their_source() {
        let file = super::super::parse_toml(
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
