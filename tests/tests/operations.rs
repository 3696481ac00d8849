//! Running Sluice in front of users: slow-loris clients are dropped after the header-read
//! timeout while others are served, a flood of idle connections past the cap does not keep a
//! real request out, the chat page carries its security headers, and HTTP/2 and HTTP/1
//! clients are told apart by their first bytes. (`/readyz` turning 503 on SIGTERM:
//! crates/gateway/tests/process.rs.)

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::e2e::{chat, check_openai_wire, client, content_of, StreamReader};
use sluice_tests::wait::wait_for;
use sluice_tests::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection (or an error), returning when that happened.
async fn closed_at(mut s: TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_is_dropped_while_others_are_served() {
    let s = Gateway::builder()
        .env(&[("SLUICE_HEADER_READ_TIMEOUT_SECS", "2")])
        .start();
    let addr = s.addr;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: 1\r\n\r\n");
    // One header byte per second: the whole head would take ~40 s.
    let loris = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let start = Instant::now();
        for b in head.bytes() {
            if tcp.write_all(&[b]).await.is_err() {
                return start.elapsed();
            }
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => panic!("the server answered a head it never got whole"),
                Err(_) => {}
            }
        }
        panic!("the slow client was never dropped");
    });
    // A client that connects and sends nothing at all.
    let silent = TcpStream::connect(addr).await.expect("connect");
    let silent_start = Instant::now();
    let silent = tokio::spawn(closed_at(silent, LIMIT));

    // Meanwhile everyone else is served, promptly.
    for _ in 0..5 {
        let t = Instant::now();
        let r = client()
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let dropped_after = loris.await.expect("loris task");
    assert!(
        dropped_after >= Duration::from_millis(1500) && dropped_after < Duration::from_secs(6),
        "dropped after {dropped_after:?}"
    );
    let closed = silent
        .await
        .expect("silent task")
        .expect("the silent client was dropped");
    let waited = closed - silent_start;
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "silent client dropped after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_past_the_cap_does_not_keep_a_request_out() {
    let s = Gateway::builder()
        .env(&[
            ("SLUICE_MAX_CONNECTIONS", "20"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "20"),
        ])
        .start();
    // A stream in flight: its connection is busy and must not be the one closed.
    let mut busy = StreamReader::post(
        &s.url("/v1/chat/completions"),
        &chat("sluice-demo", true, json!({"max_tokens": 40})),
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(TcpStream::connect(s.addr).await.expect("connect"));
    }
    // A fresh client (its own connection) still gets its answer.
    for _ in 0..3 {
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let r = fresh
            .post(s.url("/v1/chat/completions"))
            .json(&chat("sluice-demo", false, json!({"max_tokens": 3})))
            .send()
            .await
            .expect("served past the cap");
        assert_eq!(r.status(), 200);
    }
    busy.read_to_end(LIMIT).await;
    let events = check_openai_wire(&busy.body);
    assert!(events.last().expect("events").is_done(), "{}", busy.body);
    assert_eq!(content_of(&events, 0).split_whitespace().count(), 40);
    drop(flood);
    let metrics = s.metrics().await;
    assert!(
        sluice_tests::metric(&metrics, "sluice_connections_evicted_total") >= 40,
        "{metrics}"
    );
}

#[tokio::test]
async fn the_page_is_served_with_security_headers() {
    let s = Gateway::builder().start();
    let r = client().get(s.url("/")).send().await.expect("page");
    assert_eq!(r.status(), 200);
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().expect("ascii");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let body = r.text().await.expect("html");
    assert!(
        !body.contains("<script>"),
        "no inline script the policy would block"
    );
}

/// The first JSON log line with this message (waiting for it a while).
async fn json_log_line(s: &sluice_tests::Sluice, message: &str) -> serde_json::Value {
    wait_for(LIMIT, || async {
        s.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == message)
    })
    .await
    .unwrap_or_else(|| panic!("no JSON log line '{message}' in:\n{}", s.logs()))
}

/// An upstream that answers 500 to everything, recording what it was sent.
async fn failing_upstream() -> sluice_tests::scripted::ScriptedUpstream {
    sluice_tests::scripted::serve(vec![sluice_tests::scripted::full_response(
        500,
        "application/json",
        "",
        br#"{"error":{"message":"boom","type":"server_error"}}"#,
    )])
    .await
}

#[tokio::test]
async fn request_ids_go_round_trip_to_the_upstream_and_the_log() {
    let up = failing_upstream().await;
    let s = sluice_tests::Gateway::builder()
        .config(&sluice_tests::e2e::openai_provider(
            "up",
            &up.base_url(),
            &["gpt-x"],
        ))
        .env(&[("SLUICE_LOG_FORMAT", "json")])
        .start();
    let r = client()
        .post(s.url("/v1/chat/completions"))
        .header("x-request-id", "client-req-42")
        .json(&chat("gpt-x", true, json!({})))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-request-id"], "client-req-42");
    let (head, _) = up.requests().into_iter().next().expect("upstream request");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: client-req-42"),
        "{head}"
    );
    // The warning about the upstream is a JSON line carrying the request's ID.
    let found = json_log_line(&s, "upstream request failed").await;
    assert_eq!(found["span"]["request_id"], "client-req-42", "{found}");
    assert_eq!(found["span"]["route"], "/v1/chat/completions", "{found}");
}

#[tokio::test]
async fn a_missing_or_unusable_request_id_is_replaced_not_echoed() {
    let s = Gateway::builder().start();
    let get = |id: Option<&str>| {
        let mut r = client().get(s.url("/v1/models"));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    let mut seen = std::collections::HashSet::new();
    let long = "a".repeat(129);
    for sent in [
        None,
        Some(long.as_str()),
        Some("has space"),
        Some("tab\there"),
    ] {
        let r = get(sent).await.expect("request");
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(seen.insert(id), "a fresh ID each time");
    }
    // Errors carry it too.
    let r = client()
        .get(s.url("/v1/nope"))
        .header("x-request-id", "e-1")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "e-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_global_cap_get_503_with_retry_after() {
    let s = Gateway::builder()
        .env(&[
            ("SLUICE_MAX_STREAMS", "2"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "10"),
        ])
        .start();
    let start = || async {
        let r = client()
            .post(s.url("/v1/streams"))
            .json(&chat("sluice-demo", true, json!({"max_tokens": 100})))
            .send()
            .await
            .expect("request");
        let status = r.status();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_owned());
        (
            status,
            retry,
            r.json::<serde_json::Value>().await.expect("json"),
        )
    };
    let (a, _, first) = start().await;
    let (b, _, _) = start().await;
    assert_eq!((a.as_u16(), b.as_u16()), (201, 201));
    let (c, retry, err) = start().await;
    assert_eq!(c.as_u16(), 503, "{err}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(err["error"]["code"], "too_many_streams", "{err}");
    // Stopping one makes room.
    let id = first["id"].as_str().expect("id");
    let r = client()
        .delete(s.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let admitted = wait_for(LIMIT, || async {
        let (st, _, _) = start().await;
        (st.as_u16() == 201).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "{}", s.logs());
}

#[tokio::test]
async fn every_finished_stream_logs_one_summary_line_without_its_text() {
    let s = Gateway::builder()
        .env(&[
            ("SLUICE_LOG_FORMAT", "json"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
        ])
        .start();
    let prompt = "a secret prompt that must never be logged";
    let body = json!({"model": "sluice-demo", "stream": true, "max_tokens": 4,
                      "messages": [{"role": "user", "content": prompt}]});
    let r = client()
        .post(s.url("/v1/chat/completions"))
        .header("x-request-id", "sum-1")
        .json(&body)
        .send()
        .await
        .expect("request");
    let text = r.text().await.expect("body");
    let answer = content_of(&check_openai_wire(&text), 0);
    assert!(!answer.trim().is_empty());
    let line = json_log_line(&s, "stream finished").await;
    assert_eq!(line["span"]["request_id"], "sum-1", "{line}");
    assert_eq!(line["outcome"], "completed", "{line}");
    assert_eq!(line["model"], "sluice-demo", "{line}");
    assert_eq!(line["provider"], "sluice-demo", "{line}");
    assert_eq!(line["completion_tokens"], 4, "{line}");
    assert_eq!(line["resumes"], 0, "{line}");
    assert!(
        line["ttft_ms"].is_u64() && line["duration_ms"].is_u64(),
        "{line}"
    );
    let logs = s.logs();
    assert_eq!(logs.matches("stream finished").count(), 1, "{logs}");
    assert!(!logs.contains(prompt), "the prompt is in the log");
    assert!(!logs.contains(answer.trim()), "the answer is in the log");
}

/// A connection's protocol is told from its first bytes: a client with HTTP/2 prior knowledge
/// gets its stream, and an HTTP/1 request whose first bytes could still be HTTP/2's preface
/// ("P", "PU") when they arrive one at a time is answered as HTTP/1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_a_trickled_http1_request_are_both_served() {
    let s = Gateway::builder().start();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = h2
        .post(s.url("/v1/chat/completions"))
        .json(&chat("sluice-demo", true, json!({"max_tokens": 5})))
        .send()
        .await
        .expect("HTTP/2 request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("HTTP/2 body");
    assert!(body.contains("data: [DONE]"), "{body}");

    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "PUT /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr
    );
    for b in &head.as_bytes()[..3] {
        c.write_all(&[*b]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.write_all(&head.as_bytes()[3..]).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(LIMIT, c.read_to_string(&mut out))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(out.starts_with("HTTP/1.1 "), "{out}");
}
