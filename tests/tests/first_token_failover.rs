//! Failover until the first content: a target that answers 200 and then fails before any text,
//! reasoning or tool call (an Anthropic `overloaded_error`, an OpenAI error chunk,
//! `finish_reason: "error"`, silence past `first_token_timeout_secs`) is dropped for the next
//! target without a trace: the client's stream, and a resumer's from event 1, are the serving
//! target's alone. After the first content a failure is in-band; an error the client caused is
//! not failed over; on the last target the first-token timeout ends the stream in-band.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, assert_failed_stream, chat, check_openai_wire, client, collect, content_of,
    data, openai_provider, post_chat, provider, sse_steps, up_chunk, up_role, up_stream, up_text,
    wait_until, Collected,
};
use sluice_tests::metric_with;
use sluice_tests::scripted::{chunk, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::{Gateway, Sluice};

const LIMIT: Duration = Duration::from_secs(20);

/// The bad target's own chunk id and model: neither may reach a client after a failover.
const BAD_ID: &str = "chatcmpl-BAD";
const BAD_MODEL: &str = "bad-model";

/// An OpenAI-compatible upstream streaming "Hello" in two pieces.
async fn healthy() -> ScriptedUpstream {
    serve(sse_steps([up_stream(&["Hel", "lo"])])).await
}

/// The bad target's role chunk (`role`, empty content, its own id and model).
fn bad_role() -> String {
    let mut v = up_role();
    v["id"] = json!(BAD_ID);
    v["model"] = json!(BAD_MODEL);
    data(&v)
}

/// An OpenAI-compatible upstream that answers 200, sends its role chunk, then `rest`.
async fn openai_failing(rest: &str) -> ScriptedUpstream {
    serve(sse_steps([bad_role(), rest.to_owned()])).await
}

fn anthropic_event(v: &Value) -> String {
    format!(
        "event: {}\ndata: {v}\n\n",
        v["type"].as_str().expect("a type")
    )
}

/// Anthropic's `message_start` for message `id` of model `model`.
fn message_start(id: &str, model: &str) -> String {
    anthropic_event(
        &json!({"type":"message_start","message":{"id":id,"type":"message","role":"assistant","model":model,"content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}),
    )
}

/// An Anthropic upstream: 200, `message_start`, a ping, then `event: error` `overloaded_error`.
async fn anthropic_overloaded() -> ScriptedUpstream {
    serve(sse_steps([
        message_start("msg_BAD", BAD_MODEL)
            + &anthropic_event(&json!({"type":"ping"}))
            + &anthropic_event(&json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
        anthropic_event(
            &json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        ),
    ]))
    .await
}

/// An Anthropic upstream answering "Hello" in two pieces.
async fn anthropic_healthy() -> ScriptedUpstream {
    let events = [
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}),
        json!({"type":"content_block_stop","index":0}),
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}),
        json!({"type":"message_stop"}),
    ];
    let mut body = message_start("msg_good", "claude-good");
    for e in &events {
        body.push_str(&anthropic_event(e));
    }
    serve(sse_steps([body])).await
}

fn anthropic_provider(name: &str, up: &ScriptedUpstream) -> String {
    provider(
        name,
        "anthropic",
        &format!("http://{}", up.addr),
        &[&format!("{name}-only")],
        None,
    )
}

fn prov(name: &str, up: &ScriptedUpstream) -> String {
    openai_provider(name, &up.base_url(), &[&format!("{name}-only")])
}

fn route(model: &str, targets: &[&str], extra: &str) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[routes]]\nmodel = {model:?}\ntargets = [{}]\n{extra}\n\n",
        t.join(", ")
    )
}

fn gateway(toml: &str) -> Sluice {
    Gateway::builder().config(toml).demo(false).start()
}

/// The failovers by phase, and from `from` to `to`.
async fn failovers(s: &Sluice, phase: &str, from: &str, to: &str) -> (u64, u64) {
    let m = s.metrics().await;
    (
        metric_with(&m, "sluice_failovers_by_phase_total", &[("phase", phase)]),
        metric_with(&m, "sluice_failovers_total", &[("from", from), ("to", to)]),
    )
}

/// What a resumer reading the stream from its first event gets, in OpenAI chunks.
async fn resumed(s: &Sluice, a: &Collected) -> String {
    let id = a.header("x-sluice-stream-id").expect("a stream id");
    client()
        .get(s.url(&format!("/v1/streams/{id}/events?format=openai")))
        .send()
        .await
        .expect("resume")
        .text()
        .await
        .expect("body")
}

fn no_trace_of_the_bad_target(body: &str) {
    assert!(!body.contains(BAD_ID), "{body}");
    assert!(!body.contains(BAD_MODEL), "{body}");
    assert!(!body.contains("msg_BAD"), "{body}");
    assert!(!body.to_lowercase().contains("overloaded"), "{body}");
}

#[tokio::test]
async fn anthropic_overloaded_before_content_is_served_by_the_next_target_as_if_directly() {
    let bad = anthropic_overloaded().await;
    let good = healthy().await;
    let direct_up = healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        anthropic_provider("bad", &bad),
        prov("good", &good),
        route("smart", &["bad:claude-x", "good:m"], "")
    ));
    // The same answer from the good target alone.
    let direct = gateway(&format!(
        "{}{}",
        prov("good", &direct_up),
        route("smart", &["good:m"], "")
    ));
    let body = chat(
        "smart",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );
    let a = post_chat(&s, &body, LIMIT).await;
    let d = post_chat(&direct, &body, LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-sluice-provider"), Some("good"));
    assert_eq!(a.header("content-type"), d.header("content-type"));
    // Byte for byte what the good target alone gives (its chunk id and model are its own).
    assert_eq!(a.body, d.body);
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hello");
    no_trace_of_the_bad_target(&a.body);
    // A resumer from event 1 sees the serving target only: the same bytes.
    assert_eq!(resumed(&s, &a).await, a.body);
    assert_eq!((bad.requests().len(), good.requests().len()), (1, 1));
    assert!(
        bad.requests()[0].0.starts_with("POST /v1/messages "),
        "{}",
        bad.requests()[0].0
    );
    assert_eq!(failovers(&s, "first_token", "bad", "good").await, (1, 1));
    assert_eq!(failovers(&s, "headers", "bad", "good").await.0, 0);
    // The failed target cools down like a status failure: the next request skips it.
    let a = post_chat(&s, &body, LIMIT).await;
    assert_eq!(a.header("x-sluice-provider"), Some("good"));
    assert_eq!(bad.requests().len(), 1);
}

#[tokio::test]
async fn an_openai_error_chunk_or_finish_reason_error_before_content_fails_over() {
    let error_chunk =
        data(&json!({"error": {"message": "Internal error", "type": "server_error", "code": 502}}));
    let finish_error = data(&up_chunk(0, json!({}), Some("error")));
    for (what, rest) in [
        ("error chunk", error_chunk),
        ("finish_reason error", finish_error),
    ] {
        let bad = openai_failing(&rest).await;
        let good = healthy().await;
        let s = gateway(&format!(
            "{}{}{}",
            prov("bad", &bad),
            prov("good", &good),
            route("smart", &["bad:m", "good:m"], "")
        ));
        let a = post_chat(&s, &chat("smart", true, json!({})), LIMIT).await;
        assert_eq!(a.status, 200, "{what}: {}", a.body);
        assert_eq!(a.header("x-sluice-provider"), Some("good"), "{what}");
        let events = check_openai_wire(&a.body);
        assert_eq!(content_of(&events, 0), "Hello", "{what}");
        no_trace_of_the_bad_target(&a.body);
        assert_eq!(
            failovers(&s, "first_token", "bad", "good").await,
            (1, 1),
            "{what}"
        );
    }
}

#[tokio::test]
async fn an_end_or_reset_before_content_fails_over_but_an_empty_finished_answer_serves() {
    for (what, steps) in [
        ("clean end", sse_steps([bad_role()])),
        (
            "reset",
            vec![sse_head(), chunk(bad_role().as_bytes()), Step::Reset],
        ),
    ] {
        let bad = serve(steps).await;
        let good = healthy().await;
        let s = gateway(&format!(
            "{}{}{}",
            prov("bad", &bad),
            prov("good", &good),
            route("smart", &["bad:m", "good:m"], "")
        ));
        let a = post_chat(&s, &chat("smart", true, json!({})), LIMIT).await;
        assert_eq!(a.status, 200, "{what}: {}", a.body);
        assert_eq!(a.header("x-sluice-provider"), Some("good"), "{what}");
        assert_eq!(
            content_of(&check_openai_wire(&a.body), 0),
            "Hello",
            "{what}"
        );
        no_trace_of_the_bad_target(&a.body);
        assert_eq!(
            failovers(&s, "first_token", "bad", "good").await,
            (1, 1),
            "{what}"
        );
    }
    // A finish reason and no text: the model's answer is empty, and it is the answer.
    let empty = serve(sse_steps([bad_role()
        + &data(&up_chunk(0, json!({}), Some("stop")))
        + "data: [DONE]\n\n"]))
    .await;
    let good = healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        prov("bad", &empty),
        prov("good", &good),
        route("smart", &["bad:m", "good:m"], "")
    ));
    let a = post_chat(&s, &chat("smart", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-sluice-provider"), Some("bad"));
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "");
    assert!(a.body.contains("\"finish_reason\":\"stop\""), "{}", a.body);
    assert_eq!(good.requests().len(), 0);
}

#[tokio::test]
async fn silence_past_the_first_token_timeout_moves_on_and_drops_the_silent_upstream() {
    let silent = serve(vec![
        sse_head(),
        chunk(bad_role().as_bytes()),
        Step::Sleep(Duration::from_secs(60)),
    ])
    .await;
    let good = healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        prov("bad", &silent),
        prov("good", &good),
        route(
            "smart",
            &["bad:m", "good:m"],
            "first_token_timeout_secs = 1"
        )
    ));
    let started = Instant::now();
    let a = post_chat(&s, &chat("smart", true, json!({})), LIMIT).await;
    let took = started.elapsed();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-sluice-provider"), Some("good"));
    assert_eq!(content_of(&check_openai_wire(&a.body), 0), "Hello");
    no_trace_of_the_bad_target(&a.body);
    assert!(
        took >= Duration::from_millis(950),
        "waited the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "but not much longer: {took:?}"
    );
    assert_eq!(failovers(&s, "first_token", "bad", "good").await, (1, 1));
    // The abandoned upstream's connection is closed.
    wait_until(Duration::from_secs(10), || silent.client_closed() >= 1).await;
}

#[tokio::test]
async fn on_the_last_target_the_first_token_timeout_ends_the_stream_in_band() {
    let silent = serve(vec![
        sse_head(),
        chunk(bad_role().as_bytes()),
        Step::Sleep(Duration::from_secs(60)),
    ])
    .await;
    // The global setting applies to a route without its own.
    let s = Gateway::builder()
        .config(&format!(
            "{}{}",
            prov("bad", &silent),
            route("smart", &["bad:m"], "")
        ))
        .env([
            ("SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS", "3"),
            ("SLUICE_KEEPALIVE_SECS", "1"),
        ])
        .demo(false)
        .start();
    let started = Instant::now();
    let resp = client()
        .post(s.url("/v1/chat/completions"))
        .json(&chat("smart", true, json!({})))
        .send()
        .await
        .expect("response");
    // The last target is accepted at its headers: the response starts at once.
    let head = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(
        head < Duration::from_millis(2500),
        "headers at once: {head:?}"
    );
    let a = collect(resp, started, LIMIT).await;
    assert!(started.elapsed() >= Duration::from_millis(2950));
    // Keep-alive comments flowed while it waited.
    assert!(a.body.starts_with(':'), "{:?}", a.body);
    let events = check_openai_wire(&a.body);
    let err = assert_failed_stream(&events, "upstream_timeout");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("first token")),
        "{err}"
    );
    wait_until(Duration::from_secs(10), || silent.client_closed() >= 1).await;
    let m = s.metrics().await;
    assert_eq!(
        metric_with(
            &m,
            "sluice_upstream_errors_total",
            &[("provider", "bad"), ("kind", "upstream_timeout")]
        ),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn a_failure_after_the_first_content_is_in_band_and_the_next_target_is_never_called() {
    let bad = serve(sse_steps([
        data(&up_role()) + &data(&up_text("Hel")),
        data(&json!({"error": {"message": "Internal error", "type": "server_error"}})),
    ]))
    .await;
    let good = healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        prov("bad", &bad),
        prov("good", &good),
        route(
            "smart",
            &["bad:m", "good:m"],
            "first_token_timeout_secs = 5"
        )
    ));
    let a = post_chat(&s, &chat("smart", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-sluice-provider"), Some("bad"));
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hel");
    assert_failed_stream(&events, "server_error");
    assert_eq!(good.requests().len(), 0, "never replayed");
    let m = s.metrics().await;
    assert_eq!(
        metric_with(&m, "sluice_failovers_by_phase_total", &[]),
        0,
        "{m}"
    );
}

#[tokio::test]
async fn an_error_the_client_caused_before_content_is_not_failed_over() {
    let too_long = data(
        &json!({"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error", "code": "context_length_exceeded"}}),
    );
    let bad = openai_failing(&too_long).await;
    let good = healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        prov("bad", &bad),
        prov("good", &good),
        route("smart", &["bad:m", "good:m"], "")
    ));
    // Before the response started: a status, as if the upstream had answered 400.
    let a = post_chat(&s, &chat("smart", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let v = a.json();
    let err = assert_error_shape(&v);
    assert_eq!(err["type"], "invalid_request_error", "{v}");
    assert_eq!(err["code"], "context_length_exceeded", "{v}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum context length")),
        "{v}"
    );
    assert_eq!(bad.requests().len(), 1);
    assert_eq!(good.requests().len(), 0);
    let m = s.metrics().await;
    assert_eq!(metric_with(&m, "sluice_failovers_total", &[]), 0, "{m}");
}

#[tokio::test]
async fn anthropic_messages_from_an_overloaded_anthropic_target_fail_over_unseen() {
    let bad = anthropic_overloaded().await;
    let good = anthropic_healthy().await;
    let direct_up = anthropic_healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        anthropic_provider("bad", &bad),
        anthropic_provider("good", &good),
        route("claude-smart", &["bad:claude-x", "good:claude-y"], "")
    ));
    let direct = gateway(&format!(
        "{}{}",
        anthropic_provider("good", &direct_up),
        route("claude-smart", &["good:claude-y"], "")
    ));
    let body = json!({
        "model": "claude-smart",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": true,
    });
    let post = |s: &Sluice| {
        let req = client()
            .post(s.url("/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&body);
        async move {
            let start = Instant::now();
            collect(req.send().await.expect("request"), start, LIMIT).await
        }
    };
    let a = post(&s).await;
    let d = post(&direct).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-sluice-provider"), Some("good"));
    assert!(a.body.contains("event: message_stop"), "{}", a.body);
    assert!(!a.body.contains("event: error"), "{}", a.body);
    no_trace_of_the_bad_target(&a.body);
    // The same bytes as from the good target alone, but for the message id (the gateway's,
    // derived from each stream's id).
    let unid = |b: &str| {
        let mut out = String::new();
        let mut rest = b;
        while let Some(i) = rest.find("\"msg_") {
            out.push_str(&rest[..i]);
            out.push_str("\"msg_ID");
            rest = &rest[i + 5..];
            rest = &rest[rest.find('"').unwrap_or(0)..];
        }
        out.push_str(rest);
        out
    };
    assert_eq!(unid(&a.body), unid(&d.body));
    assert!(unid(&a.body).contains("\"msg_ID\""), "{}", a.body);
    assert_eq!(failovers(&s, "first_token", "bad", "good").await, (1, 1));
}

#[tokio::test]
async fn the_responses_api_and_post_streams_fail_over_before_content_too() {
    let bad = openai_failing(&data(&up_chunk(0, json!({}), Some("error")))).await;
    let good = healthy().await;
    let s = gateway(&format!(
        "{}{}{}",
        prov("bad", &bad),
        prov("good", &good),
        route("smart", &["bad:m", "good:m"], "cooldown_secs = 0")
    ));
    let resp = client()
        .post(s.url("/v1/responses"))
        .json(&json!({"model": "smart", "input": "hi", "stream": true}))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-provider"], "good");
    let body = resp.text().await.expect("body");
    assert!(body.contains("event: response.completed"), "{body}");
    assert!(!body.contains("response.failed"), "{body}");
    assert!(body.contains("\"Hello\""), "{body}");
    no_trace_of_the_bad_target(&body);

    // A stream started for later readers: the same, and its readers see the good target only.
    let resp = client()
        .post(s.url("/v1/streams"))
        .json(&chat("smart", true, json!({})))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status().as_u16() / 100, 2);
    assert_eq!(resp.headers()["x-sluice-provider"], "good");
    let v: Value = resp.json().await.expect("json");
    let id = v["id"]
        .as_str()
        .or(v["stream_id"].as_str())
        .expect("an id")
        .to_owned();
    let read = client()
        .get(s.url(&format!("/v1/streams/{id}/events?format=openai")))
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("body");
    assert_eq!(content_of(&check_openai_wire(&read), 0), "Hello");
    no_trace_of_the_bad_target(&read);
    assert_eq!(failovers(&s, "first_token", "bad", "good").await, (2, 2));
    assert_eq!(bad.requests().len(), 2);
}
