//! Helpers for the end-to-end tests of the proxy path: provider config, the HTTP client, a
//! reader that records a streaming body as it arrives, the checks every OpenAI-format stream
//! must pass, and builders for scripted upstream bodies. Config files, SSE parsing and polling
//! live in [`crate::config`], [`crate::sse`] and [`crate::wait`]; their names are re-exported
//! here for the tests that import them from this module.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

pub use crate::config::config_file;
pub use crate::sse::{sse_events, SseEvent};
pub use crate::wait::{wait_for, wait_until};

/// One `[[providers]]` entry of kind `openai`.
pub fn openai_provider(name: &str, base_url: &str, models: &[&str]) -> String {
    provider(name, "openai", base_url, models, None)
}

/// One `[[providers]]` entry; `api_key_env` names the variable holding the key.
pub fn provider(
    name: &str,
    kind: &str,
    base_url: &str,
    models: &[&str],
    api_key_env: Option<&str>,
) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("{m:?}")).collect();
    let key = api_key_env.map_or(String::new(), |k| format!("api_key_env = {k:?}\n"));
    format!(
        "[[providers]]\nname = {name:?}\nkind = {kind:?}\nbase_url = {base_url:?}\n{key}models = [{}]\n\n",
        models.join(", ")
    )
}

/// POSTs `body` to `sluice`'s `/v1/chat/completions` and reads the whole answer, giving up
/// after `limit`.
pub async fn post_chat(sluice: &crate::Sluice, body: &Value, limit: Duration) -> Collected {
    post_collect(&sluice.url("/v1/chat/completions"), body, limit).await
}

/// A minimal chat request body for `model`; `extra` fields are merged in.
pub fn chat(model: &str, stream: bool, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// A client with no overall timeout (streams are read by hand) and a short connect timeout.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

/// A client whose every request, body included, fails after `limit`: for tests whose requests
/// are short, so that a hang fails the test instead of stalling the run.
pub fn client_with_timeout(limit: Duration) -> reqwest::Client {
    client_builder().timeout(limit).build().expect("client")
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(5))
}

/// A response read to its end, with the time each piece of the body arrived.
#[derive(Debug)]
pub struct Collected {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// (time since the request was sent, bytes so far) after each piece.
    pub arrivals: Vec<(Duration, usize)>,
    /// The body ended with a transport error (not a clean end).
    pub transport_error: Option<String>,
}

impl Collected {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Time the first byte of the body arrived.
    pub fn first_byte_at(&self) -> Option<Duration> {
        self.arrivals.first().map(|(t, _)| *t)
    }

    /// Time the byte at `offset` arrived.
    pub fn arrival_of(&self, offset: usize) -> Option<Duration> {
        self.arrivals
            .iter()
            .find(|(_, n)| *n > offset)
            .map(|(t, _)| *t)
    }
}

/// POSTs `body` as JSON to `url` and reads the whole response, giving up after `limit`.
pub async fn post_collect(url: &str, body: &Value, limit: Duration) -> Collected {
    let start = Instant::now();
    let resp = client()
        .post(url)
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .json(body)
        .send()
        .await
        .expect("request sent");
    collect(resp, start, limit).await
}

/// Reads a response to its end (or `limit` after `start`), recording arrival times.
pub async fn collect(resp: reqwest::Response, start: Instant, limit: Duration) -> Collected {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut raw = Vec::new();
    let mut arrivals = Vec::new();
    let mut transport_error = None;
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::from_std(start + limit);
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => panic!(
                "the response did not end within {limit:?}; so far: {:?}",
                String::from_utf8_lossy(&raw)
            ),
            Ok(None) => break,
            Ok(Some(Ok(b))) => {
                raw.extend_from_slice(&b);
                arrivals.push((start.elapsed(), raw.len()));
            }
            Ok(Some(Err(e))) => {
                transport_error = Some(e.to_string());
                break;
            }
        }
    }
    Collected {
        status,
        headers,
        body: String::from_utf8(raw).expect("body is UTF-8"),
        arrivals,
        transport_error,
    }
}

/// Checks the wire rules of an OpenAI-format stream from Sluice and returns its events:
/// every event has exactly `id` and `data` fields; ids are 1, 2, 3, ... with no gap and no
/// repeat (the finish, usage and `[DONE]` events too); no blank line stands alone (the Python SDK would turn it into an
/// empty event once it has seen an `id:`); a keep-alive is exactly `: keep-alive\n`.
pub fn check_openai_wire(body: &str) -> Vec<SseEvent> {
    check_openai_wire_from(body, 1)
}

/// [`check_openai_wire`] for a stream resumed after event `first - 1`.
pub fn check_openai_wire_from(body: &str, first: u64) -> Vec<SseEvent> {
    assert!(!body.contains('\r'), "Sluice writes LF only: {body:?}");
    assert!(
        !body.starts_with('\n'),
        "the body starts with a blank line: {body:?}"
    );
    assert!(
        !body.contains("\n\n\n"),
        "a blank line stands alone: {body:?}"
    );
    for (i, line) in body.split('\n').enumerate() {
        if line.starts_with(':') {
            assert_eq!(line, ": keep-alive", "unexpected comment at line {i}");
        }
    }
    for (i, piece) in body.split(": keep-alive\n").enumerate().skip(1) {
        assert!(
            piece.is_empty() || piece.starts_with("id: ") || piece.starts_with(':'),
            "keep-alive #{i} is not followed by an event or another keep-alive: {piece:?}"
        );
    }
    let events = sse_events(body);
    for (expect, (i, e)) in (first..).zip(events.iter().enumerate()) {
        assert_eq!(
            e.fields,
            vec!["data".to_owned(), "id".to_owned()],
            "event {i} must have exactly an id and a data line: {e:?}"
        );
        assert_eq!(
            e.id,
            Some(expect),
            "ids must be consecutive from {first}: {events:?}"
        );
    }
    events
}

/// The chunks of a stream (every event but `[DONE]` and errors), parsed.
pub fn chunks(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| !e.is_done())
        .map(SseEvent::json)
        .filter(|v| v.get("error").is_none())
        .collect()
}

/// Concatenated `delta.content` of choice `index`.
pub fn content_of(events: &[SseEvent], index: u64) -> String {
    chunks(events)
        .iter()
        .filter_map(|c| c["choices"].as_array())
        .flatten()
        .filter(|c| c["index"].as_u64() == Some(index))
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// Every `finish_reason` the stream carried, as (choice index, reason).
pub fn finish_reasons(events: &[SseEvent]) -> Vec<(u64, String)> {
    chunks(events)
        .iter()
        .filter_map(|c| c["choices"].as_array())
        .flatten()
        .filter_map(|c| {
            Some((
                c["index"].as_u64()?,
                c["finish_reason"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The error events (`data: {"error":{...}}`) of a stream.
pub fn error_events(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| !e.is_done())
        .map(SseEvent::json)
        .filter(|v| v.get("error").is_some())
        .collect()
}

/// Asserts that a stream ended in exactly one in-band error of type `kind`, as its last event,
/// with no `[DONE]` and no finish reason; returns the error object.
pub fn assert_failed_stream(events: &[SseEvent], kind: &str) -> Value {
    assert_failed_stream_after(events, kind, &[])
}

/// [`assert_failed_stream`] for a stream where some choices had finished before the failure:
/// exactly `finished` (choice, reason) were delivered, and nothing else was invented.
pub fn assert_failed_stream_after(
    events: &[SseEvent],
    kind: &str,
    finished: &[(u64, &str)],
) -> Value {
    let errors = error_events(events);
    assert_eq!(errors.len(), 1, "exactly one error event: {events:?}");
    let last = events.last().expect("events").json();
    assert!(
        last.get("error").is_some(),
        "the error is the last event: {events:?}"
    );
    assert_eq!(last["error"]["type"], kind, "error type: {last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message: {last}"
    );
    assert!(
        !events.iter().any(SseEvent::is_done),
        "a failed stream has no [DONE]: {events:?}"
    );
    let want: Vec<(u64, String)> = finished
        .iter()
        .map(|(c, r)| (*c, (*r).to_owned()))
        .collect();
    assert_eq!(
        finish_reasons(events),
        want,
        "only finish reasons the upstream sent, none invented, on a failed stream: {events:?}"
    );
    last["error"].clone()
}

/// Asserts the OpenAI error shape and returns the error object.
pub fn assert_error_shape(body: &Value) -> &Value {
    let err = &body["error"];
    assert!(err.is_object(), "OpenAI error shape expected: {body}");
    assert!(err["message"].is_string(), "error.message: {body}");
    assert!(err["type"].is_string(), "error.type: {body}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "error.param and error.code must be present (may be null): {body}"
    );
    err
}

/// `data: {json}\n\n`: one upstream SSE event.
pub fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// An upstream chunk with one choice's delta and optional finish reason.
pub fn up_chunk(index: u32, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "up-model",
        "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

/// The upstream's first chunk for choice 0: the assistant role and empty content.
pub fn up_role() -> Value {
    up_chunk(0, json!({"role": "assistant", "content": ""}), None)
}

/// An upstream text delta chunk for choice 0.
pub fn up_text(text: &str) -> Value {
    up_chunk(0, json!({ "content": text }), None)
}

/// An upstream usage chunk (empty `choices`).
pub fn up_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "up-model", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    })
}

/// A complete, well-behaved upstream stream body answering `pieces` on choice 0.
pub fn up_stream(pieces: &[&str]) -> String {
    let mut s = data(&up_role());
    for p in pieces {
        s.push_str(&data(&up_text(p)));
    }
    s.push_str(&data(&up_chunk(0, json!({}), Some("stop"))));
    s.push_str(&data(&up_usage(5, pieces.len() as u64)));
    s.push_str("data: [DONE]\n\n");
    s
}

/// Scripted steps for an SSE response whose body is written as `pieces`, one chunk each, then
/// ended cleanly.
pub fn sse_steps<I, B>(pieces: I) -> Vec<crate::scripted::Step>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut steps = vec![crate::scripted::sse_head()];
    steps.extend(
        pieces
            .into_iter()
            .map(|p| crate::scripted::chunk(p.as_ref())),
    );
    steps.push(crate::scripted::end_chunks());
    steps
}

/// The JSON body of the one request a scripted upstream recorded.
pub fn recorded_body(up: &crate::scripted::ScriptedUpstream) -> Value {
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "the upstream got one request");
    serde_json::from_slice(&reqs[0].1).expect("upstream request body is JSON")
}

/// A streaming response read piece by piece, for tests that stop reading half-way.
pub struct StreamReader {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    raw: Vec<u8>,
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    pub ended: bool,
}

impl StreamReader {
    /// POSTs `body` as JSON and returns once the response head has arrived.
    pub async fn post(url: &str, body: &Value) -> Self {
        let resp = client()
            .post(url)
            .json(body)
            .send()
            .await
            .expect("response");
        Self::new(resp)
    }

    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: String::new(),
            raw: Vec::new(),
            stream: resp.bytes_stream().boxed(),
            ended: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads until `done(body so far)` holds or the body ends; panics after `limit`.
    pub async fn read_until(&mut self, limit: Duration, done: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.body) && !self.ended {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("timed out after {limit:?}; body so far: {:?}", self.body),
                Ok(None) | Ok(Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(b))) => {
                    self.raw.extend_from_slice(&b);
                    if let Ok(s) = std::str::from_utf8(&self.raw) {
                        self.body = s.to_owned();
                    }
                }
            }
        }
    }

    /// Reads to the end of the body.
    pub async fn read_to_end(&mut self, limit: Duration) {
        self.read_until(limit, |_| false).await;
    }

    /// The complete events received so far (up to the last blank line).
    pub fn complete_events(&self) -> Vec<SseEvent> {
        sse_events(crate::sse::complete_part(&self.body))
    }
}

/// The number of complete events in `body` carrying content.
pub fn content_events(body: &str) -> usize {
    sse_events(crate::sse::complete_part(body))
        .iter()
        .filter(|e| e.data.contains("\"content\""))
        .count()
}
