//! `POST /v1/chat/completions`: OpenAI-compatible, streaming or not. Streams are registered
//! in the relay like `POST /v1/streams` ones, so a dropped stream can be resumed by its
//! `x-sluice-stream-id` with `?format=openai`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use relay::Format;

use crate::access::Caller;
use crate::error::GatewayError;
use crate::generation;
use crate::metrics::RequestLabels;
use crate::net::socket::FlushHint;
use crate::net::Arrival;
use crate::state::AppState;
use tower_http::request_id::RequestId;

pub async fn chat_completions(
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
    hint: Option<Extension<FlushHint>>,
    body: Result<Bytes, BytesRejection>,
    labels: &mut RequestLabels,
    request_id: Option<String>,
) -> Result<Response, GatewayError> {
    let bytes = super::body(state, body)?;
    let super::Admitted {
        req,
        plan,
        mut admission,
        labels: stream_labels,
    } = super::admit(state, caller, &bytes, labels, request_id).await?;
    // Taken, not cloned: the admission lives as long as the stream, its headers only until the
    // response head is written.
    let headers = std::mem::take(&mut admission.headers);
    let mut resp = if req.stream {
        let started =
            generation::start(state, &req, &plan, admission, stream_labels, arrival).await?;
        let provider = started.provider().to_owned();
        // The response is the first reader, and drives the pump itself (see `generation`).
        let handle = started.handle();
        let reader = handle.reader(Format::OpenAi);
        let driver = started.into_driver(state, hint.map(|Extension(h)| h));
        let mut resp =
            super::sse_response(reader.into_sse_driving(state.settings.keepalive, driver));
        if let Ok(v) = HeaderValue::from_str(handle.id().as_str()) {
            resp.headers_mut().insert("x-sluice-stream-id", v);
        }
        super::served_by(&mut resp, &provider);
        resp
    } else {
        let answer =
            generation::complete(state, &req, &plan, admission, stream_labels, arrival).await?;
        let mut resp = Json(answer.body).into_response();
        super::served_by(&mut resp, &answer.provider);
        resp
    };
    resp.headers_mut().extend(headers);
    Ok(resp)
}
