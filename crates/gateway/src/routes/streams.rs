//! The resumable streams: `POST /v1/streams` starts a generation, `GET
//! /v1/streams/{id}/events` reads it from any position (`Last-Event-ID` or `?last_event_id=`),
//! `DELETE /v1/streams/{id}` cancels it. Where a stream runs (here or on another instance) is
//! `crate::streams`'s business.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use relay::{Format, RelayError};
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::error::GatewayError;
use crate::generation;
use crate::metrics::RequestLabels;
use crate::net::Arrival;
use crate::state::AppState;
use tower_http::request_id::RequestId;

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    arrival: Option<Extension<Arrival>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrival = arrival.map_or_else(Instant::now, |Extension(a)| a.0);
    let mut labels = super::request_labels(&caller);
    let request_id = super::request_id_text(request_id);
    let resp = start(&state, &caller, arrival, body, &mut labels, request_id).await;
    super::labelled(resp, labels)
}

async fn start(
    state: &AppState,
    caller: &Caller,
    arrival: Instant,
    body: Result<Bytes, BytesRejection>,
    labels: &mut RequestLabels,
    request_id: Option<String>,
) -> Result<Response, GatewayError> {
    let bytes = super::body(state, body)?;
    let mut a = super::admit(state, caller, &bytes, labels, request_id).await?;
    // Taken, not cloned: the admission lives as long as the stream.
    let headers = std::mem::take(&mut a.admission.headers);
    let started = generation::start(state, &a.req, &a.plan, a.admission, a.labels, arrival).await?;
    let provider = started.provider().to_owned();
    // It exists to be resumed: it keeps its grace period whatever `on_disconnect` says.
    let handle = started.resumable().spawn(state);
    let id = handle.id().as_str();
    let mut resp = (
        StatusCode::CREATED,
        Json(json!({ "id": id, "events_url": format!("/v1/streams/{id}/events") })),
    )
        .into_response();
    resp.headers_mut().extend(headers);
    super::served_by(&mut resp, &provider);
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    last_event_id: Option<String>,
    format: Option<String>,
}

fn position(headers: &HeaderMap, query: &EventsQuery) -> Result<u64, GatewayError> {
    // The header wins: EventSource sends it on reconnect to the same URL, whose query may hold
    // an older position.
    let (raw, name) = match headers.get("last-event-id") {
        Some(v) => (
            v.to_str()
                .map_err(|_| {
                    GatewayError::bad_request("Last-Event-ID", "Last-Event-ID must be a number")
                })?
                .to_owned(),
            "Last-Event-ID",
        ),
        None => match &query.last_event_id {
            Some(q) => (q.clone(), "last_event_id"),
            None => return Ok(0),
        },
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(0);
    }
    raw.parse::<u64>().map_err(|_| {
        GatewayError::bad_request(
            name,
            format!("{name} must be a non-negative integer, got '{raw}'"),
        )
    })
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let format = match query.format.as_deref() {
        None | Some("") | Some("browser") | Some("sluice") => Format::Browser,
        Some("openai") => Format::OpenAi,
        Some("anthropic") => Format::Anthropic,
        Some(other) => {
            return Err(GatewayError::bad_request(
                "format",
                format!(
                    "unknown format '{other}' (use 'openai' or 'anthropic', or leave it out for browser events)"
                ),
            ))
        }
    };
    let after = position(&headers, &query)?;
    let handle = state.streams.open(&id, after, format).await?;
    match handle.subscribe(after, format) {
        Ok(reader) => {
            if after > 0 {
                state.metrics.resumed();
            }
            Ok(super::sse_response(reader.into_sse(state.settings.keepalive)))
        }
        Err(RelayError::TooManyReaders(n)) => Err(GatewayError::RateLimited {
            kind: "concurrency",
            retry_after_secs: 1,
            message: format!(
                "stream '{id}' already has {n} readers, the most one stream may have; close one and retry"
            ),
        }),
        Err(RelayError::AtEnd(_)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RelayError::BadPosition(n)) => Err(GatewayError::bad_request(
            "Last-Event-ID",
            format!(
                "event {n} does not exist: the stream's last event is {}",
                handle.last_event_id(format)
            ),
        )),
        Err(e) => Err(GatewayError::NotFound(e.to_string())),
    }
}

/// Only the team that started a stream may cancel it (see `crate::streams::Streams::cancel`).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let c = state.streams.cancel(&id, caller.team_name()).await?;
    Ok(deleted(c.id.as_str(), c.was_live))
}

fn deleted(id: &str, was_live: bool) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "id": id, "object": "stream.deleted", "cancelled": was_live })),
    )
        .into_response()
}
