//! What a generation's writer, readers and handles share: the log behind a lock, the wake-up
//! list, the reader count, cancellation and the memory accounting.
//!
//! The log sits behind a `std::sync::RwLock` held only to append or to encode a bounded batch,
//! never across an await. Readers that find nothing new register their waker under the `wakers`
//! lock after checking the published length, and the writer publishes (stores the length, then
//! takes the same lock to wake them), so a reader can never miss an append in between.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::log::Log;
use crate::registry::Budget;
use crate::StreamId;

/// Bytes one stream costs beyond its log: this struct (and its `Arc`), its slot in the
/// registry's map and in the expiry queue, each counted at twice its size for the slack of a
/// growing hash table or ring buffer.
pub(crate) const STREAM_OVERHEAD: usize = std::mem::size_of::<Shared>()
    + 16
    + 2 * std::mem::size_of::<(StreamId, usize)>()
    + 2 * std::mem::size_of::<(Instant, StreamId)>();

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: StreamId,
    pub(crate) include_usage: bool,
    pub(crate) created: Instant,
    /// Who started it (a team name), if anyone: only they may cancel it.
    pub(crate) owner: Option<Arc<str>>,
    /// A copy of a stream another process runs (see [`crate::replica`]).
    pub(crate) replica: bool,
    log: RwLock<Log>,
    /// The log length readers have been woken for.
    published: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
    /// Readers attached now; the writer watches it for the grace period. An atomic and a
    /// `Notify` (no heap) rather than a watch channel and a cancellation token (about 600 bytes
    /// of heap per stream, for every answer kept).
    readers: AtomicUsize,
    /// Told whenever `readers` or `cancelled` changes.
    changed: Notify,
    pub(crate) had_reader: AtomicBool,
    cancelled: AtomicBool,
    /// Readers that attached after the start (reconnects), for the stream's summary.
    pub(crate) resumes: AtomicU32,
    pub(crate) max_readers: usize,
    pub(crate) max_bytes: usize,
    /// Heap bytes of the log last reported to the budget.
    counted: AtomicUsize,
    pub(crate) budget: Arc<Budget>,
}

impl Shared {
    pub(crate) fn new(
        id: StreamId,
        log: Log,
        include_usage: bool,
        max_bytes: usize,
        max_readers: usize,
        budget: Arc<Budget>,
        owner: Option<Arc<str>>,
    ) -> Self {
        let counted = STREAM_OVERHEAD + log.heap_bytes();
        budget.charge_live(counted as isize);
        Self {
            id,
            include_usage,
            created: Instant::now(),
            owner,
            replica: false,
            log: RwLock::new(log),
            published: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
            readers: AtomicUsize::new(0),
            changed: Notify::new(),
            had_reader: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            resumes: AtomicU32::new(0),
            max_readers,
            max_bytes,
            counted: AtomicUsize::new(counted),
            budget,
        }
    }

    /// Marks a replica (see [`crate::replica`]).
    pub(crate) fn into_replica(mut self, replica: bool) -> Self {
        self.replica = replica;
        self
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Log> {
        // Every write is a single push under the lock, so a poisoned lock still holds a
        // consistent log.
        self.log.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Log> {
        self.log.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the budget up to date with the log's size (called with the write lock held, so
    /// the updates of one stream are ordered).
    pub(crate) fn recount(&self, log: &Log) {
        let now = STREAM_OVERHEAD + log.heap_bytes();
        let before = self.counted.swap(now, Ordering::Relaxed);
        let diff = now as isize - before as isize;
        if log.finished_at().is_some() {
            self.budget.finished(before, now);
        } else if diff != 0 {
            self.budget.charge_live(diff);
        }
    }

    pub(crate) fn counted(&self) -> usize {
        self.counted.load(Ordering::Relaxed)
    }

    pub(crate) fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Wakes every reader waiting for events past what was published before.
    pub(crate) fn publish(&self, len: u64) {
        if self.published.swap(len, Ordering::AcqRel) == len {
            return;
        }
        let wakers = std::mem::take(&mut *self.lock_wakers());
        for w in wakers {
            w.wake();
        }
    }

    /// Registers `waker` unless events past `seen` were published meanwhile; returns whether
    /// it was registered (false: read again now).
    pub(crate) fn wait(&self, seen: u64, waker: &Waker) -> bool {
        let mut wakers = self.lock_wakers();
        if self.published() > seen {
            return false;
        }
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        true
    }

    fn lock_wakers(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn reader_count(&self) -> usize {
        self.readers.load(Ordering::Acquire)
    }

    /// Counts a new reader, unless `cap` readers are attached already.
    pub(crate) fn add_reader(&self, cap: Option<usize>) -> bool {
        let added = self
            .readers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                cap.is_none_or(|c| n < c).then_some(n + 1)
            })
            .is_ok();
        if added {
            self.had_reader.store(true, Ordering::Release);
            self.changed.notify_waiters();
        }
        added
    }

    pub(crate) fn remove_reader(&self) {
        let _ = self
            .readers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.changed.notify_waiters();
    }

    pub(crate) fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once [`cancel`](Self::cancel) has been called.
    pub(crate) async fn until_cancelled(&self) {
        loop {
            // Armed before the check, so a cancel in between is never missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once the stream has had no reader for `grace` (at least `first_wait` while no
    /// reader has come yet); any reader arriving or leaving starts the wait again.
    pub(crate) async fn until_abandoned(&self, grace: Duration, first_wait: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.reader_count() == 0 {
                let wait = if self.had_reader.load(Ordering::Acquire) {
                    grace
                } else {
                    grace.max(first_wait)
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.read().finished_at().is_some()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let counted = *self.counted.get_mut();
        let finished = self
            .log
            .get_mut()
            .map_or(true, |l| l.finished_at().is_some());
        self.budget.release(counted, finished);
    }
}
