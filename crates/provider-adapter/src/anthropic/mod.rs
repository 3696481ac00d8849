//! Anthropic Messages API upstreams.
//!
//! The client's OpenAI-format chat request is translated into a Messages request: system
//! prompts hoisted, tool calls and results as content blocks, OpenAI-only knobs dropped. A
//! client's own Messages request (the gateway's `/v1/messages`) is sent as it came instead. Each
//! stream event's data is parsed once into structs that borrow from it and mapped to normalised
//! events; a non-streaming message is rewritten as an OpenAI `chat.completion`.

use serde_json::Value;

use crate::provider::UpstreamRequest;
use crate::{AdapterError, ChatRequest};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";

fn invalid(param: impl Into<String>, message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest {
        message: message.into(),
        param: param.into(),
    }
}

/// `{base}/v1/{path}`: a base configured as `.../v1` (as OpenAI bases are) must not become
/// `/v1/v1/...`.
pub(crate) fn url(base_url: &str, path: &str) -> String {
    let base = if base_url.is_empty() {
        DEFAULT_BASE_URL
    } else {
        base_url
    };
    match base.strip_suffix("/v1") {
        Some(root) => format!("{root}/v1/{path}"),
        None => format!("{base}/v1/{path}"),
    }
}

/// The headers of every Messages API call: the client's `anthropic-version` and
/// `anthropic-beta` when it sent its own Messages request (else the adapter's version), and the
/// provider's key (never the client's: that one is a gateway key).
fn headers(api_key: Option<&str>, req: &ChatRequest) -> Vec<(&'static str, String)> {
    let native = req.anthropic.as_ref();
    let version = native
        .and_then(|n| n.version.as_deref())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(API_VERSION);
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("anthropic-version", version.to_owned()),
    ];
    if let Some(beta) = native
        .and_then(|n| n.beta.as_deref())
        .filter(|b| !b.trim().is_empty())
    {
        headers.push(("anthropic-beta", beta.to_owned()));
    }
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        headers.push(("x-api-key", key.to_owned()));
    }
    headers
}

/// The upstream request: `POST {base}/v1/messages` with the client's own Messages body (see
/// [`native`]) or, for a chat-completions request, its translation.
pub(crate) fn build_request(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> Result<UpstreamRequest, AdapterError> {
    let body = match &req.anthropic {
        Some(n) => native::message_body(n, &req.model, stream),
        None => request::translate_request(req, stream)?,
    };
    let mut headers = headers(api_key, req);
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    Ok(UpstreamRequest {
        url: url(base_url, "messages"),
        headers,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    })
}

/// `POST {base}/v1/messages/count_tokens` for a client's own Messages request; `None` for a
/// chat-completions request (Anthropic counts only its own format; the gateway estimates).
pub(crate) fn build_count_tokens(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
) -> Option<UpstreamRequest> {
    let native = req.anthropic.as_ref()?;
    let body = native::count_tokens_body(native, &req.model);
    Some(UpstreamRequest {
        url: url(base_url, "messages/count_tokens"),
        headers: headers(api_key, req),
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    })
}

/// `input_tokens` of a count_tokens answer.
pub(crate) fn counted_tokens(answer: &Value) -> Result<u64, AdapterError> {
    answer
        .get("input_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            AdapterError::Protocol(
                "the upstream's token count has no numeric 'input_tokens'".into(),
            )
        })
}

mod native;
mod request;
mod stream;

pub(crate) use stream::{completion, StreamState};

#[cfg(test)]
mod native_tests;
#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod stream_tests;
