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
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting to the upstream",
            Self::Headers => "waiting for the upstream's response headers",
            Self::Idle => "waiting for the upstream's next bytes",
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
    #[error("upstream timed out {0}")]
    Timeout(TimeoutPhase),
    /// The upstream could not be reached or the connection failed before any response.
    #[error("upstream connection failed: {0}")]
    Connect(String),
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
            Self::Timeout(_) => "upstream_timeout",
            Self::Connect(_) => "upstream_error",
            Self::Truncated(_) => "upstream_truncated",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::InvalidRequest { .. } => "invalid_request_error",
        }
    }

    /// The error `code` a client sees.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Upstream { code, .. } => code.as_deref(),
            Self::Timeout(_) => Some("upstream_timeout"),
            Self::Connect(_) => Some("upstream_unreachable"),
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

    /// A helper for in-stream errors: `{"error":{...}}` bodies.
    pub(crate) fn from_error_body(status: Option<u16>, body: &serde_json::Value) -> Option<Self> {
        let err = body.get("error")?;
        let text = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if let serde_json::Value::String(message) = err {
            return Some(Self::Upstream {
                status,
                kind: "upstream_error".into(),
                message: message.clone(),
                code: None,
                param: None,
                retry_after: None,
            });
        }
        Some(Self::Upstream {
            status,
            kind: text(err.get("type")).unwrap_or_else(|| "upstream_error".into()),
            message: text(err.get("message")).unwrap_or_else(|| "upstream error".into()),
            code: text(err.get("code")),
            param: text(err.get("param")),
            retry_after: None,
        })
    }
}
