//! Anthropic Messages API upstreams.
//!
//! The client's OpenAI-format chat request is translated into a Messages request: system
//! prompts hoisted, tool calls and results as content blocks, OpenAI-only knobs dropped. Each
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

/// The upstream request: `POST {base}/v1/messages` with the translated body.
pub(crate) fn build_request(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> Result<UpstreamRequest, AdapterError> {
    let body = request::translate_request(req, stream)?;
    let base = if base_url.is_empty() {
        DEFAULT_BASE_URL
    } else {
        base_url
    };
    // A base configured as `.../v1` (as OpenAI bases are) must not become `/v1/v1/messages`.
    let url = if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    };
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("anthropic-version", API_VERSION.to_owned()),
    ];
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        headers.push(("x-api-key", key.to_owned()));
    }
    Ok(UpstreamRequest {
        url,
        headers,
        body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
    })
}

mod request;
mod stream;

pub(crate) use stream::{completion, StreamState};

#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod stream_tests;
