//! Teams, keys and limits against a gateway: authentication (401 for every kind
//! of bad key, never 500, the key never logged), model permissions (403, filtered
//! `/v1/models`), the request limit (burst then 429 with an accurate `Retry-After`), one team's
//! limit not touching another, concurrency slots given back on every way a stream can end, the
//! token budget, `x-ratelimit-*` headers on every team response, exact usage counters under
//! concurrent hammering. (Config reload on SIGHUP and open mode's refusal of a public address
//! need the process: crates/gateway/tests/process.rs.)
//!
//! Longer than most test files (~800 lines) on purpose: every limit's behaviour sits beside the
//! others it must not disturb, over the same team fixtures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::e2e::{chunks, data, openai_provider, sse_events, up_role, up_text, wait_for};
use sluice_tests::scripted::{self, Step};
use sluice_tests::teams::{
    chat, chat_body, client, expect_429, get_json, header, new_key, post, rate_headers, start,
    team, usage, wait_open_streams, DEMO,
};
use sluice_tests::{metric, Sluice};

async fn sleep_secs(n: u64) {
    tokio::time::sleep(Duration::from_secs(n)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_then_429_whose_retry_after_is_enough() {
    let k = new_key();
    // 60 per minute, 10 at once: one request comes back every second.
    let s = start(
        &team(
            "burst",
            &[&k],
            "requests_per_minute = 60\nrequest_burst = 10",
        ),
        &[],
    );
    let body = chat_body(false, json!({}));
    let mut handles = Vec::new();
    for _ in 0..10 {
        let (url, key, body) = (s.url("/v1/chat/completions"), k.key.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("request")
        }));
    }
    let mut remaining = Vec::new();
    for h in handles {
        let r = h.await.expect("task");
        assert_eq!(r.status(), 200);
        let hs = rate_headers(r.headers(), "200");
        assert_eq!(hs["x-ratelimit-limit-requests"], "60");
        remaining.push(hs["x-ratelimit-remaining-requests"].parse::<u64>().unwrap());
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<u64>>());
    let (ra, hs) = expect_429(chat(&s, &k.key, &body).await, "requests").await;
    assert_eq!(ra, 1, "one request comes back within a second");
    assert_eq!(hs["x-ratelimit-remaining-requests"], "0");
    sleep_secs(ra).await;
    let r = chat(&s, &k.key, &body).await;
    assert_eq!(r.status(), 200, "a retry after Retry-After succeeds");
    let u = usage(&s, &k.key).await;
    assert_eq!(u["requests"], 11);
    assert_eq!(u["rejected"]["requests"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_team_at_its_limit_does_not_block_another() {
    let (a, b) = (new_key(), new_key());
    let limits = "requests_per_minute = 60\nrequest_burst = 3";
    let toml = team("alpha", &[&a], limits) + &team("beta", &[&b], limits);
    let s = start(&toml, &[]);
    let body = chat_body(false, json!({}));
    for _ in 0..3 {
        assert_eq!(chat(&s, &a.key, &body).await.status(), 200);
    }
    expect_429(chat(&s, &a.key, &body).await, "requests").await;
    let t = Instant::now();
    for _ in 0..3 {
        let r = chat(&s, &b.key, &body).await;
        assert_eq!(r.status(), 200, "beta is not held back by alpha");
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), Some("60"));
    }
    expect_429(chat(&s, &b.key, &body).await, "requests").await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "beta was slowed down: {:?}",
        t.elapsed()
    );
    let ua = usage(&s, &a.key).await;
    let ub = usage(&s, &b.key).await;
    assert_eq!(ua["team"], "alpha");
    assert_eq!(ub["team"], "beta");
    assert_eq!(ub["requests"], 3);
    assert_eq!(ua["requests"], 3);
}

/// Opens a slow stream and reads its first bytes; the response is returned still streaming.
async fn open_slow(s: &Sluice, key: &str) -> reqwest::Response {
    let slow = chat_body(
        true,
        json!({"mock": {"delay_ms": 200, "tokens": 500}, "max_tokens": 500}),
    );
    let mut r = chat(s, key, &slow).await;
    assert_eq!(r.status(), 200, "slow stream admitted");
    rate_headers(r.headers(), "stream");
    let first = r.chunk().await.expect("first bytes");
    assert!(first.is_some());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_slots_come_back_on_every_path() {
    // A scripted upstream that fails mid-stream: one delta, then a reset.
    let broken = scripted::serve(vec![
        scripted::sse_head(),
        scripted::chunk(data(&up_role()).as_bytes()),
        scripted::chunk(data(&up_text("partial")).as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ])
    .await;
    let k = new_key();
    let toml = openai_provider("dead", "http://127.0.0.1:1/v1", &["dead-*"])
        + &openai_provider("broken", &broken.base_url(), &["broken-*"])
        + &team(
            "conc",
            &[&k],
            "max_concurrent_streams = 2\ntokens_per_minute = 1000000",
        );
    let s = start(&toml, &[("SLUICE_STREAM_GRACE_SECS", "0")]);

    let s1 = open_slow(&s, &k.key).await;
    let s2 = open_slow(&s, &k.key).await;
    wait_open_streams(&s, &k.key, 2, "two slow streams").await;
    let third = chat(&s, &k.key, &chat_body(true, json!({}))).await;
    let (ra, _) = expect_429(third, "concurrency").await;
    assert_eq!(ra, 1);
    // Non-streaming requests hold a slot too while in flight.
    expect_429(
        chat(&s, &k.key, &chat_body(false, json!({}))).await,
        "concurrency",
    )
    .await;

    // 1. The client disconnects (grace 0: the upstream is cancelled at once).
    drop(s1);
    wait_open_streams(&s, &k.key, 1, "client disconnected").await;
    let s3 = open_slow(&s, &k.key).await;

    // 2. DELETE /v1/streams/{id} (the stop button).
    let id = header(&s2, "x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    let r = client()
        .delete(s.url(&format!("/v1/streams/{id}")))
        .bearer_auth(&k.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rate_headers(r.headers(), "DELETE");
    let rest = s2.text().await.unwrap();
    assert!(rest.contains("cancelled"), "{rest}");
    wait_open_streams(&s, &k.key, 1, "cancelled").await;

    // 3. A stream that finishes, and a non-streaming request.
    let r = chat(&s, &k.key, &chat_body(true, json!({}))).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let r = chat(&s, &k.key, &chat_body(false, json!({}))).await;
    assert_eq!(r.status(), 200);
    wait_open_streams(&s, &k.key, 1, "finished").await;

    // 4. The upstream fails before streaming (connection refused): the handler drops the
    // admission. More times than there are slots.
    for stream in [true, false, true, false] {
        let r = chat(
            &s,
            &k.key,
            &chat_body(stream, json!({"model": "dead-model"})),
        )
        .await;
        assert_eq!(r.status(), 502);
        rate_headers(r.headers(), "502");
    }
    wait_open_streams(&s, &k.key, 1, "upstream refused").await;

    // 5. The upstream fails mid-stream.
    let r = chat(
        &s,
        &k.key,
        &chat_body(true, json!({"model": "broken-model"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    wait_open_streams(&s, &k.key, 1, "upstream failed mid-stream").await;

    // 6. POST /v1/streams, read to the end; and one cancelled before any reader came.
    let r = post(&s, &k.key, "/v1/streams", &chat_body(false, json!({}))).await;
    assert_eq!(r.status(), 201);
    rate_headers(r.headers(), "201");
    let created: Value = r.json().await.unwrap();
    let events = client()
        .get(s.url(created["events_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("event: done"), "{events}");
    let slow = chat_body(
        false,
        json!({"mock": {"delay_ms": 200, "tokens": 500}, "max_tokens": 500}),
    );
    let r = post(&s, &k.key, "/v1/streams", &slow).await;
    let created: Value = r.json().await.unwrap();
    wait_open_streams(&s, &k.key, 2, "a stream nobody reads yet").await;
    let r = client()
        .delete(s.url(&format!("/v1/streams/{}", created["id"].as_str().unwrap())))
        .bearer_auth(&k.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_open_streams(&s, &k.key, 1, "resumable stream cancelled").await;

    // Last one out; then the full capacity is there again, and no more.
    drop(s3);
    wait_open_streams(&s, &k.key, 0, "all gone").await;
    let _a = open_slow(&s, &k.key).await;
    let _b = open_slow(&s, &k.key).await;
    expect_429(
        chat(&s, &k.key, &chat_body(true, json!({}))).await,
        "concurrency",
    )
    .await;
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "sluice_team_open_streams{team=\"conc\"}"),
        2,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "sluice_team_rejected_total{team=\"conc\",type=\"concurrency\"}"
        ),
        3
    );
    // The stream cut short by the upstream was charged for what it generated.
    let u = usage(&s, &k.key).await;
    assert!(u["completion_tokens"].as_u64().unwrap() > 0, "{u}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_budget_429_with_a_correct_retry_after() {
    let k = new_key();
    // 600 tokens per 6 s window: 100 tokens a second.
    let s = start(
        &format!(
            "rate_limit_window_secs = 6\n{}",
            team("tok", &[&k], "tokens_per_minute = 600")
        ),
        &[],
    );
    // Prompt estimate: a token per 4 bytes of the JSON body; with max_tokens: 500 in all.
    let body = |max_tokens: u64| {
        chat_body(
            false,
            json!({"max_tokens": max_tokens, "mock": {"tokens": 300}}),
        )
    };
    let prompt = (serde_json::to_vec(&body(100)).unwrap().len() as u64).div_ceil(4);
    let body = body(500 - prompt);
    let r = chat(&s, &k.key, &body).await;
    assert_eq!(r.status(), 200);
    let hs = rate_headers(r.headers(), "200");
    assert_eq!(hs["x-ratelimit-limit-tokens"], "600");
    assert_eq!(
        hs["x-ratelimit-remaining-tokens"], "100",
        "500 reserved of 600"
    );
    let used: Value = r.json().await.unwrap();
    let real = used["usage"]["total_tokens"].as_u64().unwrap();
    assert!(real > 300 && real < 400, "{used}");
    // Settled with the real usage: about 600 - real left. 500 more do not fit.
    let (ra, hs) = expect_429(chat(&s, &k.key, &body).await, "tokens").await;
    let left: u64 = hs["x-ratelimit-remaining-tokens"].parse().unwrap();
    assert!(
        (598..=650).contains(&(left + real)),
        "settled with the real usage: {left} left after {real}"
    );
    let exact = (500 - left) as f64 / 100.0;
    assert!(
        ra as f64 >= exact - 0.01 && (ra as f64) < exact + 1.0,
        "Retry-After {ra} s for {exact} s of refill"
    );
    assert!(ra >= 2);
    sleep_secs(ra).await;
    let r = chat(&s, &k.key, &body).await;
    assert_eq!(r.status(), 200, "a retry after Retry-After fits");
    let u = usage(&s, &k.key).await;
    assert_eq!(u["rejected"]["tokens"], 1);
    assert_eq!(u["requests"], 2);
    assert_eq!(u["total_tokens"], 2 * real);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_get_401_and_keys_never_reach_the_logs() {
    let (good, other) = (new_key(), new_key());
    let wrong = new_key(); // well-formed, not configured
    let s = start(
        &team("auth", &[&good], "requests_per_minute = 1000"),
        &[("SLUICE_LOG", "trace")],
    );
    let long = "k".repeat(10 * 1024);
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no key", vec![]),
        (
            "wrong key",
            vec![("authorization", format!("Bearer {}", wrong.key))],
        ),
        ("wrong x-api-key", vec![("x-api-key", wrong.key.clone())]),
        (
            "the hash as key",
            vec![("authorization", format!("Bearer {}", good.hash))],
        ),
        (
            "Basic auth",
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
        ),
        ("no scheme", vec![("authorization", good.key.clone())]),
        ("empty bearer", vec![("authorization", "Bearer ".into())]),
        (
            "other format",
            vec![("authorization", "Bearer sk-proj-abc123".into())],
        ),
        (
            "10 KB bearer",
            vec![("authorization", format!("Bearer {long}"))],
        ),
        ("10 KB x-api-key", vec![("x-api-key", long.clone())]),
        (
            "key plus junk",
            vec![("authorization", format!("Bearer {} x", good.key))],
        ),
        (
            "another unconfigured key",
            vec![("x-api-key", other.key.clone())],
        ),
    ];
    let c = client();
    for (what, headers) in &cases {
        for (method, path) in [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", "/v1/usage"),
            ("POST", "/v1/streams"),
            ("DELETE", "/v1/streams/abc"),
        ] {
            let mut rb = c
                .request(method.parse().unwrap(), s.url(path))
                .json(&chat_body(false, json!({})));
            for (k, v) in headers {
                rb = rb.header(*k, v);
            }
            let r = rb.send().await.expect("request");
            assert_eq!(r.status(), 401, "{what} {method} {path}");
            let body: Value = r.json().await.expect("json body");
            assert_eq!(body["error"]["code"], "invalid_api_key", "{what}: {body}");
            let text = body.to_string();
            assert!(!text.contains(&good.key) && !text.contains(&wrong.key));
        }
    }
    // Non-UTF-8 bytes in the header.
    let r = c
        .get(s.url("/v1/models"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The events URL needs no key; the good key works both ways.
    let r = c
        .get(s.url("/v1/streams/nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = chat(&s, &good.key, &chat_body(true, json!({}))).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let r = c
        .post(s.url("/v1/chat/completions"))
        .header("x-api-key", &good.key)
        .json(&chat_body(false, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.logs();
    assert!(logs.contains("sluice started"), "logs captured:\n{logs}");
    for secret in [&good.key, &wrong.key, &other.key] {
        assert!(
            !logs.contains(secret.as_str()),
            "a key reached the logs:\n{logs}"
        );
        // Not even the random part alone.
        let tail = &secret[secret.len() - 20..];
        assert!(!logs.contains(tail), "part of a key reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_permissions_and_headers_on_every_team_response() {
    let (demo, other) = (new_key(), new_key());
    let toml = openai_provider("dead", "http://127.0.0.1:1/v1", &["dead-model"])
        + &team(
            "demo-only",
            &[&demo],
            "models = [\"sluice-*\"]\nrequests_per_minute = 600",
        )
        + &team(
            "others",
            &[&other],
            "models = [\"gpt-*\", \"dead-*\"]\ntokens_per_minute = 5000",
        );
    let s = start(
        &toml,
        &[
            ("SLUICE_MAX_BODY_BYTES", "1000"),
            ("SLUICE_CORS_ORIGINS", "http://example.com"),
        ],
    );
    let list = get_json(&s, &demo.key, "/v1/models").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![DEMO], "{list}");
    let list = get_json(&s, &other.key, "/v1/models").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["dead-model"], "{list}");

    let r = chat(&s, &other.key, &chat_body(false, json!({}))).await;
    assert_eq!(r.status(), 403);
    rate_headers(r.headers(), "403");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(DEMO));

    // Every response to a team carries the headers: success, gateway errors, upstream errors.
    let c = client();
    let k = &demo.key;
    let checks: Vec<(u16, reqwest::RequestBuilder)> = vec![
        (200, c.get(s.url("/v1/models")).bearer_auth(k)),
        (200, c.get(s.url("/v1/usage")).bearer_auth(k)),
        (
            200,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(k)
                .json(&chat_body(false, json!({}))),
        ),
        (
            200,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(k)
                .json(&chat_body(true, json!({}))),
        ),
        (
            201,
            c.post(s.url("/v1/streams"))
                .bearer_auth(k)
                .json(&chat_body(false, json!({}))),
        ),
        (
            400,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(k)
                .body("{not json"),
        ),
        (
            400,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(k)
                .json(&json!({"model": DEMO})),
        ),
        (
            404,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(k)
                .json(&chat_body(false, json!({"model": "nope"}))),
        ),
        (404, c.delete(s.url("/v1/streams/nope")).bearer_auth(k)),
        (
            413,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(k)
                .body(vec![b' '; 2000]),
        ),
        (
            502,
            c.post(s.url("/v1/chat/completions"))
                .bearer_auth(&other.key)
                .json(&chat_body(false, json!({"model": "dead-model"}))),
        ),
    ];
    for (want, rb) in checks {
        let r = rb.send().await.expect("request");
        assert_eq!(r.status().as_u16(), want, "{}", r.url());
        let hs = rate_headers(r.headers(), &format!("{want} {}", r.url()));
        let limit = if r.headers().get("x-ratelimit-limit-requests").unwrap() == "600" {
            "4294967295"
        } else {
            "5000"
        };
        assert_eq!(hs["x-ratelimit-limit-tokens"], limit);
        let _ = r.bytes().await;
    }
    // CORS (for a configured origin) lets a browser read them.
    let r = c
        .get(s.url("/v1/models"))
        .bearer_auth(k)
        .header("origin", "http://example.com")
        .send()
        .await
        .unwrap();
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap_or_default()
        .to_owned();
    assert!(
        exposed.contains("x-ratelimit-remaining-requests"),
        "{exposed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hammering_leaves_every_counter_exact() {
    let k = new_key();
    // Enough burst for most but not all of the 2000 requests, and fewer slots than tasks: both
    // request and concurrency refusals happen.
    let s = start(
        &team(
            "ham",
            &[&k],
            "requests_per_minute = 600\nrequest_burst = 300\nmax_concurrent_streams = 40\ntokens_per_minute = 1000000000",
        ),
        &[],
    );
    const TASKS: usize = 50;
    const EACH: usize = 40;
    #[derive(Default, Debug)]
    struct Seen {
        ok: u64,
        prompt: u64,
        completion: u64,
        rejected: HashMap<String, u64>,
    }
    let run = async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let url = s.url("/v1/chat/completions");
            let key = k.key.clone();
            tasks.push(tokio::spawn(async move {
                let c = client();
                let mut seen = Seen::default();
                for i in 0..EACH {
                    let stream = (t + i) % 2 == 0;
                    let body = chat_body(
                        stream,
                        json!({
                            "max_tokens": 1 + (i % 4),
                            "mock": {"tokens": 4, "first_token_delay_ms": 5},
                            "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                        }),
                    );
                    let r = c.post(&url).bearer_auth(&key).json(&body).send().await.expect("send");
                    match r.status().as_u16() {
                        200 => {
                            let text = r.text().await.expect("body");
                            let usage = if stream {
                                chunks(&sse_events(&text))
                                    .into_iter()
                                    .find(|v| v["usage"].is_object())
                                    .map(|v| v["usage"].clone())
                            } else {
                                serde_json::from_str::<Value>(&text).ok().map(|v| v["usage"].clone())
                            }
                            .expect("usage in the answer");
                            seen.ok += 1;
                            seen.prompt += usage["prompt_tokens"].as_u64().unwrap();
                            seen.completion += usage["completion_tokens"].as_u64().unwrap();
                        }
                        429 => {
                            let body: Value = r.json().await.expect("json");
                            let kind = body["error"]["type"].as_str().unwrap().to_owned();
                            *seen.rejected.entry(kind).or_default() += 1;
                        }
                        other => panic!("unexpected status {other}: {}", r.text().await.unwrap_or_default()),
                    }
                }
                seen
            }));
        }
        let mut all = Seen::default();
        for t in tasks {
            let s = t.await.expect("task");
            all.ok += s.ok;
            all.prompt += s.prompt;
            all.completion += s.completion;
            for (k, v) in s.rejected {
                *all.rejected.entry(k).or_default() += v;
            }
        }
        all
    };
    let t0 = Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("2000 requests within two minutes");
    eprintln!("hammer: {seen:?} in {:?}", t0.elapsed());
    let rejected = |k: &str| seen.rejected.get(k).copied().unwrap_or(0);
    assert_eq!(
        seen.ok + rejected("requests") + rejected("concurrency") + rejected("tokens"),
        (TASKS * EACH) as u64
    );
    assert!(seen.ok >= 300, "{seen:?}");
    assert!(rejected("requests") > 0, "{seen:?}");
    // Streams settle just after their last byte: wait for the counters to catch up.
    let (s, key) = (&s, &k.key);
    let u = wait_for(Duration::from_secs(10), || async move {
        let u = usage(s, key).await;
        (u["completion_tokens"] == seen.completion && u["open_streams"] == 0).then_some(u)
    })
    .await;
    let Some(u) = u else {
        panic!("{} vs {seen:?}", usage(s, key).await);
    };
    assert_eq!(u["requests"], seen.ok, "{u} vs {seen:?}");
    assert_eq!(u["prompt_tokens"], seen.prompt);
    assert_eq!(u["completion_tokens"], seen.completion);
    assert_eq!(u["total_tokens"], seen.prompt + seen.completion);
    for kind in ["requests", "tokens", "concurrency"] {
        assert_eq!(
            u["rejected"][kind],
            rejected(kind),
            "{kind}: {u} vs {seen:?}"
        );
    }
    let m = s.metrics().await;
    let t = "team=\"ham\"";
    assert_eq!(
        metric(&m, &format!("sluice_team_requests_total{{{t}}}")),
        seen.ok
    );
    assert_eq!(
        metric(&m, &format!("sluice_team_prompt_tokens_total{{{t}}}")),
        seen.prompt
    );
    assert_eq!(
        metric(&m, &format!("sluice_team_completion_tokens_total{{{t}}}")),
        seen.completion
    );
    for kind in ["requests", "tokens", "concurrency"] {
        assert_eq!(
            metric(
                &m,
                &format!("sluice_team_rejected_total{{{t},type=\"{kind}\"}}")
            ),
            rejected(kind),
            "{kind}"
        );
    }
    assert_eq!(metric(&m, &format!("sluice_team_open_streams{{{t}}}")), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_usage_is_settled_and_stream_cut_short_is_charged() {
    let k = new_key();
    let s = start(
        &team("settle", &[&k], "tokens_per_minute = 100000"),
        &[("SLUICE_STREAM_GRACE_SECS", "0")],
    );
    // The client did not ask for usage: it does not see it, but the team is charged.
    let r = chat(
        &s,
        &k.key,
        &chat_body(true, json!({"max_tokens": 5, "mock": {"tokens": 5}})),
    )
    .await;
    let text = r.text().await.unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    let (sr, key) = (&s, &k.key);
    let settled = wait_for(Duration::from_secs(5), || async move {
        (usage(sr, key).await["completion_tokens"] == 5).then_some(())
    })
    .await;
    assert!(settled.is_some(), "{}", usage(sr, key).await);
    // Cut short by the client: charged for the deltas streamed (at least the ones it read).
    let mut r = chat(
        &s,
        &k.key,
        &chat_body(
            true,
            json!({"max_tokens": 1000, "mock": {"tokens": 1000, "delay_ms": 20}}),
        ),
    )
    .await;
    let mut got = 0;
    while got < 10 {
        let c = r.chunk().await.unwrap().unwrap();
        got += String::from_utf8_lossy(&c).matches("\"content\"").count();
    }
    drop(r);
    // The team has no stream limit, so `open_streams` does not follow this stream: wait for the
    // charge itself (the pump settles once it sees the reader gone).
    let moved = wait_for(Duration::from_secs(10), || async move {
        let u = usage(sr, key).await;
        (u["completion_tokens"] != 5).then_some(u)
    })
    .await;
    // Not charged within the time: the check below fails on the last document.
    let u = match moved {
        Some(u) => u,
        None => usage(sr, key).await,
    };
    let charged = u["completion_tokens"].as_u64().unwrap() - 5;
    assert!(
        (9..1000).contains(&charged),
        "charged {charged} for a stream cut short: {u}"
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_v1_paths_and_methods_need_a_key_too() {
    let k = new_key();
    let s = start(&team("paths", &[&k], ""), &[]);
    let c = client();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/nope"),
        (reqwest::Method::GET, "/v1/chat/completions"),
        (reqwest::Method::PUT, "/v1/models"),
    ] {
        let anon = c
            .request(method.clone(), s.url(path))
            .send()
            .await
            .expect("send");
        assert_eq!(anon.status(), 401, "{method} {path} without a key");
        let authed = c
            .request(method.clone(), s.url(path))
            .bearer_auth(&k.key)
            .send()
            .await
            .expect("send");
        assert!(
            matches!(authed.status().as_u16(), 404 | 405),
            "{method} {path} with a key: {}",
            authed.status()
        );
        let v: Value = authed.json().await.expect("json error");
        assert!(v["error"]["message"].is_string());
    }
    // Outside /v1, no key is asked for.
    assert_eq!(
        c.get(s.url("/healthz"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        c.get(s.url("/nope")).send().await.expect("send").status(),
        404
    );
}
