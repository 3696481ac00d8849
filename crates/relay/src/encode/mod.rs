//! Wire encoders: one log event to the exact bytes a client receives, in either format.
//!
//! Pure functions, tested against literal strings. Every event written carries its `id:` line,
//! so a client can resume from any event it has seen. A log event is one SSE event in either
//! format, with the log's number as its id, except the OpenAI format's end: the terminal `done`
//! becomes the finish chunk(s), the usage chunk (when asked for) and `[DONE]`, numbered on from
//! the `done` event's id, so ids stay 1, 2, 3, ... in both formats and agree on every delta.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::event::{DeltaRef, Done, Event, EventRef, Failure, Meta, ToolCall, Usage};

/// The Anthropic Messages dialect.
pub mod anthropic;
/// Dialect encoders: state folded over the log, their own numbering.
pub mod dialect;
/// The OpenAI Responses API dialect.
mod responses;
/// The AI SDK's UI message stream dialect.
mod ui;

/// The output formats of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `event: delta|reasoning|tool_call|done|failed` with small JSON payloads, for EventSource.
    Browser,
    /// OpenAI `chat.completion.chunk` events ending with `data: [DONE]`.
    OpenAi,
    /// The OpenAI Responses API's events (`response.created` ... `response.completed`), each
    /// with its `sequence_number` (from 0) as its id. A dialect: see [`dialect`].
    Responses,
    /// Anthropic Messages events (`message_start` ... `message_stop`), numbered from 1.
    Anthropic,
    /// The AI SDK's UI message stream (`data:` parts, then `data: [DONE]`); not numbered.
    UiMessage,
}

impl Format {
    /// True for the formats whose events are not one per log event (see [`dialect`]).
    pub fn is_dialect(self) -> bool {
        matches!(self, Self::Responses | Self::Anthropic | Self::UiMessage)
    }

    /// The number of a stream's first event in this format.
    pub fn first_id(self) -> u64 {
        match self {
            Self::Responses | Self::UiMessage => 0,
            Self::Browser | Self::OpenAi | Self::Anthropic => 1,
        }
    }

    /// Whether events carry their number as an `id:` line (a resumer's `Last-Event-ID`).
    pub fn numbered(self) -> bool {
        !matches!(self, Self::UiMessage)
    }

    /// What starts a response body in this format. The browser format sets EventSource's
    /// reconnect delay. The OpenAI format sends nothing: a `retry:` line followed by a blank line
    /// would be an empty event to the official Python SDK.
    pub fn preamble(self) -> &'static [u8] {
        match self {
            Self::Browser => b"retry: 1000\n\n",
            Self::OpenAi | Self::Responses | Self::Anthropic | Self::UiMessage => b"",
        }
    }

    /// The keep-alive comment. On the OpenAI format it is a lone comment line with no blank
    /// line after it: once an `id:` has been seen, the Python SDK turns a blank line into an
    /// event with empty data and fails on it.
    pub fn keep_alive(self) -> &'static [u8] {
        match self {
            Self::Browser | Self::UiMessage => b": keep-alive\n\n",
            // The Responses API's clients share the Python SDK's decoder.
            Self::OpenAi | Self::Responses => b": keep-alive\n",
            // What Anthropic itself sends; its SDKs' decoder is the same as OpenAI's, and a
            // `ping` event is one they know and skip. No id: it is not part of the sequence.
            Self::Anthropic => b"event: ping\ndata: {\"type\":\"ping\"}\n\n",
        }
    }
}

/// Encodes one event in `format` into a fresh buffer (tests, and readers of rare events).
pub fn encode(format: Format, id: u64, event: &Event, meta: &Meta, include_usage: bool) -> Bytes {
    let mut buf = BytesMut::new();
    let head = chunk_head(meta);
    encode_into(&mut buf, format, id, event.view(), &head, include_usage, 0);
    buf.freeze()
}

/// Encodes one log event in `format` at the end of `buf`. `head` is the stream's
/// [`chunk_head`]; `skip` leaves out the first events of the OpenAI end (a reader resuming in
/// the middle of it).
pub fn encode_into(
    buf: &mut BytesMut,
    format: Format,
    id: u64,
    event: EventRef<'_>,
    head: &str,
    include_usage: bool,
    skip: u64,
) {
    match format {
        Format::Browser => browser(buf, id, event),
        Format::OpenAi => match event {
            EventRef::Delta(d) => openai_delta(buf, id, &d, head),
            EventRef::Done(done) => openai_done(buf, id, done, head, include_usage, skip),
            EventRef::Failed(f) => openai_failed(buf, id, f, head, skip),
        },
        // Stateful: see `dialect::State`, which the reader keeps.
        Format::Responses | Format::Anthropic | Format::UiMessage => {
            debug_assert!(false, "a dialect is encoded through dialect::State");
        }
    }
}

/// How many SSE events `event` is in `format` (more than one only for the OpenAI end).
pub fn event_count(format: Format, event: EventRef<'_>, include_usage: bool) -> u64 {
    match (format, event) {
        (Format::OpenAi, EventRef::Done(done)) => {
            done.finish_reasons.len() as u64 + u64::from(include_usage && done.usage.is_some()) + 1
        }
        (Format::OpenAi, EventRef::Failed(f)) => f.finish_reasons.len() as u64 + 1,
        _ => 1,
    }
}

/// The opening every OpenAI chunk of a stream shares, up to and including `"choices":`. Made
/// once per stream (the metadata is fixed by its first event), so the id and model are not
/// escaped again for every token.
pub fn chunk_head(meta: &Meta) -> String {
    let mut s = String::with_capacity(64 + meta.id.len() + meta.model.len());
    s.push_str("{\"id\":");
    push_json_str(&mut s, &meta.id);
    s.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
    s.push_str(itoa_buf(meta.created).as_str());
    s.push_str(",\"model\":");
    push_json_str(&mut s, &meta.model);
    if let Some(fp) = &meta.system_fingerprint {
        s.push_str(",\"system_fingerprint\":");
        push_json_str(&mut s, fp);
    }
    s.push_str(",\"choices\":");
    s
}

/// The metadata a chunk head was made from (a replica has only its original's head).
pub fn meta_from_chunk_head(head: &str) -> Meta {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Head {
        id: String,
        model: String,
        created: u64,
        system_fingerprint: Option<String>,
    }
    let h: Head = serde_json::from_str(&format!("{head}null}}")).unwrap_or_default();
    Meta {
        id: h.id,
        model: h.model,
        created: h.created,
        system_fingerprint: h.system_fingerprint,
    }
}

fn push_json_str(s: &mut String, v: &str) {
    let mut b = BytesMut::with_capacity(v.len() + 2);
    put_json_str(&mut b, v);
    // Escaping keeps valid UTF-8 valid.
    s.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// JSON string escapes as serde_json writes them: the two-character forms for `"`, `\`, and
/// `\b \f \n \r \t`, `\u00XX` for the other control characters, everything else as is.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `v` as a JSON string: the hot path of every token, so no serializer in between.
pub(crate) fn put_json_str(buf: &mut BytesMut, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = v.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.put_u8(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        buf.put_slice(&bytes[start..i]);
        if esc == b'u' {
            buf.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            buf.put_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    buf.put_slice(&bytes[start..]);
    buf.put_u8(b'"');
}

fn start_event(buf: &mut BytesMut, id: u64, name: Option<&str>) {
    buf.put_slice(b"id: ");
    buf.put_slice(itoa_buf(id).as_str().as_bytes());
    buf.put_u8(b'\n');
    if let Some(n) = name {
        buf.put_slice(b"event: ");
        buf.put_slice(n.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"data: ");
}

/// A small stack buffer with the decimal digits of `n`.
pub(crate) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits are written.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or_default()
    }
}

pub(crate) fn itoa_buf(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = 20;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

fn put_json<T: Serialize>(buf: &mut BytesMut, v: &T) {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    let _ = serde_json::to_writer(buf.writer(), v);
}

fn event_bytes<T: Serialize>(buf: &mut BytesMut, id: u64, name: Option<&str>, data: &T) {
    start_event(buf, id, name);
    put_json(buf, data);
    buf.put_slice(b"\n\n");
}

#[derive(Serialize)]
struct ToolCallData<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct DoneData<'a> {
    finish_reason: &'a str,
    usage: Option<&'a Usage>,
}

/// `id: N\nevent: NAME\ndata: {"index":I,"text":"..."}\n\n`, written directly.
fn browser_text(buf: &mut BytesMut, id: u64, name: &str, index: u32, text: &str) {
    start_event(buf, id, Some(name));
    buf.put_slice(b"{\"index\":");
    buf.put_slice(itoa_buf(u64::from(index)).as_str().as_bytes());
    buf.put_slice(b",\"text\":");
    put_json_str(buf, text);
    buf.put_slice(b"}\n\n");
}

fn browser(buf: &mut BytesMut, id: u64, event: EventRef<'_>) {
    match event {
        // The writer splits deltas so that each holds one kind of output: one event each.
        EventRef::Delta(d) => {
            if let Some(t) = d.reasoning.filter(|t| !t.is_empty()) {
                browser_text(buf, id, "reasoning", d.choice, t);
            } else if let Some(c) = d.tool_calls.first() {
                let data = ToolCallData {
                    index: c.index,
                    id: c.id.as_deref(),
                    name: c.name.as_deref(),
                    arguments: c.arguments.as_deref().unwrap_or(""),
                };
                event_bytes(buf, id, Some("tool_call"), &data);
            } else if d.signature.is_some() && d.content.is_none() && d.refusal.is_none() {
                // A thinking signature alone: it closes the thinking, which a browser shows as
                // text only, so an empty piece of thinking (the id sequence stays whole, and
                // the chat page's token count is not touched).
                browser_text(buf, id, "reasoning", d.choice, "");
            } else {
                // Content, or a refusal (shown as text), or a logprobs-only delta (empty text,
                // so the id sequence stays whole for browsers too).
                let text = d.content.or(d.refusal).unwrap_or("");
                browser_text(buf, id, "delta", d.choice, text);
            }
        }
        EventRef::Done(done) => {
            let data = DoneData {
                finish_reason: done.finish_reason(),
                usage: done.usage.as_ref(),
            };
            event_bytes(buf, id, Some("done"), &data);
        }
        EventRef::Failed(f) => event_bytes(buf, id, Some("failed"), f),
    }
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: ChunkDelta<'a>,
    logprobs: Option<&'a RawValue>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct ChunkDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: Vec<ChunkToolCall<'a>>,
}

#[derive(Serialize)]
struct ChunkToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: ChunkFunction<'a>,
}

#[derive(Serialize)]
struct ChunkFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// One chunk: the stream's head, `choices` (already JSON), the usage if any, the end.
fn chunk<T: Serialize>(
    buf: &mut BytesMut,
    id: u64,
    head: &str,
    choices: &T,
    usage: Option<&Usage>,
) {
    start_event(buf, id, None);
    buf.put_slice(head.as_bytes());
    put_json(buf, choices);
    if let Some(u) = usage {
        buf.put_slice(b",\"usage\":");
        put_json(buf, u);
    }
    buf.put_slice(b"}\n\n");
}

fn tool_calls(calls: &[ToolCall]) -> Vec<ChunkToolCall<'_>> {
    calls
        .iter()
        .map(|c| ChunkToolCall {
            index: c.index,
            id: c.id.as_deref(),
            kind: c.id.as_ref().map(|_| "function"),
            function: ChunkFunction {
                name: c.name.as_deref(),
                arguments: c.arguments.as_deref(),
            },
        })
        .collect()
}

/// A delta as one chunk. A thinking signature is not part of the chunk format: a delta that
/// carries only one is a chunk with an empty `delta` (as OpenAI's own finish chunks have), so
/// the ids stay 1, 2, 3, ... in every format.
fn openai_delta(buf: &mut BytesMut, id: u64, d: &DeltaRef<'_>, head: &str) {
    // The hot path: one kind of text, no tool calls or logprobs, written without a serializer.
    let text = match (d.content, d.reasoning, d.refusal) {
        (Some(t), None, None) => Some(("content", t)),
        (None, Some(t), None) => Some(("reasoning_content", t)),
        (None, None, Some(t)) => Some(("refusal", t)),
        _ => None,
    };
    if let (Some((field, t)), true, None) = (text, d.tool_calls.is_empty(), d.logprobs) {
        start_event(buf, id, None);
        buf.put_slice(head.as_bytes());
        buf.put_slice(b"[{\"index\":");
        buf.put_slice(itoa_buf(u64::from(d.choice)).as_str().as_bytes());
        buf.put_slice(b",\"delta\":{");
        if d.first {
            buf.put_slice(b"\"role\":\"assistant\",");
        }
        buf.put_u8(b'"');
        buf.put_slice(field.as_bytes());
        buf.put_slice(b"\":");
        put_json_str(buf, t);
        buf.put_slice(b"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
        return;
    }
    let choices = [ChunkChoice {
        index: d.choice,
        delta: ChunkDelta {
            role: d.first.then_some("assistant"),
            content: d.content,
            reasoning_content: d.reasoning,
            refusal: d.refusal,
            tool_calls: tool_calls(d.tool_calls),
        },
        logprobs: d.logprobs,
        finish_reason: None,
    }];
    chunk(buf, id, head, &choices, None);
}

/// One finish chunk per `(choice, reason)` from id `id`, leaving out the first `skip`; returns
/// the id after them.
fn finish_chunks(
    buf: &mut BytesMut,
    id: u64,
    reasons: &[(u32, String)],
    head: &str,
    skip: u64,
) -> u64 {
    let mut next = id;
    for (choice, reason) in reasons {
        if next >= id + skip {
            let choices = [ChunkChoice {
                index: *choice,
                delta: ChunkDelta::default(),
                logprobs: None,
                finish_reason: Some(reason),
            }];
            chunk(buf, next, head, &choices, None);
        }
        next += 1;
    }
    next
}

fn openai_done(
    buf: &mut BytesMut,
    id: u64,
    done: &Done,
    head: &str,
    include_usage: bool,
    skip: u64,
) {
    let mut next = finish_chunks(buf, id, &done.finish_reasons, head, skip);
    if include_usage {
        if let Some(u) = &done.usage {
            if next >= id + skip {
                chunk(buf, next, head, &[(); 0], Some(u));
            }
            next += 1;
        }
    }
    start_event(buf, next, None);
    buf.put_slice(b"[DONE]\n\n");
}

fn openai_failed(buf: &mut BytesMut, id: u64, f: &Failure, head: &str, skip: u64) {
    let next = finish_chunks(buf, id, &f.finish_reasons, head, skip);
    let body = ErrorBody {
        error: ErrorInner {
            message: &f.message,
            kind: &f.kind,
            param: None,
            code: f.code.as_deref(),
        },
    };
    event_bytes(buf, next, None, &body);
}

#[cfg(test)]
mod tests;
