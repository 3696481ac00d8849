//! Errors that must say the right amount: a connect failure names the provider, never its
//! address; a provider refusing the gateway's own key is the gateway's failure (failover, then
//! 502 `upstream_auth_failed`), not the client's 401; a chunk id never carries the stream ID;
//! refusals by design are logged as warnings, not errors.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, chat, check_openai_wire, chunks, client, content_of, openai_provider,
    post_chat, sse_steps, up_stream,
};
use sluice_tests::scripted::{chunk, full_response, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(10);

fn route(model: &str, targets: &[&str]) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[routes]]\nmodel = {model:?}\ntargets = [{}]\ncooldown_secs = 0\n\n",
        t.join(", ")
    )
}

async fn answering(status: u16) -> ScriptedUpstream {
    let body = json!({"error": {"message": "Incorrect API key provided: sk-ab***cd", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    serve(vec![full_response(
        status,
        "application/json",
        "",
        body.to_string().as_bytes(),
    )])
    .await
}

#[tokio::test]
async fn a_connect_failure_names_the_provider_not_its_address() {
    // A port that refuses connections (bound, not listening, held for the whole test).
    let refused = sluice_tests::scripted::refused_port();
    let closed = refused.addr;
    // Cut mid-stream: the in-band failure must not carry the address either.
    let cut = serve(vec![
        sse_head(),
        chunk(
            up_stream(&["Hel"])
                .split("data: [DONE]")
                .next()
                .unwrap_or("")
                .as_bytes(),
        ),
        Step::Reset,
    ])
    .await;
    let port = closed.port().to_string();
    let cut_port = cut.addr.port().to_string();
    let toml = format!(
        "{}{}{}",
        openai_provider(
            "internal-llm",
            &format!("http://{closed}/v1"),
            &["m-closed"]
        ),
        openai_provider("cutter", &cut.base_url(), &["m-cut"]),
        route("both-closed", &["internal-llm:a", "internal-llm:b"]),
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    let leaks = |text: &str, port: &str| text.contains("127.0.0.1") || text.contains(port);
    for (model, stream) in [
        ("m-closed", false),
        ("m-closed", true),
        ("both-closed", false),
        ("both-closed", true),
    ] {
        let a = post_chat(&sluice, &chat(model, stream, json!({})), LIMIT).await;
        assert_eq!(a.status, 502, "{model} stream={stream}: {}", a.body);
        let err = assert_error_shape(&a.json()).clone();
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            !leaks(&a.body, &port),
            "{model}: the address leaks: {}",
            a.body
        );
        assert!(
            message.contains("internal-llm"),
            "{model}: the provider is not named: {message}"
        );
    }
    // A stream that started, then lost its upstream connection.
    let a = post_chat(&sluice, &chat("m-cut", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains("\"error\""),
        "an in-band failure: {}",
        a.body
    );
    assert!(
        !leaks(&a.body, &cut_port),
        "the address leaks in-band: {}",
        a.body
    );
    // The same failure as a resumable stream: POST /v1/streams refuses, with the same message.
    let r = client()
        .post(sluice.url("/v1/streams"))
        .json(&chat("m-closed", true, json!({})))
        .send()
        .await
        .expect("post");
    let body = r.text().await.expect("text");
    assert!(!leaks(&body, &port), "{body}");
    // The log may say where the provider lives: operators need it.
    let logs = sluice.logs();
    assert!(logs.contains("internal-llm"), "{logs}");
}

#[tokio::test]
async fn a_provider_refusing_the_gateways_key_fails_over_then_is_a_502() {
    let unauthorized = answering(401).await;
    let forbidden = answering(403).await;
    let good = serve(sse_steps([up_stream(&["Hel", "lo"])])).await;
    let toml = format!(
        "{}{}{}{}{}",
        openai_provider("bad-key", &unauthorized.base_url(), &["m-401"]),
        openai_provider("no-access", &forbidden.base_url(), &["m-403"]),
        openai_provider("good", &good.base_url(), &["m-good"]),
        route("smart", &["bad-key:x", "good:y"]),
        route("all-bad", &["bad-key:x", "no-access:y"]),
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();
    for (model, stream) in [
        ("m-401", true),
        ("m-401", false),
        ("m-403", true),
        ("all-bad", true),
        ("all-bad", false),
    ] {
        let a = post_chat(&sluice, &chat(model, stream, json!({})), LIMIT).await;
        assert_eq!(a.status, 502, "{model}: {}", a.body);
        let err = assert_error_shape(&a.json()).clone();
        assert_eq!(err["code"], "upstream_auth_failed", "{model}: {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("bad-key") || message.contains("no-access"),
            "{model}: names the provider: {message}"
        );
        assert!(
            !a.body.contains("sk-ab"),
            "{model}: no part of a key: {}",
            a.body
        );
    }
    let a = post_chat(&sluice, &chat("smart", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-sluice-provider"), Some("good"));
    assert_eq!(content_of(&check_openai_wire(&a.body), 0), "Hello");
}

#[tokio::test]
async fn a_chunk_id_made_by_the_gateway_does_not_reveal_the_stream_id() {
    // Chunks without an `id`: the gateway makes one.
    let no_ids: String = [
        json!({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
        json!({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}),
    ]
    .iter()
    .map(|v| format!("data: {v}\n\n"))
    .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
    .collect();
    let up = serve(sse_steps([no_ids])).await;
    let sluice = Gateway::builder()
        .config(&openai_provider("up", &up.base_url(), &["*"]))
        .demo(false)
        .start();
    let a = post_chat(&sluice, &chat("m", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let stream_id = a
        .header("x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    let ids: Vec<String> = chunks(&check_openai_wire(&a.body))
        .iter()
        .map(|c| c["id"].as_str().expect("chunk id").to_owned())
        .collect();
    assert!(ids.len() >= 2, "{ids:?}");
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one id per stream: {ids:?}"
    );
    assert!(ids[0].starts_with("chatcmpl-"), "{ids:?}");
    assert!(
        !ids[0].contains(&stream_id),
        "the chunk id holds the stream ID: {ids:?}"
    );
    // No long piece of the stream ID either.
    assert!(!ids[0].contains(&stream_id[..12]), "{ids:?} vs {stream_id}");
    // The same id on resume.
    let r = client()
        .get(sluice.url(&format!("/v1/streams/{stream_id}/events?format=openai")))
        .send()
        .await
        .expect("resume");
    let body = r.text().await.expect("text");
    let resumed: Vec<Value> = chunks(&check_openai_wire(&body));
    assert!(!resumed.is_empty(), "{body}");
    assert!(resumed.iter().all(|c| c["id"] == ids[0].as_str()), "{body}");
}

#[tokio::test]
async fn refusals_by_design_are_warnings_not_errors() {
    let key = sluice_tests::teams::new_key();
    let other = sluice_tests::teams::new_key();
    let toml = format!(
        "{}{}",
        sluice_tests::teams::team("t", &[&key], "requests_per_minute = 1\nmodels = [\"*\"]"),
        sluice_tests::teams::team("u", &[&other], "models = [\"*\"]"),
    );
    let sluice = sluice_tests::Gateway::builder()
        .config(&toml)
        .env(&[("SLUICE_LOG_FORMAT", "json"), ("SLUICE_MAX_STREAMS", "1")])
        .start();
    let post = |body: Value, key: Option<&str>| {
        let mut r = client()
            .post(sluice.url("/v1/chat/completions"))
            .json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let slow = chat(
        "sluice-demo",
        true,
        json!({"mock": {"tokens": 3, "delay_ms": 1500}}),
    );
    let first = post(slow.clone(), Some(&key.key)).await.expect("first");
    assert_eq!(first.status(), 200);
    let second = post(slow.clone(), Some(&key.key)).await.expect("second");
    assert_eq!(second.status(), 429);
    // Another team, within its limits, but the gateway runs as many streams as it allows.
    let third = post(slow, Some(&other.key)).await.expect("third");
    assert_eq!(third.status(), 503);
    drop(first);
    let lines = || -> Vec<Value> {
        sluice
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    };
    // Both refusals' lines (the 429's and the 503's): a log line may come a moment after its
    // response.
    let found = sluice_tests::wait::wait_until(LIMIT, || {
        lines()
            .iter()
            .filter(|v| {
                v["fields"]["message"] == "request refused" || v["message"] == "request refused"
            })
            .count()
            >= 2
    })
    .await;
    assert!(found, "no 'request refused' line: {}", sluice.logs());
    let refused: Vec<Value> = lines()
        .into_iter()
        .filter(|v| {
            v["fields"]["message"] == "request refused" || v["message"] == "request refused"
        })
        .collect();
    assert!(refused.iter().all(|v| v["level"] == "WARN"), "{refused:?}");
    assert_eq!(refused.len(), 2, "the 429 and the 503: {refused:?}");
    let errors: Vec<Value> = lines()
        .into_iter()
        .filter(|v| v["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "refusals logged as errors: {errors:?}");
}
