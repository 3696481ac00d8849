//! Upstream model APIs in, one typed stream of normalised events out.
//!
//! This crate knows HTTP clients (reqwest) and SSE (eventsource-stream) but nothing about the
//! server side: the gateway hands it a parsed request and gets back either a finished
//! completion or a [`EventStream`] of [`StreamEvent`]s. Each upstream kind is a thin I/O shell
//! around pure mapping functions (one upstream event in, zero or more normalised events out).

/// Anthropic Messages API: request and stream translation.
pub mod anthropic;
/// Azure OpenAI deployments: OpenAI's format at Azure's URL, with Azure's key header.
pub mod azure;
/// The crate-private stream path, opened for the criterion benchmark (`--features bench`).
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
/// Everything that can go wrong with an upstream.
/// An upstream body through the SSE parser and a mapper into normalised events.
mod driver;
pub mod error;
/// The normalised events every upstream is translated into.
pub mod event;
/// Chunk field types that accept what OpenAI-compatible servers really send.
mod lenient;
/// OpenAI-compatible upstreams.
pub mod openai;
/// Property tests over the stream path and request parsing.
#[cfg(test)]
mod proptests;
/// The I/O shell: one configured upstream, its client and timeouts.
pub mod provider;
/// The provider against a local HTTP server.
#[cfg(test)]
mod provider_tests;
/// The client request, parsed once and validated.
pub mod request;
/// API keys that never print.
pub mod secret;
/// Upstream bytes to SSE events (eventsource-stream, with end of input handled).
pub mod sse;

pub use error::{AdapterError, TimeoutPhase};
pub use event::{ChoiceDelta, FinishReason, ResponseMeta, StreamEvent, ToolCallDelta, Usage};
pub use provider::{Completion, EventStream, Provider, ProviderKind, Timeouts};
pub use request::{AnthropicNative, ChatRequest};
pub use secret::Secret;
