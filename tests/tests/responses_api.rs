//! The OpenAI Responses API through the real gateway, against scripted upstreams: the event
//! sequence and its sequence numbers, the non-streaming object, tool calls (namespace tools
//! mapped back), a failure mid-stream, resume with `starting_after`, `GET` and cancel, and
//! multi-turn `item_reference`s.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_error_shape, client, data, openai_provider, sse_steps, up_chunk, up_role, up_stream,
    up_text, up_usage, StreamReader,
};
use sluice_tests::scripted::{chunk, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::sse::sse_events;
use sluice_tests::teams;
use sluice_tests::{Gateway, Sluice};

const LIMIT: Duration = Duration::from_secs(15);

fn start(up: &ScriptedUpstream) -> Sluice {
    Gateway::builder().upstream(up).start()
}

async fn post(s: &Sluice, body: &Value) -> reqwest::Response {
    client()
        .post(s.url("/v1/responses"))
        .json(body)
        .send()
        .await
        .expect("response")
}

/// (sequence number, event name, data) of each event; checks `id:` = `sequence_number`.
fn events(body: &str) -> Vec<(u64, String, Value)> {
    sse_events(body)
        .into_iter()
        .map(|e| {
            let d = e.json();
            let seq = d["sequence_number"].as_u64().expect("sequence_number");
            assert_eq!(e.id, Some(seq), "id: is the sequence number");
            let name = e.event.clone().expect("every event is named");
            assert_eq!(d["type"], name.as_str());
            (seq, name, d)
        })
        .collect()
}

fn names(evs: &[(u64, String, Value)]) -> Vec<&str> {
    evs.iter().map(|(_, n, _)| n.as_str()).collect()
}

pub fn text_steps(pieces: &[&str]) -> Vec<Step> {
    sse_steps([up_stream(pieces)])
}

#[tokio::test]
async fn stream_is_the_responses_event_sequence() {
    let up = serve(text_steps(&["Hel", "lo"])).await;
    let s = start(&up);
    let resp = post(&s, &json!({"model": "m", "input": "hi", "stream": true})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-sluice-provider"], "up");
    let stream_id = resp.headers()["x-sluice-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(resp.headers().get("x-sluice-omitted").is_none());
    let body = resp.text().await.unwrap();
    assert!(!body.contains("[DONE]"), "{body}");
    let evs = events(&body);
    assert_eq!(
        names(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let seqs: Vec<u64> = evs.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    let created = &evs[0].2["response"];
    assert_eq!(created["id"], format!("resp_{stream_id}"));
    assert_eq!(created["status"], "in_progress");
    assert!(created["created_at"].as_u64().unwrap() > 0);
    let delta = &evs[4].2;
    assert_eq!(delta["item_id"], format!("msg_{stream_id}_0"));
    assert_eq!(delta["logprobs"], json!([]));
    let item = &evs[8].2["item"];
    assert_eq!(item["content"][0]["text"], "Hello");
    let done = &evs[9].2["response"];
    assert_eq!(done["id"], format!("resp_{stream_id}"));
    assert_eq!(done["status"], "completed");
    assert_eq!(done["model"], "up-model");
    assert_eq!(done["usage"]["input_tokens"], 5);
    assert_eq!(done["usage"]["output_tokens"], 2);
    assert_eq!(done["usage"]["total_tokens"], 7);
    assert_eq!(done["output"][0], *item);

    // The upstream got a chat-completions request.
    let sent: Value = serde_json::from_slice(&up.requests()[0].1).unwrap();
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(sent["stream"], true);

    // GET: the object, and the whole stream again, byte for byte.
    let id = format!("resp_{stream_id}");
    let got: Value = client()
        .get(s.url(&format!("/v1/responses/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, *done);
    let again = client()
        .get(s.url(&format!("/v1/responses/{id}?stream=true")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(again, body);
}

#[tokio::test]
async fn non_streaming_answer_is_the_response_object() {
    let up = serve(text_steps(&["Hi ", "there"])).await;
    let s = start(&up);
    let resp = post(
        &s,
        &json!({"model": "m", "input": [{"role": "user", "content": "hi"}],
                "instructions": "be nice", "max_output_tokens": 20}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-sluice-stream-id").is_some());
    let obj: Value = resp.json().await.unwrap();
    assert_eq!(obj["object"], "response");
    assert_eq!(obj["status"], "completed");
    assert_eq!(obj["output"][0]["type"], "message");
    assert_eq!(obj["output"][0]["role"], "assistant");
    assert_eq!(obj["output"][0]["content"][0]["text"], "Hi there");
    assert_eq!(obj["usage"]["output_tokens"], 2);
    let sent: Value = serde_json::from_slice(&up.requests()[0].1).unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be nice"})
    );
    assert_eq!(sent["max_tokens"], 20);
}

/// An upstream that calls `get_weather` {"city":"Paris"} and, with `spawn`, the flattened
/// namespace tool `agents__spawn` too.
pub fn tool_steps_with(spawn: bool) -> Vec<Step> {
    let call = |delta: Value| data(&up_chunk(0, json!({ "tool_calls": [delta] }), None));
    let mut body = data(&up_role());
    body.push_str(&call(
        json!({"index": 0, "id": "call_w", "type": "function",
        "function": {"name": "get_weather", "arguments": ""}}),
    ));
    body.push_str(&call(
        json!({"index": 0, "function": {"arguments": "{\"city\":"}}),
    ));
    body.push_str(&call(
        json!({"index": 0, "function": {"arguments": "\"Paris\"}"}}),
    ));
    if spawn {
        body.push_str(&call(
            json!({"index": 1, "id": "call_s", "type": "function",
            "function": {"name": "agents__spawn", "arguments": "{}"}}),
        ));
    }
    body.push_str(&data(&up_chunk(0, json!({}), Some("tool_calls"))));
    body.push_str(&data(&up_usage(30, 12)));
    body.push_str("data: [DONE]\n\n");
    sse_steps([body])
}

#[tokio::test]
async fn tool_calls_are_function_call_items_with_client_names() {
    let up = serve(tool_steps_with(true)).await;
    let s = start(&up);
    let resp = post(
        &s,
        &json!({
            "model": "m", "stream": true, "input": "weather?",
            "tools": [
                {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
                {"type": "namespace", "name": "agents", "description": "d",
                 "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}]},
                {"type": "web_search"},
            ],
            "include": ["reasoning.encrypted_content"], "store": false,
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-sluice-omitted"],
        "include, tools.web_search"
    );
    let body = resp.text().await.unwrap();
    let evs = events(&body);
    assert_eq!(
        names(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let first = &evs[6].2["item"];
    assert_eq!(first["type"], "function_call");
    assert_eq!(first["call_id"], "call_w");
    assert_eq!(first["name"], "get_weather");
    assert_eq!(first["arguments"], "{\"city\":\"Paris\"}");
    let second = &evs[10].2["item"];
    assert_eq!(second["name"], "spawn");
    assert_eq!(second["namespace"], "agents");
    assert_eq!(second["call_id"], "call_s");
    assert_eq!(evs[11].2["response"]["status"], "completed");

    let sent: Value = serde_json::from_slice(&up.requests()[0].1).unwrap();
    let tools: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["get_weather", "agents__spawn"]);
    assert!(sent.get("include").is_none());
}

#[tokio::test]
async fn a_failure_mid_stream_is_response_failed_and_nothing_after() {
    let up = serve(vec![
        sse_head(),
        chunk(data(&up_role()).as_bytes()),
        chunk(data(&up_text("partial")).as_bytes()),
        Step::Reset,
    ])
    .await;
    let s = start(&up);
    let resp = post(&s, &json!({"model": "m", "input": "hi", "stream": true})).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let evs = events(&body);
    let terminal: Vec<&str> = names(&evs)
        .into_iter()
        .filter(|n| {
            matches!(
                *n,
                "response.completed" | "response.incomplete" | "response.failed"
            )
        })
        .collect();
    assert_eq!(terminal, ["response.failed"]);
    let (_, last, failed) = evs.last().unwrap();
    assert_eq!(last, "response.failed");
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["code"], "upstream_truncated");
    assert!(
        failed["response"]["error"]["message"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    // The open message was closed before the terminal event.
    assert_eq!(evs[evs.len() - 2].1, "response.output_item.done");
    assert_eq!(evs[evs.len() - 2].2["item"]["status"], "incomplete");

    // Non-streaming: the failure in OpenAI's error shape.
    let resp = post(&s, &json!({"model": "m", "input": "hi"})).await;
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert_error_shape(&err);
}

/// An upstream that answers `n` tokens, `gap` apart.
pub fn slow_steps(n: usize, gap: Duration) -> Vec<Step> {
    let mut steps = vec![sse_head(), chunk(data(&up_role()).as_bytes())];
    for i in 0..n {
        steps.push(Step::Sleep(gap));
        steps.push(chunk(data(&up_text(&format!("t{i} "))).as_bytes()));
    }
    steps.push(chunk(
        data(&up_chunk(0, json!({}), Some("stop"))).as_bytes(),
    ));
    steps.push(chunk(data(&up_usage(3, n as u64)).as_bytes()));
    steps.push(chunk(b"data: [DONE]\n\n"));
    steps.push(sluice_tests::scripted::end_chunks());
    steps
}

#[tokio::test]
async fn resume_with_starting_after_is_the_tail_of_the_original() {
    let up = serve(slow_steps(6, Duration::from_millis(150))).await;
    let s = start(&up);
    let mut first = StreamReader::post(
        &s.url("/v1/responses"),
        &json!({"model": "m", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(first.status, 200);
    let id = format!("resp_{}", first.header("x-sluice-stream-id").unwrap());
    // Read into the middle, then resume from there while it is still generating.
    first
        .read_until(LIMIT, |b| b.contains("\"sequence_number\":5,"))
        .await;
    let live = client()
        .get(s.url(&format!("/v1/responses/{id}?stream=true&starting_after=4")))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let live = live.text().await.unwrap();
    first.read_to_end(LIMIT).await;
    let original = first.body.clone();
    let tail: String = original.split_inclusive("\n\n").skip(5).collect();
    assert_eq!(live, tail);
    assert!(live.starts_with("id: 5\n"), "{live}");
    // Every position of the finished stream.
    let total = original.split_inclusive("\n\n").count();
    for n in [0usize, 3, 7, total - 2] {
        let got = client()
            .get(s.url(&format!(
                "/v1/responses/{id}?stream=true&starting_after={n}"
            )))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let tail: String = original.split_inclusive("\n\n").skip(n + 1).collect();
        assert_eq!(got, tail, "starting_after={n}");
    }
    // After the last event: nothing more (204); beyond it: 400.
    let at_end = client()
        .get(s.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={}",
            total - 1
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(at_end.status(), 204);
    let beyond = client()
        .get(s.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={}",
            total + 5
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 400);
}

#[tokio::test]
async fn cancel_stops_it_and_returns_the_object() {
    let up = serve(slow_steps(50, Duration::from_millis(300))).await;
    let s = start(&up);
    let mut reader = StreamReader::post(
        &s.url("/v1/responses"),
        &json!({"model": "m", "input": "hi", "stream": true}),
    )
    .await;
    let id = format!("resp_{}", reader.header("x-sluice-stream-id").unwrap());
    reader
        .read_until(LIMIT, |b| b.contains("response.output_text.delta"))
        .await;
    let resp = client()
        .post(s.url(&format!("/v1/responses/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let obj: Value = resp.json().await.unwrap();
    assert_eq!(obj["id"], id);
    assert_eq!(obj["status"], "cancelled");
    reader.read_to_end(LIMIT).await;
    let evs = events(&reader.body);
    let (_, last, data) = evs.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(
        data["response"]["incomplete_details"]["reason"],
        "cancelled"
    );
    // Unknown ids: 404 in OpenAI's shape.
    for path in [
        "/v1/responses/resp_nope".to_owned(),
        "/v1/responses/resp_AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
    ] {
        let r = client().get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_error_shape(&r.json().await.unwrap());
    }
    let r = client()
        .post(s.url("/v1/responses/resp_AAAAAAAAAAAAAAAAAAAAAA/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn item_reference_brings_back_the_earlier_answer() {
    let up = serve(text_steps(&["Hello ", "there"])).await;
    let s = start(&up);
    let first: Value = post(&s, &json!({"model": "m", "input": "hi", "store": true}))
        .await
        .json()
        .await
        .unwrap();
    let item_id = first["output"][0]["id"].as_str().unwrap().to_owned();
    assert!(item_id.starts_with("msg_"));
    let second = post(
        &s,
        &json!({"model": "m", "store": true, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "item_reference", "id": item_id},
            {"role": "user", "content": [{"type": "input_text", "text": "and then?"}]},
        ]}),
    )
    .await;
    assert_eq!(second.status(), 200);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    let sent: Value = serde_json::from_slice(&reqs[1].1).unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "and then?"},
        ])
    );
}

#[tokio::test]
async fn unknown_references_and_server_state_fields_are_400s() {
    let up = serve(text_steps(&["x"])).await;
    let s = start(&up);
    let cases = [
        (
            json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_AAAAAAAAAAAAAAAAAAAAAA_0"}]}),
            "input[0]",
            "unknown or has expired",
        ),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
            "background",
        ),
    ];
    for (body, param, words) in cases {
        let r = post(&s, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let err: Value = r.json().await.unwrap();
        assert_error_shape(&err);
        assert_eq!(err["error"]["param"], param);
        assert!(
            err["error"]["message"].as_str().unwrap().contains(words),
            "{err}"
        );
    }
    assert!(up.requests().is_empty());
    // Codex's own message ids are not references.
    let r = post(
        &s,
        &json!({"model": "m", "input": [{"type": "message", "id": "msg_01a24ecb-7276-7e72-a70f-b016886fe519",
                 "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn another_teams_response_does_not_exist() {
    let up = serve(text_steps(&["secret"])).await;
    let a = teams::new_key();
    let b = teams::new_key();
    let toml = format!(
        "{}\n{}{}",
        openai_provider("up", &up.base_url(), &["*"]),
        teams::team("a", &[&a], ""),
        teams::team("b", &[&b], "")
    );
    let (key_a, key_b) = (a.key, b.key);
    let s = Gateway::builder().config(&toml).demo(false).start();
    let obj: Value = client()
        .post(s.url("/v1/responses"))
        .bearer_auth(&key_a)
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = obj["id"].as_str().unwrap();
    let item = obj["output"][0]["id"].as_str().unwrap();
    let own = client()
        .get(s.url(&format!("/v1/responses/{id}")))
        .bearer_auth(&key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    for req in [
        client().get(s.url(&format!("/v1/responses/{id}"))),
        client().post(s.url(&format!("/v1/responses/{id}/cancel"))),
    ] {
        let r = req.bearer_auth(&key_b).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = client()
        .post(s.url("/v1/responses"))
        .bearer_auth(&key_b)
        .json(&json!({"model": "m", "input": [{"type": "item_reference", "id": item}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
