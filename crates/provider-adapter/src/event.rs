//! The normalised event stream every upstream is translated into.
//!
//! The shape follows OpenAI's chunk format closely (it is what most clients speak), but every
//! field is typed so that the relay can encode it both as OpenAI chunks and as browser events
//! without parsing JSON again. Fields an upstream sends that have no typed home here and must
//! reach the client intact (logprobs) are carried as raw JSON.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One normalised event from an upstream generation.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// What the upstream said about the response as a whole; sent at most once, before any
    /// delta, when the upstream reports it.
    Meta(ResponseMeta),
    /// New output for one choice.
    Delta(ChoiceDelta),
    /// A choice is complete.
    Finish { choice: u32, reason: FinishReason },
    /// Token counts; the last one seen is the final one.
    Usage(Usage),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    pub id: Option<String>,
    pub model: Option<String>,
    pub created: Option<u64>,
    pub system_fingerprint: Option<String>,
}

/// New output for one choice. At least one field is set.
#[derive(Debug, Clone, Default)]
pub struct ChoiceDelta {
    pub choice: u32,
    pub content: Option<String>,
    /// Thinking text (`reasoning_content` in OpenAI-style streams, `thinking` in Anthropic's).
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
    /// The upstream's `logprobs` object for this delta, byte for byte.
    pub logprobs: Option<Box<RawValue>>,
    /// The signature that closes a thinking block (Anthropic's `signature_delta`): opaque, and
    /// required back, with the block's text, when a client returns the thinking block in a tool
    /// loop. It comes after the block's thinking text, usually as a delta of its own.
    pub reasoning_signature: Option<String>,
}

impl PartialEq for ChoiceDelta {
    fn eq(&self, other: &Self) -> bool {
        self.choice == other.choice
            && self.content == other.content
            && self.reasoning == other.reasoning
            && self.refusal == other.refusal
            && self.tool_calls == other.tool_calls
            && self.logprobs.as_ref().map(|r| r.get()) == other.logprobs.as_ref().map(|r| r.get())
            && self.reasoning_signature == other.reasoning_signature
    }
}

impl ChoiceDelta {
    pub fn text(choice: u32, text: impl Into<String>) -> Self {
        Self {
            choice,
            content: Some(text.into()),
            ..Self::default()
        }
    }

    /// True when the delta carries nothing a client would see (an upstream's role-only or
    /// empty-content chunk); such deltas are not forwarded.
    pub fn is_empty(&self) -> bool {
        self.content.as_deref().is_none_or(str::is_empty)
            && self.reasoning.as_deref().is_none_or(str::is_empty)
            && self.refusal.as_deref().is_none_or(str::is_empty)
            && self.tool_calls.is_empty()
            && self.logprobs.is_none()
            && self
                .reasoning_signature
                .as_deref()
                .is_none_or(str::is_empty)
    }

    /// Bytes of text this delta holds, for memory accounting.
    pub fn text_len(&self) -> usize {
        let t = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        t(&self.content)
            + t(&self.reasoning)
            + t(&self.refusal)
            + t(&self.reasoning_signature)
            + self.logprobs.as_ref().map_or(0, |r| r.get().len())
            + self
                .tool_calls
                .iter()
                .map(|c| t(&c.id) + t(&c.name) + t(&c.arguments))
                .sum::<usize>()
    }
}

/// A fragment of one tool call. `index` numbers the calls of a choice 0, 1, 2, ... in order of
/// appearance; `id` and `name` come with the first fragment, `arguments` is a piece of JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// Why a choice ended, in OpenAI's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
    /// Ended by the gateway (stop button, no readers left).
    Cancelled,
    /// Anything else an upstream said, passed on unchanged.
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::FunctionCall => "function_call",
            Self::Cancelled => "cancelled",
            Self::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "function_call" => Self::FunctionCall,
            "cancelled" => Self::Cancelled,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Token counts in OpenAI's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    // Defaults: some OpenAI-compatible servers leave a count out (`total_tokens`, mostly) or
    // send it as `null`.
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, deserialize_with = "count")]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, deserialize_with = "count")]
    pub reasoning_tokens: u64,
}

/// A token count; `null` is 0 (vLLM and others send `"cached_tokens": null`).
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reason_round_trips() {
        for s in [
            "stop",
            "length",
            "tool_calls",
            "content_filter",
            "function_call",
            "cancelled",
            "eos",
        ] {
            assert_eq!(FinishReason::parse(s).as_str(), s);
        }
    }

    #[test]
    fn role_only_delta_is_empty() {
        let d = ChoiceDelta {
            content: Some(String::new()),
            ..ChoiceDelta::default()
        };
        assert!(d.is_empty());
        assert!(!ChoiceDelta::text(0, "a").is_empty());
    }

    #[test]
    fn a_signature_alone_is_not_empty() {
        let d = ChoiceDelta {
            reasoning_signature: Some("EqQBCkgI".into()),
            ..ChoiceDelta::default()
        };
        assert!(!d.is_empty());
        assert_eq!(d.text_len(), 8);
        let blank = ChoiceDelta {
            reasoning_signature: Some(String::new()),
            ..ChoiceDelta::default()
        };
        assert!(blank.is_empty());
    }
}
