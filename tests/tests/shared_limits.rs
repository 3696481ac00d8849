//! Team limits shared through Redis by two `sluice` processes (`SLUICE_REDIS_URL`): the request
//! and token limits count across both, a concurrency slot held on one refuses the other, a
//! SIGKILL'd holder's slot comes free within the lease, and Redis stopped and restarted under
//! traffic: `fail_open` serves on per-instance limits, `fail_closed` answers 503 with
//! `Retry-After`, and both go back to shared counting without a restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::redis::RedisServer;
use sluice_tests::teams::{chat_as as chat, new_key, team};
use sluice_tests::Gateway;
use sluice_tests::Sluice;

const DEMO: &str = "sluice-demo";

/// A `sluice` sharing `redis`, with `toml` as its config and `env` added (the demo at full
/// speed unless `env` says otherwise).
fn start(redis: &RedisServer, toml: &str, env: &[(&str, &str)]) -> Sluice {
    let url = redis.url();
    let mut all: Vec<(&str, &str)> = vec![
        ("SLUICE_REDIS_URL", &url),
        ("SLUICE_REDIS_TIMEOUT_MS", "300"),
    ];
    for (k, v) in env {
        all.retain(|(a, _)| a != k);
        all.push((k, v));
    }
    if !all.iter().any(|(k, _)| *k == "SLUICE_DEMO_TOKENS_PER_SEC") {
        all.push(("SLUICE_DEMO_TOKENS_PER_SEC", "0"));
    }
    Gateway::builder().config(toml).env(&all).start()
}

fn body(stream: bool, max_tokens: u64) -> Value {
    json!({
        "model": DEMO,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "max_tokens": max_tokens,
    })
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The refusal's `error.type` (the limit) and `Retry-After`.
async fn refusal(r: reqwest::Response) -> (u16, String, String, Option<String>) {
    let status = r.status().as_u16();
    let retry = header(&r, "retry-after");
    let v: Value = r.json().await.expect("error body");
    (
        status,
        v["error"]["type"].as_str().unwrap_or_default().to_owned(),
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        retry,
    )
}

#[tokio::test]
async fn requests_are_counted_across_instances() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let k = new_key();
    let toml = team(
        "shared",
        &[&k],
        "requests_per_minute = 10\nrequest_burst = 10",
    );
    let (a, b) = (start(&redis, &toml, &[]), start(&redis, &toml, &[]));
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = chat(s, &k, &body(false, 3)).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests").as_deref(),
            Some((9 - i).to_string().as_str())
        );
    }
    for s in [&a, &b] {
        let (status, kind, _, retry) = refusal(chat(s, &k, &body(false, 3)).await).await;
        assert_eq!((status, kind.as_str()), (429, "requests"));
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=6).contains(&retry), "{retry}");
    }
}

#[tokio::test]
async fn the_token_budget_is_shared() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let k = new_key();
    let toml = team("tok", &[&k], "tokens_per_minute = 1000");
    // A streams slowly: its reservation stays out while B asks.
    let a = start(&redis, &toml, &[("SLUICE_DEMO_TOKENS_PER_SEC", "2")]);
    let b = start(&redis, &toml, &[]);
    let held = chat(&a, &k, &body(true, 600)).await;
    assert_eq!(held.status(), 200);
    let left: u64 = header(&held, "x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!((370..=400).contains(&left), "{left}");
    let (status, kind, _, retry) = refusal(chat(&b, &k, &body(false, 600)).await).await;
    assert_eq!((status, kind.as_str()), (429, "tokens"));
    assert!(retry.is_some());
    let r = chat(&b, &k, &body(false, 300)).await;
    assert_eq!(r.status(), 200);
    let after: u64 = header(&r, "x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(after < left - 300 + 10, "{after} after {left}");
    drop(held);
}

#[tokio::test]
async fn a_slot_is_shared_and_a_killed_holders_slot_comes_free_within_the_lease() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let k = new_key();
    let toml = team("conc", &[&k], "max_concurrent_streams = 1");
    let env = [("SLUICE_CONCURRENCY_LEASE_SECS", "3")];
    let a = start(
        &redis,
        &toml,
        &[env[0], ("SLUICE_DEMO_TOKENS_PER_SEC", "2")],
    );
    let b = start(&redis, &toml, &env);
    let held = chat(&a, &k, &body(true, 1000)).await;
    assert_eq!(held.status(), 200);
    // Held past a lease: A renews it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, kind, _, retry) = refusal(chat(&b, &k, &body(false, 3)).await).await;
    assert_eq!(
        (status, kind.as_str(), retry.as_deref()),
        (429, "concurrency", Some("1"))
    );
    a.kill();
    let killed = Instant::now();
    loop {
        let r = chat(&b, &k, &body(false, 3)).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            killed.elapsed() < Duration::from_millis(3800),
            "the dead instance's slot was not freed within the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
}

#[tokio::test]
async fn redis_down_fail_open_serves_fail_closed_refuses_and_both_recover() {
    let Some(mut redis) = RedisServer::start_or_skip() else {
        return;
    };
    let k = new_key();
    let toml = team(
        "outage",
        &[&k],
        "requests_per_minute = 1000\nrequest_burst = 1000",
    );
    let open = start(&redis, &toml, &[("SLUICE_REDIS_ON_FAILURE", "fail_open")]);
    let closed = start(&redis, &toml, &[("SLUICE_REDIS_ON_FAILURE", "fail_closed")]);
    assert_eq!(chat(&open, &k, &body(false, 3)).await.status(), 200);
    assert_eq!(chat(&closed, &k, &body(false, 3)).await.status(), 200);
    redis.stop();
    for _ in 0..3 {
        let start = Instant::now();
        let r = chat(&open, &k, &body(false, 3)).await;
        assert_eq!(r.status(), 200, "fail_open serves on its own limits");
        assert!(start.elapsed() < Duration::from_secs(3));
        let (status, kind, code, retry) = refusal(chat(&closed, &k, &body(false, 3)).await).await;
        assert_eq!(
            (status, kind.as_str(), code.as_str(), retry.as_deref()),
            (503, "server_error", "shared_state_unavailable", Some("1"))
        );
    }
    redis.restart();
    // Both recover by themselves; Redis came back empty, so the shared count starts again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let remaining = |r: &reqwest::Response| -> u64 {
        header(r, "x-ratelimit-remaining-requests")
            .unwrap()
            .parse()
            .unwrap()
    };
    loop {
        let r = chat(&closed, &k, &body(false, 3)).await;
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "fail_closed did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // fail_open's next calls go to Redis again: one from each instance counts in one limiter.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let x = remaining(&chat(&open, &k, &body(false, 3)).await);
        let y = remaining(&chat(&closed, &k, &body(false, 3)).await);
        if y + 1 == x && x > 990 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shared counting did not resume: {x} then {y}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
