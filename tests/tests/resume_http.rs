//! Resumable streams over HTTP, against a gateway and the demo upstream: every resume
//! position, a reconnect while generating, two readers, cancel, and the error statuses.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use sluice_tests::e2e::{client_with_timeout, wait_for};
use sluice_tests::streams::{self, data_events};
use sluice_tests::Gateway;
use sluice_tests::{metric, Sluice};

/// Every answer here is short: one that takes 20 s has hung.
fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(20))
}

/// Creates a stream on `s` shaped by `mock`.
async fn create(s: &Sluice, mock: Value) -> String {
    streams::create(
        s,
        &json!({
            "model": "sluice-demo",
            "messages": [{"role": "user", "content": "Resume me"}],
            "mock": mock,
        }),
    )
    .await
}

/// (id, event name, data) of every event in a browser-format body.
fn events(body: &str) -> Vec<(u64, String, Value)> {
    data_events(body)
        .into_iter()
        .map(|e| {
            (
                e.id.expect("numeric id"),
                e.event.clone().unwrap_or_default(),
                e.json(),
            )
        })
        .collect()
}

fn text(evs: &[(u64, String, Value)]) -> String {
    evs.iter()
        .filter(|(_, name, _)| name == "delta")
        .map(|(_, _, d)| d["text"].as_str().expect("text").to_owned())
        .collect()
}

async fn get(s: &Sluice, id: &str, last: Option<&str>, query: &str) -> reqwest::Response {
    let mut req = client().get(s.url(&format!("/v1/streams/{id}/events{query}")));
    if let Some(n) = last {
        req = req.header("Last-Event-ID", n);
    }
    req.send().await.expect("get")
}

#[tokio::test]
async fn every_resume_position_yields_exactly_the_rest() {
    let s = Gateway::builder()
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let id = create(&s, json!({"tokens": 25, "delay_ms": 0})).await;
    let resp = get(&s, &id, None, "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.expect("body");
    assert!(body.starts_with("retry: 1000\n\n"), "{body}");
    let all = events(&body);
    let ids: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=all.len() as u64).collect::<Vec<_>>());
    let (last, name, done) = all.last().expect("events").clone();
    assert_eq!(name, "done");
    assert_eq!(done["finish_reason"], "stop");
    assert!(done["usage"]["completion_tokens"].as_u64().expect("usage") > 0);
    let full = text(&all);
    assert!(full.len() > 50);

    for n in 0..last {
        // Alternate the header and the query form.
        let resp = if n % 2 == 0 {
            get(&s, &id, Some(&n.to_string()), "").await
        } else {
            get(&s, &id, None, &format!("?last_event_id={n}")).await
        };
        assert_eq!(resp.status(), 200, "resume from {n}");
        let rest = events(&resp.text().await.expect("body"));
        assert_eq!(rest.first().expect("an event").0, n + 1, "resume from {n}");
        let before: Vec<_> = all.iter().filter(|e| e.0 <= n).cloned().collect();
        assert_eq!(text(&before) + &text(&rest), full, "resume from {n}");
        assert_eq!(rest.last().expect("an event").1, "done");
    }
    // The final id: nothing more, EventSource stops on 204.
    assert_eq!(
        get(&s, &id, Some(&last.to_string()), "").await.status(),
        204
    );
    // Past the end, or not a number: 400. Unknown stream: 404.
    for bad in [(last + 1).to_string(), "abc".into(), "-1".into()] {
        let resp = get(&s, &id, Some(&bad), "").await;
        assert_eq!(resp.status(), 400, "Last-Event-ID {bad}");
        let v: Value = resp.json().await.expect("json error");
        assert!(v["error"]["message"].is_string());
    }
    let resp = get(&s, "AAAAAAAAAAAAAAAAAAAAAA", None, "").await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("json error");
    assert!(v["error"]["message"].is_string());

    // The same stream as OpenAI chunks: same ids for the deltas, the end numbered on.
    let body = get(&s, &id, None, "?format=openai")
        .await
        .text()
        .await
        .expect("body");
    let chunks = data_events(&body);
    let oids: Vec<u64> = chunks.iter().map(|e| e.id.expect("id")).collect();
    assert_eq!(oids, (1..=oids.len() as u64).collect::<Vec<_>>());
    assert_eq!(chunks.last().expect("chunks").data, "[DONE]");
    let content: String = chunks
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, full);
    for n in 0..*oids.last().expect("ids") {
        let body = get(&s, &id, Some(&n.to_string()), "?format=openai")
            .await
            .text()
            .await
            .expect("body");
        let rest: Vec<u64> = data_events(&body)
            .iter()
            .map(|e| e.id.expect("id"))
            .collect();
        assert_eq!(
            rest,
            (n + 1..=*oids.last().expect("ids")).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn reconnect_while_generating_continues_live_without_duplicates() {
    let s = Gateway::builder().start();
    let id = create(&s, json!({"tokens": 40, "delay_ms": 40})).await;
    // Read a few events, then drop the connection mid-stream.
    let resp = get(&s, &id, None, "").await;
    let mut stream = resp.bytes_stream();
    let mut first = String::new();
    while events(&first).len() < 5 {
        let chunk = stream.next().await.expect("more").expect("chunk");
        first.push_str(std::str::from_utf8(&chunk).expect("utf8"));
    }
    drop(stream);
    let seen = events(&first);
    let n = seen.last().expect("events").0;
    // Reconnect from what we saw: the rest arrives live, starting right after it.
    let rest = events(
        &get(&s, &id, Some(&n.to_string()), "")
            .await
            .text()
            .await
            .expect("body"),
    );
    assert_eq!(rest.first().expect("rest").0, n + 1);
    let whole = events(&get(&s, &id, None, "").await.text().await.expect("body"));
    assert_eq!(text(&seen) + &text(&rest), text(&whole));
    let mut ids: Vec<u64> = seen.iter().chain(rest.iter()).map(|e| e.0).collect();
    ids.dedup();
    assert_eq!(ids, (1..=whole.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn two_readers_get_the_whole_answer_and_delete_cancels() {
    let s = Gateway::builder().start();
    let id = create(&s, json!({"tokens": 20, "delay_ms": 20})).await;
    let (a, b) = tokio::join!(get(&s, &id, None, ""), get(&s, &id, None, ""));
    let (a, b) = tokio::join!(a.text(), b.text());
    let (a, b) = (events(&a.expect("a")), events(&b.expect("b")));
    assert_eq!(a, b);
    assert_eq!(a.last().expect("events").1, "done");

    let id = create(&s, json!({"tokens": 500, "delay_ms": 50})).await;
    let reader = tokio::spawn({
        let url = s.url(&format!("/v1/streams/{id}/events"));
        async move {
            client()
                .get(url)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("body")
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = client()
        .delete(s.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    let evs = events(&reader.await.expect("reader"));
    let (_, name, data) = evs.last().expect("events");
    assert_eq!(name, "done");
    assert_eq!(data["finish_reason"], "cancelled");
    assert!(evs.len() < 100, "stopped early: {} events", evs.len());
    let resp = client()
        .delete(s.url("/v1/streams/AAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn readers_past_the_per_stream_cap_get_429() {
    let s = Gateway::builder()
        .env(&[
            ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ("SLUICE_STREAM_MAX_READERS", "2"),
        ])
        .start();
    // A slow answer, so that the readers below are all attached at once.
    let id = create(&s, json!({"tokens": 20, "delay_ms": 200})).await;
    let first = get(&s, &id, None, "").await;
    let second = get(&s, &id, None, "?format=openai").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = get(&s, &id, None, "").await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "concurrency");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("2 readers"),
        "{body}"
    );
    // A reader that leaves makes room.
    drop(second);
    let (sr, idr) = (&s, &id);
    let again = wait_for(Duration::from_millis(2500), || async move {
        let r = get(sr, idr, Some("3"), "").await;
        (r.status() == 200).then_some(r)
    })
    .await;
    let rest = events(
        &again
            .expect("a reader is admitted again")
            .text()
            .await
            .expect("body"),
    );
    assert_eq!(rest.first().map(|e| e.0), Some(4));
    assert_eq!(rest.last().map(|e| e.1.as_str()), Some("done"));
    drop(first);
}

/// Many short answers in parallel through a relay bound that holds only about a hundred of them
/// (and the 40 live ones with room to spare): finished answers make room, so none is refused.
#[tokio::test]
async fn churn_under_a_tiny_relay_bound_refuses_nothing() {
    let s = Gateway::builder()
        .env(&[
            ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ("SLUICE_RELAY_MAX_TOTAL_BYTES", "131072"),
        ])
        .start();
    let c = client();
    let url = s.url("/v1/chat/completions");
    let statuses: Vec<(u16, String)> = futures::stream::iter(0..1500)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            async move {
                let resp = c
                    .post(&url)
                    .json(&json!({
                        "model": "sluice-demo",
                        "stream": true,
                        "messages": [{"role": "user", "content": "churn"}],
                        "mock": {"tokens": 20, "delay_ms": 0},
                    }))
                    .send()
                    .await
                    .expect("post");
                let status = resp.status().as_u16();
                (status, resp.text().await.expect("body"))
            }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    let refused: Vec<_> = statuses.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    assert!(statuses
        .iter()
        .all(|(_, b)| b.ends_with("data: [DONE]\n\n")));
    let metrics = s.metrics().await;
    assert_eq!(metric(&metrics, "sluice_relay_refused_streams_total"), 0);
    assert!(metric(&metrics, "sluice_relay_evicted_streams_total") > 1000);
    assert!(
        metric(&metrics, "sluice_relay_bytes") <= 131072 + 16384,
        "{metrics}"
    );
}
