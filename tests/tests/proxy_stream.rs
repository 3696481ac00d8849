//! The streaming proxy's happy path, end to end: a gateway against the built-in
//! demo upstream and against scripted raw-bytes upstreams, checked on the wire as a client sees it.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::e2e::{
    chat, check_openai_wire, chunks, content_of, data, finish_reasons, post_chat, post_collect,
    recorded_body, sse_steps, up_chunk, up_stream, up_usage,
};
use sluice_tests::scripted::serve;
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn demo_stream_headers_ids_done_and_text_match_non_streaming() {
    let sluice = Gateway::builder()
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let url = sluice.url("/v1/chat/completions");
    let extra = json!({"max_tokens": 12});
    let resp = post_collect(&url, &chat("sluice-demo", true, extra.clone()), LIMIT).await;

    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(resp.header("cache-control"), Some("no-cache"));
    assert_eq!(resp.header("x-accel-buffering"), Some("no"));
    assert!(
        resp.header("content-encoding").is_none(),
        "event streams are never compressed: {:?}",
        resp.headers
    );
    let stream_id = resp
        .header("x-sluice-stream-id")
        .expect("x-sluice-stream-id");
    assert!(stream_id.len() >= 22, "stream id: {stream_id}");
    assert!(resp.transport_error.is_none(), "{:?}", resp.transport_error);

    let events = check_openai_wire(&resp.body);
    assert!(events.len() >= 3, "{}", resp.body);
    assert!(
        events.iter().all(|e| e.id.is_some()),
        "every event has an id"
    );
    assert_eq!(events[0].id, Some(1));
    let last = events.last().expect("events");
    assert_eq!(last.data, "[DONE]");
    assert!(
        resp.body.ends_with("data: [DONE]\n\n"),
        "the body ends with the [DONE] event: {:?}",
        resp.body
    );
    assert_eq!(
        events.iter().filter(|e| e.is_done()).count(),
        1,
        "one [DONE]"
    );
    for c in chunks(&events) {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(c["model"], "sluice-demo", "{c}");
        assert_eq!(
            c["choices"].as_array().map(Vec::len),
            Some(1),
            "no empty-choices chunk without include_usage: {c}"
        );
        assert!(c.get("usage").is_none() || c["usage"].is_null(), "{c}");
    }
    assert_eq!(
        chunks(&events)[0]["choices"][0]["delta"]["role"],
        "assistant"
    );
    // max_tokens 12 < the demo's answer: the demo stops for length.
    assert_eq!(finish_reasons(&events), vec![(0, "length".to_owned())]);
    let streamed = content_of(&events, 0);
    assert!(streamed.starts_with("Hello from Sluice!"), "{streamed:?}");

    let whole = post_collect(&url, &chat("sluice-demo", false, extra), LIMIT).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let v = whole.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], streamed.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn include_usage_gives_a_final_usage_chunk_with_empty_choices() {
    let sluice = Gateway::builder()
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let url = sluice.url("/v1/chat/completions");
    let body = chat(
        "sluice-demo",
        true,
        json!({"max_tokens": 5, "stream_options": {"include_usage": true}}),
    );
    let resp = post_collect(&url, &body, LIMIT).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let events = check_openai_wire(&resp.body);
    let n = events.len();
    assert!(events[n - 1].is_done(), "{}", resp.body);
    let usage_chunk = events[n - 2].json();
    assert_eq!(usage_chunk["object"], "chat.completion.chunk");
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    let usage = &usage_chunk["usage"];
    assert_eq!(usage["completion_tokens"], 5, "{usage}");
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt_tokens");
    assert!(prompt > 0);
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + 5));
    // Only that one chunk has empty choices or usage.
    let empty: Vec<_> = chunks(&events)
        .into_iter()
        .filter(|c| c["choices"].as_array().is_some_and(Vec::is_empty) || c.get("usage").is_some())
        .collect();
    assert_eq!(empty.len(), 1, "{empty:?}");
    assert_eq!(content_of(&events, 0).split_whitespace().count(), 5);
}

#[tokio::test]
async fn first_byte_arrives_long_before_the_upstream_finishes() {
    let sluice = Gateway::builder().start();
    let url = sluice.url("/v1/chat/completions");
    // Ten tokens, 200 ms apart: the upstream needs about 1.8 s.
    let body = chat(
        "sluice-demo",
        true,
        json!({"mock": {"delay_ms": 200, "tokens": 10}}),
    );
    let resp = post_collect(&url, &body, LIMIT).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let events = check_openai_wire(&resp.body);
    assert_eq!(content_of(&events, 0).split_whitespace().count(), 10);
    let first_content = resp.body.find("\"content\"").expect("a content delta");
    let first_at = resp.arrival_of(first_content).expect("arrival");
    let end_at = resp.arrivals.last().expect("arrivals").0;
    assert!(
        first_at < Duration::from_millis(1000),
        "the first token took {first_at:?}: something buffers"
    );
    assert!(
        end_at >= Duration::from_millis(1600),
        "the stream ended at {end_at:?}, sooner than the upstream could finish"
    );
    // Tokens arrive spread out, not in one burst at the end.
    let pieces = resp
        .arrivals
        .iter()
        .filter(|(t, _)| *t < end_at - Duration::from_millis(500))
        .count();
    assert!(pieces >= 5, "arrivals: {:?}", resp.arrivals);
}

#[tokio::test]
async fn unknown_fields_are_forwarded_unchanged_and_usage_is_always_asked_for() {
    let up = serve(sse_steps([up_stream(&["Hel", "lo"])])).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let extra = json!({
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "number"}}}}},
        "temperature": 0.25,
        "top_p": 0.5,
        "seed": 12345,
        "user": "user-7",
        "logit_bias": {"50256": -100},
        "stop": ["\n\n", "END"],
        "x_vendor": {"nested": [1, 2.5, null, true, {"k": "v é 🦀"}], "flag": false},
        "chat_template_kwargs": {"enable_thinking": false},
    });
    let body = chat("my-model", true, extra.clone());
    let resp = post_chat(&sluice, &body, LIMIT).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    let sent = recorded_body(&up);
    for (k, v) in extra.as_object().expect("object") {
        assert_eq!(&sent[k], v, "field {k} must arrive unchanged");
    }
    assert_eq!(sent["model"], "my-model");
    assert_eq!(sent["messages"], body["messages"]);
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "Sluice always asks for usage: {sent}"
    );
    let head = &up.requests()[0].0;
    assert!(
        head.starts_with("POST /v1/chat/completions "),
        "upstream request line: {head}"
    );

    // The client did not ask for usage: the upstream's usage chunk does not reach it.
    let events = check_openai_wire(&resp.body);
    assert_eq!(content_of(&events, 0), "Hello");
    for c in chunks(&events) {
        assert_eq!(c["choices"].as_array().map(Vec::len), Some(1), "{c}");
        assert!(c.get("usage").is_none(), "{c}");
    }
    assert!(events.last().expect("events").is_done());
}

#[tokio::test]
async fn client_stream_options_are_kept_and_usage_reaches_a_client_that_asked() {
    let up = serve(sse_steps([up_stream(&["a", "b", "c"])])).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let body = chat(
        "m",
        true,
        json!({"stream_options": {"include_usage": true, "x_opt": 1}}),
    );
    let resp = post_chat(&sluice, &body, LIMIT).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let sent = recorded_body(&up);
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true, "x_opt": 1})
    );
    let events = check_openai_wire(&resp.body);
    let n = events.len();
    let usage = events[n - 2].json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    );
}

#[tokio::test]
async fn non_streaming_request_is_forwarded_unchanged_and_answered_as_is() {
    let answer = json!({
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi é"},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        "x_extra": {"kept": true},
    });
    let up = serve(vec![sluice_tests::scripted::full_response(
        200,
        "application/json",
        "",
        answer.to_string().as_bytes(),
    )])
    .await;
    let sluice = Gateway::builder().upstream(&up).start();
    let body = chat("m", false, json!({"seed": 3, "x_vendor": {"a": [1]}}));
    let resp = post_chat(&sluice, &body, LIMIT).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json(), answer);
    let sent = recorded_body(&up);
    assert_eq!(sent["seed"], 3);
    assert_eq!(sent["x_vendor"], json!({"a": [1]}));
    assert_eq!(sent["stream"], false);
    assert!(sent.get("stream_options").is_none(), "{sent}");
}

/// What one choice of a stream added up to, gathered from its chunks.
#[derive(Debug, Default, PartialEq)]
struct Choice {
    content: String,
    refusal: String,
    /// (tool index, id, name, arguments)
    tools: Vec<(u64, String, String, String)>,
    logprobs: Vec<Value>,
    finish: Option<String>,
}

fn gather(chunks: &[Value]) -> Vec<Choice> {
    let mut out: Vec<Choice> = Vec::new();
    for c in chunks {
        for ch in c["choices"].as_array().into_iter().flatten() {
            let i = ch["index"].as_u64().expect("index") as usize;
            while out.len() <= i {
                out.push(Choice::default());
            }
            let o = &mut out[i];
            let d = &ch["delta"];
            if let Some(t) = d["content"].as_str() {
                o.content.push_str(t);
            }
            if let Some(t) = d["refusal"].as_str() {
                o.refusal.push_str(t);
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let ti = tc["index"].as_u64().expect("tool index");
                let pos = match o.tools.iter().position(|t| t.0 == ti) {
                    Some(p) => p,
                    None => {
                        o.tools
                            .push((ti, String::new(), String::new(), String::new()));
                        o.tools.len() - 1
                    }
                };
                let t = &mut o.tools[pos];
                if let Some(id) = tc["id"].as_str() {
                    t.1.push_str(id);
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    t.2.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    t.3.push_str(a);
                }
            }
            if !ch["logprobs"].is_null() {
                o.logprobs.push(ch["logprobs"].clone());
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                assert!(o.finish.is_none(), "two finish reasons for choice {i}");
                o.finish = Some(f.to_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn tool_calls_two_choices_logprobs_and_refusal_reach_the_client_intact() {
    let lp = |tok: &str, p: f64| {
        json!({"content": [{"token": tok, "logprob": p, "bytes": tok.as_bytes(),
                            "top_logprobs": [{"token": tok, "logprob": p, "bytes": null}]}]})
    };
    let upstream_chunks = vec![
        up_chunk(0, json!({"role": "assistant", "content": null}), None),
        up_chunk(1, json!({"role": "assistant", "content": ""}), None),
        // Choice 0 calls two tools, streamed in fragments.
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        // Choice 1 answers with text and logprobs, interleaved with choice 0.
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
               "choices": [{"index": 1, "delta": {"content": "Hé"}, "logprobs": lp("Hé", -0.25), "finish_reason": null}]}),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ),
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
               "choices": [{"index": 1, "delta": {"content": "llo"}, "logprobs": lp("llo", -1.5), "finish_reason": null}]}),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        ),
        up_chunk(
            0,
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                   "function": {"name": "get_time", "arguments": "{}"}}]}),
            None,
        ),
        // One chunk carrying both choices.
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
               "choices": [
                   {"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"},
                   {"index": 1, "delta": {"refusal": "I can't"}, "logprobs": null, "finish_reason": null}]}),
        up_chunk(1, json!({"refusal": " help with that."}), None),
        up_chunk(1, json!({}), Some("stop")),
        up_usage(10, 20),
    ];
    let mut body: String = upstream_chunks.iter().map(data).collect();
    body.push_str("data: [DONE]\n\n");
    let up = serve(sse_steps([body])).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let req = chat(
        "m",
        true,
        json!({"n": 2, "logprobs": true, "top_logprobs": 1, "tools": [{"type": "function",
               "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}),
    );
    let resp = post_chat(&sluice, &req, LIMIT).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let events = check_openai_wire(&resp.body);
    assert!(events.last().expect("events").is_done(), "{}", resp.body);
    let got = gather(&chunks(&events));
    let expected = gather(&upstream_chunks);
    assert_eq!(got, expected);
    // Spelled out, so the test says what matters.
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].tools,
        vec![
            (
                0,
                "call_a".into(),
                "get_weather".into(),
                "{\"city\":\"Paris\"}".into()
            ),
            (1, "call_b".into(), "get_time".into(), "{}".into()),
        ]
    );
    assert_eq!(got[0].finish.as_deref(), Some("tool_calls"));
    assert_eq!(got[1].content, "Héllo");
    assert_eq!(got[1].logprobs, vec![lp("Hé", -0.25), lp("llo", -1.5)]);
    assert_eq!(got[1].refusal, "I can't help with that.");
    assert_eq!(got[1].finish.as_deref(), Some("stop"));
    // Each choice's first chunk carries the role; tool call headers carry their type.
    for i in [0u64, 1] {
        let first = chunks(&events)
            .into_iter()
            .find(|c| c["choices"][0]["index"].as_u64() == Some(i))
            .expect("a chunk for the choice");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
    }
    let headers: Vec<Value> = chunks(&events)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .flatten()
        .filter(|t| t.get("id").is_some())
        .collect();
    assert!(
        headers.iter().all(|t| t["type"] == "function"),
        "{headers:?}"
    );
    // The upstream's response id and model are what the client sees.
    for c in chunks(&events) {
        assert_eq!(c["id"], "chatcmpl-up");
        assert_eq!(c["model"], "up-model");
    }
}
