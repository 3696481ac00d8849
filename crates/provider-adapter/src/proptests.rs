//! Property tests of the whole upstream path as a library (no HTTP): bytes, split into reads
//! anywhere, through the SSE parser and each upstream kind's mapper to normalised events; and
//! the client's request through parsing and translation.
//!
//! Any bytes must give a finite stream that never panics and ends at its first error; a
//! well-formed stream must give exactly its text, however it is split (inside multi-byte
//! characters and between CR and LF included).

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::driver::drive;
use crate::provider::StreamMapper;
use crate::{anthropic, openai, AdapterError, ChatRequest, Provider, ProviderKind, StreamEvent};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
});

fn mapper(kind: ProviderKind) -> Box<dyn StreamMapper> {
    match kind {
        ProviderKind::OpenAi | ProviderKind::Azure => Box::new(openai::ChunkMapper::default()),
        ProviderKind::Anthropic => Box::new(anthropic::StreamState::default()),
    }
}

/// `body` cut at `cuts` (any byte offsets), through the parser and `kind`'s mapper.
fn run(kind: ProviderKind, body: &[u8], cuts: &[usize]) -> Vec<Result<StreamEvent, AdapterError>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts {
        pieces.push(Ok(Bytes::copy_from_slice(&body[start..c])));
        start = c;
    }
    pieces.push(Ok(Bytes::copy_from_slice(&body[start..])));
    let provider =
        Provider::new("p", kind, "http://127.0.0.1:1", None, Default::default()).expect("provider");
    // The idle timer is made with the stream, so inside the runtime.
    RT.block_on(async move {
        drive(
            futures::stream::iter(pieces),
            Duration::from_secs(60),
            mapper(kind),
            provider,
        )
        .collect()
        .await
    })
}

/// Checks the stream contract: at most one error, and it is the last item.
fn assert_ends_at_first_error(items: &[Result<StreamEvent, AdapterError>]) {
    if let Some(at) = items.iter().position(Result::is_err) {
        assert_eq!(at, items.len() - 1, "items after an error: {items:?}");
    }
}

fn text_of(items: &[Result<StreamEvent, AdapterError>]) -> String {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamEvent::Delta(d)) => d.content.clone(),
            _ => None,
        })
        .collect()
}

/// Pieces of hostile SSE: line ends of every kind, field names, JSON openings, halves of
/// multi-byte characters, a BOM, markers.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..8),
        prop::sample::select(vec![
            &b"\n"[..],
            b"\r",
            b"\r\n",
            b"\n\n",
            b"data: ",
            b"data:",
            b"event: ",
            b"error: ",
            b": comment",
            b"id: 7",
            b"retry: x",
            b"[DONE]",
            b"{",
            b"}",
            b"\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]",
            b"{\"type\":\"message_start\",\"message\":{}}",
            b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}",
            b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"y\"}}",
            b"{\"type\":\"message_stop\"}",
            b"{\"error\":{\"message\":\"m\"}}",
            b"{\"choices\":[{\"index\":null,\"delta\":{\"content\":[{\"type\":\"text\"}]}}]}",
            b"\xc3",
            b"\xa9",
            b"\xf0\x9f\xa6",
            b"\x80",
            b"\xef\xbb\xbf",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

/// The text pieces of a generated answer: any characters, multi-byte ones included.
fn pieces() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("\\PC{0,5}|[é€🦀\"\\\\\n\t]{1,3}", 1..12)
}

fn eol() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\r\n", "\r"])
}

/// A complete OpenAI-style stream answering `pieces`, with `eol` line ends and a comment
/// line between events.
fn openai_body(pieces: &[String], eol: &str) -> Vec<u8> {
    let mut events = vec![
        json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
    ];
    events.extend(
        pieces
            .iter()
            .map(|p| json!({"choices":[{"index":0,"delta":{"content":p}}]})),
    );
    events.push(json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}));
    events.push(json!({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}));
    let mut s = String::new();
    for e in events {
        s.push_str(&format!("data: {e}{eol}{eol}: ping{eol}"));
    }
    s.push_str(&format!("data: [DONE]{eol}{eol}"));
    s.into_bytes()
}

/// A complete Anthropic stream answering `pieces`.
fn anthropic_body(pieces: &[String], eol: &str) -> Vec<u8> {
    let mut events = vec![
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"msg","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
    ];
    events.extend(pieces.iter().map(|p| {
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}}),
        )
    }));
    events.push((
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}),
    ));
    events.push(("message_stop", json!({"type":"message_stop"})));
    let mut s = String::new();
    for (name, e) in events {
        s.push_str(&format!("event: {name}{eol}data: {e}{eol}{eol}"));
    }
    s.into_bytes()
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,6}".prop_map(Value::String),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "model",
            "image_url"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop::sample::select(vec![
                    "model",
                    "messages",
                    "role",
                    "content",
                    "stream",
                    "stream_options",
                    "include_usage",
                    "n",
                    "max_tokens",
                    "tools",
                    "tool_calls",
                    "type",
                    "text",
                    "image_url",
                    "url",
                    "stop",
                    "tool_choice",
                    "function",
                    "x",
                ])
                .prop_map(str::to_owned),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Checks one parsed request or error: errors are invalid-request errors naming a field; a
/// request can be translated for both upstream kinds without panicking.
fn check_request(parsed: Result<ChatRequest, AdapterError>) {
    match parsed {
        Err(AdapterError::InvalidRequest { message, param }) => {
            assert!(!message.is_empty() && !param.is_empty());
        }
        Err(other) => panic!("not an invalid-request error: {other:?}"),
        Ok(req) => {
            let _ = req.max_tokens();
            let _ = openai::build_request("http://h/v1", Some("k"), &req, req.stream);
            let _ = anthropic::build_request("http://h", Some("k"), &req, req.stream);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_any_split_never_panic_and_end_at_the_first_error(
        frags in proptest::collection::vec(fragment(), 0..48),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let body = frags.concat();
        for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
            let items = run(kind, &body, &cuts);
            assert_ends_at_first_error(&items);
        }
    }

    #[test]
    fn a_well_formed_stream_gives_its_text_however_it_is_split(
        pieces in pieces(),
        eol in eol(),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
        bytewise in any::<bool>(),
    ) {
        let want = pieces.concat();
        for (kind, body) in [
            (ProviderKind::OpenAi, openai_body(&pieces, eol)),
            (ProviderKind::Anthropic, anthropic_body(&pieces, eol)),
        ] {
            // Either random cuts or one byte per read (every CRLF and every character split).
            let cuts: Vec<usize> = if bytewise { (1..body.len()).collect() } else { cuts.clone() };
            let items = run(kind, &body, &cuts);
            prop_assert!(items.iter().all(Result::is_ok), "{kind:?}: {items:?}");
            prop_assert_eq!(text_of(&items), want.clone(), "{:?}", kind);
            prop_assert!(
                items.iter().any(|i| matches!(i, Ok(StreamEvent::Finish { choice: 0, .. }))),
                "{:?}", kind
            );
        }
    }

    #[test]
    fn request_parsing_of_any_bytes_is_a_request_or_an_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        check_request(ChatRequest::parse(&bytes));
    }

    #[test]
    fn request_parsing_of_any_json_is_a_request_or_an_error(v in json_value()) {
        check_request(ChatRequest::parse(v.to_string().as_bytes()));
    }

    #[test]
    fn request_parsing_of_near_valid_bodies_is_a_request_or_an_error(
        model in json_value(),
        messages in proptest::collection::vec(json_value(), 0..4),
        rest in json_value(),
    ) {
        // Shaped like a request, so validation and translation get past the first checks.
        let mut body = json!({"model": model, "messages": messages});
        if let (Value::Object(b), Value::Object(r)) = (&mut body, rest) {
            for (k, v) in r {
                b.entry(k).or_insert(v);
            }
        }
        check_request(ChatRequest::parse(body.to_string().as_bytes()));
        let mut valid = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let Value::Object(b) = &mut valid {
            b.insert("messages".into(), Value::Array(vec![json!({"role": "user", "content": body})]));
        }
        check_request(ChatRequest::parse(valid.to_string().as_bytes()));
    }
}
