//! `kind = "azure"` and static provider `headers`, end to end: what reaches a scripted upstream
//! (path, query, key header, static headers) and what Azure's quirks look like to an OpenAI
//! client (no prompt-filter chunk, `content_filter` finish reason, a filtered prompt's 400).
//! (The config errors for both, through `sluice check-config`: crates/gateway/tests/cli_commands.rs.)

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, chat, check_openai_wire, chunks, content_of, data, finish_reasons,
    post_chat, provider, sse_steps,
};
use sluice_tests::scripted::{full_response, serve, ScriptedUpstream};
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(20);
const KEY: &str = "az-secret-key-1";

/// An azure provider `az` on the scripted upstream, serving `gpt-4o-prod`, with `extra` lines.
fn azure_config(up: &ScriptedUpstream, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"az\"\nkind = \"azure\"\nbase_url = \"http://{}\"\n\
         api_version = \"2024-10-21\"\napi_key_env = \"AZ_KEY\"\nmodels = [\"gpt-4o-prod\"]\n{extra}\n",
        up.addr
    )
}

/// The one request the upstream got: its head (lowercased) and its JSON body.
fn only_request(up: &ScriptedUpstream) -> (String, Value) {
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let (head, body) = &reqs[0];
    (
        head.to_ascii_lowercase(),
        serde_json::from_slice(body).expect("request body is JSON"),
    )
}

fn assert_azure_request(head: &str) {
    let first = head.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "post /openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21 http/1.1",
        "{head}"
    );
    assert!(
        head.lines().any(|l| l == format!("api-key: {KEY}")),
        "{head}"
    );
    assert!(!head.contains("authorization:"), "{head}");
}

fn azure_chunk(choices: Value) -> Value {
    json!({"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1_700_000_000,
           "model": "gpt-4o-2024-08-06", "choices": choices})
}

/// Azure's stream: the prompt-filter chunk (empty `choices`, no id), choices carrying
/// `content_filter_results`, a filtered end, the usage chunk.
fn azure_stream() -> String {
    let filter = json!({"hate": {"filtered": false, "severity": "safe"}});
    let mut s = data(
        &json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filter}]}),
    );
    s.push_str(&data(&azure_chunk(
        json!([{"index": 0, "content_filter_results": {},
        "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    )));
    s.push_str(&data(&azure_chunk(
        json!([{"index": 0, "content_filter_results": filter,
        "delta": {"content": "Once upon"}, "finish_reason": null}]),
    )));
    s.push_str(&data(&azure_chunk(json!([{"index": 0,
        "content_filter_results": {"violence": {"filtered": true, "severity": "high"}},
        "delta": {}, "finish_reason": "content_filter"}]))));
    let mut usage = azure_chunk(json!([]));
    usage["usage"] = json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11});
    s.push_str(&data(&usage));
    s.push_str("data: [DONE]\n\n");
    s
}

#[tokio::test]
async fn azure_stream_reaches_the_deployment_and_reads_as_openai() {
    let up = serve(sse_steps([azure_stream()])).await;
    let sluice = Gateway::builder()
        .config(&azure_config(&up, ""))
        .demo(false)
        .env(&[("AZ_KEY", KEY)])
        .start();
    for include_usage in [false, true] {
        let body = chat(
            "gpt-4o-prod",
            true,
            json!({"stream_options": {"include_usage": include_usage}}),
        );
        let got = post_chat(&sluice, &body, LIMIT).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let events = check_openai_wire(&got.body);
        assert_eq!(content_of(&events, 0), "Once upon");
        assert_eq!(
            finish_reasons(&events),
            vec![(0, "content_filter".to_owned())]
        );
        let empty: Vec<Value> = chunks(&events)
            .into_iter()
            .filter(|c| c["choices"].as_array().is_some_and(Vec::is_empty))
            .collect();
        // Only the usage chunk the client asked for has no choices; never the prompt filter.
        assert_eq!(empty.len(), usize::from(include_usage), "{empty:?}");
        assert!(!got.body.contains("prompt_filter_results"), "{}", got.body);
        if include_usage {
            assert_eq!(empty[0]["usage"]["total_tokens"], 11);
        }
    }
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    let head = reqs[0].0.to_ascii_lowercase();
    assert_azure_request(&head);
    let sent: Value = serde_json::from_slice(&reqs[0].1).expect("JSON");
    assert_eq!(sent["stream"], true);
    assert!(!String::from_utf8_lossy(&reqs[0].1).contains(KEY));
}

#[tokio::test]
async fn azure_non_streaming_keeps_the_filter_results() {
    let answer = json!({"id": "chatcmpl-az", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
        "choices": [{"index": 0, "finish_reason": "content_filter",
            "message": {"role": "assistant", "content": "Once"},
            "content_filter_results": {"violence": {"filtered": true, "severity": "high"}}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}});
    let up = serve(vec![full_response(
        200,
        "application/json",
        "",
        answer.to_string().as_bytes(),
    )])
    .await;
    let sluice = Gateway::builder()
        .config(&azure_config(&up, ""))
        .demo(false)
        .env(&[("AZ_KEY", KEY)])
        .start();
    let got = post_chat(&sluice, &chat("gpt-4o-prod", false, json!({})), LIMIT).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v = got.json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        v["choices"][0]["content_filter_results"]["violence"]["filtered"],
        true
    );
    let (head, sent) = only_request(&up);
    assert_azure_request(&head);
    assert_eq!(sent["stream"], false);
}

#[tokio::test]
async fn azure_filtered_prompt_is_the_upstreams_400() {
    let err = json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "type": null, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
    let up = serve(vec![full_response(
        400,
        "application/json",
        "",
        err.to_string().as_bytes(),
    )])
    .await;
    let sluice = Gateway::builder()
        .config(&azure_config(&up, ""))
        .demo(false)
        .env(&[("AZ_KEY", KEY)])
        .start();
    for stream in [true, false] {
        let got = post_chat(&sluice, &chat("gpt-4o-prod", stream, json!({})), LIMIT).await;
        assert_eq!(got.status, 400, "{}", got.body);
        let v = got.json();
        let e = assert_error_shape(&v);
        assert_eq!(e["code"], "content_filter", "{v}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("content management policy")),
            "{v}"
        );
    }
}

#[tokio::test]
async fn static_headers_reach_openai_and_anthropic_upstreams() {
    let openai_up = serve(sse_steps([data(
        &json!({"id": "c", "object": "chat.completion.chunk",
        "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"},
        "finish_reason": "stop"}]}),
    ) + "data: [DONE]\n\n"]))
    .await;
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1}});
    let anthropic_up = serve(vec![full_response(
        200,
        "application/json",
        "",
        message.to_string().as_bytes(),
    )])
    .await;
    let headers = "headers = { \"X-Title\" = \"Team chat\", \"HTTP-Referer\" = \"https://chat.example\", \"accept\" = \"text/event-stream, */*\" }\n";
    let config = format!(
        "{}\n{headers}\n{}\n{headers}\n",
        provider(
            "or",
            "openai",
            &openai_up.base_url(),
            &["gpt-*"],
            Some("OR_KEY")
        )
        .trim_end(),
        provider(
            "claude",
            "anthropic",
            &anthropic_up.base_url(),
            &["claude-*"],
            Some("AN_KEY")
        )
        .trim_end(),
    );
    let sluice = Gateway::builder()
        .config(&config)
        .demo(false)
        .env(&[("OR_KEY", "or-key"), ("AN_KEY", "an-key")])
        .start();
    let got = post_chat(&sluice, &chat("gpt-4o", true, json!({})), LIMIT).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let got = post_chat(&sluice, &chat("claude-x", false, json!({})), LIMIT).await;
    assert_eq!(got.status, 200, "{}", got.body);

    let (head, _) = only_request(&openai_up);
    assert!(head.contains("\r\nx-title: team chat\r\n"), "{head}");
    assert!(
        head.contains("\r\nhttp-referer: https://chat.example\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nauthorization: bearer or-key\r\n"),
        "{head}"
    );
    // A static header replaces the one Sluice would send, never adds a second.
    assert_eq!(head.matches("\r\naccept:").count(), 1, "{head}");
    assert!(
        head.contains("\r\naccept: text/event-stream, */*\r\n"),
        "{head}"
    );

    let (head, _) = only_request(&anthropic_up);
    assert!(head.contains("\r\nx-title: team chat\r\n"), "{head}");
    assert!(
        head.contains("\r\nhttp-referer: https://chat.example\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-api-key: an-key\r\n"), "{head}");
}
