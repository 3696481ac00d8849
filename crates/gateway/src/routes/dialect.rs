//! What the dialect endpoints (`/v1/responses`, `/v1/messages`, `/v1/ui/chat`) share: each
//! translates its request into a chat request, and every answer, streaming or not, runs as a
//! relay stream, so that it can be resumed and (for the Responses API) looked up later in any
//! dialect. Streaming answers are the stream's first reader in the dialect's format; a
//! non-streaming answer waits for the stream's end and renders the dialect's object from the
//! log.

use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use provider_adapter::ChatRequest;
use relay::{Format, Handle};

use crate::access::Caller;
use crate::error::GatewayError;
use crate::generation::{self, Started};
use crate::metrics::RequestLabels;
use crate::net::socket::FlushHint;
use crate::state::AppState;

/// A dialect request's generation, started: its upstream has answered.
pub struct Begun {
    pub started: Started,
    /// The rate-limit headers of its admission.
    pub headers: HeaderMap,
}

/// Admits `req` (translated from a dialect: it must ask for a stream, with usage) and starts
/// its generation; failover happens here, as for chat completions.
pub async fn begin(
    state: &AppState,
    caller: &Caller,
    arrival: Instant,
    req: ChatRequest,
    labels: &mut RequestLabels,
) -> Result<Begun, GatewayError> {
    let mut a = super::admit_request(state, caller, req, labels).await?;
    // Taken, not cloned: the admission lives as long as the stream.
    let headers = std::mem::take(&mut a.admission.headers);
    let started = generation::start(state, &a.req, &a.plan, a.admission, a.labels, arrival).await?;
    Ok(Begun { started, headers })
}

impl Begun {
    pub fn handle(&self) -> Handle {
        self.started.handle()
    }

    /// Keeps a grace period after the last reader leaves whatever `on_disconnect` says (the UI
    /// stream, which exists to be resumed; see `generation::Started::resumable`).
    pub fn resumable(mut self) -> Self {
        self.started = self.started.resumable();
        self
    }

    /// The streaming answer in `format`: the response is the stream's first reader and drives
    /// its pump (see `generation`). Carries `x-sluice-stream-id`, `x-sluice-provider` and the
    /// rate-limit headers.
    pub fn stream(self, state: &AppState, format: Format, hint: Option<FlushHint>) -> Response {
        let provider = self.started.provider().to_owned();
        let handle = self.started.handle();
        let reader = handle.reader(format);
        let driver = self.started.into_driver(state, hint);
        let mut resp =
            super::sse_response(reader.into_sse_driving(state.settings.keepalive, driver));
        finish_headers(&mut resp, &handle, &provider, self.headers);
        resp
    }

    /// Runs the generation to its end (in a task of its own, so that a client that goes away
    /// leaves it to the grace period like any stream) and returns its handle, the provider
    /// that served and the rate-limit headers. The caller renders the dialect's object from
    /// the log ([`Handle::body`]).
    pub async fn run_to_end(self, state: &AppState) -> (Handle, String, HeaderMap) {
        let provider = self.started.provider().to_owned();
        let handle = self.started.spawn(state);
        // A reader keeps the stream from being abandoned while this request waits.
        let mut reader = handle.reader(Format::Browser);
        while reader.next_event().await.is_some() {}
        (handle, provider, self.headers)
    }
}

/// The headers every dialect answer carries: the stream's ID (to resume it), the provider that
/// served, the admission's rate-limit headers.
pub fn finish_headers(resp: &mut Response, handle: &Handle, provider: &str, headers: HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(handle.id().as_str()) {
        resp.headers_mut().insert("x-sluice-stream-id", v);
    }
    super::served_by(resp, provider);
    resp.headers_mut().extend(headers);
}
