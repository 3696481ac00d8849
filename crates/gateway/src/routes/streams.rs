//! The resumable streams: `POST /v1/streams` starts a generation, `GET
//! /v1/streams/{id}/events` reads it from any position (`Last-Event-ID` or `?last_event_id=`),
//! `DELETE /v1/streams/{id}` cancels it.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::time::Duration;

use relay::{Format, Handle, RelayError, StreamId};
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::config::OnFailure;
use crate::error::GatewayError;
use crate::generation;
use crate::metrics::RequestLabels;
use crate::net::Arrival;
use crate::state::AppState;
use crate::stream_log::RemoteStream;
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
    let a = super::admit(state, caller, &bytes, labels, request_id).await?;
    let headers = a.admission.headers.clone();
    let started = generation::start(state, &a.req, &a.plan, a.admission, a.labels, arrival).await?;
    let provider = started.provider().to_owned();
    let handle = started.spawn(state);
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
        Some(other) => {
            return Err(GatewayError::bad_request(
                "format",
                format!(
                    "unknown format '{other}' (use 'openai', or leave it out for browser events)"
                ),
            ))
        }
    };
    let after = position(&headers, &query)?;
    let handle = match state.registry.get(&id) {
        Ok(h) => h,
        Err(_) => replica(&state, &id).await?,
    };
    if handle.is_replica() {
        caught_up(&state, &handle, after, format).await;
    }
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

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound(format!("stream '{id}' not found or expired"))
}

/// What another instance published about stream `id`, if anything (404 if nothing; with Redis
/// down, 404 under `fail_open`, 503 under `fail_closed`).
async fn remote(state: &AppState, id: &str) -> Result<RemoteStream, GatewayError> {
    let sid = StreamId::parse(id).ok_or_else(|| not_found(id))?;
    match state.stream_log.lookup(&sid).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found(id)),
        Err(e) => {
            tracing::debug!(error = %e, "stream lookup in redis failed");
            match state.shared.as_ref().map(|s| s.on_failure) {
                Some(OnFailure::FailClosed) => Err(GatewayError::Unavailable(
                    "shared state is unavailable; try again shortly".into(),
                )),
                _ => Err(not_found(id)),
            }
        }
    }
}

/// A local replica of a stream another instance runs, made (and filled by a task of its own)
/// by the first request for it; later requests share it.
async fn replica(state: &AppState, id: &str) -> Result<Handle, GatewayError> {
    let r = remote(state, id).await?;
    match state
        .registry
        .create_replica(r.id, r.include_usage, r.team.as_deref().map(Into::into))
    {
        Ok(writer) => {
            let handle = writer.handle();
            let log = state.stream_log.clone();
            tokio::spawn(async move { log.tail(r, writer).await });
            Ok(handle)
        }
        Err(RelayError::Exists) => state.registry.get(id).map_err(|_| not_found(id)),
        Err(e) => Err(GatewayError::Unavailable(e.to_string())),
    }
}

/// Waits (a bounded time) until a replica holds the events up to `after`: a reader may resume
/// from a position its owner has sent but this copy has not received yet.
async fn caught_up(state: &AppState, handle: &Handle, after: u64, format: Format) {
    let limit = state.shared.as_ref().map_or(Duration::from_secs(5), |s| {
        s.owner_timeout + Duration::from_secs(5)
    });
    let wait = async {
        let mut follower = handle.follow(handle.last_event_id(Format::Browser));
        let mut scratch = Vec::new();
        while !handle.is_finished() && handle.last_event_id(format) < after {
            scratch.clear();
            if !follower.next_batch(usize::MAX, &mut scratch).await {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, wait).await;
}

/// Only the team that started a stream may cancel it; to another team it does not exist
/// (404, the same answer as for an unknown ID, so IDs cannot be probed).
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let local = state.registry.get(&id).ok();
    if let Some(handle) = local.as_ref().filter(|h| !h.is_replica()) {
        if handle.owner().is_some() && handle.owner() != caller.team_name() {
            return Err(not_found(&id));
        }
        let was_live = !handle.is_finished();
        handle.cancel();
        return Ok(deleted(handle.id().as_str(), was_live));
    }
    // Another instance runs it: check the team it recorded, then ask it to stop.
    let r = remote(&state, &id).await?;
    if r.team.is_some() && r.team.as_deref() != caller.team_name() {
        return Err(not_found(&id));
    }
    let was_live = local.as_ref().is_none_or(|h| !h.is_finished());
    if was_live {
        state.stream_log.cancel(&r.id).await.map_err(|_| {
            GatewayError::Unavailable("shared state is unavailable; try again shortly".into())
        })?;
    }
    Ok(deleted(r.id.as_str(), was_live))
}

fn deleted(id: &str, was_live: bool) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "id": id, "object": "stream.deleted", "cancelled": was_live })),
    )
        .into_response()
}
