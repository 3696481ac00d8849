use serde_json::{json, Value};

use super::translate;
use crate::error::GatewayError;

fn tr(body: Value) -> Value {
    Value::Object(translate(body.as_object().unwrap()).unwrap())
}

fn param(body: Value) -> String {
    match translate(body.as_object().unwrap()) {
        Err(GatewayError::BadRequest { param, .. }) => param.unwrap(),
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn text_system_and_sampling() {
    let got = tr(json!({
        "model": "claude-x",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]}
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "stop_sequences": ["X", "Y"],
        "metadata": {"user_id": "u-1"},
        "stream": false
    }));
    assert_eq!(
        got,
        json!({
            "model": "claude-x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "a\n\nb"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["X", "Y"],
            "user": "u-1"
        })
    );
}

#[test]
fn system_blocks_drop_the_billing_line() {
    let got = tr(json!({
        "model": "m",
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Two."}
        ],
        "messages": [{"role": "user", "content": "q"}]
    }));
    assert_eq!(
        got["messages"][0],
        json!({"role": "system", "content": "One.\n\nTwo."})
    );
}

#[test]
fn system_turns_join_the_system_prompt() {
    // Claude Code (with its per-turn-control beta) puts `role: "system"` among the messages.
    let got = tr(json!({
        "model": "m",
        "system": [{"type": "text", "text": "Top."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "system", "content": [{"type": "text", "text": "Env.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "More."}
        ],
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "medium"}
    }));
    assert_eq!(
        got["messages"],
        json!([
            {"role": "system", "content": "Top.\n\nEnv.\n\nMore."},
            {"role": "user", "content": "hi"}
        ])
    );
    assert!(got.get("response_format").is_none());
    let got = tr(json!({"model": "m", "messages": [
        {"role": "system", "content": "Only."}, {"role": "user", "content": "q"}
    ]}));
    assert_eq!(
        got["messages"][0],
        json!({"role": "system", "content": "Only."})
    );
}

#[test]
fn images_base64_and_url() {
    let got = tr(json!({
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
            {"type": "text", "text": "What is this?"}
        ]}]
    }));
    assert_eq!(
        got["messages"],
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            {"type": "text", "text": "What is this?"}
        ]}])
    );
}

#[test]
fn tools_tool_use_and_tool_result() {
    let got = tr(json!({
        "model": "m",
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}},
            {"name": "Later", "description": "d", "input_schema": {"type": "object"}, "defer_loading": true},
            {"type": "custom", "name": "c", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And?"}
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "c", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true}]}
        ]
    }));
    assert_eq!(
        got["tools"],
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "Later", "description": "d", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "c", "parameters": {"type": "object"}}}
        ])
    );
    assert_eq!(got["tool_choice"], "required");
    assert_eq!(got["parallel_tool_calls"], false);
    assert_eq!(
        got["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "user", "content": "And?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_2", "type": "function", "function": {"name": "c", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"}
        ])
    );
}

#[test]
fn tool_choices() {
    let choice = |c: Value| {
        tr(
            json!({"model": "m", "messages": [{"role": "user", "content": "q"}],
                  "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": c}),
        )
    };
    assert_eq!(choice(json!({"type": "auto"}))["tool_choice"], "auto");
    assert_eq!(choice(json!({"type": "none"}))["tool_choice"], "none");
    assert_eq!(
        choice(json!({"type": "tool", "name": "f"}))["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    // No tools to call (only server tools, or none): no tool_choice either.
    let got = tr(
        json!({"model": "m", "messages": [{"role": "user", "content": "q"}], "tool_choice": {"type": "any"}}),
    );
    assert!(got.get("tool_choice").is_none() && got.get("tools").is_none());
}

#[test]
fn claude_codes_extras_are_dropped() {
    let got = tr(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "thinking": {"budget_tokens": 31999, "type": "enabled", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": format!("{{\"device_id\":\"{}\"}}", "a".repeat(300))},
        "stop_sequences": ["1", "2", "3", "4", "5", ""],
        "output_format": {"type": "json_schema", "schema": {"type": "object"}},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": true
    }));
    assert!(got.get("thinking").is_none());
    assert!(got.get("context_management").is_none());
    // 32000 is Claude Code's "no limit", which an OpenAI-compatible server would refuse.
    assert!(got.get("max_tokens").is_none());
    assert!(got.get("user").is_none());
    assert_eq!(got["stop"], json!(["1", "2", "3", "4"]));
    assert_eq!(
        got["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}})
    );
}

#[test]
fn what_is_refused() {
    assert_eq!(param(json!({"messages": []})), "model");
    assert_eq!(param(json!({"model": "m"})), "messages");
    assert_eq!(param(json!({"model": "m", "messages": "hi"})), "messages");
    assert_eq!(
        param(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})),
        "messages[0]"
    );
    assert_eq!(
        param(json!({"model": "m", "messages": [{"role": "user", "content": 3}]})),
        "messages[0]"
    );
}
