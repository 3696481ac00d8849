//! Every error a request can end in, and the one place they become HTTP responses in OpenAI's
//! error shape: `{"error":{"message","type","param","code"}}`, or, on the Anthropic Messages
//! endpoints, Anthropic's: `{"type":"error","error":{"type","message"}}`.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use provider_adapter::AdapterError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A web page of another origin (see `crate::origin`).
    #[error("{0}")]
    ForeignOrigin(String),
    /// A `Host` the gateway does not answer to in open mode (DNS rebinding).
    #[error("{0}")]
    MisdirectedHost(String),
    /// `/metrics` asked for from elsewhere than loopback without a metrics key.
    #[error("{0}")]
    MetricsForbidden(String),
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("this endpoint does not accept the {0} method")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive whole within `SLUICE_BODY_READ_TIMEOUT_SECS`.
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("{message}")]
    RateLimited {
        /// `requests`, `tokens` or `concurrency`.
        kind: &'static str,
        retry_after_secs: u64,
        message: String,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The state shared through Redis (the limits, another instance's streams) does not
    /// answer, and `on_failure` is `fail_closed` (or, for a cancel, whatever it is).
    #[error("the shared state is unavailable; retry shortly")]
    SharedStateUnavailable,
    /// As many streams are running as the gateway allows (`SLUICE_MAX_STREAMS`).
    #[error("{0}")]
    TooManyStreams(String),
    /// Shutdown has started: another instance should take the request.
    #[error("the server is shutting down; retry, and another instance will answer")]
    Draining,
    /// Boxed: upstream errors carry several strings, and every handler's `Result` pays for
    /// the largest variant.
    #[error(transparent)]
    Upstream(Box<AdapterError>),
    /// Every target of a route failed before answering (see `routing::failover::try_targets`).
    #[error("{message}")]
    AllTargetsFailed {
        status: StatusCode,
        /// `all_targets_failed`, or `upstream_auth_failed` when every provider refused the
        /// gateway's keys.
        code: &'static str,
        message: String,
        /// Set when every target answered 429: the last one's `Retry-After`.
        retry_after: Option<String>,
    },
}

/// Marks a response that refuses a request by design (a limit reached, shutting down): it is
/// logged at WARN with this reason (the error `code`), not as a failure.
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);

impl From<AdapterError> for GatewayError {
    fn from(e: AdapterError) -> Self {
        Self::Upstream(Box::new(e))
    }
}

impl GatewayError {
    pub fn bad_request(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::ForeignOrigin(_) | Self::MetricsForbidden(_) => {
                StatusCode::FORBIDDEN
            }
            Self::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_)
            | Self::SharedStateUnavailable
            | Self::Draining
            | Self::TooManyStreams(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(e) => upstream_status(e),
            Self::AllTargetsFailed { status, .. } => *status,
        }
    }
}

/// What the gateway answers for an upstream error before its headers (see
/// [`AdapterError::http_status`]).
pub fn upstream_status(e: &AdapterError) -> StatusCode {
    // Every status the adapter picks is a valid one; 502 would be the honest fallback anyway.
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The error `type`, `code` and `param` a client sees.
fn parts(e: &GatewayError) -> (String, Option<String>, Option<String>) {
    let s = |v: &str| Some(v.to_owned());
    match e {
        GatewayError::BadRequest { param, .. } => {
            ("invalid_request_error".into(), None, param.clone())
        }
        GatewayError::Unauthorized(_) => {
            ("invalid_request_error".into(), s("invalid_api_key"), None)
        }
        GatewayError::Forbidden(_) => {
            ("invalid_request_error".into(), s("model_not_allowed"), None)
        }
        GatewayError::ForeignOrigin(_) => (
            "invalid_request_error".into(),
            s("origin_not_allowed"),
            None,
        ),
        GatewayError::MisdirectedHost(_) => {
            ("invalid_request_error".into(), s("host_not_allowed"), None)
        }
        GatewayError::MetricsForbidden(_) => (
            "invalid_request_error".into(),
            s("metrics_not_allowed"),
            None,
        ),
        GatewayError::ModelNotFound(_) => (
            "invalid_request_error".into(),
            s("model_not_found"),
            s("model"),
        ),
        GatewayError::NotFound(_) => ("invalid_request_error".into(), s("not_found"), None),
        GatewayError::MethodNotAllowed(_) => (
            "invalid_request_error".into(),
            s("method_not_allowed"),
            None,
        ),
        GatewayError::PayloadTooLarge(_) => {
            ("invalid_request_error".into(), s("request_too_large"), None)
        }
        GatewayError::BodyTimeout(_) => (
            "invalid_request_error".into(),
            s("request_timeout"),
            Some("body".into()),
        ),
        GatewayError::RateLimited { kind, .. } => ((*kind).into(), s("rate_limit_exceeded"), None),
        GatewayError::Unavailable(_) => ("server_error".into(), s("unavailable"), None),
        GatewayError::SharedStateUnavailable => {
            ("server_error".into(), s("shared_state_unavailable"), None)
        }
        GatewayError::Draining => ("server_error".into(), s("server_shutdown"), None),
        GatewayError::TooManyStreams(_) => ("server_error".into(), s("too_many_streams"), None),
        GatewayError::AllTargetsFailed { status, code, .. } => (
            if *status == StatusCode::TOO_MANY_REQUESTS {
                "rate_limit_exceeded".into()
            } else {
                "upstream_error".into()
            },
            s(code),
            None,
        ),
        GatewayError::Upstream(a) => (
            a.kind().to_owned(),
            a.code().map(str::to_owned),
            a.param().map(str::to_owned),
        ),
    }
}

/// The JSON body for an error: also used in-band for stream failures.
pub fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> serde_json::Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

/// The paths whose errors take Anthropic's shape: the Messages API's.
pub const ANTHROPIC_PATHS: &str = "/v1/messages";

/// Anthropic's error `type` for a status.
pub fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `e` as the endpoint at `path` answers it: Anthropic's shape under [`ANTHROPIC_PATHS`],
/// OpenAI's elsewhere.
pub fn response_for(path: &str, e: GatewayError) -> Response {
    if path.starts_with(ANTHROPIC_PATHS) {
        e.into_anthropic_response()
    } else {
        e.into_response()
    }
}

impl GatewayError {
    /// The message a client sees: an upstream's own words for its errors.
    fn client_message(&self) -> String {
        match self {
            GatewayError::Upstream(a) => a.message(),
            other => other.to_string(),
        }
    }

    /// This error as Anthropic's API answers one: the same status and headers as in OpenAI's
    /// shape, the body `{"type":"error","error":{"type":...,"message":...}}`.
    pub fn into_anthropic_response(self) -> Response {
        let body = json!({
            "type": "error",
            "error": { "type": anthropic_type(self.status()), "message": self.client_message() },
        });
        let (parts, _) = self.into_response().into_parts();
        Response::from_parts(parts, axum::body::Body::from(body.to_string()))
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, code, param) = parts(&self);
        let message = self.client_message();
        let body = error_body(&message, &kind, param.as_deref(), code.as_deref());
        let mut resp = (status, Json(body)).into_response();
        let refusal = match &self {
            GatewayError::RateLimited { .. } => Some("rate_limit_exceeded"),
            GatewayError::TooManyStreams(_) => Some("too_many_streams"),
            GatewayError::Draining => Some("server_shutdown"),
            _ => None,
        };
        if let Some(reason) = refusal {
            resp.extensions_mut().insert(Refusal(reason));
        }
        let headers = resp.headers_mut();
        match &self {
            GatewayError::Draining
            | GatewayError::TooManyStreams(_)
            | GatewayError::SharedStateUnavailable => {
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
            }
            GatewayError::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from((*retry_after_secs).max(1)),
                );
            }
            GatewayError::AllTargetsFailed { retry_after, .. } => {
                headers.insert(
                    HeaderName::from_static("x-sluice-error-source"),
                    HeaderValue::from_static("upstream"),
                );
                if let Some(v) = retry_after
                    .as_deref()
                    .and_then(|ra| HeaderValue::from_str(ra).ok())
                {
                    headers.insert(axum::http::header::RETRY_AFTER, v);
                }
            }
            GatewayError::Upstream(a) => {
                headers.insert(
                    HeaderName::from_static("x-sluice-error-source"),
                    HeaderValue::from_static("upstream"),
                );
                if let Some(v) = a
                    .retry_after()
                    .and_then(|ra| HeaderValue::from_str(ra).ok())
                {
                    headers.insert(axum::http::header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn anthropic_shape_keeps_status_and_headers() {
        let e = GatewayError::RateLimited {
            kind: "requests",
            retry_after_secs: 3,
            message: "slow down".into(),
        };
        let resp = response_for("/v1/messages", e);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "3");
        assert!(resp.extensions().get::<Refusal>().is_some());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(
            &body[..],
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
        );
        let resp = response_for(
            "/v1/chat/completions",
            GatewayError::Unauthorized("no".into()),
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(body.starts_with(br#"{"error":"#));
        assert_eq!(
            anthropic_type(StatusCode::UNAUTHORIZED),
            "authentication_error"
        );
        assert_eq!(anthropic_type(StatusCode::BAD_GATEWAY), "api_error");
        assert_eq!(
            anthropic_type(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error"
        );
    }

    #[test]
    fn upstream_statuses() {
        let up = |s| AdapterError::Upstream {
            status: Some(s),
            kind: "x".into(),
            message: "m".into(),
            code: None,
            param: None,
            retry_after: None,
        };
        assert_eq!(upstream_status(&up(401)), StatusCode::UNAUTHORIZED);
        assert_eq!(upstream_status(&up(429)), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(upstream_status(&up(500)), StatusCode::BAD_GATEWAY);
        assert_eq!(upstream_status(&up(503)), StatusCode::BAD_GATEWAY);
        assert_eq!(upstream_status(&up(529)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            upstream_status(&AdapterError::Timeout {
                provider: "p".into(),
                phase: provider_adapter::TimeoutPhase::Headers
            }),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
