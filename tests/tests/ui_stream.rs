//! The AI SDK's UI message stream (`POST /v1/ui/chat`, `GET|DELETE /v1/ui/chat/{chatId}/stream`)
//! as a `useChat` client sees it: the parts and headers, a resume during the generation (the
//! whole stream again from `start`, then the live tail, equal to the original), 204 when there
//! is nothing to resume, `abort` after a stop, `error` after an upstream failure, tool calls as
//! tool-input parts, chats scoped to their team, and a resume on another instance through Redis.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    client_with_timeout, data, recorded_body, sse_events, sse_steps, up_chunk, up_role, up_text,
    up_usage, StreamReader,
};
use sluice_tests::redis::RedisServer;
use sluice_tests::scripted::{chunk, serve, sse_head, Step};
use sluice_tests::teams::{self, new_key, team};
use sluice_tests::{Gateway, Sluice};

const LIMIT: Duration = Duration::from_secs(20);

fn client() -> reqwest::Client {
    client_with_timeout(LIMIT)
}

/// What `DefaultChatTransport.sendMessages` posts for a new user message in chat `chat`,
/// with `extra` (the transport's `body` option) merged in.
fn ui_body(chat: &str, text: &str, extra: Value) -> Value {
    let mut body = json!({
        "id": chat,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        "messageId": null,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// `POST /v1/ui/chat` (with `key`, if any), returning once the head arrived.
async fn post(s: &Sluice, key: Option<&str>, body: &Value) -> StreamReader {
    let mut req = client().post(s.url("/v1/ui/chat")).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    StreamReader::new(req.send().await.expect("response"))
}

/// The reconnect URL the transport builds: the chat id URL-encoded.
fn stream_path(chat: &str) -> String {
    let enc: String = url_encode(chat);
    format!("/v1/ui/chat/{enc}/stream")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(s: &Sluice, key: Option<&str>, chat: &str) -> StreamReader {
    let mut req = client().get(s.url(&stream_path(chat)));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    StreamReader::new(req.send().await.expect("response"))
}

async fn delete(s: &Sluice, key: Option<&str>, chat: &str) -> reqwest::Response {
    let mut req = client().delete(s.url(&stream_path(chat)));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("response")
}

/// The parts of a UI message stream body: each event's JSON, `[DONE]` as the string.
fn parts(body: &str) -> Vec<Value> {
    sse_events(body)
        .into_iter()
        .map(|e| {
            assert_eq!(e.fields, ["data"], "only data lines: {body}");
            if e.is_done() {
                Value::String("[DONE]".into())
            } else {
                e.json()
            }
        })
        .collect()
}

fn types(parts: &[Value]) -> Vec<String> {
    parts
        .iter()
        .map(|p| p["type"].as_str().unwrap_or("[DONE]").to_owned())
        .collect()
}

/// The text the `text-delta` parts carry.
fn text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .map(|p| p["delta"].as_str().expect("delta").to_owned())
        .collect()
}

/// Counts the parts of `body` whose type is `kind` (complete events only).
fn count(body: &str, kind: &str) -> usize {
    parts(sluice_tests::sse::complete_part(body))
        .iter()
        .filter(|p| p["type"] == kind)
        .count()
}

fn slow_demo() -> Sluice {
    Gateway::builder()
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start()
}

#[tokio::test]
async fn the_stream_has_the_ui_message_parts_and_headers() {
    let s = slow_demo();
    // No model: the default (the demo model, as the chat page picks).
    let mut r = post(
        &s,
        None,
        &ui_body("chat-shape", "Hello", json!({"mock": {"tokens": 6}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-vercel-ai-ui-message-stream"), Some("v1"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert_eq!(r.header("x-sluice-provider"), Some("sluice-demo"));
    let stream_id = r
        .header("x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    r.read_to_end(LIMIT).await;
    let p = parts(&r.body);
    let t = types(&p);
    assert_eq!(t[..3], ["start", "start-step", "text-start"], "{}", r.body);
    assert_eq!(
        t[t.len() - 4..],
        ["text-end", "finish-step", "finish", "[DONE]"],
        "{}",
        r.body
    );
    assert!(t[3..t.len() - 4].iter().all(|k| k == "text-delta"), "{t:?}");
    assert_eq!(p[0]["messageId"], format!("msg-{stream_id}"));
    let id = &p[2]["id"];
    assert!(p
        .iter()
        .filter(|x| x["type"] == "text-delta")
        .all(|x| &x["id"] == id));
    assert_eq!(p[p.len() - 2]["finishReason"], "stop");
    assert!(!text(&p).is_empty());
    // The same stream in the relay's other formats: one stream, readable in any of them.
    let openai = client()
        .get(s.url(&format!("/v1/streams/{stream_id}/events?format=openai")))
        .send()
        .await
        .expect("openai format");
    assert_eq!(openai.status(), 200);
    // Nothing is in progress any more: 204.
    let after = get(&s, None, "chat-shape").await;
    assert_eq!(after.status, 204);
    // Not a UI chat body: a 400 naming the field.
    let bad = client()
        .post(s.url("/v1/ui/chat"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .expect("response");
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.expect("json");
    assert_eq!(err["error"]["param"], "id", "{err}");
}

#[tokio::test]
async fn a_resume_during_the_generation_replays_from_start_and_follows_the_tail() {
    let s = slow_demo();
    let chat = "chat/ü 1?";
    let mut first = post(
        &s,
        None,
        &ui_body(
            chat,
            "Hello",
            json!({"mock": {"tokens": 30, "delay_ms": 40}}),
        ),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    // The page reloads after a few deltas: the first response is dropped.
    first
        .read_until(LIMIT, |b| count(b, "text-delta") >= 4)
        .await;
    let seen = sluice_tests::sse::complete_part(&first.body).to_owned();
    drop(first);
    let mut again = get(&s, None, chat).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.header("x-vercel-ai-ui-message-stream"), Some("v1"));
    // A second reader at the same time (another tab).
    let mut tab = get(&s, None, chat).await;
    assert_eq!(tab.status, 200);
    again.read_to_end(LIMIT).await;
    tab.read_to_end(LIMIT).await;
    // From `start`: what was seen, then the rest, nothing doubled.
    assert!(again.body.starts_with(&seen), "{seen}\n---\n{}", again.body);
    assert_eq!(again.body, tab.body);
    let p = parts(&again.body);
    assert_eq!(types(&p).iter().filter(|t| *t == "start").count(), 1);
    assert_eq!(types(&p).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(p[p.len() - 2]["finishReason"], "stop");
    // The grace period kept the generation running without its first reader: it is whole.
    assert_eq!(text(&p).split_whitespace().count(), 30, "{}", text(&p));
    // After the end, and for a chat that never was: nothing to resume.
    assert_eq!(get(&s, None, chat).await.status, 204);
    assert_eq!(get(&s, None, "no-such-chat").await.status, 204);
}

#[tokio::test]
async fn delete_stops_the_chat_and_its_readers_see_abort() {
    let s = slow_demo();
    let mut r = post(
        &s,
        None,
        &ui_body(
            "chat-stop",
            "Hello",
            json!({"mock": {"tokens": 200, "delay_ms": 50}}),
        ),
    )
    .await;
    r.read_until(LIMIT, |b| count(b, "text-delta") >= 2).await;
    let mut other = get(&s, None, "chat-stop").await;
    assert_eq!(other.status, 200);
    let del = delete(&s, None, "chat-stop").await;
    assert_eq!(del.status(), 200);
    let v: Value = del.json().await.expect("json");
    assert_eq!(v["cancelled"], true, "{v}");
    for reader in [&mut r, &mut other] {
        reader.read_to_end(LIMIT).await;
        let t = types(&parts(&reader.body));
        assert_eq!(
            t[t.len() - 3..],
            ["text-end", "abort", "[DONE]"],
            "{}",
            reader.body
        );
        assert!(!t.contains(&"finish".to_owned()), "{t:?}");
    }
    // Stopped: nothing in progress, nothing to stop.
    assert_eq!(get(&s, None, "chat-stop").await.status, 204);
    assert_eq!(delete(&s, None, "chat-stop").await.status(), 404);
}

#[tokio::test]
async fn an_upstream_failing_mid_stream_ends_with_an_error_part() {
    let head: String = [up_role(), up_text("Half an"), up_text(" answer")]
        .iter()
        .map(data)
        .collect();
    let up = serve(vec![
        sse_head(),
        chunk(head.as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ])
    .await;
    let s = Gateway::builder().upstream(&up).start();
    let mut r = post(&s, None, &ui_body("chat-fail", "Hi", json!({"model": "m"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.read_to_end(LIMIT).await;
    let p = parts(&r.body);
    let t = types(&p);
    assert_eq!(
        t[t.len() - 3..],
        ["text-end", "error", "[DONE]"],
        "{}",
        r.body
    );
    assert_eq!(text(&p), "Half an answer");
    let err = p[p.len() - 2]["errorText"].as_str().expect("errorText");
    assert!(!err.is_empty());
    assert!(!t.contains(&"finish".to_owned()), "{t:?}");
}

#[tokio::test]
async fn tool_calls_are_tool_input_parts_and_history_is_translated() {
    let chunks = [
        up_role(),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        ),
        up_chunk(0, json!({}), Some("tool_calls")),
        up_usage(10, 5),
    ];
    let mut body: String = chunks.iter().map(data).collect();
    body.push_str("data: [DONE]\n\n");
    let up = serve(sse_steps([body])).await;
    let s = Gateway::builder().upstream(&up).start();
    // A second turn: the history holds an earlier tool call with its output, and reasoning.
    let req = json!({
        "id": "chat-tools",
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object"}}}],
        "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Time?"}]},
            {"id": "a1", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "call it"},
                {"type": "tool-get_time", "toolCallId": "call_0", "state": "output-available",
                 "input": {}, "output": "noon"},
                {"type": "step-start"},
                {"type": "text", "text": "It is noon."}
            ]},
            {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Weather in Paris?"}]}
        ],
        "trigger": "submit-message",
        "messageId": null
    });
    let mut r = post(&s, None, &req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.read_to_end(LIMIT).await;
    let p = parts(&r.body);
    assert_eq!(
        types(&p),
        [
            "start",
            "start-step",
            "tool-input-start",
            "tool-input-delta",
            "tool-input-delta",
            "tool-input-available",
            "finish-step",
            "finish",
            "[DONE]"
        ],
        "{}",
        r.body
    );
    assert_eq!(p[2]["toolCallId"], "call_a");
    assert_eq!(p[2]["toolName"], "get_weather");
    assert_eq!(p[3]["inputTextDelta"], "{\"city\":");
    assert_eq!(p[5]["input"], json!({"city": "Paris"}));
    assert_eq!(p[7]["finishReason"], "tool-calls");
    // What the upstream got: chat completions, streaming with usage, the history translated.
    let sent = recorded_body(&up);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "noon"},
            {"role": "assistant", "content": "It is noon."},
            {"role": "user", "content": "Weather in Paris?"}
        ])
    );
}

#[tokio::test]
async fn a_chat_belongs_to_its_team() {
    let (ka, kb) = (new_key(), new_key());
    let toml = format!("{}{}", team("a", &[&ka], ""), team("b", &[&kb], ""));
    let s = teams::start(&toml, &[]);
    let body = ui_body(
        "shared-name",
        "Hi",
        json!({"mock": {"tokens": 100, "delay_ms": 50}}),
    );
    // Without a key: refused.
    let anon = post(&s, None, &body).await;
    assert_eq!(anon.status, 401);
    let mut r = post(&s, Some(&ka.key), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.read_until(LIMIT, |b| count(b, "text-delta") >= 1).await;
    // Team b has no such chat: nothing to resume, nothing to stop.
    assert_eq!(get(&s, Some(&kb.key), "shared-name").await.status, 204);
    assert_eq!(delete(&s, Some(&kb.key), "shared-name").await.status(), 404);
    assert_eq!(get(&s, None, "shared-name").await.status, 401);
    // Team a resumes and stops it.
    let mut again = get(&s, Some(&ka.key), "shared-name").await;
    assert_eq!(again.status, 200);
    assert_eq!(delete(&s, Some(&ka.key), "shared-name").await.status(), 200);
    again.read_to_end(LIMIT).await;
    assert!(
        again.body.contains("{\"type\":\"abort\"}"),
        "{}",
        again.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_resumes_and_stops_the_chat_through_redis() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let instance = || {
        Gateway::builder()
            .env(&[
                ("SLUICE_REDIS_URL", redis.url().as_str()),
                ("SLUICE_OWNER_TIMEOUT_SECS", "3"),
                ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ])
            .start()
    };
    let (a, b) = (instance(), instance());
    let mut on_a = post(
        &a,
        None,
        &ui_body(
            "chat-x",
            "Hi",
            json!({"mock": {"tokens": 30, "delay_ms": 40}}),
        ),
    )
    .await;
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    on_a.read_until(LIMIT, |b| count(b, "text-delta") >= 3)
        .await;
    // The reload lands on B: the same stream, from its start, to its end.
    let mut on_b = get(&b, None, "chat-x").await;
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    on_b.read_to_end(LIMIT).await;
    on_a.read_to_end(LIMIT).await;
    assert_eq!(on_a.body, on_b.body);
    assert_eq!(
        types(&parts(&on_b.body)).last().map(String::as_str),
        Some("[DONE]")
    );
    // Ended: B has nothing to resume (the mapping went with the stream).
    let gone = sluice_tests::wait::wait_for(LIMIT, || async {
        (get(&b, None, "chat-x").await.status == 204).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the chat's mapping went with its stream");
    // A stop on B reaches the stream on A.
    let mut on_a = post(
        &a,
        None,
        &ui_body(
            "chat-y",
            "Hi",
            json!({"mock": {"tokens": 200, "delay_ms": 50}}),
        ),
    )
    .await;
    on_a.read_until(LIMIT, |b| count(b, "text-delta") >= 2)
        .await;
    assert_eq!(delete(&b, None, "chat-y").await.status(), 200);
    on_a.read_to_end(LIMIT).await;
    let t = types(&parts(&on_a.body));
    assert_eq!(t[t.len() - 2..], ["abort", "[DONE]"], "{}", on_a.body);
}

/// The AI SDK's `DefaultChatTransport` and `readUIMessageStream` (npm `ai`) against Sluice: the
/// checks live in `tests/sdk/ai_ui_chat.mjs`.
#[test]
fn the_ai_sdks_chat_transport_sends_reconnects_and_stops() {
    use sluice_tests::sdk::{node_package, require, run_checks};
    let Some(()) = require(node_package("ai")) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tools: String = [
        up_role(),
        up_chunk(0, json!({"reasoning_content": "Thinking it over."}), None),
        up_text("Let me check."),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                                   "function": {"name": "get_weather", "arguments": "{\"city\""}}]}),
            None,
        ),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":\"Paris\"}"}}]}),
            None,
        ),
        up_chunk(0, json!({}), Some("tool_calls")),
        up_usage(10, 5),
    ]
    .iter()
    .map(data)
    .collect::<String>()
        + "data: [DONE]\n\n";
    let tools_up = rt.block_on(serve(sse_steps([tools])));
    let half: String = [up_role(), up_text("Half an"), up_text(" answer")]
        .iter()
        .map(data)
        .collect();
    let fail_up = rt.block_on(serve(vec![
        sse_head(),
        chunk(half.as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ]));
    let toml = format!(
        "{}{}",
        sluice_tests::e2e::openai_provider("tools", &tools_up.base_url(), &["scripted-tools"]),
        sluice_tests::e2e::openai_provider("fail", &fail_up.base_url(), &["scripted-fail"]),
    );
    let sluice = Gateway::builder()
        .config(&toml)
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let base = sluice.url("");
    run_checks(
        &sluice,
        "node",
        &["ai_ui_chat.mjs", base.trim_end_matches('/')],
        Duration::from_secs(180),
        "PASS ai-ui-chat: every check passed",
    );
    drop(rt);
}
