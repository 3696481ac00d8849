use serde_json::{json, Value};

use super::*;
use crate::provider::UpstreamRequest;
use crate::{AnthropicNative, ChatRequest};

/// A gateway request for target model `claude-sonnet-4-5` carrying the client's own body.
fn native(body: Value, version: Option<&str>, beta: Option<&str>) -> ChatRequest {
    let mut req = ChatRequest::parse(
        br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"translated"}]}"#,
    )
    .unwrap();
    let Value::Object(body) = body else { panic!() };
    req.anthropic = Some(AnthropicNative {
        body,
        version: version.map(str::to_owned),
        beta: beta.map(str::to_owned),
    });
    req
}

fn body_of(up: &UpstreamRequest) -> Value {
    serde_json::from_slice(&up.body).unwrap()
}

fn header<'a>(up: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
    let mut it = up.headers.iter().filter(|(k, _)| *k == name);
    let first = it.next().map(|(_, v)| v.as_str());
    assert!(it.next().is_none(), "{name} sent twice");
    first
}

/// What Claude Code sends (shortened): every field must reach Anthropic as it is.
fn claude_code_body() -> Value {
    json!({
        "model": "claude-alias",
        "stream": false,
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"s\"}"},
        "tools": [
            {"name": "Bash", "description": "Run", "input_schema": {"type": "object"}},
            {"name": "Later", "description": "Deferred", "input_schema": {"type": "object"}, "defer_loading": true}
        ],
        "tool_choice": {"type": "auto"},
        "temperature": 1,
        "x_future_field": {"kept": [1, 2]},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>a</system-reminder>"},
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "signed", "signature": "EqQBsig"},
                {"type": "thinking", "thinking": "from elsewhere", "signature": ""},
                {"type": "thinking", "thinking": "no signature at all"},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"cmd": "ls"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "only unsigned thinking", "signature": null}
            ]},
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": []}
        ]
    })
}

#[test]
fn the_clients_body_goes_as_it_came_with_the_targets_model_and_streaming() {
    let req = native(
        claude_code_body(),
        Some("2023-06-01"),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14"),
    );
    let up = build_request(DEFAULT_BASE_URL, Some("sk-ant-provider"), &req, true).unwrap();
    assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
    assert_eq!(header(&up, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        header(&up, "anthropic-beta"),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14")
    );
    assert_eq!(header(&up, "x-api-key"), Some("sk-ant-provider"));
    assert_eq!(header(&up, "accept"), Some("text/event-stream"));
    assert_eq!(header(&up, "content-type"), Some("application/json"));
    assert_eq!(header(&up, "authorization"), None);

    let mut want = claude_code_body();
    want["model"] = json!("claude-sonnet-4-5");
    want["stream"] = json!(true);
    // Unsigned thinking is left out; signed and redacted thinking stay, in order; the turn
    // that was only unsigned thinking goes; the client's own empty message stays.
    want["messages"][1]["content"] = json!([
        {"type": "thinking", "thinking": "signed", "signature": "EqQBsig"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"cmd": "ls"}}
    ]);
    want["messages"].as_array_mut().unwrap().remove(3);
    assert_eq!(body_of(&up), want);

    // The non-streaming call (and its own translation is not used at all).
    let up = build_request(DEFAULT_BASE_URL, None, &req, false).unwrap();
    assert_eq!(body_of(&up)["stream"], json!(false));
    assert_eq!(header(&up, "accept"), None);
    assert_eq!(header(&up, "x-api-key"), None);
    assert!(!String::from_utf8_lossy(&up.body).contains("translated"));
}

#[test]
fn without_the_clients_headers_the_adapters_version_and_no_beta() {
    for (version, beta) in [(None, None), (Some(""), Some(" "))] {
        let req = native(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            version,
            beta,
        );
        let up = build_request("http://127.0.0.1:9/v1", Some("k"), &req, true).unwrap();
        assert_eq!(up.url, "http://127.0.0.1:9/v1/messages");
        assert_eq!(header(&up, "anthropic-version"), Some(API_VERSION));
        assert_eq!(header(&up, "anthropic-beta"), None);
        assert_eq!(
            body_of(&up),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]})
        );
    }
}

#[test]
fn a_client_version_is_sent_as_given() {
    let req = native(json!({"messages": []}), Some("2024-01-01"), None);
    let up = build_request("", None, &req, true).unwrap();
    assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
    assert_eq!(header(&up, "anthropic-version"), Some("2024-01-01"));
}

#[test]
fn count_tokens_takes_only_the_keys_its_endpoint_knows() {
    let req = native(claude_code_body(), None, Some("token-counting-2024-11-01"));
    let up = build_count_tokens("https://gw.example/anthropic/v1", Some("k"), &req).unwrap();
    assert_eq!(
        up.url,
        "https://gw.example/anthropic/v1/messages/count_tokens"
    );
    let up = build_count_tokens("https://api.anthropic.com", Some("k"), &req).unwrap();
    assert_eq!(up.url, "https://api.anthropic.com/v1/messages/count_tokens");
    assert_eq!(
        header(&up, "anthropic-beta"),
        Some("token-counting-2024-11-01")
    );
    assert_eq!(header(&up, "anthropic-version"), Some(API_VERSION));
    assert_eq!(header(&up, "x-api-key"), Some("k"));
    assert_eq!(header(&up, "accept"), None);
    let body = body_of(&up);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "messages",
            "model",
            "system",
            "thinking",
            "tool_choice",
            "tools"
        ]
    );
    let full = claude_code_body();
    assert_eq!(body["model"], json!("claude-sonnet-4-5"));
    for k in ["system", "thinking", "tool_choice", "tools"] {
        assert_eq!(body[k], full[k], "{k}");
    }
    assert_eq!(body["messages"].as_array().unwrap().len(), 5);
    assert!(!body["messages"].to_string().contains("unsigned"));
    assert!(!body["messages"].to_string().contains("from elsewhere"));

    // Only what the client sent: no keys made up.
    let req = native(
        json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
        None,
        None,
    );
    let up = build_count_tokens("", None, &req).unwrap();
    assert_eq!(
        body_of(&up),
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[test]
fn a_chat_completions_request_has_no_upstream_count() {
    let req =
        ChatRequest::parse(br#"{"model":"c","messages":[{"role":"user","content":"x"}]}"#).unwrap();
    assert!(build_count_tokens(DEFAULT_BASE_URL, Some("k"), &req).is_none());
}

#[test]
fn the_count_is_input_tokens() {
    assert_eq!(
        counted_tokens(&json!({"input_tokens": 2095})).unwrap(),
        2095
    );
    assert!(matches!(
        counted_tokens(&json!({"tokens": 3})),
        Err(crate::AdapterError::Protocol(_))
    ));
}

#[test]
fn other_kinds_send_the_translation_and_none_of_the_clients_own_headers() {
    let req = native(claude_code_body(), Some("2023-06-01"), Some("beta-1"));
    let openai = crate::openai::build_request("http://h/v1", Some("k"), &req, true);
    let azure = crate::azure::build_request("http://h", "2024-10-21", Some("k"), &req, true);
    for up in [openai, azure] {
        let body = body_of(&up);
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "translated"}])
        );
        assert!(
            body.get("thinking").is_none() && body.get("system").is_none(),
            "{body}"
        );
        assert!(up.headers.iter().all(|(k, _)| !k.starts_with("anthropic")));
    }
}
