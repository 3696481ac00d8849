//! The relay: numbers a generation's events, keeps them in a replay log, and fans them out to
//! any number of readers, each from its own position, encoded as browser events or OpenAI chunks.
//!
//! It knows nothing about HTTP clients or servers: events come in as [`Event`]s and go out as
//! `Bytes` streams a server can send as an SSE body.

pub mod encode;
pub mod error;
pub mod event;
pub mod generation;
pub mod id;
pub mod reader;
pub mod registry;
pub mod store;

pub use encode::Format;
pub use error::RelayError;
pub use event::{Delta, Event, Failure, Meta, ToolCall, Usage};
pub use generation::Generation;
pub use id::StreamId;
pub use reader::Reader;
pub use registry::{Limits, Registry, Stats};
pub use store::StreamStore;
