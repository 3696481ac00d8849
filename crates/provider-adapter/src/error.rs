//! Everything that can go wrong between Sluice and an upstream, in one enum.
//!
//! The gateway maps these to HTTP statuses (before a stream starts) or to in-band error events
//! (after); `kind()` gives the OpenAI-style error `type` the contract fixes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    Headers,
    Idle,
    /// A non-streaming answer did not arrive whole in time (its headers come with it).
    Response,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting to the upstream",
            Self::Headers => "waiting for the upstream's response headers",
            Self::Idle => "waiting for the upstream's next bytes",
            Self::Response => "waiting for the upstream's answer",
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
}
