//! Messages stream events (each parsed once, borrowing from its data) to normalised events,
//! and a non-streaming message rewritten as an OpenAI `chat.completion`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::{
    ChoiceDelta, FinishReason, PromptTokensDetails, ResponseMeta, StreamEvent, ToolCallDelta, Usage,
};
use crate::provider::{Completion, StreamMapper};
use crate::AdapterError;

/// Anthropic's `stop_reason` in OpenAI's vocabulary.
pub(super) fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Anthropic's token counts. Absent or null fields leave the previous value.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(super) struct TokenCounts {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl TokenCounts {
    fn update(&mut self, newer: &TokenCounts) {
        // Every count in a later event is a running total, never an increment.
        let take = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        take(&mut self.input_tokens, newer.input_tokens);
        take(&mut self.output_tokens, newer.output_tokens);
        take(
            &mut self.cache_read_input_tokens,
            newer.cache_read_input_tokens,
        );
        take(
            &mut self.cache_creation_input_tokens,
            newer.cache_creation_input_tokens,
        );
    }

    fn usage(&self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        // The numbers are the upstream's: saturate rather than wrap (or panic in a debug build).
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(cache_read)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cache_read,
            }),
            completion_tokens_details: None,
        }
    }
}

/// One stream event's data; one struct for every event type, fields present as the type has them.
#[derive(Deserialize)]
pub(super) struct EventData<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<MessageStart<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<TokenCounts>,
    #[serde(borrow, default)]
    error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize)]
pub(super) struct MessageStart<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<TokenCounts>,
}

#[derive(Deserialize)]
pub(super) struct Block<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
}

/// A `content_block_delta`'s or a `message_delta`'s `delta`.
#[derive(Deserialize)]
pub(super) struct Delta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct ErrorBody<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// Most `tool_use` blocks one answer may carry. Each is tracked and looked up by its block index
/// on every delta: an upstream that opened blocks without end would make each event cost more
/// than the last (and grow the list without a bound). Far above what a model calls in one turn.
pub const MAX_TOOL_CALLS: usize = 1024;

/// A `tool_use` block of the stream.
pub(super) struct ToolBlock {
    /// Anthropic's content-block index (counts text and thinking blocks too).
    block: u64,
    /// The OpenAI tool-call index.
    index: u32,
    sent_arguments: bool,
}

/// Maps Anthropic's stream events to normalised events for the single choice 0.
#[derive(Default)]
pub(crate) struct StreamState {
    meta_sent: bool,
    counts: TokenCounts,
    tools: Vec<ToolBlock>,
    started: bool,
    finished: bool,
    stopped: bool,
}

pub(super) fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

pub(super) fn push_delta(out: &mut VecDeque<StreamEvent>, delta: ChoiceDelta) {
    if !delta.is_empty() {
        out.push_back(StreamEvent::Delta(delta));
    }
}

impl StreamState {
    fn tool(&mut self, block: Option<u64>) -> Option<&mut ToolBlock> {
        let block = block?;
        self.tools.iter_mut().find(|t| t.block == block)
    }

    fn tool_delta(index: u32, arguments: String) -> ChoiceDelta {
        ChoiceDelta {
            tool_calls: vec![ToolCallDelta {
                index,
                arguments: Some(arguments),
                ..ToolCallDelta::default()
            }],
            ..ChoiceDelta::default()
        }
    }
}

impl StreamMapper for StreamState {
    fn on_event(
        &mut self,
        event: &str,
        data: &str,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, AdapterError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        let ev: EventData<'_> = serde_json::from_str(data).map_err(|e| {
            AdapterError::Protocol(format!("an Anthropic stream event is not valid JSON ({e})"))
        })?;
        let kind = ev.kind.as_deref().unwrap_or(event);
        match kind {
            "message_start" => {
                self.started = true;
                if let Some(msg) = ev.message {
                    if let Some(u) = &msg.usage {
                        self.counts.update(u);
                    }
                    if !self.meta_sent {
                        self.meta_sent = true;
                        out.push_back(StreamEvent::Meta(ResponseMeta {
                            id: owned(msg.id),
                            model: owned(msg.model),
                            created: None,
                            system_fingerprint: None,
                        }));
                    }
                }
            }
            "content_block_start" => {
                self.started = true;
                let Some(block) = ev.content_block else {
                    return Ok(false);
                };
                match block.kind.as_deref() {
                    Some("text") => {
                        push_delta(out, ChoiceDelta::text(0, block.text.unwrap_or_default()))
                    }
                    // The block opens empty; a complete one (thinking and signature) is kept whole.
                    Some("thinking") => push_delta(
                        out,
                        ChoiceDelta {
                            reasoning: owned(block.thinking),
                            reasoning_signature: owned(block.signature),
                            ..ChoiceDelta::default()
                        },
                    ),
                    Some("tool_use") => {
                        if self.tools.len() >= MAX_TOOL_CALLS {
                            return Err(AdapterError::Protocol(format!(
                                "the upstream sent more than {MAX_TOOL_CALLS} tool calls"
                            )));
                        }
                        let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                        self.tools.push(ToolBlock {
                            block: ev.index.unwrap_or(u64::MAX),
                            index,
                            sent_arguments: false,
                        });
                        out.push_back(StreamEvent::Delta(ChoiceDelta {
                            tool_calls: vec![ToolCallDelta {
                                index,
                                id: owned(block.id),
                                name: owned(block.name),
                                arguments: Some(String::new()),
                            }],
                            ..ChoiceDelta::default()
                        }));
                    }
                    // Redacted thinking, server tool use and its results: nothing a client of
                    // the chat API can see or answer.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else {
                    return Ok(false);
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        push_delta(out, ChoiceDelta::text(0, delta.text.unwrap_or_default()));
                    }
                    Some("thinking_delta") => push_delta(
                        out,
                        ChoiceDelta {
                            reasoning: owned(delta.thinking),
                            ..ChoiceDelta::default()
                        },
                    ),
                    // Closes the thinking block: a client that sends the block back (a tool
                    // loop with thinking on) must send this with it.
                    Some("signature_delta") => push_delta(
                        out,
                        ChoiceDelta {
                            reasoning_signature: owned(delta.signature),
                            ..ChoiceDelta::default()
                        },
                    ),
                    Some("input_json_delta") => {
                        let fragment = delta.partial_json.unwrap_or_default();
                        // Fragments of blocks that are not client tool calls are dropped.
                        if let Some(tool) = self.tool(ev.index) {
                            if !fragment.is_empty() {
                                tool.sent_arguments = true;
                                let index = tool.index;
                                out.push_back(StreamEvent::Delta(Self::tool_delta(
                                    index,
                                    fragment.into_owned(),
                                )));
                            }
                        }
                    }
                    // citations_delta, and types added later.
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool without parameters streams no JSON at all; clients parse the
                // arguments, and "" is not JSON.
                if let Some(tool) = self.tool(ev.index) {
                    if !tool.sent_arguments {
                        tool.sent_arguments = true;
                        let index = tool.index;
                        out.push_back(StreamEvent::Delta(Self::tool_delta(index, "{}".into())));
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = &ev.usage {
                    self.counts.update(u);
                }
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    if !self.finished {
                        self.finished = true;
                        out.push_back(StreamEvent::Finish {
                            choice: 0,
                            reason: finish_reason(&reason),
                        });
                    }
                }
            }
            "message_stop" => {
                self.stopped = true;
                out.push_back(StreamEvent::Usage(self.counts.usage()));
                return Ok(true);
            }
            "error" => {
                let (kind, message) = ev
                    .error
                    .map_or((None, None), |e| (owned(e.kind), owned(e.message)));
                return Err(AdapterError::Upstream {
                    status: None,
                    kind: kind.unwrap_or_else(|| "upstream_error".into()),
                    message: message.unwrap_or_else(|| "upstream error".into()),
                    code: None,
                    param: None,
                    retry_after: None,
                });
            }
            // ping, and event types added later.
            _ => {}
        }
        Ok(false)
    }

    fn on_end(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), AdapterError> {
        if !self.started {
            return Err(AdapterError::Truncated(
                "the upstream closed the stream before sending anything".into(),
            ));
        }
        if !self.finished {
            return Err(AdapterError::Truncated(
                "the upstream ended the stream before the message had a stop reason".into(),
            ));
        }
        if !self.stopped {
            // The stop reason came (message_delta) and then the connection closed cleanly
            // without message_stop: every part of the answer arrived, only the end marker is
            // missing, so the answer is complete. Its usage is the last counts seen.
            out.push_back(StreamEvent::Usage(self.counts.usage()));
        }
        Ok(())
    }
}

/// A non-streaming Anthropic message as an OpenAI `chat.completion`.
pub(crate) fn completion(value: &Value) -> Result<Completion, AdapterError> {
    let Some(blocks) = value.get("content").and_then(Value::as_array) else {
        return Err(AdapterError::Protocol(
            "the upstream's answer is not an Anthropic message (no 'content' array)".into(),
        ));
    };
    let str_of = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut text = String::new();
    let mut thinking = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(&str_of(b, "text")),
            Some("thinking") => thinking.push_str(&str_of(b, "thinking")),
            Some("tool_use") => {
                let arguments = b
                    .get("input")
                    .filter(|i| !i.is_null())
                    .map_or_else(|| "{}".to_owned(), Value::to_string);
                tool_calls.push(json!({
                    "id": str_of(b, "id"),
                    "type": "function",
                    "function": {"name": str_of(b, "name"), "arguments": arguments},
                }));
            }
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() { Value::Null } else { Value::String(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !thinking.is_empty() {
        message["reasoning_content"] = Value::String(thinking);
    }
    let finish = value
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or(Value::Null, |r| {
            Value::String(finish_reason(r).as_str().to_owned())
        });
    let mut counts = TokenCounts::default();
    if let Some(u) = value
        .get("usage")
        .and_then(|u| TokenCounts::deserialize(u).ok())
    {
        counts.update(&u);
    }
    let usage = counts.usage();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "id": value.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": value.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish,
            "logprobs": null,
        }],
        "usage": serde_json::to_value(usage).unwrap_or_default(),
    });
    Ok(Completion {
        body,
        usage: Some(usage),
    })
}
