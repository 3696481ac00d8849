//! The Responses API request, translated into a chat-completions body: a pure function, so that
//! every field's fate is tested on literal JSON.
//!
//! What an OpenAI-compatible upstream can run is translated (`input` as text or items,
//! `instructions`, function tools, `tool_choice`, `max_output_tokens`, `temperature`, `top_p`,
//! `reasoning.effort`, `text.format`, `parallel_tool_calls`, `user`). What it cannot run is left
//! out and named in [`Translated::omitted`] (the route sends it as `x-sluice-omitted`): built-in
//! tools (`web_search`, `file_search`, ...), `include`, `reasoning.summary`, `client_metadata`,
//! `prompt_cache_key`, input items other than messages and function calls, and any field this
//! module does not know. `store` and `metadata` are accepted and kept by Sluice (its retention);
//! neither is sent upstream (OpenAI's chat API refuses `metadata` without its own `store`).
//! `previous_response_id`, `conversation` and `background: true` need server-side state Sluice
//! does not keep: a 400 naming the field.
//!
//! A `namespace` tool (Codex sends them: a group of functions) becomes one function per member,
//! named `<namespace>__<name>` upstream; [`Translated::tool_names`] maps those back to
//! `<namespace>.<name>`, which the stream's encoder shows as `name` with `namespace`.
//! `item_reference` items name output items of earlier responses; the route resolves them
//! ([`references`]) and passes them in, so this stays pure.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use crate::error::GatewayError;

/// Most distinct `item_reference` items one request may hold.
pub const MAX_REFERENCES: usize = 256;

/// A Responses request translated for a chat-completions upstream.
#[derive(Debug, Default)]
pub struct Translated {
    /// The chat-completions body (always streaming, with usage: every dialect answer runs as a
    /// relay stream).
    pub body: Map<String, Value>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// What was left out, by field (`include`, `tools.web_search`, ...), sorted.
    pub omitted: BTreeSet<String>,
    /// Upstream tool name → the client's (`namespace.name`), for flattened namespace tools.
    pub tool_names: HashMap<String, String>,
}

fn bad(param: &str, msg: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(param, msg.into())
}

/// The ids of the `item_reference` items of `input`, in order, without repeats (at most
/// [`MAX_REFERENCES`]).
pub fn references(req: &Map<String, Value>) -> Result<Vec<String>, GatewayError> {
    let mut ids = Vec::new();
    let Some(Value::Array(items)) = req.get("input") else {
        return Ok(ids);
    };
    for (i, item) in items.iter().enumerate() {
        if item.get("type").and_then(Value::as_str) != Some("item_reference") {
            continue;
        }
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            return Err(bad(
                &format!("input[{i}].id"),
                format!("'input[{i}].id' is required on an item_reference"),
            ));
        };
        if !ids.iter().any(|x| x == id) {
            if ids.len() == MAX_REFERENCES {
                return Err(bad(
                    "input",
                    format!("at most {MAX_REFERENCES} distinct item_reference items per request"),
                ));
            }
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// Most names [`omitted_header`] lists; the rest are counted.
const MAX_OMITTED_NAMED: usize = 32;
/// Longest name [`omitted_header`] shows (names of unknown fields are the client's).
const MAX_OMITTED_NAME_BYTES: usize = 64;

/// `x-sluice-omitted`: what was left out, comma-separated, bounded (unknown field names come
/// from the client): at most 32 names of printable ASCII up to 64 bytes, then `+N more`.
pub fn omitted_header(omitted: &BTreeSet<String>) -> Option<String> {
    if omitted.is_empty() {
        return None;
    }
    let (shown, hidden): (Vec<&String>, Vec<&String>) = omitted.iter().partition(|n| {
        n.len() <= MAX_OMITTED_NAME_BYTES && n.bytes().all(|b| b.is_ascii_graphic() && b != b',')
    });
    let mut names: Vec<String> = shown
        .iter()
        .take(MAX_OMITTED_NAMED)
        .map(|n| (*n).clone())
        .collect();
    let more = hidden.len() + shown.len().saturating_sub(MAX_OMITTED_NAMED);
    if more > 0 {
        names.push(format!("+{more} more"));
    }
    Some(names.join(", "))
}

/// Fields accepted and not sent upstream, without a note (Sluice keeps or ignores them).
const KEPT: &[&str] = &[
    "store",
    "metadata",
    "stream",
    "stream_options",
    "model",
    "input",
];

/// Translates `req`. `resolved` holds the output item each `item_reference` id names.
pub fn translate(
    req: &Map<String, Value>,
    resolved: &HashMap<String, Value>,
) -> Result<Translated, GatewayError> {
    let mut t = Translated::default();
    if req
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "previous_response_id",
            "'previous_response_id' is not supported: Sluice keeps no conversation state for the \
             upstream; send the earlier turns in 'input' (item_reference items to Sluice's own \
             output items work)",
        ));
    }
    if req.get("conversation").is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "conversation",
            "'conversation' is not supported: send the earlier turns in 'input'",
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(bad(
            "background",
            "'background' is not supported: every response is resumable with \
             GET /v1/responses/{id}?stream=true instead",
        ));
    }
    t.stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream", "'stream' must be a boolean")),
    };
    let b = &mut t.body;
    match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {
            b.insert("model".into(), json!(m));
        }
        None | Some(Value::Null) => return Err(bad("model", "'model' is a required property")),
        Some(_) => return Err(bad("model", "'model' must be a non-empty string")),
    }

    // Tools first: input function calls name namespace members by their upstream name.
    let mut namespaced: HashMap<(String, String), String> = HashMap::new();
    if let Some(tools) = req.get("tools").filter(|v| !v.is_null()) {
        let Value::Array(tools) = tools else {
            return Err(bad("tools", "'tools' must be an array"));
        };
        let mut out = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
            match kind {
                "function" => out.push(function_tool(tool, None, &format!("tools[{i}]"))?),
                "namespace" => {
                    let ns = tool.get("name").and_then(Value::as_str).unwrap_or("");
                    let members = tool.get("tools").and_then(Value::as_array);
                    for (j, m) in members.into_iter().flatten().enumerate() {
                        if m.get("type").and_then(Value::as_str) != Some("function") {
                            t.omitted.insert("tools.namespace.tools".into());
                            continue;
                        }
                        let f = function_tool(m, Some(ns), &format!("tools[{i}].tools[{j}]"))?;
                        let upstream = f["function"]["name"].as_str().unwrap_or("").to_owned();
                        let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                        t.tool_names
                            .insert(upstream.clone(), format!("{ns}.{name}"));
                        namespaced.insert((ns.to_owned(), name.to_owned()), upstream);
                        out.push(f);
                    }
                }
                "" => return Err(bad(&format!("tools[{i}].type"), "a tool needs a 'type'")),
                other => {
                    t.omitted.insert(format!("tools.{other}"));
                }
            }
        }
        if !out.is_empty() {
            b.insert("tools".into(), Value::Array(out));
        }
    }
    let has_tools = b.contains_key("tools");

    let mut messages = Vec::new();
    if let Some(i) = req.get("instructions").filter(|v| !v.is_null()) {
        let Some(i) = i.as_str() else {
            return Err(bad("instructions", "'instructions' must be a string"));
        };
        messages.push(json!({ "role": "system", "content": i }));
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({ "role": "user", "content": s })),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("input[{i}]");
                let item = match item.get("type").and_then(Value::as_str) {
                    Some("item_reference") => {
                        let id = item.get("id").and_then(Value::as_str).unwrap_or("");
                        resolved
                            .get(id)
                            .ok_or_else(|| unknown_reference(&path, id))?
                    }
                    _ => item,
                };
                input_item(item, &path, &namespaced, &mut messages, &mut t.omitted)?;
            }
        }
        None | Some(Value::Null) => return Err(bad("input", "'input' is a required property")),
        Some(_) => {
            return Err(bad(
                "input",
                "'input' must be a string or an array of input items",
            ))
        }
    }
    if messages.is_empty() {
        return Err(bad("input", "'input' holds no message to answer"));
    }
    b.insert("messages".into(), Value::Array(messages));

    for (key, value) in req {
        let value_null = value.is_null();
        match key.as_str() {
            "instructions" | "tools" | "previous_response_id" | "conversation" | "background" => {}
            k if KEPT.contains(&k) => {}
            _ if value_null => {}
            "temperature" | "top_p" | "user" | "service_tier" | "safety_identifier" => {
                b.insert(key.clone(), value.clone());
            }
            "parallel_tool_calls" => {
                if has_tools {
                    b.insert(key.clone(), value.clone());
                }
            }
            "max_output_tokens" => {
                b.insert("max_tokens".into(), value.clone());
            }
            "tool_choice" => {
                if let Some(c) = tool_choice(value, &namespaced, &mut t.omitted) {
                    if has_tools {
                        b.insert("tool_choice".into(), c);
                    }
                }
            }
            "reasoning" => {
                if let Some(e) = value.get("effort").filter(|v| !v.is_null()) {
                    b.insert("reasoning_effort".into(), e.clone());
                }
                if let Value::Object(r) = value {
                    for k in r.keys().filter(|k| *k != "effort") {
                        if !r[k.as_str()].is_null() {
                            t.omitted.insert(format!("reasoning.{k}"));
                        }
                    }
                }
            }
            "text" => {
                if let Value::Object(o) = value {
                    for (k, v) in o {
                        match k.as_str() {
                            "format" => {
                                if let Some(f) = text_format(v)? {
                                    b.insert("response_format".into(), f);
                                }
                            }
                            "verbosity" if !v.is_null() => {
                                b.insert("verbosity".into(), v.clone());
                            }
                            _ if v.is_null() => {}
                            other => {
                                t.omitted.insert(format!("text.{other}"));
                            }
                        }
                    }
                }
            }
            "truncation" if value == "disabled" => {}
            "include" if value.as_array().is_some_and(Vec::is_empty) => {}
            other => {
                t.omitted.insert(other.to_owned());
            }
        }
    }
    b.insert("stream".into(), Value::Bool(true));
    b.insert("stream_options".into(), json!({ "include_usage": true }));
    Ok(t)
}

fn unknown_reference(path: &str, id: &str) -> GatewayError {
    bad(
        path,
        format!(
            "item_reference '{id}' is unknown or has expired: it must name an output item of a \
             response of your team that Sluice still retains; send the item itself instead"
        ),
    )
}

/// `{"type":"function","name":..}` (flat, Responses style) as a chat tool.
fn function_tool(tool: &Value, namespace: Option<&str>, path: &str) -> Result<Value, GatewayError> {
    let Some(name) = tool.get("name").and_then(Value::as_str) else {
        return Err(bad(
            &format!("{path}.name"),
            format!("'{path}.name' is required"),
        ));
    };
    let name = match namespace {
        Some(ns) => format!("{ns}__{name}"),
        None => name.to_owned(),
    };
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    for k in ["description", "parameters", "strict"] {
        if let Some(v) = tool.get(k).filter(|v| !v.is_null()) {
            f.insert(k.into(), v.clone());
        }
    }
    Ok(json!({ "type": "function", "function": f }))
}

/// The upstream name of a function the client names `name` in `namespace`.
fn upstream_name(
    name: &str,
    namespace: Option<&str>,
    namespaced: &HashMap<(String, String), String>,
) -> String {
    match namespace {
        Some(ns) => namespaced
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_else(|| format!("{ns}__{name}")),
        None => name.to_owned(),
    }
}

fn tool_choice(
    v: &Value,
    namespaced: &HashMap<(String, String), String>,
    omitted: &mut BTreeSet<String>,
) -> Option<Value> {
    match v {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(v.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str)?;
            let ns = o.get("namespace").and_then(Value::as_str);
            let name = upstream_name(name, ns, namespaced);
            Some(json!({ "type": "function", "function": { "name": name } }))
        }
        _ => {
            omitted.insert("tool_choice".into());
            None
        }
    }
}

fn text_format(v: &Value) -> Result<Option<Value>, GatewayError> {
    match v.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({ "type": "json_object" }))),
        Some("json_schema") => {
            let mut s = Map::new();
            let name = v.get("name").and_then(Value::as_str).unwrap_or("response");
            s.insert("name".into(), json!(name));
            for k in ["schema", "strict", "description"] {
                if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                    s.insert(k.into(), x.clone());
                }
            }
            if !s.contains_key("schema") {
                return Err(bad(
                    "text.format.schema",
                    "'text.format.schema' is required for a json_schema format",
                ));
            }
            Ok(Some(json!({ "type": "json_schema", "json_schema": s })))
        }
        Some(other) => Err(bad(
            "text.format.type",
            format!("unknown text format '{other}' (use text, json_object or json_schema)"),
        )),
    }
}

/// One input item onto `messages`.
fn input_item(
    item: &Value,
    path: &str,
    namespaced: &HashMap<(String, String), String>,
    messages: &mut Vec<Value>,
    omitted: &mut BTreeSet<String>,
) -> Result<(), GatewayError> {
    let Value::Object(o) = item else {
        return Err(bad(path, format!("'{path}' must be an object")));
    };
    let kind = o.get("type").and_then(Value::as_str);
    match kind {
        // A message (`type` may be left out of an easy input message). Client-made ids on
        // messages (Codex's `msg_<uuid>`) are not references: they are ignored.
        None | Some("message") => {
            let role = match o.get("role").and_then(Value::as_str) {
                Some(r @ ("user" | "assistant" | "system")) => r,
                // Few OpenAI-compatible servers know `developer`; `system` means the same.
                Some("developer") => "system",
                Some(other) => {
                    return Err(bad(
                        &format!("{path}.role"),
                        format!(
                            "unknown role '{other}' (use user, assistant, system or developer)"
                        ),
                    ))
                }
                None => {
                    return Err(bad(
                        &format!("{path}.role"),
                        format!("'{path}.role' is required"),
                    ))
                }
            };
            let content = content(o.get("content"), role, path, omitted)?;
            messages.push(json!({ "role": role, "content": content }));
        }
        Some("function_call") => {
            let field = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
            let name = upstream_name(
                field("name"),
                o.get("namespace").and_then(Value::as_str),
                namespaced,
            );
            let call = json!({
                "id": field("call_id"),
                "type": "function",
                "function": { "name": name, "arguments": field("arguments") },
            });
            // Consecutive calls are one assistant message, as chat completions has them.
            if let Some(last) = messages.last_mut() {
                if last["role"] == "assistant" {
                    if let Some(calls) = last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        calls.push(call);
                        return Ok(());
                    }
                    if let Value::Object(m) = last {
                        m.insert("tool_calls".into(), json!([call]));
                        return Ok(());
                    }
                }
            }
            messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [call] }));
        }
        Some("function_call_output") => {
            let call_id = o.get("call_id").and_then(Value::as_str).unwrap_or("");
            let output = match o.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => text_of(parts),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(json!({ "role": "tool", "tool_call_id": call_id, "content": output }));
        }
        // Reasoning has no slot in a chat request; its text was the model's own.
        Some(other) => {
            omitted.insert(format!("input.{other}"));
        }
    }
    Ok(())
}

/// The text parts of `parts`, joined.
fn text_of(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A message's content: a string, or parts (text and images) for user messages with images.
fn content(
    v: Option<&Value>,
    role: &str,
    path: &str,
    omitted: &mut BTreeSet<String>,
) -> Result<Value, GatewayError> {
    let parts = match v {
        Some(Value::String(s)) => return Ok(json!(s)),
        None | Some(Value::Null) => return Ok(json!("")),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(bad(
                &format!("{path}.content"),
                format!("'{path}.content' must be a string or an array of content parts"),
            ))
        }
    };
    let mut out = Vec::new();
    let mut images = false;
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text" | "summary_text") => {
                let text = p.get("text").and_then(Value::as_str).unwrap_or("");
                out.push(json!({ "type": "text", "text": text }));
            }
            Some("refusal") => {
                let text = p.get("refusal").and_then(Value::as_str).unwrap_or("");
                out.push(json!({ "type": "text", "text": text }));
            }
            Some("input_image") if role == "user" => {
                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                    omitted.insert("input.content.input_image.file_id".into());
                    continue;
                };
                let mut image = Map::new();
                image.insert("url".into(), json!(url));
                if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                    image.insert("detail".into(), d.clone());
                }
                out.push(json!({ "type": "image_url", "image_url": image }));
                images = true;
            }
            Some(other) => {
                omitted.insert(format!("input.content.{other}"));
            }
            None => {}
        }
    }
    if images {
        return Ok(Value::Array(out));
    }
    Ok(json!(text_of(&out)))
}

#[cfg(test)]
mod tests;
