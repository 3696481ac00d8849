//! The provider against a local HTTP server: the request that goes out (path, headers, body) as
//! the upstream receives it, and what comes back of its answer.

use std::collections::HashMap;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{
    AdapterError, AnthropicNative, ChatRequest, Provider, ProviderKind, Secret, StreamEvent,
    Timeouts,
};

/// One request as the upstream received it.
#[derive(Debug)]
struct Received {
    /// `POST /v1/messages HTTP/1.1`
    line: String,
    /// Lowercased names; values of repeated headers joined by `, `.
    headers: HashMap<String, String>,
    body: Value,
}

/// A server on port 0 that answers one request with `status`, `content_type` and `body`, and
/// hands back what it received.
async fn one_shot(
    status: u16,
    content_type: &'static str,
    body: String,
) -> (String, JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed before its request was whole");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap().to_owned();
        let mut headers: HashMap<String, String> = HashMap::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').unwrap();
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v.trim());
                })
                .or_insert_with(|| v.trim().to_owned());
        }
        let len: usize = headers["content-length"].parse().unwrap();
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let received = Received {
            line,
            headers,
            body: serde_json::from_slice(&buf[head_end..head_end + len]).unwrap(),
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(reply.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        received
    });
    (base, task)
}

fn provider(kind: ProviderKind, base: &str) -> Provider {
    let mut static_headers = http::HeaderMap::new();
    static_headers.insert(
        "anthropic-beta",
        http::HeaderValue::from_static("provider-flag-1,shared-flag"),
    );
    Provider::new(
        "claude",
        kind,
        base,
        Some(Secret::new("sk-ant-provider")),
        Timeouts::default(),
    )
    .unwrap()
    .with_headers(static_headers)
}

fn native_request(body: Value) -> ChatRequest {
    let mut req = ChatRequest::parse(
        br#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    req.request_id = Some("req-42".into());
    let Value::Object(body) = body else { panic!() };
    req.anthropic = Some(AnthropicNative {
        body,
        version: Some("2023-06-01".into()),
        beta: Some("shared-flag,token-counting-2024-11-01".into()),
    });
    req
}

fn client_body() -> Value {
    json!({
        "model": "claude-alias",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "u"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "elsewhere", "signature": ""},
                {"type": "text", "text": "hello"}
            ]},
            {"role": "user", "content": "again"}
        ]
    })
}

#[tokio::test]
async fn count_tokens_asks_anthropic_with_the_clients_body_and_headers() {
    let (base, server) = one_shot(200, "application/json", r#"{"input_tokens":2095}"#.into()).await;
    let p = provider(ProviderKind::Anthropic, &base);
    let n = p
        .count_tokens(&native_request(client_body()))
        .await
        .unwrap();
    assert_eq!(n, Some(2095));
    let got = server.await.unwrap();
    assert_eq!(got.line, "POST /v1/messages/count_tokens HTTP/1.1");
    assert_eq!(got.headers["x-api-key"], "sk-ant-provider");
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    // The client's flags and the provider's, each once.
    assert_eq!(
        got.headers["anthropic-beta"],
        "shared-flag,token-counting-2024-11-01,provider-flag-1"
    );
    assert_eq!(got.headers["x-request-id"], "req-42");
    assert!(!got.headers.contains_key("authorization"));
    let mut want = client_body();
    let o = want.as_object_mut().unwrap();
    o.remove("max_tokens");
    o.remove("metadata");
    o.insert("model".into(), json!("claude-sonnet-4-5"));
    want["messages"][1]["content"] = json!([{"type": "text", "text": "hello"}]);
    assert_eq!(got.body, want);
}

#[tokio::test]
async fn count_tokens_passes_an_upstream_error_on() {
    let (base, server) = one_shot(
        400,
        "application/json",
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: bad"}}"#
            .into(),
    )
    .await;
    let p = provider(ProviderKind::Anthropic, &base);
    let err = p
        .count_tokens(&native_request(client_body()))
        .await
        .unwrap_err();
    match err {
        AdapterError::Upstream {
            status,
            kind,
            message,
            ..
        } => {
            assert_eq!(status, Some(400));
            assert_eq!(kind, "invalid_request_error");
            assert_eq!(message, "messages: bad");
        }
        e => panic!("{e:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn count_tokens_is_none_without_an_anthropic_upstream_or_body() {
    // Port 9 (discard) is never asked: nothing is sent at all.
    let openai = provider(ProviderKind::OpenAi, "http://127.0.0.1:9/v1");
    assert_eq!(
        openai
            .count_tokens(&native_request(client_body()))
            .await
            .unwrap(),
        None
    );
    let anthropic = provider(ProviderKind::Anthropic, "http://127.0.0.1:9");
    let mut chat = native_request(client_body());
    chat.anthropic = None;
    assert_eq!(anthropic.count_tokens(&chat).await.unwrap(), None);
}

#[tokio::test]
async fn a_native_stream_goes_out_as_sent_and_its_thinking_signature_comes_back() {
    let sse = [
        r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-sonnet-4-5","usage":{"input_tokens":12,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBsig=="}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi."}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
        r#"{"type":"message_stop"}"#,
    ]
    .iter()
    .map(|d| {
        let name = serde_json::from_str::<Value>(d).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_owned();
        format!("event: {name}\ndata: {d}\n\n")
    })
    .collect::<String>();
    let (base, server) = one_shot(200, "text/event-stream", sse).await;
    let p = provider(ProviderKind::Anthropic, &base);
    let mut events = p.stream(&native_request(client_body())).await.unwrap();
    let mut deltas = Vec::new();
    while let Some(e) = events.next().await {
        if let StreamEvent::Delta(d) = e.unwrap() {
            deltas.push((d.reasoning, d.reasoning_signature, d.content));
        }
    }
    assert_eq!(
        deltas,
        vec![
            (Some("Hmm.".into()), None, None),
            (None, Some("EqQBsig==".into()), None),
            (None, None, Some("Hi.".into())),
        ]
    );
    let got = server.await.unwrap();
    assert_eq!(got.line, "POST /v1/messages HTTP/1.1");
    assert_eq!(got.headers["accept"], "text/event-stream");
    let mut want = client_body();
    want["model"] = json!("claude-sonnet-4-5");
    want["stream"] = json!(true);
    want["messages"][1]["content"] = json!([{"type": "text", "text": "hello"}]);
    assert_eq!(got.body, want);
}

/// The streaming endpoint is parsed once, when the provider is made: the URL each request is
/// built with must be that same URL, or every request parses it again.
#[test]
fn requests_go_to_the_endpoint_parsed_at_start() {
    let req = ChatRequest::parse(
        br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    for (kind, base) in [
        (ProviderKind::OpenAi, "http://127.0.0.1:9/v1/"),
        (ProviderKind::Anthropic, "http://127.0.0.1:9/v1"),
        (ProviderKind::Anthropic, "http://127.0.0.1:9"),
    ] {
        let p = provider(kind, base);
        let up = p.build(&req, true).unwrap();
        assert_eq!(
            p.endpoint.as_ref().map(reqwest::Url::as_str),
            Some(up.url.as_str()),
            "{kind:?} at {base}"
        );
    }
}
