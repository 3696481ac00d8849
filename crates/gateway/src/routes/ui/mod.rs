//! The AI SDK's UI message stream, as `useChat`'s `DefaultChatTransport` calls it:
//!
//! - `POST /v1/ui/chat`: the transport's body ([`request`]) to a chat request, answered as the
//!   UI message stream (the relay's `UiMessage` format) with `x-vercel-ai-ui-message-stream:
//!   v1`; the chat's id now maps to the stream (`crate::streams::Chats`).
//! - `GET /v1/ui/chat/{chatId}/stream`: what `useChat({ resume: true })` asks after a reload:
//!   204 when the chat has no stream in progress, else the stream from its `start` part with
//!   its live tail (the transport treats a resume as a replay).
//! - `DELETE /v1/ui/chat/{chatId}/stream`: stops the chat's stream; its readers get `abort`.
//!
//! A client that goes away does not stop the generation: the grace period applies, as to any
//! stream, so a reload can resume it.

pub mod request;

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use provider_adapter::ChatRequest;
use relay::{Format, RelayError};
use serde_json::{json, Value};
use tower_http::request_id::RequestId;

use crate::access::Caller;
use crate::error::GatewayError;
use crate::metrics::RequestLabels;
use crate::net::socket::FlushHint;
use crate::net::Arrival;
use crate::state::AppState;

/// The header that tells the AI SDK the body is its UI message stream.
const UI_STREAM_HEADER: &str = "x-vercel-ai-ui-message-stream";

/// The model when the request names none: the one the chat page picks by default
/// (`sluice-demo` when it is served), else the first model the configuration names that the
/// caller may use.
fn default_model(state: &AppState, caller: &Caller) -> Option<String> {
    let models: Vec<String> = state
        .router
        .listed_models()
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| state.access.may_use(caller, m))
        .collect();
    models
        .iter()
        .find(|m| *m == "sluice-demo")
        .or_else(|| models.first())
        .cloned()
}

fn invalid(i: request::Invalid) -> GatewayError {
    GatewayError::bad_request(i.param, i.message)
}

fn no_stream() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The UI stream's own headers on an SSE response (which has `cache-control: no-cache` and
/// `x-accel-buffering: no` already).
fn ui_headers(resp: &mut Response, stream_id: &str) {
    let h = resp.headers_mut();
    h.insert(UI_STREAM_HEADER, HeaderValue::from_static("v1"));
    if let Ok(v) = HeaderValue::from_str(stream_id) {
        h.insert("x-sluice-stream-id", v);
    }
}

/// `POST /v1/ui/chat`.
pub async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    arrival: Option<Extension<Arrival>>,
    hint: Option<Extension<FlushHint>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrival = arrival.map_or_else(Instant::now, |Extension(a)| a.0);
    let mut labels = super::request_labels(&caller);
    let request_id = super::request_id_text(request_id);
    let resp = start(
        &state,
        &caller,
        arrival,
        hint.map(|Extension(h)| h),
        body,
        &mut labels,
        request_id,
    )
    .await;
    super::labelled(resp, labels)
}

async fn start(
    state: &AppState,
    caller: &Caller,
    arrival: Instant,
    hint: Option<FlushHint>,
    body: Result<Bytes, BytesRejection>,
    labels: &mut RequestLabels,
    request_id: Option<String>,
) -> Result<Response, GatewayError> {
    let bytes = super::body(state, body)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::bad_request("body", format!("request body is not valid JSON: {e}"))
    })?;
    let default = default_model(state, caller);
    let t = request::translate(&value, default.as_deref()).map_err(invalid)?;
    let mut req = ChatRequest::from_map(t.body).map_err(GatewayError::from)?;
    req.request_id = request_id;
    // The UI stream exists to be resumed: it keeps its grace period whatever `on_disconnect`
    // says.
    let begun = super::dialect::begin(state, caller, arrival, req, labels)
        .await?
        .resumable();
    let handle = begun.handle();
    // Dropping `begun` on an error ends the stream as cancelled.
    state
        .streams
        .chats
        .record(caller.team_name(), &t.chat_id, &handle)
        .await?;
    let mut resp = match t.continues {
        None => begun.stream(state, Format::UiMessage, hint),
        Some(message_id) => continuing(begun, state, hint, message_id),
    };
    ui_headers(&mut resp, handle.id().as_str());
    Ok(resp)
}

/// The answer to a continuation ([`request::Translated::continues`]): the stream, its `start`
/// part naming the message it continues, so that the SDK appends to that message instead of
/// showing a second one with the same parts. Only this response says so: a resume (a replay,
/// which the SDK starts afresh) names the stream's own message, appended after the one it
/// continued, with no part shown twice.
fn continuing(
    begun: super::dialect::Begun,
    state: &AppState,
    hint: Option<FlushHint>,
    message_id: String,
) -> Response {
    let provider = begun.started.provider().to_owned();
    let handle = begun.handle();
    let reader = handle.reader(Format::UiMessage);
    let driver = begun.started.into_driver(state, hint);
    let mut pending = true;
    let body = reader
        .into_sse_driving(state.settings.keepalive, driver)
        .map(move |chunk| {
            let Ok(bytes) = chunk;
            // The first event is `start` (a keep-alive comment may come before it).
            if !pending || !bytes.starts_with(b"data: ") {
                return Ok::<_, std::convert::Infallible>(bytes);
            }
            pending = false;
            Ok(rename_start(&bytes, &message_id).unwrap_or(bytes))
        });
    let mut resp = super::sse_body(axum::body::Body::from_stream(body));
    super::dialect::finish_headers(&mut resp, &handle, &provider, begun.headers);
    resp
}

/// `bytes` with its leading `start` part naming `message_id` instead; `None` if it does not
/// begin with one.
fn rename_start(bytes: &[u8], message_id: &str) -> Option<Bytes> {
    const START: &[u8] = b"data: {\"type\":\"start\",\"messageId\":";
    if !bytes.starts_with(START) {
        return None;
    }
    let end = bytes.windows(2).position(|w| w == b"\n\n")?;
    let id = serde_json::to_string(message_id).ok()?;
    let mut out = Vec::with_capacity(bytes.len() + id.len());
    out.extend_from_slice(START);
    out.extend_from_slice(id.as_bytes());
    out.push(b'}');
    out.extend_from_slice(&bytes[end..]);
    Some(Bytes::from(out))
}

/// `GET /v1/ui/chat/{chatId}/stream`.
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(chat_id): Path<String>,
) -> Result<Response, GatewayError> {
    request::check_chat_id(&chat_id).map_err(invalid)?;
    let team = caller.team_name();
    let Some(id) = state.streams.chats.find(team, &chat_id).await? else {
        return Ok(no_stream());
    };
    let handle = match state.streams.open(id.as_str(), 0, Format::UiMessage).await {
        Ok(h) => h,
        Err(GatewayError::NotFound(_)) => return Ok(no_stream()),
        Err(e) => return Err(e),
    };
    if handle.owner() != team || handle.is_finished() {
        return Ok(no_stream());
    }
    match handle.subscribe_from(Format::UiMessage.first_id(), Format::UiMessage) {
        Ok(reader) => {
            state.metrics.resumed();
            let mut resp = super::sse_response(reader.into_sse(state.settings.keepalive));
            ui_headers(&mut resp, id.as_str());
            Ok(resp)
        }
        Err(RelayError::TooManyReaders(n)) => Err(GatewayError::RateLimited {
            kind: "concurrency",
            retry_after_secs: 1,
            message: format!(
                "the chat's stream already has {n} readers, the most one stream may have; close one and retry"
            ),
        }),
        Err(_) => Ok(no_stream()),
    }
}

/// `DELETE /v1/ui/chat/{chatId}/stream`.
pub async fn stop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(chat_id): Path<String>,
) -> Result<Response, GatewayError> {
    request::check_chat_id(&chat_id).map_err(invalid)?;
    let team = caller.team_name();
    let Some(id) = state.streams.chats.find(team, &chat_id).await? else {
        return Err(GatewayError::NotFound(format!(
            "chat '{chat_id}' has no stream in progress"
        )));
    };
    let c = state.streams.cancel(id.as_str(), team).await?;
    Ok(Json(json!({
        "id": chat_id,
        "object": "chat.stream.deleted",
        "stream_id": c.id.as_str(),
        "cancelled": c.was_live,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_names_the_message_it_continues() {
        let first = b"data: {\"type\":\"start\",\"messageId\":\"msg-AbC\"}\n\ndata: {\"type\":\"start-step\"}\n\n";
        assert_eq!(
            rename_start(first, "a\"1").as_deref(),
            Some(&b"data: {\"type\":\"start\",\"messageId\":\"a\\\"1\"}\n\ndata: {\"type\":\"start-step\"}\n\n"[..])
        );
        assert_eq!(rename_start(b": keep-alive\n\n", "a1"), None);
    }
}
