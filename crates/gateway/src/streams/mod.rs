//! The resumable streams as handlers see them: [`Streams`] opens a stream for reading (this
//! instance's own, or a replica of one another instance runs), cancels one wherever it runs,
//! and publishes this instance's streams for the others.
//!
//! Sharing goes through a [`StreamLog`]: [`LocalStreamLog`] for one instance (nothing leaves
//! the process; the hot path costs one no-op call per stream), or [`RedisStreamLog`] when
//! instances share Redis (`SLUICE_REDIS_URL`; see `redis_log` for how). When Redis does not
//! answer, a stream another instance runs is not found (`fail_open`: 404) or the request is
//! refused with the limits' 503, `shared_state_unavailable` (`fail_closed`); a cancel that
//! cannot reach the other instances is that 503 either way. This instance's own streams are
//! served without Redis.

mod chats;
mod copy;
mod log;
mod redis_log;
mod responses_store;
mod tails;

use std::sync::Arc;
use std::time::Duration;

use relay::{Format, Handle, Registry, RelayError, StreamId};

pub use chats::Chats;
pub use log::{owner_lost, replication_lost, LocalStreamLog, Published, RemoteStream, StreamLog};
pub use redis_log::{RedisStreamLog, CANCEL_CHANNEL};
pub use responses_store::ResponsesStore;

use crate::config::OnFailure;
use crate::error::GatewayError;
use crate::lifecycle::Lifecycle;
use crate::shared_state::{SharedState, StateError};

/// Every stream this instance can serve: see the module docs.
pub struct Streams {
    registry: Arc<Registry>,
    log: Arc<dyn StreamLog>,
    /// Redis, when streams are shared: its failure policy, and the owner timeout a replica's
    /// first reader may wait for.
    shared: Option<Arc<SharedState>>,
    /// Runs the tasks that fill replicas.
    lifecycle: Lifecycle,
    /// Which stream each chat of the AI SDK's UI stream runs now (`/v1/ui/chat`).
    pub chats: Chats,
    /// Finished Responses-API answers, kept after their streams (`/v1/responses`).
    pub responses: ResponsesStore,
}

/// What [`Streams::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    pub id: StreamId,
    /// The generation was still running (else it had ended, and cancelling changed nothing).
    pub was_live: bool,
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound(format!("stream '{id}' not found or expired"))
}

impl Streams {
    /// Streams in this process only.
    pub fn in_memory(registry: Arc<Registry>, lifecycle: Lifecycle) -> Self {
        Self {
            chats: Chats::new(registry.clone(), None, lifecycle.clone()),
            responses: ResponsesStore::disabled(),
            registry,
            log: Arc::new(LocalStreamLog),
            shared: None,
            lifecycle,
        }
    }

    /// Streams shared with the other instances through Redis (`url`, reached through `shared`),
    /// kept there `retention` after their end. Starts the log's background tasks.
    pub fn through_redis(
        registry: Arc<Registry>,
        shared: Arc<SharedState>,
        url: &str,
        retention: Duration,
        lifecycle: Lifecycle,
    ) -> Result<Self, StateError> {
        let log = RedisStreamLog::start(
            shared.clone(),
            url,
            registry.clone(),
            retention,
            lifecycle.clone(),
        )?;
        Ok(Self {
            chats: Chats::new(registry.clone(), Some(shared.clone()), lifecycle.clone()),
            responses: ResponsesStore::disabled(),
            registry,
            log,
            shared: Some(shared),
            lifecycle,
        })
    }

    /// Keeps finished Responses-API answers `ttl` (zero: not at all), in Redis when streams are
    /// shared, else in memory up to `max_bytes` (see [`ResponsesStore`]).
    #[must_use]
    pub fn keep_responses(mut self, ttl: Duration, max_bytes: usize) -> Self {
        self.responses = ResponsesStore::new(ttl, max_bytes, self.shared.clone());
        self
    }

    /// Owner side: makes a new local stream findable by the other instances (see
    /// [`StreamLog::publish`]).
    pub fn publish(&self, handle: Handle) -> Published {
        self.log.publish(handle)
    }

    /// Stream `id`, to be read from event `after` on in `format`: this instance's own, or a
    /// replica of the stream another instance runs (made and filled by the first request for
    /// it, shared by later ones). A replica is first given a bounded time to receive the events
    /// up to `after`: a reader may resume from a position its owner has sent but this copy has
    /// not received yet.
    pub async fn open(&self, id: &str, after: u64, format: Format) -> Result<Handle, GatewayError> {
        let handle = match self.registry.get(id) {
            Ok(h) => h,
            Err(_) => self.replica(id).await?,
        };
        if handle.is_replica() {
            self.caught_up(&handle, after, format).await;
        }
        Ok(handle)
    }

    /// Cancels stream `id` for `team` (`None`: open mode), wherever it runs. Only the team that
    /// started a stream may cancel it; to another team it does not exist (404, the same answer
    /// as for an unknown ID, so IDs cannot be probed).
    pub async fn cancel(&self, id: &str, team: Option<&str>) -> Result<Cancelled, GatewayError> {
        let local = self.registry.get(id).ok();
        if let Some(handle) = local.as_ref().filter(|h| !h.is_replica()) {
            if handle.owner().is_some() && handle.owner() != team {
                return Err(not_found(id));
            }
            let was_live = !handle.is_finished();
            handle.cancel();
            return Ok(Cancelled {
                id: *handle.id(),
                was_live,
            });
        }
        // Another instance runs it: check the team it recorded, then ask it to stop.
        let r = self.remote(id).await?;
        if r.team.is_some() && r.team.as_deref() != team {
            return Err(not_found(id));
        }
        let was_live = local.as_ref().is_none_or(|h| !h.is_finished());
        if was_live {
            self.log.cancel(&r.id).await.map_err(|e| {
                tracing::debug!(error = %e, "stream cancel through redis failed");
                GatewayError::SharedStateUnavailable
            })?;
        }
        Ok(Cancelled { id: r.id, was_live })
    }

    /// At shutdown, after the generations ended: see [`StreamLog::shutdown`].
    pub async fn shutdown(&self, limit: Duration) {
        self.log.shutdown(limit).await;
    }

    /// What another instance published about stream `id`, if anything (404 if nothing; with
    /// Redis down, 404 under `fail_open`, the limits' 503 under `fail_closed`).
    async fn remote(&self, id: &str) -> Result<RemoteStream, GatewayError> {
        let sid = StreamId::parse(id).ok_or_else(|| not_found(id))?;
        match self.log.lookup(&sid).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(not_found(id)),
            Err(e) => {
                tracing::debug!(error = %e, "stream lookup in redis failed");
                match self.shared.as_ref().map(|s| s.on_failure) {
                    Some(OnFailure::FailClosed) => Err(GatewayError::SharedStateUnavailable),
                    _ => Err(not_found(id)),
                }
            }
        }
    }

    /// A local replica of a stream another instance runs, made (and filled by a task of its
    /// own) by the first request for it; later requests share it.
    async fn replica(&self, id: &str) -> Result<Handle, GatewayError> {
        let r = self.remote(id).await?;
        match self
            .registry
            .create_replica(r.id, r.include_usage, r.team.as_deref().map(Into::into))
        {
            Ok(writer) => {
                let handle = writer.handle();
                let log = self.log.clone();
                // Background work: it fills the replica through the shutdown grace period
                // (its readers get their end), and stops with the server.
                self.lifecycle
                    .spawn(async move { log.tail(r, writer).await });
                Ok(handle)
            }
            Err(RelayError::Exists) => self.registry.get(id).map_err(|_| not_found(id)),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }

    /// Waits (a bounded time) until a replica holds the events up to `after`.
    async fn caught_up(&self, handle: &Handle, after: u64, format: Format) {
        let limit = self.shared.as_ref().map_or(Duration::from_secs(5), |s| {
            s.owner_timeout + Duration::from_secs(5)
        });
        let wait = async {
            let mut follower = handle.follow(handle.last_event_id(Format::Browser));
            let mut scratch = Vec::new();
            while !handle.is_finished() && handle.last_event_id(format) < after {
                scratch.clear();
                if !follower.next_batch(usize::MAX, &mut scratch).await {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisSettings;

    /// Streams through a Redis that never answers (nothing listens on port 1).
    fn unreachable(on_failure: OnFailure) -> Streams {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            on_failure,
            timeout: Duration::from_millis(300),
            lease: Duration::from_secs(30),
            owner_timeout: Duration::from_secs(3),
        };
        let shared = Arc::new(SharedState::new(&settings).expect("redis url"));
        let registry = Arc::new(Registry::new(relay::Limits::default()));
        Streams::through_redis(
            registry,
            shared,
            &settings.url,
            Duration::from_secs(60),
            Lifecycle::new(),
        )
        .expect("streams")
    }

    /// A well-formed stream ID no instance runs.
    const ID: &str = "0123456789abcdefghijkl";

    #[tokio::test]
    async fn redis_down_is_the_limits_503_when_failing_closed_and_404_when_failing_open() {
        let closed = unreachable(OnFailure::FailClosed);
        let open = unreachable(OnFailure::FailOpen);
        assert!(StreamId::parse(ID).is_some());
        // The same error as the limits' when Redis is down: 503 `shared_state_unavailable`.
        let e = closed.open(ID, 0, Format::Browser).await.unwrap_err();
        assert!(matches!(e, GatewayError::SharedStateUnavailable), "{e:?}");
        let e = closed.cancel(ID, None).await.unwrap_err();
        assert!(matches!(e, GatewayError::SharedStateUnavailable), "{e:?}");
        let e = open.open(ID, 0, Format::Browser).await.unwrap_err();
        assert!(matches!(e, GatewayError::NotFound(_)), "{e:?}");
        // Not even a stream ID: nothing to look up.
        let e = closed.open("nope", 0, Format::Browser).await.unwrap_err();
        assert!(matches!(e, GatewayError::NotFound(_)), "{e:?}");
    }

    #[tokio::test]
    async fn in_memory_an_unknown_stream_is_not_found_and_a_local_one_is_cancelled() {
        let registry = Arc::new(Registry::new(relay::Limits::default()));
        let streams = Streams::in_memory(registry.clone(), Lifecycle::new());
        let e = streams.open(ID, 0, Format::Browser).await.unwrap_err();
        assert!(matches!(e, GatewayError::NotFound(_)), "{e:?}");
        let w = registry
            .create_owned(relay::Meta::default(), false, Some("a".into()))
            .expect("a stream");
        let id = w.handle().id().as_str().to_owned();
        assert!(streams.open(&id, 0, Format::Browser).await.is_ok());
        // Another team's stream does not exist for it.
        let e = streams.cancel(&id, Some("b")).await.unwrap_err();
        assert!(matches!(e, GatewayError::NotFound(_)), "{e:?}");
        let c = streams.cancel(&id, Some("a")).await.unwrap();
        assert!(c.was_live);
        assert!(w.handle().is_cancelled());
    }
}
