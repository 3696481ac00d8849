//! The relay: numbers a generation's events, keeps them in a replay log, and fans them out to
//! any number of readers, each from its own position, encoded as browser events or OpenAI chunks.
//!
//! It knows nothing about HTTP clients or servers: events come in as [`Event`]s and go out as
//! `Bytes` streams a server can send as an SSE body.

/// Log events to the exact bytes of browser events and OpenAI chunks.
pub mod encode;
/// Why a stream cannot be created or read.
pub mod error;
/// What the replay log holds.
pub mod event;
/// One generation: its numbered log, its readers, cancellation.
pub mod generation;
/// Unguessable stream IDs.
pub mod id;
/// A reader from its own position, as an SSE body with keep-alives.
pub mod reader;
/// Streams by ID, with expiry and memory bounds (the in-memory store).
pub mod registry;
/// The seam for a shared store.
pub mod store;

pub use encode::Format;
pub use error::RelayError;
pub use event::{Delta, Event, Failure, Meta, ToolCall, Usage};
pub use generation::Generation;
pub use id::StreamId;
pub use reader::Reader;
pub use registry::{Limits, Registry, Stats};
pub use store::StreamStore;
