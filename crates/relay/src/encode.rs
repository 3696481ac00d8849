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

use crate::event::{Delta, Done, Event, Failure, Meta, ToolCall, Usage};

/// The two output formats of one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `event: delta|reasoning|tool_call|done|failed` with small JSON payloads, for EventSource.
    Browser,
    /// OpenAI `chat.completion.chunk` events ending with `data: [DONE]`.
    OpenAi,
}

impl Format {
    /// What starts a response body in this format. The browser format sets EventSource's
    /// reconnect delay. The OpenAI format sends nothing: a `retry:` line followed by a blank line
    /// would be an empty event to the official Python SDK.
    pub fn preamble(self) -> &'static [u8] {
        match self {
            Self::Browser => b"retry: 1000\n\n",
            Self::OpenAi => b"",
        }
    }

    /// The keep-alive comment. On the OpenAI format it is a lone comment line with no blank
    /// line after it: once an `id:` has been seen, the Python SDK turns a blank line into an
    /// event with empty data and fails on it.
    pub fn keep_alive(self) -> &'static [u8] {
        match self {
            Self::Browser => b": keep-alive\n\n",
            Self::OpenAi => b": keep-alive\n",
        }
    }
}

/// Encodes one log event in `format`.
pub fn encode(format: Format, id: u64, event: &Event, meta: &Meta, include_usage: bool) -> Bytes {
    match format {
        Format::Browser => browser(id, event),
        Format::OpenAi => openai(id, event, meta, include_usage, 0),
    }
}

/// How many SSE events `event` is in `format` (more than one only for the OpenAI end).
pub fn event_count(format: Format, event: &Event, include_usage: bool) -> u64 {
    match (format, event) {
        (Format::OpenAi, Event::Done(done)) => {
            done.finish_reasons.len() as u64 + u64::from(include_usage && done.usage.is_some()) + 1
        }
        _ => 1,
    }
}

/// The OpenAI encoding of the terminal `done` at log id `id` without its first `skip` events,
/// for a reader resuming in the middle of it.
pub fn openai_tail(id: u64, event: &Event, meta: &Meta, include_usage: bool, skip: u64) -> Bytes {
    openai(id, event, meta, include_usage, skip)
}

fn start_event(buf: &mut BytesMut, id: u64, name: Option<&str>) {
    buf.put_slice(b"id: ");
    let mut itoa = itoa_buf(id);
    buf.put_slice(itoa.as_bytes_mut());
    buf.put_u8(b'\n');
    if let Some(n) = name {
        buf.put_slice(b"event: ");
        buf.put_slice(n.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"data: ");
}

/// A small stack buffer with the decimal digits of `n`.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> Digits {
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
struct TextData<'a> {
    index: u32,
    text: &'a str,
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

fn browser(id: u64, event: &Event) -> Bytes {
    let text = match event {
        Event::Delta(d) => d.heap_bytes(),
        _ => 192,
    };
    let mut buf = BytesMut::with_capacity(64 + text + text / 8);
    match event {
        // The generation splits deltas so that each holds one kind of output: one event each.
        Event::Delta(d) => {
            if let Some(t) = d.reasoning.as_deref().filter(|t| !t.is_empty()) {
                event_bytes(
                    &mut buf,
                    id,
                    Some("reasoning"),
                    &TextData {
                        index: d.choice,
                        text: t,
                    },
                );
            } else if let Some(c) = d.tool_calls.first() {
                let data = ToolCallData {
                    index: c.index,
                    id: c.id.as_deref(),
                    name: c.name.as_deref(),
                    arguments: c.arguments.as_deref().unwrap_or(""),
                };
                event_bytes(&mut buf, id, Some("tool_call"), &data);
            } else {
                // Content, or a refusal (shown as text), or a logprobs-only delta (empty text,
                // so the id sequence stays whole for browsers too).
                let text = d.content.as_deref().or(d.refusal.as_deref()).unwrap_or("");
                event_bytes(
                    &mut buf,
                    id,
                    Some("delta"),
                    &TextData {
                        index: d.choice,
                        text,
                    },
                );
            }
        }
        Event::Done(done) => {
            let data = DoneData {
                finish_reason: done.finish_reason(),
                usage: done.usage.as_ref(),
            };
            event_bytes(&mut buf, id, Some("done"), &data);
        }
        Event::Failed(f) => event_bytes(&mut buf, id, Some("failed"), f),
    }
    buf.freeze()
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
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

fn chunk<'a>(
    meta: &'a Meta,
    choices: &'a [ChunkChoice<'a>],
    usage: Option<&'a Usage>,
) -> Chunk<'a> {
    Chunk {
        id: &meta.id,
        object: "chat.completion.chunk",
        created: meta.created,
        model: &meta.model,
        system_fingerprint: meta.system_fingerprint.as_deref(),
        choices,
        usage,
    }
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

fn openai(id: u64, event: &Event, meta: &Meta, include_usage: bool, skip: u64) -> Bytes {
    // Sized for one chunk (the fixed fields plus the text), so the buffer is not regrown.
    let text = match event {
        Event::Delta(d) => d.heap_bytes(),
        _ => 256,
    };
    let mut buf = BytesMut::with_capacity(128 + meta.id.len() + meta.model.len() + text + text / 8);
    match event {
        Event::Delta(d) => openai_delta(&mut buf, id, d, meta),
        Event::Done(done) => openai_done(&mut buf, id, done, meta, include_usage, skip),
        Event::Failed(f) => openai_failed(&mut buf, id, f),
    }
    buf.freeze()
}

fn openai_delta(buf: &mut BytesMut, id: u64, d: &Delta, meta: &Meta) {
    let choices = [ChunkChoice {
        index: d.choice,
        delta: ChunkDelta {
            role: d.first.then_some("assistant"),
            content: d.content.as_deref(),
            reasoning_content: d.reasoning.as_deref(),
            refusal: d.refusal.as_deref(),
            tool_calls: tool_calls(&d.tool_calls),
        },
        logprobs: d.logprobs.as_deref(),
        finish_reason: None,
    }];
    event_bytes(buf, id, None, &chunk(meta, &choices, None));
}

fn openai_done(
    buf: &mut BytesMut,
    id: u64,
    done: &Done,
    meta: &Meta,
    include_usage: bool,
    skip: u64,
) {
    let mut next = id;
    for (choice, reason) in &done.finish_reasons {
        if next >= id + skip {
            let choices = [ChunkChoice {
                index: *choice,
                delta: ChunkDelta::default(),
                logprobs: None,
                finish_reason: Some(reason),
            }];
            event_bytes(buf, next, None, &chunk(meta, &choices, None));
        }
        next += 1;
    }
    if include_usage {
        if let Some(u) = &done.usage {
            if next >= id + skip {
                event_bytes(buf, next, None, &chunk(meta, &[], Some(u)));
            }
            next += 1;
        }
    }
    start_event(buf, next, None);
    buf.put_slice(b"[DONE]\n\n");
}

fn openai_failed(buf: &mut BytesMut, id: u64, f: &Failure) {
    let body = ErrorBody {
        error: ErrorInner {
            message: &f.message,
            kind: &f.kind,
            param: None,
            code: f.code.as_deref(),
        },
    };
    event_bytes(buf, id, None, &body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PromptDetails, Usage};

    fn meta() -> Meta {
        Meta {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 7,
            system_fingerprint: None,
        }
    }

    fn s(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 9,
            completion_tokens: 2,
            total_tokens: 11,
            ..Usage::default()
        }
    }

    #[test]
    fn browser_golden() {
        let d = Event::Delta(Delta::text(0, "Hel\"lo\n"));
        assert_eq!(
            s(browser(1, &d)),
            "id: 1\nevent: delta\ndata: {\"index\":0,\"text\":\"Hel\\\"lo\\n\"}\n\n"
        );
        let done = Event::Done(Done {
            finish_reasons: vec![(0, "stop".into())],
            usage: Some(usage()),
        });
        assert_eq!(
            s(browser(3, &done)),
            "id: 3\nevent: done\ndata: {\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
        );
        let failed = Event::Failed(Failure {
            message: "boom".into(),
            kind: "upstream_truncated".into(),
            code: Some("upstream_truncated".into()),
        });
        assert_eq!(
            s(browser(12, &failed)),
            "id: 12\nevent: failed\ndata: {\"message\":\"boom\",\"type\":\"upstream_truncated\",\"code\":\"upstream_truncated\"}\n\n"
        );
        let tc = Event::Delta(Delta {
            tool_calls: vec![ToolCall {
                index: 0,
                id: Some("call_1".into()),
                name: Some("f".into()),
                arguments: Some("{\"a\":".into()),
            }],
            ..Delta::default()
        });
        assert_eq!(
            s(browser(4, &tc)),
            "id: 4\nevent: tool_call\ndata: {\"index\":0,\"id\":\"call_1\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}\n\n"
        );
        let r = Event::Delta(Delta {
            reasoning: Some("hmm".into()),
            ..Delta::default()
        });
        assert_eq!(
            s(browser(5, &r)),
            "id: 5\nevent: reasoning\ndata: {\"index\":0,\"text\":\"hmm\"}\n\n"
        );
    }

    #[test]
    fn openai_golden() {
        let mut d = Delta::text(0, "Hel");
        d.first = true;
        assert_eq!(
            s(openai(1, &Event::Delta(d), &meta(), false, 0)),
            "id: 1\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
        );
        let done = Event::Done(Done {
            finish_reasons: vec![(0, "stop".into())],
            usage: Some(Usage {
                prompt_tokens_details: Some(PromptDetails { cached_tokens: 1 }),
                ..usage()
            }),
        });
        assert_eq!(
            s(openai(3, &done, &meta(), true, 0)),
            "id: 3\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n\
             id: 4\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\n\
             id: 5\ndata: [DONE]\n\n"
        );
        // Without include_usage the usage chunk is not sent.
        assert!(!s(openai(3, &done, &meta(), false, 0)).contains("\"usage\""));
        let failed = Event::Failed(Failure {
            message: "cut".into(),
            kind: "upstream_truncated".into(),
            code: None,
        });
        assert_eq!(
            s(openai(2, &failed, &meta(), true, 0)),
            "id: 2\ndata: {\"error\":{\"message\":\"cut\",\"type\":\"upstream_truncated\",\"param\":null,\"code\":null}}\n\n"
        );
    }

    #[test]
    fn openai_end_numbers_on_and_resumes_mid_way() {
        let done = Event::Done(Done {
            finish_reasons: vec![(0, "stop".into()), (1, "length".into())],
            usage: Some(usage()),
        });
        assert_eq!(event_count(Format::OpenAi, &done, true), 4);
        assert_eq!(event_count(Format::OpenAi, &done, false), 3);
        assert_eq!(event_count(Format::Browser, &done, true), 1);
        let full = s(openai(7, &done, &meta(), true, 0));
        let ids: Vec<&str> = full.lines().filter(|l| l.starts_with("id: ")).collect();
        assert_eq!(ids, vec!["id: 7", "id: 8", "id: 9", "id: 10"]);
        let tail = s(openai_tail(7, &done, &meta(), true, 2));
        assert!(full.ends_with(&tail), "{tail}");
        assert!(tail.starts_with("id: 9\ndata: {"), "{tail}");
        assert_eq!(
            s(openai_tail(7, &done, &meta(), true, 3)),
            "id: 10\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn openai_tool_call_and_logprobs() {
        let d = Delta {
            choice: 1,
            tool_calls: vec![ToolCall {
                index: 0,
                id: Some("c".into()),
                name: Some("f".into()),
                arguments: Some(String::new()),
            }],
            logprobs: Some(RawValue::from_string("{\"content\":[]}".into()).unwrap()),
            ..Delta::default()
        };
        let out = s(openai(9, &Event::Delta(d), &meta(), false, 0));
        assert!(out.contains("\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"logprobs\":{\"content\":[]}"), "{out}");
    }

    #[test]
    fn digits() {
        for n in [0u64, 7, 10, 123_456, u64::MAX] {
            assert_eq!(itoa_buf(n).as_bytes_mut(), n.to_string().as_bytes());
        }
    }
}
