//! Redis as an operator meets it on a bad day, against a gateway: a password in any form of
//! `SLUICE_REDIS_URL` stays out of the log; a Redis that stalls, restarts or is flushed never
//! leaves a reader on another instance waiting without an end; remote readers share a bounded
//! number of Redis connections; and a stream puts no more into Redis than the relay keeps.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::e2e::{client, sse_events, wait_until, StreamReader};
use sluice_tests::redis::RedisServer;
use sluice_tests::streams::events_with_data;
use sluice_tests::wait::wait_for;
use sluice_tests::Gateway;
use sluice_tests::Sluice;

const OWNER_TIMEOUT_SECS: u64 = 2;

/// An instance with short Redis settings: calls give up after 100 ms, owners are lost after 2 s.
fn instance(redis: &RedisServer, tokens_per_sec: &str) -> Sluice {
    instance_with(redis, tokens_per_sec, &[])
}

fn instance_with(redis: &RedisServer, tokens_per_sec: &str, extra: &[(&str, &str)]) -> Sluice {
    let url = redis.url();
    let mut env = vec![
        ("SLUICE_REDIS_URL", url.as_str()),
        ("SLUICE_REDIS_TIMEOUT_MS", "100"),
        ("SLUICE_OWNER_TIMEOUT_SECS", "2"),
        ("SLUICE_DEMO_TOKENS_PER_SEC", tokens_per_sec),
    ];
    env.extend_from_slice(extra);
    Gateway::builder().env(&env).start()
}

/// A `GET` of a stream's events from the start, whatever its status.
async fn get_events(s: &Sluice, id: &str) -> reqwest::Response {
    client()
        .get(s.url(&format!("/v1/streams/{id}/events")))
        .send()
        .await
        .expect("get")
}

/// The `id:` numbers of a body's events are 1, 2, 3, ...: no gap, no duplicate.
fn assert_consecutive(body: &str) {
    let ids: Vec<u64> = sse_events(body).iter().filter_map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate:\n{body}"
    );
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
    let status = resp.status();
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        panic!("opening {id}: {status} {body}");
    }
    StreamReader::new(resp)
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
    on_b.read_until(Duration::from_secs(10), |body| events_with_data(body) >= 3)
        .await;
    assert!(events_with_data(&on_b.body) >= 3, "{}", on_b.body);
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

/// Every URL form, with its password where that form carries it (`rediss://`, whose redaction
/// and parsing are unit-tested in `config/redis.rs`, would need a TLS server here). No Redis listens
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
        let s = Gateway::builder()
            .env(&[
                ("SLUICE_REDIS_URL", url.as_str()),
                ("SLUICE_REDIS_TIMEOUT_MS", "100"),
                ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ])
            .start();
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

/// `FLUSHALL` while a stream runs on A (the same as a Redis restart without persistence):
/// within a renewal period A writes the stream's metadata again and copies its events again
/// from its relay. A reader on B that was tailing it reads on without a gap or a duplicate; a
/// new reader on C (which holds no replica yet, so it must find the stream in Redis) finds it
/// (not 404, not `owner_lost`) and gets it byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_gets_a_live_stream_back_from_its_owner() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b, c) = (
        instance(&redis, "20"),
        instance(&redis, "20"),
        instance(&redis, "20"),
    );
    // About 4 s of events.
    let id = create(&a, 80).await;
    let mut tailing = open(&b, &id).await;
    tailing
        .read_until(Duration::from_secs(10), |body| events_with_data(body) >= 3)
        .await;
    assert_eq!(redis.command(&["FLUSHALL"]).text(), "OK");
    // Until A renews (a third of the owner timeout), C does not know the stream: 404.
    let fresh = wait_for(Duration::from_secs(10), || async {
        let resp = get_events(&c, &id).await;
        (resp.status() == 200).then_some(resp)
    })
    .await
    .expect("C finds the stream again once A renewed it");
    let mut fresh = StreamReader::new(fresh);
    fresh.read_to_end(Duration::from_secs(30)).await;
    tailing.read_to_end(Duration::from_secs(30)).await;
    for body in [&fresh.body, &tailing.body] {
        let (name, data) = last_event(body);
        assert_eq!(name, "done", "{body}");
        assert_eq!(data["usage"]["completion_tokens"], 80, "{body}");
        assert_consecutive(body);
    }
    // From the start, C's bytes are A's.
    let mut on_a = open(&a, &id).await;
    on_a.read_to_end(Duration::from_secs(10)).await;
    assert_eq!(fresh.body, on_a.body);
}

/// Twenty streams read on B at once share B's connection to Redis: `CLIENT LIST` shows a
/// handful of clients (each instance's shared connection and cancel subscription, and this
/// test's own), not one per replica; every reader still gets its stream byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_readers_share_a_bounded_number_of_redis_connections() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis, "20"), instance(&redis, "20"));
    let mut ids = Vec::new();
    for _ in 0..20 {
        // About 2 s each, so that all are read on B at the same time.
        ids.push(create(&a, 40).await);
    }
    let mut readers = Vec::new();
    for id in &ids {
        readers.push(open(&b, id).await);
    }
    for r in &mut readers {
        r.read_until(Duration::from_secs(10), |body| events_with_data(body) >= 1)
            .await;
    }
    let clients = redis.command(&["CLIENT", "LIST"]).text();
    let count = clients.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(count <= 8, "{count} redis clients:\n{clients}");
    for (id, r) in ids.iter().zip(&mut readers) {
        r.read_to_end(Duration::from_secs(30)).await;
        let mut on_a = open(&a, id).await;
        on_a.read_to_end(Duration::from_secs(10)).await;
        assert_eq!(last_event(&on_a.body).0, "done", "{}", on_a.body);
        assert_eq!(r.body, on_a.body, "stream {id} on B");
    }
}

/// With a small per-stream bound (`SLUICE_RELAY_MAX_STREAM_BYTES`), a long stream puts no more
/// than that into Redis (each entry counted with Redis's overhead per entry, 32 bytes), and a
/// reader on B gets an end: `failed`, `replication_lost` (the shared copy stopped first) or the
/// relay's own `stream_too_large`, with every event before it, never keep-alives forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_puts_no_more_into_redis_than_its_bound() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    const BOUND: usize = 2000;
    let bound = BOUND.to_string();
    // Redis answers in well under a second, even on a loaded machine running the other tests
    // alongside: the 100 ms of the stall tests could make the remote lookup time out (a 404).
    let extra = [
        ("SLUICE_RELAY_MAX_STREAM_BYTES", bound.as_str()),
        ("SLUICE_REDIS_TIMEOUT_MS", "2000"),
    ];
    let (a, b) = (
        instance_with(&redis, "0", &extra),
        instance_with(&redis, "0", &extra),
    );
    let id = create(&a, 2000).await;
    let mut on_b = open(&b, &id).await;
    on_b.read_to_end(Duration::from_secs(3 + OWNER_TIMEOUT_SECS + 10))
        .await;
    let (name, data) = last_event(&on_b.body);
    assert_eq!(name, "failed", "{}", on_b.body);
    let kind = data["type"].as_str().unwrap_or_default().to_owned();
    assert!(
        kind == "replication_lost" || kind == "stream_too_large",
        "{}",
        on_b.body
    );
    assert_consecutive(&on_b.body);
    let events = redis.command(&["XRANGE", &format!("sluice:stream:{id}:events"), "-", "+"]);
    let held: usize = events
        .items()
        .iter()
        .map(|entry| {
            let fields = &entry.items()[1];
            fields.items()[1].text().len() + 32
        })
        .sum();
    assert!(
        held <= BOUND,
        "redis holds {held} bytes ({} entries) of a stream bounded to {BOUND}",
        events.items().len()
    );
}
