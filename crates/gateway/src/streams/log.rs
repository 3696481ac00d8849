//! The interface between this instance's streams and the other instances': what one publishes
//! and another finds, tails and cancels ([`StreamLog`]), and its in-memory implementation for
//! a single instance ([`LocalStreamLog`]).

use std::time::Duration;

use async_trait::async_trait;
use relay::{Failure, Handle, StreamId, Writer};

use crate::shared_state::StateError;

/// What another instance published about a stream it runs (or ran).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStream {
    pub id: StreamId,
    /// The instance running the generation.
    pub instance: String,
    /// The team that started it (only it may cancel it).
    pub team: Option<String>,
    pub include_usage: bool,
}

/// The failure a replica ends with when its owner could not copy the stream to Redis for
/// `owner_timeout` (it runs on, readable on its owner only).
pub fn replication_lost() -> Failure {
    Failure {
        message: "the stream's shared copy stopped: Redis did not take its events in time; it can still be read on the instance running it".into(),
        kind: "replication_lost".into(),
        code: Some("replication_lost".into()),
        ..Failure::default()
    }
}

/// The failure a replica ends with when its owner is gone.
pub fn owner_lost() -> Failure {
    Failure {
        message: "the instance running the generation stopped before it finished".into(),
        kind: "owner_lost".into(),
        code: Some("owner_lost".into()),
        ..Failure::default()
    }
}

/// Resolves once other instances can find a published stream (its metadata reached Redis, or
/// the first attempt failed): see [`StreamLog::publish`].
#[derive(Debug, Default)]
pub struct Published(pub(super) Option<tokio::sync::oneshot::Receiver<()>>);

impl Published {
    /// Waits for the first write of the stream's metadata. Bounded by the Redis call timeout
    /// inside the copy task (the sender goes when the first attempt ends, whatever its result).
    pub async fn announced(self) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
    }
}

#[async_trait]
pub trait StreamLog: Send + Sync {
    /// Owner side: copies a local stream's events out as they come (returns at once). The
    /// answer resolves when other instances can find the stream: a client given the stream's
    /// ID before then could ask another instance for it and get a 404, so the response waits
    /// for it (it runs alongside the upstream request, which takes longer).
    fn publish(&self, handle: Handle) -> Published;
    /// A stream another instance runs or ran, if the log knows it.
    async fn lookup(&self, id: &StreamId) -> Result<Option<RemoteStream>, StateError>;
    /// Fills `replica` (registered under `remote.id`) with the stream's events until its
    /// terminal event, or fails it when the owner is lost.
    async fn tail(&self, remote: RemoteStream, replica: Writer);
    /// Asks the instance running the stream to cancel it.
    async fn cancel(&self, id: &StreamId) -> Result<(), StateError>;
    /// At shutdown, after the generations ended: waits (at most `limit`) until their last
    /// events are copied out, then says this instance is gone, so that readers elsewhere get
    /// the real end, and do not wait for a heartbeat to expire.
    async fn shutdown(&self, _limit: Duration) {}
}

/// One instance: streams live in this process only.
#[derive(Debug, Default)]
pub struct LocalStreamLog;

#[async_trait]
impl StreamLog for LocalStreamLog {
    fn publish(&self, _handle: Handle) -> Published {
        Published::default()
    }

    async fn lookup(&self, _id: &StreamId) -> Result<Option<RemoteStream>, StateError> {
        Ok(None)
    }

    async fn tail(&self, _remote: RemoteStream, replica: Writer) {
        // Nothing to copy from: no replica is ever made here.
        replica.fail(owner_lost());
    }

    async fn cancel(&self, _id: &StreamId) -> Result<(), StateError> {
        Ok(())
    }
}
