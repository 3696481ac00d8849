//! The router: every endpoint the README lists, with the cross-cutting concerns (body limit,
//! authentication, tracing, CORS) as layers.

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::Instrument;

use crate::metrics::{empty_label, HttpLabels, RequestLabels, Route};
use crate::request_id;
use crate::routes::{chat, messages, models, ops, streams, ui, usage, web};
use crate::state::AppState;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

pub fn app(state: AppState) -> Router {
    // Everything under /v1 but the events URL needs a key when teams are configured: the
    // stream ID is the capability there, because EventSource cannot send headers.
    let authed = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models::list))
        .route("/v1/streams", post(streams::create))
        .route("/v1/streams/{id}", delete(streams::cancel))
        .route("/v1/usage", get(usage::get))
        .route("/v1/responses", post(crate::routes::responses::create))
        .route("/v1/responses/{id}", get(crate::routes::responses::get))
        .route(
            "/v1/responses/{id}/cancel",
            post(crate::routes::responses::cancel),
        )
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/ui/chat", post(ui::chat))
        .route(
            "/v1/ui/chat/{chat_id}/stream",
            get(ui::resume).delete(ui::stop),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let open = Router::new()
        .route("/v1/streams/{id}/events", get(streams::events))
        .route("/", get(web::index))
        .route("/{file}", get(web::asset))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics));
    authed
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(cors(&state.settings.cors_origins))
        // A foreign origin or host learns nothing else, preflights included.
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        // The request's span, with its ID: every log line of the request carries it.
        .layer(middleware::from_fn(trace))
        .layer(PropagateRequestIdLayer::new(request_id::HEADER))
        .layer(SetRequestIdLayer::new(
            request_id::HEADER,
            request_id::MakeId,
        ))
        .layer(middleware::from_fn(request_id::drop_unusable))
        .with_state(state)
}

/// The span of one request: its ID, method and route template (never the path itself, which
/// may hold a stream ID, a read credential).
fn request_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("-", axum::extract::MatchedPath::as_str);
    tracing::info_span!(
        "request",
        request_id = request_id::of(req),
        method = %req.method(),
        route,
    )
}

/// Runs the request in its span and logs the answer. Not tower-http's `TraceLayer`: it also
/// enters the span on every poll of the response body, twice per token of a stream, for no log
/// line (a stream's pump logs in its span itself, see `generation`).
async fn trace(req: Request, next: Next) -> Response {
    let span = request_span(&req);
    let start = std::time::Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| log_response(&resp, start.elapsed()));
    resp
}

/// Logs each answered request: a refusal by design (over a team limit, `too_many_streams`,
/// draining) at WARN with its reason; another 5xx at ERROR; the rest at DEBUG.
fn log_response(resp: &Response, latency: std::time::Duration) {
    let status = resp.status().as_u16();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    if let Some(crate::error::Refusal(reason)) = resp.extensions().get() {
        tracing::warn!(status, reason, latency_ms, "request refused");
    } else if resp.status().is_server_error() {
        tracing::error!(status, latency_ms, "response failed");
    } else {
        tracing::debug!(status, latency_ms, "finished processing request");
    }
}

/// CORS for the configured origins only; with none configured, no `Access-Control-*` header is
/// ever sent (and `guard` refuses foreign origins before this layer).
fn cors(origins: &[String]) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([
            HeaderName::from_static("x-sluice-stream-id"),
            request_id::HEADER,
            header::RETRY_AFTER,
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ]);
    tower::util::Either::Left(layer)
}

/// Refuses foreign web origins and, in open mode, foreign host names (see `crate::origin`).
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match crate::origin::check(
        &state.settings.web_policy(state.access.open_mode()),
        req.headers(),
        req.uri(),
    ) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Counts every answered request by its route template (never the raw path: stream IDs are
/// credentials), method and status; chat handlers add their model and team (see
/// `metrics::RequestLabels`).
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = Route::new(req.extensions().get::<MatchedPath>());
    let method = crate::metrics::method_label(req.method());
    let resp = next.run(req).await;
    let (model, team) = match resp.extensions().get::<RequestLabels>() {
        Some(l) => (l.model.clone(), l.team.clone()),
        None => (empty_label(), empty_label()),
    };
    state.metrics.http_request(&HttpLabels {
        route,
        method,
        status: resp.status().as_u16(),
        model,
        team,
    });
    resp
}

/// Authenticates the caller, and gives every response to a team its `x-ratelimit-*` headers
/// (an admitted request's own, set by its handler, or where the limits stand now: errors too).
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.access.authenticate(req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller.clone());
            let mut resp = next.run(req).await;
            state.access.fill_headers(&caller, resp.headers_mut()).await;
            resp
        }
        Err(e) => crate::error::response_for(req.uri().path(), e),
    }
}

/// With teams, every `/v1/*` request needs a key, even one to a path or method that does not
/// exist: an unauthenticated caller learns nothing about the API but 401.
fn unauthenticated(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    if !uri.path().starts_with("/v1/") {
        return None;
    }
    state
        .access
        .authenticate(headers)
        .err()
        .map(|e| crate::error::response_for(uri.path(), e))
}

async fn method_not_allowed(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    unauthenticated(&state, &uri, &headers).unwrap_or_else(|| {
        let e = crate::error::GatewayError::MethodNotAllowed(method.to_string());
        crate::error::response_for(uri.path(), e)
    })
}

async fn not_found(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    unauthenticated(&state, &uri, &headers).unwrap_or_else(|| {
        let e = crate::error::GatewayError::NotFound("no such endpoint".into());
        crate::error::response_for(uri.path(), e)
    })
}
