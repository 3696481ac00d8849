//! Upstream failures, end to end: HTTP errors before the stream (status and error passed on,
//! 5xx as 502, Anthropic's 529 as 503, `Retry-After` kept), the upstream's key never shown, and
//! failures after the stream started (each one explicit, in band, with no `[DONE]`).

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, assert_failed_stream, assert_failed_stream_after, chat, check_openai_wire,
    content_of, data, finish_reasons, openai_provider, post_chat, post_collect, provider,
    sse_steps, up_chunk, up_role, up_text, up_usage, Collected,
};
use sluice_tests::scripted::{chunk, full_response, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(10);

fn openai_error(status: u16) -> (String, String, Value) {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "context_length_exceeded"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("permission_error", "unsupported_country"),
        404 => ("invalid_request_error", "model_not_found"),
        429 => ("tokens", "rate_limit_exceeded"),
        _ => ("server_error", "server_error"),
    };
    let message = format!("upstream says {status} ({kind})");
    let param = if status == 400 {
        json!("messages")
    } else {
        Value::Null
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (kind.to_owned(), message, body)
}

#[tokio::test]
async fn upstream_http_errors_keep_4xx_status_and_turn_5xx_into_502() {
    // 401 and 403 are the provider refusing the gateway's own key: a 502 of the gateway's (see
    // error_messages.rs), not the upstream's error passed on.
    let statuses = [400u16, 404, 429, 500, 503];
    let mut toml = String::new();
    let mut upstreams: Vec<ScriptedUpstream> = Vec::new();
    for s in statuses {
        let extra = if s == 429 { "retry-after: 7\r\n" } else { "" };
        let (_, _, body) = openai_error(s);
        let json_up = serve(vec![full_response(
            s,
            "application/json",
            extra,
            body.to_string().as_bytes(),
        )])
        .await;
        let text_up = serve(vec![full_response(
            s,
            "text/plain; charset=utf-8",
            extra,
            format!("plain failure {s}").as_bytes(),
        )])
        .await;
        toml.push_str(&openai_provider(
            &format!("json{s}"),
            &json_up.base_url(),
            &[&format!("json-{s}")],
        ));
        toml.push_str(&openai_provider(
            &format!("text{s}"),
            &text_up.base_url(),
            &[&format!("text-{s}")],
        ));
        upstreams.push(json_up);
        upstreams.push(text_up);
    }
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    let url = sluice.url("/v1/chat/completions");
    for s in statuses {
        let want = if s >= 500 { 502 } else { s };
        for stream in [true, false] {
            // An upstream's JSON error: its type and message are passed on.
            let a = post_collect(&url, &chat(&format!("json-{s}"), stream, json!({})), LIMIT).await;
            let ctx = format!("json {s} stream={stream}: {}", a.body);
            assert_eq!(a.status, want, "{ctx}");
            assert!(
                a.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "{ctx}"
            );
            let body = a.json();
            let err = assert_error_shape(&body);
            let (kind, message, upstream_body) = openai_error(s);
            assert_eq!(err["type"], kind.as_str(), "{ctx}");
            assert_eq!(err["message"], message.as_str(), "{ctx}");
            if s < 500 {
                // A client error is the upstream's own, whole: type, message, param and code.
                assert_eq!(err, &upstream_body["error"], "{ctx}");
            }
            assert_eq!(a.header("x-sluice-error-source"), Some("upstream"), "{ctx}");
            check_retry_after(&a, s, &ctx);

            // A plain-text error: an OpenAI-shaped error that says it came from the upstream.
            let a = post_collect(&url, &chat(&format!("text-{s}"), stream, json!({})), LIMIT).await;
            let ctx = format!("text {s} stream={stream}: {}", a.body);
            assert_eq!(a.status, want, "{ctx}");
            let body = a.json();
            let err = assert_error_shape(&body);
            let msg = err["message"].as_str().expect("message");
            assert!(msg.contains("upstream"), "{ctx}");
            assert!(msg.contains(&format!("plain failure {s}")), "{ctx}");
            assert!(msg.contains(&s.to_string()), "{ctx}");
            check_retry_after(&a, s, &ctx);
        }
    }
    // Every request reached its upstream (none was answered from a cache or refused locally).
    for up in &upstreams {
        assert_eq!(up.requests().len(), 2);
    }
}

fn check_retry_after(a: &Collected, status: u16, ctx: &str) {
    if status == 429 {
        assert_eq!(a.header("retry-after"), Some("7"), "{ctx}");
    } else {
        assert_eq!(a.header("retry-after"), None, "{ctx}");
    }
}

#[tokio::test]
async fn anthropic_529_overloaded_becomes_503_with_the_upstream_error() {
    let body =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let up = serve(vec![full_response(
        529,
        "application/json",
        "",
        body.to_string().as_bytes(),
    )])
    .await;
    let base = format!("http://{}", up.addr);
    let sluice = Gateway::builder()
        .config(&provider("claude", "anthropic", &base, &["claude-*"], None))
        .demo(false)
        .start();
    for stream in [true, false] {
        let a = post_chat(
            &sluice,
            &chat("claude-sonnet-4-5", stream, json!({})),
            LIMIT,
        )
        .await;
        assert_eq!(a.status, 503, "stream={stream}: {}", a.body);
        let v = a.json();
        let err = assert_error_shape(&v);
        assert_eq!(err["type"], "overloaded_error", "{v}");
        assert_eq!(err["message"], "Overloaded", "{v}");
    }
    let reqs = up.requests();
    assert!(
        reqs[0].0.starts_with("POST /v1/messages "),
        "Anthropic's path: {}",
        reqs[0].0
    );
}

const KEY: &str = "sk-secret-XYZ";

fn assert_no_key(a: &Collected, ctx: &str) {
    assert!(!a.body.contains(KEY), "{ctx}: key in the body: {}", a.body);
    for (k, v) in &a.headers {
        assert!(
            !String::from_utf8_lossy(v.as_bytes()).contains(KEY),
            "{ctx}: key in header {k}"
        );
    }
}

#[tokio::test]
async fn the_upstream_key_never_reaches_a_response_or_a_log_line() {
    // Upstreams that echo the credentials they were given, as some do in "invalid key" errors.
    let echo_json = json!({"error": {"message": format!("Incorrect API key provided: Bearer {KEY}. Check {KEY}."),
                                     "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    let json_up = serve(vec![full_response(
        401,
        "application/json",
        "",
        echo_json.to_string().as_bytes(),
    )])
    .await;
    let text_up = serve(vec![full_response(
        403,
        "text/plain",
        "",
        format!("forbidden for authorization: Bearer {KEY}").as_bytes(),
    )])
    .await;
    let mid = format!(
        "{}{}",
        data(&up_text("partial")),
        data(
            &json!({"error": {"message": format!("key {KEY} was revoked"), "type": "auth_error"}})
        )
    );
    let mid_up = serve(sse_steps([mid])).await;
    let anth_body = json!({"type": "error", "error": {"type": "authentication_error",
                                                       "message": format!("invalid x-api-key: {KEY}")}});
    let anth_up = serve(vec![full_response(
        401,
        "application/json",
        "",
        anth_body.to_string().as_bytes(),
    )])
    .await;
    let toml = [
        provider(
            "json",
            "openai",
            &json_up.base_url(),
            &["json-m"],
            Some("UP_KEY"),
        ),
        provider(
            "text",
            "openai",
            &text_up.base_url(),
            &["text-m"],
            Some("UP_KEY"),
        ),
        provider(
            "mid",
            "openai",
            &mid_up.base_url(),
            &["mid-m"],
            Some("UP_KEY"),
        ),
        provider(
            "anth",
            "anthropic",
            &format!("http://{}", anth_up.addr),
            &["claude-*"],
            Some("UP_KEY"),
        ),
    ]
    .concat();
    let sluice = Gateway::builder()
        .config(&toml)
        .demo(false)
        .env(&[("UP_KEY", KEY), ("SLUICE_LOG", "debug")])
        .start();
    let url = sluice.url("/v1/chat/completions");
    for model in ["json-m", "text-m", "mid-m", "claude-3-5-haiku"] {
        for stream in [true, false] {
            let a = post_collect(&url, &chat(model, stream, json!({})), LIMIT).await;
            let ctx = format!("{model} stream={stream}");
            assert!(
                a.status >= 400 || a.body.contains("\"error\""),
                "{ctx}: {}",
                a.body
            );
            assert_no_key(&a, &ctx);
        }
    }
    // A refused key is the gateway's failure: the provider is named, the upstream's words (which
    // may quote part of the key) are not passed on.
    let a = post_collect(&url, &chat("json-m", false, json!({})), LIMIT).await;
    assert_eq!(a.status, 502);
    let msg = a.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(msg.contains("provider 'json'"), "{msg}");

    let metrics = sluice.metrics().await;
    assert!(!metrics.contains(KEY));
    // Give the log writer a moment, then check every line.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = sluice.logs();
    assert!(!logs.is_empty());
    assert!(!logs.contains(KEY), "the key is in the logs:\n{logs}");

    // The upstreams did get the key, in their own header.
    for up in [&json_up, &text_up, &mid_up] {
        let head = up.requests()[0].0.to_ascii_lowercase();
        assert!(
            head.contains(&format!(
                "authorization: bearer {}",
                KEY.to_ascii_lowercase()
            )),
            "{head}"
        );
    }
    let head = anth_up.requests()[0].0.to_ascii_lowercase();
    assert!(
        head.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())),
        "{head}"
    );
    assert!(!head.contains("authorization:"), "{head}");
}

/// Starts Sluice on one scripted upstream, streams one request, returns the checked events.
async fn stream_through(
    steps: Vec<Step>,
    extra: Value,
) -> (Vec<sluice_tests::e2e::SseEvent>, Collected) {
    let up = serve(steps).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let a = post_chat(&sluice, &chat("m", true, extra), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    assert!(
        a.transport_error.is_none(),
        "a failed stream still ends cleanly: {:?}",
        a.transport_error
    );
    let events = check_openai_wire(&a.body);
    (events, a)
}

fn role_chunk() -> String {
    data(&up_role())
}

#[tokio::test]
async fn invalid_json_mid_stream_is_an_upstream_protocol_error() {
    let steps = sse_steps([
        role_chunk(),
        data(&up_text("Hel")),
        data(&up_text("lo")),
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}\n\n".to_owned(),
        data(&up_text(" never shown")),
        data(&up_chunk(0, json!({}), Some("stop"))),
        "data: [DONE]\n\n".to_owned(),
    ]);
    let (events, _) = stream_through(steps, json!({})).await;
    assert_eq!(content_of(&events, 0), "Hello");
    assert_failed_stream(&events, "upstream_protocol_error");
}

#[tokio::test]
async fn an_error_object_mid_stream_keeps_the_upstreams_type_and_message() {
    let steps = sse_steps([
        role_chunk(),
        data(&up_text("Hel")),
        data(&up_text("lo")),
        data(
            &json!({"error": {"message": "The server had an error while processing your request.",
                               "type": "server_error", "param": null, "code": null}}),
        ),
    ]);
    let (events, _) = stream_through(steps, json!({})).await;
    assert_eq!(content_of(&events, 0), "Hello");
    let err = assert_failed_stream(&events, "server_error");
    assert_eq!(
        err["message"],
        "The server had an error while processing your request."
    );
}

#[tokio::test]
async fn a_reset_connection_before_finish_reason_is_upstream_truncated() {
    let steps = vec![
        sse_head(),
        chunk(role_chunk().as_bytes()),
        chunk(data(&up_text("Hel")).as_bytes()),
        chunk(data(&up_text("lo")).as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ];
    let (events, _) = stream_through(steps, json!({})).await;
    assert_eq!(content_of(&events, 0), "Hello");
    assert_failed_stream(&events, "upstream_truncated");
}

#[tokio::test]
async fn a_cut_in_the_middle_of_an_event_is_upstream_truncated() {
    // The connection drops halfway through a JSON line: not garbage, a truncation.
    let steps = vec![
        sse_head(),
        chunk(role_chunk().as_bytes()),
        chunk(data(&up_text("Hel")).as_bytes()),
        chunk(b"data: {\"id\":\"chatcmpl-up\",\"choices\":[{\"index\":0,\"delta\":{\"cont"),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ];
    let (events, _) = stream_through(steps, json!({})).await;
    assert_eq!(content_of(&events, 0), "Hel");
    assert_failed_stream(&events, "upstream_truncated");
}

#[tokio::test]
async fn a_clean_end_before_finish_reason_is_upstream_truncated() {
    for ending in ["", "data: [DONE]\n\n"] {
        let steps = sse_steps([
            role_chunk(),
            data(&up_text("Hel")),
            data(&up_text("lo")),
            ending.to_owned(),
        ]);
        let (events, _) = stream_through(steps, json!({})).await;
        assert_eq!(content_of(&events, 0), "Hello", "ending {ending:?}");
        assert_failed_stream(&events, "upstream_truncated");
    }
}

#[tokio::test]
async fn one_of_two_choices_unfinished_is_upstream_truncated() {
    let steps = sse_steps([
        data(&up_chunk(0, json!({"content": "a"}), None)),
        data(&up_chunk(1, json!({"content": "b"}), None)),
        data(&up_chunk(0, json!({}), Some("stop"))),
        "data: [DONE]\n\n".to_owned(),
    ]);
    let (events, _) = stream_through(steps, json!({"n": 2})).await;
    assert_eq!(content_of(&events, 0), "a");
    assert_eq!(content_of(&events, 1), "b");
    // Choice 0 had finished: its finish reason is delivered before the error.
    assert_failed_stream_after(&events, "upstream_truncated", &[(0, "stop")]);
}

#[tokio::test]
async fn a_json_answer_to_a_streaming_request_is_an_upstream_protocol_error() {
    let answer = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "not streamed"}, "finish_reason": "stop"}]});
    let steps = vec![full_response(
        200,
        "application/json",
        "",
        answer.to_string().as_bytes(),
    )];
    let (events, _) = stream_through(steps, json!({})).await;
    assert_eq!(content_of(&events, 0), "");
    let err = assert_failed_stream(&events, "upstream_protocol_error");
    assert!(
        err["message"]
            .as_str()
            .expect("message")
            .contains("application/json"),
        "{err}"
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, Some(1));
}

#[tokio::test]
async fn a_clean_end_after_every_finish_reason_without_done_is_a_success() {
    let steps = sse_steps([
        role_chunk(),
        data(&up_text("Hel")),
        data(&up_text("lo")),
        data(&up_chunk(0, json!({}), Some("stop"))),
        data(&up_usage(3, 2)),
    ]);
    let (events, a) =
        stream_through(steps, json!({"stream_options": {"include_usage": true}})).await;
    assert_eq!(content_of(&events, 0), "Hello");
    assert_eq!(finish_reasons(&events), vec![(0, "stop".to_owned())]);
    assert!(sluice_tests::e2e::error_events(&events).is_empty());
    assert!(a.body.ends_with("data: [DONE]\n\n"), "{}", a.body);
    let n = events.len();
    assert_eq!(
        events[n - 2].json()["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    );
}

#[tokio::test]
async fn anthropic_error_event_mid_stream_keeps_its_type() {
    let sse = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let up = serve(sse_steps([sse])).await;
    let sluice = Gateway::builder()
        .config(&provider(
            "claude",
            "anthropic",
            &format!("http://{}", up.addr),
            &["claude-*"],
            None,
        ))
        .demo(false)
        .start();
    let a = post_chat(&sluice, &chat("claude-x", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hel");
    let err = assert_failed_stream(&events, "overloaded_error");
    assert_eq!(err["message"], "Overloaded");
}

#[tokio::test]
async fn a_key_at_the_cut_of_a_long_plain_text_error_does_not_leak_in_part() {
    // Sluice quotes the first 500 characters of a plain-text error. A key straddling that cut
    // must not leave its first half in the message.
    let mut text = "e".repeat(492);
    text.push_str(KEY);
    text.push_str(" and more");
    let up = serve(vec![full_response(500, "text/plain", "", text.as_bytes())]).await;
    let sluice = Gateway::builder()
        .config(&provider(
            "up",
            "openai",
            &up.base_url(),
            &["*"],
            Some("UP_KEY"),
        ))
        .demo(false)
        .env(&[("UP_KEY", KEY)])
        .start();
    for stream in [true, false] {
        let a = post_chat(&sluice, &chat("m", stream, json!({})), LIMIT).await;
        assert_eq!(a.status, 502, "{}", a.body);
        assert!(
            !a.body.contains(&KEY[..7]),
            "part of the key leaked: {}",
            a.body
        );
    }
    assert!(!sluice.logs().contains(&KEY[..7]), "{}", sluice.logs());
}

#[tokio::test]
async fn non_streaming_failures_become_502_or_504_with_openai_error_types() {
    let garbage = serve(vec![full_response(
        200,
        "application/json",
        "",
        b"{not json",
    )])
    .await;
    // Promises 1000 bytes, sends 20, then drops the connection.
    let cut = serve(vec![
        Step::Write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":\"x\",\"choices\"".to_vec(),
        ),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ])
    .await;
    // Sends its head and part of the body, then goes silent past the idle timeout.
    let silent = serve(vec![
        Step::Write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
                .to_vec(),
        ),
        Step::Sleep(Duration::from_secs(30)),
    ])
    .await;
    let toml = [
        openai_provider("garbage", &garbage.base_url(), &["garbage"]),
        openai_provider("cut", &cut.base_url(), &["cut"]),
        openai_provider("silent", &silent.base_url(), &["silent"]),
    ]
    .concat();
    let sluice = Gateway::builder()
        .config(&toml)
        .demo(false)
        .env(&[("SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS", "1")])
        .start();
    let url = sluice.url("/v1/chat/completions");
    for (model, status, kind) in [
        ("garbage", 502, "upstream_protocol_error"),
        ("cut", 502, "upstream_truncated"),
        ("silent", 504, "upstream_timeout"),
    ] {
        let a = post_collect(&url, &chat(model, false, json!({})), LIMIT).await;
        assert_eq!(a.status, status, "{model}: {}", a.body);
        let v = a.json();
        assert_eq!(assert_error_shape(&v)["type"], kind, "{model}: {v}");
    }
}
