//! HTTP handlers, one module per group of endpoints.

pub mod chat;
pub mod models;
pub mod ops;
pub mod streams;
pub mod usage;
pub mod web;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use provider_adapter::{ChatRequest, Provider};
use relay::SseBody;

use crate::access::{Admission, Caller};
use crate::error::GatewayError;
use crate::state::AppState;

/// The request body, or 413/400 in OpenAI's shape.
pub fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, GatewayError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::PayloadTooLarge(state.settings.max_body_bytes)
        } else {
            GatewayError::bad_request("body", format!("cannot read the request body: {rej}"))
        }
    })
}

/// Parses and admits a chat request: validation, model routing, team permission and limits.
pub fn admit<'a>(
    state: &'a AppState,
    caller: &Caller,
    bytes: &[u8],
    request_id: Option<&tower_http::request_id::RequestId>,
) -> Result<(ChatRequest, &'a Provider, Admission), GatewayError> {
    if state.draining.is_cancelled() {
        return Err(GatewayError::Draining);
    }
    let mut req = ChatRequest::parse(bytes).map_err(GatewayError::from)?;
    // Sent upstream, so that the upstream's logs and ours meet on one ID.
    req.request_id = request_id
        .and_then(|r| r.header_value().to_str().ok())
        .map(str::to_owned);
    let provider = state
        .router
        .route(&req.model)
        .ok_or_else(|| GatewayError::ModelNotFound(req.model.clone()))?;
    let admission = state.access.admit(caller, &req)?;
    Ok((req, provider, admission))
}

/// An SSE response over `body`: no compression, no proxy buffering, flushed per event.
pub fn sse_response(body: SseBody) -> Response {
    let body = axum::body::Body::from_stream(body);
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
