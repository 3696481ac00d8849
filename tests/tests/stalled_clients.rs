//! Clients that stop reading their socket: the write timeout closes their response and the
//! generation goes on as when a reader leaves; `DELETE` stops a generation whose driving body
//! nobody polls; a stalled events reader holds none of an evicted stream's memory.
//!
//! The stalled client is a raw TCP socket with a small receive buffer that sends its request,
//! reads the response head and then never reads again, so the server's writes stop making
//! progress once the socket buffers are full.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    chat, check_openai_wire, client, content_of, data, sse_steps, up_chunk, up_role, up_text,
    wait_for, wait_until,
};
use sluice_tests::scripted::{chunk, serve, sse_head, Step};
use sluice_tests::Gateway;
use sluice_tests::{metric, Sluice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// Text deltas of an answer far larger than what the socket buffers between the gateway and a
/// client that does not read can take (on loopback the kernel grows the send buffer to about
/// 4 MB).
const PIECES: usize = 2000;
const PIECE: usize = 4000;

/// Upstream SSE events of that long answer; `then` follows them.
fn long_answer() -> Vec<String> {
    let piece = data(&up_text(&"x".repeat(PIECE)));
    let mut events = vec![data(&up_role())];
    events.extend(std::iter::repeat_n(piece, PIECES));
    events
}

/// The long answer, complete.
fn long_complete_answer() -> Vec<Step> {
    let mut events = long_answer();
    events.push(data(&up_chunk(0, json!({}), Some("stop"))));
    events.push("data: [DONE]\n\n".to_owned());
    sse_steps(events)
}

/// A client that sends `method path` with `body`, reads the response head, and never reads
/// again. Returns the socket (kept open: dropping it would close the connection) and the head.
async fn stalled_request(
    sluice: &Sluice,
    method: &str,
    path: &str,
    body: &str,
) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    // The kernel rounds this up to its minimum; small enough that the answer fills it.
    socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    let mut s = socket.connect(sluice.addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        sluice.addr,
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte, so nothing past the head is taken off the socket.
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, s.read(&mut b))
            .await
            .expect("head in time")
            .expect("read head");
        assert!(
            n > 0,
            "closed before the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Status of a streaming chat request; the body is dropped at once.
async fn chat_status(sluice: &Sluice, body: &Value) -> u16 {
    match client()
        .post(sluice.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// With `SLUICE_MAX_STREAMS=1` and no grace period, a client that stops reading held the only
/// stream slot for ever; the write timeout closes its response, the generation loses its last
/// reader and ends, and the next stream is admitted.
#[tokio::test]
async fn a_client_that_stops_reading_gives_its_stream_slot_back() {
    let up = serve(long_complete_answer()).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[
            ("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "1"),
            ("SLUICE_MAX_STREAMS", "1"),
            ("SLUICE_STREAM_GRACE_SECS", "0"),
        ])
        .start();
    let body = chat("m", true, json!({})).to_string();
    let (_stalled, head) = stalled_request(&sluice, "POST", "/v1/chat/completions", &body).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The slot is taken while the first stream runs.
    let short = chat("m", true, json!({}));
    let s = &sluice;
    let admitted = wait_for(LIMIT, || {
        let short = short.clone();
        async move { (chat_status(s, &short).await == 200).then_some(()) }
    })
    .await;
    assert!(
        admitted.is_some(),
        "the stalled stream kept the only slot:\n{}",
        sluice.logs()
    );
}

/// With a grace period, the generation whose client stopped reading goes on without it, and a
/// reconnect by its `x-sluice-stream-id` reads it whole, to `[DONE]`.
#[tokio::test]
async fn a_stalled_stream_goes_on_for_resumers_after_the_write_timeout() {
    let up = serve(long_complete_answer()).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[
            ("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "1"),
            ("SLUICE_STREAM_GRACE_SECS", "30"),
        ])
        .start();
    let body = chat("m", true, json!({})).to_string();
    let (_stalled, head) = stalled_request(&sluice, "POST", "/v1/chat/completions", &body).await;
    let id = header(&head, "x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    let resp = tokio::time::timeout(
        LIMIT,
        client()
            .get(sluice.url(&format!("/v1/streams/{id}/events?format=openai")))
            .send(),
    )
    .await
    .expect("resume answered in time")
    .expect("resume");
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(LIMIT, resp.text())
        .await
        .expect("the stalled generation went on to its end")
        .expect("body");
    let events = check_openai_wire(&text);
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert_eq!(content_of(&events, 0).len(), PIECES * PIECE);
}

/// `DELETE` on a stream whose driving body nobody polls (its client stopped reading, and the
/// write timeout is far off) stops it at once: the upstream connection is closed and the stream
/// slot is free.
#[tokio::test]
async fn delete_stops_a_stalled_stream_at_once() {
    // A long answer, then an upstream that stays open.
    let mut steps = vec![sse_head()];
    steps.extend(long_answer().iter().map(|e| chunk(e.as_bytes())));
    steps.push(Step::Sleep(Duration::from_secs(120)));
    let up = serve(steps).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[
            ("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "600"),
            ("SLUICE_MAX_STREAMS", "1"),
            ("SLUICE_STREAM_GRACE_SECS", "600"),
        ])
        .start();
    let body = chat("m", true, json!({})).to_string();
    let (_stalled, head) = stalled_request(&sluice, "POST", "/v1/chat/completions", &body).await;
    let id = header(&head, "x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    // Let the body stall: the upstream has sent what the socket buffers could take.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up.client_closed(), 0);
    let r = client()
        .delete(sluice.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    assert!(
        wait_until(LIMIT, || up.client_closed() == 1).await,
        "the upstream connection stayed open"
    );
    let s = &sluice;
    let m = wait_for(LIMIT, || async move {
        let m = s.metrics().await;
        (metric(&m, "sluice_relay_live_streams") == 0).then_some(m)
    })
    .await;
    assert!(m.is_some(), "the cancelled stream still counts as live");
    // Its slot is free for the next stream.
    let short = chat("m", true, json!({}));
    let r = client()
        .post(sluice.url("/v1/streams"))
        .json(&short)
        .send()
        .await
        .expect("POST /v1/streams");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// A stalled `GET /v1/streams/{id}/events` reader of a finished stream that gets evicted holds
/// none of its bytes: the next stream evicts that one stream, not every finished stream.
#[tokio::test]
async fn a_stalled_events_reader_does_not_make_the_relay_evict_everything() {
    // Every stream is the long answer (8 MB in the log); the bound holds two and a half.
    let up = serve(long_complete_answer()).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[
            ("SLUICE_RELAY_MAX_TOTAL_BYTES", "20000000"),
            ("SLUICE_CLIENT_WRITE_TIMEOUT_SECS", "600"),
        ])
        .start();
    let s = &sluice;
    let run = || async move {
        let r = client()
            .post(s.url("/v1/streams"))
            .json(&chat("m", false, json!({})))
            .send()
            .await
            .expect("POST /v1/streams");
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("json");
        let id = v["id"].as_str().expect("id").to_owned();
        let r = client()
            .get(s.url(&format!("/v1/streams/{id}/events")))
            .send()
            .await
            .expect("GET events");
        let text = tokio::time::timeout(LIMIT, r.text())
            .await
            .expect("in time")
            .expect("body");
        assert!(text.contains("event: done"), "stream {id} did not finish");
        id
    };
    let evicted = || async move {
        let m = s.metrics().await;
        metric(&m, "sluice_relay_evicted_streams_total")
    };
    // A finished stream with a reader that stalls on it.
    let first = run().await;
    let (_stalled, head) =
        stalled_request(&sluice, "GET", &format!("/v1/streams/{first}/events"), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let second = run().await;
    let third = run().await;
    assert_eq!(evicted().await, 0);
    // The bound is reached: the next stream evicts the oldest finished one, the stalled one.
    let _fourth = run().await;
    assert_eq!(
        evicted().await,
        1,
        "before the fix the stalled reader's bytes stayed counted"
    );
    let gone = client()
        .get(sluice.url(&format!("/v1/streams/{first}/events")))
        .send()
        .await
        .expect("GET");
    assert_eq!(gone.status(), 404);
    for id in [&second, &third] {
        let r = client()
            .get(sluice.url(&format!("/v1/streams/{id}/events")))
            .header("last-event-id", "1")
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "stream {id} was evicted too");
    }
}
