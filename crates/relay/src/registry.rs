//! The registry of live and recently finished streams by ID, with expiry and the memory bounds:
//! a per-stream cap, and a global cap that evicts the oldest finished streams first and refuses
//! new streams (never cuts a live one) only when live streams alone fill it.
//!
//! Finished streams are queued in the order they finished, so expiry and eviction take them
//! from the front of the queue, one at a time, with no scan of the map.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::event::Meta;
use crate::log::Log;
use crate::shared::Shared;
use crate::{Handle, RelayError, StreamId, Writer};

pub const DEFAULT_RETENTION_SECS: u64 = 300;
pub const DEFAULT_MAX_STREAM_BYTES: usize = 64 << 20;
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 1 << 30;
pub const DEFAULT_MAX_READERS_PER_STREAM: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a finished stream stays resumable.
    pub retention: Duration,
    pub max_stream_bytes: usize,
    pub max_total_bytes: usize,
    /// Readers one stream may have at once (tabs of one chat page, reconnects); the first
    /// reader of a stream is always admitted.
    pub max_readers_per_stream: usize,
    /// Streams live (not yet finished) at once; new ones are refused beyond it.
    pub max_live_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(DEFAULT_RETENTION_SECS),
            max_stream_bytes: DEFAULT_MAX_STREAM_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_readers_per_stream: DEFAULT_MAX_READERS_PER_STREAM,
            max_live_streams: usize::MAX,
        }
    }
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub live: usize,
    pub finished: usize,
    /// Bytes held by all streams (live and finished).
    pub bytes: usize,
    /// Bytes held by live streams.
    pub live_bytes: usize,
    /// The global bound.
    pub max_bytes: usize,
    pub evicted: usize,
    pub refused: usize,
    /// How long ago the oldest retained stream finished: the retention in effect.
    pub oldest_finished_age: Option<Duration>,
}

/// The bytes all streams hold, split by live and finished, and the finished streams in the
/// order they finished.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    live: AtomicUsize,
    finished: AtomicUsize,
    /// `None` for a stream outside any registry.
    queue: Option<Mutex<VecDeque<(Instant, StreamId)>>>,
}

impl Budget {
    pub(crate) fn standalone() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn tracked() -> Arc<Self> {
        Arc::new(Self {
            queue: Some(Mutex::new(VecDeque::new())),
            ..Self::default()
        })
    }

    pub(crate) fn charge_live(&self, diff: isize) {
        if diff >= 0 {
            self.live.fetch_add(diff as usize, Ordering::Relaxed);
        } else {
            self.live.fetch_sub(diff.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// A stream that counted `before` bytes as live now holds `now` bytes, finished.
    pub(crate) fn finished(&self, before: usize, now: usize) {
        self.live.fetch_sub(before, Ordering::Relaxed);
        self.finished.fetch_add(now, Ordering::Relaxed);
    }

    /// A stream dropped: its bytes are free.
    pub(crate) fn release(&self, counted: usize, finished: bool) {
        let from = if finished { &self.finished } else { &self.live };
        from.fetch_sub(counted, Ordering::Relaxed);
    }

    /// Queues a finished stream for expiry and eviction.
    pub(crate) fn retain(&self, shared: &Shared) {
        if let Some(q) = &self.queue {
            lock(q).push_back((Instant::now(), shared.id));
        }
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn total(&self) -> usize {
        self.live() + self.finished.load(Ordering::Relaxed)
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<(Instant, StreamId)>> {
        // A registry's budget always has a queue.
        lock(
            self.queue
                .as_ref()
                .expect("a registry's budget has a queue"),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single push, pop or insert: a poisoned lock is still
    // consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
pub struct Registry {
    streams: Mutex<HashMap<StreamId, Arc<Shared>>>,
    limits: Limits,
    budget: Arc<Budget>,
    evicted: AtomicUsize,
    refused: AtomicUsize,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            limits,
            budget: Budget::tracked(),
            evicted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Registers a new stream and returns its writer, evicting the oldest finished streams if
    /// the global bound is reached, or refusing with [`RelayError::Full`] if live streams alone
    /// hold it.
    pub fn create(&self, meta: Meta, include_usage: bool) -> Result<Writer, RelayError> {
        self.create_owned(meta, include_usage, None)
    }

    /// [`Registry::create`] for a stream that belongs to `owner` (a team): the gateway lets
    /// only its owner cancel it (see [`Handle::owner`]).
    pub fn create_owned(
        &self,
        meta: Meta,
        include_usage: bool,
        owner: Option<Arc<str>>,
    ) -> Result<Writer, RelayError> {
        self.insert(None, meta, include_usage, owner)
    }

    fn insert(
        &self,
        replica_of: Option<StreamId>,
        meta: Meta,
        include_usage: bool,
        owner: Option<Arc<str>>,
    ) -> Result<Writer, RelayError> {
        let mut map = lock(&self.streams);
        if let Some(id) = replica_of {
            if map.contains_key(&id) {
                return Err(RelayError::Exists);
            }
        }
        if self.budget.total() >= self.limits.max_total_bytes {
            let mut queue = self.budget.queue();
            while self.budget.total() >= self.limits.max_total_bytes {
                let Some((_, id)) = queue.pop_front() else {
                    break;
                };
                // A reader may still hold it (a client that stopped reading): it is emptied and
                // uncounted now, or its bytes would stay counted and push out every other
                // finished stream in turn.
                if let Some(gone) = map.remove(&id) {
                    gone.discard();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if self.budget.live() >= self.limits.max_total_bytes {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(RelayError::Full);
        }
        if self.limits.max_live_streams < usize::MAX {
            let live = map.len().saturating_sub(self.budget.queue().len());
            if live >= self.limits.max_live_streams {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(RelayError::TooManyStreams(live));
            }
        }
        let id = replica_of.unwrap_or_else(StreamId::random);
        let shared = Arc::new(
            Shared::new(
                id,
                Log::new(meta),
                include_usage,
                self.limits.max_stream_bytes,
                self.limits.max_readers_per_stream,
                self.budget.clone(),
                owner,
            )
            .into_replica(replica_of.is_some()),
        );
        map.insert(id, shared.clone());
        Ok(Writer::new(shared))
    }

    /// Registers a replica of a stream another process runs, under that stream's ID; its
    /// writer appends the original's entries ([`Writer::append_replica`]). Refused with
    /// [`RelayError::Exists`] if the ID is here already (another request made the replica
    /// first: use that one), and like [`Registry::create`] when full.
    pub fn create_replica(
        &self,
        id: StreamId,
        include_usage: bool,
        owner: Option<Arc<str>>,
    ) -> Result<Writer, RelayError> {
        self.insert(Some(id), Meta::default(), include_usage, owner)
    }

    /// A stream by ID, unless unknown or expired.
    pub fn get(&self, id: &str) -> Result<Handle, RelayError> {
        let id = StreamId::parse(id).ok_or(RelayError::NotFound)?;
        let map = lock(&self.streams);
        let shared = map.get(&id).ok_or(RelayError::NotFound)?;
        if shared
            .read()
            .finished_at()
            .is_some_and(|t| t.elapsed() >= self.limits.retention)
        {
            return Err(RelayError::NotFound);
        }
        Ok(Handle::new(shared.clone()))
    }

    /// Drops streams finished longer ago than the retention time; returns how many. Call
    /// periodically.
    pub fn sweep(&self) -> usize {
        let mut map = lock(&self.streams);
        let mut queue = self.budget.queue();
        let mut n = 0;
        while let Some((at, _)) = queue.front() {
            if at.elapsed() < self.limits.retention {
                break;
            }
            if let Some((_, id)) = queue.pop_front() {
                if let Some(gone) = map.remove(&id) {
                    // Like an eviction: a reader still attached holds no more of it.
                    gone.discard();
                    n += 1;
                }
            }
        }
        // After a burst the table and the queue keep their peak capacity (a few MB per 100,000
        // streams); give it back once they are mostly empty.
        if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
            map.shrink_to_fit();
        }
        if queue.capacity() > 1024 && queue.len() < queue.capacity() / 4 {
            queue.shrink_to_fit();
        }
        n
    }

    pub fn stats(&self) -> Stats {
        let streams = lock(&self.streams).len();
        let queue = self.budget.queue();
        Stats {
            live: streams.saturating_sub(queue.len()),
            finished: queue.len(),
            bytes: self.budget.total(),
            live_bytes: self.budget.live(),
            max_bytes: self.limits.max_total_bytes,
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            oldest_finished_age: queue.front().map(|(at, _)| at.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Delta;
    use crate::Format;

    #[test]
    fn live_streams_beyond_the_cap_are_refused_until_one_finishes() {
        let r = Registry::new(Limits {
            max_live_streams: 2,
            ..Limits::default()
        });
        let a = r.create(Meta::default(), false).unwrap();
        let _b = r.create(Meta::default(), false).unwrap();
        assert_eq!(
            r.create(Meta::default(), false).unwrap_err(),
            RelayError::TooManyStreams(2)
        );
        a.finish();
        // A finished (retained) stream does not count.
        assert!(r.create(Meta::default(), false).is_ok());
    }

    #[test]
    fn a_stream_knows_its_owner() {
        let r = Registry::new(Limits::default());
        let w = r
            .create_owned(Meta::default(), false, Some("team-a".into()))
            .unwrap();
        assert_eq!(r.get(w.id().as_str()).unwrap().owner(), Some("team-a"));
        let w = r.create(Meta::default(), false).unwrap();
        assert_eq!(r.get(w.id().as_str()).unwrap().owner(), None);
    }

    #[test]
    fn expired_streams_are_gone() {
        let r = Registry::new(Limits {
            retention: Duration::from_millis(0),
            ..Limits::default()
        });
        let w = r.create(Meta::default(), false).unwrap();
        let id = *w.id();
        assert!(r.get(id.as_str()).is_ok(), "live streams never expire");
        w.finish();
        assert_eq!(r.get(id.as_str()).unwrap_err(), RelayError::NotFound);
        assert_eq!(r.sweep(), 1);
        assert_eq!(r.get("nope").unwrap_err(), RelayError::NotFound);
        assert_eq!(r.stats().bytes, 0, "a dropped stream frees its bytes");
    }

    #[test]
    fn full_registry_evicts_finished_then_refuses() {
        let r = Registry::new(Limits {
            max_total_bytes: 1000,
            ..Limits::default()
        });
        let mut old = r.create(Meta::default(), false).unwrap();
        old.push_delta(Delta::text(0, "x".repeat(2000)));
        let old_id = *old.id();
        old.finish();
        // The finished stream is evicted to make room.
        let mut live = r.create(Meta::default(), false).unwrap();
        assert_eq!(r.get(old_id.as_str()).unwrap_err(), RelayError::NotFound);
        assert_eq!(r.stats().evicted, 1);
        // A live stream over the bound is not cut short; new streams are refused instead.
        assert!(live.push_delta(Delta::text(0, "y".repeat(2000))));
        assert_eq!(
            r.create(Meta::default(), false).unwrap_err(),
            RelayError::Full
        );
        live.finish();
        assert_eq!(r.stats().refused, 1);
        // Finished now: evictable, so the next stream is admitted.
        assert!(r.create(Meta::default(), false).is_ok());
    }

    #[test]
    fn churn_never_refuses_while_finished_streams_can_go() {
        // A bound that holds a handful of answers; thousands of short streams, several live
        // at once, none refused.
        let r = Registry::new(Limits {
            max_total_bytes: 8 * 1024,
            ..Limits::default()
        });
        let mut live = std::collections::VecDeque::new();
        for i in 0..5000 {
            let mut w = r.create(Meta::default(), false).expect("admitted");
            w.push_delta(Delta::text(0, "token ".repeat(20)));
            live.push_back(w);
            if live.len() > 3 || i % 7 == 0 {
                if let Some(w) = live.pop_front() {
                    w.finish();
                }
            }
        }
        let s = r.stats();
        assert_eq!(s.refused, 0);
        assert!(s.evicted > 4000, "{s:?}");
        assert!(s.bytes <= 8 * 1024 + 4096, "{s:?}");
    }

    #[test]
    fn per_stream_bound_fails_the_stream() {
        let r = Registry::new(Limits {
            max_stream_bytes: 500,
            ..Limits::default()
        });
        let mut w = r.create(Meta::default(), false).unwrap();
        let h = w.handle();
        assert!(w.push_delta(Delta::text(0, "a")));
        assert!(!w.push_delta(Delta::text(0, "b".repeat(1000))));
        assert!(h.is_finished());
        assert!(matches!(h.outcome(), Some(crate::Event::Failed(_))));
    }

    #[test]
    fn readers_per_stream_are_capped() {
        let r = Registry::new(Limits {
            max_readers_per_stream: 2,
            ..Limits::default()
        });
        let w = r.create(Meta::default(), false).unwrap();
        let h = w.handle();
        let _a = h.reader(Format::Browser);
        let _b = h.subscribe(0, Format::Browser).unwrap();
        assert_eq!(
            h.subscribe(0, Format::OpenAi).unwrap_err(),
            RelayError::TooManyReaders(2)
        );
        drop(_b);
        assert!(h.subscribe(0, Format::OpenAi).is_ok());
    }

    #[test]
    fn retained_answer_is_compact() {
        let r = Registry::new(Limits::default());
        let mut w = r
            .create(
                Meta {
                    id: "chatcmpl-0123456789012345678901".into(),
                    model: "sluice-demo".into(),
                    created: 1,
                    system_fingerprint: None,
                },
                false,
            )
            .unwrap();
        for i in 0..100 {
            w.push_delta(Delta::text(
                0,
                ["Hello ", "from ", "Sluice! ", "gateway. "][i % 4],
            ));
        }
        w.record_finish(0, "stop");
        w.finish();
        let s = r.stats();
        assert_eq!((s.live, s.finished, s.live_bytes), (0, 1, 0));
        assert!(s.bytes <= 2048, "{s:?}");
    }
}
