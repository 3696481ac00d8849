use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn tr(v: Value) -> Translated {
    translate(&obj(v), &HashMap::new()).expect("translates")
}

fn err(v: Value) -> String {
    let e = translate(&obj(v), &HashMap::new()).expect_err("refused");
    e.to_string()
}

#[test]
fn string_input_and_basics() {
    let t = tr(json!({
        "model": "m", "input": "Hi", "instructions": "Be brief", "stream": true,
        "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
        "metadata": {"a": "b"}, "store": true,
    }));
    assert!(t.stream);
    assert_eq!(
        Value::Object(t.body),
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief"},
                {"role": "user", "content": "Hi"},
            ],
            "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
            "stream": true, "stream_options": {"include_usage": true},
        })
    );
    assert!(t.omitted.is_empty());
}

#[test]
fn items_with_images_calls_and_outputs() {
    let t = tr(json!({
        "model": "m",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
            ]},
            {"type": "message", "role": "assistant", "id": "msg_abc",
             "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "one"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "two"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [{"type": "function", "name": "f", "description": "d",
                   "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        t.body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ]},
            {"role": "assistant", "content": "A cat.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        ])
    );
    assert_eq!(
        t.body["tools"],
        json!([{"type": "function", "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}, "strict": true}}])
    );
    assert_eq!(
        t.body["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(t.body["parallel_tool_calls"], json!(false));
    assert_eq!(
        t.omitted.into_iter().collect::<Vec<_>>(),
        vec!["input.reasoning"]
    );
}

/// What Codex 0.171 sends on every turn (trimmed from a captured request).
#[test]
fn codex_request_is_served_with_what_was_left_out_named() {
    let t = tr(json!({
        "model": "gpt-test", "stream": true,
        "input": [
            {"type": "message", "id": "msg_353ee229-317e-5e6e-aeb9-e0a2c14eb5bc", "role": "developer",
             "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "id": "msg_01a24ecb-7276-7e72-a70f-b016886fe519", "role": "user",
             "content": [{"type": "input_text", "text": "<env/>"}, {"type": "input_text", "text": "say hi"}]},
            {"type": "function_call", "call_id": "c9", "name": "spawn_agent",
             "namespace": "multi_agent_v1", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c9", "output": "ok"},
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command",
             "strict": false, "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
            {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
             "tools": [{"type": "function", "name": "spawn_agent", "strict": false,
                        "parameters": {"type": "object"}}]},
            {"type": "web_search", "external_web_access": false},
        ],
        "tool_choice": "auto", "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"}, "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "01a24ecb", "client_metadata": {"x-codex-installation-id": "i"},
    }));
    assert_eq!(
        t.body["messages"],
        json!([
            {"role": "system", "content": "You are Codex."},
            {"role": "user", "content": "<env/>\nsay hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c9", "type": "function",
                 "function": {"name": "multi_agent_v1__spawn_agent", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c9", "content": "ok"},
        ])
    );
    let names: Vec<&str> = t.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exec_command", "multi_agent_v1__spawn_agent"]);
    assert_eq!(
        t.tool_names
            .get("multi_agent_v1__spawn_agent")
            .map(String::as_str),
        Some("multi_agent_v1.spawn_agent")
    );
    assert_eq!(t.body["tool_choice"], json!("auto"));
    assert!(!t.body.contains_key("reasoning_effort"));
    assert_eq!(
        t.omitted.into_iter().collect::<Vec<_>>(),
        vec![
            "client_metadata",
            "include",
            "prompt_cache_key",
            "reasoning.summary",
            "tools.web_search"
        ]
    );
}

#[test]
fn effort_and_formats() {
    let t = tr(json!({
        "model": "m", "input": "x", "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "out", "strict": true,
                            "schema": {"type": "object"}}},
    }));
    assert_eq!(t.body["reasoning_effort"], json!("low"));
    assert_eq!(
        t.body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    let t = tr(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}));
    assert_eq!(t.body["response_format"], json!({"type": "json_object"}));
    let t = tr(json!({"model": "m", "input": "x", "text": {"format": {"type": "text"}}}));
    assert!(!t.body.contains_key("response_format"));
}

#[test]
fn refusals_name_the_field() {
    assert!(
        err(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}))
            .contains("previous_response_id")
    );
    assert!(err(json!({"model": "m", "input": "x", "background": true})).contains("background"));
    assert!(err(json!({"model": "m", "input": "x", "conversation": "c"})).contains("conversation"));
    assert!(err(json!({"input": "x"})).contains("model"));
    assert!(err(json!({"model": "m"})).contains("input"));
    assert!(err(json!({"model": "m", "input": 3})).contains("input"));
    // background false and a null previous_response_id are fine.
    tr(json!({"model": "m", "input": "x", "background": false, "previous_response_id": null}));
}

#[test]
fn references_resolve_or_fail() {
    let req = obj(json!({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "item_reference", "id": "msg_S_0"},
        {"type": "item_reference", "id": "msg_S_0"},
        {"role": "user", "content": "again"},
    ]}));
    assert_eq!(references(&req).unwrap(), vec!["msg_S_0".to_owned()]);
    let e = translate(&req, &HashMap::new()).unwrap_err().to_string();
    assert!(
        e.contains("msg_S_0") && e.contains("unknown or has expired"),
        "{e}"
    );
    let resolved = HashMap::from([(
        "msg_S_0".to_owned(),
        json!({"id": "msg_S_0", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]}),
    )]);
    let t = translate(&req, &resolved).unwrap();
    assert_eq!(
        t.body["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "again"},
        ])
    );
}

#[test]
fn the_omitted_header_is_bounded() {
    assert_eq!(omitted_header(&BTreeSet::new()), None);
    let t = tr(json!({"model": "m", "input": "x", "top_logprobs": 3, "include": ["a"]}));
    assert_eq!(omitted_header(&t.omitted).unwrap(), "include, top_logprobs");
    let mut many: BTreeSet<String> = (0..40).map(|i| format!("f{i:02}")).collect();
    many.insert("x".repeat(65));
    many.insert("bad\nname".into());
    let h = omitted_header(&many).unwrap();
    assert!(h.starts_with("f00, f01, "), "{h}");
    assert!(h.ends_with(", +10 more"), "{h}");
    assert!(!h.contains("xxx") && !h.contains('\n'));
}
