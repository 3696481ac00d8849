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
//!   entry IDs `0-<event id>` so that `Last-Event-ID` maps directly, together with a metadata
//!   hash (`sluice:stream:{id}:meta`: owner instance, team, include_usage), in one script per
//!   batch. While one batch is in flight the relay log is the buffer, so a slow Redis coalesces
//!   events into bigger batches and never blocks the generation. The script runs at least once
//!   per renewal period (a third of `owner_timeout`) even for a quiet stream: metadata Redis
//!   lost (a restart, a `FLUSHALL`) is written again, and the events are then copied again
//!   from the relay, so readers elsewhere neither miss a live owner nor see a gap. A batch
//!   Redis does not take is retried from the last entry Redis holds; after `owner_timeout` of
//!   failures the copy stops, marks the metadata `lost` (readers elsewhere get
//!   `replication_lost`) and the stream stays resumable on this instance only. What one stream
//!   puts into Redis is bounded like the relay's own stream (`SLUICE_RELAY_MAX_STREAM_BYTES`,
//!   each entry counted with Redis's own overhead per entry, so events are bounded too); past
//!   it the copy stops the same way. Both keys expire `retention` after the end.
//! - **reader side**: [`StreamLog::lookup`] finds that hash; the caller registers a local
//!   replica and [`StreamLog::tail`] fills it through the relay's [`Writer::append_replica`], so
//!   local readers get the relay's own bytes. One blocking `XREAD` per instance (one per 256
//!   streams, at most four) reads every tailed stream on a connection of its own, woken through
//!   a per-instance wake stream when a tail joins or leaves: remote readers cost no Redis
//!   connection each, and an event reaches them one round trip after the owner wrote it.
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
use redis::streams::StreamReadReply;
use redis::AsyncCommands;
use relay::{Failure, Handle, Registry, StreamId, Writer};
use tokio_util::sync::CancellationToken;

use crate::shared_state::{SharedState, StateError};

/// The channel every instance listens on for cancels (payload: the stream ID).
pub const CANCEL_CHANNEL: &str = "sluice:cancel";
/// Most entries appended (or read) in one round trip.
const BATCH: usize = 512;
/// What Redis keeps per stream entry besides its value (entry ID, field name, the stream's
/// node bookkeeping), as counted against the per-stream bound (see `entry_cost`).
const ENTRY_OVERHEAD_BYTES: usize = 32;
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

/// Resolves once other instances can find a published stream (its metadata reached Redis, or
/// the first attempt failed): see [`StreamLog::publish`].
#[derive(Debug, Default)]
pub struct Published(Option<tokio::sync::oneshot::Receiver<()>>);

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

/// Streams shared through Redis; see the module documentation.
pub struct RedisStreamLog {
    shared: Arc<SharedState>,
    /// For the subscription to cancels (a subscribed connection cannot run other commands) and
    /// the tails' blocking reads.
    client: redis::Client,
    registry: Arc<Registry>,
    retention: Duration,
    /// The copy tasks, so that shutdown waits for their last batch.
    copies: tokio_util::task::TaskTracker,
    /// The replicas this instance fills, read by a few blocking reads of their own.
    tails: Arc<Tails>,
}

impl RedisStreamLog {
    /// Sets up the log and starts this instance's heartbeat, cancel listener and tail readers
    /// (until `stop`).
    pub fn start(
        shared: Arc<SharedState>,
        url: &str,
        registry: Arc<Registry>,
        retention: Duration,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, StateError> {
        let shared_instance = shared.instance.clone();
        let log = Arc::new(Self {
            shared,
            client: redis::Client::open(url)?,
            registry,
            retention,
            copies: tokio_util::task::TaskTracker::new(),
            tails: Arc::new(Tails::new(&shared_instance)),
        });
        tokio::spawn(log.clone().heartbeat(stop.clone()));
        tokio::spawn(log.clone().listen_for_cancels(stop.clone()));
        tokio::spawn(log.tails.clone().wake(log.shared.clone(), stop.clone()));
        for reader in 0..READERS {
            tokio::spawn(log.tails.clone().read(
                reader,
                log.client.clone(),
                log.shared.clone(),
                stop.clone(),
            ));
        }
        Ok(log)
    }

    /// Keeps `sluice:instance:{id}` alive while this process runs (a `SET`, so it is back
    /// within one period after a Redis restart or `FLUSHALL`).
    async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let ttl = self.shared.owner_timeout;
        let key = instance_key(&self.shared.instance);
        let mut tick = tokio::time::interval(renewal(ttl));
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
    async fn copy_out(
        shared: Arc<SharedState>,
        handle: Handle,
        retention: Duration,
        max_bytes: usize,
        announced: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut announced = Some(announced);
        let id = *handle.id();
        let keys = [meta_key(&id), events_key(&id), remote_readers_key(&id)];
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let script = redis::Script::new(COPY_SCRIPT);
        let mut follower = handle.follow(0);
        // Whether Redis took a batch of this copy: from then on a missing metadata hash means
        // Redis lost the stream (a restart, a FLUSHALL), and the copy starts over.
        let mut written = false;
        // Since when Redis has not taken a batch (the copy retries until `owner_timeout`).
        let mut failing: Option<Instant> = None;
        // A reader that is never read: it only counts, while readers elsewhere exist.
        let mut remote_guard: Option<relay::Reader> = None;
        // What the copy put into Redis, counted once per event (a batch sent again after a
        // failure is not counted twice): see `entry_cost`.
        let (mut cost, mut counted_up_to) = (0usize, 0u64);
        let mut over = false;
        let renew = renewal(shared.owner_timeout);
        let mut first = true;
        let mut batch = Vec::with_capacity(16);
        loop {
            let from = follower.position();
            // At least once per renewal period, even when the stream is quiet, so that
            // metadata Redis lost is written again while the owner lives. Cancel-safe: the
            // follower keeps its position in itself, not in the future.
            // The first round does not wait: the metadata goes out at once, while the upstream
            // request is still on its way, so that another instance finds the stream as soon
            // as its ID is known to a client.
            let more = if std::mem::take(&mut first) {
                true
            } else {
                tokio::time::timeout(renew, follower.next_batch(BATCH, &mut batch))
                    .await
                    .unwrap_or(true)
            };
            let last = handle.last_event_id(relay::Format::Browser);
            let finished = handle.is_finished();
            let ttl = if more && !finished {
                LIVE_TTL
            } else {
                retention
            };
            let mut inv = script.key(&keys[0]);
            inv.key(&keys[1])
                .key(&keys[2])
                .arg(&shared.instance)
                .arg(handle.owner().unwrap_or(""))
                .arg(if handle.include_usage() { "1" } else { "0" })
                .arg(ms(ttl))
                .arg(if written { "1" } else { "0" });
            for (n, entry) in batch.drain(..) {
                if n > counted_up_to {
                    counted_up_to = n;
                    cost = cost.saturating_add(entry_cost(&entry));
                }
                // The terminal event always goes: remote readers then get the real end (a
                // `stream_too_large` the relay's own bound ended it with included).
                // Not after a skipped event, though: that would leave a gap in Redis.
                let terminal = finished && n >= last;
                if over || (!terminal && cost > max_bytes) {
                    over = true;
                    continue;
                }
                inv.arg(format!("0-{n}")).arg(entry);
            }
            let mut conn = shared.conn();
            let result = shared.call(inv.invoke_async::<i64>(&mut conn)).await;
            // The first attempt is over: the stream's ID may go to its client now.
            if let Some(tx) = announced.take() {
                let _ = tx.send(());
            }
            match result {
                Ok(-1) => {
                    // Redis lost the stream: its metadata is back (the script wrote it), the
                    // events key was cleared; copy every event again from the relay. Readers
                    // elsewhere read on from where they are: no gap, no duplicate.
                    tracing::warn!(stream = %id.log_tag(), "redis lost the stream's shared copy: copying it again");
                    follower = handle.follow(0);
                    (cost, counted_up_to, over) = (0, 0, false);
                    continue;
                }
                Ok(elsewhere) => {
                    written = true;
                    if failing.take().is_some() {
                        tracing::info!(stream = %id.log_tag(), "redis takes the stream's events again");
                    }
                    if elsewhere == 1 && remote_guard.is_none() {
                        remote_guard = Some(handle.reader(relay::Format::Browser));
                    } else if elsewhere != 1 {
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
                        mark_lost(&shared, &keys[0], LOST_TIMEOUT, retention).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // The batch may have been applied before the answer was lost: go on from
                    // the last entry Redis holds (XADD refuses an ID it has).
                    let mut conn = shared.conn();
                    let stored: Result<redis::streams::StreamRangeReply, _> = shared
                        .call(conn.xrevrange_count(&keys[1], "+", "-", 1))
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
                    continue;
                }
            }
            if over {
                tracing::warn!(stream = %id.log_tag(), max_bytes, "the stream outgrew what one stream may put into redis: readers elsewhere get replication_lost, it stays resumable on this instance");
                mark_lost(&shared, &keys[0], LOST_TOO_LARGE, retention).await;
                return;
            }
            if !more || follower_done(&handle, &follower) {
                return;
            }
        }
    }
}

/// The owner's write of one batch, atomic so that a Redis that lost the stream (a restart, a
/// `FLUSHALL`) between two batches is noticed before a later event lands in an empty key (a
/// reader from the start would find a gap). KEYS: meta, events, remote readers. ARGV: instance,
/// team, usage flag, TTL (ms), whether an earlier batch was taken, then (entry ID, entry) pairs.
/// Returns -1 when the stream was lost (its metadata is written again, its events cleared: the
/// caller copies them again from the start), else whether readers elsewhere exist (0/1).
const COPY_SCRIPT: &str = r"
local lost = ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'team', ARGV[2], 'usage', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if lost then
  redis.call('DEL', KEYS[2])
  return -1
end
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[2], ARGV[i], 'e', ARGV[i + 1])
end
if #ARGV >= 6 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return redis.call('EXISTS', KEYS[3])
";

/// What one event costs against the per-stream bound in Redis: its entry, and what Redis keeps
/// per entry besides (its ID and field name, and the stream's own bookkeeping), so that the
/// bound limits the number of events as well as their bytes.
fn entry_cost(entry: &str) -> usize {
    entry.len() + ENTRY_OVERHEAD_BYTES
}

/// How often an owner renews what it keeps in Redis (its heartbeat, its streams' metadata).
fn renewal(owner_timeout: Duration) -> Duration {
    (owner_timeout / 3).max(Duration::from_millis(100))
}

/// Why the owner gave up its stream's shared copy (the `lost` field of its metadata).
const LOST_TIMEOUT: &str = "timeout";
const LOST_TOO_LARGE: &str = "too_large";

/// Marks the stream's shared copy as given up (`lost` in its metadata, with why), so that
/// tails fail their replicas with [`replication_lost`] instead of waiting. A few tries: Redis
/// may have just been failing; if it stays down, the tails' own timeout ends their readers.
async fn mark_lost(shared: &SharedState, meta: &str, why: &str, retention: Duration) {
    let ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    for _ in 0..5 {
        let mut conn = shared.conn();
        let mut pipe = redis::pipe();
        pipe.hset(meta, "lost", why)
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

/// The replicas this instance fills, and the few tasks that read their Redis Streams: each a
/// blocking `XREAD` over its share of every tailed stream on a Redis connection of its own (not
/// the shared multiplexed one: a blocked command would hold up its other calls, and run into
/// its response timeout). One reader while the instance tails up to [`READ_KEYS`] streams, at
/// most [`READERS`]: ten thousand remote readers cost this instance a few Redis connections and
/// one command per event burst, not a connection each, and an event reaches a replica one Redis
/// round trip after the owner wrote it, with no polling pause.
///
/// Each read also blocks on the instance's wake stream (`sluice:instance:{id}:wake`): when a
/// tail joins or leaves (or a slow one has room again) the instance appends to it, so every
/// blocked read returns and reads again with the new set of streams at once.
struct Tails {
    subs: std::sync::Mutex<std::collections::HashMap<String, Sub>>,
    /// Bumped when the set of tails to read changes; readers with nothing to read wait on it,
    /// the waker turns it into an entry of the wake stream for the blocked ones.
    changed: tokio::sync::watch::Sender<u64>,
    wake_key: String,
    /// Tells a tail's subscription apart from a later one of the same stream.
    serial: std::sync::atomic::AtomicU64,
}

struct Sub {
    /// The last entry handed to the tail.
    after: u64,
    /// Bounded: when a tail has not taken its earlier batches, the readers leave its stream out
    /// (`paused`) until it has room, then read it again from `after` (nothing is lost; the tail
    /// is behind, not the readers, and a full tail does not make them spin).
    tx: tokio::sync::mpsc::Sender<Vec<(u64, String)>>,
    paused: Arc<std::sync::atomic::AtomicBool>,
    serial: u64,
}

/// What a tail receives its batches through; dropping it takes the stream out of the reads.
struct Feed {
    rx: tokio::sync::mpsc::Receiver<Vec<(u64, String)>>,
    paused: Arc<std::sync::atomic::AtomicBool>,
    key: String,
    serial: u64,
    tails: Arc<Tails>,
}

impl Feed {
    async fn recv(&mut self) -> Option<Vec<(u64, String)>> {
        let batch = self.rx.recv().await;
        // The readers left this stream out while the channel was full: it has room now.
        if self.paused.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.tails.touch();
        }
        batch
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let mut subs = self.tails.lock();
        if subs.get(&self.key).is_some_and(|s| s.serial == self.serial) {
            subs.remove(&self.key);
        }
        drop(subs);
        self.tails.touch();
    }
}

/// How long one blocking read waits for an entry before it reads again anyway (well under
/// the read connection's response timeout, which is this plus `SLUICE_REDIS_TIMEOUT_MS`).
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Streams one reader covers before the instance uses another reader.
const READ_KEYS: usize = 256;
/// Most readers (and so dedicated Redis connections) per instance; past `READERS *
/// READ_KEYS` streams, each reads more than `READ_KEYS`.
const READERS: usize = 4;
/// Entries the wake stream keeps, and its expiry.
const WAKE_MAXLEN: usize = 8;
const WAKE_TTL: Duration = Duration::from_secs(60);

impl Tails {
    fn new(instance: &str) -> Self {
        Self {
            subs: std::sync::Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
            wake_key: format!("{}:wake", instance_key(instance)),
            serial: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Sub>> {
        self.subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The set of streams to read changed: wake the readers.
    fn touch(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Turns each change into an entry of the wake stream (several changes in a row into one),
    /// so that blocked reads return and take the new set of streams.
    async fn wake(self: Arc<Self>, shared: Arc<SharedState>, stop: CancellationToken) {
        let mut changed = self.changed.subscribe();
        let ttl = i64::try_from(WAKE_TTL.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = changed.changed() => if r.is_err() { return },
            }
            let mut pipe = redis::pipe();
            pipe.cmd("XADD")
                .arg(&self.wake_key)
                .arg("MAXLEN")
                .arg(WAKE_MAXLEN)
                .arg("*")
                .arg("w")
                .arg(1)
                .ignore()
                .pexpire(&self.wake_key, ttl)
                .ignore();
            let mut conn = shared.conn();
            // Redis down: the readers' own reads fail too, and read the new set when back.
            let _ = shared.call(pipe.query_async::<()>(&mut conn)).await;
        }
    }

    /// Reader `reader`'s share of the tailed streams, with the position of each: the sorted
    /// keys cut into as many even parts as readers are needed, so that every reader, after
    /// the same change, agrees on who reads what. Streams whose tail is full are left out.
    fn share(&self, reader: usize) -> Vec<(String, u64)> {
        use std::sync::atomic::Ordering::SeqCst;
        let subs = self.lock();
        let mut keys: Vec<&String> = subs.keys().collect();
        keys.sort_unstable();
        let readers = keys.len().div_ceil(READ_KEYS).clamp(1, READERS);
        let size = keys.len().div_ceil(readers).max(1);
        keys.chunks(size)
            .nth(reader)
            .unwrap_or_default()
            .iter()
            .filter_map(|&k| {
                let sub = &subs[k];
                if sub.tx.capacity() == 0 {
                    // Paused first, then checked again: either the tail sees the flag after
                    // it took a batch (and wakes the readers), or this sees the room.
                    sub.paused.store(true, SeqCst);
                    if sub.tx.capacity() == 0 {
                        return None;
                    }
                    sub.paused.store(false, SeqCst);
                }
                Some((k.clone(), sub.after))
            })
            .collect()
    }

    /// One reader: a blocking `XREAD` over its share of the streams and the wake stream, on a
    /// connection of its own (made when it first has streams to read, made again after an
    /// error).
    async fn read(
        self: Arc<Self>,
        reader: usize,
        client: redis::Client,
        shared: Arc<SharedState>,
        stop: CancellationToken,
    ) {
        let limit = READ_BLOCK + shared.timeout();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shared.timeout()))
            .set_response_timeout(Some(limit));
        let block = u64::try_from(READ_BLOCK.as_millis()).unwrap_or(u64::MAX);
        let mut changed = self.changed.subscribe();
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        // The last entry of the wake stream this reader saw (entry IDs grow with time, so an
        // entry added after a FLUSHALL or an expiry still wakes it).
        let mut woken = String::from("0-0");
        loop {
            changed.borrow_and_update();
            let wanted = self.share(reader);
            if wanted.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = changed.changed() => if r.is_err() { return },
                }
                continue;
            }
            if conn.is_none() {
                let connect = client.get_multiplexed_async_connection_with_config(&config);
                tokio::select! {
                    () = stop.cancelled() => return,
                    c = connect => conn = c.ok(),
                }
            }
            let Some(c) = conn.as_mut() else {
                // A failure is the tails' business too: each checks Redis on its own when it
                // hears nothing, and gives up after the owner timeout.
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            };
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(&self.wake_key);
            for (key, _) in &wanted {
                cmd.arg(key);
            }
            cmd.arg(&woken);
            for (_, after) in &wanted {
                cmd.arg(format!("0-{after}"));
            }
            let reply = tokio::select! {
                () = stop.cancelled() => return,
                r = tokio::time::timeout(limit, cmd.query_async::<Option<StreamReadReply>>(c)) => r,
            };
            match reply {
                Ok(Ok(Some(reply))) => self.deliver(reply, &mut woken),
                // BLOCK ran out: read again (the set may have changed without a wake-up, with
                // Redis down when it did).
                Ok(Ok(None)) => {}
                Ok(Err(_)) | Err(_) => {
                    conn = None;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    /// Hands what a read found to the tails; entries a tail already has (two readers read the
    /// same stream just after a change) are left out.
    fn deliver(&self, reply: StreamReadReply, woken: &mut String) {
        let mut subs = self.lock();
        for k in reply.keys {
            if k.key == self.wake_key {
                if let Some(last) = k.ids.last() {
                    woken.clone_from(&last.id);
                }
                continue;
            }
            let Some(sub) = subs.get_mut(&k.key) else {
                continue;
            };
            let entries: Vec<(u64, String)> = k
                .ids
                .into_iter()
                .filter_map(|e| {
                    let n = e.id.strip_prefix("0-")?.parse::<u64>().ok()?;
                    Some((n, e.get::<String>("e")?))
                })
                .filter(|(n, _)| *n > sub.after)
                .collect();
            let Some(&(last, _)) = entries.last() else {
                continue;
            };
            if sub.tx.try_send(entries).is_ok() {
                sub.after = last;
            }
        }
    }

    /// Tails `key` from entry `after` on; the batches arrive on the feed, until it drops.
    fn add(self: &Arc<Self>, key: String, after: u64) -> Feed {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(
            key.clone(),
            Sub {
                after,
                tx,
                paused: paused.clone(),
                serial,
            },
        );
        self.touch();
        Feed {
            rx,
            paused,
            key,
            serial,
            tails: self.clone(),
        }
    }
}

#[async_trait]
impl StreamLog for RedisStreamLog {
    fn publish(&self, handle: Handle) -> Published {
        // The same bound as the relay's own per-stream bound (`SLUICE_RELAY_MAX_STREAM_BYTES`).
        let max_bytes = self.registry.limits().max_stream_bytes;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.copies.spawn(Self::copy_out(
            self.shared.clone(),
            handle,
            self.retention,
            max_bytes,
            tx,
        ));
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
