//! Team limits under hostile or unlucky inputs, against a gateway: absurd
//! `max_tokens` / `n` (400 naming the field, never a locked-out team or a panic), big but allowed
//! requests against small budgets (the reservation is bounded by the budget, headers stay sane),
//! work charged when the upstream reports no usage or the client leaves mid-request, the prompt
//! estimate covering the whole body (`tools` too). (Config reloads that do not refill the request
//! limit need SIGHUP: crates/gateway/tests/process.rs.)

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, client, data, openai_provider, sse_steps, up_chunk, up_text,
};
use sluice_tests::scripted::{self, full_response, Step};
use sluice_tests::teams::{
    chat, expect_429_shape, header_value, new_key, start, team, usage_when, DEMO,
};
use sluice_tests::Gateway;

/// The ceiling Sluice puts on `max_tokens` / `max_completion_tokens` (see the README).
const MAX_TOKENS_CEILING: u64 = 1 << 24;

fn count(r: &reqwest::Response, name: &str) -> u64 {
    header_value(r, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a count"))
}

/// A Go-style duration header (`1m0s`, `1.5s`, `12ms`, `3h2m1s`) in seconds.
fn duration_secs(v: &str) -> f64 {
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.parse::<f64>().expect("ms") / 1000.0;
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in v.chars() {
        match c {
            'h' | 'm' | 's' => {
                let n: f64 = num.parse().unwrap_or_else(|_| panic!("duration {v}"));
                total += n * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => num.push(c),
        }
    }
    total
}

/// The prompt estimate Sluice documents: a token per four bytes of the JSON body, rounded up.
fn body_estimate(body: &Value) -> u64 {
    (serde_json::to_vec(body).expect("json").len() as u64).div_ceil(4)
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_max_tokens_and_n_are_400s_naming_the_field_and_never_break_the_team() {
    let k = new_key();
    // A tiny budget: a u64::MAX reservation against it used to panic in the limiter, and the
    // team's every later request got an empty reply.
    let s = start(
        &format!(
            "rate_limit_window_secs = 2\n{}",
            team("tiny", &[&k], "tokens_per_minute = 30")
        ),
        &[],
    );
    let cases = [
        ("max_tokens", json!(u64::MAX)),
        ("max_completion_tokens", json!(u64::MAX)),
        ("max_tokens", json!(MAX_TOKENS_CEILING + 1)),
        ("n", json!(129)),
    ];
    for (field, value) in cases {
        for stream in [false, true] {
            let mut body = json!({
                "model": DEMO, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            });
            body[field] = value.clone();
            let r = chat(&s, &k.key, &body).await;
            assert_eq!(r.status(), 400, "{field} = {value}");
            // Still a team response: it carries the limit headers, with a sane reset.
            let reset = duration_secs(header_value(&r, "x-ratelimit-reset-tokens"));
            assert!(reset <= 2.0, "{field}: reset {reset}s");
            let body: Value = r.json().await.expect("json");
            let err = assert_error_shape(&body);
            assert_eq!(err["type"], "invalid_request_error", "{body}");
            assert_eq!(err["param"], field, "{body}");
            assert!(err["message"].as_str().unwrap().contains(field), "{body}");
        }
    }
    // The limits that remain allowed: exactly the ceiling and 128 choices.
    let r = chat(
        &s,
        &k.key,
        &json!({"model": DEMO, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": MAX_TOKENS_CEILING, "n": 128, "mock": {"tokens": 2}}),
    )
    .await;
    assert_eq!(r.status(), 200, "the full budget admits a big request");
    assert_eq!(header_value(&r, "x-ratelimit-remaining-tokens"), "0");
    let reset = duration_secs(header_value(&r, "x-ratelimit-reset-tokens"));
    assert!(
        reset <= 2.0,
        "the reservation is bounded by the budget: reset {reset}s"
    );
    r.text().await.unwrap();
    // The team is served again: at once, or after a proper 429 whose wait is within a window.
    let small = json!({"model": DEMO, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 2, "mock": {"tokens": 2}});
    let r = chat(&s, &k.key, &small).await;
    if r.status() == 429 {
        let ra = expect_429_shape(r, "tokens").await;
        assert!(ra <= 2, "Retry-After {ra}");
        tokio::time::sleep(Duration::from_secs(ra)).await;
        let r = chat(&s, &k.key, &small).await;
        assert_eq!(r.status(), 200);
    } else {
        assert_eq!(r.status(), 200);
    }
    assert!(
        !s.logs().contains("panicked"),
        "no panic in the gateway:\n{}",
        s.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_allowed_request_reserves_at_most_the_budget_and_the_team_is_served_after_it() {
    let k = new_key();
    let s = start(&team("big", &[&k], "tokens_per_minute = 1000"), &[]);
    let big = json!({"model": DEMO, "stream": true,
                     "messages": [{"role": "user", "content": "hi"}],
                     "max_tokens": 10_000_000, "mock": {"tokens": 3, "delay_ms": 300}});
    let mut r = chat(&s, &k.key, &big).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_value(&r, "x-ratelimit-remaining-tokens"), "0");
    let reset = duration_secs(header_value(&r, "x-ratelimit-reset-tokens"));
    assert!(
        reset <= 60.0,
        "an empty budget refills within its window, not in {reset}s"
    );
    // While it runs, the budget is empty, for at most a window.
    let small = json!({"model": DEMO, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 3, "mock": {"tokens": 3}});
    let ra = expect_429_shape(chat(&s, &k.key, &small).await, "tokens").await;
    assert!(ra <= 60, "Retry-After {ra}");
    while r.chunk().await.expect("chunk").is_some() {}
    // Settled with its real (small) usage: the team is served at once, headers sane.
    let u = usage_when(&s, &k.key, "settled", |u| u["completion_tokens"] == 3).await;
    let used = u["total_tokens"].as_u64().unwrap();
    let r = chat(&s, &k.key, &small).await;
    assert_eq!(r.status(), 200, "the team is served after the big request");
    let left = count(&r, "x-ratelimit-remaining-tokens");
    assert!(
        left + used + body_estimate(&small) + 3 >= 995,
        "{left} left after {used} used"
    );
    let reset = duration_secs(header_value(&r, "x-ratelimit-reset-tokens"));
    assert!(reset < 10.0, "reset {reset}s");
}

/// A non-streaming answer without `usage`, whose content is `text`.
fn completion_without_usage(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1_700_000_000,
        "model": "up-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_without_usage_are_charged_an_estimate_from_their_text() {
    // 400 bytes of answer: about 100 tokens, in one piece or in four deltas.
    let text = "abcd".repeat(100);
    let plain = scripted::serve(vec![full_response(
        200,
        "application/json",
        "",
        &completion_without_usage(&text),
    )])
    .await;
    let mut sse = data(&up_chunk(
        0,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    for piece in text.as_bytes().chunks(100) {
        sse.push_str(&data(&up_text(std::str::from_utf8(piece).unwrap())));
    }
    sse.push_str(&data(&up_chunk(0, json!({}), Some("stop"))));
    sse.push_str("data: [DONE]\n\n");
    let streamed = scripted::serve(sse_steps([sse])).await;
    let k = new_key();
    let s = Gateway::builder()
        .config(
            // An hour's window: the budget refills too slowly to hide the charges.
            &("rate_limit_window_secs = 3600\n".to_owned()
                + &openai_provider("plain", &plain.base_url(), &["plain"])
                + &openai_provider("streamed", &streamed.base_url(), &["streamed"])
                + &team("nousage", &[&k], "tokens_per_minute = 100000")),
        )
        .demo(false)
        .start();
    let close = |got: u64, want: u64| got * 10 >= want * 9 && got * 10 <= want * 11;

    let body = json!({"model": "plain", "messages": [{"role": "user", "content": "hello there"}]});
    let r = chat(&s, &k.key, &body).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], text.as_str());
    let u = usage_when(&s, &k.key, "non-streaming", |u| u["requests"] == 1).await;
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(close(c, 100), "completion charged {c}, estimate 100: {u}");
    assert!(close(p, body_estimate(&body)), "prompt charged {p}: {u}");

    let body = json!({"model": "streamed", "stream": true,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let r = chat(&s, &k.key, &body).await;
    assert_eq!(r.status(), 200);
    let got = r.text().await.unwrap();
    assert!(got.ends_with("data: [DONE]\n\n"), "{got}");
    let u = usage_when(&s, &k.key, "streamed", |u| {
        u["completion_tokens"].as_u64() != Some(c)
    })
    .await;
    let c2 = u["completion_tokens"].as_u64().unwrap() - c;
    assert!(
        close(c2, 100),
        "streamed completion charged {c2}, estimate 100: {u}"
    );
    // The budget saw both charges.
    let r = client()
        .get(s.url("/v1/models"))
        .bearer_auth(&k.key)
        .send()
        .await
        .unwrap();
    let left = count(&r, "x-ratelimit-remaining-tokens");
    let total = u["total_tokens"].as_u64().unwrap();
    assert!(total > 200);
    assert!(
        left <= 100_000 - total + 100,
        "{left} tokens left after {total} charged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_while_the_upstream_works_is_charged_the_prompt_estimate() {
    // The upstream takes its time: the clients give up first.
    let up = scripted::serve(vec![
        Step::Sleep(Duration::from_secs(3)),
        full_response(200, "application/json", "", &completion_without_usage("hi")),
    ])
    .await;
    let k = new_key();
    let s = Gateway::builder()
        .config(
            // An hour's window: the budget refills too slowly to hide the charges.
            &("rate_limit_window_secs = 3600\n".to_owned()
                + &openai_provider("up", &up.base_url(), &["m"])
                + &team("leavers", &[&k], "tokens_per_minute = 100000")),
        )
        .demo(false)
        .env(&[("SLUICE_STREAM_GRACE_SECS", "0")])
        .start();
    let mut charged = 0;
    for stream in [false, true] {
        // About 1000 tokens of prompt.
        let body = json!({"model": "m", "stream": stream,
                          "messages": [{"role": "user", "content": "word ".repeat(800)}]});
        let est = body_estimate(&body);
        assert!(est >= 1000);
        let before = up.requests().len();
        let gave_up = client()
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&k.key)
            .json(&body)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        assert!(gave_up.is_err(), "the upstream has not answered yet");
        assert_eq!(up.requests().len(), before + 1, "the request went upstream");
        let u = usage_when(&s, &k.key, "charged on leaving", |u| {
            u["prompt_tokens"].as_u64().unwrap() > charged
        })
        .await;
        let p = u["prompt_tokens"].as_u64().unwrap() - charged;
        assert!(
            p >= est,
            "stream={stream}: charged {p} < prompt estimate {est}: {u}"
        );
        charged += p;
        assert_eq!(u["completion_tokens"], 0, "{u}");
    }
    let r = client()
        .get(s.url("/v1/models"))
        .bearer_auth(&k.key)
        .send()
        .await
        .unwrap();
    let left = count(&r, "x-ratelimit-remaining-tokens");
    // (The budget refills 28 tokens a second meanwhile.)
    assert!(
        left <= 100_000 - charged + 100,
        "the budget was charged too: {left} left after {charged}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_estimate_covers_tools_and_every_other_field() {
    let k = new_key();
    let s = start(&team("tools", &[&k], "tokens_per_minute = 150000"), &[]);
    // 100 tools with 4000-byte descriptions: about 400 KB, 100 000 tokens.
    let tools: Vec<Value> = (0..100)
        .map(|i| {
            json!({"type": "function", "function": {
                "name": format!("tool_{i}"),
                "description": "d".repeat(4000),
                "parameters": {"type": "object", "properties": {}},
            }})
        })
        .collect();
    let body = |stream: bool| {
        json!({"model": DEMO, "stream": stream, "max_tokens": 10,
               "messages": [{"role": "user", "content": "hi"}],
               "tools": tools, "mock": {"tokens": 5, "delay_ms": 200}})
    };
    let est = body_estimate(&body(true)) + 10;
    assert!(est > 100_000);
    let mut first = chat(&s, &k.key, &body(true)).await;
    assert_eq!(first.status(), 200);
    let left = count(&first, "x-ratelimit-remaining-tokens");
    assert!(
        left <= 150_000 - 100_000,
        "the tools are reserved: {left} left of 150000"
    );
    // While it runs, a second such request does not fit.
    let ra = expect_429_shape(chat(&s, &k.key, &body(false)).await, "tokens").await;
    assert!((1..=60).contains(&ra), "Retry-After {ra}");
    while first.chunk().await.expect("chunk").is_some() {}
}
