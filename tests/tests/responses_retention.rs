//! Responses-API answers outlive their relay streams: with streams kept 1 s
//! (`SLUICE_STREAM_RETENTION_SECS=1`), an `item_reference` to an earlier answer still resolves
//! and `GET /v1/responses/{id}` still returns the object (its events have expired: `stream=true`
//! is a 404 saying so), for its team only; `store: false` keeps nothing; with Redis the object
//! is found by another instance; and the AI SDK's second turn after a pause works
//! (`tests/sdk/responses_ai_sdk_retention.mjs`).

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{assert_error_shape, client, openai_provider, StreamReader};
use sluice_tests::redis::{RedisServer, Reply};
use sluice_tests::scripted::{serve, ScriptedUpstream};
use sluice_tests::sdk::{node_package, require, run_checks};
use sluice_tests::sse::sse_events;
use sluice_tests::teams;
use sluice_tests::wait::wait_for;
use sluice_tests::{Gateway, Sluice};

use crate::responses_api::{slow_steps, text_steps};

/// Streams are kept this long after their end (seconds).
const SHORT: &str = "1";

fn start(up: &ScriptedUpstream, env: &[(&str, &str)]) -> Sluice {
    Gateway::builder()
        .upstream(up)
        .env([("SLUICE_STREAM_RETENTION_SECS", SHORT)])
        .env(env)
        .start()
}

async fn post(s: &Sluice, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = client().post(s.url("/v1/responses")).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("response")
}

async fn get(s: &Sluice, key: Option<&str>, path: &str) -> reqwest::Response {
    let mut req = client().get(s.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("response")
}

/// The final response object of a streamed `POST /v1/responses`.
async fn streamed(s: &Sluice, body: &Value) -> Value {
    let resp = post(s, None, body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let last = sse_events(&text).pop().expect("events");
    assert_eq!(last.event.as_deref(), Some("response.completed"), "{text}");
    last.json()["response"].clone()
}

/// Waits until the relay stream behind response `id` is gone on `s` (its events are a 404).
async fn stream_expired(s: &Sluice, id: &str) {
    let stream = id.strip_prefix("resp_").expect("a response id").to_owned();
    let gone = wait_for(Duration::from_secs(15), || {
        let url = s.url(&format!("/v1/streams/{stream}/events"));
        async move {
            let r = client().get(url).send().await.ok()?;
            (r.status() == 404).then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "stream {stream} was never dropped");
}

/// The second turn of a chat whose first answer is referenced by id (as the AI SDK sends it).
fn second_turn(item: &str) -> Value {
    json!({"model": "m", "stream": true, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "item_reference", "id": item},
        {"role": "user", "content": [{"type": "input_text", "text": "and then?"}]},
    ]})
}

/// What the upstream got for request `n`.
fn sent(up: &ScriptedUpstream, n: usize) -> Value {
    serde_json::from_slice(&up.requests()[n].1).expect("a JSON request")
}

fn assert_second_turn_sent(up: &ScriptedUpstream, n: usize) {
    assert_eq!(
        sent(up, n)["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "and then?"},
        ])
    );
}

#[tokio::test]
async fn an_answer_is_kept_after_its_stream_expired() {
    let up = serve(text_steps(&["Hello ", "there"])).await;
    let s = start(&up, &[]);
    // `store` unset: kept, as OpenAI does by default.
    let first = streamed(&s, &json!({"model": "m", "input": "hi", "stream": true})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let item = first["output"][0]["id"].as_str().unwrap().to_owned();
    stream_expired(&s, &id).await;

    // The object, whole.
    let r = get(&s, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 200);
    let kept: Value = r.json().await.unwrap();
    assert_eq!(kept, first);
    assert_eq!(kept["status"], "completed");
    assert_eq!(kept["output"][0]["content"][0]["text"], "Hello there");

    // Its events are gone: a 404 that says so.
    let r = get(&s, None, &format!("/v1/responses/{id}?stream=true")).await;
    assert_eq!(r.status(), 404);
    let err: Value = r.json().await.unwrap();
    assert_error_shape(&err);
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("expired") && msg.contains("without stream=true"),
        "{msg}"
    );

    // The next turn refers to the first answer by id: the upstream gets its text.
    let r = post(&s, None, &second_turn(&item)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_eq!(up.requests().len(), 2);
    assert_second_turn_sent(&up, 1);

    // Cancelling a kept response changes nothing.
    let r = client()
        .post(s.url(&format!("/v1/responses/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "completed");
}

#[tokio::test]
async fn store_false_keeps_nothing_after_the_stream() {
    let up = serve(text_steps(&["Hello ", "there"])).await;
    let s = start(&up, &[]);
    let first: Value = post(
        &s,
        None,
        &json!({"model": "m", "input": "hi", "store": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    let item = first["output"][0]["id"].as_str().unwrap().to_owned();
    stream_expired(&s, &id).await;
    let r = get(&s, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 404);
    let r = post(&s, None, &second_turn(&item)).await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_error_shape(&err);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown or has expired"),
        "{err}"
    );
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn zero_retention_keeps_nothing() {
    let up = serve(text_steps(&["Hello ", "there"])).await;
    let s = start(&up, &[("SLUICE_RESPONSES_RETENTION_SECS", "0")]);
    let first = streamed(&s, &json!({"model": "m", "input": "hi", "stream": true})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    stream_expired(&s, &id).await;
    let r = get(&s, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_kept_answer_is_its_teams_only() {
    let up = serve(text_steps(&["Hello ", "there"])).await;
    let a = teams::new_key();
    let b = teams::new_key();
    let toml = format!(
        "{}\n{}{}",
        openai_provider("up", &up.base_url(), &["*"]),
        teams::team("a", &[&a], ""),
        teams::team("b", &[&b], "")
    );
    let s = Gateway::builder()
        .config(&toml)
        .demo(false)
        .env([("SLUICE_STREAM_RETENTION_SECS", SHORT)])
        .start();
    let (a, b) = (Some(a.key.as_str()), Some(b.key.as_str()));
    let first: Value = post(&s, a, &json!({"model": "m", "input": "hi"}))
        .await
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    let item = first["output"][0]["id"].as_str().unwrap().to_owned();
    stream_expired(&s, &id).await;
    assert_eq!(
        get(&s, a, &format!("/v1/responses/{id}")).await.status(),
        200
    );
    assert_eq!(
        get(&s, b, &format!("/v1/responses/{id}")).await.status(),
        404
    );
    assert_eq!(post(&s, b, &second_turn(&item)).await.status(), 400);
    let r = post(&s, a, &second_turn(&item)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_second_turn_sent(&up, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_another_instance_finds_the_kept_answer() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let up = serve(text_steps(&["Hello ", "there"])).await;
    let url = redis.url();
    let env = [("SLUICE_REDIS_URL", url.as_str())];
    let (a, b) = (start(&up, &env), start(&up, &env));
    let first = streamed(&a, &json!({"model": "m", "input": "hi", "stream": true})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let item = first["output"][0]["id"].as_str().unwrap().to_owned();
    stream_expired(&b, &id).await;
    stream_expired(&a, &id).await;

    // In Redis, with the retention as its expiry (a day by default).
    let key = format!("sluice:response:{id}");
    match redis.command(&["TTL", &key]) {
        Reply::Int(ttl) => assert!(ttl > 86_000, "ttl {ttl}"),
        other => panic!("TTL {key}: {other:?}"),
    }
    let stored: Value = serde_json::from_str(&redis.command(&["GET", &key]).text()).unwrap();
    assert_eq!(stored["response"], first);

    // B, which never ran it, serves the object and resolves the reference.
    let r = get(&b, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    let r = post(&b, None, &second_turn(&item)).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_eq!(up.requests().len(), 2);
    assert_second_turn_sent(&up, 1);
}

/// The AI SDK's own two turns with a pause past the streams' retention (its second turn fails
/// with a 400 "unknown or has expired" when nothing keeps the first answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_second_turn_after_the_stream_expired() {
    let Some(()) = require(node_package("ai").and_then(|()| node_package("@ai-sdk/openai"))) else {
        return;
    };
    let s = Gateway::builder()
        .env([
            ("SLUICE_STREAM_RETENTION_SECS", SHORT),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
        ])
        .start();
    let base = s.url("/v1");
    tokio::task::block_in_place(|| {
        run_checks(
            &s,
            "node",
            &["responses_ai_sdk_retention.mjs", &base, "2500"],
            Duration::from_secs(120),
            "PASS responses-ai-sdk-retention: every check passed",
        )
    });
}

/// Waiting to keep the object is not reading: a client that goes away still lets the
/// generation be abandoned after the grace period, and the object kept is the cancelled one.
#[tokio::test]
async fn an_abandoned_answer_is_still_abandoned_and_kept() {
    // 40 tokens, one each 250 ms: 10 s if nobody stops it.
    let up = serve(slow_steps(40, Duration::from_millis(250))).await;
    let s = start(&up, &[("SLUICE_STREAM_GRACE_SECS", "1")]);
    let started = std::time::Instant::now();
    let mut r = StreamReader::post(
        &s.url("/v1/responses"),
        &json!({"model": "m", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    r.read_until(Duration::from_secs(5), |b| b.contains("t1 "))
        .await;
    let stream = r.headers["x-sluice-stream-id"]
        .to_str()
        .expect("stream id")
        .to_owned();
    drop(r);
    let id = format!("resp_{stream}");
    // Looking at the object is not reading either (its events would be: not asked here).
    let ended = wait_for(Duration::from_secs(15), || {
        let url = s.url(&format!("/v1/responses/{id}"));
        async move {
            let obj: Value = client().get(url).send().await.ok()?.json().await.ok()?;
            (obj["status"] != "in_progress").then_some(obj)
        }
    })
    .await
    .expect("the response ended");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the generation ran on after its client left: {:?} ({ended})",
        started.elapsed()
    );
    stream_expired(&s, &id).await;
    let r = get(&s, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(r.status(), 200);
    let kept: Value = r.json().await.expect("object");
    assert_eq!(kept["status"], "cancelled", "{kept}");
}
