//! The OpenAI Responses API: `POST /v1/responses` (streaming or not), `GET
//! /v1/responses/{id}` (the object, or with `?stream=true[&starting_after=N]` its events
//! replayed from after N and then live), `POST /v1/responses/{id}/cancel`. Every response
//! runs as a relay stream (see `super::dialect`): its id is `resp_<stream ID>`, and the
//! stream's encoder (`relay`'s Responses dialect) writes the events and the object. The
//! request translation is [`request`]; what leads ids back to streams, or to the objects kept
//! after them, is [`retained`].

pub mod request;
pub mod retained;

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use provider_adapter::{AdapterError, ChatRequest};
use relay::{Event, Format, Handle, RelayError};
use serde::Deserialize;
use serde_json::Value;
use tower_http::request_id::RequestId;

use crate::access::Caller;
use crate::error::GatewayError;
use crate::metrics::RequestLabels;
use crate::net::socket::FlushHint;
use crate::net::Arrival;
use crate::state::AppState;

use super::dialect;

/// Names, comma-separated, what of the request the upstream did not get (see [`request`]).
pub const OMITTED_HEADER: &str = "x-sluice-omitted";

/// How long `POST /v1/responses/{id}/cancel` waits for the stream to record its end.
const CANCEL_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// `POST /v1/responses`.
pub async fn create(
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
    let hint = hint.map(|Extension(h)| h);
    let resp = answer(
        &state,
        &caller,
        arrival,
        hint,
        body,
        &mut labels,
        request_id,
    )
    .await;
    super::labelled(resp, labels)
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    arrival: Instant,
    hint: Option<FlushHint>,
    body: Result<Bytes, BytesRejection>,
    labels: &mut RequestLabels,
    request_id: Option<String>,
) -> Result<Response, GatewayError> {
    let req = super::json_object(state, body)?;
    let ids = request::references(&req)?;
    let resolved = retained::resolve(state, caller, &ids).await;
    let t = request::translate(&req, &resolved)?;
    let mut chat = ChatRequest::from_map(t.body).map_err(GatewayError::from)?;
    chat.request_id = request_id;
    let mut begun = dialect::begin(state, caller, arrival, chat, labels).await?;
    begun.started = begun.started.rename_tools(t.tool_names);
    // `store` defaults to true, as OpenAI has it.
    if req.get("store") != Some(&Value::Bool(false)) {
        retained::keep_at_end(state, begun.handle());
    }
    let mut resp = if t.stream {
        begun.stream(state, Format::Responses, hint)
    } else {
        let (handle, provider, headers) = begun.run_to_end(state).await;
        let mut resp = finished_object(&handle)?;
        dialect::finish_headers(&mut resp, &handle, &provider, headers);
        resp
    };
    if let Some(list) = request::omitted_header(&t.omitted) {
        if let Ok(v) = HeaderValue::from_str(&list) {
            resp.headers_mut().insert(OMITTED_HEADER, v);
        }
    }
    Ok(resp)
}

/// A non-streaming answer: the response object, or, when the upstream failed after it had
/// started, that failure in OpenAI's error shape (as a non-streaming chat completion has it).
fn finished_object(handle: &Handle) -> Result<Response, GatewayError> {
    if let Some(Event::Failed(f)) = handle.outcome() {
        return Err(GatewayError::from(AdapterError::Upstream {
            status: None,
            kind: f.kind,
            message: f.message,
            code: f.code,
            param: None,
            retry_after: None,
        }));
    }
    Ok(Json(handle.body(Format::Responses).unwrap_or_default()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct GetQuery {
    stream: Option<String>,
    starting_after: Option<String>,
}

/// `GET /v1/responses/{id}`: the object, or with `stream=true` its events (after
/// `starting_after`, else from the start) and then the live tail.
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<GetQuery>,
) -> Result<Response, GatewayError> {
    let streaming = match query.stream.as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(GatewayError::bad_request(
                "stream",
                format!("'stream' must be true or false, got '{other}'"),
            ))
        }
    };
    let after = match query.starting_after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            GatewayError::bad_request(
                "starting_after",
                format!("'starting_after' must be a non-negative integer, got '{raw}'"),
            )
        })?),
    };
    let handle = match retained::find(&state, &caller, &id, after.unwrap_or(0)).await? {
        retained::Found::Stream(handle) => handle,
        retained::Found::Kept(object) if !streaming => return Ok(Json(object).into_response()),
        retained::Found::Kept(_) => {
            return Err(GatewayError::NotFound(format!(
                "the events of response '{id}' have expired (they are kept {}s); the response \
                 object is still available without stream=true",
                state.settings.stream_retention.as_secs()
            )))
        }
    };
    if !streaming {
        return Ok(Json(handle.body(Format::Responses).unwrap_or_default()).into_response());
    }
    let first = after.map_or(0, |n| n + 1);
    match handle.subscribe_from(first, Format::Responses) {
        Ok(reader) => {
            if first > 0 {
                state.metrics.resumed();
            }
            let mut resp = super::sse_response(reader.into_sse(state.settings.keepalive));
            if let Ok(v) = HeaderValue::from_str(handle.id().as_str()) {
                resp.headers_mut().insert("x-sluice-stream-id", v);
            }
            Ok(resp)
        }
        Err(RelayError::TooManyReaders(n)) => Err(GatewayError::RateLimited {
            kind: "concurrency",
            retry_after_secs: 1,
            message: format!(
                "response '{id}' already has {n} readers, the most one response may have; close one and retry"
            ),
        }),
        Err(RelayError::AtEnd(_)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RelayError::BadPosition(n)) => Err(GatewayError::bad_request(
            "starting_after",
            format!("event {n} does not exist: the response has not got that far"),
        )),
        Err(e) => Err(GatewayError::NotFound(e.to_string())),
    }
}

/// `POST /v1/responses/{id}/cancel`: stops the generation (only the team that started it may)
/// and returns the object, `status` `cancelled` once the stream has recorded its end.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let handle = match retained::find(&state, &caller, &id, 0).await? {
        retained::Found::Stream(handle) => handle,
        // Its stream ended long ago: cancelling changes nothing.
        retained::Found::Kept(object) => return Ok(Json(object).into_response()),
    };
    state
        .streams
        .cancel(handle.id().as_str(), caller.team_name())
        .await?;
    // The writer records the end once the upstream is dropped: wait for it, briefly.
    let mut reader = handle.reader(Format::Browser);
    let _ = tokio::time::timeout(CANCEL_SETTLE, async {
        while reader.next_event().await.is_some() {}
    })
    .await;
    drop(reader);
    Ok(Json(handle.body(Format::Responses).unwrap_or_default()).into_response())
}
