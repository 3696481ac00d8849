//! The AI SDK's UI message stream (`x-vercel-ai-ui-message-stream: v1`), what `useChat`'s
//! `DefaultChatTransport` reads: `data: {json}` parts, no `id:` or `event:` lines, then
//! `data: [DONE]`.
//!
//! The transport validates every part against the `ai` package's `uiMessageChunkSchema` and
//! rejects the whole stream on one it does not accept, so each part here is written exactly as
//! that schema (ai 7) has it: text parts carry an `id` and their deltas are `delta`, tool input
//! deltas are `inputTextDelta`, `finish.finishReason` is one of `stop`, `length`,
//! `content-filter`, `tool-calls`, `error`, `interrupted`, `other`.
//!
//! One generation is one message of one step:
//!
//! ```text
//! start {messageId}            (with the first log event)
//! start-step
//! text-start / text-delta* / text-end                  (a run of content or refusal)
//! reasoning-start / reasoning-delta* / reasoning-end   (a run of reasoning)
//! tool-input-start / tool-input-delta*                 (a tool call as it streams)
//! ...
//! tool-input-available {input} (each tool call, its arguments parsed, at the end)
//! finish-step
//! finish {finishReason}
//! [DONE]
//! ```
//!
//! A stream stopped by its client (`cancelled`) ends with `abort` instead of the finish parts,
//! as the AI SDK's own `streamText` ends an aborted stream; a failure after the start ends with
//! `error {errorText}`. Both close the text or reasoning part in progress first, so the message
//! a client assembled is left consistent. Every id derives from the stream ID or counts parts,
//! so a replay is byte for byte the same.

use bytes::{BufMut, BytesMut};
use serde_json::value::RawValue;

use super::dialect::{Ctx, Out};
use super::{itoa_buf, put_json_str};
use crate::event::{DeltaRef, Done, EventRef, Failure, ToolCall};

/// The part in progress that a part of another kind closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Open {
    #[default]
    None,
    /// Text part number N (`text-N`).
    Text(u32),
    /// Reasoning part number N (`reasoning-N`).
    Reasoning(u32),
}

/// A tool call as streamed so far.
#[derive(Debug)]
struct Call {
    /// The upstream's call index, which later fragments name.
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
pub struct Encoder {
    started: bool,
    ended: bool,
    open: Open,
    /// Text and reasoning parts opened so far (the next one's number).
    texts: u32,
    reasonings: u32,
    calls: Vec<Call>,
}

impl super::dialect::Encoder for Encoder {
    fn event(&mut self, out: &mut Out<'_>, ctx: &Ctx, event: EventRef<'_>) {
        if self.ended {
            return;
        }
        if !self.started {
            self.started = true;
            out.emit(None, |buf, _| {
                buf.put_slice(b"{\"type\":\"start\",\"messageId\":");
                put_json_str(buf, &message_id(&ctx.stream_id));
                buf.put_u8(b'}');
            });
            out.emit(None, |buf, _| buf.put_slice(b"{\"type\":\"start-step\"}"));
        }
        match event {
            EventRef::Delta(d) if d.choice == 0 => self.delta(out, ctx, &d),
            EventRef::Delta(_) => {}
            EventRef::Done(done) => self.done(out, done),
            EventRef::Failed(f) => self.failed(out, f),
        }
    }

    fn body(&self, _ctx: &Ctx) -> Option<serde_json::Value> {
        None
    }
}

/// The assistant message's id: one per stream, the same on every replay.
pub(crate) fn message_id(stream_id: &str) -> String {
    format!("msg-{stream_id}")
}

impl Encoder {
    fn delta(&mut self, out: &mut Out<'_>, ctx: &Ctx, d: &DeltaRef<'_>) {
        // The writer splits deltas so that each holds one kind of output.
        if let Some(t) = d.reasoning.filter(|t| !t.is_empty()) {
            let n = match self.open {
                Open::Reasoning(n) => n,
                _ => {
                    self.close(out);
                    let n = self.reasonings;
                    self.reasonings += 1;
                    self.open = Open::Reasoning(n);
                    out.emit(None, |buf, _| {
                        part_id(buf, "reasoning-start", "reasoning-", n)
                    });
                    n
                }
            };
            out.emit(None, |buf, _| {
                text_delta(buf, "reasoning-delta", "reasoning-", n, t)
            });
        } else if let Some(c) = d.tool_calls.first() {
            self.close(out);
            self.tool_call(out, ctx, c);
        } else if let Some(t) = d.content.or(d.refusal).filter(|t| !t.is_empty()) {
            let n = match self.open {
                Open::Text(n) => n,
                _ => {
                    self.close(out);
                    let n = self.texts;
                    self.texts += 1;
                    self.open = Open::Text(n);
                    out.emit(None, |buf, _| part_id(buf, "text-start", "text-", n));
                    n
                }
            };
            out.emit(None, |buf, _| text_delta(buf, "text-delta", "text-", n, t));
        }
    }

    fn tool_call(&mut self, out: &mut Out<'_>, ctx: &Ctx, c: &ToolCall) {
        let args = c.arguments.as_deref().unwrap_or("");
        // A fragment with an id (or a name) starts a call; the others continue the last call
        // with their index.
        let existing = self.calls.iter().rposition(|k| k.index == c.index);
        let pos = match existing {
            Some(p) if c.id.is_none() && c.name.is_none() => p,
            _ => {
                let id =
                    c.id.clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| format!("call-{}-{}", ctx.stream_id, self.calls.len()));
                self.calls.push(Call {
                    index: c.index,
                    id,
                    name: c.name.clone().unwrap_or_default(),
                    arguments: String::new(),
                });
                let call = &self.calls[self.calls.len() - 1];
                out.emit(None, |buf, _| {
                    buf.put_slice(b"{\"type\":\"tool-input-start\",\"toolCallId\":");
                    put_json_str(buf, &call.id);
                    buf.put_slice(b",\"toolName\":");
                    put_json_str(buf, &call.name);
                    buf.put_u8(b'}');
                });
                self.calls.len() - 1
            }
        };
        if args.is_empty() {
            return;
        }
        let call = &mut self.calls[pos];
        call.arguments.push_str(args);
        let id = call.id.as_str();
        out.emit(None, |buf, _| {
            buf.put_slice(b"{\"type\":\"tool-input-delta\",\"toolCallId\":");
            put_json_str(buf, id);
            buf.put_slice(b",\"inputTextDelta\":");
            put_json_str(buf, args);
            buf.put_u8(b'}');
        });
    }

    /// Ends the text or reasoning part in progress.
    fn close(&mut self, out: &mut Out<'_>) {
        match std::mem::take(&mut self.open) {
            Open::None => {}
            Open::Text(n) => out.emit(None, |buf, _| part_id(buf, "text-end", "text-", n)),
            Open::Reasoning(n) => {
                out.emit(None, |buf, _| {
                    part_id(buf, "reasoning-end", "reasoning-", n)
                });
            }
        }
    }

    fn done(&mut self, out: &mut Out<'_>, done: &Done) {
        self.close(out);
        self.ended = true;
        let reason = done
            .finish_reasons
            .iter()
            .find(|(c, _)| *c == 0)
            .map_or("stop", |(_, r)| r.as_str());
        if reason == "cancelled" {
            out.emit(None, |buf, _| buf.put_slice(b"{\"type\":\"abort\"}"));
        } else {
            for call in &self.calls {
                tool_input_end(out, call);
            }
            out.emit(None, |buf, _| buf.put_slice(b"{\"type\":\"finish-step\"}"));
            let reason = finish_reason(reason);
            out.emit(None, |buf, _| {
                buf.put_slice(b"{\"type\":\"finish\",\"finishReason\":\"");
                buf.put_slice(reason.as_bytes());
                buf.put_slice(b"\"}");
            });
        }
        out.emit(None, |buf, _| buf.put_slice(b"[DONE]"));
    }

    fn failed(&mut self, out: &mut Out<'_>, f: &Failure) {
        self.close(out);
        self.ended = true;
        out.emit(None, |buf, _| {
            buf.put_slice(b"{\"type\":\"error\",\"errorText\":");
            put_json_str(buf, &f.message);
            buf.put_u8(b'}');
        });
        out.emit(None, |buf, _| buf.put_slice(b"[DONE]"));
    }
}

/// A finished tool call: `tool-input-available` with its arguments as JSON (no arguments: `{}`),
/// or `tool-input-error` with them as text when they are not JSON (the SDK's own answer to a
/// model's malformed input).
fn tool_input_end(out: &mut Out<'_>, call: &Call) {
    let raw = call.arguments.trim();
    let input: Option<&str> = if raw.is_empty() {
        Some("{}")
    } else {
        serde_json::from_str::<&RawValue>(raw).ok().map(|_| raw)
    };
    out.emit(None, |buf, _| {
        let kind: &[u8] = if input.is_some() {
            b"tool-input-available"
        } else {
            b"tool-input-error"
        };
        buf.put_slice(b"{\"type\":\"");
        buf.put_slice(kind);
        buf.put_slice(b"\",\"toolCallId\":");
        put_json_str(buf, &call.id);
        buf.put_slice(b",\"toolName\":");
        put_json_str(buf, &call.name);
        buf.put_slice(b",\"input\":");
        match input {
            // Validated JSON, written as the model wrote it.
            Some(json) => buf.put_slice(json.as_bytes()),
            None => {
                put_json_str(buf, &call.arguments);
                buf.put_slice(b",\"errorText\":\"the tool call's arguments are not valid JSON\"");
            }
        }
        buf.put_u8(b'}');
    });
}

/// OpenAI's finish reasons in the AI SDK's vocabulary.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "stop" => "stop",
        "length" => "length",
        "tool_calls" | "function_call" => "tool-calls",
        "content_filter" => "content-filter",
        _ => "other",
    }
}

/// `{"type":KIND,"id":"PREFIXN"}`.
fn part_id(buf: &mut BytesMut, kind: &str, prefix: &str, n: u32) {
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(kind.as_bytes());
    buf.put_slice(b"\",\"id\":\"");
    buf.put_slice(prefix.as_bytes());
    buf.put_slice(itoa_buf(u64::from(n)).as_str().as_bytes());
    buf.put_u8(b'"');
    buf.put_u8(b'}');
}

/// `{"type":KIND,"id":"PREFIXN","delta":TEXT}`: the hot path, written without a serializer.
fn text_delta(buf: &mut BytesMut, kind: &str, prefix: &str, n: u32, text: &str) {
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(kind.as_bytes());
    buf.put_slice(b"\",\"id\":\"");
    buf.put_slice(prefix.as_bytes());
    buf.put_slice(itoa_buf(u64::from(n)).as_str().as_bytes());
    buf.put_slice(b"\",\"delta\":");
    put_json_str(buf, text);
    buf.put_u8(b'}');
}

#[cfg(test)]
mod tests {
    use super::super::dialect::State;
    use super::super::Format;
    use super::*;
    use crate::event::{Delta, Event, Meta, Usage};

    const SID: &str = "AbCdEfGhIjKlMnOpQrStUv";

    fn ctx() -> Ctx {
        Ctx {
            stream_id: SID.into(),
            meta: Meta {
                id: "chatcmpl-1".into(),
                model: "m".into(),
                created: 7,
                system_fingerprint: None,
            },
        }
    }

    /// The wire bytes of `events` for a reader from wire event `from`.
    fn wire_from(events: &[Event], from: u64) -> String {
        let mut st = State::new(Format::UiMessage, ctx(), from).expect("a dialect");
        let mut buf = BytesMut::new();
        for e in events {
            st.encode(&mut buf, e.view());
        }
        String::from_utf8(buf.to_vec()).expect("utf-8")
    }

    fn wire(events: &[Event]) -> String {
        wire_from(events, 0)
    }

    fn text(t: &str) -> Event {
        Event::Delta(Delta::text(0, t))
    }

    fn reasoning(t: &str) -> Event {
        Event::Delta(Delta {
            reasoning: Some(t.into()),
            ..Delta::default()
        })
    }

    fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Event {
        Event::Delta(Delta {
            tool_calls: vec![ToolCall {
                index,
                id: id.map(Into::into),
                name: name.map(Into::into),
                arguments: Some(args.into()),
            }],
            ..Delta::default()
        })
    }

    fn done(reason: &str) -> Event {
        Event::Done(Done {
            finish_reasons: vec![(0, reason.into())],
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5,
                ..Usage::default()
            }),
        })
    }

    #[test]
    fn text_golden() {
        let got = wire(&[text("Hel"), text("lo \"you\"\n"), done("stop")]);
        assert_eq!(
            got,
            "data: {\"type\":\"start\",\"messageId\":\"msg-AbCdEfGhIjKlMnOpQrStUv\"}\n\n\
             data: {\"type\":\"start-step\"}\n\n\
             data: {\"type\":\"text-start\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"text-0\",\"delta\":\"Hel\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"text-0\",\"delta\":\"lo \\\"you\\\"\\n\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"finish\",\"finishReason\":\"stop\"}\n\n\
             data: [DONE]\n\n"
        );
    }

    #[test]
    fn reasoning_then_text_golden() {
        let got = wire(&[reasoning("hmm"), text("Hi"), done("length")]);
        assert_eq!(
            got,
            "data: {\"type\":\"start\",\"messageId\":\"msg-AbCdEfGhIjKlMnOpQrStUv\"}\n\n\
             data: {\"type\":\"start-step\"}\n\n\
             data: {\"type\":\"reasoning-start\",\"id\":\"reasoning-0\"}\n\n\
             data: {\"type\":\"reasoning-delta\",\"id\":\"reasoning-0\",\"delta\":\"hmm\"}\n\n\
             data: {\"type\":\"reasoning-end\",\"id\":\"reasoning-0\"}\n\n\
             data: {\"type\":\"text-start\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"text-0\",\"delta\":\"Hi\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"finish\",\"finishReason\":\"length\"}\n\n\
             data: [DONE]\n\n"
        );
    }

    #[test]
    fn tool_calls_golden() {
        let got = wire(&[
            text("Let me look."),
            call(0, Some("call_1"), Some("weather"), ""),
            call(0, None, None, "{\"city\":"),
            call(0, None, None, "\"Paris\"}"),
            call(1, Some("call_2"), Some("time"), ""),
            done("tool_calls"),
        ]);
        assert_eq!(
            got,
            "data: {\"type\":\"start\",\"messageId\":\"msg-AbCdEfGhIjKlMnOpQrStUv\"}\n\n\
             data: {\"type\":\"start-step\"}\n\n\
             data: {\"type\":\"text-start\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"text-0\",\"delta\":\"Let me look.\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"tool-input-start\",\"toolCallId\":\"call_1\",\"toolName\":\"weather\"}\n\n\
             data: {\"type\":\"tool-input-delta\",\"toolCallId\":\"call_1\",\"inputTextDelta\":\"{\\\"city\\\":\"}\n\n\
             data: {\"type\":\"tool-input-delta\",\"toolCallId\":\"call_1\",\"inputTextDelta\":\"\\\"Paris\\\"}\"}\n\n\
             data: {\"type\":\"tool-input-start\",\"toolCallId\":\"call_2\",\"toolName\":\"time\"}\n\n\
             data: {\"type\":\"tool-input-available\",\"toolCallId\":\"call_1\",\"toolName\":\"weather\",\"input\":{\"city\":\"Paris\"}}\n\n\
             data: {\"type\":\"tool-input-available\",\"toolCallId\":\"call_2\",\"toolName\":\"time\",\"input\":{}}\n\n\
             data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"finish\",\"finishReason\":\"tool-calls\"}\n\n\
             data: [DONE]\n\n"
        );
    }

    #[test]
    fn malformed_tool_arguments_are_a_tool_input_error() {
        let got = wire(&[call(0, Some("c"), Some("f"), "{\"a\":"), done("tool_calls")]);
        assert!(
            got.contains(
                "data: {\"type\":\"tool-input-error\",\"toolCallId\":\"c\",\"toolName\":\"f\",\"input\":\"{\\\"a\\\":\",\"errorText\":\"the tool call's arguments are not valid JSON\"}\n\n"
            ),
            "{got}"
        );
    }

    #[test]
    fn failure_golden() {
        let failed = Event::Failed(Failure {
            message: "upstream went away".into(),
            kind: "upstream_error".into(),
            code: None,
            finish_reasons: vec![],
        });
        let got = wire(&[text("Hi"), failed]);
        assert_eq!(
            got,
            "data: {\"type\":\"start\",\"messageId\":\"msg-AbCdEfGhIjKlMnOpQrStUv\"}\n\n\
             data: {\"type\":\"start-step\"}\n\n\
             data: {\"type\":\"text-start\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"text-0\",\"delta\":\"Hi\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"error\",\"errorText\":\"upstream went away\"}\n\n\
             data: [DONE]\n\n"
        );
    }

    #[test]
    fn cancelled_golden() {
        let got = wire(&[text("Hi"), done("cancelled")]);
        assert_eq!(
            got,
            "data: {\"type\":\"start\",\"messageId\":\"msg-AbCdEfGhIjKlMnOpQrStUv\"}\n\n\
             data: {\"type\":\"start-step\"}\n\n\
             data: {\"type\":\"text-start\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"text-delta\",\"id\":\"text-0\",\"delta\":\"Hi\"}\n\n\
             data: {\"type\":\"text-end\",\"id\":\"text-0\"}\n\n\
             data: {\"type\":\"abort\"}\n\n\
             data: [DONE]\n\n"
        );
    }

    #[test]
    fn an_end_before_any_token_still_starts_the_message() {
        assert_eq!(
            wire(&[done("content_filter")]),
            "data: {\"type\":\"start\",\"messageId\":\"msg-AbCdEfGhIjKlMnOpQrStUv\"}\n\n\
             data: {\"type\":\"start-step\"}\n\n\
             data: {\"type\":\"finish-step\"}\n\n\
             data: {\"type\":\"finish\",\"finishReason\":\"content-filter\"}\n\n\
             data: [DONE]\n\n"
        );
    }

    #[test]
    fn other_choices_and_empty_text_write_nothing() {
        let other = Event::Delta(Delta::text(1, "elsewhere"));
        let got = wire(&[other, text(""), text("A"), done("stop")]);
        assert!(!got.contains("elsewhere"), "{got}");
        assert_eq!(got.matches("text-start").count(), 1, "{got}");
    }

    #[test]
    fn every_position_replays_the_same_bytes() {
        let events = [
            reasoning("r"),
            text("a"),
            call(0, Some("c"), Some("f"), "{}"),
            text("b"),
            done("stop"),
        ];
        let whole = wire(&events);
        let parts: Vec<&str> = whole.split_inclusive("\n\n").collect();
        for from in 0..=parts.len() as u64 {
            let expect: String = parts[from as usize..].concat();
            assert_eq!(wire_from(&events, from), expect, "from {from}");
        }
        // Text after a tool call is a new text part.
        assert!(whole.contains("\"id\":\"text-1\""), "{whole}");
    }

    /// One log event of a random answer: text, reasoning or a tool-call fragment.
    fn arb_delta() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z \"\\\n]{0,6}".prop_map(|t| text(&t)),
            "[a-z ]{1,4}".prop_map(|t| reasoning(&t)),
            (0u32..2, proptest::bool::ANY, "[{}a-z:\"0-9]{0,5}").prop_map(|(i, first, a)| {
                if first {
                    call(i, Some(&format!("c{i}")), Some("f"), &a)
                } else {
                    call(i, None, None, &a)
                }
            }),
        ]
    }

    fn arb_end() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            Just(done("stop")),
            Just(done("tool_calls")),
            Just(done("cancelled")),
            Just(Event::Failed(Failure {
                message: "gone".into(),
                kind: "upstream_error".into(),
                ..Failure::default()
            })),
        ]
    }

    proptest::proptest! {
        /// Any answer: every part is one `data:` line of JSON with a type (or the final
        /// `[DONE]`), text and reasoning deltas fall inside their part's start and end, and a
        /// reader from any position gets exactly the rest of the bytes.
        #[test]
        fn any_answer_is_well_formed_and_replays_from_any_position(
            deltas in proptest::collection::vec(arb_delta(), 0..12),
            end in arb_end(),
        ) {
            let mut events = deltas;
            events.push(end);
            let whole = wire(&events);
            let parts: Vec<&str> = whole.split_inclusive("\n\n").collect();
            proptest::prop_assert_eq!(parts.last().copied(), Some("data: [DONE]\n\n"));
            let mut open: Option<String> = None;
            for p in &parts[..parts.len() - 1] {
                let data = p.strip_prefix("data: ").and_then(|d| d.strip_suffix("\n\n"));
                let v: serde_json::Value = serde_json::from_str(data.expect("a data line")).expect("JSON");
                let kind = v["type"].as_str().expect("a type").to_owned();
                let id = v["id"].as_str().map(str::to_owned);
                if kind.ends_with("-start") && id.is_some() {
                    proptest::prop_assert!(open.is_none(), "{whole}");
                    open = id;
                } else if kind.ends_with("-delta") && !kind.starts_with("tool") {
                    proptest::prop_assert_eq!(&open, &id, "{}", whole);
                } else if kind.ends_with("-end") {
                    proptest::prop_assert_eq!(open.take(), id, "{}", whole);
                } else {
                    proptest::prop_assert!(open.is_none(), "{kind} inside a part: {whole}");
                }
            }
            for from in 0..=parts.len() as u64 {
                let expect: String = parts[from as usize..].concat();
                proptest::prop_assert_eq!(wire_from(&events, from), expect);
            }
        }
    }
}
