//! The read side of one generation: what a request that found the stream by its ID may do with
//! it. Attach readers from any position, cancel it, look at how it ended.

use std::sync::Arc;
use std::time::Instant;

use crate::encode::dialect::{self, Ctx};
use crate::encode::{self, Format};
use crate::event::{Event, Usage};
use crate::shared::Shared;
use crate::{Reader, RelayError, StreamId};

#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub fn id(&self) -> &StreamId {
        &self.shared.id
    }

    /// Who started the stream, as given to [`crate::Registry::create_owned`].
    pub fn owner(&self) -> Option<&str> {
        self.shared.owner.as_deref()
    }

    /// True for a copy of a stream another process runs (see [`crate::replica`]).
    pub fn is_replica(&self) -> bool {
        self.shared.replica
    }

    /// Reads the events after `after` as replica entries, without counting as a reader.
    pub fn follow(&self, after: u64) -> crate::Follower {
        crate::Follower::new(self.shared.clone(), after)
    }

    pub fn include_usage(&self) -> bool {
        self.shared.include_usage
    }

    pub fn created(&self) -> Instant {
        self.shared.created
    }

    /// Asks the writer to stop (the stop button). Readers then see `done` with
    /// `finish_reason` `cancelled`, written by the writer once the upstream is dropped.
    pub fn cancel(&self) {
        self.shared.cancel();
    }

    /// True once [`cancel`](Self::cancel) has been asked (here or, for the gateway, from
    /// another instance).
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
    }

    pub fn is_finished(&self) -> bool {
        self.shared.is_finished()
    }

    /// Resolves once the generation has ended (its terminal event is in the log). Not a
    /// reader: waiting here does not keep an abandoned generation running past its grace.
    pub async fn finished(&self) {
        std::future::poll_fn(|cx| loop {
            // Read before the check: the terminal event is published after it is in the log,
            // so either the check sees it or `wait` finds more than `seen` published.
            let seen = self.shared.published();
            if self.shared.is_finished() {
                return std::task::Poll::Ready(());
            }
            if self.shared.wait(seen, cx.waker()) {
                return std::task::Poll::Pending;
            }
        })
        .await;
    }

    /// The final event, once the generation has ended.
    pub fn outcome(&self) -> Option<Event> {
        self.shared.read().terminal().cloned()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.shared.read().usage()
    }

    /// Readers attached now.
    pub fn reader_count(&self) -> usize {
        self.shared.reader_count()
    }

    /// Bytes this stream holds, as counted against the memory bounds.
    pub fn bytes(&self) -> usize {
        self.shared.counted()
    }

    /// The id of the last event so far in `format`: the OpenAI format's end is several events
    /// (finish chunks, usage chunk, `[DONE]`) numbered on from the log's last id.
    pub fn last_event_id(&self, format: Format) -> u64 {
        self.ends(format).1
    }

    /// The log's last id, the last event id in `format`, and whether the stream has ended, read
    /// together so that they agree. For a dialect the "last id" is the next wire event's number
    /// minus one (wrapping below the first), found by folding the log.
    fn ends(&self, format: Format) -> (u64, u64, bool) {
        if format.is_dialect() {
            let (state, finished) = self.fold(format);
            let next = state.map_or(format.first_id(), |s| s.next_seq());
            return (0, next.wrapping_sub(1), finished);
        }
        let log = self.shared.read();
        let len = log.len();
        match log.terminal() {
            Some(e) => {
                let count = encode::event_count(format, e.view(), self.shared.include_usage);
                (len, len + count - 1, true)
            }
            None => (len, len, false),
        }
    }

    /// A dialect's state folded over the whole log so far (`None` for a non-dialect format),
    /// and whether the stream has ended, read together.
    fn fold(&self, format: Format) -> (Option<dialect::State>, bool) {
        let log = self.shared.read();
        let ctx = Ctx {
            stream_id: self.shared.id.as_str().to_owned(),
            meta: log.meta(),
        };
        let Some(mut state) = dialect::State::new(format, ctx, u64::MAX) else {
            return (None, log.terminal().is_some());
        };
        let mut sink = bytes::BytesMut::new();
        let mut at = log.cursor(0);
        while let Some(e) = log.next(&mut at) {
            state.encode(&mut sink, e);
        }
        (Some(state), log.terminal().is_some())
    }

    /// The answer so far as a dialect's non-streaming object (the Responses API's response,
    /// Anthropic's message); the whole answer once the stream has ended. `None` for a format
    /// without one.
    pub fn body(&self, format: Format) -> Option<serde_json::Value> {
        self.fold(format).0.and_then(|s| s.body())
    }

    /// A reader from the first event, which the first reader of a stream always gets (the
    /// reader limit applies to those that come later).
    pub fn reader(&self, format: Format) -> Reader {
        self.shared.add_reader(None);
        if format.is_dialect() {
            return Reader::new_dialect(self.shared.clone(), 0, format);
        }
        Reader::new(self.shared.clone(), 0, 0, format)
    }

    /// A reader of a dialect's wire events numbered `first` and after (`first` at or below the
    /// format's [`first_id`](Format::first_id): from the start). The OpenAI Responses API's
    /// `starting_after=N` is `first = N + 1`. Errors as [`subscribe`](Self::subscribe).
    pub fn subscribe_from(&self, first: u64, format: Format) -> Result<Reader, RelayError> {
        if !format.is_dialect() {
            return self.subscribe(first.saturating_sub(1), format);
        }
        let (_, last, finished) = self.ends(format);
        let next = last.wrapping_add(1);
        if first > next {
            return Err(RelayError::BadPosition(first - 1));
        }
        if finished && first == next {
            return Err(RelayError::AtEnd(first.saturating_sub(1)));
        }
        if !self.shared.add_reader(Some(self.shared.max_readers)) {
            return Err(RelayError::TooManyReaders(self.shared.max_readers));
        }
        if first > format.first_id() {
            self.shared
                .resumes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Reader::new_dialect(self.shared.clone(), first, format))
    }

    /// A reader of the events after `after`, as numbered in `format`.
    pub fn subscribe(&self, after: u64, format: Format) -> Result<Reader, RelayError> {
        if format.is_dialect() {
            return self.subscribe_from(after + 1, format);
        }
        // One look at the log: a terminal event appended between separate looks would make a
        // caught-up reader resume "inside the end" and get its last delta twice.
        let (len, last, finished) = self.ends(format);
        if after > last {
            return Err(RelayError::BadPosition(after));
        }
        if finished && after == last {
            return Err(RelayError::AtEnd(after));
        }
        if !self.shared.add_reader(Some(self.shared.max_readers)) {
            return Err(RelayError::TooManyReaders(self.shared.max_readers));
        }
        if after > 0 {
            self.shared
                .resumes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // Resuming inside the OpenAI end: start at the terminal event, skipping what was seen.
        let (pos, skip) = if after >= len && last > len {
            (len - 1, after - (len - 1))
        } else {
            (after, 0)
        };
        Ok(Reader::new(self.shared.clone(), pos, skip, format))
    }
}
