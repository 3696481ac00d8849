//! What the replay log holds: one [`Event`] per id.
//!
//! Every event maps to exactly one event in each output format (browser events and OpenAI
//! chunks), so the two formats share their `id:` numbers. Per-choice finish reasons and usage are
//! collected by the generation and written as the one terminal `Done` event, which is what lets
//! the browser's `done` carry both.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Clone)]
pub enum Event {
    Delta(Delta),
    Done(Done),
    Failed(Failure),
}

impl Event {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Delta(_))
    }

    /// This event, borrowed, as the encoders take it.
    pub fn view(&self) -> EventRef<'_> {
        match self {
            Self::Delta(d) => EventRef::Delta(d.view()),
            Self::Done(d) => EventRef::Done(d),
            Self::Failed(f) => EventRef::Failed(f),
        }
    }
}

/// An event borrowed from the log (or from an [`Event`]): what the encoders read.
#[derive(Debug, Clone, Copy)]
pub enum EventRef<'a> {
    Delta(DeltaRef<'a>),
    Done(&'a Done),
    Failed(&'a Failure),
}

impl EventRef<'_> {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Delta(_))
    }

    /// An owned copy.
    pub fn to_event(&self) -> Event {
        match self {
            Self::Delta(d) => Event::Delta(d.to_delta()),
            Self::Done(d) => Event::Done((*d).clone()),
            Self::Failed(f) => Event::Failed((*f).clone()),
        }
    }
}

/// A delta borrowed from the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeltaRef<'a> {
    pub choice: u32,
    /// First delta of its choice: the OpenAI chunk carries `"role":"assistant"`.
    pub first: bool,
    pub content: Option<&'a str>,
    pub reasoning: Option<&'a str>,
    pub refusal: Option<&'a str>,
    pub tool_calls: &'a [ToolCall],
    pub logprobs: Option<&'a RawValue>,
    /// See [`Delta::signature`].
    pub signature: Option<&'a str>,
}

impl DeltaRef<'_> {
    pub fn to_delta(&self) -> Delta {
        Delta {
            choice: self.choice,
            content: self.content.map(str::to_owned),
            reasoning: self.reasoning.map(str::to_owned),
            refusal: self.refusal.map(str::to_owned),
            tool_calls: self.tool_calls.to_vec(),
            logprobs: self.logprobs.map(ToOwned::to_owned),
            signature: self.signature.map(str::to_owned),
            first: self.first,
        }
    }
}

/// Response-level facts the OpenAI chunk format repeats in every chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub choice: u32,
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub logprobs: Option<Box<RawValue>>,
    /// The signature that closes a thinking block (Anthropic's `signature_delta`), which a
    /// client must send back with the block. It goes with thinking text or alone (it comes
    /// after the block's text); the browser and OpenAI formats do not show it (see
    /// [`crate::encode`]), the Anthropic dialect sends it as its `signature_delta`.
    pub signature: Option<String>,
    /// First delta of its choice: the OpenAI chunk carries `"role":"assistant"`. Set by the
    /// generation on append.
    pub first: bool,
}

impl Delta {
    pub fn text(choice: u32, text: impl Into<String>) -> Self {
        Self {
            choice,
            content: Some(text.into()),
            ..Self::default()
        }
    }

    /// This delta, borrowed, as the encoders take it.
    pub fn view(&self) -> DeltaRef<'_> {
        DeltaRef {
            choice: self.choice,
            first: self.first,
            content: self.content.as_deref(),
            reasoning: self.reasoning.as_deref(),
            refusal: self.refusal.as_deref(),
            tool_calls: &self.tool_calls,
            logprobs: self.logprobs.as_deref(),
            signature: self.signature.as_deref(),
        }
    }

    /// Approximate heap bytes held, for the memory bounds.
    pub fn heap_bytes(&self) -> usize {
        let t = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        t(&self.content)
            + t(&self.reasoning)
            + t(&self.refusal)
            + t(&self.signature)
            + self.logprobs.as_ref().map_or(0, |r| r.get().len())
            + self
                .tool_calls
                .iter()
                .map(|c| std::mem::size_of::<ToolCall>() + t(&c.id) + t(&c.name) + t(&c.arguments))
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// The end of a generation: each choice's finish reason, in choice order, and the final usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    pub finish_reasons: Vec<(u32, String)>,
    pub usage: Option<Usage>,
}

impl Done {
    /// The finish reason of the first choice, which the browser's `done` event reports.
    pub fn finish_reason(&self) -> &str {
        self.finish_reasons
            .first()
            .map_or("stop", |(_, r)| r.as_str())
    }
}

/// A failure, in OpenAI's error vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    /// Choices that had finished before the failure (`n` > 1), with their reasons: the OpenAI
    /// format delivers them before the error, since they were received. Filled in by the
    /// writer; not part of the browser's `failed` payload.
    #[serde(skip)]
    pub finish_reasons: Vec<(u32, String)>,
}

/// Token counts in OpenAI's shape, serialised as OpenAI writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionDetails {
    pub reasoning_tokens: u64,
}
