//! Resumable streams over HTTP (`POST /v1/streams`, `GET /v1/streams/{id}/events`): creating
//! one, reading its events from any position, and the pieces of a body the tests look at.

use std::time::Duration;

use serde_json::Value;

use crate::e2e::{client_with_timeout, sse_events, SseEvent, StreamReader};
use crate::Sluice;

/// Creating a stream or opening its events is quick: one that takes 20 s has hung.
fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(20))
}

/// `POST /v1/streams` with `request`; asserts 201, the `events_url` and an id of at least 128
/// random bits; returns the id.
pub async fn create(s: &Sluice, request: &Value) -> String {
    let resp = client()
        .post(s.url("/v1/streams"))
        .json(request)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(v["events_url"], format!("/v1/streams/{id}/events"));
    assert!(id.len() >= 22, "at least 128 random bits");
    id
}

/// Opens the events of stream `id` after event `after` (`Last-Event-ID`), in the OpenAI
/// format if `openai`, else the browser's; asserts 200. The body is read by the caller.
pub async fn open(s: &Sluice, id: &str, after: u64, openai: bool) -> StreamReader {
    let q = if openai { "?format=openai" } else { "" };
    // The whole body within 30 s, as the readers of these tests expect.
    let resp = client_with_timeout(Duration::from_secs(30))
        .get(s.url(&format!("/v1/streams/{id}/events{q}")))
        .header("last-event-id", after.to_string())
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200, "GET events after {after} on {}", s.addr);
    StreamReader::new(resp)
}

/// [`open`], read to its end (30 s at most).
pub async fn read_all(s: &Sluice, id: &str, after: u64, openai: bool) -> String {
    let mut r = open(s, id, after, openai).await;
    r.read_to_end(Duration::from_secs(30)).await;
    r.body
}

/// The events of a body that carry data (not the `retry:` block).
pub fn data_events(body: &str) -> Vec<SseEvent> {
    sse_events(body)
        .into_iter()
        .filter(|e| e.has("data"))
        .collect()
}

/// The number of complete events carrying data in `body` (a body still arriving).
pub fn events_with_data(body: &str) -> usize {
    data_events(crate::sse::complete_part(body)).len()
}

/// The name and data of the last event carrying data.
pub fn last_event(body: &str) -> (String, Value) {
    let e = data_events(body).pop().expect("an event");
    (e.event.clone().unwrap_or_default(), e.json())
}
