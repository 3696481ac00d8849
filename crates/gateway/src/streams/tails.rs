//! The reader side of shared streams: the few tasks that read, with blocking `XREAD`s, the
//! Redis Streams of every replica this instance fills, and hand each tail its entries.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamReadReply;

use super::redis_log::{instance_key, BATCH};
use crate::shared_state::SharedState;

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
pub(super) struct Tails {
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
pub(super) struct Feed {
    rx: tokio::sync::mpsc::Receiver<Vec<(u64, String)>>,
    paused: Arc<std::sync::atomic::AtomicBool>,
    key: String,
    serial: u64,
    tails: Arc<Tails>,
}

impl Feed {
    pub(super) async fn recv(&mut self) -> Option<Vec<(u64, String)>> {
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
pub(super) const READERS: usize = 4;
/// Entries the wake stream keeps, and its expiry.
const WAKE_MAXLEN: usize = 8;
const WAKE_TTL: Duration = Duration::from_secs(60);

impl Tails {
    pub(super) fn new(instance: &str) -> Self {
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
    pub(super) async fn wake(self: Arc<Self>, shared: Arc<SharedState>) {
        let mut changed = self.changed.subscribe();
        let ttl = i64::try_from(WAKE_TTL.as_millis()).unwrap_or(i64::MAX);
        loop {
            if changed.changed().await.is_err() {
                return;
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
    /// error). Runs until the lifecycle stops it.
    pub(super) async fn read(
        self: Arc<Self>,
        reader: usize,
        client: redis::Client,
        shared: Arc<SharedState>,
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
                if changed.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if conn.is_none() {
                conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok();
            }
            let Some(c) = conn.as_mut() else {
                // A failure is the tails' business too: each checks Redis on its own when it
                // hears nothing, and gives up after the owner timeout.
                tokio::time::sleep(Duration::from_millis(200)).await;
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
            let reply =
                tokio::time::timeout(limit, cmd.query_async::<Option<StreamReadReply>>(c)).await;
            match reply {
                Ok(Ok(Some(reply))) => self.deliver(reply, &mut woken),
                // BLOCK ran out: read again (the set may have changed without a wake-up, with
                // Redis down when it did).
                Ok(Ok(None)) => {}
                Ok(Err(_)) | Err(_) => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
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
    pub(super) fn add(self: &Arc<Self>, key: String, after: u64) -> Feed {
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
