//! An Anthropic Messages request as a chat-completions body: what every provider but an
//! Anthropic one receives (an Anthropic upstream gets the client's own body; see
//! `provider_adapter::AnthropicNative`).
//!
//! Pure, and lenient by design: Claude Code's request carries beta fields (`context_management`,
//! `thinking` with a budget, tools with `defer_loading`, `cache_control` everywhere, a JSON
//! string as `metadata.user_id`) that no OpenAI-compatible server knows. What has a chat
//! equivalent is translated; the rest is dropped, never refused. Only a body that is not a
//! Messages request at all (no `model`, `messages` not a list) is a 400.

use serde_json::{json, Map, Value};

use crate::error::GatewayError;

/// OpenAI's limit on `stop` sequences.
const MAX_STOP: usize = 4;
/// The longest `metadata.user_id` passed on as `user`: OpenAI's limit on its end-user ids
/// (`safety_identifier`) is 64 characters. Claude Code's, a JSON document, is longer: dropped.
const MAX_USER_LEN: usize = 64;

/// The chat-completions body for `body`, always streaming with usage (every dialect answer runs
/// as a relay stream).
/// The largest `max_tokens` sent to an OpenAI-compatible upstream (see [`translate`]).
pub const MAX_FORWARDED_MAX_TOKENS: u64 = 4096;

pub fn translate(body: &Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let mut out = Map::new();
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            out.insert("model".into(), m.clone().into());
        }
        _ => {
            return Err(GatewayError::bad_request(
                "model",
                "'model' is required and must be a non-empty string",
            ))
        }
    }
    let Some(Value::Array(msgs)) = body.get("messages") else {
        return Err(GatewayError::bad_request(
            "messages",
            "'messages' is required and must be a list of messages",
        ));
    };
    let mut messages = Vec::with_capacity(msgs.len() + 1);
    let mut system: Vec<String> = system_text(body.get("system")).into_iter().collect();
    for (i, m) in msgs.iter().enumerate() {
        // Claude Code's per-turn instructions (`role: "system"` among the messages) join the
        // system prompt: many chat templates refuse a system message anywhere but first.
        if m.get("role").and_then(Value::as_str) == Some("system") {
            system.extend(system_text(m.get("content")));
            continue;
        }
        message(&mut messages, m).map_err(|msg| {
            GatewayError::bad_request(format!("messages[{i}]"), format!("messages[{i}]: {msg}"))
        })?;
    }
    if !system.is_empty() {
        messages.insert(
            0,
            json!({ "role": "system", "content": system.join("\n\n") }),
        );
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert("stream".into(), true.into());
    out.insert("stream_options".into(), json!({ "include_usage": true }));
    for key in ["temperature", "top_p"] {
        if let Some(v) = body.get(key).filter(|v| v.is_number()) {
            out.insert(key.into(), v.clone());
        }
    }
    // Anthropic requires `max_tokens`, so clients send one even when they mean "as long as it
    // takes" (Claude Code sends 32000 or more). OpenAI-compatible servers refuse a cap above the
    // model's own output limit or what its context leaves (gpt-4o: 16384; a vLLM model with an
    // 8k context: less), so only a cap that reads as a real limit goes upstream; a larger one
    // leaves the answer to the upstream's own limit (and the team's reservation to its default).
    if let Some(v) = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n <= MAX_FORWARDED_MAX_TOKENS)
    {
        out.insert("max_tokens".into(), v.into());
    }
    if let Some(Value::Array(stops)) = body.get("stop_sequences") {
        let stops: Vec<Value> = stops
            .iter()
            .filter(|s| s.as_str().is_some_and(|s| !s.is_empty()))
            .take(MAX_STOP)
            .cloned()
            .collect();
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops));
        }
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.len() <= MAX_USER_LEN)
    {
        out.insert("user".into(), user.into());
    }
    let tools = tools(body.get("tools"));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some((choice, parallel)) = tool_choice(body.get("tool_choice")) {
            out.insert("tool_choice".into(), choice);
            if let Some(p) = parallel {
                out.insert("parallel_tool_calls".into(), p.into());
            }
        }
    }
    if let Some(format) = response_format(body) {
        out.insert("response_format".into(), format);
    }
    // Dropped: `thinking` (an OpenAI-compatible server has no budget to give, and a
    // `reasoning_effort` would fail on models that do not reason), `top_k`,
    // `context_management`, `container`, `mcp_servers`, `service_tier`, the rest of `metadata`.
    Ok(out)
}

/// The text of `system`, a string or a list of text blocks. Claude Code's first block, its
/// billing line (`x-anthropic-billing-header: ...`), is for Anthropic's servers alone.
fn system_text(system: Option<&Value>) -> Option<String> {
    let text = match system? {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter(|t| !t.starts_with("x-anthropic-billing-header:"))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// Appends the chat messages of one Messages message: a user turn's `tool_result` blocks become
/// `tool` messages (before its other content, which follows the tool calls they answer); an
/// assistant turn's `tool_use` blocks become its `tool_calls`.
fn message(out: &mut Vec<Value>, m: &Value) -> Result<(), &'static str> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some(_) => return Err("'role' must be 'user', 'assistant' or 'system'"),
        None => return Err("'role' is required"),
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({ "role": role, "content": s }));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => return Err("'content' must be a string or a list of content blocks"),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    parts.push(json!({ "type": "text", "text": t }));
                }
            }
            "image" if role == "user" => {
                if let Some(url) = image_url(b.get("source")) {
                    parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
                }
            }
            "document" => {
                // A plain-text document is text; a PDF has no chat-completions form.
                let source = b.get("source");
                if source.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("text") {
                    if let Some(t) = source.and_then(|s| s.get("data")).and_then(Value::as_str) {
                        parts.push(json!({ "type": "text", "text": t }));
                    }
                }
            }
            "tool_use" if role == "assistant" => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string(),
                    },
                }));
            }
            "tool_result" if role == "user" => {
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": tool_result_text(b),
                }));
            }
            // `thinking`, `redacted_thinking` (no chat form), server tool blocks, anything new.
            _ => {}
        }
    }
    if role == "assistant" {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        if text.is_empty() && calls.is_empty() {
            return Ok(());
        }
        let mut msg = json!({
            "role": "assistant",
            "content": if text.is_empty() { Value::Null } else { text.join("\n\n").into() },
        });
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    } else if !parts.is_empty() {
        // Text alone goes as a string: the form every OpenAI-compatible server takes.
        let content = if parts.iter().all(|p| p["type"] == "text") {
            let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            Value::String(text.join("\n\n"))
        } else {
            Value::Array(parts)
        };
        out.push(json!({ "role": "user", "content": content }));
    }
    Ok(())
}

/// An image source as a URL: `base64` as a data URL, `url` as is.
fn image_url(source: Option<&Value>) -> Option<String> {
    let source = source?;
    match source.get("type").and_then(Value::as_str)? {
        "base64" => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = source.get("data").and_then(Value::as_str)?;
            Some(format!("data:{media};base64,{data}"))
        }
        "url" => source.get("url").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// A tool result's content as text (a `tool` message's content is text): a string, or its
/// text blocks joined. An error result says so.
fn tool_result_text(b: &Value) -> String {
    let text = match b.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        format!("Error: {text}")
    } else {
        text
    }
}

/// The custom tools as functions. A tool with a `type` other than `custom` is one of
/// Anthropic's own (web search, bash, text editor...), which only Anthropic runs: left out.
fn tools(tools: Option<&Value>) -> Vec<Value> {
    let Some(Value::Array(tools)) = tools else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| matches!(t.get("type"), None | Some(Value::Null)) || t["type"] == "custom")
        .filter_map(|t| {
            let name = t.get("name").and_then(Value::as_str)?;
            let mut f = Map::new();
            f.insert("name".into(), name.into());
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                f.insert("description".into(), d.into());
            }
            let params = t
                .get("input_schema")
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            f.insert("parameters".into(), params);
            Some(json!({ "type": "function", "function": f }))
        })
        .collect()
}

/// `tool_choice` and, from its `disable_parallel_tool_use`, `parallel_tool_calls`.
fn tool_choice(choice: Option<&Value>) -> Option<(Value, Option<bool>)> {
    let choice = choice?;
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let c = match choice.get("type").and_then(Value::as_str)? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = choice.get("name").and_then(Value::as_str)?;
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => return None,
    };
    Some((c, parallel))
}

/// Structured output (`output_format` / `output_config.format`, a JSON schema) as
/// `response_format`.
fn response_format(body: &Map<String, Value>) -> Option<Value> {
    let format = body
        .get("output_format")
        .or_else(|| body.get("output_config").and_then(|c| c.get("format")))?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = format.get("schema")?;
    Some(json!({
        "type": "json_schema",
        "json_schema": { "name": "output", "schema": schema },
    }))
}

#[cfg(test)]
mod tests;
