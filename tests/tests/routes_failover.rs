//! `[[routes]]` end to end: failover before the response headers (connect failure, headers
//! timeout, 429, 5xx), never on another 4xx and never once a stream has started; cooldowns,
//! round robin, the answer when every target fails, admission counted once, and
//! `x-sluice-provider` / `/v1/models`.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, assert_failed_stream, chat, check_openai_wire, content_of, data,
    openai_provider, post_chat, sse_steps, up_role, up_stream, up_text,
};
use sluice_tests::metric_with;
use sluice_tests::scripted::{chunk, full_response, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(10);

/// An upstream answering every request with `status` and an OpenAI-shaped error.
async fn failing(status: u16, extra_headers: &str) -> ScriptedUpstream {
    let body = json!({"error": {"message": format!("upstream says {status}"), "type": "server_error", "param": null, "code": null}});
    serve(vec![full_response(
        status,
        "application/json",
        extra_headers,
        body.to_string().as_bytes(),
    )])
    .await
}

/// An upstream streaming "Hello" in two pieces, with usage 5 + 2.
async fn healthy() -> ScriptedUpstream {
    serve(sse_steps([up_stream(&["Hel", "lo"])])).await
}

/// A provider named `name` (its own model `name-only`) plus nothing else.
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

fn body_model(up: &ScriptedUpstream, i: usize) -> String {
    let v: Value = serde_json::from_slice(&up.requests()[i].1).expect("json body");
    v["model"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_failing_target_is_tried_once_then_skipped_while_cooling_down() {
    let bad = failing(503, "").await;
    let good = healthy().await;
    let toml = format!(
        "{}{}{}",
        prov("bad", &bad),
        prov("good", &good),
        route("smart", &["bad:m-bad", "good:m-good"], "")
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    for i in 0..5 {
        let a = post_chat(&sluice, &chat("smart", true, json!({})), LIMIT).await;
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        assert_eq!(a.header("x-sluice-provider"), Some("good"), "request {i}");
        let events = check_openai_wire(&a.body);
        assert_eq!(content_of(&events, 0), "Hello", "request {i}");
    }
    assert_eq!(bad.requests().len(), 1, "the failing target is tried once");
    assert_eq!(good.requests().len(), 5);
    // The target's model replaces the route's name upstream.
    assert_eq!(body_model(&bad, 0), "m-bad");
    assert_eq!(body_model(&good, 4), "m-good");

    let models: Value = sluice_tests::e2e::client()
        .get(sluice.url("/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"smart"), "{ids:?}");

    let metrics = sluice_tests::e2e::client()
        .get(sluice.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric_with(
            &metrics,
            "sluice_failovers_total",
            &[("from", "bad"), ("to", "good")]
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        metric_with(
            &metrics,
            "sluice_upstream_requests_total",
            &[("provider", "good")]
        ),
        5
    );
    assert_eq!(
        metric_with(
            &metrics,
            "sluice_upstream_errors_total",
            &[("provider", "bad")]
        ),
        1
    );
}

#[tokio::test]
async fn connect_failure_headers_timeout_and_429_fail_over_but_400_does_not() {
    // A port that refuses connections (bound, not listening, held for the whole test).
    let refused = sluice_tests::scripted::refused_port();
    let closed = refused.addr;
    let silent = serve(vec![Step::Sleep(Duration::from_secs(60))]).await;
    let limited = failing(429, "retry-after: 7\r\n").await;
    let refused400 = failing(400, "").await;
    let good = healthy().await;
    let toml = format!(
        "{}{}{}{}{}{}{}{}{}",
        openai_provider("closed", &format!("http://{closed}/v1"), &["closed-only"]),
        prov("silent", &silent),
        prov("limited", &limited),
        prov("refuses", &refused400),
        prov("good", &good),
        route("r-connect", &["closed:x", "good:y"], "cooldown_secs = 0"),
        route("r-timeout", &["silent:x", "good:y"], "cooldown_secs = 0"),
        route("r-429", &["limited:x", "good:y"], "cooldown_secs = 0"),
        route("r-400", &["refuses:x", "good:y"], "cooldown_secs = 0"),
    );
    let sluice = Gateway::builder()
        .config(&toml)
        .demo(false)
        .env(&[("SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS", "1")])
        .start();
    for model in ["r-connect", "r-timeout", "r-429"] {
        let a = post_chat(&sluice, &chat(model, true, json!({})), LIMIT).await;
        assert_eq!(a.status, 200, "{model}: {}", a.body);
        assert_eq!(a.header("x-sluice-provider"), Some("good"), "{model}");
        assert_eq!(content_of(&check_openai_wire(&a.body), 0), "Hello");
    }
    assert_eq!(good.requests().len(), 3);
    // The silent upstream records its request when its task gets to read it, which on a loaded
    // machine can come after the gateway has given up on it and moved on.
    assert!(
        sluice_tests::wait::wait_until(Duration::from_secs(5), || silent.requests().len() == 1)
            .await,
        "the silent upstream got {} requests",
        silent.requests().len()
    );
    assert_eq!(limited.requests().len(), 1);

    let a = post_chat(&sluice, &chat("r-400", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let err = assert_error_shape(&a.json()).clone();
    assert_eq!(err["message"], "upstream says 400");
    assert_eq!(refused400.requests().len(), 1);
    assert_eq!(good.requests().len(), 3, "the next target is never called");
}

#[tokio::test]
async fn a_stream_cut_after_its_first_bytes_is_not_replayed() {
    let cut = serve(vec![
        sse_head(),
        chunk(data(&up_role()).as_bytes()),
        chunk(data(&up_text("Hel")).as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ])
    .await;
    let good = healthy().await;
    let toml = format!(
        "{}{}{}",
        prov("cut", &cut),
        prov("good", &good),
        route("smart", &["cut:x", "good:y"], "")
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    let a = post_chat(&sluice, &chat("smart", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-sluice-provider"), Some("cut"));
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hel");
    assert_failed_stream(&events, "upstream_truncated");
    assert_eq!(good.requests().len(), 0, "never replayed on another target");
}

#[tokio::test]
async fn every_target_failing_answers_the_last_status_and_names_each_target() {
    let a503 = failing(503, "").await;
    let b500 = failing(500, "").await;
    let c429 = failing(429, "retry-after: 3\r\n").await;
    let d429 = failing(429, "retry-after: 7\r\n").await;
    let toml = format!(
        "{}{}{}{}{}{}",
        prov("a", &a503),
        prov("b", &b500),
        prov("c", &c429),
        prov("d", &d429),
        route("broken", &["a:m1", "b:m2"], ""),
        route("busy", &["c:m3", "d:m4"], ""),
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    for stream in [true, false] {
        let r = post_chat(&sluice, &chat("broken", stream, json!({})), LIMIT).await;
        assert_eq!(r.status, 502, "stream={stream}: {}", r.body);
        let err = assert_error_shape(&r.json()).clone();
        let msg = err["message"].as_str().expect("message");
        assert!(msg.contains("a:m1") && msg.contains("HTTP 503"), "{msg}");
        assert!(msg.contains("b:m2") && msg.contains("HTTP 500"), "{msg}");

        let r = post_chat(&sluice, &chat("busy", stream, json!({})), LIMIT).await;
        assert_eq!(r.status, 429, "stream={stream}: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("7"));
        let err = assert_error_shape(&r.json()).clone();
        let msg = err["message"].as_str().expect("message");
        assert!(msg.contains("c:m3") && msg.contains("d:m4"), "{msg}");
    }
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let one = healthy().await;
    let two = healthy().await;
    let toml = format!(
        "{}{}{}",
        prov("one", &one),
        prov("two", &two),
        route("rr", &["one:x", "two:y"], "strategy = \"round_robin\"")
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    let mut served = Vec::new();
    for _ in 0..6 {
        let a = post_chat(&sluice, &chat("rr", true, json!({})), LIMIT).await;
        assert_eq!(a.status, 200, "{}", a.body);
        served.push(a.header("x-sluice-provider").unwrap_or_default().to_owned());
    }
    assert_eq!(one.requests().len(), 3, "{served:?}");
    assert_eq!(two.requests().len(), 3, "{served:?}");
}

#[tokio::test]
async fn a_request_that_failed_over_twice_counts_once() {
    let a = failing(503, "").await;
    let b = failing(502, "").await;
    let good = healthy().await;
    let toml = format!(
        "{}{}{}{}",
        prov("a", &a),
        prov("b", &b),
        prov("good", &good),
        route("smart", &["a:x", "b:y", "good:z"], "")
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    let r = post_chat(
        &sluice,
        &chat(
            "smart",
            true,
            json!({"stream_options": {"include_usage": true}}),
        ),
        LIMIT,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(content_of(&check_openai_wire(&r.body), 0), "Hello");
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    let usage: Value = sluice_tests::e2e::client()
        .get(sluice.url("/v1/usage"))
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(usage["requests"], 1, "{usage}");
    assert_eq!(usage["prompt_tokens"], 5, "{usage}");
    assert_eq!(usage["completion_tokens"], 2, "{usage}");
}

#[tokio::test]
async fn non_streaming_and_v1_streams_name_the_provider() {
    let bad = failing(503, "").await;
    let completion = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "z",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
    let good = serve(vec![full_response(
        200,
        "application/json",
        "",
        completion.to_string().as_bytes(),
    )])
    .await;
    let sse = healthy().await;
    let toml = format!(
        "{}{}{}{}{}",
        prov("bad", &bad),
        prov("good", &good),
        prov("sse", &sse),
        route("smart", &["bad:x", "good:z"], "cooldown_secs = 0"),
        route("streamed", &["bad:x", "sse:z"], "cooldown_secs = 0")
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    let r = post_chat(&sluice, &chat("smart", false, json!({})), LIMIT).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-sluice-provider"), Some("good"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Hi");

    let resp = sluice_tests::e2e::client()
        .post(sluice.url("/v1/streams"))
        .json(&chat("streamed", true, json!({})))
        .send()
        .await
        .expect("streams");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()
            .get("x-sluice-provider")
            .and_then(|v| v.to_str().ok()),
        Some("sse")
    );
}
