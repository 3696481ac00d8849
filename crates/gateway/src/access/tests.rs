//! The unit tests of `Access`: keys, model permissions, each limit and its headers, what an
//! admission charges, reloads.

use super::*;
use axum::http::HeaderValue;

fn team(name: &str, key_hash: &str) -> TeamConfig {
    TeamConfig {
        name: name.into(),
        api_keys_sha256: vec![key_hash.into()],
        requests_per_minute: None,
        request_burst: None,
        tokens_per_minute: None,
        max_concurrent_streams: None,
        default_max_tokens: None,
        models: vec!["*".into()],
        on_disconnect: None,
        grace_secs: None,
    }
}

fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    h
}

fn req(body: &str) -> ChatRequest {
    ChatRequest::parse(body.as_bytes()).unwrap()
}

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#;

fn kind(e: &GatewayError) -> (&'static str, u64) {
    match e {
        GatewayError::RateLimited {
            kind,
            retry_after_secs,
            ..
        } => (kind, *retry_after_secs),
        other => panic!("not a 429: {other:?}"),
    }
}

#[tokio::test]
async fn retry_after_rounds_up_to_at_least_one() {
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
}

#[tokio::test]
async fn a_stream_takes_more_a_chunk_at_a_time_until_the_budget_is_empty() {
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    // 1600 a minute: chunks of 100.
    t.tokens_per_minute = Some(1600);
    let a = Access::new(vec![t], Duration::from_secs(60));
    let c = a.authenticate(&bearer(&k)).unwrap();
    let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
    let reserved = adm.tokens_taken().unwrap();
    assert_eq!(reserved, adm.prompt_estimate() + 10);
    // 5 past the reservation: the overrun and a chunk more.
    let taken = adm.take_more(reserved + 5).await.unwrap();
    assert_eq!(taken, reserved + 5 + 100);
    // Far past it: granted as much as is left, and that does not cover the overrun.
    assert_eq!(adm.take_more(taken + 5000).await, None);
    assert_eq!(adm.tokens_taken(), Some(1600));
    // The budget is empty: the next request is refused until it refills.
    let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
    assert_eq!(kind(&e).0, "tokens");
    // Settling what was generated: a debt of what went past the budget.
    adm.settle(0, 1600 + 50);
    // Open mode and teams without a token limit never take more.
    assert_eq!(Admission::default().tokens_taken(), None);
}

#[tokio::test]
async fn open_mode_lets_everyone_in() {
    let a = Access::default();
    assert!(a.open_mode());
    let c = a.authenticate(&HeaderMap::new()).unwrap();
    assert!(c.team.is_none());
    let adm = a.admit(&c, &req(CHAT)).await.unwrap();
    assert!(adm.headers.is_empty());
    assert!(a.headers(&c).await.is_empty());
    assert!(a.usage(&c).await.is_none());
}

#[tokio::test]
async fn keys_identify_teams() {
    let (k1, h1) = crate::keys::generate();
    let (k2, h2) = crate::keys::generate();
    let a = Access::new(
        vec![team("a", &h1), team("b", &h2)],
        Duration::from_secs(60),
    );
    assert_eq!(a.authenticate(&bearer(&k1)).unwrap().team_name(), Some("a"));
    assert_eq!(a.authenticate(&bearer(&k2)).unwrap().team_name(), Some("b"));
    for h in [HeaderMap::new(), bearer("sk-wrong"), bearer(&h1)] {
        let e = a.authenticate(&h).unwrap_err();
        assert!(matches!(e, GatewayError::Unauthorized(_)));
        assert!(!e.to_string().contains(&k1));
    }
}

#[tokio::test]
async fn models_are_checked() {
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    t.models = vec!["sluice-*".into()];
    let a = Access::new(vec![t], Duration::from_secs(60));
    let c = a.authenticate(&bearer(&k)).unwrap();
    assert!(a.may_use(&c, "sluice-demo"));
    assert!(!a.may_use(&c, "gpt-4o"));
    let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
    assert!(matches!(e, GatewayError::Forbidden(_)));
}

#[tokio::test]
async fn slots_come_back_on_drop_and_refusals_cost_nothing() {
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    t.max_concurrent_streams = Some(2);
    t.tokens_per_minute = Some(1000);
    let a = Access::new(vec![t], Duration::from_secs(60));
    let c = a.authenticate(&bearer(&k)).unwrap();
    let one = a.admit(&c, &req(CHAT)).await.unwrap();
    let two = a.admit(&c, &req(CHAT)).await.unwrap();
    let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
    assert_eq!(kind(&e), ("concurrency", 1));
    // The refused request reserved nothing: 2 x (prompt estimate + 10) are out.
    let est = estimate::prompt_tokens(&req(CHAT)) + 10;
    assert!(remaining_tokens(&a, &c).await <= 1000 - 2 * est);
    one.settle(5, 3);
    drop(two); // not settled: refunded
    assert!(remaining_tokens(&a, &c).await >= 1000 - 8 - 1);
    let u = a.usage(&c).await.unwrap();
    assert_eq!(u["requests"], 2);
    assert_eq!(u["prompt_tokens"], 5);
    assert_eq!(u["completion_tokens"], 3);
    assert_eq!(u["rejected"]["concurrency"], 1);
    assert_eq!(u["open_streams"], 0);
    let _again = a.admit(&c, &req(CHAT)).await.unwrap();
    assert_eq!(a.usage(&c).await.unwrap()["open_streams"], 1);
}

#[tokio::test]
async fn token_budget_refuses_with_the_wait() {
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    // 600 tokens per 6 s: 100 a second.
    t.tokens_per_minute = Some(600);
    let a = Access::new(vec![t], Duration::from_secs(6));
    let c = a.authenticate(&bearer(&k)).unwrap();
    // Prompt estimate: 59 bytes of body -> 15; with max_tokens 485: 500.
    let big = req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":485}"#);
    assert_eq!(estimate::prompt_tokens(&big), 15);
    let adm = a.admit(&c, &big).await.unwrap();
    assert_eq!(adm.headers["x-ratelimit-limit-tokens"], "600");
    assert_eq!(adm.headers["x-ratelimit-remaining-tokens"], "100");
    assert_eq!(adm.headers["x-ratelimit-reset-tokens"], "5s");
    adm.settle(8, 192); // 200 used, 300 back: 400 left
    let e = a.admit(&c, &big).await.unwrap_err();
    assert_eq!(kind(&e), ("tokens", 1));
    let cut = a
        .admit(
            &c,
            &req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":285}"#),
        )
        .await;
    let cut = cut.unwrap();
    cut.settle_estimated(2); // prompt estimate 15 + 2 estimated
    let u = a.usage(&c).await.unwrap();
    assert_eq!(u["prompt_tokens"], 23);
    assert_eq!(u["completion_tokens"], 194);
    assert_eq!(u["rejected"]["tokens"], 1);
}

async fn remaining_tokens(a: &Access, c: &Caller) -> u64 {
    a.headers(c).await["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn what_an_admission_charges_on_each_way_it_ends() {
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    t.tokens_per_minute = Some(100_000);
    let a = Access::new(vec![t], Duration::from_secs(60));
    let c = a.authenticate(&bearer(&k)).unwrap();
    let p = estimate::prompt_tokens(&req(CHAT));
    async fn charged_to(a: &Access, c: &Caller) -> (u64, u64) {
        let u = a.usage(c).await.unwrap();
        (
            u["prompt_tokens"].as_u64().unwrap(),
            u["completion_tokens"].as_u64().unwrap(),
        )
    }
    // Dropped before it went upstream: nothing.
    drop(a.admit(&c, &req(CHAT)).await.unwrap());
    assert_eq!(charged_to(&a, &c).await, (0, 0));
    assert_eq!(remaining_tokens(&a, &c).await, 100_000);
    // Refused by the upstream: nothing.
    let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
    adm.sent_upstream();
    adm.refund();
    assert_eq!(charged_to(&a, &c).await, (0, 0));
    assert_eq!(remaining_tokens(&a, &c).await, 100_000);
    // The client left while the upstream worked: the prompt estimate.
    let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
    adm.sent_upstream();
    drop(adm);
    assert_eq!(charged_to(&a, &c).await, (p, 0));
    assert!((100_000 - p..=100_000 - p + 1).contains(&remaining_tokens(&a, &c).await));
    // No usage from the upstream: the prompt estimate and the completion's.
    let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
    adm.sent_upstream();
    adm.settle_estimated(40);
    assert_eq!(charged_to(&a, &c).await, (2 * p, 40));
    assert!(remaining_tokens(&a, &c).await <= 100_000 - 2 * p - 40 + 1);
}

#[tokio::test]
async fn caps_apply_to_every_caller_before_any_limit() {
    let huge =
        req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":18446744073709551615}"#);
    let open = Access::default();
    let e = open.admit(&Caller::default(), &huge).await.unwrap_err();
    assert!(matches!(e, GatewayError::BadRequest { param: Some(ref p), .. } if p == "max_tokens"));
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    t.tokens_per_minute = Some(30);
    let a = Access::new(vec![t], Duration::from_secs(60));
    let c = a.authenticate(&bearer(&k)).unwrap();
    assert!(matches!(
        a.admit(&c, &huge).await.unwrap_err(),
        GatewayError::BadRequest { .. }
    ));
    assert_eq!(a.usage(&c).await.unwrap()["requests"], 0);
    assert_eq!(remaining_tokens(&a, &c).await, 30);
    // The biggest allowed request takes the whole budget, for one window at most.
    let big = req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":16777216,"n":128}"#);
    let adm = a.admit(&c, &big).await.unwrap();
    assert_eq!(adm.headers["x-ratelimit-remaining-tokens"], "0");
    assert_eq!(adm.headers["x-ratelimit-reset-tokens"], "1m0s");
    let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
    assert!(kind(&e).1 <= 60);
    drop(adm);
    assert_eq!(remaining_tokens(&a, &c).await, 30);
}

#[tokio::test]
async fn request_limit_and_headers() {
    let (k, h) = crate::keys::generate();
    let mut t = team("a", &h);
    t.requests_per_minute = Some(60);
    t.request_burst = Some(3);
    let a = Access::new(vec![t], Duration::from_secs(60));
    let c = a.authenticate(&bearer(&k)).unwrap();
    let h0 = a.headers(&c).await;
    assert_eq!(h0["x-ratelimit-limit-requests"], "60");
    assert_eq!(h0["x-ratelimit-remaining-requests"], "3");
    assert_eq!(h0["x-ratelimit-reset-requests"], "0s");
    assert_eq!(h0["x-ratelimit-limit-tokens"], "4294967295");
    for left in ["2", "1", "0"] {
        let adm = a.admit(&c, &req(CHAT)).await.unwrap();
        assert_eq!(adm.headers["x-ratelimit-remaining-requests"], left);
    }
    let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
    assert_eq!(kind(&e), ("requests", 1));
    let mut out = HeaderMap::new();
    out.insert(
        "x-ratelimit-limit-requests",
        HeaderValue::from_static("keep"),
    );
    a.fill_headers(&c, &mut out).await;
    assert_eq!(out.len(), 6);
    assert_eq!(out["x-ratelimit-limit-requests"], "keep");
    assert_eq!(out["x-ratelimit-remaining-requests"], "0");
    assert_eq!(a.usage(&c).await.unwrap()["rejected"]["requests"], 1);
}

#[tokio::test]
async fn reload_keeps_unchanged_limiters_and_counters() {
    let (ka, ha) = crate::keys::generate();
    let (kb, hb) = crate::keys::generate();
    let (kc, hc) = crate::keys::generate();
    let limited = |name: &str, h: &str| {
        let mut t = team(name, h);
        t.requests_per_minute = Some(60);
        t.request_burst = Some(1);
        t
    };
    let w = Duration::from_secs(60);
    let a = Access::new(vec![limited("a", &ha), limited("b", &hb)], w);
    let ca = a.authenticate(&bearer(&ka)).unwrap();
    let cb = a.authenticate(&bearer(&kb)).unwrap();
    drop(a.admit(&ca, &req(CHAT)).await.unwrap());
    drop(a.admit(&cb, &req(CHAT)).await.unwrap());
    assert!(a.admit(&ca, &req(CHAT)).await.is_err());
    assert!(a.admit(&cb, &req(CHAT)).await.is_err());
    // b gets a bigger burst and a new key; a is unchanged; c is new.
    let mut b2 = limited("b", &hb);
    b2.request_burst = Some(5);
    b2.api_keys_sha256.push(hc.clone());
    let summary = a.reload(vec![limited("a", &ha), b2], w).expect("reload");
    assert!(summary.contains("changed [b]"), "{summary}");
    assert!(
        a.admit(&ca, &req(CHAT)).await.is_err(),
        "a's limiter was reset"
    );
    // The caller authenticated before the reload is admitted under b's new limits.
    assert!(a.admit(&cb, &req(CHAT)).await.is_ok());
    assert_eq!(a.authenticate(&bearer(&kc)).unwrap().team_name(), Some("b"));
    assert_eq!(a.usage(&ca).await.unwrap()["requests"], 1);
    assert_eq!(a.usage(&ca).await.unwrap()["rejected"]["requests"], 2);
    // To open mode: refused. A bad table: refused.
    assert!(a.reload(vec![], w).is_err());
    assert!(a.reload(vec![team("x", "nothex")], w).is_err());
    assert_eq!(a.authenticate(&bearer(&ka)).unwrap().team_name(), Some("a"));
    // Removing a team locks its callers out.
    a.reload(vec![limited("b", &hb)], w).unwrap();
    assert!(a.authenticate(&bearer(&ka)).is_err());
    assert!(matches!(
        a.admit(&ca, &req(CHAT)).await.unwrap_err(),
        GatewayError::Unauthorized(_)
    ));
    let mut registry = prometheus_client::registry::Registry::default();
    a.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("sluice_team_requests_total{team=\"a\"} 1"));
}
