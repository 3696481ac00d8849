//! The client's OpenAI-format chat request as a Messages request: system prompts hoisted,
//! tool calls and results as content blocks, OpenAI-only knobs dropped.

use serde_json::{json, Map, Value};

use crate::request::DEFAULT_MAX_TOKENS;
use crate::{AdapterError, ChatRequest};

use super::invalid;

/// Builds the Messages body from known fields only: Anthropic rejects unknown top-level fields,
/// so anything not translated here is dropped.
pub(super) fn translate_request(
    req: &ChatRequest,
    stream: bool,
) -> Result<Map<String, Value>, AdapterError> {
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
pub(super) fn translate_messages(
    msgs: Option<&Value>,
) -> Result<(String, Vec<Value>), AdapterError> {
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

pub(super) fn system_text(content: Option<&Value>, at: &str) -> Result<String, AdapterError> {
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
pub(super) fn content_blocks(
    content: Option<&Value>,
    at: &str,
) -> Result<Vec<Value>, AdapterError> {
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
pub(super) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next().filter(|m| !m.is_empty())?;
    params.any(|p| p == "base64").then_some((media_type, data))
}

pub(super) fn image_source(url: &str, at: &str) -> Result<Value, AdapterError> {
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
pub(super) fn document(part: &Value, at: &str) -> Result<Value, AdapterError> {
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

pub(super) fn tool_uses(calls: Option<&Value>, at: &str) -> Result<Vec<Value>, AdapterError> {
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

pub(super) fn tool_result(m: &Value, at: &str) -> Result<Value, AdapterError> {
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

pub(super) fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, AdapterError> {
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

pub(super) fn translate_tools(tools: Option<&Value>) -> Result<Vec<Value>, AdapterError> {
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

pub(super) fn tool_choice(choice: Option<&Value>) -> Result<Option<Value>, AdapterError> {
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
