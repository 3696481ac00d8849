//! Upstream model APIs in, one typed stream of normalised events out.
//!
//! This crate knows HTTP clients (reqwest) and SSE (eventsource-stream) but nothing about the
//! server side: the gateway hands it a parsed request and gets back either a finished
//! completion or a [`EventStream`] of [`StreamEvent`]s. Each upstream kind is a thin I/O shell
//! around pure mapping functions (one upstream event in, zero or more normalised events out).

pub mod anthropic;
pub mod error;
pub mod event;
pub mod openai;
pub mod provider;
pub mod request;
pub mod secret;
pub mod sse;

pub use error::{AdapterError, TimeoutPhase};
pub use event::{ChoiceDelta, FinishReason, ResponseMeta, StreamEvent, ToolCallDelta, Usage};
pub use provider::{Completion, EventStream, Provider, ProviderKind, Timeouts};
pub use request::ChatRequest;
pub use secret::Secret;
