//! The Anthropic Messages dialect: the event stream the Anthropic SDKs, the AI SDK's Anthropic
//! provider and Claude Code read, folded from the relay log.
//!
//! ```text
//! message_start, ping,
//!   (content_block_start, content_block_delta*, content_block_stop)*   one block per run of
//!                                                                       one kind (or one call)
//! message_delta (stop_reason, cumulative usage), message_stop
//! ```
//!
//! A failure after the start is `event: error` with Anthropic's error shape and nothing after
//! it: never a `message_stop`, which the SDKs would take for a clean end. Every event carries its
//! `event:` line (the SDKs dispatch on it and drop data without one) and its `id:` (from 1), so
//! a client resumes with `Last-Event-ID`. The message id is `msg_` and 24 hex digits of the
//! SHA-256 of the stream ID: the same on every replay, and no help in finding the stream.

use bytes::BufMut;
use serde_json::{json, Map, Value};

use super::dialect::{Ctx, Out};
use super::{itoa_buf, put_json_str};
use crate::event::{DeltaRef, Done, EventRef, Failure, Usage};

/// The message id of a stream: `msg_` and 24 hex digits of the SHA-256 of its ID.
pub fn message_id(stream_id: &str) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(stream_id.as_bytes());
    let mut s = String::with_capacity(28);
    s.push_str("msg_");
    for b in &digest[..12] {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// Anthropic's `stop_reason` for an OpenAI finish reason.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        // `stop`, a cancel (the stop button), anything else: the turn ended.
        _ => "end_turn",
    }
}

/// Anthropic's error `type` for a failure in OpenAI's vocabulary (an Anthropic upstream's own
/// type is kept).
pub fn error_type(f: &Failure) -> &'static str {
    const OWN: [&str; 9] = [
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    ];
    if let Some(own) = OWN.iter().find(|t| **t == f.kind) {
        return own;
    }
    let code = f.code.as_deref().unwrap_or("");
    if f.kind == "tokens" || code == "rate_limit_exceeded" || f.kind.contains("rate_limit") {
        "rate_limit_error"
    } else if f.kind == "server_shutdown" || code == "overloaded" || f.kind.contains("overloaded") {
        "overloaded_error"
    } else if f.kind == "upstream_timeout" {
        "timeout_error"
    } else {
        "api_error"
    }
}

/// What a content block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    /// A tool call, by its index among the choice's calls.
    Tool(u32),
}

/// One content block, for the non-streaming message.
#[derive(Debug)]
enum Block {
    Text(String),
    Thinking(String),
    ToolUse {
        id: String,
        name: String,
        input: String,
    },
}

#[derive(Debug, Default)]
pub struct Encoder {
    /// `message_start` and `ping` are out.
    started: bool,
    /// The open block's kind; its index is `blocks.len() - 1`.
    open: Option<Kind>,
    /// Every block so far, open or closed: their count is the next block's index.
    blocks: Vec<Block>,
    /// Set by the terminal event.
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
}

impl Encoder {
    fn start(&mut self, out: &mut Out<'_>, ctx: &Ctx) {
        if self.started {
            return;
        }
        self.started = true;
        out.emit(Some("message_start"), |buf, _| {
            buf.put_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":");
            put_json_str(buf, &message_id(&ctx.stream_id));
            buf.put_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
            put_json_str(buf, &ctx.meta.model);
            // The prompt's count comes with the end (an OpenAI-compatible upstream says it
            // last); `message_delta` carries it, and the SDKs take it from there.
            buf.put_slice(
                b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\
                  \"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}",
            );
        });
        out.emit(Some("ping"), |buf, _| buf.put_slice(b"{\"type\":\"ping\"}"));
    }

    /// Closes the open block, if any.
    fn close(&mut self, out: &mut Out<'_>) {
        let Some(kind) = self.open.take() else {
            return;
        };
        let index = self.blocks.len() as u64 - 1;
        match kind {
            // Where a thinking block's `signature_delta` goes (before its stop), once the log
            // carries one.
            Kind::Thinking => {}
            Kind::Text | Kind::Tool(_) => {}
        }
        out.emit(Some("content_block_stop"), |buf, _| {
            buf.put_slice(b"{\"type\":\"content_block_stop\",\"index\":");
            buf.put_slice(itoa_buf(index).as_str().as_bytes());
            buf.put_u8(b'}');
        });
    }

    /// Opens a block of `kind` (closing the open one): `content_block_start`.
    fn open(&mut self, out: &mut Out<'_>, kind: Kind, block: Block) {
        self.close(out);
        let index = self.blocks.len() as u64;
        out.emit(Some("content_block_start"), |buf, _| {
            buf.put_slice(b"{\"type\":\"content_block_start\",\"index\":");
            buf.put_slice(itoa_buf(index).as_str().as_bytes());
            buf.put_slice(b",\"content_block\":");
            match &block {
                Block::Text(_) => buf.put_slice(b"{\"type\":\"text\",\"text\":\"\"}}"),
                Block::Thinking(_) => {
                    buf.put_slice(b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}")
                }
                Block::ToolUse { id, name, .. } => {
                    buf.put_slice(b"{\"type\":\"tool_use\",\"id\":");
                    put_json_str(buf, id);
                    buf.put_slice(b",\"name\":");
                    put_json_str(buf, name);
                    buf.put_slice(b",\"input\":{}}}");
                }
            }
        });
        self.blocks.push(block);
        self.open = Some(kind);
    }

    /// `content_block_delta` of the open block: `{"type":DELTA,FIELD:text}`.
    fn delta(&mut self, out: &mut Out<'_>, delta: &str, field: &str, text: &str) {
        let index = self.blocks.len() as u64 - 1;
        match self.blocks.last_mut() {
            Some(Block::Text(t) | Block::Thinking(t)) => t.push_str(text),
            Some(Block::ToolUse { input, .. }) => input.push_str(text),
            None => {}
        }
        out.emit(Some("content_block_delta"), |buf, _| {
            buf.put_slice(b"{\"type\":\"content_block_delta\",\"index\":");
            buf.put_slice(itoa_buf(index).as_str().as_bytes());
            buf.put_slice(b",\"delta\":{\"type\":\"");
            buf.put_slice(delta.as_bytes());
            buf.put_slice(b"\",\"");
            buf.put_slice(field.as_bytes());
            buf.put_slice(b"\":");
            put_json_str(buf, text);
            buf.put_slice(b"}}");
        });
    }

    fn on_delta(&mut self, out: &mut Out<'_>, d: &DeltaRef<'_>) {
        if let Some(t) = d.reasoning.filter(|t| !t.is_empty()) {
            if self.open != Some(Kind::Thinking) {
                self.open(out, Kind::Thinking, Block::Thinking(String::new()));
            }
            self.delta(out, "thinking_delta", "thinking", t);
        } else if let Some(c) = d.tool_calls.first() {
            let kind = Kind::Tool(c.index);
            // A new call: another index, or another id (some servers repeat a call's id on
            // every fragment: the same id is the same call).
            let same_id = match (self.blocks.last(), c.id.as_deref()) {
                (_, None) => true,
                (Some(Block::ToolUse { id, .. }), Some(new)) => id == new,
                _ => false,
            };
            if self.open.as_ref() != Some(&kind) || !same_id {
                let id = c.id.clone().unwrap_or_else(|| {
                    // A fragment of a call whose start the upstream never sent: an id of our
                    // own, stable for the stream.
                    format!("toolu_{}", self.blocks.len())
                });
                let name = c.name.clone().unwrap_or_default();
                self.open(
                    out,
                    kind,
                    Block::ToolUse {
                        id,
                        name,
                        input: String::new(),
                    },
                );
            }
            if let Some(args) = c.arguments.as_deref().filter(|a| !a.is_empty()) {
                self.delta(out, "input_json_delta", "partial_json", args);
            }
        } else if let Some(t) = d.content.or(d.refusal).filter(|t| !t.is_empty()) {
            if self.open != Some(Kind::Text) {
                self.open(out, Kind::Text, Block::Text(String::new()));
            }
            self.delta(out, "text_delta", "text", t);
        }
    }

    fn on_done(&mut self, out: &mut Out<'_>, done: &Done) {
        self.close(out);
        let reason = done
            .finish_reasons
            .iter()
            .find(|(choice, _)| *choice == 0)
            .map_or("stop", |(_, r)| r.as_str());
        let stop = stop_reason(reason);
        self.stop_reason = Some(stop);
        self.usage = done.usage;
        let usage = usage_json(done.usage.as_ref());
        out.emit(Some("message_delta"), |buf, _| {
            buf.put_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
            buf.put_slice(stop.as_bytes());
            buf.put_slice(b"\",\"stop_sequence\":null},\"usage\":");
            buf.put_slice(usage.to_string().as_bytes());
            buf.put_u8(b'}');
        });
        out.emit(Some("message_stop"), |buf, _| {
            buf.put_slice(b"{\"type\":\"message_stop\"}");
        });
    }
}

/// Anthropic's usage for OpenAI's: `input_tokens` leaves out the cached part, which is
/// `cache_read_input_tokens`.
fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
    let mut m = Map::new();
    m.insert(
        "input_tokens".into(),
        u.prompt_tokens.saturating_sub(cached).into(),
    );
    if cached > 0 {
        m.insert("cache_read_input_tokens".into(), cached.into());
    }
    m.insert("output_tokens".into(), u.completion_tokens.into());
    Value::Object(m)
}

/// `{"type":"error","error":{"type":...,"message":...}}`: the error event's data, and the body
/// of an error response.
pub fn error_json(kind: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}

impl super::dialect::Encoder for Encoder {
    fn event(&mut self, out: &mut Out<'_>, ctx: &Ctx, event: EventRef<'_>) {
        match event {
            EventRef::Delta(d) if d.choice != 0 => {}
            EventRef::Delta(d) => {
                self.start(out, ctx);
                self.on_delta(out, &d);
            }
            EventRef::Done(done) => {
                self.start(out, ctx);
                self.on_done(out, done);
            }
            // Nothing after it: the SDKs raise on `error`, and a `message_stop` would be a
            // clean end. No `message_start` either when nothing had started.
            EventRef::Failed(f) => {
                let body = error_json(error_type(f), &f.message);
                out.emit(Some("error"), |buf, _| {
                    buf.put_slice(body.to_string().as_bytes());
                });
            }
        }
    }

    fn body(&self, ctx: &Ctx) -> Option<Value> {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .map(|b| match b {
                Block::Text(t) => json!({ "type": "text", "text": t }),
                Block::Thinking(t) => json!({ "type": "thinking", "thinking": t, "signature": "" }),
                Block::ToolUse { id, name, input } => {
                    let input = if input.trim().is_empty() {
                        json!({})
                    } else {
                        // Arguments that are not JSON (a model's slip) are kept as a string
                        // rather than lost.
                        serde_json::from_str(input).unwrap_or_else(|_| Value::String(input.clone()))
                    };
                    json!({ "type": "tool_use", "id": id, "name": name, "input": input })
                }
            })
            .collect();
        Some(json!({
            "id": message_id(&ctx.stream_id),
            "type": "message",
            "role": "assistant",
            "model": ctx.meta.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": usage_json(self.usage.as_ref()),
        }))
    }
}

#[cfg(test)]
mod tests;
