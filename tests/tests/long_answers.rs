//! Non-streaming answers: their upstreams send headers only with the whole answer, so the
//! headers timeout (for streams) does not cut them; `SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS`
//! does, and a timeout after the request went out is charged and not replayed elsewhere.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{assert_error_shape, chat, client, openai_provider};
use sluice_tests::scripted::{full_response, serve, ScriptedUpstream, Step};

const ENV: &[(&str, &str)] = &[
    ("SLUICE_DEMO", "off"),
    ("SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS", "1"),
    ("SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS", "3"),
];

/// An upstream that thinks for `secs`, then answers a whole `chat.completion` at once.
async fn thinking(secs: u64) -> ScriptedUpstream {
    let body = json!({
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "done thinking"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    });
    serve(vec![
        Step::Sleep(Duration::from_secs(secs)),
        full_response(200, "application/json", "", body.to_string().as_bytes()),
    ])
    .await
}

#[tokio::test]
async fn a_slow_answer_waits_for_the_response_timeout_and_is_not_replayed() {
    let two = thinking(2).await;
    let five = thinking(5).await;
    let backup = thinking(0).await;
    let key = sluice_tests::teams::new_key();
    let toml = format!(
        "{}{}{}{}[[routes]]\nmodel = \"slow\"\ntargets = [\"five:m\", \"backup:m\"]\ncooldown_secs = 0\n\n",
        openai_provider("two", &two.base_url(), &["m-two"]),
        openai_provider("five", &five.base_url(), &["m-five"]),
        openai_provider("backup", &backup.base_url(), &["m-backup"]),
        sluice_tests::teams::team("t", &[&key], "tokens_per_minute = 100000\nmodels = [\"*\"]"),
    );
    let sluice = sluice_tests::Gateway::builder()
        .config(&toml)
        .env(ENV)
        .start();
    let post = |model: &str| {
        client()
            .post(sluice.url("/v1/chat/completions"))
            .bearer_auth(&key.key)
            .json(&chat(model, false, json!({})))
            .timeout(Duration::from_secs(20))
            .send()
    };
    let usage = || async {
        let v: Value = client()
            .get(sluice.url("/v1/usage"))
            .bearer_auth(&key.key)
            .send()
            .await
            .expect("usage")
            .json()
            .await
            .expect("json");
        v["prompt_tokens"].as_u64().unwrap_or(0)
    };

    // Longer than the headers timeout, within the response timeout: served.
    let r = post("m-two").await.expect("request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["choices"][0]["message"]["content"], "done thinking",
        "{v}"
    );
    assert_eq!(usage().await, 5, "charged the upstream's usage");

    // Longer than the response timeout: 504, the route's backup never asked, prompt charged.
    let r = post("slow").await.expect("request");
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.expect("json");
    let err = assert_error_shape(&v);
    assert_eq!(err["type"], "upstream_timeout", "{v}");
    assert_eq!(five.requests().len(), 1);
    assert_eq!(
        backup.requests().len(),
        0,
        "a timed-out answer is not replayed elsewhere"
    );
    assert!(usage().await > 5, "the prompt estimate is charged");
}
