//! The owner side of a shared stream: the task that copies a stream's events from the relay
//! to Redis as they come, and gives the copy up (marked `lost`) when Redis does not take them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use relay::Handle;

use super::redis_log::{
    events_key, meta_key, remote_readers_key, renewal, BATCH, ENTRY_OVERHEAD_BYTES, LIVE_TTL,
};
use crate::shared_state::SharedState;

/// The owner's copy loop for one stream: from the relay's log to Redis, batch by batch, until
/// the terminal event is copied or the copy is given up. `announced` is sent when the first
/// write is over (see [`Published`](super::Published)).
pub(super) async fn copy_out(
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

/// The owner's write of one batch (see the file for its KEYS, ARGV and reply).
const COPY_SCRIPT: &str = include_str!("lua/copy.lua");

/// What one event costs against the per-stream bound in Redis: its entry, and what Redis keeps
/// per entry besides (its ID and field name, and the stream's own bookkeeping), so that the
/// bound limits the number of events as well as their bytes.
fn entry_cost(entry: &str) -> usize {
    entry.len() + ENTRY_OVERHEAD_BYTES
}

/// Why the owner gave up its stream's shared copy (the `lost` field of its metadata).
const LOST_TIMEOUT: &str = "timeout";
const LOST_TOO_LARGE: &str = "too_large";

/// Marks the stream's shared copy as given up (`lost` in its metadata, with why), so that
/// tails fail their replicas with [`replication_lost`](super::replication_lost) instead of waiting. A few tries: Redis
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
