//! Teams for the tests: a fresh API key with its SHA-256 ([`Key`], [`new_key`]), the
//! `[[teams]]` TOML entry that admits it ([`team`]), a gateway serving the demo model to teams
//! ([`start`]), and the requests and checks the team tests share ([`chat`], [`usage`],
//! [`expect_429`], ...).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// An API key and the SHA-256 hex of it that a team's config holds.
#[derive(Debug, Clone)]
pub struct Key {
    pub key: String,
    pub hash: String,
}

/// A new random key, as `sluice gen-key` makes one.
pub fn new_key() -> Key {
    let (key, hash) = sluice_gateway::keys::generate();
    Key { key, hash }
}

/// One `[[teams]]` entry admitting `keys`; `extra` holds more `key = value` lines.
pub fn team(name: &str, keys: &[&Key], extra: &str) -> String {
    let hashes: Vec<String> = keys.iter().map(|k| format!("{:?}", k.hash)).collect();
    format!(
        "[[teams]]\nname = {name:?}\napi_keys_sha256 = [{}]\n{extra}\n\n",
        hashes.join(", ")
    )
}

/// `POST /v1/chat/completions` to `sluice` with `key` (30 s deadline).
pub async fn chat_as(
    sluice: &crate::Sluice,
    key: &Key,
    body: &serde_json::Value,
) -> reqwest::Response {
    crate::e2e::client_with_timeout(std::time::Duration::from_secs(30))
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(&key.key)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// The demo model's name.
pub const DEMO: &str = "sluice-demo";

/// Starts a gateway with `toml` as its config file and the demo model on, at full speed unless
/// `env` sets `SLUICE_DEMO_TOKENS_PER_SEC`.
pub fn start(toml: &str, env: &[(&str, &str)]) -> crate::Sluice {
    demo_gateway(toml, env).start()
}

/// [`start`]'s builder, for a test that adds to it (the binary, say).
pub fn demo_gateway(toml: &str, env: &[(&str, &str)]) -> crate::Builder {
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "SLUICE_DEMO_TOKENS_PER_SEC") {
        env.push(("SLUICE_DEMO_TOKENS_PER_SEC", "0"));
    }
    crate::Gateway::builder().config(toml).env(env)
}

/// Every team request is short: one that takes a minute has hung.
pub fn client() -> reqwest::Client {
    crate::e2e::client_with_timeout(std::time::Duration::from_secs(60))
}

/// A chat request for the demo model (3 tokens at most); `extra` fields are merged in.
pub fn chat_body(stream: bool, extra: Value) -> Value {
    let mut body = json!({
        "model": DEMO,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "max_tokens": 3,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// POSTs `body` to `path` with `key`.
pub async fn post(s: &crate::Sluice, key: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(s.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("a response (not a dropped connection)")
}

/// `POST /v1/chat/completions` with `key`.
pub async fn chat(s: &crate::Sluice, key: &str, body: &Value) -> reqwest::Response {
    post(s, key, "/v1/chat/completions", body).await
}

/// GETs `path` with `key`, expecting 200 and JSON.
pub async fn get_json(s: &crate::Sluice, key: &str, path: &str) -> Value {
    let r = client()
        .get(s.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.expect("json")
}

/// The team's `GET /v1/usage`.
pub async fn usage(s: &crate::Sluice, key: &str) -> Value {
    get_json(s, key, "/v1/usage").await
}

/// Waits (10 s at most) until the team's usage satisfies `f` (settlement happens just after a
/// response ends).
pub async fn usage_when(
    s: &crate::Sluice,
    key: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let u = usage(s, key).await;
        if f(&u) {
            return u;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: usage stayed {u}; logs:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response header, if present and ASCII.
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A response header that must be there.
pub fn header_value<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    header(r, name).unwrap_or_else(|| panic!("no {name} in {:?}", r.headers()))
}

/// Asserts the six `x-ratelimit-*` headers, counts and Go-style durations; returns them.
pub fn rate_headers(h: &reqwest::header::HeaderMap, what: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for kind in ["requests", "tokens"] {
        for part in ["limit", "remaining", "reset"] {
            let name = format!("x-ratelimit-{part}-{kind}");
            let v = h
                .get(&name)
                .unwrap_or_else(|| panic!("{what}: no {name} in {h:?}"))
                .to_str()
                .expect("ascii")
                .to_owned();
            if part == "reset" {
                assert!(
                    v.ends_with('s') && v.chars().all(|c| c.is_ascii_digit() || "hms.".contains(c)),
                    "{what}: {name} = {v} is not a duration like 1s or 6m0s"
                );
            } else {
                assert!(
                    v.parse::<u64>().is_ok(),
                    "{what}: {name} = {v} is not a count"
                );
            }
            out.insert(name, v);
        }
    }
    out
}

/// The `Retry-After` of a refusal: whole seconds, at least 1.
pub fn retry_after(r: &reqwest::Response) -> u64 {
    let v = header(r, "retry-after").expect("Retry-After on a 429");
    let n: u64 = v.parse().expect("Retry-After in whole seconds");
    assert!(n >= 1, "Retry-After {n} < 1");
    n
}

/// Asserts a 429 of `kind` in OpenAI's error shape; returns its Retry-After.
pub async fn expect_429_shape(r: reqwest::Response, kind: &str) -> u64 {
    assert_eq!(r.status(), 429);
    let ra = retry_after(&r);
    let body: Value = r.json().await.expect("json error");
    let err = crate::e2e::assert_error_shape(&body);
    assert_eq!(err["type"], kind, "{body}");
    assert_eq!(err["code"], "rate_limit_exceeded", "{body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    ra
}

/// [`expect_429_shape`], and the six `x-ratelimit-*` headers ([`rate_headers`]), returned.
pub async fn expect_429(r: reqwest::Response, kind: &str) -> (u64, HashMap<String, String>) {
    let headers = rate_headers(r.headers(), "429");
    (expect_429_shape(r, kind).await, headers)
}

/// Waits (10 s at most) until the team has `n` open streams.
pub async fn wait_open_streams(s: &crate::Sluice, key: &str, n: u64, why: &str) {
    let settled = crate::wait::wait_for(Duration::from_secs(10), || async move {
        (usage(s, key).await["open_streams"] == n).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{why}: open_streams stayed {} (want {n}); logs:\n{}",
        usage(s, key).await["open_streams"],
        s.logs()
    );
}
