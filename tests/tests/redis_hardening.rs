//! Redis as an operator meets it on a bad day, against the real binary: a password in any form of
//! `SLUICE_REDIS_URL` stays out of the log; a Redis that stalls, restarts or is flushed never
//! leaves a reader on another instance waiting without an end; remote readers share a bounded
//! number of Redis connections; and a stream puts no more into Redis than the relay keeps.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::e2e::{client, sse_events, wait_until, StreamReader};
use sluice_tests::redis::RedisServer;
use sluice_tests::{start_sluice, Sluice};

const OWNER_TIMEOUT_SECS: u64 = 2;

/// An instance with short Redis settings: calls give up after 100 ms, owners are lost after 2 s.
fn instance(redis: &RedisServer, tokens_per_sec: &str) -> Sluice {
    let url = redis.url();
    start_sluice(
        &[],
        &[
            ("SLUICE_REDIS_URL", url.as_str()),
            ("SLUICE_REDIS_TIMEOUT_MS", "100"),
            ("SLUICE_OWNER_TIMEOUT_SECS", "2"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", tokens_per_sec),
        ],
    )
}

async fn create(s: &Sluice, tokens: u64) -> String {
    let resp = client()
        .post(s.url("/v1/streams"))
        .json(&json!({"model": "sluice-demo", "max_tokens": tokens,
                      "messages": [{"role": "user", "content": "Share me"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let v: serde_json::Value = resp.json().await.expect("json");
    v["id"].as_str().expect("id").to_owned()
}

async fn open(s: &Sluice, id: &str) -> StreamReader {
    let resp = client()
        .get(s.url(&format!("/v1/streams/{id}/events")))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    StreamReader::new(resp)
}

fn data_events(body: &str) -> usize {
    sse_events(sluice_tests::sse::complete_part(body))
        .iter()
        .filter(|e| e.has("data"))
        .count()
}

/// The last event's name and data.
fn last_event(body: &str) -> (String, serde_json::Value) {
    let e = sse_events(sluice_tests::sse::complete_part(body))
        .into_iter()
        .rfind(|e| e.has("data"))
        .expect("an event");
    (e.event.clone().unwrap_or_default(), e.json())
}

/// Redis stalls (SIGSTOP) long enough for the owner's writes to time out, then resumes: the
/// reader on the other instance still gets an end (the real one once the copy caught up, or
/// `replication_lost`), never keep-alives forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_never_leaves_a_remote_reader_without_an_end() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis, "20"), instance(&redis, "20"));
    // About 3 s of events.
    let id = create(&a, 60).await;
    let mut on_b = open(&b, &id).await;
    on_b.read_until(Duration::from_secs(10), |body| data_events(body) >= 3)
        .await;
    assert!(data_events(&on_b.body) >= 3, "{}", on_b.body);
    redis.signal("STOP");
    // Several of the owner's 100 ms calls time out; shorter than the owner timeout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.signal("CONT");
    let resumed = Instant::now();
    // Bounded: the stream's own length, plus the owner timeout, plus slack for a busy machine.
    on_b.read_to_end(Duration::from_secs(3 + OWNER_TIMEOUT_SECS + 10))
        .await;
    let (name, data) = last_event(&on_b.body);
    match name.as_str() {
        "done" => {
            // The real end, after every event: the copy caught up from where Redis stopped.
            assert_eq!(data["usage"]["completion_tokens"], 60, "{}", on_b.body);
            let ids: Vec<u64> = sse_events(&on_b.body).iter().filter_map(|e| e.id).collect();
            assert_eq!(
                ids,
                (1..=ids.len() as u64).collect::<Vec<_>>(),
                "no gap, no duplicate"
            );
        }
        "failed" => assert_eq!(data["type"], "replication_lost", "{}", on_b.body),
        other => panic!(
            "no end {:?} after redis resumed (last event '{other}'):\n{}",
            resumed.elapsed(),
            on_b.body
        ),
    }
}

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
