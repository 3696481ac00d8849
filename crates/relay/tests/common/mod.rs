//! Helpers shared by the relay's integration tests: building streams, draining readers, and
//! a small SSE parser that reads bodies the way a client would.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use relay::{Delta, Event, Format, Handle, Meta, Reader, Usage, Writer};

/// Keep-alive long enough never to fire in tests that do not look for it.
pub const NO_KEEPALIVE: Duration = Duration::from_secs(3600);

pub fn meta() -> Meta {
    Meta {
        id: "chatcmpl-1".into(),
        model: "m".into(),
        created: 7,
        system_fingerprint: None,
    }
}

pub fn usage() -> Usage {
    Usage {
        prompt_tokens: 9,
        completion_tokens: 2,
        total_tokens: 11,
        ..Usage::default()
    }
}

/// A stream outside any registry: its writer and a handle on its read side.
pub fn stream(include_usage: bool) -> (Writer, Handle) {
    let w = relay::standalone(meta(), include_usage);
    let h = w.handle();
    (w, h)
}

/// A finished stream: one delta per piece, then `done` with `stop`.
pub fn finished(pieces: &[String]) -> Handle {
    let (mut w, h) = stream(false);
    for p in pieces {
        assert!(w.push_delta(Delta::text(0, p.clone())));
    }
    w.record_finish(0, "stop");
    w.finish();
    h
}

/// The content text of a delta event ("" for anything else).
pub fn text_of(e: &Event) -> &str {
    match e {
        Event::Delta(d) => d.content.as_deref().unwrap_or(""),
        _ => "",
    }
}

/// Everything a reader yields until its end, with the ids.
pub async fn drain(mut r: Reader) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    while let Some(e) = r.next_event().await {
        assert_eq!(
            r.position(),
            e.0,
            "position() is the id of the last event taken"
        );
        out.push(e);
    }
    // Once ended, a reader stays ended.
    assert!(
        r.next_event().await.is_none(),
        "a reader yielded past its end"
    );
    out
}

/// The ids of drained events.
pub fn ids(events: &[(u64, Event)]) -> Vec<u64> {
    events.iter().map(|(id, _)| *id).collect()
}

/// A reader's SSE body, piece by piece as the server would write it.
pub async fn sse_chunks(r: Reader, keep_alive: Duration) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut s = std::pin::pin!(r.into_sse(keep_alive));
    while let Some(chunk) = s.next().await {
        let Ok(chunk) = chunk;
        out.push(chunk);
    }
    out
}

/// A reader's whole SSE body, as one byte string.
pub async fn sse_body(r: Reader, keep_alive: Duration) -> Vec<u8> {
    sse_chunks(r, keep_alive).await.concat()
}

/// The bytes of `events` encoded one by one with [`relay::encode::encode`].
pub fn encode_each(format: Format, events: &[(u64, Event)], include_usage: bool) -> Vec<u8> {
    events
        .iter()
        .flat_map(|(id, e)| relay::encode::encode(format, *id, e, &meta(), include_usage))
        .collect()
}

/// One dispatched SSE event, as a client's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field given in this event's own lines, if any.
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

/// Parses an SSE body per the HTML spec's rules (comments and `retry:` ignored, an event is
/// dispatched by a blank line, an unterminated trailing event is dropped). Also counts blank
/// lines that dispatch nothing, which strict clients (the OpenAI Python SDK) choke on.
pub fn parse_sse(body: &[u8]) -> (Vec<SseEvent>, usize) {
    let text = std::str::from_utf8(body).expect("SSE body is UTF-8");
    let mut events = Vec::new();
    let mut empty_dispatches = 0;
    let mut id = None;
    let mut event = None;
    let mut data: Option<String> = None;
    let mut rest = text;
    while let Some(nl) = rest.find('\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.is_empty() {
            match data.take() {
                Some(d) => events.push(SseEvent {
                    id: id.take(),
                    event: event.take(),
                    data: d,
                }),
                None => {
                    empty_dispatches += 1;
                    id = None;
                    event = None;
                }
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => id = Some(value.parse().expect("numeric id")),
            "event" => event = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "retry" => {}
            other => panic!("unexpected SSE field {other:?} in {text:?}"),
        }
    }
    assert!(rest.is_empty(), "body ends mid-line: {rest:?}");
    (events, empty_dispatches)
}

/// The answer text a browser client assembles from `delta` events of choice 0.
pub fn browser_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.data).expect("delta JSON");
            assert_eq!(v["index"], 0);
            v["text"].as_str().expect("text").to_owned()
        })
        .collect()
}

/// The answer text an OpenAI client assembles from `delta.content` of choice 0.
pub fn openai_text(events: &[SseEvent]) -> String {
    let mut out = String::new();
    for e in events.iter().filter(|e| e.data != "[DONE]") {
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("chunk JSON");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(t);
        }
    }
    out
}

/// Checks the OpenAI-format body for what the official Python SDK trips on: no "\n\n\n", no
/// blank line except the one ending an event that has a `data:` line, and a keep-alive comment
/// never followed by a blank line.
pub fn assert_openai_blank_lines_ok(body: &[u8]) {
    let text = std::str::from_utf8(body).expect("UTF-8");
    assert!(!text.contains("\n\n\n"), "triple newline in {text:?}");
    assert!(
        !text.starts_with('\n'),
        "body starts with a blank line: {text:?}"
    );
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "body ends mid-line"
    );
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let mut block_has_data = false;
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            assert!(
                block_has_data,
                "blank line {i} does not end a data event: {text:?}"
            );
            assert!(
                lines[i - 1].starts_with("data: "),
                "blank line {i} follows {:?}, not a data line",
                lines[i - 1]
            );
            block_has_data = false;
        } else if line.starts_with("data: ") {
            block_has_data = true;
        }
    }
}

/// `n` distinct pieces whose text tells their position (so misordering shows).
pub fn numbered_pieces(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("<{i}>")).collect()
}
