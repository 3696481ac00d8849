use serde_json::{json, Value};

use super::stream::*;
use super::*;
use crate::provider::UpstreamRequest;
use crate::request::DEFAULT_MAX_TOKENS;
use crate::{AdapterError, ChatRequest};

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
    let (_, body) =
        build(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"service_tier":"flex"}"#)
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
        let (_, body) = build(&format!(r#"{{{base},{tools},"tool_choice":{choice}}}"#)).unwrap();
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
    let (param, _) = build_err(r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#);
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
