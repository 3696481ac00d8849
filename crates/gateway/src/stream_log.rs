//! Resumable streams across instances: where a stream's events go besides the local relay, so
//! that a reader who lands on another instance (a reconnect behind a load balancer) can resume
//! it there, and a `DELETE` there stops it here.
//!
//! [`StreamLog`] has two implementations: [`LocalStreamLog`] (one instance: nothing leaves the
//! process; the hot path costs one no-op call per stream) and [`RedisStreamLog`]:
//!
//! - **owner side**: [`StreamLog::publish`] starts a task per generation that reads the stream's
//!   own log through a relay [`Follower`](relay::Follower) (not a reader: the grace period
//!   ignores it) and appends its events to the Redis Stream `sluice:stream:{id}:events`, with
//!   entry IDs `0-<event id>` so that `Last-Event-ID` maps directly. Appends are pipelined in
//!   batches; while one is in flight the relay log is the buffer, so a slow Redis coalesces
//!   events into bigger batches and never blocks the generation. A batch Redis does not take is
//!   retried from the last entry Redis holds; after `owner_timeout` of failures the copy stops,
//!   marks the metadata `lost` (readers elsewhere get `replication_lost`) and the stream stays
//!   resumable on this instance only. A metadata hash
//!   (`sluice:stream:{id}:meta`: owner instance, team, include_usage) goes first. Both keys
//!   expire `retention` after the end.
//! - **reader side**: [`StreamLog::lookup`] finds that hash; the caller registers a local
//!   replica and [`StreamLog::tail`] fills it (`XREAD BLOCK` on a connection of its own) through
//!   the relay's [`Writer::append_replica`], so local readers get the relay's own bytes.
//! - **cancel**: [`StreamLog::cancel`] publishes the ID on `sluice:cancel`; every instance
//!   subscribes once and cancels the stream if it runs it.
//! - **readers elsewhere**: a replica with readers keeps `sluice:stream:{id}:remote` alive
//!   (a short TTL, refreshed by its tail); while it exists the owner holds a reader of its own
//!   stream, so a generation read only on other instances is not cancelled by the grace period.
//! - **owner death**: each instance refreshes `sluice:instance:{id}` (TTL `owner_timeout`)
//!   every `owner_timeout / 3`; a tail that sees no new entries checks it, and fails the replica
//!   with `owner_lost` once it is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use relay::{Failure, Handle, Registry, StreamId, Writer};
use tokio_util::sync::CancellationToken;

use crate::shared_state::{SharedState, StateError};

/// The channel every instance listens on for cancels (payload: the stream ID).
pub const CANCEL_CHANNEL: &str = "sluice:cancel";
/// Most entries appended (or read) in one round trip.
const BATCH: usize = 512;
/// Entries a Redis Stream keeps (approximately): far more than any answer has events.
const MAX_ENTRIES: usize = 100_000;
/// Expiry of a live stream's keys, refreshed with every batch (a stream whose owner died
/// without ending it goes away by itself).
const LIVE_TTL: Duration = Duration::from_secs(600);

fn events_key(id: &StreamId) -> String {
    format!("sluice:stream:{id}:events")
}

fn meta_key(id: &StreamId) -> String {
    format!("sluice:stream:{id}:meta")
}

/// Present while some other instance has readers of the stream: the owner counts them as one
/// reader, so the grace period does not cancel a generation read only elsewhere.
fn remote_readers_key(id: &StreamId) -> String {
    format!("sluice:stream:{id}:remote")
}

fn instance_key(instance: &str) -> String {
    format!("sluice:instance:{instance}")
}

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

#[async_trait]
pub trait StreamLog: Send + Sync {
    /// Owner side: copies a local stream's events out as they come (returns at once).
    fn publish(&self, handle: Handle);
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
    fn publish(&self, _handle: Handle) {}

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

/// Streams shared through Redis; see the module documentation.
pub struct RedisStreamLog {
    shared: Arc<SharedState>,
    /// For the connections that block (tails) or subscribe (cancels).
    client: redis::Client,
    registry: Arc<Registry>,
    retention: Duration,
    /// The copy tasks, so that shutdown waits for their last batch.
    copies: tokio_util::task::TaskTracker,
}

impl RedisStreamLog {
    /// Sets up the log and starts this instance's heartbeat and cancel listener (until `stop`).
    pub fn start(
        shared: Arc<SharedState>,
        url: &str,
        registry: Arc<Registry>,
        retention: Duration,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, StateError> {
        let log = Arc::new(Self {
            shared,
            client: redis::Client::open(url)?,
            registry,
            retention,
            copies: tokio_util::task::TaskTracker::new(),
        });
        tokio::spawn(log.clone().heartbeat(stop.clone()));
        tokio::spawn(log.clone().listen_for_cancels(stop));
        Ok(log)
    }

    /// Keeps `sluice:instance:{id}` alive while this process runs.
    async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let ttl = self.shared.owner_timeout;
        let key = instance_key(&self.shared.instance);
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
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
    async fn listen_for_cancels(self: Arc<Self>, stop: CancellationToken) {
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
            tokio::select! {
                () = stop.cancelled() => return,
                _ = run => {}
            }
            // Redis went away: subscribe again once it is back.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// The owner's copy loop for one stream.
    async fn copy_out(shared: Arc<SharedState>, handle: Handle, retention: Duration) {
        let id = *handle.id();
        let (events, meta) = (events_key(&id), meta_key(&id));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut first = redis::pipe();
        first
            .hset_multiple(
                &meta,
                &[
                    ("instance", shared.instance.as_str()),
                    ("team", handle.owner().unwrap_or("")),
                    ("usage", if handle.include_usage() { "1" } else { "0" }),
                ],
            )
            .ignore()
            .pexpire(&meta, ms(LIVE_TTL) as i64)
            .ignore();
        // The metadata goes out at once, while the upstream request is still on its way, so
        // that another instance finds the stream as soon as its ID is known to a client.
        let mut pending = None;
        let mut conn = shared.conn();
        if shared
            .call(first.query_async::<()>(&mut conn))
            .await
            .is_err()
        {
            // Retried with the first batch.
            pending = Some(first.clone());
        }
        let mut follower = handle.follow(0);
        // Since when Redis has not taken a batch (the copy retries until `owner_timeout`).
        let mut failing: Option<Instant> = None;
        let remote = remote_readers_key(&id);
        // A reader that is never read: it only counts, while readers elsewhere exist.
        let mut remote_guard: Option<relay::Reader> = None;
        let mut batch = Vec::with_capacity(16);
        loop {
            let from = follower.position();
            let more = follower.next_batch(BATCH, &mut batch).await;
            let mut pipe = pending.take().unwrap_or_else(redis::pipe);
            let ttl = if more && !handle.is_finished() {
                LIVE_TTL
            } else {
                retention
            };
            for (n, entry) in batch.drain(..) {
                pipe.cmd("XADD")
                    .arg(&events)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(MAX_ENTRIES)
                    .arg(format!("0-{n}"))
                    .arg("e")
                    .arg(entry)
                    .ignore();
            }
            pipe.pexpire(&events, ms(ttl) as i64)
                .ignore()
                .pexpire(&meta, ms(ttl) as i64)
                .ignore()
                .exists(&remote);
            let mut conn = shared.conn();
            match shared.call(pipe.query_async::<(bool,)>(&mut conn)).await {
                Ok((elsewhere,)) => {
                    if failing.take().is_some() {
                        tracing::info!(stream = %id.log_tag(), "redis takes the stream's events again");
                    }
                    if elsewhere && remote_guard.is_none() {
                        remote_guard = Some(handle.reader(relay::Format::Browser));
                    } else if !elsewhere {
                        remote_guard = None;
                    }
                }
                Err(e) => {
                    // Not the end of the copy: readers elsewhere would wait for events that
                    // never come. Retry (from what Redis holds) until `owner_timeout`, then
                    // tell them, so that every remote reader gets an end.
                    let since = *failing.get_or_insert_with(|| {
                        tracing::warn!(stream = %id.log_tag(), error = %e, "redis did not take the stream's events: retrying");
                        Instant::now()
                    });
                    if since.elapsed() >= shared.owner_timeout {
                        tracing::warn!(stream = %id.log_tag(), "cannot share the stream through redis: it stays resumable on this instance only, readers elsewhere get replication_lost");
                        mark_lost(&shared, &meta, retention).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // The batch may have been applied before the answer was lost: go on from
                    // the last entry Redis holds (XADD refuses an ID it has).
                    let mut conn = shared.conn();
                    let stored: Result<redis::streams::StreamRangeReply, _> = shared
                        .call(conn.xrevrange_count(&events, "+", "-", 1))
                        .await;
                    let at = match stored {
                        Ok(r) => r
                            .ids
                            .first()
                            .and_then(|e| e.id.strip_prefix("0-")?.parse::<u64>().ok())
                            .unwrap_or(0),
                        Err(_) => from,
                    };
                    follower = handle.follow(at);
                    pending = Some(first.clone());
                    continue;
                }
            }
            if !more || follower_done(&handle, &follower) {
                return;
            }
        }
    }
}

/// Marks the stream's shared copy as given up (`lost` in its metadata), so that tails fail
/// their replicas with [`replication_lost`] instead of waiting. A few tries: Redis has just
/// been failing; if it stays down, the tails' own timeout ends their readers.
async fn mark_lost(shared: &SharedState, meta: &str, retention: Duration) {
    let ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    for _ in 0..5 {
        let mut conn = shared.conn();
        let mut pipe = redis::pipe();
        pipe.hset(meta, "lost", 1)
            .ignore()
            .pexpire(meta, ms)
            .ignore();
        if shared.call(pipe.query_async::<()>(&mut conn)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// True once the follower has taken the stream's terminal event.
fn follower_done(handle: &Handle, follower: &relay::Follower) -> bool {
    handle.is_finished() && follower.position() >= handle.last_event_id(relay::Format::Browser)
}

#[async_trait]
impl StreamLog for RedisStreamLog {
    fn publish(&self, handle: Handle) {
        self.copies
            .spawn(Self::copy_out(self.shared.clone(), handle, self.retention));
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
        let block = (owner_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.shared.timeout()))
            .set_response_timeout(Some(block + self.shared.timeout()));
        let mut conn = None;
        // Since when Redis has not answered.
        let mut trouble: Option<Instant> = None;
        // Reads in a row that found no heartbeat of the owner.
        let mut missing = 0u32;
        let tag = remote.id.log_tag().to_owned();
        let remote_key = remote_readers_key(&remote.id);
        let replica_handle = replica.handle();
        // Long enough to outlive a few tail rounds, short enough that the owner's grace period
        // starts soon after the last reader here left.
        let remote_ttl = (block * 4).max(Duration::from_secs(3));
        loop {
            if trouble.is_some_and(|t| t.elapsed() >= owner_timeout) {
                tracing::warn!(stream = %tag, "redis has not answered for the owner timeout: failing the replica");
                replica.fail(owner_lost());
                return;
            }
            if conn.is_none() {
                conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok();
            }
            let Some(c) = conn.as_mut() else {
                trouble.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if replica_handle.reader_count() > 0 {
                let set: Result<(), _> = c
                    .pset_ex(&remote_key, 1, remote_ttl.as_millis() as u64)
                    .await;
                if set.is_err() {
                    conn = None;
                    trouble.get_or_insert_with(Instant::now);
                    continue;
                }
            }
            let opts = StreamReadOptions::default()
                .count(BATCH)
                .block(block.as_millis() as usize);
            let after = format!("0-{}", replica.last_id());
            let reply: Result<Option<StreamReadReply>, _> =
                c.xread_options(&[&key], &[&after], &opts).await;
            let reply = match reply {
                Ok(r) => r,
                Err(_) => {
                    conn = None;
                    trouble.get_or_insert_with(Instant::now);
                    continue;
                }
            };
            let entries: Vec<_> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if entries.is_empty() {
                // Quiet: is the owner still there, and still copying?
                let alive: Result<(bool, Option<String>), _> = redis::pipe()
                    .exists(&owner)
                    .hget(&meta, "lost")
                    .query_async(c)
                    .await;
                if let Ok((_, Some(_))) = alive {
                    tracing::warn!(stream = %tag, "the owner stopped copying the stream to redis: failing its replica");
                    replica.fail(replication_lost());
                    return;
                }
                match alive.map(|(a, _)| a) {
                    Ok(true) => {
                        trouble = None;
                        missing = 0;
                    }
                    // Its heartbeat expired: gone (checked twice, a read apart, so that an
                    // end written just before is read first).
                    Ok(false) => {
                        missing += 1;
                        if missing >= 2 {
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
            trouble = None;
            missing = 0;
            let mut batch = replica.batch();
            for e in entries {
                let n =
                    e.id.strip_prefix("0-")
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                let Some(entry) = e.get::<String>("e") else {
                    continue;
                };
                if let Err(err) = batch.append_replica(n, &entry) {
                    drop(batch);
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
            drop(batch);
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
