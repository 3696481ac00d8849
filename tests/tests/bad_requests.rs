//! Bad client input, end to end: every refusal is JSON in OpenAI's error shape with the right
//! status, and a 400 names the field that is wrong.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{assert_error_shape, client};
use sluice_tests::Gateway;

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status}: body is not JSON ({e}): {text:?}"));
    Answer {
        status,
        content_type,
        body,
    }
}

async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> Answer {
    send(
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

/// A 400 whose `param` is `field` and whose message names it.
fn assert_bad_field(a: &Answer, field: &str) {
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.content_type.starts_with("application/json"));
    let err = assert_error_shape(&a.body);
    assert_eq!(err["type"], "invalid_request_error", "{}", a.body);
    assert_eq!(err["param"], field, "{}", a.body);
    let msg = err["message"].as_str().expect("message");
    assert!(msg.contains(field), "the message names '{field}': {msg}");
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_body() {
    let sluice = Gateway::builder().start();
    let url = sluice.url("/v1/chat/completions");
    for bad in [
        "{",
        "{\"model\": \"sluice-demo\", \"messages\": [",
        "not json",
        "",
    ] {
        let a = post_raw(&url, bad).await;
        assert_bad_field(&a, "body");
    }
    // Valid JSON that is not an object.
    let a = post_raw(&url, "[1,2]").await;
    assert_bad_field(&a, "body");
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_400_naming_the_field() {
    let sluice = Gateway::builder().start();
    let url = sluice.url("/v1/chat/completions");
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"model": "sluice-demo"}), "messages"),
        (json!({"messages": msgs}), "model"),
        (json!({"model": 1, "messages": msgs}), "model"),
        (json!({"model": "sluice-demo", "messages": "x"}), "messages"),
        (
            json!({"model": "sluice-demo", "messages": msgs, "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "sluice-demo", "messages": [{"content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "sluice-demo", "messages": msgs, "stream_options": {"include_usage": "yes"}}),
            "stream_options.include_usage",
        ),
        (
            json!({"model": "sluice-demo", "messages": msgs, "max_tokens": -1}),
            "max_tokens",
        ),
    ];
    for (body, field) in cases {
        let a = post_raw(&url, body.to_string()).await;
        assert_bad_field(&a, field);
    }
}

#[tokio::test]
async fn body_over_a_configured_limit_is_413() {
    let sluice = Gateway::builder()
        .env(&[("SLUICE_MAX_BODY_BYTES", "1000")])
        .start();
    let url = sluice.url("/v1/chat/completions");
    let big = json!({"model": "sluice-demo", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let a = post_raw(&url, big.to_string()).await;
    assert_eq!(a.status, 413, "{}", a.body);
    let err = assert_error_shape(&a.body);
    assert!(
        err["message"].as_str().expect("message").contains("1000"),
        "{}",
        a.body
    );
    // Just under the limit is fine.
    let small = json!({"model": "sluice-demo", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "x".repeat(500)}]});
    let a = post_raw(&url, small.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Same for the resumable streams endpoint.
    let a = post_raw(&sluice.url("/v1/streams"), big.to_string()).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_error_shape(&a.body);
}

#[tokio::test]
async fn body_over_the_default_4_mib_is_413() {
    let sluice = Gateway::builder().start();
    let url = sluice.url("/v1/chat/completions");
    let big = json!({"model": "sluice-demo",
                     "messages": [{"role": "user", "content": "x".repeat(5 << 20)}]});
    let a = post_raw(&url, big.to_string()).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_error_shape(&a.body);
    // 3 MiB is under the default limit.
    let ok = json!({"model": "sluice-demo", "max_tokens": 1,
                    "messages": [{"role": "user", "content": "x".repeat(3 << 20)}]});
    let a = post_raw(&url, ok.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let sluice = Gateway::builder().start();
    for stream in [false, true] {
        let body = json!({"model": "gpt-nonexistent", "stream": stream,
                          "messages": [{"role": "user", "content": "hi"}]});
        let a = post_raw(&sluice.url("/v1/chat/completions"), body.to_string()).await;
        assert_eq!(a.status, 404, "{}", a.body);
        let err = assert_error_shape(&a.body);
        assert_eq!(err["code"], "model_not_found", "{}", a.body);
        assert!(
            err["message"]
                .as_str()
                .expect("message")
                .contains("gpt-nonexistent"),
            "{}",
            a.body
        );
    }
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let sluice = Gateway::builder().start();
    let c = client();
    for req in [
        c.get(sluice.url("/v1/nope")),
        c.post(sluice.url("/v1/nope")).body("{}"),
        c.get(sluice.url("/v1/chat/completions/extra")),
        c.get(sluice.url("/v2/chat/completions")),
        c.get(sluice.url("/no-such-page.html")),
        c.get(sluice.url("/v1/streams/AAAAAAAAAAAAAAAAAAAAAA/events")),
    ] {
        let a = send(req).await;
        assert_eq!(a.status, 404, "{}", a.body);
        assert!(a.content_type.starts_with("application/json"));
        assert_error_shape(&a.body);
    }
}

/// A wrong method on a known route is answered in OpenAI's error shape too.
#[tokio::test]
async fn wrong_method_on_a_known_route_is_a_json_error() {
    let sluice = Gateway::builder().start();
    let c = client();
    for req in [
        c.get(sluice.url("/v1/chat/completions")),
        c.delete(sluice.url("/v1/models")),
        c.post(sluice.url("/healthz")),
    ] {
        let a = send(req).await;
        assert!(
            a.status == 405 || a.status == 404,
            "status {}: {}",
            a.status,
            a.body
        );
        assert_error_shape(&a.body);
    }
}
