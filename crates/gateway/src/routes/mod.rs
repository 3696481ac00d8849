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
use relay::{Format, Generation, Meta, Reader};

use crate::access::{Admission, Caller};
use crate::error::GatewayError;
use crate::metrics::inc;
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
) -> Result<(ChatRequest, &'a Provider, Admission), GatewayError> {
    let req = ChatRequest::parse(bytes).map_err(GatewayError::from)?;
    let provider = state
        .router
        .route(&req.model)
        .ok_or_else(|| GatewayError::ModelNotFound(req.model.clone()))?;
    let admission = state.access.admit(caller, &req)?;
    Ok((req, provider, admission))
}

/// A generation whose upstream has answered, ready for its pump.
pub struct Started {
    pub gen: std::sync::Arc<Generation>,
    upstream: provider_adapter::EventStream,
    admission: Admission,
}

impl Started {
    /// Spawns the pump that runs the generation to its end. Readers that must not miss the
    /// start (the `POST /v1/chat/completions` response) attach before this.
    pub fn spawn(self, state: &AppState) -> std::sync::Arc<Generation> {
        let gen = self.gen.clone();
        tokio::spawn(crate::pump::pump(
            state.clone(),
            self.gen,
            self.upstream,
            self.admission,
        ));
        gen
    }
}

/// Starts a generation: registers it and waits for the upstream's headers, so that an upstream
/// HTTP error becomes a real status.
pub async fn start_generation(
    state: &AppState,
    req: &ChatRequest,
    provider: &Provider,
    admission: Admission,
) -> Result<Started, GatewayError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let gen = state
        .registry
        .create(
            Meta {
                id: String::new(),
                model: req.model.clone(),
                created: now,
                system_fingerprint: None,
            },
            req.include_usage,
        )
        .map_err(|_| {
            GatewayError::Unavailable("the relay is at its memory limit; try again shortly".into())
        })?;
    gen.set_meta(|m| m.id = format!("chatcmpl-{}", gen.id()));
    // If the client goes away while we wait for the upstream's headers, this future is
    // dropped: the guard ends the registered generation so it does not count as live forever.
    let guard = EndOnDrop(Some(gen.clone()));
    let upstream = match provider.stream(req).await {
        Ok(s) => s,
        Err(e) => {
            inc(&state.metrics.upstream_errors);
            tracing::warn!(provider = %provider.name, model = %req.model, error = %e, "upstream request failed");
            gen.fail(crate::pump::failure(&e));
            return Err(e.into());
        }
    };
    guard.disarm();
    inc(&state.metrics.streams_started);
    Ok(Started {
        gen,
        upstream,
        admission,
    })
}

/// An SSE response over `reader`: no compression, no proxy buffering, flushed per event.
pub fn sse_response(state: &AppState, reader: Reader, format: Format) -> Response {
    let body = axum::body::Body::from_stream(reader.into_sse(format, state.settings.keepalive));
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

/// Ends a generation whose start was abandoned before its pump took over.
struct EndOnDrop(Option<std::sync::Arc<Generation>>);

impl EndOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(gen) = self.0.take() {
            gen.finish_cancelled();
        }
    }
}
