//! What a client that goes away means, per route and per team (`on_disconnect`, `grace_secs`):
//! `"cancel"` closes the upstream connection within a second of the client leaving, on every
//! dialect that follows the setting; `"grace"` keeps it for the route's own `grace_secs`, and a
//! resume within them works; `POST /v1/streams` and the AI SDK's UI stream keep their grace
//! whatever the setting; a cancelled stream is charged what it generated so far.
//!
//! The upstreams are scripted and slow (a token every 100 ms), and record when Sluice closed
//! their connection. Times are measured from the moment the test drops its connection.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::e2e::{
    chat, check_openai_wire_from, client, collect, content_of, data, openai_provider, up_chunk,
    up_role, up_text, wait_until, StreamReader,
};
use sluice_tests::scripted::{chunk, end_chunks, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::teams::{new_key, team, usage_when};
use sluice_tests::{Gateway, Sluice};

const LIMIT: Duration = Duration::from_secs(10);
/// The promise of `"cancel"`: the upstream is closed within a second of the client leaving.
const CANCEL_WITHIN: Duration = Duration::from_secs(1);
/// Long enough to show a grace period is kept (the global one is 30 s by default).
const STILL_OPEN_AFTER: Duration = Duration::from_millis(1500);

/// An upstream streaming `n` tokens (`t0 `, `t1 `, ...) `every` apart, then finishing; with
/// `usage`, each token's chunk carries the usage so far (as vLLM's `continuous_usage_stats`),
/// counting ten tokens a chunk.
fn slow_steps(n: usize, every: Duration, usage: bool) -> Vec<Step> {
    let mut steps = vec![sse_head(), chunk(data(&up_role()).as_bytes())];
    for i in 0..n {
        let mut c = up_text(&format!("t{i} "));
        if usage {
            // Ten tokens a chunk: not what the gateway's estimate would say.
            let n = 10 * (i + 1);
            c["usage"] = json!({"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n});
        }
        steps.push(chunk(data(&c).as_bytes()));
        steps.push(Step::Sleep(every));
    }
    steps.push(chunk(
        format!(
            "{}data: [DONE]\n\n",
            data(&up_chunk(0, json!({}), Some("stop")))
        )
        .as_bytes(),
    ));
    steps.push(end_chunks());
    steps
}

async fn slow(n: usize) -> ScriptedUpstream {
    serve(slow_steps(n, Duration::from_millis(100), false)).await
}

fn expected_text(n: usize) -> String {
    (0..n).map(|i| format!("t{i} ")).collect()
}

/// A provider `name` for `up` (its own models `name-*`) and a route `model` to it, with
/// `extra` lines.
fn routed(name: &str, up: &ScriptedUpstream, model: &str, extra: &str) -> String {
    format!(
        "{}[[routes]]\nmodel = {model:?}\ntargets = [\"{name}:m\"]\n{extra}\n\n",
        openai_provider(name, &up.base_url(), &[&format!("{name}-*")])
    )
}

/// Reads `r` until the text `t{k} ` has arrived, checks the upstream is still open, drops the
/// connection and returns when.
async fn leave_after(mut r: StreamReader, k: usize, up: &ScriptedUpstream, what: &str) -> Instant {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let mark = format!("t{k} ");
    r.read_until(LIMIT, |b| b.contains(&mark)).await;
    assert!(!r.ended, "{what}: the stream ended early: {}", r.body);
    assert_eq!(
        up.client_closed(),
        0,
        "{what}: the upstream is still streaming"
    );
    drop(r);
    Instant::now()
}

/// Waits up to `limit` for the upstream's connection to be closed; how long after `left`.
async fn closed_within(up: &ScriptedUpstream, left: Instant, limit: Duration) -> Option<Duration> {
    wait_until(limit, || up.client_closed() > 0)
        .await
        .then(|| left.elapsed())
}

async fn post(s: &Sluice, path: &str, key: Option<&str>, body: &Value) -> StreamReader {
    let mut req = client().post(s.url(path)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    StreamReader::new(req.send().await.expect("response"))
}

/// A streaming request for `model` in the shape of `path`'s dialect.
fn body_for(path: &str, model: &str) -> Value {
    match path {
        "/v1/responses" => json!({"model": model, "input": "Say hello", "stream": true}),
        "/v1/messages" => json!({
            "model": model, "max_tokens": 1000, "stream": true,
            "messages": [{"role": "user", "content": "Say hello"}],
        }),
        _ => chat(model, true, json!({})),
    }
}

#[tokio::test]
async fn a_cancel_route_closes_the_upstream_within_a_second_of_the_client_leaving() {
    for path in ["/v1/chat/completions", "/v1/responses", "/v1/messages"] {
        let up = slow(100).await;
        // The global grace is the default 30 s: only the route says cancel.
        let sluice = Gateway::builder()
            .config(&routed("p", &up, "smart", "on_disconnect = \"cancel\""))
            .demo(false)
            .start();
        let r = post(&sluice, path, None, &body_for(path, "smart")).await;
        let left = leave_after(r, 2, &up, path).await;
        let after = closed_within(&up, left, Duration::from_secs(5)).await;
        assert!(
            after.is_some_and(|a| a < CANCEL_WITHIN),
            "{path}: the upstream was closed {after:?} after the client left (cancel: within 1 s); logs:\n{}",
            sluice.logs()
        );
    }
}

#[tokio::test]
async fn a_cancel_team_closes_the_upstream_and_another_team_keeps_its_grace() {
    let up = slow(100).await;
    let quick = new_key();
    let patient = new_key();
    let toml = format!(
        "{}{}{}",
        openai_provider("p", &up.base_url(), &["direct"]),
        team("quick", &[&quick], "on_disconnect = \"cancel\""),
        team("patient", &[&patient], ""),
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();

    let r = post(
        &sluice,
        "/v1/chat/completions",
        Some(&patient.key),
        &chat("direct", true, json!({})),
    )
    .await;
    let left = leave_after(r, 2, &up, "patient").await;
    let closed = closed_within(&up, left, STILL_OPEN_AFTER).await;
    assert_eq!(
        closed, None,
        "a team without on_disconnect keeps the global 30 s grace"
    );
    // The patient stream goes on (to its end, 10 s later); the quick team's is a second
    // connection to the same upstream.
    let before = up.client_closed();

    let r = post(
        &sluice,
        "/v1/chat/completions",
        Some(&quick.key),
        &chat("direct", true, json!({})),
    )
    .await;
    let mut r = r;
    assert_eq!(r.status, 200, "{}", r.body);
    r.read_until(LIMIT, |b| b.contains("t2 ")).await;
    drop(r);
    let left = Instant::now();
    let closed = wait_until(Duration::from_secs(5), || up.client_closed() > before).await;
    let after = left.elapsed();
    assert!(
        closed && after < CANCEL_WITHIN,
        "the quick team's upstream was closed {after:?} after it left (closed: {closed}); logs:\n{}",
        sluice.logs()
    );
}

#[tokio::test]
async fn a_grace_route_keeps_the_upstream_for_its_grace_secs_and_a_resume_within_it_works() {
    // The route's 2 s, not the global 30 s.
    let long = slow(100).await;
    let short = slow(30).await;
    let toml = format!(
        "{}{}",
        routed(
            "long",
            &long,
            "smart",
            "on_disconnect = \"grace\"\ngrace_secs = 2"
        ),
        routed("short", &short, "quick", "grace_secs = 2"),
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();

    let r = post(
        &sluice,
        "/v1/chat/completions",
        None,
        &chat("smart", true, json!({})),
    )
    .await;
    let left = leave_after(r, 2, &long, "grace").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        long.client_closed(),
        0,
        "closed before the 2 s grace period ended"
    );
    let after = closed_within(&long, left, Duration::from_secs(6)).await;
    assert!(
        after.is_some_and(|a| a >= Duration::from_millis(1800) && a < Duration::from_secs(5)),
        "closed {after:?} after the client left; the route's grace is 2 s; logs:\n{}",
        sluice.logs()
    );

    // A resume within the grace reads the rest of the same generation: no gap, no duplicate.
    let mut r = post(
        &sluice,
        "/v1/chat/completions",
        None,
        &chat("quick", true, json!({})),
    )
    .await;
    let id = r
        .header("x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    r.read_until(LIMIT, |b| b.contains("t2 ")).await;
    let seen = r.complete_events();
    drop(r);
    let last = seen.last().and_then(|e| e.id).expect("an id");
    let before = content_of(&seen, 0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resp = client()
        .get(sluice.url(&format!("/v1/streams/{id}/events?format=openai")))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), 200);
    let a = collect(resp, Instant::now(), LIMIT).await;
    let rest = check_openai_wire_from(&a.body, last + 1);
    assert!(rest.last().expect("events").is_done(), "{}", a.body);
    assert_eq!(
        format!("{before}{}", content_of(&rest, 0)),
        expected_text(30)
    );
    assert_eq!(
        short.requests().len(),
        1,
        "the resume read the same generation"
    );
}

#[tokio::test]
async fn post_v1_streams_keeps_its_grace_under_a_cancel_route() {
    let up = slow(30).await;
    let sluice = Gateway::builder()
        .config(&routed("p", &up, "smart", "on_disconnect = \"cancel\""))
        .demo(false)
        .start();
    let created: Value = client()
        .post(sluice.url("/v1/streams"))
        .json(&chat("smart", true, json!({})))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let events = sluice.url(created["events_url"].as_str().expect("events_url"));
    let r = StreamReader::new(client().get(&events).send().await.expect("events"));
    let left = leave_after(r, 2, &up, "/v1/streams").await;
    assert_eq!(
        closed_within(&up, left, STILL_OPEN_AFTER).await,
        None,
        "a resumable stream keeps its grace period under a cancel route"
    );
    // And it resumes, to its end.
    let resp = client()
        .get(&events)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), 200);
    let a = collect(resp, Instant::now(), LIMIT).await;
    assert!(a.body.contains("event: done"), "{}", a.body);
    assert!(a.body.contains("t29 "), "{}", a.body);
}

#[tokio::test]
async fn the_ui_stream_keeps_its_grace_under_a_cancel_route() {
    let up = slow(30).await;
    let sluice = Gateway::builder()
        .config(&routed("p", &up, "smart", "on_disconnect = \"cancel\""))
        .demo(false)
        .start();
    let body = json!({
        "id": "chat-1",
        "model": "smart",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "trigger": "submit-message",
        "messageId": null,
    });
    let r = post(&sluice, "/v1/ui/chat", None, &body).await;
    let left = leave_after(r, 2, &up, "/v1/ui/chat").await;
    assert_eq!(
        closed_within(&up, left, STILL_OPEN_AFTER).await,
        None,
        "the UI stream exists to be resumed: it keeps its grace period"
    );
    let resp = client()
        .get(sluice.url("/v1/ui/chat/chat-1/stream"))
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), 200);
    let a = collect(resp, Instant::now(), LIMIT).await;
    assert!(a.body.contains("t29 "), "{}", a.body);
    assert!(a.body.contains("\"type\":\"finish\""), "{}", a.body);
}

#[tokio::test]
async fn a_cancelled_stream_is_charged_what_it_generated_so_far() {
    // Without usage from the upstream: the prompt estimate and the streamed estimate.
    let up = slow(100).await;
    // With usage in every chunk: the upstream's last count.
    let counted = serve(slow_steps(100, Duration::from_millis(100), true)).await;
    let key = new_key();
    let toml = format!(
        "{}{}{}",
        routed("p", &up, "smart", ""),
        routed("c", &counted, "counted", ""),
        team(
            "t",
            &[&key],
            "on_disconnect = \"cancel\"\ntokens_per_minute = 1000000"
        ),
    );
    let sluice = Gateway::builder().config(&toml).demo(false).start();

    let body = chat("smart", true, json!({"max_tokens": 5000}));
    let r = post(&sluice, "/v1/chat/completions", Some(&key.key), &body).await;
    leave_after(r, 4, &up, "estimated").await;
    let u = usage_when(&sluice, &key.key, "the cancelled stream is charged", |u| {
        u["completion_tokens"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let prompt = u["prompt_tokens"].as_u64().expect("prompt_tokens");
    let completion = u["completion_tokens"].as_u64().expect("completion_tokens");
    assert!(prompt > 0, "{u}");
    // At least the five tokens the client saw, far from the 100 the upstream would have sent
    // or the 5000 reserved.
    assert!((5..50).contains(&completion), "{u}");
    assert!(closed_within(&up, Instant::now(), LIMIT).await.is_some());

    let body = chat("counted", true, json!({"max_tokens": 5000}));
    let r = post(&sluice, "/v1/chat/completions", Some(&key.key), &body).await;
    leave_after(r, 4, &counted, "reported").await;
    let u2 = usage_when(&sluice, &key.key, "the second stream is charged", |v| {
        v["prompt_tokens"].as_u64().unwrap_or(0) == prompt + 7
    })
    .await;
    let reported = u2["completion_tokens"].as_u64().expect("completion_tokens") - completion;
    // The upstream's own count when it was cut (ten a chunk): at least the five chunks the
    // client saw, far from the 1000 of the whole answer.
    assert!(
        reported % 10 == 0 && (50..500).contains(&reported),
        "{reported}: {u2}"
    );
}

/// The client leaves while the upstream is silent (a model thinking): no write to the client
/// reveals it, and still the upstream is closed at once.
#[tokio::test]
async fn a_cancel_route_closes_a_silent_upstream_too() {
    let mut steps = vec![sse_head(), chunk(data(&up_role()).as_bytes())];
    for i in 0..3 {
        steps.push(chunk(data(&up_text(&format!("t{i} "))).as_bytes()));
    }
    steps.push(Step::Sleep(Duration::from_secs(8)));
    steps.push(end_chunks());
    let up = serve(steps).await;
    let sluice = Gateway::builder()
        .config(&routed("p", &up, "smart", "on_disconnect = \"cancel\""))
        .demo(false)
        .start();
    let r = post(
        &sluice,
        "/v1/chat/completions",
        None,
        &chat("smart", true, json!({})),
    )
    .await;
    let left = leave_after(r, 2, &up, "silent").await;
    let after = closed_within(&up, left, Duration::from_secs(6)).await;
    assert!(
        after.is_some_and(|a| a < CANCEL_WITHIN),
        "the silent upstream was closed {after:?} after the client left; logs:\n{}",
        sluice.logs()
    );
}
