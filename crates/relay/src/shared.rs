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
use crate::reader::Driver;
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
    /// Set (under the log's write lock) when the registry dropped the stream (evicted or
    /// expired): its log was emptied and its bytes no longer count, though readers may still
    /// hold it; they end.
    discarded: AtomicBool,
    /// The writer's future while the first reader's body drives it (see [`Driver`]): kept here
    /// rather than in the body so that a cancel can take it out and run it on its own even when
    /// nobody polls that body (a client that stopped reading). Boxed: a retained stream pays
    /// one pointer for it.
    pump: Mutex<Option<Box<Pump>>>,
}

/// A driven stream's writer future and the task of the body that polls it.
struct Pump {
    driver: Driver,
    /// Woken when the driver is taken away, so that the body starts waiting on the log itself.
    body: Option<Waker>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump").finish_non_exhaustive()
    }
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
            discarded: AtomicBool::new(false),
            pump: Mutex::new(None),
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
        if self.is_discarded() {
            return;
        }
        let now = STREAM_OVERHEAD + log.heap_bytes();
        let before = self.counted.swap(now, Ordering::Relaxed);
        let diff = now as isize - before as isize;
        if log.finished_at().is_some() {
            self.budget.finished(before, now);
        } else if diff != 0 {
            self.budget.charge_live(diff);
        }
    }

    /// The registry no longer holds this stream (evicted or expired): empties its log and
    /// gives its bytes back to the budget now, so that a reader still attached (a client that
    /// stopped reading) holds no more than the write it has buffered, and the bytes it no
    /// longer holds do not push other streams out. Readers then end.
    pub(crate) fn discard(&self) {
        let old = {
            let mut log = self.write();
            if self.discarded.swap(true, Ordering::AcqRel) {
                return;
            }
            let finished = log.finished_at().is_some();
            let old = std::mem::replace(&mut *log, Log::new(crate::event::Meta::default()));
            let before = self.counted.swap(0, Ordering::Relaxed);
            self.budget.release(before, finished);
            old
        };
        // Freed outside the lock.
        drop(old);
        let wakers = std::mem::take(&mut *self.lock_wakers());
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn is_discarded(&self) -> bool {
        self.discarded.load(Ordering::Acquire)
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
        // The writer may be inside a body that nobody polls (its client stopped reading): it
        // would never see the cancel. Run it on a task of its own, which sees it at once.
        self.release_pump(true);
    }

    fn lock_pump(&self) -> std::sync::MutexGuard<'_, Option<Box<Pump>>> {
        // Held only to poll the driver or to move it: a poisoned lock (a panic in the driver)
        // leaves it in its slot or gone, both consistent.
        self.pump.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the writer's future in the slot the first reader's body polls.
    pub(crate) fn set_pump(&self, driver: Driver) {
        *self.lock_pump() = Some(Box::new(Pump { driver, body: None }));
    }

    /// Polls the writer's future for the body that drives it; false once it is no longer
    /// there (done, or moved to a task of its own), and the body reads like any reader.
    pub(crate) fn poll_pump(&self, cx: &mut std::task::Context<'_>) -> bool {
        let mut slot = self.lock_pump();
        let Some(pump) = slot.as_mut() else {
            return false;
        };
        if pump.driver.poll(cx).is_ready() {
            let done = slot.take();
            drop(slot);
            drop(done);
            return false;
        }
        if !pump.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            pump.body = Some(cx.waker().clone());
        }
        true
    }

    /// Takes the writer's future out of its body's slot and hands it off (to run on its own);
    /// `wake` wakes that body so that it goes on as a plain reader.
    pub(crate) fn release_pump(&self, wake: bool) {
        let Some(pump) = self.lock_pump().take() else {
            return;
        };
        let Pump { driver, body } = *pump;
        // Dropping a driver that is not done hands it off.
        drop(driver);
        if let (true, Some(w)) = (wake, body) {
            w.wake();
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
                if wait.is_zero() {
                    // No grace: abandoned as the last reader leaves, without a timer's tick.
                    return;
                }
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
        // Only finished streams are discarded; their emptied log no longer says so.
        self.is_discarded() || self.read().finished_at().is_some()
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
