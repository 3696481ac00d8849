//! The OpenAI Responses API dialect: the log as `response.*` events, as OpenAI sends them.
//!
//! `response.created` and `response.in_progress` open the stream (on the first log event,
//! whatever it is). Each run of one kind of output is an output item: reasoning a `reasoning`
//! item with one summary part (`response.reasoning_summary_*`), text a `message` item with one
//! `output_text` part (a refusal one `refusal` part), each tool call a `function_call` item
//! with its argument deltas. An item is opened by `response.output_item.added` and closed, when
//! the kind of output changes or the stream ends, by its `.done` events ending with
//! `response.output_item.done` carrying the whole item (Codex prints that, not the deltas).
//! Exactly one terminal event follows the last item: `response.completed` (with `usage`),
//! `response.incomplete` (finish `length` → `max_output_tokens`, `content_filter`, and
//! `cancelled` (the stream was cancelled: the response's `status` is `cancelled`, as OpenAI's
//! own cancelled responses are)), or `response.failed` (a failure after the start, with
//! `error`). Every event has its `event:` line and a `sequence_number` from 0, which is also
//! its `id:`. There is no `[DONE]`.
//!
//! Ids derive from the stream ID, so replays are identical and each id leads back to its
//! stream: `resp_<stream>` for the response, `msg_<stream>_<n>`, `rs_<stream>_<n>` and
//! `fc_<stream>_<n>` for output item `n`; a function call's `call_id` is the upstream's tool
//! call id (else `call_<stream>_<n>`). A tool name written `namespace.name` in the log (the
//! gateway maps a flattened namespace tool back to that) is sent as `name` with `namespace`.
//!
//! The response object carries no `output_text`: the SDKs compute it from `output` (the Python
//! SDK's is a property of its `Response` model, and a field of that name would shadow it).

use bytes::{BufMut, BytesMut};
use serde_json::{json, Map, Value};

use super::dialect::{Ctx, Out};
use super::{itoa_buf, put_json, put_json_str};
use crate::event::{EventRef, Usage};

/// The prefix of every response id; the rest is the stream ID.
pub const RESPONSE_ID_PREFIX: &str = "resp_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reasoning,
    Text,
    Refusal,
    /// A function call, by the upstream's tool call index.
    Call(u32),
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    id: String,
    /// The reasoning, text, refusal or arguments so far.
    text: String,
    /// Function calls: `call_id`, `name`, `namespace`.
    call_id: String,
    name: String,
    namespace: Option<String>,
    /// `completed` once closed at a clean end, `incomplete` once closed otherwise.
    status: &'static str,
}

#[derive(Debug, Clone)]
enum End {
    Completed,
    Incomplete(&'static str),
    Cancelled,
    Failed { code: String, message: String },
}

#[derive(Debug, Default)]
pub struct Encoder {
    started: bool,
    items: Vec<Item>,
    /// The index of the open item, if one is open.
    open: Option<usize>,
    usage: Option<Usage>,
    end: Option<End>,
}

fn item_id(ctx: &Ctx, prefix: &str, n: usize) -> String {
    format!("{prefix}_{}_{n}", ctx.stream_id)
}

impl Encoder {
    fn status(&self) -> &'static str {
        match &self.end {
            None => "in_progress",
            Some(End::Completed) => "completed",
            Some(End::Incomplete(_)) => "incomplete",
            Some(End::Cancelled) => "cancelled",
            Some(End::Failed { .. }) => "failed",
        }
    }

    /// The response object as it stands; `with_output` false for the opening events (whose
    /// output is empty).
    fn response(&self, ctx: &Ctx, with_output: bool) -> Value {
        let output: Vec<Value> = if with_output {
            self.items.iter().map(|i| item_json(i, true)).collect()
        } else {
            Vec::new()
        };
        let incomplete = match &self.end {
            Some(End::Incomplete(reason)) => json!({ "reason": reason }),
            Some(End::Cancelled) => json!({ "reason": "cancelled" }),
            _ => Value::Null,
        };
        let error = match &self.end {
            Some(End::Failed { code, message }) => json!({ "code": code, "message": message }),
            _ => Value::Null,
        };
        let usage = match (&self.end, &self.usage) {
            (None, _) => Value::Null,
            (Some(_), u) => usage_json(u.as_ref()),
        };
        json!({
            "id": format!("{RESPONSE_ID_PREFIX}{}", ctx.stream_id),
            "object": "response",
            "created_at": ctx.meta.created,
            "status": self.status(),
            "background": false,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": null,
            "max_output_tokens": null,
            "model": ctx.meta.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": { "effort": null, "summary": null },
            "store": true,
            "temperature": null,
            "text": { "format": { "type": "text" } },
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    }

    /// Closes the open item, if any, emitting its `.done` events.
    fn close(&mut self, out: &mut Out<'_>, status: &'static str) {
        let Some(n) = self.open.take() else { return };
        self.items[n].status = status;
        let item = &self.items[n];
        match item.kind {
            Kind::Reasoning => {
                out.emit(Some("response.reasoning_summary_text.done"), |buf, seq| {
                    head(buf, "response.reasoning_summary_text.done", seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(b",\"summary_index\":0,\"text\":");
                    put_json_str(buf, &item.text);
                    buf.put_u8(b'}');
                });
                out.emit(Some("response.reasoning_summary_part.done"), |buf, seq| {
                    head(buf, "response.reasoning_summary_part.done", seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(b",\"summary_index\":0,\"part\":");
                    put_json(buf, &json!({ "type": "summary_text", "text": item.text }));
                    buf.put_u8(b'}');
                });
            }
            Kind::Text | Kind::Refusal => {
                let (name, field) = if item.kind == Kind::Text {
                    ("response.output_text.done", "text")
                } else {
                    ("response.refusal.done", "refusal")
                };
                out.emit(Some(name), |buf, seq| {
                    head(buf, name, seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(b",\"content_index\":0,\"");
                    buf.put_slice(field.as_bytes());
                    buf.put_slice(b"\":");
                    put_json_str(buf, &item.text);
                    if item.kind == Kind::Text {
                        buf.put_slice(b",\"logprobs\":[]");
                    }
                    buf.put_u8(b'}');
                });
                out.emit(Some("response.content_part.done"), |buf, seq| {
                    head(buf, "response.content_part.done", seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(b",\"content_index\":0,\"part\":");
                    put_json(buf, &part_json(item, true));
                    buf.put_u8(b'}');
                });
            }
            Kind::Call(_) => {
                out.emit(Some("response.function_call_arguments.done"), |buf, seq| {
                    head(buf, "response.function_call_arguments.done", seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(b",\"name\":");
                    put_json_str(buf, &item.name);
                    buf.put_slice(b",\"arguments\":");
                    put_json_str(buf, &item.text);
                    buf.put_u8(b'}');
                });
            }
        }
        out.emit(Some("response.output_item.done"), |buf, seq| {
            head(buf, "response.output_item.done", seq);
            buf.put_slice(b",\"output_index\":");
            buf.put_slice(itoa_buf(n as u64).as_str().as_bytes());
            buf.put_slice(b",\"item\":");
            put_json(buf, &item_json(item, true));
            buf.put_u8(b'}');
        });
    }

    /// Opens item `kind`, emitting `response.output_item.added` (and the part's `.added`).
    fn open(&mut self, out: &mut Out<'_>, ctx: &Ctx, kind: Kind, call: Option<(&str, &str)>) {
        let n = self.items.len();
        let (id, call_id, name, namespace) = match kind {
            Kind::Reasoning => (item_id(ctx, "rs", n), String::new(), String::new(), None),
            Kind::Text | Kind::Refusal => {
                (item_id(ctx, "msg", n), String::new(), String::new(), None)
            }
            Kind::Call(_) => {
                let (upstream_id, full_name) = call.unwrap_or(("", ""));
                let call_id = if upstream_id.is_empty() {
                    item_id(ctx, "call", n)
                } else {
                    upstream_id.to_owned()
                };
                // `namespace.name`: a function of a namespace tool (see the module doc). A
                // function's own name cannot hold a dot (OpenAI's `^[a-zA-Z0-9_-]+$`).
                let (namespace, name) = match full_name.split_once('.') {
                    Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                        (Some(ns.to_owned()), name.to_owned())
                    }
                    _ => (None, full_name.to_owned()),
                };
                (item_id(ctx, "fc", n), call_id, name, namespace)
            }
        };
        self.items.push(Item {
            kind,
            id,
            text: String::new(),
            call_id,
            name,
            namespace,
            status: "in_progress",
        });
        self.open = Some(n);
        let item = &self.items[n];
        out.emit(Some("response.output_item.added"), |buf, seq| {
            head(buf, "response.output_item.added", seq);
            buf.put_slice(b",\"output_index\":");
            buf.put_slice(itoa_buf(n as u64).as_str().as_bytes());
            buf.put_slice(b",\"item\":");
            put_json(buf, &item_json(item, false));
            buf.put_u8(b'}');
        });
        match kind {
            Kind::Reasoning => {
                out.emit(Some("response.reasoning_summary_part.added"), |buf, seq| {
                    head(buf, "response.reasoning_summary_part.added", seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(
                        b",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}",
                    );
                })
            }
            Kind::Text | Kind::Refusal => {
                out.emit(Some("response.content_part.added"), |buf, seq| {
                    head(buf, "response.content_part.added", seq);
                    item_ref(buf, &item.id, n);
                    buf.put_slice(b",\"content_index\":0,\"part\":");
                    put_json(buf, &part_json(item, false));
                    buf.put_u8(b'}');
                })
            }
            Kind::Call(_) => {}
        }
    }

    /// Emits the terminal event (after closing the open item).
    fn finish(&mut self, out: &mut Out<'_>, ctx: &Ctx, end: End) {
        let item_status = if matches!(end, End::Completed) {
            "completed"
        } else {
            "incomplete"
        };
        self.close(out, item_status);
        self.end = Some(end);
        let name = match self.end {
            Some(End::Completed) => "response.completed",
            Some(End::Failed { .. }) => "response.failed",
            _ => "response.incomplete",
        };
        let this = &*self;
        out.emit(Some(name), |buf, seq| {
            head(buf, name, seq);
            buf.put_slice(b",\"response\":");
            put_json(buf, &this.response(ctx, true));
            buf.put_u8(b'}');
        });
    }
}

/// `{"type":"NAME","sequence_number":N` (the caller goes on with `,` and its fields).
fn head(buf: &mut BytesMut, name: &str, seq: u64) {
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\",\"sequence_number\":");
    buf.put_slice(itoa_buf(seq).as_str().as_bytes());
}

/// `,"item_id":"ID","output_index":N`.
fn item_ref(buf: &mut BytesMut, id: &str, n: usize) {
    buf.put_slice(b",\"item_id\":");
    put_json_str(buf, id);
    buf.put_slice(b",\"output_index\":");
    buf.put_slice(itoa_buf(n as u64).as_str().as_bytes());
}

fn part_json(item: &Item, full: bool) -> Value {
    let text = if full { item.text.as_str() } else { "" };
    if item.kind == Kind::Refusal {
        json!({ "type": "refusal", "refusal": text })
    } else {
        json!({ "type": "output_text", "annotations": [], "logprobs": [], "text": text })
    }
}

/// An output item: as opened (`full` false: no content yet) or as it stands.
fn item_json(item: &Item, full: bool) -> Value {
    let status = if full { item.status } else { "in_progress" };
    match item.kind {
        Kind::Reasoning => {
            let summary = if full {
                json!([{ "type": "summary_text", "text": item.text }])
            } else {
                json!([])
            };
            json!({ "id": item.id, "type": "reasoning", "summary": summary })
        }
        Kind::Text | Kind::Refusal => {
            let content = if full {
                json!([part_json(item, true)])
            } else {
                json!([])
            };
            json!({
                "id": item.id,
                "type": "message",
                "status": status,
                "content": content,
                "role": "assistant",
            })
        }
        Kind::Call(_) => {
            let mut m = Map::new();
            m.insert("id".into(), json!(item.id));
            m.insert("type".into(), json!("function_call"));
            m.insert("status".into(), json!(status));
            let args = if full { item.text.as_str() } else { "" };
            m.insert("arguments".into(), json!(args));
            m.insert("call_id".into(), json!(item.call_id));
            m.insert("name".into(), json!(item.name));
            if let Some(ns) = &item.namespace {
                m.insert("namespace".into(), json!(ns));
            }
            Value::Object(m)
        }
    }
}

/// The Responses API's usage: numeric counts always (zeros when the upstream sent none).
fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": u.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
        },
        "total_tokens": u.total_tokens,
    })
}

impl super::dialect::Encoder for Encoder {
    fn event(&mut self, out: &mut Out<'_>, ctx: &Ctx, event: EventRef<'_>) {
        if self.end.is_some() {
            return;
        }
        if !self.started {
            self.started = true;
            for name in ["response.created", "response.in_progress"] {
                let this = &*self;
                out.emit(Some(name), |buf, seq| {
                    head(buf, name, seq);
                    buf.put_slice(b",\"response\":");
                    put_json(buf, &this.response(ctx, false));
                    buf.put_u8(b'}');
                });
            }
        }
        match event {
            EventRef::Delta(d) => {
                if d.choice != 0 {
                    return;
                }
                let (kind, text, call) = if let Some(t) = d.reasoning {
                    (Kind::Reasoning, t, None)
                } else if let Some(c) = d.tool_calls.first() {
                    (
                        Kind::Call(c.index),
                        c.arguments.as_deref().unwrap_or(""),
                        Some(c),
                    )
                } else if let Some(t) = d.refusal {
                    (Kind::Refusal, t, None)
                } else if let Some(t) = d.content {
                    (Kind::Text, t, None)
                } else {
                    return;
                };
                let current = self.open.map(|n| self.items[n].kind);
                if current != Some(kind) {
                    // A fragment of a call already closed (an upstream interleaving parallel
                    // calls): its arguments join the item in the final object.
                    if let (Kind::Call(i), Some(c)) = (kind, call) {
                        if c.id.is_none() {
                            if let Some(item) =
                                self.items.iter_mut().find(|it| it.kind == Kind::Call(i))
                            {
                                item.text.push_str(text);
                                return;
                            }
                        }
                    }
                    // Empty text does not open an item (a role-only first delta, logprobs).
                    if text.is_empty() && call.is_none() {
                        return;
                    }
                    self.close(out, "completed");
                    let call = call.map(|c| {
                        (
                            c.id.as_deref().unwrap_or(""),
                            c.name.as_deref().unwrap_or(""),
                        )
                    });
                    self.open(out, ctx, kind, call);
                }
                if text.is_empty() {
                    return;
                }
                let Some(n) = self.open else { return };
                self.items[n].text.push_str(text);
                let item = &self.items[n];
                let name = match kind {
                    Kind::Reasoning => "response.reasoning_summary_text.delta",
                    Kind::Text => "response.output_text.delta",
                    Kind::Refusal => "response.refusal.delta",
                    Kind::Call(_) => "response.function_call_arguments.delta",
                };
                // The per-token path: written straight into the buffer.
                out.emit(Some(name), |buf, seq| {
                    head(buf, name, seq);
                    item_ref(buf, &item.id, n);
                    match kind {
                        Kind::Reasoning => buf.put_slice(b",\"summary_index\":0"),
                        Kind::Text | Kind::Refusal => buf.put_slice(b",\"content_index\":0"),
                        Kind::Call(_) => {}
                    }
                    buf.put_slice(b",\"delta\":");
                    put_json_str(buf, text);
                    if kind == Kind::Text {
                        buf.put_slice(b",\"logprobs\":[]");
                    }
                    buf.put_u8(b'}');
                });
            }
            EventRef::Done(done) => {
                self.usage = done.usage;
                let reason = done
                    .finish_reasons
                    .iter()
                    .find(|(c, _)| *c == 0)
                    .map_or("stop", |(_, r)| r.as_str());
                let end = match reason {
                    "length" => End::Incomplete("max_output_tokens"),
                    "content_filter" => End::Incomplete("content_filter"),
                    "cancelled" => End::Cancelled,
                    _ => End::Completed,
                };
                self.finish(out, ctx, end);
            }
            EventRef::Failed(f) => {
                let code = f.code.clone().unwrap_or_else(|| f.kind.clone());
                let end = End::Failed {
                    code,
                    message: f.message.clone(),
                };
                self.finish(out, ctx, end);
            }
        }
    }

    fn body(&self, ctx: &Ctx) -> Option<Value> {
        Some(self.response(ctx, true))
    }
}

#[cfg(test)]
mod tests;
