//! Anthropic Messages: `POST /v1/messages` (streaming or not) and `POST
//! /v1/messages/count_tokens`, for every provider kind.
//!
//! The request is translated into a chat request ([`request::translate`]) for OpenAI-compatible
//! upstreams, and carries the client's own body and `anthropic-version` / `anthropic-beta`
//! headers for an Anthropic one. Every answer runs as a relay stream: a streaming one is read in
//! the Anthropic format (resumable at `/v1/streams/{id}/events?format=anthropic`), a
//! non-streaming one is the message folded from the whole log. Errors take Anthropic's shape.

pub mod request;

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use provider_adapter::{AnthropicNative, ChatRequest};
use relay::encode::anthropic::{error_json, error_type};
use relay::{Event, Format};
use serde_json::{json, Map, Value};
use tower_http::request_id::RequestId;

use crate::access::{estimate, Caller};
use crate::error::GatewayError;
use crate::metrics::RequestLabels;
use crate::net::socket::FlushHint;
use crate::net::Arrival;
use crate::state::AppState;

use super::dialect;

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    arrival: Option<Extension<Arrival>>,
    hint: Option<Extension<FlushHint>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrival = arrival.map_or_else(Instant::now, |Extension(a)| a.0);
    let mut labels = super::request_labels(&caller);
    let request_id = super::request_id_text(request_id);
    let hint = hint.map(|Extension(h)| h);
    let resp = match parse(&state, &headers, body, request_id) {
        Ok(req) => answer(&state, &caller, arrival, hint, req, &mut labels).await,
        Err(e) => Err(e),
    };
    let resp = resp.unwrap_or_else(GatewayError::into_anthropic_response);
    super::labelled(Ok(resp), labels)
}

/// The chat request a Messages request becomes, carrying the client's own body and headers
/// for an Anthropic upstream.
fn parse(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    request_id: Option<String>,
) -> Result<ChatRequest, GatewayError> {
    let client = super::json_object(state, body)?;
    let mut req = chat_request(&client)?;
    req.request_id = request_id;
    req.anthropic = Some(AnthropicNative {
        body: client,
        version: header(headers, "anthropic-version"),
        beta: header(headers, "anthropic-beta"),
    });
    Ok(req)
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    arrival: Instant,
    hint: Option<FlushHint>,
    req: ChatRequest,
    labels: &mut RequestLabels,
) -> Result<Response, GatewayError> {
    // The client's own choice: the translation always streams (every answer is a relay
    // stream).
    let streaming = req
        .anthropic
        .as_ref()
        .and_then(|a| a.body.get("stream"))
        .and_then(Value::as_bool)
        == Some(true);
    let begun = dialect::begin(state, caller, arrival, req, labels).await?;
    if streaming {
        return Ok(begun.stream(state, Format::Anthropic, hint));
    }
    let (handle, provider, headers) = begun.run_to_end(state).await;
    let mut resp = match handle.outcome() {
        // The answer broke after the start: an error status (Claude Code retries a 5xx).
        Some(Event::Failed(f)) => {
            let kind = error_type(&f);
            (failure_status(kind), Json(error_json(kind, &f.message))).into_response()
        }
        _ => Json(handle.body(Format::Anthropic).unwrap_or(Value::Null)).into_response(),
    };
    dialect::finish_headers(&mut resp, &handle, &provider, headers);
    Ok(resp)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`. The model's first target answers
/// when it is an Anthropic provider (its own count of the client's own request); otherwise, or
/// when that fails, Sluice's estimate of the prompt as it would go upstream (see
/// `access::estimate`). The model must exist and the team may have to be allowed it, as for a
/// message.
pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = super::request_id_text(request_id);
    match count(&state, &caller, &headers, body, request_id).await {
        Ok(n) => Json(json!({ "input_tokens": n })).into_response(),
        Err(e) => e.into_anthropic_response(),
    }
}

async fn count(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    request_id: Option<String>,
) -> Result<u64, GatewayError> {
    let req = parse(state, headers, body, request_id)?;
    let plan = super::plan(state, &req.model)?;
    if !state.access.may_use(caller, &req.model) {
        return Err(GatewayError::Forbidden(format!(
            "your team may not use the model '{}'",
            req.model
        )));
    }
    let target = &plan.targets[0];
    let mut upstream = req.clone();
    if let Some(m) = target.model {
        upstream.model = m.to_owned();
    }
    match target.provider.count_tokens(&upstream).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Ok(estimate::prompt_tokens(&req)),
        Err(e) => {
            // A count is advice: the estimate serves when the provider cannot.
            tracing::warn!(provider = %target.provider.name, error = %e, "count_tokens upstream failed; answering the estimate");
            Ok(estimate::prompt_tokens(&req))
        }
    }
}

/// The chat request a Messages body translates into.
fn chat_request(client: &Map<String, Value>) -> Result<ChatRequest, GatewayError> {
    let translated = request::translate(client)?;
    ChatRequest::from_map(translated).map_err(GatewayError::from)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The status of a non-streaming answer whose stream failed, by Anthropic's error type.
fn failure_status(kind: &str) -> StatusCode {
    match kind {
        "rate_limit_error" => StatusCode::TOO_MANY_REQUESTS,
        // Anthropic's own "overloaded".
        "overloaded_error" => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        "timeout_error" => StatusCode::GATEWAY_TIMEOUT,
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}
