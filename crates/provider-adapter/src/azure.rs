//! Azure OpenAI deployments: the OpenAI wire format at another URL, with another key header.
//!
//! `POST {base}/openai/deployments/{deployment}/chat/completions?api-version={version}`, the
//! key in `api-key` (never as a bearer token). The client's `model` names the deployment; the
//! body is forwarded as for OpenAI, `model` included (Azure ignores it, the deployment decides).
//! Answers are OpenAI chunks, so the OpenAI mapper reads them: Azure's first chunk (empty
//! `choices`, only `prompt_filter_results`) yields no event, and a filtered answer ends with
//! `finish_reason: "content_filter"`, which passes through as such.

use crate::openai;
use crate::provider::UpstreamRequest;
use crate::ChatRequest;

/// The upstream request for `req` on the deployment named by its model.
pub(crate) fn build_request(
    base_url: &str,
    api_version: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> UpstreamRequest {
    let url = format!(
        "{base_url}/openai/deployments/{}/chat/completions?api-version={}",
        escape(&req.model),
        escape(api_version)
    );
    let mut up = openai::request_at(url, req, stream);
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        up.headers.push(("api-key", key.to_owned()));
    }
    up
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that a deployment name
/// is one path segment (a `/`, `?` or `#` in it cannot change the URL's shape).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::provider::StreamMapper;
    use crate::{FinishReason, StreamEvent};

    fn req(model: &str) -> ChatRequest {
        ChatRequest::parse(
            format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn url_and_key_header() {
        let up = build_request(
            "https://r.openai.azure.com",
            "2024-10-21",
            Some("k1"),
            &req("gpt-4o-prod"),
            true,
        );
        assert_eq!(
            up.url,
            "https://r.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert!(up.headers.contains(&("api-key", "k1".to_owned())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn deployment_is_one_path_segment() {
        let up = build_request("http://h", "v", None, &req("a/b?c#d é"), false);
        assert_eq!(
            up.url,
            "http://h/openai/deployments/a%2Fb%3Fc%23d%20%C3%A9/chat/completions?api-version=v"
        );
        assert!(!up.headers.iter().any(|(k, _)| *k == "api-key"));
    }

    /// Azure's stream as it comes: the prompt-filter chunk first (no choices), choices with
    /// `content_filter_results`, a filtered end.
    #[test]
    fn prompt_filter_chunk_and_content_filter_finish() {
        let mut m = openai::ChunkMapper::default();
        let mut out = VecDeque::new();
        let chunks = [
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
            r#"{"choices":[{"content_filter_results":{},"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0}],"created":1,"id":"chatcmpl-1","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk"}"#,
            r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1,"id":"chatcmpl-1","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk"}"#,
            r#"{"choices":[{"content_filter_results":{"violence":{"filtered":true,"severity":"high"}},"delta":{},"finish_reason":"content_filter","index":0}],"created":1,"id":"chatcmpl-1","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk"}"#,
        ];
        for c in chunks {
            assert!(!m.on_event("message", c, &mut out).unwrap());
        }
        assert!(m.on_event("message", "[DONE]", &mut out).unwrap());
        m.on_end(&mut out).unwrap();
        let events: Vec<_> = out.into_iter().collect();
        assert!(
            matches!(&events[0], StreamEvent::Meta(meta) if meta.id.as_deref() == Some("chatcmpl-1"))
        );
        assert!(matches!(&events[1], StreamEvent::Delta(d) if d.content.as_deref() == Some("Hi")));
        assert_eq!(
            events[2],
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ContentFilter
            }
        );
        assert_eq!(events.len(), 3);
    }
}
