//! Streams shared through Redis ([`RedisStreamLog`]): where a stream's events go besides the
//! local relay, so that a reader who lands on another instance (a reconnect behind a load
//! balancer) can resume it there, and a `DELETE` there stops it here.
//!
//! - **owner side** (`super::copy`): [`StreamLog::publish`] starts a task per generation that
//!   reads the stream's own log through a relay [`Follower`](relay::Follower) (not a reader: the
//!   grace period ignores it) and appends its events to the Redis Stream
//!   `sluice:stream:{id}:events`, with entry IDs `0-<event id>` so that `Last-Event-ID` maps
//!   directly, together with a metadata hash (`sluice:stream:{id}:meta`: owner instance, team,
//!   include_usage), in one script per batch. While one batch is in flight the relay log is the
//!   buffer, so a slow Redis coalesces events into bigger batches and never blocks the
//!   generation. The script runs at least once per renewal period (a third of `owner_timeout`)
//!   even for a quiet stream: metadata Redis lost (a restart, a `FLUSHALL`) is written again, and
//!   the events are then copied again from the relay, so readers elsewhere neither miss a live
//!   owner nor see a gap. A batch Redis does not take is retried from the last entry Redis holds;
//!   after `owner_timeout` of failures the copy stops, marks the metadata `lost` (readers
//!   elsewhere get `replication_lost`) and the stream stays resumable on this instance only. What
//!   one stream puts into Redis is bounded like the relay's own stream
//!   (`SLUICE_RELAY_MAX_STREAM_BYTES`, each entry counted with Redis's own overhead per entry, so
//!   events are bounded too); past it the copy stops the same way. Both keys expire `retention`
//!   after the end.
//! - **reader side** (`super::tails`): [`StreamLog::lookup`] finds that hash; the caller
//!   registers a local replica and [`StreamLog::tail`] fills it through the relay's
//!   [`Writer::append_replica`], so local readers get the relay's own bytes. One blocking `XREAD`
//!   per instance (one per 256 streams, at most four) reads every tailed stream on a connection
//!   of its own, woken through a per-instance wake stream when a tail joins or leaves: remote
//!   readers cost no Redis connection each, and an event reaches them one round trip after the
//!   owner wrote it.
//! - **cancel**: [`StreamLog::cancel`] publishes the ID on `sluice:cancel`; every instance
//!   subscribes once and cancels the stream if it runs it.
//! - **readers elsewhere**: a replica with readers keeps `sluice:stream:{id}:remote` alive (a
//!   short TTL, refreshed by its tail); while it exists the owner holds a reader of its own
//!   stream, so a generation read only on other instances is not cancelled by the grace period.
//! - **owner death**: each instance refreshes `sluice:instance:{id}` (TTL `owner_timeout`) every
//!   `owner_timeout / 3`; a tail that sees no new entries checks it, and fails the replica with
//!   `owner_lost` once it is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use redis::AsyncCommands;
use relay::{Failure, Handle, Registry, StreamId, Writer};

use super::copy::copy_out;
use super::log::{owner_lost, replication_lost, Published, RemoteStream, StreamLog};
use super::tails::{Tails, READERS};
use crate::lifecycle::Lifecycle;
use crate::shared_state::{SharedState, StateError};

/// The channel every instance listens on for cancels (payload: the stream ID).
pub const CANCEL_CHANNEL: &str = "sluice:cancel";
/// Most entries appended (or read) in one round trip.
pub(super) const BATCH: usize = 512;
/// What Redis keeps per stream entry besides its value (entry ID, field name, the stream's
/// node bookkeeping), as counted against the per-stream bound (see `copy::entry_cost`).
pub(super) const ENTRY_OVERHEAD_BYTES: usize = 32;
/// Expiry of a live stream's keys, refreshed with every batch (a stream whose owner died
/// without ending it goes away by itself).
pub(super) const LIVE_TTL: Duration = Duration::from_secs(600);

pub(super) fn events_key(id: &StreamId) -> String {
    format!("sluice:stream:{id}:events")
}

pub(super) fn meta_key(id: &StreamId) -> String {
    format!("sluice:stream:{id}:meta")
}

/// Present while some other instance has readers of the stream: the owner counts them as one
/// reader, so the grace period does not cancel a generation read only elsewhere.
pub(super) fn remote_readers_key(id: &StreamId) -> String {
    format!("sluice:stream:{id}:remote")
}

pub(super) fn instance_key(instance: &str) -> String {
    format!("sluice:instance:{instance}")
}

/// How often an owner renews what it keeps in Redis (its heartbeat, its streams' metadata).
pub(super) fn renewal(owner_timeout: Duration) -> Duration {
    (owner_timeout / 3).max(Duration::from_millis(100))
}

/// Streams shared through Redis; see the module documentation.
pub struct RedisStreamLog {
    shared: Arc<SharedState>,
    /// For the subscription to cancels (a subscribed connection cannot run other commands) and
    /// the tails' blocking reads.
    client: redis::Client,
    registry: Arc<Registry>,
    retention: Duration,
    /// Runs the copies, the tails' readers, the heartbeat and the cancel listener.
    lifecycle: Lifecycle,
    /// The copy tasks, so that shutdown waits for their last batch.
    copies: tokio_util::task::TaskTracker,
    /// The replicas this instance fills, read by a few blocking reads of their own.
    tails: Arc<Tails>,
}

impl RedisStreamLog {
    /// Sets up the log and starts this instance's heartbeat, cancel listener and tail readers
    /// (background work of `lifecycle`: they end when it stops).
    pub fn start(
        shared: Arc<SharedState>,
        url: &str,
        registry: Arc<Registry>,
        retention: Duration,
        lifecycle: Lifecycle,
    ) -> Result<Arc<Self>, StateError> {
        let shared_instance = shared.instance.clone();
        let log = Arc::new(Self {
            shared,
            client: redis::Client::open(url)?,
            registry,
            retention,
            lifecycle,
            copies: tokio_util::task::TaskTracker::new(),
            tails: Arc::new(Tails::new(&shared_instance)),
        });
        let life = &log.lifecycle;
        life.spawn(log.clone().heartbeat());
        life.spawn(log.clone().listen_for_cancels());
        life.spawn(log.tails.clone().wake(log.shared.clone()));
        for reader in 0..READERS {
            life.spawn(
                log.tails
                    .clone()
                    .read(reader, log.client.clone(), log.shared.clone()),
            );
        }
        Ok(log)
    }

    /// Keeps `sluice:instance:{id}` alive while this process runs (a `SET`, so it is back
    /// within one period after a Redis restart or `FLUSHALL`).
    async fn heartbeat(self: Arc<Self>) {
        let ttl = self.shared.owner_timeout;
        let key = instance_key(&self.shared.instance);
        let mut tick = tokio::time::interval(renewal(ttl));
        loop {
            tick.tick().await;
            let mut conn = self.shared.conn();
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let _ = self
                .shared
                .call(conn.set_options::<_, _, ()>(
                    &key,
                    1,
                    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ms)),
                ))
                .await;
        }
    }

    /// One subscription per instance: cancels the streams this instance runs when asked.
    async fn listen_for_cancels(self: Arc<Self>) {
        loop {
            let run = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(CANCEL_CHANNEL).await?;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(id) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Ok(h) = self.registry.get(&id) {
                        if !h.is_replica() {
                            tracing::info!(stream = %h.id().log_tag(), "cancelled from another instance");
                            h.cancel();
                        }
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            let _ = run.await;
            // Redis went away: subscribe again once it is back.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[async_trait]
impl StreamLog for RedisStreamLog {
    fn publish(&self, handle: Handle) -> Published {
        // The same bound as the relay's own per-stream bound (`SLUICE_RELAY_MAX_STREAM_BYTES`).
        let max_bytes = self.registry.limits().max_stream_bytes;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Background work: shutdown waits for it through `copies` (see `shutdown`), then stops.
        self.lifecycle.spawn(self.copies.track_future(copy_out(
            self.shared.clone(),
            handle,
            self.retention,
            max_bytes,
            tx,
        )));
        Published(Some(rx))
    }

    async fn shutdown(&self, limit: Duration) {
        self.copies.close();
        let _ = tokio::time::timeout(limit, self.copies.wait()).await;
        let mut conn = self.shared.conn();
        let _ = self
            .shared
            .call(conn.del::<_, ()>(instance_key(&self.shared.instance)))
            .await;
    }

    async fn lookup(&self, id: &StreamId) -> Result<Option<RemoteStream>, StateError> {
        let mut conn = self.shared.conn();
        let fields: std::collections::HashMap<String, String> =
            self.shared.call(conn.hgetall(meta_key(id))).await?;
        let Some(instance) = fields.get("instance") else {
            return Ok(None);
        };
        Ok(Some(RemoteStream {
            id: *id,
            instance: instance.clone(),
            team: fields.get("team").filter(|t| !t.is_empty()).cloned(),
            include_usage: fields.get("usage").is_some_and(|u| u == "1"),
        }))
    }

    async fn tail(&self, remote: RemoteStream, mut replica: Writer) {
        let key = events_key(&remote.id);
        let meta = meta_key(&remote.id);
        let owner = instance_key(&remote.instance);
        let owner_timeout = self.shared.owner_timeout;
        // How long without entries before the tail asks whether the owner is still there.
        let quiet = (owner_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        // Dropping it (the tail returns) takes the stream out of the reads at once.
        let mut entries = self.tails.add(key, replica.last_id());
        // Since when Redis has not answered.
        let mut trouble: Option<Instant> = None;
        // Since when the owner's heartbeat has been missing. A live owner writes it again
        // within a renewal period (a third of the owner timeout) after Redis lost it (a
        // restart, a FLUSHALL), so only a longer absence means the owner is gone.
        let mut missing: Option<Instant> = None;
        let tag = remote.id.log_tag().to_owned();
        let remote_key = remote_readers_key(&remote.id);
        let replica_handle = replica.handle();
        // Long enough to outlive a few tail rounds, short enough that the owner's grace period
        // starts soon after the last reader here left.
        let remote_ttl = (quiet * 4).max(Duration::from_secs(3));
        let mut marked: Option<Instant> = None;
        loop {
            if trouble.is_some_and(|t| t.elapsed() >= owner_timeout) {
                tracing::warn!(stream = %tag, "redis has not answered for the owner timeout: failing the replica");
                replica.fail(owner_lost());
                return;
            }
            if replica_handle.reader_count() > 0 && marked.is_none_or(|m| m.elapsed() >= quiet) {
                let mut conn = self.shared.conn();
                let set = self
                    .shared
                    .call(conn.pset_ex::<_, _, ()>(
                        &remote_key,
                        1,
                        u64::try_from(remote_ttl.as_millis()).unwrap_or(u64::MAX),
                    ))
                    .await;
                match set {
                    Ok(()) => marked = Some(Instant::now()),
                    Err(_) => {
                        trouble.get_or_insert_with(Instant::now);
                    }
                }
            }
            let batch = match tokio::time::timeout(quiet, entries.recv()).await {
                Ok(Some(batch)) => batch,
                // Not while the feed lives (its sender stays in the map until it drops).
                Ok(None) => {
                    replica.fail(owner_lost());
                    return;
                }
                Err(_) => {
                    // Quiet: is the owner still there, and still copying?
                    let mut conn = self.shared.conn();
                    let alive: Result<(bool, Option<String>), _> = self
                        .shared
                        .call(
                            redis::pipe()
                                .exists(&owner)
                                .hget(&meta, "lost")
                                .query_async(&mut conn),
                        )
                        .await;
                    match alive {
                        Ok((_, Some(why))) => {
                            tracing::warn!(stream = %tag, why, "the owner stopped copying the stream to redis: failing its replica");
                            replica.fail(replication_lost());
                            return;
                        }
                        Ok((true, None)) => {
                            trouble = None;
                            missing = None;
                        }
                        Ok((false, None)) => {
                            trouble = None;
                            let since = *missing.get_or_insert_with(Instant::now);
                            if since.elapsed() >= owner_timeout / 2 {
                                tracing::warn!(stream = %tag, "the instance running the stream is gone: failing its replica");
                                replica.fail(owner_lost());
                                return;
                            }
                        }
                        Err(_) => {
                            trouble.get_or_insert_with(Instant::now);
                        }
                    }
                    continue;
                }
            };
            trouble = None;
            missing = None;
            let mut appending = replica.batch();
            for (n, entry) in batch {
                if let Err(err) = appending.append_replica(n, &entry) {
                    drop(appending);
                    tracing::warn!(stream = %tag, error = %err, "replica cannot follow its stream");
                    replica.fail(Failure {
                        message: "the stream's shared copy is incomplete".into(),
                        kind: "owner_lost".into(),
                        code: Some("owner_lost".into()),
                        ..Failure::default()
                    });
                    return;
                }
            }
            drop(appending);
            if replica.is_ended() {
                return;
            }
        }
    }

    async fn cancel(&self, id: &StreamId) -> Result<(), StateError> {
        let mut conn = self.shared.conn();
        self.shared
            .call(conn.publish::<_, _, ()>(CANCEL_CHANNEL, id.as_str()))
            .await
    }
}
