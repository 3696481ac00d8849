//! Resumable streams across instances: two `sluice` processes sharing one Redis. A stream
//! started on A resumes on B byte for byte (both formats, while running and after the end),
//! `DELETE` on B stops it on A, a killed owner fails B's readers, and a Redis outage leaves A's
//! own streams running and sharing comes back with Redis.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::e2e::{client_with_timeout, sse_events, StreamReader};
use sluice_tests::redis::RedisServer;
use sluice_tests::streams::{self, events_with_data, last_event, open, read_all};
use sluice_tests::wait::wait_for;
use sluice_tests::{Gateway, Sluice};

fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(30))
}

/// Creates a stream on `s`: 40 tokens at most, usage included, shaped by `mock`.
async fn create(s: &Sluice, mock: Value) -> String {
    streams::create(
        s,
        &json!({
            "model": "sluice-demo",
            "messages": [{"role": "user", "content": "Share me"}],
            "max_tokens": 40,
            "stream_options": {"include_usage": true},
            "mock": mock,
        }),
    )
    .await
}

fn instance(redis: &RedisServer) -> Sluice {
    let url = redis.url();
    Gateway::builder()
        .env(&[
            ("SLUICE_REDIS_URL", url.as_str()),
            ("SLUICE_OWNER_TIMEOUT_SECS", "3"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "20"),
        ])
        .start()
}

/// The text of the deltas (browser format) or content (OpenAI format) in a body.
fn text(body: &str) -> String {
    sse_events(body)
        .iter()
        .filter(|e| e.has("data") && e.data != "[DONE]")
        .map(|e| {
            let v = e.json();
            v["text"]
                .as_str()
                .or(v["choices"][0]["delta"]["content"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_on_another_instance_byte_for_byte() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let id = create(&a, json!({"tokens": 30, "delay_ms": 60})).await;
    let k = 5;
    // A reader on A takes the first k events, then its connection drops.
    let mut on_a = open(&a, &id, 0, false).await;
    on_a.read_until(Duration::from_secs(10), |b| events_with_data(b) >= k)
        .await;
    let first_k = {
        let evs: Vec<_> = sse_events(sluice_tests::sse::complete_part(&on_a.body))
            .into_iter()
            .filter(|e| e.has("data"))
            .take(k)
            .collect();
        text_of(&evs)
    };
    drop(on_a);
    // Mid-generation on B, from k, in both formats.
    let rest = read_all(&b, &id, k as u64, false).await;
    let rest_openai = read_all(&b, &id, k as u64, true).await;
    assert_eq!(last_event(&rest).0, "done", "{rest}");
    assert_eq!(text(&rest), text(&rest_openai));
    assert!(
        rest_openai.trim_end().ends_with("data: [DONE]"),
        "{rest_openai}"
    );
    // After the end: B's bytes are A's bytes, from 0 and from k, in both formats.
    let full = read_all(&a, &id, 0, false).await;
    assert_eq!(format!("{first_k}{}", text(&rest)), text(&full));
    assert!(text(&full).len() > 20, "{full}");
    for openai in [false, true] {
        for after in [0, k as u64] {
            let on_a = read_all(&a, &id, after, openai).await;
            let on_b = read_all(&b, &id, after, openai).await;
            assert_eq!(on_a, on_b, "openai={openai} after={after}");
        }
    }
    // The end position: 204 on B as on A.
    let last = sse_events(&full)
        .iter()
        .filter_map(|e| e.id)
        .max()
        .expect("event ids");
    let resp = client()
        .get(b.url(&format!("/v1/streams/{id}/events")))
        .header("last-event-id", last.to_string())
        .send()
        .await
        .expect("GET at the end");
    assert_eq!(resp.status(), 204);
}

fn text_of(evs: &[sluice_tests::e2e::SseEvent]) -> String {
    evs.iter()
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_ahead_of_the_replica_waits_for_it() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let id = create(&a, json!({"tokens": 30, "delay_ms": 50})).await;
    let mut on_a = open(&a, &id, 0, false).await;
    on_a.read_until(Duration::from_secs(10), |b| events_with_data(b) >= 10)
        .await;
    // B has no replica yet: position 10 is ahead of it until it catches up.
    let rest = read_all(&b, &id, 10, false).await;
    on_a.read_to_end(Duration::from_secs(20)).await;
    let all = text(&on_a.body);
    let evs: Vec<_> = sse_events(&on_a.body)
        .into_iter()
        .filter(|e| e.has("data"))
        .take(10)
        .collect();
    assert_eq!(format!("{}{}", text_of(&evs), text(&rest)), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_another_instance_cancels_on_the_owner() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let id = create(&a, json!({"tokens": 400, "delay_ms": 50})).await;
    let mut on_a = open(&a, &id, 0, false).await;
    on_a.read_until(Duration::from_secs(10), |b| events_with_data(b) >= 3)
        .await;
    let resp = client()
        .delete(b.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["cancelled"], true);
    on_a.read_to_end(Duration::from_secs(10)).await;
    let (name, data) = last_event(&on_a.body);
    assert_eq!(name, "done");
    assert_eq!(data["finish_reason"], "cancelled");
    // B's readers see the same end.
    let on_b = read_all(&b, &id, 0, false).await;
    assert_eq!(on_b, read_all(&a, &id, 0, false).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_fails_readers_on_other_instances() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let id = create(&a, json!({"tokens": 1000, "delay_ms": 50})).await;
    let mut on_b = open(&b, &id, 0, false).await;
    on_b.read_until(Duration::from_secs(10), |b| events_with_data(b) >= 3)
        .await;
    a.kill();
    let killed = Instant::now();
    on_b.read_to_end(Duration::from_secs(12)).await;
    let took = killed.elapsed();
    let (name, data) = last_event(&on_b.body);
    assert_eq!(name, "failed", "{}", on_b.body);
    assert_eq!(data["type"], "owner_lost");
    assert!(took < Duration::from_secs(3 + 4), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_streams_and_sharing_comes_back() {
    let Some(mut redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let id = create(&a, json!({"tokens": 40, "delay_ms": 50})).await;
    let mut on_a = open(&a, &id, 0, false).await;
    on_a.read_until(Duration::from_secs(10), |b| events_with_data(b) >= 3)
        .await;
    redis.stop();
    on_a.read_to_end(Duration::from_secs(20)).await;
    assert_eq!(last_event(&on_a.body).0, "done", "{}", on_a.body);
    // Still resumable on A.
    assert!(!read_all(&a, &id, 3, false).await.is_empty());
    redis.restart();
    // New streams are shared again, without restarting either instance.
    let (a, b) = (&a, &b);
    let shared = wait_for(Duration::from_secs(15), || async move {
        let id = create(a, json!({"tokens": 5, "delay_ms": 10})).await;
        let resp = client()
            .get(b.url(&format!("/v1/streams/{id}/events")))
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(resp.text().await.ok()?)
    })
    .await
    .expect("streams are shared again after redis restarted");
    assert_eq!(last_event(&shared).0, "done", "{shared}");
}

/// The `StreamLog` trait itself, against both implementations: what one instance publishes,
/// another finds, copies byte for byte into a replica, and cancels.
mod stream_log_trait {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;
    use relay::{Delta, Format, Handle, Limits, Meta, Registry};
    use sluice_gateway::config::{OnFailure, RedisSettings};
    use sluice_gateway::lifecycle::Lifecycle;
    use sluice_gateway::shared_state::SharedState;
    use sluice_gateway::streams::{LocalStreamLog, RedisStreamLog, StreamLog};
    use sluice_tests::redis::RedisServer;
    use sluice_tests::wait::wait_until;

    fn redis_log(server: &RedisServer, registry: Arc<Registry>) -> Arc<dyn StreamLog> {
        let settings = RedisSettings {
            url: server.url(),
            on_failure: OnFailure::FailOpen,
            timeout: Duration::from_millis(500),
            lease: Duration::from_secs(15),
            owner_timeout: Duration::from_secs(3),
        };
        let shared = Arc::new(SharedState::new(&settings).expect("redis url"));
        RedisStreamLog::start(
            shared,
            &settings.url,
            registry,
            Duration::from_secs(60),
            Lifecycle::new(),
        )
        .expect("log")
    }

    async fn body(h: &Handle, format: Format) -> String {
        let sse = h
            .subscribe(0, format)
            .expect("reader")
            .into_sse(Duration::from_secs(60));
        let chunks: Vec<_> = sse.collect().await;
        chunks
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c.expect("chunk")).into_owned())
            .collect()
    }

    /// Publishes a finished stream from `owner` through `a`, and looks it up through `b`: a
    /// replica in `reader` if `b` found it.
    async fn copy(
        a: &dyn StreamLog,
        b: &dyn StreamLog,
        owner: &Registry,
        reader: &Registry,
    ) -> (Handle, Option<Handle>) {
        let meta = Meta {
            id: "chatcmpl-t".into(),
            model: "m".into(),
            created: 1,
            system_fingerprint: None,
        };
        let mut w = owner
            .create_owned(meta, true, Some("team-a".into()))
            .expect("admitted");
        let h = w.handle();
        a.publish(h.clone()).announced().await;
        for t in ["Hel", "lo", " there"] {
            w.push_delta(Delta::text(0, t));
        }
        w.record_finish(0, "stop");
        w.finish();
        let found = wait_for_lookup(b, &h).await;
        let Some(remote) = found else {
            return (h, None);
        };
        assert_eq!(remote.team.as_deref(), Some("team-a"));
        assert!(remote.include_usage);
        let replica = reader
            .create_replica(
                remote.id,
                remote.include_usage,
                remote.team.as_deref().map(Into::into),
            )
            .expect("a new replica");
        let rh = replica.handle();
        tokio::time::timeout(Duration::from_secs(5), b.tail(remote, replica))
            .await
            .expect("the tail ends with the stream");
        (h, Some(rh))
    }

    async fn wait_for_lookup(
        b: &dyn StreamLog,
        h: &Handle,
    ) -> Option<sluice_gateway::streams::RemoteStream> {
        for _ in 0..50 {
            if let Some(r) = b.lookup(h.id()).await.expect("lookup") {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    #[tokio::test]
    async fn the_local_log_shares_nothing() {
        let (owner, reader) = (
            Registry::new(Limits::default()),
            Registry::new(Limits::default()),
        );
        let log = LocalStreamLog;
        let (_, replica) = copy(&log, &log, &owner, &reader).await;
        assert!(replica.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_redis_log_copies_byte_for_byte_and_cancels_on_the_owner() {
        let Some(server) = RedisServer::start_or_skip() else {
            return;
        };
        let owner = Arc::new(Registry::new(Limits::default()));
        let reader = Arc::new(Registry::new(Limits::default()));
        let a = redis_log(&server, owner.clone());
        let b = redis_log(&server, reader.clone());
        let (h, replica) = copy(&*a, &*b, &owner, &reader).await;
        let rh = replica.expect("found through redis");
        for format in [Format::Browser, Format::OpenAi] {
            assert_eq!(body(&h, format).await, body(&rh, format).await);
        }
        // Cancel through the other instance: the owner's handle is told.
        let w = owner
            .create_owned(Meta::default(), false, None)
            .expect("admitted");
        let live = w.handle();
        // The cancel listener subscribes in the background.
        assert!(
            wait_until(Duration::from_secs(5), || {
                let (b, id) = (b.clone(), *live.id());
                tokio::spawn(async move { b.cancel(&id).await });
                live.is_cancelled()
            })
            .await
        );
        drop(w);
    }
}

/// When each event id arrived at a reader (by the chunk that completed it).
async fn arrivals(resp: reqwest::Response) -> std::collections::HashMap<u64, Instant> {
    use futures::StreamExt;
    let mut out = std::collections::HashMap::new();
    let mut body = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(b)) = stream.next().await {
        let now = Instant::now();
        body.push_str(&String::from_utf8_lossy(&b));
        for e in sse_events(sluice_tests::sse::complete_part(&body)) {
            if let Some(id) = e.id {
                out.entry(id).or_insert(now);
            }
        }
    }
    out
}

/// The added latency per event of a reader on another instance (owner append, Redis, replica)
/// over a reader on the owner. A measurement, not a check: `cargo test -p sluice-tests --test
/// shared_streams -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn added_latency_per_event_through_redis() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let (a, b) = (instance(&redis), instance(&redis));
    let id = create(&a, json!({"tokens": 300, "delay_ms": 20})).await;
    let local = client()
        .get(a.url(&format!("/v1/streams/{id}/events")))
        .send()
        .await
        .expect("GET on A");
    let remote = client()
        .get(b.url(&format!("/v1/streams/{id}/events")))
        .send()
        .await
        .expect("GET on B");
    let (l, r) = tokio::join!(arrivals(local), arrivals(remote));
    // Events from 20 on: both readers are live by then (no backlog).
    let mut diffs: Vec<f64> = (20..=300u64)
        .filter_map(|i| Some(r.get(&i)?.duration_since(*l.get(&i)?).as_secs_f64() * 1000.0))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((diffs.len() - 1) as f64 * q) as usize];
    println!(
        "added latency per event through redis: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        diffs.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_another_instance_keep_the_generation_past_the_grace_period() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let url = redis.url();
    let with_grace = |s: &RedisServer| {
        let _ = s;
        Gateway::builder()
            .env(&[
                ("SLUICE_REDIS_URL", url.as_str()),
                ("SLUICE_OWNER_TIMEOUT_SECS", "3"),
                ("SLUICE_STREAM_GRACE_SECS", "1"),
                ("SLUICE_DEMO_TOKENS_PER_SEC", "10"),
            ])
            .start()
    };
    let (a, b) = (with_grace(&redis), with_grace(&redis));
    // Read on A a little, then leave it (the reader is gone from A for good).
    let id = create(&a, json!({"tokens": 40})).await;
    let mut first = open(&a, &id, 0, false).await;
    first
        .read_until(Duration::from_secs(10), |body| events_with_data(body) >= 3)
        .await;
    let seen = events_with_data(&first.body) as u64;
    let head = text(sluice_tests::sse::complete_part(&first.body));
    drop(first);
    // The same user reconnects to B and reads the rest there: about 4 s more, far past A's 1 s
    // grace period with no reader on A.
    let rest = read_all(&b, &id, seen, false).await;
    let (kind, last) = last_event(&rest);
    assert_eq!(kind, "done", "{rest}");
    assert_eq!(last["finish_reason"], "stop", "not cancelled: {rest}");
    assert_eq!(last["usage"]["completion_tokens"], 40, "{rest}");
    let full = read_all(&a, &id, 0, false).await;
    assert_eq!(format!("{head}{}", text(&rest)), text(&full));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_of_the_owner_ends_remote_readers_with_its_real_end() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let url = redis.url();
    let a = Gateway::builder()
        .env(&[
            ("SLUICE_REDIS_URL", url.as_str()),
            ("SLUICE_OWNER_TIMEOUT_SECS", "30"),
            ("SLUICE_SHUTDOWN_GRACE_SECS", "1"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "5"),
        ])
        .start();
    let b = instance(&redis);
    let id = create(&a, json!({"tokens": 100})).await;
    let mut on_b = wait_for(Duration::from_secs(10), || async {
        let resp = client()
            .get(b.url(&format!("/v1/streams/{id}/events")))
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then(|| StreamReader::new(resp))
    })
    .await
    .expect("B serves the stream");
    on_b.read_until(Duration::from_secs(10), |body| events_with_data(body) >= 2)
        .await;
    let signalled = Instant::now();
    a.terminate();
    on_b.read_to_end(Duration::from_secs(20)).await;
    let (kind, last) = last_event(&on_b.body);
    assert_eq!(kind, "failed", "{}", on_b.body);
    // The owner's own end, not a heartbeat timeout (30 s here).
    assert_eq!(last["type"], "server_shutdown", "{}", on_b.body);
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "{:?}",
        signalled.elapsed()
    );
}
