//! Anthropic Messages API upstreams.
//!
//! The client's OpenAI-format chat request is translated into a Messages request: system
//! prompts hoisted, tool calls and results as content blocks, OpenAI-only knobs dropped. Each
//! stream event's data is parsed once into structs that borrow from it and mapped to normalised
//! events; a non-streaming message is rewritten as an OpenAI `chat.completion`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::event::{
    ChoiceDelta, FinishReason, PromptTokensDetails, ResponseMeta, StreamEvent, ToolCallDelta, Usage,
};
use crate::provider::{Completion, StreamMapper, UpstreamRequest};
use crate::request::DEFAULT_MAX_TOKENS;
use crate::{AdapterError, ChatRequest};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";

fn invalid(param: impl Into<String>, message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest {
        message: message.into(),
        param: param.into(),
    }
}

/// The upstream request: `POST {base}/v1/messages` with the translated body.
pub(crate) fn build_request(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> Result<UpstreamRequest, AdapterError> {
    let body = translate_request(req, stream)?;
    let base = if base_url.is_empty() {
        DEFAULT_BASE_URL
    } else {
        base_url
    };
    // A base configured as `.../v1` (as OpenAI bases are) must not become `/v1/v1/messages`.
    let url = if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    };
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("anthropic-version", API_VERSION.to_owned()),
    ];
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        headers.push(("x-api-key", key.to_owned()));
    }
    Ok(UpstreamRequest {
        url,
        headers,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    })
}

/// Builds the Messages body from known fields only: Anthropic rejects unknown top-level fields,
/// so anything not translated here is dropped.
fn translate_request(req: &ChatRequest, stream: bool) -> Result<Map<String, Value>, AdapterError> {
    let src = &req.body;
    if src.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(invalid("n", "Anthropic upstreams do not support n > 1"));
    }
    let present = |key: &str| src.get(key).filter(|v| !v.is_null());

    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.model.clone()));
    let (system, messages) = translate_messages(src.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert(
        "max_tokens".into(),
        req.max_tokens().unwrap_or(DEFAULT_MAX_TOKENS).into(),
    );
    out.insert("stream".into(), Value::Bool(stream));
    if let Some(stop) = stop_sequences(present("stop"))? {
        out.insert("stop_sequences".into(), stop);
    }
    for key in ["temperature", "top_p", "top_k", "thinking"] {
        if let Some(v) = present(key) {
            out.insert(key.into(), v.clone());
        }
    }
    // OpenAI's tiers ("default", "flex", "priority") mean nothing to Anthropic and would be
    // rejected; Anthropic's own values pass.
    if let Some(tier) =
        present("service_tier").filter(|t| matches!(t.as_str(), Some("auto" | "standard_only")))
    {
        out.insert("service_tier".into(), tier.clone());
    }
    // Anthropic's metadata takes only `user_id`; OpenAI's free-form `metadata` keys would be
    // rejected, so only that key is kept.
    let user_id = present("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|v| v.is_string())
        .or_else(|| present("user").filter(|v| v.is_string()));
    if let Some(id) = user_id {
        out.insert("metadata".into(), json!({ "user_id": id }));
    }

    let tools = translate_tools(present("tools"))?;
    let mut choice = tool_choice(present("tool_choice"))?;
    // Anthropic rejects `tool_choice` without tools; OpenAI clients send it regardless.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if src.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c.get("type").and_then(Value::as_str) != Some("none") {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        if let Some(c) = choice.take() {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(out)
}

/// Returns the joined system prompt and the alternating user/assistant messages.
fn translate_messages(msgs: Option<&Value>) -> Result<(String, Vec<Value>), AdapterError> {
    let Some(Value::Array(msgs)) = msgs else {
        return Err(invalid("messages", "'messages' must be an array"));
    };
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = system_text(m.get("content"), &at)?;
                if !text.trim().is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", content_blocks(m.get("content"), &at)?),
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"), &at)?;
                blocks.extend(tool_uses(m.get("tool_calls"), &at)?);
                ("assistant", blocks)
            }
            "tool" => ("user", vec![tool_result(m, &at)?]),
            other => {
                return Err(invalid(
                    format!("{at}.role"),
                    format!("role '{other}' is not supported by Anthropic upstreams"),
                ))
            }
        };
        // Anthropic rejects empty messages; an empty one says nothing, so it is left out.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // Anthropic rejects a final assistant (prefill) turn that ends in whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(Value::Object(b)) = blocks.last_mut() {
            if let Some(Value::String(t)) = b.get_mut("text") {
                t.truncate(t.trim_end().len());
            }
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut content)| {
            // Tool results must come before any other block of their user message.
            content.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            let content = match content.as_slice() {
                [Value::Object(b)] if b.len() == 2 && b.get("type") == Some(&json!("text")) => {
                    b.get("text").cloned().unwrap_or_default()
                }
                _ => Value::Array(content),
            };
            json!({ "role": role, "content": content })
        })
        .collect();
    Ok((system.join("\n\n"), messages))
}

fn system_text(content: Option<&Value>, at: &str) -> Result<String, AdapterError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(invalid(
                            format!("{at}.content[{j}]"),
                            "system messages may only contain text parts",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(invalid(
            format!("{at}.content"),
            "content must be a string or an array of content parts",
        )),
    }
}

/// Anthropic content blocks for a message's OpenAI `content`; blank text is left out because
/// Anthropic rejects text blocks without non-whitespace text.
fn content_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, AdapterError> {
    let text_block = |t: &str| json!({"type": "text", "text": t});
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let p = format!("{at}.content[{j}]");
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                let mut block = match kind {
                    "text" | "refusal" => {
                        let Some(t) = part.get(kind).and_then(Value::as_str) else {
                            return Err(invalid(
                                p,
                                format!("a '{kind}' part needs a string '{kind}'"),
                            ));
                        };
                        if t.trim().is_empty() {
                            continue;
                        }
                        text_block(t)
                    }
                    "image_url" => {
                        let url = match part.get("image_url") {
                            Some(Value::String(u)) => Some(u.as_str()),
                            Some(o) => o.get("url").and_then(Value::as_str),
                            None => None,
                        };
                        let Some(url) = url else {
                            return Err(invalid(
                                format!("{p}.image_url"),
                                "an 'image_url' part needs 'image_url.url'",
                            ));
                        };
                        json!({"type": "image", "source": image_source(url, &p)?})
                    }
                    "file" => document(part, &p)?,
                    other => {
                        return Err(invalid(
                            p,
                            format!(
                            "content part type '{other}' is not supported by Anthropic upstreams"
                        ),
                        ))
                    }
                };
                // Prompt-caching markers are Anthropic's; clients that know it send them.
                if let Some(cc) = part.get("cache_control").filter(|v| !v.is_null()) {
                    block["cache_control"] = cc.clone();
                }
                blocks.push(block);
            }
            Ok(blocks)
        }
        Some(_) => Err(invalid(
            format!("{at}.content"),
            "content must be a string or an array of content parts",
        )),
    }
}

/// A base64 `data:` URL as `(media type, data)`.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next().filter(|m| !m.is_empty())?;
    params.any(|p| p == "base64").then_some((media_type, data))
}

fn image_source(url: &str, at: &str) -> Result<Value, AdapterError> {
    if url.starts_with("data:") {
        let Some((media_type, data)) = parse_data_url(url) else {
            return Err(invalid(
                format!("{at}.image_url"),
                "image data URLs must be base64 ('data:image/png;base64,...')",
            ));
        };
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(invalid(
        format!("{at}.image_url"),
        "image URLs must be http(s) or base64 data URLs",
    ))
}

/// OpenAI's `file` part with inline data (PDFs) as an Anthropic document block.
fn document(part: &Value, at: &str) -> Result<Value, AdapterError> {
    let data = part
        .get("file")
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
        .and_then(parse_data_url);
    match data {
        Some((media_type, data)) => Ok(json!({
            "type": "document",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        })),
        None => Err(invalid(
            format!("{at}.file"),
            "Anthropic upstreams take files only as base64 'file.file_data' data URLs",
        )),
    }
}

fn tool_uses(calls: Option<&Value>, at: &str) -> Result<Vec<Value>, AdapterError> {
    let param = format!("{at}.tool_calls");
    let calls = match calls {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(c)) => c,
        Some(_) => {
            return Err(invalid(
                param,
                format!("'{at}.tool_calls' must be an array"),
            ))
        }
    };
    let mut blocks = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let id = call.get("id").and_then(Value::as_str);
        let func = call.get("function");
        let name = func.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(invalid(
                param,
                format!("'{at}.tool_calls[{j}]' needs an 'id' and a 'function.name'"),
            ));
        };
        let input = match func.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                invalid(
                    param.clone(),
                    format!("'{at}.tool_calls[{j}].function.arguments' is not valid JSON: {e}"),
                )
            })?,
            Some(v) => v.clone(),
        };
        if !input.is_object() {
            return Err(invalid(
                param,
                format!("'{at}.tool_calls[{j}].function.arguments' must be a JSON object"),
            ));
        }
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

fn tool_result(m: &Value, at: &str) -> Result<Value, AdapterError> {
    let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
        return Err(invalid(
            format!("{at}.tool_call_id"),
            format!("'{at}.tool_call_id' is required for tool messages"),
        ));
    };
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match m.get("content") {
        Some(Value::String(s)) if !s.is_empty() => block["content"] = Value::String(s.clone()),
        Some(Value::String(_)) => {}
        content => {
            let blocks = content_blocks(content, at)?;
            if !blocks.is_empty() {
                block["content"] = Value::Array(blocks);
            }
        }
    }
    Ok(block)
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, AdapterError> {
    match stop {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            Ok((!a.is_empty()).then(|| Value::Array(a.clone())))
        }
        Some(_) => Err(invalid(
            "stop",
            "'stop' must be a string or an array of strings",
        )),
    }
}

fn translate_tools(tools: Option<&Value>) -> Result<Vec<Value>, AdapterError> {
    let tools = match tools {
        None => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(invalid("tools", "'tools' must be an array")),
    };
    let mut out = Vec::with_capacity(tools.len());
    for (j, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str);
        let Some(func) = tool.get("function") else {
            // Anthropic-native tools (server tools such as web search) carry their own name.
            if kind.is_some_and(|k| k != "function") && tool.get("name").is_some() {
                out.push(tool.clone());
                continue;
            }
            return Err(invalid(
                format!("tools[{j}]"),
                format!("'tools[{j}]' must be a function tool"),
            ));
        };
        let Some(name) = func.get("name").and_then(Value::as_str) else {
            return Err(invalid(
                format!("tools[{j}].function.name"),
                format!("'tools[{j}].function.name' is required"),
            ));
        };
        let schema = func
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut t = json!({"name": name, "input_schema": schema});
        if let Some(d) = func.get("description").filter(|d| d.is_string()) {
            t["description"] = d.clone();
        }
        out.push(t);
    }
    Ok(out)
}

fn tool_choice(choice: Option<&Value>) -> Result<Option<Value>, AdapterError> {
    let bad = || {
        invalid(
            "tool_choice",
            "'tool_choice' must be \"auto\", \"none\", \"required\" or a function choice",
        )
    };
    let Some(choice) = choice else {
        return Ok(None);
    };
    let mapped = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => return Err(bad()),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?;
                json!({"type": "tool", "name": name})
            }
            // Already in Anthropic's shape.
            Some("auto" | "any" | "tool" | "none") => choice.clone(),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    Ok(Some(mapped))
}

/// Anthropic's `stop_reason` in OpenAI's vocabulary.
fn finish_reason(stop_reason: &str) -> FinishReason {
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
struct TokenCounts {
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
struct EventData<'a> {
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
struct MessageStart<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<TokenCounts>,
}

#[derive(Deserialize)]
struct Block<'a> {
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
}

/// A `content_block_delta`'s or a `message_delta`'s `delta`.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
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
struct ToolBlock {
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

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

fn push_delta(out: &mut VecDeque<StreamEvent>, delta: ChoiceDelta) {
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
                    Some("thinking") => push_delta(
                        out,
                        ChoiceDelta {
                            reasoning: owned(block.thinking),
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
                    // signature_delta, citations_delta, and types added later.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a literal SSE transcript (`event:`/`data:` lines, blank line between events).
    fn run(sse: &str) -> (Vec<StreamEvent>, Result<(), AdapterError>) {
        let mut st = StreamState::default();
        let mut out = VecDeque::new();
        let mut event = String::from("message");
        let mut data = String::new();
        for line in sse.lines().map(str::trim).chain(std::iter::once("")) {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                match st.on_event(&event, &data, &mut out) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => return (out.into_iter().collect(), Err(e)),
                }
                event = "message".into();
                data.clear();
            }
        }
        let end = st.on_end(&mut out);
        (out.into_iter().collect(), end)
    }

    fn content(evs: &[StreamEvent]) -> String {
        evs.iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => d.content.clone(),
                _ => None,
            })
            .collect()
    }

    fn reasoning(evs: &[StreamEvent]) -> String {
        evs.iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => d.reasoning.clone(),
                _ => None,
            })
            .collect()
    }

    fn finishes(evs: &[StreamEvent]) -> Vec<FinishReason> {
        evs.iter()
            .filter_map(|e| match e {
                StreamEvent::Finish { choice: 0, reason } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    const TEXT_STREAM: &str = r#"
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", world \u00e9"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

        event: message_stop
        data: {"type":"message_stop"}
    "#;

    #[test]
    fn text_stream_with_cache_usage() {
        let (evs, end) = run(TEXT_STREAM);
        end.unwrap();
        assert_eq!(
            evs,
            vec![
                StreamEvent::Meta(ResponseMeta {
                    id: Some("msg_01".into()),
                    model: Some("claude-sonnet-4-5".into()),
                    created: None,
                    system_fingerprint: None,
                }),
                StreamEvent::Delta(ChoiceDelta::text(0, "Hello")),
                StreamEvent::Delta(ChoiceDelta::text(0, ", world é")),
                StreamEvent::Finish {
                    choice: 0,
                    reason: FinishReason::Stop
                },
                StreamEvent::Usage(Usage {
                    prompt_tokens: 135,
                    // Cumulative: the last value, not 1 + 15.
                    completion_tokens: 15,
                    total_tokens: 150,
                    prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 100 }),
                    completion_tokens_details: None,
                }),
            ]
        );
    }

    #[test]
    fn huge_usage_numbers_saturate() {
        let (evs, end) = run(r#"
            data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":18446744073709551615,"output_tokens":18446744073709551615}}}

            data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":18446744073709551615}}

            data: {"type":"message_stop"}
        "#);
        end.unwrap();
        let Some(StreamEvent::Usage(u)) = evs.last() else {
            panic!("{evs:?}")
        };
        assert_eq!((u.prompt_tokens, u.total_tokens), (u64::MAX, u64::MAX));
    }

    #[test]
    fn message_delta_may_update_input_counts() {
        let (evs, end) = run(r#"
            data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":5,"output_tokens":1}}}

            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}

            data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":7,"cache_creation_input_tokens":null,"cache_read_input_tokens":3,"output_tokens":4}}

            data: {"type":"message_stop"}
        "#);
        end.unwrap();
        // The start block's own text is output too.
        assert_eq!(content(&evs), "Hi");
        let Some(StreamEvent::Usage(u)) = evs.last() else {
            panic!("{evs:?}")
        };
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (10, 4, 14)
        );
        assert_eq!(
            u.prompt_tokens_details,
            Some(PromptTokensDetails { cached_tokens: 3 })
        );
    }

    #[test]
    fn tool_calls_past_the_cap_end_the_stream() {
        let mut sse = String::from(
            r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_03","type":"message","role":"assistant","model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"output_tokens":1}}}

"#,
        );
        for i in 0..=MAX_TOOL_CALLS {
            sse.push_str(&format!(
                "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_{i}\",\"name\":\"f\",\"input\":{{}}}}}}\n\n"
            ));
        }
        let (evs, end) = run(&sse);
        let calls = evs
            .iter()
            .filter(|e| matches!(e, StreamEvent::Delta(d) if !d.tool_calls.is_empty()))
            .count();
        assert_eq!(calls, MAX_TOOL_CALLS);
        assert!(
            matches!(&end, Err(AdapterError::Protocol(m)) if m.contains("tool calls")),
            "{end:?}"
        );
    }

    #[test]
    fn thinking_text_and_two_tools() {
        let (evs, end) = run(r#"
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_02","type":"message","role":"assistant","model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":400,"output_tokens":2}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants "}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"two lookups."}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":0}

            event: content_block_start
            data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_A","name":"get_weather","input":{}}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":1}

            event: content_block_start
            data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_B","name":"get_time","input":{}}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"tz\":\"CET\"}"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":2}

            event: content_block_start
            data: {"type":"content_block_start","index":3,"content_block":{"type":"text","text":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"Checking."}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":3}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

            event: message_stop
            data: {"type":"message_stop"}
        "#);
        end.unwrap();
        assert_eq!(reasoning(&evs), "The user wants two lookups.");
        assert_eq!(content(&evs), "Checking.");
        for e in &evs {
            if let StreamEvent::Delta(d) = e {
                assert!(d.reasoning.is_none() || d.content.is_none(), "{d:?}");
                assert_eq!(d.choice, 0);
            }
        }
        let calls: Vec<&ToolCallDelta> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => Some(&d.tool_calls),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            calls[0],
            &ToolCallDelta {
                index: 0,
                id: Some("toolu_A".into()),
                name: Some("get_weather".into()),
                arguments: Some(String::new()),
            }
        );
        let args = |i: u32| -> String {
            calls
                .iter()
                .filter(|c| c.index == i)
                .filter_map(|c| c.arguments.clone())
                .collect()
        };
        assert_eq!(args(0), r#"{"city": "Paris"}"#);
        assert_eq!(args(1), r#"{"tz":"CET"}"#);
        let b = calls
            .iter()
            .find(|c| c.id.as_deref() == Some("toolu_B"))
            .unwrap();
        assert_eq!((b.index, b.name.as_deref()), (1, Some("get_time")));
        assert!(calls.iter().all(|c| c.index <= 1));
        assert_eq!(finishes(&evs), vec![FinishReason::ToolCalls]);
        let Some(StreamEvent::Usage(u)) = evs.last() else {
            panic!()
        };
        assert_eq!((u.prompt_tokens, u.completion_tokens), (400, 89));
    }

    #[test]
    fn tool_without_arguments_gets_an_empty_object() {
        let (evs, end) = run(r#"
            data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

            data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}

            data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

            data: {"type":"content_block_stop","index":0}

            data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}

            data: {"type":"message_stop"}
        "#);
        end.unwrap();
        let args: String = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => {
                    Some(d.tool_calls.iter().filter_map(|c| c.arguments.clone()))
                }
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(args, "{}");
    }

    #[test]
    fn every_stop_reason_maps() {
        for (stop, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("pause_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
            ("something_new", FinishReason::Other("something_new".into())),
        ] {
            let sse = format!(
                "data: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"model\":\"c\",\"usage\":{{\"input_tokens\":1,\"output_tokens\":1}}}}}}\n\n\
                 data: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{stop}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":2}}}}\n\n\
                 data: {{\"type\":\"message_stop\"}}\n\n"
            );
            let (evs, end) = run(&sse);
            end.unwrap();
            assert_eq!(finishes(&evs), vec![want], "{stop}");
        }
    }

    #[test]
    fn error_event_mid_stream() {
        let (evs, end) = run(r#"
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_03","model":"claude","usage":{"input_tokens":3,"output_tokens":1}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Par"}}

            event: error
            data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"never"}}
        "#);
        assert_eq!(evs.len(), 2);
        assert_eq!(content(&evs), "Par");
        let Err(AdapterError::Upstream {
            status,
            kind,
            message,
            code,
            param,
            retry_after,
        }) = end
        else {
            panic!("{end:?}")
        };
        assert_eq!(
            (
                status,
                kind.as_str(),
                message.as_str(),
                code,
                param,
                retry_after
            ),
            (None, "overloaded_error", "Overloaded", None, None, None)
        );
    }

    #[test]
    fn cut_streams_are_truncated() {
        // Cut after the content, before message_delta.
        let (evs, end) = run(r#"
            data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}
        "#);
        assert_eq!(content(&evs), "Hel");
        assert!(matches!(end, Err(AdapterError::Truncated(_))), "{end:?}");
        // message_stop without a stop reason.
        let (_, end) = run(r#"
            data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

            data: {"type":"message_stop"}
        "#);
        assert!(matches!(end, Err(AdapterError::Truncated(_))), "{end:?}");
        // Nothing at all.
        let (evs, end) = run("");
        assert!(evs.is_empty());
        assert!(matches!(end, Err(AdapterError::Truncated(_))), "{end:?}");
    }

    #[test]
    fn a_clean_end_after_the_stop_reason_without_message_stop_is_complete() {
        let (evs, end) = run(r#"
            data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":1}}}

            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

            data: {"type":"content_block_stop","index":0}

            data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":7}}

            event: ping
            data: {"type":"ping"}
        "#);
        end.unwrap();
        assert_eq!(content(&evs), "Hi");
        assert_eq!(finishes(&evs), vec![FinishReason::Length]);
        assert_eq!(
            evs.last(),
            Some(&StreamEvent::Usage(Usage {
                prompt_tokens: 5,
                completion_tokens: 7,
                total_tokens: 12,
                prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 2 }),
                completion_tokens_details: None,
            }))
        );
    }

    #[test]
    fn invalid_json_is_a_protocol_error_and_unknown_events_are_ignored() {
        let mut st = StreamState::default();
        let mut out = VecDeque::new();
        assert!(matches!(
            st.on_event("content_block_delta", "{\"type\":\"content_blo", &mut out),
            Err(AdapterError::Protocol(_))
        ));
        assert!(!st
            .on_event(
                "future_event",
                r#"{"type":"future_event","x":[1]}"#,
                &mut out
            )
            .unwrap());
        assert!(!st.on_event("ping", r#"{"type":"ping"}"#, &mut out).unwrap());
        assert!(out.is_empty());
        // The data's `type` decides, not the SSE event name.
        assert!(st
            .on_event("message", r#"{"type":"message_stop"}"#, &mut out)
            .unwrap());
    }

    fn build(body: &str) -> Result<(UpstreamRequest, Value), AdapterError> {
        let req = ChatRequest::parse(body.as_bytes()).unwrap();
        let up = build_request(DEFAULT_BASE_URL, Some("sk-ant-1"), &req, req.stream)?;
        let v: Value = serde_json::from_slice(&up.body).unwrap();
        Ok((up, v))
    }

    fn build_err(body: &str) -> (String, String) {
        match build(body) {
            Err(AdapterError::InvalidRequest { message, param }) => (param, message),
            Err(e) => panic!("expected invalid request, got {e:?}"),
            Ok((_, v)) => panic!("expected invalid request, got {v}"),
        }
    }

    #[test]
    fn request_url_headers_and_defaults() {
        let (up, body) = build(
            r#"{"model":"claude-sonnet-4-5","stream":true,"stream_options":{"include_usage":true},
                "n":1,"logprobs":false,"presence_penalty":0,"frequency_penalty":0,"seed":3,
                "response_format":{"type":"text"},"parallel_tool_calls":true,"x_vendor":1,
                "temperature":0.2,"top_p":0.9,"top_k":40,"user":"u-42",
                "messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
        for h in [
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "sk-ant-1"),
            ("accept", "text/event-stream"),
        ] {
            assert!(up.headers.contains(&(h.0, h.1.to_owned())), "{h:?}");
        }
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": DEFAULT_MAX_TOKENS,
                "stream": true,
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 40,
                "metadata": {"user_id": "u-42"},
            })
        );

        let req = ChatRequest::parse(
            br#"{"model":"m","max_tokens":100,"max_completion_tokens":50,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let up = build_request("http://proxy:8080/v1", None, &req, false).unwrap();
        assert_eq!(up.url, "http://proxy:8080/v1/messages");
        assert!(!up
            .headers
            .iter()
            .any(|(k, _)| *k == "x-api-key" || *k == "accept"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            (body["max_tokens"].as_u64(), &body["stream"]),
            (Some(50), &json!(false))
        );
    }

    #[test]
    fn anthropic_fields_are_forwarded() {
        let (_, body) = build(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],
                "thinking":{"type":"enabled","budget_tokens":2048},
                "metadata":{"user_id":"abc","openai_only":"y"},"user":"ignored",
                "service_tier":"standard_only"}"#,
        )
        .unwrap();
        assert_eq!(
            body["thinking"],
            json!({"type":"enabled","budget_tokens":2048})
        );
        assert_eq!(body["metadata"], json!({"user_id":"abc"}));
        assert_eq!(body["service_tier"], "standard_only");
        let (_, body) = build(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"service_tier":"flex"}"#,
        )
        .unwrap();
        assert!(body.get("service_tier").is_none());
    }

    #[test]
    fn system_messages_are_joined_and_turns_merged() {
        let (_, body) = build(
            r#"{"model":"m","messages":[
                {"role":"system","content":"You are terse."},
                {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
                {"role":"user","content":"a"},
                {"role":"user","content":[{"type":"text","text":"b"},{"type":"text","text":"  "}]},
                {"role":"assistant","content":"c  "}
            ]}"#,
        )
        .unwrap();
        assert_eq!(body["system"], "You are terse.\n\nAnswer in French.");
        assert_eq!(
            body["messages"],
            json!([
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":"c"},
            ])
        );
    }

    #[test]
    fn tool_calls_and_results_become_blocks() {
        let (_, body) = build(
            r#"{"model":"m","messages":[
                {"role":"user","content":"weather and time?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"now","arguments":""}}]},
                {"role":"tool","tool_call_id":"call_1","content":"18C"},
                {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"12:00"}]},
                {"role":"user","content":"thanks"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role":"user","content":"weather and time?"},
                {"role":"assistant","content":[
                    {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
                    {"type":"tool_use","id":"call_2","name":"now","input":{}}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
                    {"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"12:00"}]},
                    {"type":"text","text":"thanks"}]},
            ])
        );
        let (param, msg) = build_err(
            r#"{"model":"m","messages":[{"role":"user","content":"x"},
                {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
        );
        assert_eq!(param, "messages[1].tool_calls");
        assert!(
            msg.contains("messages[1].tool_calls[0].function.arguments"),
            "{msg}"
        );
        let (param, _) = build_err(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
        assert_eq!(param, "messages[0].tool_call_id");
    }

    #[test]
    fn images_are_translated() {
        let (_, body) = build(
            r#"{"model":"m","messages":[{"role":"user","content":[
                {"type":"text","text":"what is this?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}},
                {"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}}
            ]}]}"#,
        )
        .unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type":"text","text":"what is this?"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
                {"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}},
                {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}},
            ])
        );
        let (param, _) = build_err(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}"#,
        );
        assert_eq!(param, "messages[0].content[0].image_url");
        let (param, _) = build_err(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"","format":"wav"}}]}]}"#,
        );
        assert_eq!(param, "messages[0].content[0]");
    }

    #[test]
    fn stop_sequences_tools_and_tool_choice() {
        let base = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        let (_, body) = build(&format!(r#"{{{base},"stop":"END"}}"#)).unwrap();
        assert_eq!(body["stop_sequences"], json!(["END"]));
        let (_, body) = build(&format!(r#"{{{base},"stop":["a","b"]}}"#)).unwrap();
        assert_eq!(body["stop_sequences"], json!(["a", "b"]));
        assert_eq!(build_err(&format!(r#"{{{base},"stop":5}}"#)).0, "stop");

        let tools = r#""tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},{"type":"function","function":{"name":"now"}}]"#;
        let (_, body) = build(&format!(r#"{{{base},{tools}}}"#)).unwrap();
        assert_eq!(
            body["tools"],
            json!([
                {"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
                {"name":"now","input_schema":{"type":"object","properties":{}}},
            ])
        );
        assert!(body.get("tool_choice").is_none());
        for (choice, want) in [
            (r#""auto""#, json!({"type":"auto"})),
            (r#""none""#, json!({"type":"none"})),
            (r#""required""#, json!({"type":"any"})),
            (
                r#"{"type":"function","function":{"name":"now"}}"#,
                json!({"type":"tool","name":"now"}),
            ),
        ] {
            let (_, body) =
                build(&format!(r#"{{{base},{tools},"tool_choice":{choice}}}"#)).unwrap();
            assert_eq!(body["tool_choice"], want, "{choice}");
        }
        let (_, body) = build(&format!(
            r#"{{{base},{tools},"tool_choice":"required","parallel_tool_calls":false}}"#
        ))
        .unwrap();
        assert_eq!(
            body["tool_choice"],
            json!({"type":"any","disable_parallel_tool_use":true})
        );
        // Anthropic rejects a tool_choice without tools.
        let (_, body) = build(&format!(r#"{{{base},"tool_choice":"none"}}"#)).unwrap();
        assert!(body.get("tool_choice").is_none() && body.get("tools").is_none());
        assert_eq!(
            build_err(&format!(r#"{{{base},{tools},"tool_choice":"sometimes"}}"#)).0,
            "tool_choice"
        );
        assert_eq!(
            build_err(&format!(r#"{{{base},"tools":[{{"type":"function"}}]}}"#)).0,
            "tools[0]"
        );
    }

    #[test]
    fn n_above_one_is_rejected() {
        let (param, message) =
            build_err(r#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!(param, "n");
        assert_eq!(message, "Anthropic upstreams do not support n > 1");
        let (param, _) =
            build_err(r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#);
        assert_eq!(param, "messages[0].role");
    }

    #[test]
    fn completion_is_translated() {
        let msg: Value = serde_json::from_str(
            r#"{"id":"msg_9","type":"message","role":"assistant","model":"claude-sonnet-4-5",
                "content":[
                    {"type":"thinking","thinking":"Need the weather.","signature":"abc"},
                    {"type":"text","text":"Let me check."},
                    {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
                "stop_reason":"tool_use","stop_sequence":null,
                "usage":{"input_tokens":20,"cache_creation_input_tokens":5,"cache_read_input_tokens":30,"output_tokens":40}}"#,
        )
        .unwrap();
        let c = completion(&msg).unwrap();
        let usage = c.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (55, 40, 95)
        );
        let created = c.body["created"].as_u64().unwrap();
        assert!(created > 1_700_000_000);
        assert_eq!(
            c.body,
            json!({
                "id": "msg_9",
                "object": "chat.completion",
                "created": created,
                "model": "claude-sonnet-4-5",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Let me check.",
                        "refusal": null,
                        "reasoning_content": "Need the weather.",
                        "tool_calls": [{
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                        }],
                    },
                    "finish_reason": "tool_calls",
                    "logprobs": null,
                }],
                "usage": {
                    "prompt_tokens": 55,
                    "completion_tokens": 40,
                    "total_tokens": 95,
                    "prompt_tokens_details": {"cached_tokens": 30},
                },
            })
        );

        let plain: Value = serde_json::from_str(
            r#"{"id":"msg_a","type":"message","model":"c","content":[{"type":"text","text":"Hi"}],
                "stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}}"#,
        )
        .unwrap();
        let c = completion(&plain).unwrap();
        let m = &c.body["choices"][0]["message"];
        assert_eq!(m["content"], "Hi");
        assert!(m.get("tool_calls").is_none() && m.get("reasoning_content").is_none());
        assert_eq!(c.body["choices"][0]["finish_reason"], "length");
        assert!(matches!(
            completion(&json!({"type":"message"})),
            Err(AdapterError::Protocol(_))
        ));
    }
}
