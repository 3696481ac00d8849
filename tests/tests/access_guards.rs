//! Who may reach the gateway, against a gateway: a web page of another origin gets 403
//! (CORS is off unless configured), a foreign `Host` in loopback open mode gets 421 (DNS
//! rebinding), a stream can only be cancelled by the team that started it, `/metrics` with teams
//! is for loopback or a metrics key, and stream IDs never appear whole in the log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, chat, client, data, openai_provider, up_role, up_text, wait_until,
};
use sluice_tests::scripted::{chunk, serve, sse_head, Step};
use sluice_tests::teams::{new_key, team, Key};
use sluice_tests::Gateway;
use sluice_tests::Sluice;

const DEMO: &str = "sluice-demo";

fn open(env: &[(&str, &str)]) -> Sluice {
    let mut env = env.to_vec();
    env.push(("SLUICE_DEMO_TOKENS_PER_SEC", "0"));
    Gateway::builder().env(&env).start()
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("json error body");
    assert_error_shape(&body)["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_gets_no_cors() {
    let s = open(&[]);
    let body = chat(DEMO, false, json!({}));
    // A "simple" cross-site POST: text/plain, so a browser sends it without a preflight.
    let resp = client()
        .post(s.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(error_code(resp).await, "origin_not_allowed");

    // Its preflight too, and reading a stream from that page.
    let resp = client()
        .request(reqwest::Method::OPTIONS, s.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = client()
        .get(s.url("/v1/models"))
        .header("origin", "null")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // curl (no Origin) and the gateway's own page (its own origin) are served.
    let resp = client()
        .post(s.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let own = format!("http://{}", s.addr);
    let resp = client()
        .post(s.url("/v1/chat/completions"))
        .header("origin", &own)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "same origin needs no CORS"
    );
    let page = client()
        .get(s.url("/"))
        .header("origin", &own)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn configured_origins_get_cors_and_others_do_not() {
    let s = open(&[(
        "SLUICE_CORS_ORIGINS",
        "https://app.example, http://localhost:5173",
    )]);
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, s.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let resp = preflight("https://app.example").await.expect("preflight");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let resp = preflight("https://evil.example").await.expect("preflight");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = client()
        .post(s.url("/v1/chat/completions"))
        .header("origin", "http://localhost:5173")
        .json(&chat(DEMO, true, json!({})))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-sluice-stream-id"), "{exposed}");
    assert!(resp.text().await.expect("body").contains("data: [DONE]"));
}

async fn get_with_host(s: &Sluice, path: &str, host: &str) -> reqwest::Response {
    client()
        .get(s.url(path))
        .header("host", host)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn loopback_open_mode_answers_only_loopback_host_names() {
    let s = open(&[]);
    let port = s.addr.port();
    // DNS rebinding: a page's own name resolving to 127.0.0.1.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        format!("localhost.evil.example:{port}"),
    ] {
        let resp = get_with_host(&s, "/v1/models", &host).await;
        assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert_eq!(error_code(resp).await, "host_not_allowed");
        assert_eq!(
            get_with_host(&s, "/", &host).await.status(),
            StatusCode::MISDIRECTED_REQUEST
        );
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("app.localhost:{port}"),
    ] {
        assert_eq!(
            get_with_host(&s, "/v1/models", &host).await.status(),
            StatusCode::OK,
            "{host}"
        );
    }

    let s = open(&[("SLUICE_ALLOWED_HOSTS", "chat.example.com")]);
    assert_eq!(
        get_with_host(&s, "/healthz", "chat.example.com")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get_with_host(&s, "/healthz", "evil.example").await.status(),
        StatusCode::MISDIRECTED_REQUEST
    );
}

/// `extra` top-level lines, then the teams `alpha` (key `a`) and `beta` (key `b`).
fn teams_config(a: &Key, b: &Key, extra: &str) -> String {
    format!("{extra}\n") + &team("alpha", &[a], "") + &team("beta", &[b], "")
}

#[tokio::test]
async fn only_the_team_that_started_a_stream_may_cancel_it() {
    let (a, b) = (new_key(), new_key());
    let s = Gateway::builder()
        .config(&teams_config(&a, &b, ""))
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "20")])
        .start();
    let started: Value = client()
        .post(s.url("/v1/streams"))
        .bearer_auth(&a.key)
        .json(&chat(DEMO, true, json!({"max_tokens": 200})))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let id = started["id"].as_str().expect("id").to_owned();
    let delete = |key: &str| {
        client()
            .delete(s.url(&format!("/v1/streams/{id}")))
            .bearer_auth(key)
            .send()
    };
    let resp = delete(&b.key).await.expect("delete");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "not_found");
    // Still running: its own team cancels it.
    let resp = delete(&a.key).await.expect("delete");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["cancelled"], true, "{body}");
    let events = client()
        .get(s.url(&format!("/v1/streams/{id}/events")))
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("text");
    assert!(
        events.contains("\"finish_reason\":\"cancelled\""),
        "{events}"
    );
}

#[tokio::test]
async fn metrics_with_teams_are_for_loopback_or_a_metrics_key() {
    let (a, b, m) = (new_key(), new_key(), new_key());
    let s = Gateway::builder()
        .config(&teams_config(
            &a,
            &b,
            &format!("metrics_api_keys_sha256 = [{:?}]", m.hash),
        ))
        .start();
    let get = |fwd: bool, key: Option<&str>| {
        let mut r = client().get(s.url("/metrics"));
        if fwd {
            r = r.header("x-forwarded-for", "203.0.113.7");
        }
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let direct = get(false, None).await.expect("metrics");
    assert_eq!(direct.status(), StatusCode::OK);
    assert!(direct.text().await.expect("text").contains("alpha"));
    // Through a proxy on the same machine: not local any more.
    let proxied = get(true, None).await.expect("metrics");
    assert_eq!(proxied.status(), StatusCode::FORBIDDEN);
    let text = proxied.text().await.expect("text");
    assert!(!text.contains("alpha"), "{text}");
    assert_eq!(
        get(true, Some(&a.key)).await.expect("m").status(),
        StatusCode::FORBIDDEN,
        "a team key is not a metrics key"
    );
    let keyed = get(true, Some(&m.key)).await.expect("metrics");
    assert_eq!(keyed.status(), StatusCode::OK);
    assert!(!s.logs().contains(&m.key));
}

/// Behind a local reverse proxy that adds no forwarding headers (nginx's default `proxy_pass`)
/// every client looks like loopback: `metrics_require_key = true` asks every client for a key.
#[tokio::test]
async fn metrics_require_key_asks_loopback_clients_for_the_key_too() {
    let (a, b, m) = (new_key(), new_key(), new_key());
    let extra = format!(
        "metrics_require_key = true\nmetrics_api_keys_sha256 = [{:?}]",
        m.hash
    );
    let s = Gateway::builder()
        .config(&teams_config(&a, &b, &extra))
        .start();
    let get = |key: Option<&str>| {
        let mut r = client().get(s.url("/metrics"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let direct = get(None).await.expect("metrics");
    assert_eq!(direct.status(), StatusCode::UNAUTHORIZED);
    let body: Value = direct.json().await.expect("json error");
    assert_error_shape(&body);
    assert!(!body.to_string().contains("alpha"), "{body}");
    assert_eq!(
        get(Some(&a.key)).await.expect("m").status(),
        StatusCode::UNAUTHORIZED,
        "a team key is not a metrics key"
    );
    let keyed = get(Some(&m.key)).await.expect("metrics");
    assert_eq!(keyed.status(), StatusCode::OK);
    assert!(keyed.text().await.expect("text").contains("alpha"));
    // In open mode too: "every client".
    let open = Gateway::builder().config(&extra).start();
    let resp = client().get(open.url("/metrics")).send().await.expect("m");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client()
        .get(open.url("/metrics"))
        .bearer_auth(&m.key)
        .send()
        .await
        .expect("m");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!s.logs().contains(&m.key) && !open.logs().contains(&m.key));
}

#[tokio::test]
async fn stream_ids_never_appear_whole_in_the_log() {
    // An upstream that breaks mid-answer: the gateway logs a warning about that stream.
    let role = data(&up_role());
    let up = serve(vec![
        sse_head(),
        chunk(role.as_bytes()),
        chunk(data(&up_text("Hel")).as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ])
    .await;
    let s = Gateway::builder()
        .config(&openai_provider("up", &up.base_url(), &["gpt-x"]))
        .start();
    let resp = client()
        .post(s.url("/v1/chat/completions"))
        .json(&chat("gpt-x", true, json!({})))
        .send()
        .await
        .expect("request");
    let id = resp.headers()["x-sluice-stream-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = resp.text().await.expect("body");
    assert!(body.contains("upstream_truncated"), "{body}");
    assert!(
        wait_until(Duration::from_secs(5), || s
            .logs()
            .contains("upstream stream failed"))
        .await,
        "{}",
        s.logs()
    );
    let logs = s.logs();
    assert!(
        logs.contains(&id[..6]),
        "the log names the stream by a prefix"
    );
    assert!(
        !logs.contains(&id),
        "the whole stream ID is in the log: {logs}"
    );
}
