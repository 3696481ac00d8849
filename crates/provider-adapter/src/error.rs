//! Everything that can go wrong between Sluice and an upstream, in one enum.
//!
//! The gateway maps these to HTTP statuses (before a stream starts) or to in-band error events
//! (after); `kind()` gives the OpenAI-style error `type` clients see (the README lists them).
//! What each error means to the gateway (fail over or not, which status, which metric label,
//! what is charged) is decided here, once, by the methods below; the gateway never matches on
//! the variants for it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    Headers,
    Idle,
    /// A non-streaming answer did not arrive whole in time (its headers come with it).
    Response,
    /// A stream's first content (text, reasoning or a tool call) did not come in time.
    FirstToken,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting to the upstream",
            Self::Headers => "waiting for the upstream's response headers",
            Self::Idle => "waiting for the upstream's next bytes",
            Self::Response => "waiting for the upstream's answer",
            Self::FirstToken => "waiting for the upstream's first token",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterError {
    /// An error the upstream reported itself, over HTTP (`status` set) or in the stream.
    #[error("upstream error: {message}")]
    Upstream {
        status: Option<u16>,
        kind: String,
        message: String,
        code: Option<String>,
        param: Option<String>,
        /// The upstream's `Retry-After`, passed on for 429.
        retry_after: Option<String>,
    },
    /// The provider (its name, never its URL) did not answer in time.
    #[error("upstream timed out {phase} (provider '{provider}')")]
    Timeout {
        provider: String,
        phase: TimeoutPhase,
    },
    /// The upstream could not be reached or the connection failed before any response. The
    /// text names the provider and the cause, never its URL (clients see it).
    #[error("upstream connection failed: {0}")]
    Connect(String),
    /// The upstream refused Sluice's own credentials (HTTP 401 or 403): the gateway's
    /// configuration is at fault, not the client's key. Its own message is not kept: some
    /// servers quote part of the key they were given.
    #[error("provider '{provider}' refused the gateway's credentials (HTTP {status})")]
    Auth { provider: String, status: u16 },
    /// The upstream ended or reset before every choice had a finish reason.
    #[error("upstream stream ended before the generation finished: {0}")]
    Truncated(String),
    /// Undecodable data, or a response that is not what was asked for.
    #[error("upstream sent data Sluice cannot decode: {0}")]
    Protocol(String),
    /// The request cannot be translated for this upstream.
    #[error("{message}")]
    InvalidRequest { message: String, param: String },
}

impl AdapterError {
    /// The error `type` a client sees.
    pub fn kind(&self) -> &str {
        match self {
            Self::Upstream { kind, .. } => kind,
            Self::Timeout { .. } => "upstream_timeout",
            Self::Connect(_) | Self::Auth { .. } => "upstream_error",
            Self::Truncated(_) => "upstream_truncated",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::InvalidRequest { .. } => "invalid_request_error",
        }
    }

    /// The error `code` a client sees.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Upstream { code, .. } => code.as_deref(),
            Self::Timeout { .. } => Some("upstream_timeout"),
            Self::Connect(_) => Some("upstream_unreachable"),
            Self::Auth { .. } => Some("upstream_auth_failed"),
            Self::Truncated(_) => Some("upstream_truncated"),
            Self::Protocol(_) => Some("upstream_protocol_error"),
            Self::InvalidRequest { .. } => Some("invalid_request"),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::Upstream { param, .. } => param.as_deref(),
            Self::InvalidRequest { param, .. } => Some(param),
            _ => None,
        }
    }

    /// The message a client sees: the upstream's own words for its errors.
    pub fn message(&self) -> String {
        match self {
            Self::Upstream { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The upstream's own HTTP error status, when it answered with one (not for errors it
    /// sent inside a stream, nor for 401/403, which are [`Self::Auth`]).
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::Upstream { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether a failure before the gateway's response headers moves on to a route's next
    /// target: connect failure, connect or headers timeout, the provider refusing the
    /// gateway's own key (401/403), 408, 429, 5xx (529 included). Any other 4xx is the
    /// client's. A non-streaming answer that timed out is not replayed: the upstream was
    /// working on it, and another target would be paid for the same answer again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Auth { .. } => true,
            Self::Timeout { phase, .. } => {
                matches!(phase, TimeoutPhase::Connect | TimeoutPhase::Headers)
            }
            Self::Upstream {
                status: Some(s), ..
            } => matches!(*s, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    /// Whether a failure of a stream that answered 200 but sent no content yet (text,
    /// reasoning or a tool call) moves on to the next target: everything [`Self::is_retryable`]
    /// says, and also an error the upstream sent in the stream unless the client caused it
    /// (invalid request, context length, content filter, not found: see
    /// [`Self::is_client_error`]), a timeout while waiting for bytes or the first token, a
    /// stream that ended or was cut, undecodable data. Nothing was shown yet, so another target
    /// costs the client nothing but time.
    pub fn is_retryable_before_content(&self) -> bool {
        match self {
            Self::Upstream { status: None, .. } => !self.is_client_error(),
            Self::Timeout { phase, .. } => !matches!(phase, TimeoutPhase::Response),
            Self::Truncated(_) | Self::Protocol(_) => true,
            _ => self.is_retryable(),
        }
    }

    /// Whether the upstream said the request itself is at fault: an HTTP 4xx other than 401,
    /// 403, 408 and 429, or an in-stream error whose type or code names a client error
    /// (`invalid_request_error`, `context_length_exceeded`, `request_too_large`,
    /// `not_found_error`, a content filter), or a numeric code in that 4xx range.
    pub fn is_client_error(&self) -> bool {
        match self {
            Self::InvalidRequest { .. } => true,
            Self::Upstream {
                status: Some(s), ..
            } => matches!(*s, 400..=499) && !matches!(*s, 401 | 403 | 408 | 429),
            Self::Upstream { kind, code, .. } => {
                let names_client = |s: &str| {
                    let s = s.to_ascii_lowercase();
                    [
                        "invalid_request",
                        "invalid_argument",
                        "context_length",
                        "too_large",
                        "not_found",
                        "content_filter",
                        "content_policy",
                        "bad_request",
                    ]
                    .iter()
                    .any(|w| s.contains(w))
                        || s.parse::<u16>().is_ok_and(|n| {
                            (400..=499).contains(&n) && !matches!(n, 401 | 403 | 408 | 429)
                        })
                };
                names_client(kind) || code.as_deref().is_some_and(names_client)
            }
            _ => false,
        }
    }

    /// The HTTP status the gateway answers with for this error before its response headers.
    /// An upstream's 4xx is passed on; 529 (Anthropic overloaded) is 503, other 5xx 502: the
    /// gateway is the server that failed, not the upstream. The provider refusing the gateway's
    /// own key is 502 too: a gateway failure, not the client's 401.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Upstream {
                status: Some(s), ..
            } => match *s {
                529 => 503,
                400..=499 => *s,
                _ => 502,
            },
            Self::Timeout { .. } => 504,
            Self::InvalidRequest { .. } => 400,
            // An error the client caused, sent in a stream before any content (a status
            // error's twin: the gateway answers with a status, not a stream).
            Self::Upstream { status: None, .. } if self.is_client_error() => 400,
            Self::Upstream { status: None, .. }
            | Self::Connect(_)
            | Self::Auth { .. }
            | Self::Truncated(_)
            | Self::Protocol(_) => 502,
        }
    }

    /// The error's kind as a metric label: a fixed list, since the upstream's own `type` is
    /// free text and would let upstreams mint label values.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            Self::Upstream {
                status: Some(_), ..
            } => "upstream_http",
            Self::Upstream { status: None, .. } => "upstream_stream_error",
            Self::Timeout { .. } => "upstream_timeout",
            Self::Connect(_) => "upstream_connect",
            Self::Auth { .. } => "upstream_auth",
            Self::Truncated(_) => "upstream_truncated",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::InvalidRequest { .. } => "invalid_request",
        }
    }

    /// Whether the upstream was left working on the request when it failed (it timed out
    /// after taking it): its prompt is charged rather than refunded.
    pub fn upstream_worked(&self) -> bool {
        matches!(
            self,
            Self::Timeout {
                phase: TimeoutPhase::Response | TimeoutPhase::Idle,
                ..
            }
        )
    }

    /// The upstream answered HTTP 429.
    pub fn is_rate_limited(&self) -> bool {
        self.upstream_status() == Some(429)
    }

    /// The upstream's `Retry-After`, for a 429 only: on another status it says nothing the
    /// client can act on.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::Upstream {
                status: Some(429),
                retry_after,
                ..
            } => retry_after.as_deref(),
            _ => None,
        }
    }

    /// A helper for in-stream errors and 200 answers: `{"error":...}` bodies only.
    pub(crate) fn from_error_body(status: Option<u16>, body: &serde_json::Value) -> Option<Self> {
        let err = body.get("error")?;
        if let serde_json::Value::String(message) = err {
            return Some(Self::upstream(status, None, message.clone(), None, None));
        }
        Some(Self::upstream(
            status,
            // Gemini's errors name their class in `status` (`INVALID_ARGUMENT`), not `type`.
            text(err.get("type")).or_else(|| text(err.get("status"))),
            text(err.get("message")).unwrap_or_else(|| "upstream error".into()),
            text(err.get("code")),
            text(err.get("param")),
        ))
    }

    /// An upstream's error body in any of the shapes OpenAI-compatible servers use, for
    /// bodies known to be errors (an HTTP error status, an error event): OpenAI's
    /// `{"error":{...}}` and `{"error":"text"}`; Gemini's list `[{"error":{...}}]`
    /// (<https://github.com/google-gemini/gemini-cli/issues/5472>); vLLM before 0.10.1, with
    /// the fields at the top (`{"object":"error","message":...,"type":...,"code":400}`,
    /// <https://github.com/vllm-project/vllm/issues/12886>); FastAPI's `{"detail":...}`
    /// (vLLM's and other Python servers' routing and validation errors); and a bare
    /// `{"message":...}` (llama.cpp's old `error:` events, API gateways).
    pub(crate) fn from_any_error_body(
        status: Option<u16>,
        body: &serde_json::Value,
    ) -> Option<Self> {
        use serde_json::Value;
        if let Value::Array(items) = body {
            return items
                .iter()
                .find_map(|item| Self::from_any_error_body(status, item));
        }
        if body.get("error").is_some_and(|e| !e.is_null()) {
            return Self::from_error_body(status, body);
        }
        if let Some(message) = text(body.get("message")) {
            return Some(Self::upstream(
                status,
                text(body.get("type")).or_else(|| text(body.get("status"))),
                message,
                text(body.get("code")),
                text(body.get("param")),
            ));
        }
        let message = match body.get("detail")? {
            Value::String(s) => s.clone(),
            // FastAPI's validation errors: a list of `{"loc":[...],"msg":"...","type":"..."}`.
            Value::Array(items) => {
                let msgs: Vec<&str> = items
                    .iter()
                    .filter_map(|i| i.get("msg").and_then(Value::as_str))
                    .collect();
                if msgs.is_empty() {
                    Value::Array(items.clone()).to_string()
                } else {
                    msgs.join("; ")
                }
            }
            other => other.to_string(),
        };
        Some(Self::upstream(status, None, message, None, None))
    }

    fn upstream(
        status: Option<u16>,
        kind: Option<String>,
        message: String,
        code: Option<String>,
        param: Option<String>,
    ) -> Self {
        Self::Upstream {
            status,
            kind: kind.unwrap_or_else(|| "upstream_error".into()),
            message,
            code,
            param,
            retry_after: None,
        }
    }
}

/// A string or number field as text (`"code": 400` and `"code": "busy"` alike).
fn text(v: Option<&serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn http(status: u16) -> AdapterError {
        AdapterError::Upstream {
            status: Some(status),
            kind: "x".into(),
            message: "m".into(),
            code: None,
            param: None,
            retry_after: Some("7".into()),
        }
    }

    fn in_stream() -> AdapterError {
        AdapterError::Upstream {
            status: None,
            kind: "anything the upstream says".into(),
            message: String::new(),
            code: None,
            param: None,
            retry_after: None,
        }
    }

    fn timeout(phase: TimeoutPhase) -> AdapterError {
        AdapterError::Timeout {
            provider: "p".into(),
            phase,
        }
    }

    fn auth() -> AdapterError {
        AdapterError::Auth {
            provider: "p".into(),
            status: 401,
        }
    }

    fn invalid() -> AdapterError {
        AdapterError::InvalidRequest {
            message: "m".into(),
            param: "p".into(),
        }
    }

    #[test]
    fn what_fails_over_before_headers() {
        for e in [
            AdapterError::Connect("c".into()),
            auth(),
            timeout(TimeoutPhase::Connect),
            timeout(TimeoutPhase::Headers),
            http(408),
            http(429),
            http(500),
            http(503),
            http(529),
            http(599),
        ] {
            assert!(e.is_retryable(), "{e:?}");
        }
        for e in [
            timeout(TimeoutPhase::Response),
            timeout(TimeoutPhase::Idle),
            http(400),
            http(404),
            http(422),
            in_stream(),
            AdapterError::Truncated("t".into()),
            AdapterError::Protocol("p".into()),
            invalid(),
        ] {
            assert!(!e.is_retryable(), "{e:?}");
        }
    }

    #[test]
    fn statuses_the_gateway_answers_with() {
        assert_eq!(http(400).http_status(), 400);
        assert_eq!(http(401).http_status(), 401);
        assert_eq!(http(404).http_status(), 404);
        assert_eq!(http(429).http_status(), 429);
        assert_eq!(http(499).http_status(), 499);
        assert_eq!(http(500).http_status(), 502);
        assert_eq!(http(503).http_status(), 502);
        assert_eq!(http(529).http_status(), 503);
        assert_eq!(http(302).http_status(), 502);
        assert_eq!(in_stream().http_status(), 502);
        for phase in [
            TimeoutPhase::Connect,
            TimeoutPhase::Headers,
            TimeoutPhase::Idle,
            TimeoutPhase::Response,
        ] {
            assert_eq!(timeout(phase).http_status(), 504);
        }
        assert_eq!(invalid().http_status(), 400);
        assert_eq!(auth().http_status(), 502);
        assert_eq!(AdapterError::Connect("c".into()).http_status(), 502);
        assert_eq!(AdapterError::Truncated("t".into()).http_status(), 502);
        assert_eq!(AdapterError::Protocol("p".into()).http_status(), 502);
    }

    #[test]
    fn metric_kinds_are_a_fixed_list() {
        assert_eq!(http(503).metric_kind(), "upstream_http");
        assert_eq!(in_stream().metric_kind(), "upstream_stream_error");
        assert_eq!(
            timeout(TimeoutPhase::Idle).metric_kind(),
            "upstream_timeout"
        );
        assert_eq!(
            AdapterError::Connect(String::new()).metric_kind(),
            "upstream_connect"
        );
        assert_eq!(auth().metric_kind(), "upstream_auth");
        assert_eq!(
            AdapterError::Truncated(String::new()).metric_kind(),
            "upstream_truncated"
        );
        assert_eq!(
            AdapterError::Protocol(String::new()).metric_kind(),
            "upstream_protocol_error"
        );
        assert_eq!(invalid().metric_kind(), "invalid_request");
    }

    #[test]
    fn the_upstream_worked_only_when_it_timed_out_after_taking_the_request() {
        assert!(timeout(TimeoutPhase::Response).upstream_worked());
        assert!(timeout(TimeoutPhase::Idle).upstream_worked());
        assert!(!timeout(TimeoutPhase::Connect).upstream_worked());
        assert!(!timeout(TimeoutPhase::Headers).upstream_worked());
        assert!(!http(500).upstream_worked());
        assert!(!AdapterError::Connect("c".into()).upstream_worked());
    }

    #[test]
    fn rate_limits_and_retry_after() {
        assert!(http(429).is_rate_limited());
        assert_eq!(http(429).retry_after(), Some("7"));
        assert_eq!(http(429).upstream_status(), Some(429));
        // A Retry-After on another status is not passed on.
        assert!(!http(503).is_rate_limited());
        assert_eq!(http(503).retry_after(), None);
        assert!(!in_stream().is_rate_limited());
        assert_eq!(in_stream().upstream_status(), None);
        assert_eq!(auth().upstream_status(), None);
    }

    fn read(body: serde_json::Value) -> (String, String, Option<String>) {
        match AdapterError::from_any_error_body(Some(400), &body) {
            Some(AdapterError::Upstream {
                kind,
                message,
                code,
                ..
            }) => (kind, message, code),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn error_bodies_of_every_server_keep_their_type_and_message() {
        let s =
            |k: &str, m: &str, c: Option<&str>| (k.to_owned(), m.to_owned(), c.map(str::to_owned));
        assert_eq!(
            read(json!({"error":{"message":"m","type":"invalid_request_error","code":"c"}})),
            s("invalid_request_error", "m", Some("c"))
        );
        assert_eq!(
            read(json!({"error":"plain"})),
            s("upstream_error", "plain", None)
        );
        assert_eq!(
            read(json!({"error":{"message":"no type"}})),
            s("upstream_error", "no type", None)
        );
        assert_eq!(
            read(
                json!([{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}])
            ),
            s("INVALID_ARGUMENT", "Invalid JSON payload", Some("400"))
        );
        assert_eq!(
            read(
                json!({"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400})
            ),
            s("BadRequestError", "too long", Some("400"))
        );
        assert_eq!(
            read(json!({"detail":"Not Found"})),
            s("upstream_error", "Not Found", None)
        );
        assert_eq!(
            read(
                json!({"detail":[{"loc":["body","messages"],"msg":"Field required","type":"missing"},{"msg":"x"}]})
            ),
            s("upstream_error", "Field required; x", None)
        );
        assert_eq!(
            read(json!({"message":"Forbidden"})),
            s("upstream_error", "Forbidden", None)
        );
        for not_an_error in [
            json!({"choices":[]}),
            json!([1, 2]),
            json!("text"),
            json!({"error":null}),
        ] {
            assert!(
                AdapterError::from_any_error_body(None, &not_an_error).is_none(),
                "{not_an_error}"
            );
        }
    }

    #[test]
    fn in_stream_errors_the_client_caused_are_not_failed_over() {
        let up = |kind: &str, code: Option<&str>| AdapterError::Upstream {
            status: None,
            kind: kind.into(),
            message: "m".into(),
            code: code.map(str::to_owned),
            param: None,
            retry_after: None,
        };
        for e in [
            up("invalid_request_error", None),
            up("x", Some("context_length_exceeded")),
            up("error", Some("400")),
        ] {
            assert!(!e.is_retryable_before_content(), "{e:?}");
            assert_eq!(e.http_status(), 400);
        }
        for e in [
            up("overloaded_error", None),
            up("rate_limit_error", None),
            up("api_error", None),
            up("upstream_error", None),
            up("server_error", Some("502")),
            up("x", Some("429")),
        ] {
            assert!(e.is_retryable_before_content(), "{e:?}");
        }
    }
}
