//! What a finished generation was, as the metrics and the summary log see it.

use std::sync::Arc;
use std::time::Duration;

use super::labels::StreamLabels;

/// What a finished generation was: built once at its end, and reported in one call
/// (`crate::generation::finished`) to the metrics and the summary log.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The stream's log tag: the first characters of its ID (the whole ID is a credential).
    /// `None`: a non-streaming completion, which has no stream.
    pub stream: Option<String>,
    /// The model the client asked for.
    pub model: Arc<str>,
    /// Metric labels: the model's (`other` for one the config does not name), the provider,
    /// the team (`""` in open mode).
    pub labels: StreamLabels,
    pub outcome: Outcome,
    /// Gateway side: from the request's arrival to the first token in the relay, ready for
    /// readers. `None` if no token came (and for a non-streaming completion).
    pub ttft: Option<Duration>,
    /// Upstream side: from sending the upstream request to receiving the first token.
    pub upstream_ttft: Option<Duration>,
    /// From the request's arrival to the end.
    pub duration: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The tokens are the upstream's usage; `false`: the gateway's estimate.
    pub usage_reported: bool,
    /// Readers that resumed the stream (reconnects) while it ran.
    pub resumes: u32,
}

/// How a generation ended, for the counters and the summary log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// With the error type a reader saw (an [`AdapterError::metric_kind`], `stream_too_large`
    /// or `server_shutdown`).
    Failed(&'static str),
    Cancelled,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The error type of a failed stream.
    pub fn error_type(&self) -> Option<&'static str> {
        match self {
            Self::Failed(t) => Some(t),
            _ => None,
        }
    }
}
