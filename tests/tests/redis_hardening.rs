//! Redis as an operator meets it on a bad day, against the real binary: a password in any form of
//! `SLUICE_REDIS_URL` stays out of the log; a Redis that stalls, restarts or is flushed never
//! leaves a reader on another instance waiting without an end; remote readers share a bounded
//! number of Redis connections; and a stream puts no more into Redis than the relay keeps.

use std::time::Duration;

use serde_json::json;
use sluice_tests::e2e::{client, wait_until};
use sluice_tests::start_sluice;

/// Every URL form this build of redis-rs reads (`rediss://` needs a TLS feature it is built
/// without: its redaction is unit-tested in `config.rs`), with its password where that form carries it. No Redis listens
/// there: the start-up line and the "not answering" warning both print the URL.
#[tokio::test]
async fn a_redis_password_never_reaches_the_log_in_any_url_form() {
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("absent.sock");
    let sock = sock.display();
    let urls = [
        (
            format!("unix://{sock}?pass=unix-pass-4711"),
            "unix-pass-4711",
        ),
        (
            format!("redis+unix://{sock}?db=0&pass=plus-unix-pass-4711"),
            "plus-unix-pass-4711",
        ),
        (
            "redis://sluice:tcp-pass-4711@127.0.0.1:1/0".to_owned(),
            "tcp-pass-4711",
        ),
        (
            "redis://127.0.0.1:1/0?password=query-pass-4711".to_owned(),
            "query-pass-4711",
        ),
    ];
    for (url, secret) in &urls {
        let s = start_sluice(
            &[],
            &[
                ("SLUICE_REDIS_URL", url.as_str()),
                ("SLUICE_REDIS_TIMEOUT_MS", "100"),
                ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ],
        );
        // A stream: its limits and its copy go to Redis, which does not answer (fail_open).
        let resp = client()
            .post(s.url("/v1/chat/completions"))
            .json(&json!({"model": "sluice-demo", "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("chat");
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await;
        assert!(
            wait_until(Duration::from_secs(5), || s
                .logs()
                .contains("redis is not answering"))
            .await,
            "{}",
            s.logs()
        );
        let logs = s.logs();
        assert!(logs.contains("shared state in redis"), "{logs}");
        assert!(!logs.contains(secret), "{url} leaked:\n{logs}");
    }
}
