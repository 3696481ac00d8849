//! An Anthropic upstream's thinking block ends with a signature (a `signature_delta`), which
//! Sluice keeps in the stream's log for the clients that must send it back (Anthropic's own).
//! The chat-completions and browser clients never see it, yet it is an event of the log: their
//! ids stay 1, 2, 3, ... with no gap, every event is one their parsers take, and a resume from
//! the signature's id yields exactly the rest.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    chat, check_openai_wire, check_openai_wire_from, chunks, client_with_timeout, content_of,
    post_collect, provider, sse_steps,
};
use sluice_tests::scripted::serve;
use sluice_tests::streams::data_events;
use sluice_tests::{Gateway, Sluice};

const LIMIT: Duration = Duration::from_secs(20);
const SIGNATURE: &str = "EqQBCkgIARABGAIiQMtSignatureThatMustNotShow==";

/// Anthropic's events for: thinking (two deltas and its signature), text, a tool call.
fn upstream_events() -> Vec<String> {
    let events = [
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-think","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Weather "}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"needs a tool."}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":SIGNATURE}}),
        json!({"type":"content_block_stop","index":0}),
        json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
        json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Checking."}}),
        json!({"type":"content_block_stop","index":1}),
        json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}),
        json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Oslo\"}"}}),
        json!({"type":"content_block_stop","index":2}),
        json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}),
        json!({"type":"message_stop"}),
    ];
    events
        .iter()
        .map(|e| {
            format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().expect("a type")
            )
        })
        .collect()
}

async fn get(s: &Sluice, id: &str, after: Option<u64>, query: &str) -> (u16, String) {
    let mut req = client_with_timeout(LIMIT).get(s.url(&format!("/v1/streams/{id}/events{query}")));
    if let Some(n) = after {
        req = req.header("Last-Event-ID", n.to_string());
    }
    let resp = req.send().await.expect("get");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

#[tokio::test]
async fn a_thinking_signature_keeps_every_format_numbered_and_never_shows() {
    let up = serve(sse_steps(upstream_events())).await;
    let sluice = Gateway::builder()
        .config(&provider(
            "claude",
            "anthropic",
            &format!("http://{}", up.addr),
            &["claude-think"],
            None,
        ))
        .demo(false)
        .start();
    let a = post_collect(
        &sluice.url("/v1/chat/completions"),
        &chat("claude-think", true, json!({})),
        LIMIT,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains(SIGNATURE), "{}", a.body);
    // Ids 1, 2, 3, ... with nothing a client's parser would choke on.
    let events = check_openai_wire(&a.body);
    let chunks = chunks(&events);
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, "Weather needs a tool.");
    assert_eq!(content_of(&events, 0), "Checking.");
    // The signature's chunk: the one after the thinking, with nothing to show.
    assert_eq!(chunks[2]["choices"][0]["delta"], json!({}), "{}", a.body);
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], Value::Null);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["function"]["name"], "weather");

    // The same log in the browser's format: the signature is an empty piece of thinking.
    let id = a
        .header("x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    let (status, body) = get(&sluice, &id, None, "").await;
    assert_eq!(status, 200);
    assert!(!body.contains(SIGNATURE), "{body}");
    let browser: Vec<(u64, String, Value)> = data_events(&body)
        .into_iter()
        .map(|e| {
            (
                e.id.expect("id"),
                e.event.clone().unwrap_or_default(),
                e.json(),
            )
        })
        .collect();
    let names: Vec<&str> = browser.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "reasoning",
            "reasoning",
            "reasoning",
            "delta",
            "tool_call",
            "tool_call",
            "done"
        ],
        "{body}"
    );
    assert_eq!(
        browser.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(browser[2].2, json!({"index": 0, "text": ""}));
    assert_eq!(browser[6].2["finish_reason"], "tool_calls");

    // Resuming from the signature's id (3) or just before it: exactly the rest, in both formats.
    for after in [2u64, 3] {
        let (_, rest) = get(&sluice, &id, Some(after), "").await;
        let ids: Vec<u64> = data_events(&rest)
            .iter()
            .map(|e| e.id.expect("id"))
            .collect();
        assert_eq!(ids, (after + 1..=7).collect::<Vec<_>>(), "{rest}");
        let (_, rest) = get(&sluice, &id, Some(after), "?format=openai").await;
        let resumed = check_openai_wire_from(&rest, after + 1);
        assert_eq!(resumed.len(), events.len() - after as usize, "{rest}");
        let tail: Vec<String> = events[after as usize..]
            .iter()
            .map(|e| e.data.clone())
            .collect();
        let got: Vec<String> = resumed.iter().map(|e| e.data.clone()).collect();
        assert_eq!(got, tail);
    }
}
