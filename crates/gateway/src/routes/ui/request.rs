//! What the AI SDK's `DefaultChatTransport` sends (`id` of the chat, `messages` as UI messages
//! with `parts`, `trigger`, `messageId`, and whatever the transport's `body` option adds, such
//! as `model`), translated into a chat-completions body. Pure: no I/O, tested with literals.
//!
//! - `text` parts are the message's text; `reasoning` parts are dropped (a model's thoughts are
//!   not sent back to it); `step-start`, `source-*`, `data-*` and other display parts are
//!   dropped too.
//! - `file` parts with an image media type are `image_url` content parts (their `url`, a data
//!   URL or a link); other files are dropped.
//! - Tool parts (`tool-NAME` or `dynamic-tool`) whose outcome is known (`output-available`,
//!   `output-error`, `output-denied`) become the assistant's `tool_calls` and the `tool`
//!   messages that answer them, step by step (`step-start` splits an assistant message into
//!   one chat message per step). A call without an outcome yet is left out: an upstream
//!   rejects a tool call that no tool message answers.

use serde_json::{json, Map, Value};

/// The longest chat id accepted (it is a key of the chat → stream mapping).
pub const MAX_CHAT_ID_BYTES: usize = 256;

/// Chat-completions parameters the transport's `body` option may carry, passed on as they are.
const PASSED_ON: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "frequency_penalty",
    "presence_penalty",
    // The demo model's test knobs (see `mock_upstream`), which it ignores unless enabled.
    "mock",
];

/// A request that cannot be translated: the parameter at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub param: String,
    pub message: String,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        param: param.into(),
        message: message.into(),
    }
}

/// A translated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The chat's id, which `GET /v1/ui/chat/{chatId}/stream` finds the stream by.
    pub chat_id: String,
    /// The chat-completions body (always a stream with usage: every answer runs as a relay
    /// stream). Its `model` is absent when the request named none.
    pub body: Map<String, Value>,
    /// The id of the assistant message this answer continues, when the last message is the
    /// assistant's (the transport sends the tool outputs a page added to the last answer,
    /// `sendAutomaticallyWhen`): the SDK appends the answer to that message.
    pub continues: Option<String>,
}

/// Translates the transport's request body. `default_model` is used when it names none.
pub fn translate(body: &Value, default_model: Option<&str>) -> Result<Translated, Invalid> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("body", "the request body must be a JSON object"))?;
    let chat_id = chat_id(obj.get("id"))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.as_str()),
        None | Some(Value::Null) => default_model,
        Some(_) => return Err(invalid("model", "'model' must be a non-empty string")),
    };
    let Some(Value::Array(ui)) = obj.get("messages") else {
        return Err(invalid(
            "messages",
            "'messages' must be an array of UI messages",
        ));
    };
    let mut messages = Vec::with_capacity(ui.len() + 1);
    match obj.get("system") {
        Some(Value::String(s)) if !s.is_empty() => {
            messages.push(json!({ "role": "system", "content": s }));
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err(invalid("system", "'system' must be a string")),
    }
    for (i, m) in ui.iter().enumerate() {
        message(&mut messages, m, i)?;
    }
    if messages.is_empty() {
        return Err(invalid("messages", "'messages' holds no text to send"));
    }
    let mut out = Map::new();
    if let Some(m) = model {
        out.insert("model".into(), Value::String(m.to_owned()));
    }
    out.insert("messages".into(), Value::Array(messages));
    for key in PASSED_ON {
        if let Some(v) = obj.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).into(), v.clone());
        }
    }
    out.insert("stream".into(), Value::Bool(true));
    out.insert("stream_options".into(), json!({ "include_usage": true }));
    let continues = ui
        .last()
        .filter(|m| str_of(m, "role") == Some("assistant"))
        .and_then(|m| str_of(m, "id"))
        .filter(|id| !id.is_empty() && id.len() <= MAX_CHAT_ID_BYTES)
        .map(str::to_owned);
    Ok(Translated {
        chat_id,
        body: out,
        continues,
    })
}

/// A chat id: a non-empty string of at most [`MAX_CHAT_ID_BYTES`] bytes.
pub fn chat_id(v: Option<&Value>) -> Result<String, Invalid> {
    match v {
        Some(Value::String(id)) => check_chat_id(id).map(|()| id.clone()),
        _ => Err(invalid("id", "'id' (the chat's id) must be a string")),
    }
}

/// Whether `id` may name a chat (see [`MAX_CHAT_ID_BYTES`]).
pub fn check_chat_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(invalid("id", "the chat id must not be empty"));
    }
    if id.len() > MAX_CHAT_ID_BYTES {
        return Err(invalid(
            "id",
            format!("the chat id is longer than {MAX_CHAT_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn message(out: &mut Vec<Value>, m: &Value, i: usize) -> Result<(), Invalid> {
    let param = format!("messages[{i}]");
    let role = str_of(m, "role")
        .ok_or_else(|| invalid(format!("{param}.role"), "a message needs a 'role'"))?;
    let parts = match m.get("parts") {
        Some(Value::Array(p)) => p.as_slice(),
        // Tolerated: older clients sent `content` as a string.
        None => &[],
        Some(_) => {
            return Err(invalid(
                format!("{param}.parts"),
                "'parts' must be an array",
            ))
        }
    };
    let legacy = str_of(m, "content").filter(|_| parts.is_empty());
    match role {
        "system" => {
            let text = legacy.map_or_else(|| texts(parts), str::to_owned);
            if !text.is_empty() {
                out.push(json!({ "role": "system", "content": text }));
            }
        }
        "user" => {
            if let Some(t) = legacy {
                out.push(json!({ "role": "user", "content": t }));
            } else if let Some(content) = user_content(parts) {
                out.push(json!({ "role": "user", "content": content }));
            }
        }
        "assistant" => {
            if let Some(t) = legacy {
                out.push(json!({ "role": "assistant", "content": t }));
            } else {
                assistant(out, parts);
            }
        }
        other => {
            return Err(invalid(
                format!("{param}.role"),
                format!("unknown role '{other}' (system, user or assistant)"),
            ))
        }
    }
    Ok(())
}

/// The text parts, joined.
fn texts(parts: &[Value]) -> String {
    parts
        .iter()
        .filter(|p| str_of(p, "type") == Some("text"))
        .filter_map(|p| str_of(p, "text"))
        .collect::<Vec<_>>()
        .join("")
}

/// A user message's content: a string when it is only text, else content parts.
fn user_content(parts: &[Value]) -> Option<Value> {
    let mut items = Vec::new();
    let mut images = false;
    for p in parts {
        match str_of(p, "type") {
            Some("text") => {
                if let Some(t) = str_of(p, "text") {
                    items.push(json!({ "type": "text", "text": t }));
                }
            }
            Some("file") => {
                let image = str_of(p, "mediaType").is_some_and(|t| t.starts_with("image/"));
                if let (true, Some(url)) = (image, str_of(p, "url")) {
                    images = true;
                    items.push(json!({ "type": "image_url", "image_url": { "url": url } }));
                }
            }
            _ => {}
        }
    }
    if items.is_empty() {
        return None;
    }
    if images {
        return Some(Value::Array(items));
    }
    Some(Value::String(texts(parts)))
}

/// One step of an assistant message: its text, its tool calls, their results.
#[derive(Default)]
struct Step {
    text: String,
    calls: Vec<Value>,
    results: Vec<Value>,
}

impl Step {
    fn flush(&mut self, out: &mut Vec<Value>) {
        let s = std::mem::take(self);
        if s.text.is_empty() && s.calls.is_empty() {
            return;
        }
        let mut m = Map::new();
        m.insert("role".into(), "assistant".into());
        m.insert(
            "content".into(),
            if s.text.is_empty() {
                Value::Null
            } else {
                Value::String(s.text)
            },
        );
        if !s.calls.is_empty() {
            m.insert("tool_calls".into(), Value::Array(s.calls));
        }
        out.push(Value::Object(m));
        out.extend(s.results);
    }
}

fn assistant(out: &mut Vec<Value>, parts: &[Value]) {
    let mut step = Step::default();
    for p in parts {
        let kind = str_of(p, "type").unwrap_or("");
        match kind {
            "step-start" => step.flush(out),
            "text" => {
                if let Some(t) = str_of(p, "text") {
                    step.text.push_str(t);
                }
            }
            _ if kind == "dynamic-tool" || kind.starts_with("tool-") => {
                let name = if kind == "dynamic-tool" {
                    str_of(p, "toolName")
                } else {
                    kind.strip_prefix("tool-")
                };
                if let (Some(name), Some(call)) = (name, tool(p)) {
                    let id = str_of(p, "toolCallId").unwrap_or("");
                    let input = p.get("input").cloned().unwrap_or_else(|| json!({}));
                    step.calls.push(json!({
                        "id": id,
                        "type": "function",
                        "function": { "name": name, "arguments": input.to_string() },
                    }));
                    step.results.push(json!({
                        "role": "tool",
                        "tool_call_id": id,
                        "content": call,
                    }));
                }
            }
            // Reasoning, sources, files, data parts: not sent back.
            _ => {}
        }
    }
    step.flush(out);
}

/// A tool part's result as a tool message's content, if its outcome is known.
fn tool(p: &Value) -> Option<String> {
    match str_of(p, "state")? {
        "output-available" => Some(match p.get("output") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }),
        "output-error" => Some(format!(
            "Error: {}",
            str_of(p, "errorText").unwrap_or("the tool failed")
        )),
        "output-denied" => Some("The user denied this tool call.".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(messages: Value) -> Value {
        json!({ "id": "chat-1", "messages": messages, "trigger": "submit-message", "messageId": null })
    }

    fn messages(t: &Translated) -> Value {
        t.body["messages"].clone()
    }

    #[test]
    fn text_parts_with_the_default_model_and_a_stream_with_usage() {
        let t = translate(
            &body(json!([
                { "id": "m1", "role": "system", "parts": [{ "type": "text", "text": "Be brief." }] },
                { "id": "m2", "role": "user", "parts": [
                    { "type": "text", "text": "Hello " }, { "type": "text", "text": "there" }
                ] }
            ])),
            Some("sluice-demo"),
        )
        .unwrap();
        assert_eq!(t.chat_id, "chat-1");
        assert_eq!(t.continues, None);
        assert_eq!(
            Value::Object(t.body),
            json!({
                "model": "sluice-demo",
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": "Hello there" }
                ],
                "stream": true,
                "stream_options": { "include_usage": true }
            })
        );
    }

    #[test]
    fn the_body_options_model_and_parameters_win() {
        let mut b = body(json!([{ "role": "user", "parts": [{ "type": "text", "text": "hi" }] }]));
        b["model"] = json!("gpt-4o");
        b["temperature"] = json!(0.2);
        b["system"] = json!("Answer in French.");
        b["unknown_option"] = json!(1);
        let t = translate(&b, Some("sluice-demo")).unwrap();
        assert_eq!(t.body["model"], "gpt-4o");
        assert_eq!(t.body["temperature"], 0.2);
        assert!(t.body.get("unknown_option").is_none());
        assert_eq!(
            messages(&t)[0],
            json!({ "role": "system", "content": "Answer in French." })
        );
    }

    #[test]
    fn reasoning_is_dropped_and_tool_parts_become_calls_and_results() {
        let t = translate(
            &body(json!([
                { "role": "user", "parts": [{ "type": "text", "text": "Weather?" }] },
                { "role": "assistant", "parts": [
                    { "type": "step-start" },
                    { "type": "reasoning", "text": "I should call the tool." },
                    { "type": "text", "text": "Checking." },
                    { "type": "tool-weather", "toolCallId": "call_1", "state": "output-available",
                      "input": { "city": "Paris" }, "output": { "temp": 21 } },
                    { "type": "dynamic-tool", "toolName": "clock", "toolCallId": "call_2",
                      "state": "output-error", "input": {}, "errorText": "no clock" },
                    { "type": "tool-pending", "toolCallId": "call_3", "state": "input-available",
                      "input": {} },
                    { "type": "step-start" },
                    { "type": "text", "text": "It is 21 degrees." }
                ] }
            ])),
            Some("m"),
        )
        .unwrap();
        assert_eq!(
            messages(&t),
            json!([
                { "role": "user", "content": "Weather?" },
                { "role": "assistant", "content": "Checking.", "tool_calls": [
                    { "id": "call_1", "type": "function",
                      "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                    { "id": "call_2", "type": "function",
                      "function": { "name": "clock", "arguments": "{}" } }
                ] },
                { "role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}" },
                { "role": "tool", "tool_call_id": "call_2", "content": "Error: no clock" },
                { "role": "assistant", "content": "It is 21 degrees." }
            ])
        );
        // The last message is the user's: a new answer, not a continuation.
        assert_eq!(t.continues, None);
    }

    #[test]
    fn tool_outputs_sent_back_continue_the_last_assistant_message() {
        let t = translate(
            &body(json!([
                { "id": "u1", "role": "user", "parts": [{ "type": "text", "text": "Weather?" }] },
                { "id": "a1", "role": "assistant", "parts": [
                    { "type": "step-start" },
                    { "type": "tool-weather", "toolCallId": "c1", "state": "output-available",
                      "input": {}, "output": "sunny" }
                ] }
            ])),
            Some("m"),
        )
        .unwrap();
        assert_eq!(t.continues.as_deref(), Some("a1"));
        assert_eq!(
            messages(&t)[2],
            json!({ "role": "tool", "tool_call_id": "c1", "content": "sunny" })
        );
    }

    #[test]
    fn image_files_are_image_urls_and_other_files_are_dropped() {
        let t = translate(
            &body(json!([{ "role": "user", "parts": [
                { "type": "text", "text": "What is this?" },
                { "type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AAAA" },
                { "type": "file", "mediaType": "application/pdf", "url": "data:application/pdf;base64,AA" }
            ] }])),
            Some("m"),
        )
        .unwrap();
        assert_eq!(
            messages(&t),
            json!([{ "role": "user", "content": [
                { "type": "text", "text": "What is this?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } }
            ] }])
        );
    }

    #[test]
    fn bad_requests_name_their_parameter() {
        let err = |b: Value| translate(&b, Some("m")).unwrap_err().param;
        assert_eq!(err(json!([])), "body");
        assert_eq!(err(json!({ "messages": [] })), "id");
        assert_eq!(err(json!({ "id": "", "messages": [] })), "id");
        let long = "x".repeat(MAX_CHAT_ID_BYTES + 1);
        assert_eq!(err(json!({ "id": long, "messages": [] })), "id");
        assert_eq!(err(json!({ "id": "c" })), "messages");
        assert_eq!(err(json!({ "id": "c", "messages": [] })), "messages");
        assert_eq!(
            err(json!({ "id": "c", "messages": [{ "role": "tool", "parts": [] }] })),
            "messages[0].role"
        );
        assert_eq!(
            err(json!({ "id": "c", "model": 3, "messages": [] })),
            "model"
        );
        // No model and no default: the chat request's own check names `model` later.
        let t = translate(
            &body(json!([{ "role": "user", "parts": [{ "type": "text", "text": "hi" }] }])),
            None,
        )
        .unwrap();
        assert!(t.body.get("model").is_none());
    }
}
