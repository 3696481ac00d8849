//! The relay: numbers a generation's events, keeps them in a compact replay log, and fans them
//! out to any number of readers, each from its own position, encoded as browser events or
//! OpenAI chunks.
//!
//! It knows nothing about HTTP clients or servers: events come in through a [`Writer`] and go
//! out of [`Reader`]s as `Bytes` a server can send as an SSE body.

/// Log events to the exact bytes of browser events and OpenAI chunks.
pub mod encode;
/// Why a stream cannot be created or read.
pub mod error;
/// What the writer appends and the encoders read.
pub mod event;
/// The read side of a stream: readers from any position, cancel, outcome.
pub mod handle;
/// Unguessable stream IDs.
pub mod id;
/// The compact replay log of one stream.
mod log;
/// A reader from its own position, as an SSE body with keep-alives.
pub mod reader;
/// Streams by ID, with expiry, the memory bounds and admission.
pub mod registry;
/// Streams copied from another process, entry by entry.
pub mod replica;
/// What a stream's writer, readers and handles share.
mod shared;
/// Wakers that record which source woke a body.
mod signal;
/// The write side of a stream: a single owner appends, then ends it once.
pub mod writer;

pub use encode::Format;
pub use error::RelayError;
pub use event::{Delta, DeltaRef, Done, Event, EventRef, Failure, Meta, ToolCall, Usage};
pub use handle::Handle;
pub use id::StreamId;
pub use reader::{Driver, Reader, SseBody};
pub use registry::{Limits, Registry, Stats};
pub use replica::{Follower, ReplicaError};
pub use writer::{Batch, Writer};

/// A stream outside any registry, with no memory bound (tests, benchmarks).
pub fn standalone(meta: Meta, include_usage: bool) -> Writer {
    let shared = std::sync::Arc::new(shared::Shared::new(
        StreamId::random(),
        log::Log::new(meta),
        include_usage,
        usize::MAX,
        usize::MAX,
        registry::Budget::standalone(),
        None,
    ));
    Writer::new(shared)
}
