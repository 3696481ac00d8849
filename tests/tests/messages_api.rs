//! Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`) served by
//! OpenAI-compatible upstreams: the event stream as the Anthropic SDKs read it, the
//! non-streaming message, tool calls, a failure after the start, a resume in the Anthropic
//! numbering, team keys as `x-api-key` with their limits, and Claude Code's own request.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    client, collect, data, openai_provider, sse_events, sse_steps, up_chunk, up_role, up_stream,
    up_text, up_usage, Collected, SseEvent,
};
use sluice_tests::scripted::{chunk, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::teams::{new_key, team};
use sluice_tests::{Gateway, Sluice};

const LIMIT: Duration = Duration::from_secs(20);

/// A gateway whose `claude-*` models an OpenAI-compatible scripted upstream serves.
fn gateway(up: &ScriptedUpstream, extra: &str) -> Sluice {
    let toml = openai_provider("up", &up.base_url(), &["claude-*"]) + extra;
    Gateway::builder().config(&toml).demo(false).start()
}

fn message(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
}

async fn post(s: &Sluice, path: &str, body: &Value, key: Option<&str>) -> Collected {
    let mut req = client()
        .post(s.url(path))
        .header("anthropic-version", "2023-06-01")
        .json(body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let start = std::time::Instant::now();
    collect(req.send().await.expect("request"), start, LIMIT).await
}

/// Every event of an Anthropic stream: named, numbered 1, 2, 3..., its data's `type` its name.
fn checked(body: &str) -> Vec<SseEvent> {
    let events = sse_events(body);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.id, Some(i as u64 + 1), "ids count from 1: {body}");
        let name = e.event.as_deref().expect("every event is named");
        assert_eq!(e.json()["type"], name, "{body}");
    }
    events
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().filter_map(|e| e.event.as_deref()).collect()
}

/// The error body in Anthropic's shape: its `error` object.
fn anthropic_error(body: &Value) -> &Value {
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
    &body["error"]
}

#[tokio::test]
async fn a_stream_as_the_anthropic_sdks_read_it() {
    let up = serve(sse_steps([up_stream(&["Hel", "lo"])])).await;
    let s = gateway(&up, "");
    let a = post(&s, "/v1/messages", &message(true), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    assert!(a.header("x-sluice-stream-id").is_some());
    assert_eq!(a.header("x-sluice-provider"), Some("up"));
    let events = checked(&a.body);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = events[0].json();
    let msg = &start["message"];
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], json!([]));
    assert!(msg["usage"]["input_tokens"].is_u64(), "{start}");
    assert_eq!(
        events[2].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..5]
        .iter()
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello");
    let delta = events[6].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    // Cumulative: the whole answer's counts, the upstream's own.
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 5, "output_tokens": 2})
    );

    // What went upstream: a chat-completions request, streaming with usage.
    let reqs = up.requests();
    let sent: Value = serde_json::from_slice(&reqs[0].1).unwrap();
    assert_eq!(sent["model"], "claude-test");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Say hello"}])
    );
    assert_eq!(sent["max_tokens"], 256);
}

#[tokio::test]
async fn a_non_streaming_message() {
    let up = serve(sse_steps([up_stream(&["Hel", "lo"])])).await;
    let s = gateway(&up, "");
    let a = post(&s, "/v1/messages", &message(false), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.header("x-sluice-stream-id").is_some());
    let m = a.json();
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["stop_sequence"], Value::Null);
    assert_eq!(m["usage"], json!({"input_tokens": 5, "output_tokens": 2}));
}

/// An upstream stream: "Let me check." then a `get_weather` call with `{"city":"Paris"}`, in pieces.
pub fn tool_stream() -> String {
    let call = |delta: Value| data(&up_chunk(0, json!({ "tool_calls": [delta] }), None));
    let mut s = data(&up_role());
    s += &data(&up_text("Let me check."));
    s += &call(json!({"index": 0, "id": "call_w", "type": "function",
                      "function": {"name": "get_weather", "arguments": ""}}));
    s += &call(json!({"index": 0, "function": {"arguments": "{\"city\":"}}));
    s += &call(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}}));
    s += &data(&up_chunk(0, json!({}), Some("tool_calls")));
    s += &data(&up_usage(20, 9));
    s + "data: [DONE]\n\n"
}

#[tokio::test]
async fn tool_calls_stream_their_input_and_stop_for_tool_use() {
    let up = serve(sse_steps([tool_stream()])).await;
    let s = gateway(&up, "");
    let mut body = message(true);
    body["tools"] = json!([{"name": "get_weather", "description": "Weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    body["tool_choice"] = json!({"type": "auto"});
    let a = post(&s, "/v1/messages", &body, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = checked(&a.body);
    let blocks: Vec<Value> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_start"))
        .map(|e| e.json())
        .collect();
    assert_eq!(blocks[0]["index"], 0);
    assert_eq!(blocks[1]["index"], 1);
    assert_eq!(
        blocks[1]["content_block"],
        json!({"type": "tool_use", "id": "call_w", "name": "get_weather", "input": {}})
    );
    let input: String = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .map(|d| {
            assert_eq!(d["index"], 1);
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(input, "{\"city\":\"Paris\"}");
    let delta = events[events.len() - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    let sent: Value = serde_json::from_slice(&up.requests()[0].1).unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tool_choice"], "auto");

    // Not streaming: the input parsed.
    body["stream"] = json!(false);
    let a = post(&s, "/v1/messages", &body, None).await;
    let m = a.json();
    assert_eq!(m["stop_reason"], "tool_use", "{m}");
    assert_eq!(
        m["content"][1],
        json!({"type": "tool_use", "id": "call_w", "name": "get_weather", "input": {"city": "Paris"}})
    );
}

/// An upstream that says "Hel" and then breaks the connection.
pub fn broken_steps() -> Vec<Step> {
    let head = data(&up_role()) + &data(&up_text("Hel"));
    vec![
        sse_head(),
        chunk(head.as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ]
}

#[tokio::test]
async fn an_upstream_failure_after_the_start_is_an_error_event_never_a_message_stop() {
    let up = serve(broken_steps()).await;
    let s = gateway(&up, "");
    let a = post(&s, "/v1/messages", &message(true), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = checked(&a.body);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"), "{}", a.body);
    let err = last.json();
    anthropic_error(&err);
    assert!(!names(&events).contains(&"message_stop"), "{}", a.body);
    assert!(names(&events).contains(&"content_block_delta"));

    // Claude Code re-sends with `stream: false`: a 5xx in Anthropic's shape, which it retries.
    let a = post(&s, "/v1/messages", &message(false), None).await;
    assert!(a.status >= 500, "{} {}", a.status, a.body);
    anthropic_error(&a.json());
}

#[tokio::test]
async fn a_resume_in_the_anthropic_numbering_is_the_tail_of_the_original() {
    let up = serve(sse_steps([up_stream(&["one ", "two ", "three ", "four"])])).await;
    let s = gateway(&up, "");
    let a = post(&s, "/v1/messages", &message(true), None).await;
    let id = a.header("x-sluice-stream-id").unwrap().to_owned();
    let events = checked(&a.body);
    assert_eq!(events.len(), 10);
    for last in [1u64, 4, 7, 9] {
        let r = client()
            .get(s.url(&format!("/v1/streams/{id}/events?format=anthropic")))
            .header("Last-Event-ID", last.to_string())
            .send()
            .await
            .unwrap();
        let r = collect(r, std::time::Instant::now(), LIMIT).await;
        assert_eq!(r.status, 200);
        let cut = a.body.find(&format!("id: {}\n", last + 1)).unwrap();
        assert_eq!(r.body, a.body[cut..], "after {last}");
    }
    // At the end: nothing more (204); past it: 400.
    for (last, status) in [(10, 204), (11, 400)] {
        let r = client()
            .get(s.url(&format!("/v1/streams/{id}/events?format=anthropic")))
            .header("Last-Event-ID", last.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "after {last}");
    }
}

#[tokio::test]
async fn count_tokens_and_errors_in_anthropics_shape() {
    let up = serve(sse_steps([up_stream(&["x"])])).await;
    let s = gateway(&up, "");
    let a = post(&s, "/v1/messages/count_tokens", &message(false), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let n = a.json()["input_tokens"].as_u64().unwrap();
    assert!(n > 0);
    // More prompt, more tokens.
    let mut long = message(false);
    long["system"] = json!("x".repeat(4000));
    let a = post(&s, "/v1/messages/count_tokens", &long, None).await;
    assert!(a.json()["input_tokens"].as_u64().unwrap() >= n + 1000);
    // Nothing went upstream.
    assert!(up.requests().is_empty());

    let a = post(&s, "/v1/messages", &json!({"model": "claude-test"}), None).await;
    assert_eq!(a.status, 400);
    assert_eq!(anthropic_error(&a.json())["type"], "invalid_request_error");
    let a = post(&s, "/v1/messages/count_tokens", &json!([]), None).await;
    assert_eq!(a.status, 400);
    anthropic_error(&a.json());
    let mut other = message(true);
    other["model"] = json!("gpt-nothing");
    let a = post(&s, "/v1/messages", &other, None).await;
    assert_eq!(a.status, 404);
    assert_eq!(anthropic_error(&a.json())["type"], "not_found_error");
    let a = post(&s, "/v1/messages/batches", &message(false), None).await;
    assert_eq!(a.status, 404);
    assert_eq!(anthropic_error(&a.json())["type"], "not_found_error");
    let r = client().get(s.url("/v1/messages")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(anthropic_error(&body)["type"], "invalid_request_error");
}

#[tokio::test]
async fn team_keys_as_x_api_key_with_their_limits() {
    let up = serve(sse_steps([up_stream(&["Hi"])])).await;
    let k = new_key();
    let s = gateway(
        &up,
        &team("t", &[&k], "requests_per_minute = 60\nrequest_burst = 1"),
    );
    let a = post(&s, "/v1/messages", &message(false), None).await;
    assert_eq!(a.status, 401);
    assert_eq!(anthropic_error(&a.json())["type"], "authentication_error");
    let a = post(&s, "/v1/messages", &message(false), Some("sk-wrong")).await;
    assert_eq!(a.status, 401);
    anthropic_error(&a.json());

    let a = post(&s, "/v1/messages", &message(true), Some(&k.key)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.header("x-ratelimit-limit-requests").is_some());
    let a = post(&s, "/v1/messages", &message(true), Some(&k.key)).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.header("retry-after").is_some());
    assert_eq!(anthropic_error(&a.json())["type"], "rate_limit_error");
}

#[tokio::test]
async fn claude_codes_request_with_every_quirk_is_served() {
    let up = serve(sse_steps([up_stream(&["Hi from ", "Sluice"])])).await;
    // Claude Code's model name, routed to an OpenAI-compatible upstream.
    let toml = openai_provider("up", &up.base_url(), &[])
        + "[[routes]]\nmodel = \"claude-*\"\ntargets = [\"up:up-model\"]\n";
    let s = Gateway::builder().config(&toml).demo(false).start();
    // Claude Code 2.1's own request for an older model (thinking with a budget) and for a newer
    // one (adaptive thinking, `output_config`, system turns among the messages).
    let second: Value = serde_json::from_str(include_str!(
        "../fixtures/claude_code_messages_system_turns.json"
    ))
    .unwrap();
    let resp = client()
        .post(s.url("/v1/messages?beta=true"))
        .header("x-api-key", "sk-anything")
        .json(&second)
        .send()
        .await
        .unwrap();
    let a = collect(resp, std::time::Instant::now(), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(names(&checked(&a.body)).last(), Some(&"message_stop"));
    let sent: Value = serde_json::from_slice(&up.requests()[0].1).unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user"]);
    assert!(sent["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("# Environment"));

    let fixture = include_str!("../fixtures/claude_code_messages.json");
    let body: Value = serde_json::from_str(fixture).unwrap();
    assert!(fixture.len() > 80_000);
    let start = std::time::Instant::now();
    let resp = client()
        .post(s.url("/v1/messages?beta=true"))
        .header("x-api-key", "sk-anything")
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let a = collect(resp, start, LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = checked(&a.body);
    assert_eq!(names(&events).last(), Some(&"message_stop"));

    let sent: Value = serde_json::from_slice(&up.requests()[1].1).unwrap();
    assert_eq!(sent["model"], "up-model");
    // `metadata.user_id`, a JSON document longer than OpenAI takes as `user`, too.
    for dropped in ["thinking", "context_management", "metadata", "user"] {
        assert!(sent.get(dropped).is_none(), "{dropped} went upstream");
    }
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(!system.contains("x-anthropic-billing-header"));
    let tools = sent["tools"].as_array().unwrap();
    assert_eq!(tools.len(), body["tools"].as_array().unwrap().len());
    assert!(tools.iter().all(|t| t["type"] == "function"));
    let user = sent["messages"][1]["content"].as_str().unwrap();
    assert!(user.ends_with("Say hi"), "{user}");

    // The same body, not streaming (what Claude Code sends after a mid-stream error).
    let mut body = body;
    body["stream"] = json!(false);
    let resp = client()
        .post(s.url("/v1/messages?beta=true"))
        .header("x-api-key", "sk-anything")
        .json(&body)
        .send()
        .await
        .unwrap();
    let a = collect(resp, std::time::Instant::now(), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["content"][0]["text"], "Hi from Sluice");
}

#[tokio::test]
async fn reasoning_is_a_thinking_block_before_the_text() {
    let mut body = data(&up_chunk(
        0,
        json!({"role": "assistant", "reasoning_content": "Let me "}),
        None,
    ));
    body += &data(&up_chunk(0, json!({"reasoning_content": "think."}), None));
    body += &data(&up_text("Done."));
    body += &data(&up_chunk(0, json!({}), Some("length")));
    body += &data(&up_usage(4, 6));
    body += "data: [DONE]\n\n";
    let up = serve(sse_steps([body])).await;
    let s = gateway(&up, "");
    let mut req = message(true);
    req["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    let a = post(&s, "/v1/messages", &req, None).await;
    let events = checked(&a.body);
    let starts: Vec<Value> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_start"))
        .map(|e| e.json()["content_block"]["type"].clone())
        .collect();
    assert_eq!(starts, [json!("thinking"), json!("text")]);
    let thinking: String = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["delta"]["type"] == "thinking_delta")
        .map(|d| d["delta"]["thinking"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(thinking, "Let me think.");
    assert_eq!(
        events[events.len() - 2].json()["delta"]["stop_reason"],
        "max_tokens"
    );
    // `thinking` has no chat-completions form: it did not go upstream.
    let sent: Value = serde_json::from_slice(&up.requests()[0].1).unwrap();
    assert!(sent.get("thinking").is_none());
}

#[tokio::test]
async fn a_reader_resuming_a_live_stream_gets_the_rest_as_it_comes() {
    let mut steps = vec![sse_head(), chunk(data(&up_role()).as_bytes())];
    for w in ["a ", "b ", "c ", "d"] {
        steps.push(chunk(data(&up_text(w)).as_bytes()));
        steps.push(Step::Sleep(Duration::from_millis(150)));
    }
    let tail =
        data(&up_chunk(0, json!({}), Some("stop"))) + &data(&up_usage(3, 4)) + "data: [DONE]\n\n";
    steps.push(chunk(tail.as_bytes()));
    steps.push(sluice_tests::scripted::end_chunks());
    let up = serve(steps).await;
    let s = gateway(&up, "");
    let resp = client()
        .post(s.url("/v1/messages"))
        .json(&message(true))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-sluice-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // The first reader goes away after the first text delta (event 4); another resumes.
    let mut first = sluice_tests::e2e::StreamReader::new(resp);
    first
        .read_until(LIMIT, |b| b.contains("id: 4\n") && b.ends_with("\n\n"))
        .await;
    drop(first);
    let r = client()
        .get(s.url(&format!("/v1/streams/{id}/events?format=anthropic")))
        .header("Last-Event-ID", "4")
        .send()
        .await
        .unwrap();
    let r = collect(r, std::time::Instant::now(), LIMIT).await;
    let events = sse_events(&r.body);
    assert_eq!(events[0].id, Some(5), "{}", r.body);
    let text: String = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["delta"]["type"] == "text_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "b c d");
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
}
