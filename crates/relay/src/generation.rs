//! One generation: the numbered replay log of a single model answer, written by one producer
//! (the gateway's pump task) and read by any number of [`Reader`]s.
//!
//! The log sits behind a `std::sync::Mutex` that is only ever held to push or to clone a few
//! `Arc`s out; readers are woken through a `watch` channel carrying the log length, so a reader
//! that checks the log and then waits can never miss an append in between.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::encode::{self, Format};
use crate::event::{Delta, Done, Event, Failure, Meta, Usage};
use crate::{Reader, RelayError, StreamId};

/// How long a generation that never had a reader waits for its first one (the browser opens its
/// EventSource right after `POST /v1/streams` answers) before the grace period rules apply.
pub const FIRST_READER_WAIT: Duration = Duration::from_secs(10);

/// Fixed per-event overhead counted against the memory bounds (entry, Arc, log slot).
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 16 + 8;

/// One numbered event, with its encodings made on first use and shared by every reader.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub event: Event,
    encoded: [OnceLock<Bytes>; 2],
}

impl Entry {
    fn new(id: u64, event: Event) -> Self {
        Self {
            id,
            event,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) meta: Arc<Meta>,
    pub(crate) log: Vec<Arc<Entry>>,
    /// Choices that have had a delta (the first one carries the role).
    started: Vec<u32>,
    finishes: Vec<(u32, String)>,
    usage: Option<Usage>,
    pub(crate) finished_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Generation {
    id: StreamId,
    include_usage: bool,
    created: Instant,
    state: Mutex<State>,
    len: watch::Sender<u64>,
    readers: watch::Sender<usize>,
    had_reader: AtomicBool,
    /// While set, appends do not wake readers; [`Generation::end_batch`] wakes them once.
    batching: AtomicBool,
    cancel: CancellationToken,
    max_bytes: usize,
    /// Bytes this log holds: events and their cached encodings.
    bytes: AtomicUsize,
    /// Bytes of the events alone: what the per-stream bound limits, so that how many formats
    /// the stream is read in does not change how long an answer may be.
    event_bytes: AtomicUsize,
    /// The registry's running total of bytes held by all logs.
    total_bytes: Arc<AtomicUsize>,
}

impl Generation {
    pub(crate) fn new(
        id: StreamId,
        meta: Meta,
        include_usage: bool,
        max_bytes: usize,
        total_bytes: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            id,
            include_usage,
            created: Instant::now(),
            state: Mutex::new(State {
                meta: Arc::new(meta),
                log: Vec::with_capacity(64),
                started: Vec::new(),
                finishes: Vec::new(),
                usage: None,
                finished_at: None,
            }),
            bytes: AtomicUsize::new(0),
            event_bytes: AtomicUsize::new(0),
            len: watch::Sender::new(0),
            readers: watch::Sender::new(0),
            had_reader: AtomicBool::new(false),
            batching: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            max_bytes,
            total_bytes,
        }
    }

    /// A generation outside any registry (tests, benchmarks).
    pub fn standalone(meta: Meta, include_usage: bool) -> Arc<Self> {
        Arc::new(Self::new(
            StreamId::random(),
            meta,
            include_usage,
            usize::MAX,
            Arc::new(AtomicUsize::new(0)),
        ))
    }

    pub fn id(&self) -> &StreamId {
        &self.id
    }

    pub fn include_usage(&self) -> bool {
        self.include_usage
    }

    pub fn created(&self) -> Instant {
        self.created
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the log consistent (every write is a single
        // push), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the response metadata; only before the first event, so every chunk of a stream
    /// carries the same id and model.
    pub fn set_meta(&self, f: impl FnOnce(&mut Meta)) {
        let mut st = self.lock();
        if st.log.is_empty() {
            f(Arc::make_mut(&mut st.meta));
        }
    }

    pub fn meta(&self) -> Arc<Meta> {
        self.lock().meta.clone()
    }

    fn append(&self, st: &mut State, event: Event, size: usize) {
        let id = st.log.len() as u64 + 1;
        if event.is_terminal() {
            st.finished_at = Some(Instant::now());
        }
        st.log.push(Arc::new(Entry::new(id, event)));
        self.event_bytes.fetch_add(size, Ordering::Relaxed);
        self.charge(size);
        // The terminal event always wakes readers: nothing may wait on a finished stream.
        if !self.batching.load(Ordering::Relaxed) || st.finished_at.is_some() {
            self.len.send_replace(id);
        }
    }

    /// Starts a batch: events appended until [`end_batch`](Self::end_batch) wake readers once,
    /// so a producer holding several events (an upstream read that carried many) lets each
    /// reader send them in one write instead of one write per event.
    pub fn begin_batch(&self) {
        self.batching.store(true, Ordering::Relaxed);
    }

    /// Ends a batch and wakes the readers if anything was appended.
    pub fn end_batch(&self) {
        self.batching.store(false, Ordering::Relaxed);
        let len = self.lock().log.len() as u64;
        self.len.send_if_modified(|cur| {
            let changed = *cur != len;
            *cur = len;
            changed
        });
    }

    /// Appends a delta. Returns false when the generation is over (finished, failed, or past its
    /// memory bound, in which case it is failed here): the producer should stop.
    pub fn push_delta(&self, d: Delta) -> bool {
        let present = |t: &Option<String>| usize::from(t.as_deref().is_some_and(|t| !t.is_empty()));
        let kinds =
            present(&d.reasoning) + present(&d.content) + present(&d.refusal) + d.tool_calls.len();
        if kinds <= 1 {
            return self.push_one(d);
        }
        // One kind of output per event, so that each log event is exactly one browser event
        // (`reasoning`, `delta`, `tool_call`) and one OpenAI chunk with the same id.
        split(d).into_iter().all(|part| self.push_one(part))
    }

    fn push_one(&self, mut d: Delta) -> bool {
        let mut st = self.lock();
        if st.finished_at.is_some() {
            return false;
        }
        if !st.started.contains(&d.choice) {
            st.started.push(d.choice);
            d.first = true;
        }
        let size = ENTRY_OVERHEAD + d.heap_bytes();
        if self.event_bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            let f = Failure {
                message: "the answer exceeded the relay's per-stream memory limit".into(),
                kind: "stream_too_large".into(),
                code: Some("stream_too_large".into()),
            };
            self.append(&mut st, Event::Failed(f), ENTRY_OVERHEAD);
            return false;
        }
        self.append(&mut st, Event::Delta(d), size);
        true
    }

    /// Records that a choice finished; written out with the terminal `done` event.
    pub fn record_finish(&self, choice: u32, reason: impl Into<String>) {
        let mut st = self.lock();
        let reason = reason.into();
        match st.finishes.iter_mut().find(|(c, _)| *c == choice) {
            Some(slot) => slot.1 = reason,
            None => st.finishes.push((choice, reason)),
        }
    }

    /// Records the latest usage (an upstream's last report is its final one).
    pub fn record_usage(&self, usage: Usage) {
        self.lock().usage = Some(usage);
    }

    pub fn usage(&self) -> Option<Usage> {
        self.lock().usage
    }

    /// Ends the generation successfully. No-op if it already ended.
    pub fn finish(&self) {
        self.finish_with(None);
    }

    /// Ends the generation as cancelled: every choice without a finish reason gets `cancelled`.
    pub fn finish_cancelled(&self) {
        self.finish_with(Some("cancelled"));
    }

    fn finish_with(&self, open_reason: Option<&str>) {
        let mut st = self.lock();
        if st.finished_at.is_some() {
            return;
        }
        let mut finish_reasons = std::mem::take(&mut st.finishes);
        if let Some(r) = open_reason {
            for c in st.started.clone() {
                if !finish_reasons.iter().any(|(fc, _)| *fc == c) {
                    finish_reasons.push((c, r.to_owned()));
                }
            }
            if finish_reasons.is_empty() {
                finish_reasons.push((0, r.to_owned()));
            }
        }
        finish_reasons.sort_by_key(|(c, _)| *c);
        let done = Done {
            finish_reasons,
            usage: st.usage,
        };
        self.append(&mut st, Event::Done(done), ENTRY_OVERHEAD + 64);
    }

    /// Ends the generation with an error. No-op if it already ended.
    pub fn fail(&self, failure: Failure) {
        let mut st = self.lock();
        if st.finished_at.is_some() {
            return;
        }
        let size = ENTRY_OVERHEAD + failure.message.len();
        self.append(&mut st, Event::Failed(failure), size);
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished_at.is_some()
    }

    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.lock().finished_at
    }

    /// The id of the last event so far (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.lock().log.len() as u64
    }

    /// Bytes this log holds, as counted against the memory bounds.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn charge(&self, size: usize) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.total_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// `entry` in `format`, encoded on first use and shared by every reader; the cached
    /// encoding counts against the memory bounds like the event itself.
    pub fn encoded<'e>(&self, entry: &'e Entry, format: Format, meta: &Meta) -> &'e Bytes {
        let slot = match format {
            Format::Browser => &entry.encoded[0],
            Format::OpenAi => &entry.encoded[1],
        };
        if let Some(b) = slot.get() {
            return b;
        }
        let mut made = false;
        let b = slot.get_or_init(|| {
            made = true;
            encode::encode(format, entry.id, &entry.event, meta, self.include_usage)
        });
        if made {
            self.charge(b.len());
        }
        b
    }

    /// The final event, once the generation has ended.
    pub fn outcome(&self) -> Option<Event> {
        let st = self.lock();
        st.finished_at?;
        st.log.last().map(|e| e.event.clone())
    }

    /// Asks the producer to stop (the stop button, shutdown). Readers then see `done` with
    /// `finish_reason` `cancelled`, written by the producer once the upstream is dropped.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when [`cancel`](Self::cancel) is called.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    pub fn reader_count(&self) -> usize {
        *self.readers.borrow()
    }

    /// Resolves once the generation has had no reader for `grace` (counted from creation, and
    /// at least [`FIRST_READER_WAIT`], while no reader has come yet).
    pub async fn abandoned(&self, grace: Duration) {
        let mut rx = self.readers.subscribe();
        loop {
            if rx.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            let wait = if self.had_reader.load(Ordering::Acquire) {
                grace
            } else {
                grace.max(FIRST_READER_WAIT)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// A reader of the events after `after` (0 = from the start).
    pub fn subscribe(self: &Arc<Self>, after: u64) -> Result<Reader, RelayError> {
        self.subscribe_as(after, Format::Browser)
    }

    /// The id of the last event in `format` so far: the OpenAI format's end is several events
    /// (finish chunks, usage chunk, `[DONE]`) numbered on from the log's last id.
    pub fn last_event_id(&self, format: Format) -> u64 {
        self.ends(&self.lock(), format).1
    }

    /// The log's last id, the last event id in `format`, and whether the stream has ended, read
    /// together so that they agree.
    fn ends(&self, st: &State, format: Format) -> (u64, u64, bool) {
        let len = st.log.len() as u64;
        match (st.finished_at, st.log.last()) {
            (Some(_), Some(e)) => {
                let count = encode::event_count(format, &e.event, self.include_usage);
                (len, len + count - 1, true)
            }
            (finished, _) => (len, len, finished.is_some()),
        }
    }

    /// A reader from the first event. Unlike [`subscribe_as`](Self::subscribe_as) it cannot
    /// fail: every stream has a position 0, and an ended one has at least its terminal event.
    pub fn reader(self: &Arc<Self>) -> Reader {
        self.attach(0, 0)
    }

    fn attach(self: &Arc<Self>, pos: u64, skip: u64) -> Reader {
        self.had_reader.store(true, Ordering::Release);
        self.readers.send_modify(|n| *n += 1);
        Reader::new(self.clone(), pos, skip, self.len.subscribe())
    }

    /// A reader of the events after `after`, as numbered in `format`.
    pub fn subscribe_as(
        self: &Arc<Self>,
        after: u64,
        format: Format,
    ) -> Result<Reader, RelayError> {
        // One look at the log: a terminal event appended between separate looks would make a
        // caught-up reader resume "inside the end" and get its last delta twice.
        let (len, last, finished) = self.ends(&self.lock(), format);
        if after > last {
            return Err(RelayError::BadPosition(after));
        }
        if finished && after == last {
            return Err(RelayError::AtEnd(after));
        }
        // Resuming inside the OpenAI end: start at the terminal event, skipping what was seen.
        let (pos, skip) = if after >= len && last > len {
            (len - 1, after - (len - 1))
        } else {
            (after, 0)
        };
        Ok(self.attach(pos, skip))
    }

    pub(crate) fn reader_gone(&self) {
        self.readers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Splits a delta that carries several kinds of output into one delta per kind, in the order a
/// reader would see them: thinking, text (with the logprobs), refusal, then each tool call.
fn split(d: Delta) -> Vec<Delta> {
    let base = |choice| Delta {
        choice,
        ..Delta::default()
    };
    let mut parts = Vec::with_capacity(4);
    if let Some(t) = d.reasoning.filter(|t| !t.is_empty()) {
        parts.push(Delta {
            reasoning: Some(t),
            ..base(d.choice)
        });
    }
    if let Some(t) = d.content.filter(|t| !t.is_empty()) {
        parts.push(Delta {
            content: Some(t),
            ..base(d.choice)
        });
    }
    if let Some(t) = d.refusal.filter(|t| !t.is_empty()) {
        parts.push(Delta {
            refusal: Some(t),
            ..base(d.choice)
        });
    }
    for call in d.tool_calls {
        parts.push(Delta {
            tool_calls: vec![call],
            ..base(d.choice)
        });
    }
    if let Some(lp) = d.logprobs {
        let at = parts.iter().position(|p| p.content.is_some()).unwrap_or(0);
        if let Some(p) = parts.get_mut(at) {
            p.logprobs = Some(lp);
        }
    }
    parts
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.total_bytes
            .fetch_sub(*self.bytes.get_mut(), Ordering::Relaxed);
    }
}
