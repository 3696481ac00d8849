//! The client's own Messages request (`POST /v1/messages` on the gateway), sent to an Anthropic
//! upstream as it came: every field the client set (system blocks with `cache_control`,
//! `thinking`, tools, `tool_choice`, `metadata`, `context_management`, beta fields) reaches
//! Anthropic unchanged. Only three things change: the model is the serving target's, `stream`
//! is what the gateway's call needs, and thinking blocks without a signature are left out.
//!
//! Why those blocks: a thinking block a client sends back must carry the signature Anthropic
//! gave it. Thinking produced by another kind of upstream (the same conversation served through
//! a route's other target) reaches the client with no signature, and Anthropic rejects the
//! whole request when such a block comes back. Dropping it loses nothing Anthropic could use.

use serde_json::{Map, Value};

use crate::AnthropicNative;

/// The keys `POST /v1/messages/count_tokens` takes; any other key is rejected by it.
const COUNT_TOKENS_KEYS: [&str; 5] = ["messages", "system", "tools", "tool_choice", "thinking"];

/// The body of the Messages request for `native`, with `model` and `stream` set.
pub(super) fn message_body(
    native: &AnthropicNative,
    model: &str,
    stream: bool,
) -> Map<String, Value> {
    let mut body = native.body.clone();
    body.insert("model".into(), Value::String(model.to_owned()));
    body.insert("stream".into(), Value::Bool(stream));
    if let Some(messages) = body.get_mut("messages") {
        drop_unsigned_thinking(messages);
    }
    body
}

/// The body of the token count for `native`: the keys the endpoint takes, as the client sent
/// them, with `model` set.
pub(super) fn count_tokens_body(native: &AnthropicNative, model: &str) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(model.to_owned()));
    for key in COUNT_TOKENS_KEYS {
        if let Some(v) = native.body.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    if let Some(messages) = body.get_mut("messages") {
        drop_unsigned_thinking(messages);
    }
    body
}

/// Removes `thinking` blocks whose `signature` is missing or empty from every message's
/// content; a message left with no content at all is removed too (Anthropic rejects empty
/// messages, and an assistant turn that was only unsigned thinking said nothing it can read).
fn drop_unsigned_thinking(messages: &mut Value) {
    let Value::Array(messages) = messages else {
        return;
    };
    messages.retain_mut(|m| {
        let Some(Value::Array(content)) = m.get_mut("content") else {
            return true;
        };
        let before = content.len();
        content.retain(|b| !is_unsigned_thinking(b));
        // Only a message this emptied goes; one the client sent empty stays its own mistake.
        !(before > 0 && content.is_empty())
    });
}

fn is_unsigned_thinking(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("thinking")
        && block
            .get("signature")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
}
