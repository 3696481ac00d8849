//! What a request may cost, before and without the upstream's word: the caps on `max_tokens`,
//! `max_completion_tokens` and `n`, and the token estimates the team limits reserve and charge.
//!
//! The estimates are deliberately cheap, one rule everywhere: **a token per four bytes**
//! (rounded up) of what went upstream or came back. English text runs at about four bytes a
//! token; JSON punctuation and keys make the prompt side generous. It is an estimate for
//! admission and for charging work the upstream did not report, never a tokenizer.

use provider_adapter::{ChatRequest, ChoiceDelta};
use serde_json::Value;

use crate::error::GatewayError;

/// The most `max_tokens` / `max_completion_tokens` a request may ask for: 2^24 (16 777 216),
/// above the largest context window of any model today (10M), so no request a real model could
/// honour is refused, while the reservation `n × max_tokens` stays far from overflowing.
pub const MAX_TOKENS_CEILING: u64 = 1 << 24;

/// The most choices (`n`) a request may ask for: OpenAI's own limit.
pub const MAX_N: u64 = 128;

/// Refuses (400, naming the field) a request whose `max_tokens`, `max_completion_tokens` or `n`
/// is past its cap. The request parser has already checked that each is a positive integer
/// when present; a number too big for a u64 is refused there.
pub fn check_caps(req: &ChatRequest) -> Result<(), GatewayError> {
    let caps = [
        ("max_tokens", MAX_TOKENS_CEILING),
        ("max_completion_tokens", MAX_TOKENS_CEILING),
        ("n", MAX_N),
    ];
    for (field, cap) in caps {
        if let Some(v) = req.body.get(field).and_then(Value::as_u64) {
            if v > cap {
                return Err(GatewayError::bad_request(
                    field,
                    format!("'{field}' is {v}, more than the most Sluice accepts: {cap}"),
                ));
            }
        }
    }
    Ok(())
}

/// Tokens for `bytes` bytes of text or JSON: a token per four bytes, rounded up.
pub fn tokens_for_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// The prompt estimate: [`tokens_for_bytes`] over the whole request body as JSON (messages,
/// `tools`, `tool_choice`, `response_format`, ...: everything the upstream is sent), so a big
/// tool list is reserved like a long conversation. Counted by serialising into a byte counter:
/// no allocation, one pass over the body.
pub fn prompt_tokens(req: &ChatRequest) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Serialising a JSON map cannot fail, and the counter never does.
    let _ = serde_json::to_writer(&mut n, &req.body);
    tokens_for_bytes(n.0)
}

/// The most completion tokens the request may produce: `max_completion_tokens` or
/// `max_tokens` (else `default`), times `n`.
pub fn completion_budget(req: &ChatRequest, default: u64) -> u64 {
    let n = req
        .body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    req.max_tokens().unwrap_or(default).saturating_mul(n)
}

/// Bytes of generated text in one choice's `message`: every string under it (content,
/// reasoning, refusal, tool call names and arguments) but the bookkeeping ones (`role`, `type`,
/// `id`), which the model does not generate.
pub fn message_text_bytes(message: &Value) -> u64 {
    fn strings(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(strings).fold(0, u64::saturating_add),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "role" | "type" | "id"))
                .map(|(_, v)| strings(v))
                .fold(0, u64::saturating_add),
            _ => 0,
        }
    }
    strings(message)
}

/// Bytes of generated text in one streamed delta: the same strings as
/// [`message_text_bytes`] (content, reasoning, refusal, tool call names and arguments).
pub fn delta_text_bytes(d: &ChoiceDelta) -> u64 {
    let t = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() as u64);
    d.tool_calls
        .iter()
        .map(|c| t(&c.name).saturating_add(t(&c.arguments)))
        .fold(
            t(&d.content)
                .saturating_add(t(&d.reasoning))
                .saturating_add(t(&d.refusal)),
            u64::saturating_add,
        )
}

/// The completion estimate of a stream that ended without the upstream's usage, after
/// `events` events holding `text_bytes` bytes of text: the larger of a token per four bytes
/// and a token per event (an upstream that streams a token per event, as OpenAI does, is
/// charged at least that many even when its tokens are short).
pub fn streamed_completion_tokens(events: u64, text_bytes: u64) -> u64 {
    tokens_for_bytes(text_bytes).max(events)
}

/// The completion estimate of a non-streaming answer (OpenAI's `chat.completion` shape): the
/// text of every choice's message.
pub fn completion_tokens(answer: &Value) -> u64 {
    let bytes = answer
        .get("choices")
        .and_then(Value::as_array)
        .map_or(0, |choices| {
            choices
                .iter()
                .filter_map(|c| c.get("message"))
                .map(message_text_bytes)
                .fold(0, u64::saturating_add)
        });
    tokens_for_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatRequest {
        ChatRequest::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn refused(v: Value) -> (String, String) {
        match check_caps(&req(v)) {
            Err(GatewayError::BadRequest {
                param: Some(p),
                message,
            }) => (p, message),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn caps_name_the_field() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        for field in ["max_tokens", "max_completion_tokens"] {
            let (p, m) = refused(with(field, json!(u64::MAX)));
            assert_eq!(p, field);
            assert!(m.contains(field) && m.contains("16777216"), "{m}");
            assert_eq!(refused(with(field, json!(MAX_TOKENS_CEILING + 1))).0, field);
            assert!(check_caps(&req(with(field, json!(MAX_TOKENS_CEILING)))).is_ok());
        }
        assert_eq!(refused(with("n", json!(129))).0, "n");
        assert!(check_caps(&req(with("n", json!(128)))).is_ok());
        assert!(check_caps(&req(base)).is_ok());
    }

    #[test]
    fn the_prompt_estimate_is_the_whole_body() {
        let small = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let len = serde_json::to_vec(&small).unwrap().len() as u64;
        assert_eq!(prompt_tokens(&req(small.clone())), len.div_ceil(4));
        let mut tools = small.clone();
        tools["tools"] = json!([{"type": "function", "function": {"name": "f",
            "description": "x".repeat(400_000)}}]);
        assert!(prompt_tokens(&req(tools)) > 100_000);
        let mut schema = small;
        schema["response_format"] = json!({"type": "json_schema", "json_schema": {
            "name": "s", "schema": {"description": "y".repeat(4000)}}});
        assert!(prompt_tokens(&req(schema)) > 1000);
    }

    #[test]
    fn completion_budget_is_max_tokens_times_n() {
        let r = |v: Value| req(v);
        let m = json!([{"role": "user"}]);
        assert_eq!(
            completion_budget(&r(json!({"model": "m", "messages": m})), 7),
            7
        );
        assert_eq!(
            completion_budget(
                &r(json!({"model": "m", "messages": m, "max_tokens": 10, "n": 3})),
                7
            ),
            30
        );
        assert_eq!(
            completion_budget(
                &r(
                    json!({"model": "m", "messages": m, "max_completion_tokens": 5, "max_tokens": 10})
                ),
                7
            ),
            5
        );
        assert_eq!(
            completion_budget(&r(json!({"model": "m", "messages": m, "n": 2})), u64::MAX),
            u64::MAX
        );
    }

    #[test]
    fn completion_estimate_from_the_answer_text() {
        let answer = json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "abcd".repeat(25)}},
            {"index": 1, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]}},
        ]});
        // 100 bytes of text, then the name "f" and 7 bytes of arguments.
        assert_eq!(completion_tokens(&answer), (100u64 + 1 + 7).div_ceil(4));
        assert_eq!(completion_tokens(&json!({})), 0);
        let d = ChoiceDelta {
            content: Some("abcd".into()),
            reasoning: Some("ef".into()),
            tool_calls: vec![provider_adapter::ToolCallDelta {
                index: 0,
                id: Some("call_123".into()),
                name: Some("f".into()),
                arguments: Some("{}".into()),
            }],
            ..ChoiceDelta::default()
        };
        assert_eq!(delta_text_bytes(&d), 4 + 2 + 1 + 2);
        assert_eq!(streamed_completion_tokens(6, 400), 100);
        assert_eq!(streamed_completion_tokens(60, 40), 60);
        assert_eq!(completion_tokens(&json!({"choices": "x"})), 0);
    }
}
