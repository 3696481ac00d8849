//! What `benches/stream.rs` needs of the crate's private stream path. Not an API: only built
//! with the `bench` feature.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::driver::drive;
use crate::{openai, EventStream, Provider};

/// `body` through the SSE parser and the OpenAI mapper, as [`Provider::stream`] runs it after
/// the headers.
pub fn openai_stream<B>(body: B, idle: Duration, provider: Provider) -> EventStream
where
    B: Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
{
    drive(
        body,
        idle,
        Box::new(openai::ChunkMapper::default()),
        provider,
    )
}
