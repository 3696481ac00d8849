//! HTTP handlers, one module per group of endpoints.

pub mod chat;
pub mod dialect;
pub mod messages;
pub mod models;
pub mod ops;
pub mod responses;
pub mod streams;
pub mod ui;
pub mod usage;
pub mod web;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use provider_adapter::ChatRequest;
use relay::SseBody;

use crate::access::{Admission, Caller};
use crate::error::GatewayError;
use crate::metrics::{self, RequestLabels, StreamLabels};
use crate::routing::Plan;
use crate::state::AppState;

/// The request body, or 413/408/400 in OpenAI's shape.
pub fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, GatewayError> {
    body.map_err(|rej| {
        if crate::net::is_body_timeout(&rej) {
            GatewayError::BodyTimeout(state.settings.body_read_timeout.as_secs())
        } else if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::PayloadTooLarge(state.settings.max_body_bytes)
        } else {
            GatewayError::bad_request("body", format!("cannot read the request body: {rej}"))
        }
    })
}

/// The request body as a JSON object (the dialects' requests), or a 400 naming the body.
pub fn json_object(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Map<String, serde_json::Value>, GatewayError> {
    let bytes = self::body(state, body)?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::bad_request(
            "body",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(GatewayError::bad_request(
            "body",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// The request's ID (see `crate::request_id`) as text, for the upstream request.
pub fn request_id_text(
    id: Option<axum::Extension<tower_http::request_id::RequestId>>,
) -> Option<String> {
    id.and_then(|axum::Extension(r)| r.header_value().to_str().ok().map(str::to_owned))
}

/// An admitted chat request: what to send, the targets to try in turn, the permit, and its
/// generation's labels (the provider's is the first target's until one serves).
pub struct Admitted<'a> {
    pub req: ChatRequest,
    pub plan: Plan<'a>,
    pub admission: Admission,
    pub labels: StreamLabels,
}

/// The HTTP counter's labels for a chat request, before its model is known.
pub fn request_labels(caller: &Caller) -> RequestLabels {
    RequestLabels {
        model: metrics::other_label(),
        team: caller
            .team
            .as_ref()
            .map_or_else(metrics::empty_label, |t| t.name.clone()),
    }
}

/// A chat handler's answer, error or not, carrying its labels for the HTTP counter.
pub fn labelled(resp: Result<Response, GatewayError>, labels: RequestLabels) -> Response {
    let mut resp = resp.unwrap_or_else(IntoResponse::into_response);
    resp.extensions_mut().insert(labels);
    resp
}

/// Parses and admits a chat request: validation, model routing, team permission and limits.
/// `labels` gets the model's label once it is routed, so that a refusal after that (403, 429)
/// is counted under its model too.
pub async fn admit<'a>(
    state: &'a AppState,
    caller: &Caller,
    bytes: &[u8],
    labels: &mut RequestLabels,
    request_id: Option<String>,
) -> Result<Admitted<'a>, GatewayError> {
    if state.lifecycle.draining() {
        return Err(GatewayError::Draining);
    }
    let mut req = ChatRequest::parse(bytes).map_err(GatewayError::from)?;
    // Sent upstream, so that the upstream's logs and ours meet on one ID.
    req.request_id = request_id;
    admit_request(state, caller, req, labels).await
}

/// Admits a chat request already parsed (or translated from a dialect): model routing, team
/// permission and limits, as [`admit`].
pub async fn admit_request<'a>(
    state: &'a AppState,
    caller: &Caller,
    req: ChatRequest,
    labels: &mut RequestLabels,
) -> Result<Admitted<'a>, GatewayError> {
    if state.lifecycle.draining() {
        return Err(GatewayError::Draining);
    }
    let plan = plan(state, &req.model)?;
    let provider_label = plan.targets[0].label;
    labels.model = state.router.model_label(&req.model);
    // Once per client request, whatever number of targets it takes.
    let admission = state.access.admit(caller, &req).await?;
    state.metrics.admitted();
    Ok(Admitted {
        labels: StreamLabels {
            model: labels.model.clone(),
            provider: provider_label.clone(),
            team: labels.team.clone(),
        },
        req,
        plan,
        admission,
    })
}

/// The targets that serve `model`, or 404 `model_not_found`.
pub fn plan<'a>(state: &'a AppState, model: &str) -> Result<Plan<'a>, GatewayError> {
    state
        .router
        .plan(model)
        .filter(|p| !p.targets.is_empty())
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_owned()))
}

/// Names the provider that served a response (`x-sluice-provider`).
pub fn served_by(resp: &mut Response, provider: &str) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        resp.headers_mut().insert("x-sluice-provider", v);
    }
}

/// An SSE response over `body`: no compression, no proxy buffering, flushed per event.
pub fn sse_response(body: SseBody) -> Response {
    sse_body(axum::body::Body::from_stream(body))
}

/// An SSE response over any event-stream body, with [`sse_response`]'s headers.
pub fn sse_body(body: axum::body::Body) -> Response {
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
