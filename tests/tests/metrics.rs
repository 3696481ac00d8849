//! `GET /metrics` as a Grafana user reads it: exact counters after a known workload, histograms
//! that count every stream, labels that name routes, models and teams but never a stream ID.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::e2e::{chat, client, data, openai_provider, up_chunk, up_text};
use sluice_tests::scripted::{chunk, serve, sse_head, Step};
use sluice_tests::teams::{new_key, team};
use sluice_tests::Gateway;
use sluice_tests::{histogram_count, metric_with, Sluice};

const DEMO: &str = "sluice-demo";
const LIMIT: Duration = Duration::from_secs(20);

/// Scrapes until `done` holds for the text (a stream's end is counted by its pump just after
/// its last byte went out), then returns that scrape.
async fn scrape_until(s: &Sluice, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = s.metrics().await;
        if done(&text) {
            return text;
        }
        assert!(start.elapsed() < LIMIT, "{what}, in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(s: &Sluice, key: Option<&str>, path: &str, body: &Value) -> reqwest::Response {
    let mut r = client().post(s.url(path)).json(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.expect("request")
}

#[tokio::test]
async fn seven_streams_of_four_tokens_are_counted_exactly() {
    let s = Gateway::builder()
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let chat_route = [
        ("route", "/v1/chat/completions"),
        ("method", "POST"),
        ("model", DEMO),
    ];
    let model = [("model", DEMO)];
    let mut ids = Vec::new();
    for _ in 0..7 {
        let resp = post(
            &s,
            None,
            "/v1/chat/completions",
            &chat(DEMO, true, json!({"mock": {"tokens": 4}})),
        )
        .await;
        assert_eq!(resp.status(), 200);
        ids.push(
            resp.headers()["x-sluice-stream-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let body = resp.text().await.expect("body");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    // Resume one stream from its second event: a resume, counted under the route template.
    let resumed = client()
        .get(s.url(&format!("/v1/streams/{}/events?format=openai", ids[0])))
        .header("last-event-id", "1")
        .send()
        .await
        .expect("resume");
    assert_eq!(resumed.status(), 200);
    resumed.text().await.expect("resumed body");
    // A path no route matches, with a stream ID in it: counted, but not by its path.
    let stray = client()
        .get(s.url(&format!("/v1/streams/{}/events/more", ids[1])))
        .send()
        .await
        .expect("stray");
    assert_eq!(stray.status(), 404);
    // A model nobody serves: counted as `other`, never under the name the client made up.
    let unknown = post(
        &s,
        None,
        "/v1/chat/completions",
        &chat("made-up-9f3", true, json!({})),
    )
    .await;
    assert_eq!(unknown.status(), 404);

    let resp = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(resp.text().await.expect("text").ends_with("# EOF\n"));
    let m = scrape_until(&s, "7 completed streams", |m| {
        metric_with(m, "sluice_streams_completed_total", &model) == 7
    })
    .await;
    let ok = [&chat_route[..], &[("status", "200"), ("team", "")]].concat();
    assert_eq!(metric_with(&m, "sluice_http_requests_total", &ok), 7, "{m}");
    assert_eq!(
        metric_with(
            &m,
            "sluice_http_requests_total",
            &[("model", "other"), ("status", "404")]
        ),
        1
    );
    assert!(!m.contains("made-up-9f3"), "{m}");
    assert_eq!(
        metric_with(
            &m,
            "sluice_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1
    );
    assert_eq!(metric_with(&m, "sluice_streams_started_total", &model), 7);
    assert_eq!(
        metric_with(
            &m,
            "sluice_streams_completed_total",
            &[("model", DEMO), ("provider", DEMO), ("team", "")]
        ),
        7
    );
    assert_eq!(
        metric_with(&m, "sluice_completion_tokens_total", &model),
        28
    );
    assert!(metric_with(&m, "sluice_prompt_tokens_total", &model) > 0);
    assert_eq!(
        histogram_count(&m, "sluice_time_to_first_token_seconds", &model),
        7
    );
    assert_eq!(
        histogram_count(&m, "sluice_upstream_time_to_first_token_seconds", &model),
        7
    );
    assert_eq!(
        histogram_count(&m, "sluice_stream_duration_seconds", &model),
        7
    );
    // The gateway's time to first token includes the upstream's: the difference is Sluice's
    // own overhead, and cannot be negative.
    let sum = |name: &str| -> f64 {
        sluice_tests::samples(&m)
            .iter()
            .filter(|x| x.name == name)
            .map(|x| x.value)
            .sum()
    };
    assert!(
        sum("sluice_time_to_first_token_seconds_sum")
            >= sum("sluice_upstream_time_to_first_token_seconds_sum"),
        "{m}"
    );
    assert_eq!(metric_with(&m, "sluice_stream_resumes_total", &[]), 1);
    assert_eq!(
        metric_with(
            &m,
            "sluice_http_requests_total",
            &[("route", "/v1/streams/{id}/events"), ("status", "200")]
        ),
        1
    );
    for id in &ids {
        assert!(!m.contains(id.as_str()), "a stream ID in /metrics:\n{m}");
    }
    assert_eq!(metric_with(&m, "sluice_streams_failed_total", &[]), 0);
    // Open mode's /v1/usage reads the same totals.
    let usage: Value = client()
        .get(s.url("/v1/usage"))
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(usage["requests"], 7);
    assert_eq!(usage["completion_tokens"], 28);
}

#[tokio::test]
async fn failed_cancelled_and_rate_limited_requests_are_counted_by_team() {
    // An upstream that breaks mid-answer: the stream fails as upstream_truncated.
    let role = data(&up_chunk(
        0,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    let up = serve(vec![
        sse_head(),
        chunk(role.as_bytes()),
        chunk(data(&up_text("Hel")).as_bytes()),
        Step::Sleep(Duration::from_millis(50)),
        Step::Reset,
    ])
    .await;
    let k = new_key();
    // Three requests at once, then the next one in 20 s: requests four and five get 429.
    let toml = openai_provider("flaky", &up.base_url(), &["gpt-x"])
        + &team("small", &[&k], "requests_per_minute = 3\nrequest_burst = 3");
    let s = sluice_tests::Gateway::builder()
        .config(&toml)
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let bearer = k.key.as_str();
    let key = Some(bearer);
    let team = ("team", "small");

    // 1: completes.
    let ok = post(
        &s,
        key,
        "/v1/chat/completions",
        &chat(DEMO, true, json!({"mock": {"tokens": 4}})),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.expect("body").ends_with("data: [DONE]\n\n"));
    // 2: the upstream breaks.
    let broken = post(
        &s,
        key,
        "/v1/chat/completions",
        &chat("gpt-x", true, json!({})),
    )
    .await;
    assert_eq!(broken.status(), 200);
    let body = broken.text().await.expect("body");
    assert!(body.contains("upstream_truncated"), "{body}");
    // 3: a slow stream, cancelled by DELETE.
    let created = post(
        &s,
        key,
        "/v1/streams",
        &chat(
            DEMO,
            true,
            json!({"mock": {"tokens": 200, "delay_ms": 100}}),
        ),
    )
    .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deleted = client()
        .delete(s.url(&format!("/v1/streams/{id}")))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    // 4 and 5: over the request limit.
    for _ in 0..2 {
        let r = post(
            &s,
            key,
            "/v1/chat/completions",
            &chat(DEMO, true, json!({})),
        )
        .await;
        assert_eq!(r.status(), 429);
    }

    let m = scrape_until(&s, "three finished streams", |m| {
        metric_with(m, "sluice_streams_completed_total", &[team])
            + metric_with(m, "sluice_streams_failed_total", &[team])
            + metric_with(m, "sluice_streams_cancelled_total", &[team])
            == 3
    })
    .await;
    assert_eq!(
        metric_with(
            &m,
            "sluice_streams_completed_total",
            &[team, ("model", DEMO)]
        ),
        1,
        "{m}"
    );
    assert_eq!(
        metric_with(
            &m,
            "sluice_streams_failed_total",
            &[
                team,
                ("model", "gpt-x"),
                ("provider", "flaky"),
                ("error_type", "upstream_truncated")
            ]
        ),
        1
    );
    assert_eq!(
        metric_with(
            &m,
            "sluice_streams_cancelled_total",
            &[team, ("model", DEMO)]
        ),
        1
    );
    assert_eq!(
        metric_with(
            &m,
            "sluice_upstream_errors_total",
            &[("provider", "flaky"), ("kind", "upstream_truncated")]
        ),
        1
    );
    assert_eq!(metric_with(&m, "sluice_upstream_errors_total", &[]), 1);
    assert_eq!(
        metric_with(
            &m,
            "sluice_team_rejected_total",
            &[team, ("type", "requests")]
        ),
        2
    );
    assert_eq!(
        metric_with(
            &m,
            "sluice_team_rejected_total",
            &[team, ("type", "tokens")]
        ),
        0
    );
    assert_eq!(
        metric_with(
            &m,
            "sluice_http_requests_total",
            &[
                ("route", "/v1/chat/completions"),
                team,
                ("model", DEMO),
                ("status", "429")
            ]
        ),
        2
    );
    assert_eq!(
        metric_with(
            &m,
            "sluice_http_requests_total",
            &[
                ("route", "/v1/streams/{id}"),
                ("method", "DELETE"),
                ("status", "200")
            ]
        ),
        1
    );
    assert_eq!(metric_with(&m, "sluice_team_requests_total", &[team]), 3);
    assert_eq!(metric_with(&m, "sluice_team_open_streams", &[team]), 0);
    assert!(!m.contains(&id), "a stream ID in /metrics:\n{m}");
}
