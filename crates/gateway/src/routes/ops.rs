//! `GET /healthz` and `GET /metrics`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use subtle::ConstantTimeEq;

use crate::error::GatewayError;
use crate::state::AppState;

/// Alive: answers as long as the process serves at all.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready for new work: the config is loaded and the server listens (or this would not answer),
/// and shutdown has not started. 503 while draining, so a load balancer stops sending.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.lifecycle.draining() {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "draining\n",
        )
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

/// Every metric, in OpenMetrics text (which Prometheus scrapes natively). With teams it names
/// every team and its usage, so it is served only to a client on the loopback interface that did
/// not come through a proxy, or to a key listed in `metrics_api_keys_sha256`. In open mode there
/// is nothing private in it. `metrics_require_key = true` asks every client for a key, loopback
/// included: a reverse proxy on the same machine that adds no forwarding headers (nginx's
/// default `proxy_pass`) makes every client look local, and only the operator knows whether one
/// is there.
pub async fn metrics(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if state.settings.metrics_require_key {
        if !has_metrics_key(&state, &headers) {
            return GatewayError::Unauthorized(
                "metrics need a key listed in metrics_api_keys_sha256, sent as Authorization: Bearer KEY"
                    .into(),
            )
            .into_response();
        }
    } else if !state.access.open_mode() && !metrics_allowed(&state, peer.map(|p| p.0 .0), &headers)
    {
        return GatewayError::MetricsForbidden(
            "metrics are served to loopback clients, or with a key listed in metrics_api_keys_sha256"
                .into(),
        )
        .into_response();
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

fn metrics_allowed(state: &AppState, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    // A proxy on the same machine makes every client look local; its forwarding headers give
    // it away (when it adds them: see `metrics_require_key`).
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    if !proxied && peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
        return true;
    }
    has_metrics_key(state, headers)
}

/// The request presents a key whose SHA-256 is in `metrics_api_keys_sha256` (compared in
/// constant time).
fn has_metrics_key(state: &AppState, headers: &HeaderMap) -> bool {
    let Ok(key) = crate::access::presented_key(headers) else {
        return false;
    };
    let digest = crate::keys::sha256(key);
    let mut found = subtle::Choice::from(0);
    for hex_hash in &state.settings.metrics_keys_sha256 {
        let mut h = [0u8; 32];
        if hex::decode_to_slice(hex_hash, &mut h).is_ok() {
            found |= h[..].ct_eq(&digest[..]);
        }
    }
    bool::from(found)
}
