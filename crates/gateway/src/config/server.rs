//! The server's own settings: where it listens, the demo model, and every time limit and size
//! bound (keep-alives, grace periods, upstream and client timeouts, body and relay sizes,
//! connection and stream caps, the rate-limit window).

use std::net::SocketAddr;
use std::time::Duration;

use super::source::{Key, Reader, Sourced, AT_LEAST_1};
use super::*;

/// What [`read`] leaves for `Settings::resolve` to finish.
pub(super) struct Read {
    /// The server settings; the other sections (providers, routes, teams, Redis, the web lists)
    /// are left empty.
    pub settings: Settings,
    /// Where the address came from, for the open-mode check, which needs the teams.
    pub addr_key: &'static str,
    /// With its key, for the check that needs the metrics keys.
    pub metrics_require_key: Sourced<bool>,
    /// Zero bounds, reported after the Redis and web problems: the order a file's list of
    /// problems has always had.
    pub late: Vec<ConfigError>,
}

/// Reads the server settings, in the order their problems are listed.
pub(super) fn read(file: &FileConfig, flags: &Flags, r: &mut Reader) -> Read {
    let addr_text = r
        .pick(
            Key::new(ENV_ADDR, "addr"),
            file.addr.clone(),
            DEFAULT_ADDR.to_owned(),
            |_, v| Ok(v.to_owned()),
        )
        .or_flag(FLAG_ADDR, flags.addr.clone());
    let addr = addr_text.value.parse::<SocketAddr>().map_err(|_| {
        addr_text.problem(format!(
            "'{}' is not a HOST:PORT address (e.g. 127.0.0.1:8080)",
            addr_text.value
        ))
    });
    let addr = r
        .problems
        .take(addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let demo = r.switch(Key::new(ENV_DEMO, "demo"), file.demo, DEFAULT_DEMO);
    let allow_open = r.switch(
        Key::new(ENV_ALLOW_OPEN, "allow_open"),
        file.allow_open,
        DEFAULT_ALLOW_OPEN,
    );
    let demo_tokens_per_sec = r.num(
        Key::new(ENV_DEMO_TOKENS_PER_SEC, "demo_tokens_per_sec"),
        file.demo_tokens_per_sec,
        DEFAULT_DEMO_TOKENS_PER_SEC,
    );
    let keepalive = r.num(
        Key::new(ENV_KEEPALIVE_SECS, "keepalive_secs"),
        file.keepalive_secs,
        DEFAULT_KEEPALIVE_SECS,
    );
    r.at_least_1(&keepalive);
    let upstream = [
        r.num(
            Key::new(
                ENV_UPSTREAM_CONNECT_TIMEOUT_SECS,
                "upstream_connect_timeout_secs",
            ),
            file.upstream_connect_timeout_secs,
            DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS,
        ),
        r.num(
            Key::new(
                ENV_UPSTREAM_HEADERS_TIMEOUT_SECS,
                "upstream_headers_timeout_secs",
            ),
            file.upstream_headers_timeout_secs,
            DEFAULT_UPSTREAM_HEADERS_TIMEOUT_SECS,
        ),
        r.num(
            Key::new(ENV_UPSTREAM_IDLE_TIMEOUT_SECS, "upstream_idle_timeout_secs"),
            file.upstream_idle_timeout_secs,
            DEFAULT_UPSTREAM_IDLE_TIMEOUT_SECS,
        ),
        r.num(
            Key::new(
                ENV_UPSTREAM_RESPONSE_TIMEOUT_SECS,
                "upstream_response_timeout_secs",
            ),
            file.upstream_response_timeout_secs,
            DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_SECS,
        ),
    ];
    for t in &upstream {
        r.at_least_1(t);
    }
    let [connect, headers, idle, response] = upstream.map(|t| secs(t.value));
    let first_token_timeout = r.num(
        Key::new(
            ENV_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS,
            "upstream_first_token_timeout_secs",
        ),
        file.upstream_first_token_timeout_secs,
        0,
    );
    let max_body_bytes = r.num(
        Key::new(ENV_MAX_BODY_BYTES, "max_body_bytes"),
        file.max_body_bytes,
        DEFAULT_MAX_BODY_BYTES,
    );
    let window = r.num(
        Key::new(ENV_RATE_LIMIT_WINDOW_SECS, "rate_limit_window_secs"),
        file.rate_limit_window_secs,
        DEFAULT_RATE_LIMIT_WINDOW_SECS,
    );
    r.at_least_1(&window);
    let stream_grace = r.num(
        Key::new(ENV_STREAM_GRACE_SECS, "stream_grace_secs"),
        file.stream_grace_secs,
        DEFAULT_STREAM_GRACE_SECS,
    );
    let stream_retention = r.num(
        Key::new(ENV_STREAM_RETENTION_SECS, "stream_retention_secs"),
        file.stream_retention_secs,
        DEFAULT_STREAM_RETENTION_SECS,
    );
    let responses_retention = r.num(
        Key::new(ENV_RESPONSES_RETENTION_SECS, "responses_retention_secs"),
        file.responses_retention_secs,
        DEFAULT_RESPONSES_RETENTION_SECS,
    );
    let responses_max_bytes = r.num(
        Key::new(ENV_RESPONSES_MAX_BYTES, "responses_max_bytes"),
        file.responses_max_bytes,
        DEFAULT_RESPONSES_MAX_BYTES,
    );
    let shutdown_grace = r.num(
        Key::new(ENV_SHUTDOWN_GRACE_SECS, "shutdown_grace_secs"),
        file.shutdown_grace_secs,
        DEFAULT_SHUTDOWN_GRACE_SECS,
    );
    let relay_max_stream_bytes = r.num(
        Key::new(ENV_RELAY_MAX_STREAM_BYTES, "relay_max_stream_bytes"),
        file.relay_max_stream_bytes,
        DEFAULT_RELAY_MAX_STREAM_BYTES,
    );
    let relay_max_total_bytes = r.num_opt(
        Key::new(ENV_RELAY_MAX_TOTAL_BYTES, "relay_max_total_bytes"),
        file.relay_max_total_bytes,
    );
    let stream_max_readers = r.num(
        Key::new(ENV_STREAM_MAX_READERS, "stream_max_readers"),
        file.stream_max_readers,
        DEFAULT_STREAM_MAX_READERS,
    );
    let header_read_timeout = r.num(
        Key::new(ENV_HEADER_READ_TIMEOUT_SECS, "header_read_timeout_secs"),
        file.header_read_timeout_secs,
        DEFAULT_HEADER_READ_TIMEOUT_SECS,
    );
    let client_write_timeout = r.num(
        Key::new(ENV_CLIENT_WRITE_TIMEOUT_SECS, "client_write_timeout_secs"),
        file.client_write_timeout_secs,
        DEFAULT_CLIENT_WRITE_TIMEOUT_SECS,
    );
    let body_read_timeout = r.num(
        Key::new(ENV_BODY_READ_TIMEOUT_SECS, "body_read_timeout_secs"),
        file.body_read_timeout_secs,
        DEFAULT_BODY_READ_TIMEOUT_SECS,
    );
    let max_connections = r.num_opt(
        Key::new(ENV_MAX_CONNECTIONS, "max_connections"),
        file.max_connections,
    );
    let connection_rate_per_ip = r.num(
        Key::new(ENV_CONNECTION_RATE_PER_IP, "connection_rate_per_ip"),
        file.connection_rate_per_ip,
        DEFAULT_CONNECTION_RATE_PER_IP_PER_SEC,
    );
    let max_streams = r.num_opt(Key::new(ENV_MAX_STREAMS, "max_streams"), file.max_streams);
    let max_connections_per_ip = r.num(
        Key::new(ENV_MAX_CONNECTIONS_PER_IP, "max_connections_per_ip"),
        file.max_connections_per_ip,
        DEFAULT_MAX_CONNECTIONS_PER_IP,
    );
    let metrics_require_key = r.switch(
        Key::new(ENV_METRICS_REQUIRE_KEY, "metrics_require_key"),
        file.metrics_require_key,
        DEFAULT_METRICS_REQUIRE_KEY,
    );
    let mut late = Vec::new();
    for t in [
        &header_read_timeout,
        &client_write_timeout,
        &body_read_timeout,
    ] {
        if t.value == 0 {
            late.push(t.problem(AT_LEAST_1));
        }
    }
    if max_connections.value == Some(0) {
        late.push(max_connections.problem(AT_LEAST_1));
    }
    if stream_max_readers.value == 0 {
        late.push(stream_max_readers.problem(AT_LEAST_1));
    }
    let settings = Settings {
        addr,
        demo: demo.value,
        demo_tokens_per_sec: demo_tokens_per_sec.value,
        allow_open: allow_open.value,
        keepalive: secs(keepalive.value),
        stream_grace: secs(stream_grace.value),
        stream_retention: secs(stream_retention.value),
        responses_retention: secs(responses_retention.value),
        responses_max_bytes: responses_max_bytes.value,
        shutdown_grace: secs(shutdown_grace.value),
        timeouts: provider_adapter::Timeouts {
            connect,
            headers,
            idle,
            response,
        },
        first_token_timeout: (first_token_timeout.value > 0)
            .then(|| secs(first_token_timeout.value)),
        max_body_bytes: max_body_bytes.value,
        relay_max_stream_bytes: relay_max_stream_bytes.value,
        relay_max_total_bytes: relay_max_total_bytes.value,
        stream_max_readers: stream_max_readers.value,
        header_read_timeout: secs(header_read_timeout.value),
        client_write_timeout: secs(client_write_timeout.value),
        body_read_timeout: secs(body_read_timeout.value),
        max_connections: max_connections.value,
        max_connections_per_ip: max_connections_per_ip.value,
        max_streams: max_streams.value,
        connection_rate_per_ip: connection_rate_per_ip.value,
        providers: Vec::new(),
        routes: Vec::new(),
        teams: Vec::new(),
        rate_limit_window: secs(window.value),
        config_path: None,
        cors_origins: Vec::new(),
        allowed_hosts: Vec::new(),
        metrics_keys_sha256: Vec::new(),
        metrics_require_key: metrics_require_key.value,
        redis: None,
    };
    Read {
        settings,
        addr_key: addr_text.key,
        metrics_require_key,
        late,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[cfg(test)]
mod tests {
    use super::super::vars;
    use super::*;

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
    fn addr_problems_name_the_flag_when_it_was_given() {
        let file = parse_toml("addr = \"nowhere\"\n").unwrap();
        let e = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "addr");
        let flags = Flags {
            addr: Some("also-nowhere".into()),
            config: None,
        };
        let e =
            Settings::resolve(file, &flags, &vars(&[("SLUICE_ADDR", "127.0.0.1:1")])).unwrap_err();
        assert_eq!(e.key, "--addr");
        assert!(
            e.message.starts_with("'also-nowhere' is not a HOST:PORT"),
            "{e}"
        );
    }

    #[test]
    fn the_responses_store_settings() {
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.responses_retention, Duration::from_secs(86_400));
        assert_eq!(s.responses_max_bytes, 64 << 20);
        let file =
            parse_toml("responses_retention_secs = 0\nresponses_max_bytes = 1000\n").unwrap();
        let s = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.responses_retention, Duration::ZERO);
        assert_eq!(s.responses_max_bytes, 1000);
        let v = vars(&[
            ("SLUICE_RESPONSES_RETENTION_SECS", "60"),
            ("SLUICE_STREAM_RETENTION_SECS", "1"),
        ]);
        let s = Settings::resolve(file, &Flags::default(), &v).unwrap();
        assert_eq!(s.responses_retention, Duration::from_secs(60));
        assert_eq!(s.stream_retention, Duration::from_secs(1));
        let e = Settings::resolve(
            FileConfig::default(),
            &Flags::default(),
            &vars(&[("SLUICE_RESPONSES_MAX_BYTES", "lots")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "SLUICE_RESPONSES_MAX_BYTES");
    }

    /// Resolving does not look at the machine: an unset relay bound stays unset (worked out
    /// from the host's memory at start).
    #[test]
    fn the_relay_bound_is_left_to_start_up() {
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.relay_max_total_bytes, None);
        let file = parse_toml("relay_max_total_bytes = 1000\n").unwrap();
        let s = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.relay_max_total_bytes, Some(1000));
        let v = vars(&[("SLUICE_RELAY_MAX_TOTAL_BYTES", "2000")]);
        let s = Settings::resolve(file, &Flags::default(), &v).unwrap();
        assert_eq!(s.relay_max_total_bytes, Some(2000));
    }
}
