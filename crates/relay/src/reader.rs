//! A reader of one generation from its own position: the log from there, then live events,
//! with no gap and no duplicate at the seam, as an SSE body with keep-alive comments.
//!
//! Events are encoded when read, straight into the buffer of the next write, which holds at
//! most [`MAX_WRITE`] bytes: a reader catching up sends its backlog in a few large writes, and a
//! reader whose client stops reading holds one such buffer, never a copy of the backlog.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::encode::dialect::{self, Ctx};
use crate::encode::{self, Format};
use crate::event::Event;
use crate::log::Cursor;
use crate::shared::Shared;
use crate::signal::Signal;

/// Most bytes handed to the server in one piece.
pub const MAX_WRITE: usize = 64 * 1024;

/// Room for an event's fixed parts, on top of its text, when sizing a write buffer.
const EVENT_OVERHEAD: usize = 96;

#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    format: Format,
    /// The last event handed out.
    at: Cursor,
    /// Events of the OpenAI end to leave out: the reader resumed in the middle of it.
    skip: u64,
    /// The rest of an encoded event larger than one write.
    pending: Bytes,
    ended: bool,
    /// A dialect's state, made when the first event is read (it fixes the metadata).
    dialect: Option<Box<dialect::State>>,
    /// A dialect reader's first wire event to write.
    dialect_from: u64,
}

enum Fill {
    Chunk(Bytes),
    Empty,
    End,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, pos: u64, skip: u64, format: Format) -> Self {
        let at = shared.read().cursor(pos);
        Self {
            shared,
            format,
            at,
            skip,
            pending: Bytes::new(),
            ended: false,
            dialect: None,
            dialect_from: 0,
        }
    }

    /// A reader of a dialect (see [`dialect`]): folds the log from its start, writing from
    /// wire event `from` on.
    pub(crate) fn new_dialect(shared: Arc<Shared>, from: u64, format: Format) -> Self {
        let mut r = Self::new(shared, 0, 0, format);
        r.dialect_from = from;
        r
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The id of the last event this reader has taken.
    pub fn position(&self) -> u64 {
        self.at.id
    }

    /// Encodes what the log holds past our position, up to [`MAX_WRITE`] bytes.
    fn try_chunk(&mut self) -> Fill {
        loop {
            match self.try_fill() {
                // A dialect reader resuming folds events it does not write, and a dialect may
                // write nothing for an event: take more rather than hand out nothing.
                Fill::Chunk(b) if b.is_empty() => {}
                fill => return fill,
            }
        }
    }

    fn try_fill(&mut self) -> Fill {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_WRITE);
            return Fill::Chunk(self.pending.split_to(n));
        }
        if self.ended {
            return Fill::End;
        }
        let log = self.shared.read();
        let len = log.len();
        if self.at.id >= len {
            // A discarded stream's log is empty: nothing more will come.
            return if log.terminal().is_some() || self.shared.is_discarded() {
                self.ended = true;
                Fill::End
            } else {
                Fill::Empty
            };
        }
        let head = log.chunk_head();
        let per_event = EVENT_OVERHEAD
            + match self.format {
                Format::OpenAi => head.len(),
                Format::Browser => 0,
                Format::Responses | Format::Anthropic | Format::UiMessage => 2 * EVENT_OVERHEAD,
            };
        if self.format.is_dialect() && self.dialect.is_none() {
            let ctx = Ctx {
                stream_id: self.shared.id.as_str().to_owned(),
                meta: log.meta(),
            };
            self.dialect = dialect::State::new(self.format, ctx, self.dialect_from).map(Box::new);
        }
        // Size the buffer for the events that fit in one write, so it is never regrown.
        let mut last = self.at.id;
        let mut size = 0;
        while last < len && size < MAX_WRITE {
            let text = log.text_len_after(last);
            size += per_event + text + text / 8;
            last += 1;
        }
        let mut buf = BytesMut::with_capacity(size);
        while self.at.id < last {
            let Some(event) = log.next(&mut self.at) else {
                break;
            };
            let skip = if event.is_terminal() {
                self.ended = true;
                std::mem::take(&mut self.skip)
            } else {
                0
            };
            match &mut self.dialect {
                Some(d) => d.encode(&mut buf, event),
                None => encode::encode_into(
                    &mut buf,
                    self.format,
                    self.at.id,
                    event,
                    head,
                    self.shared.include_usage,
                    skip,
                ),
            }
        }
        drop(log);
        if buf.len() > MAX_WRITE {
            self.pending = buf.split_off(MAX_WRITE).freeze();
        }
        Fill::Chunk(buf.freeze())
    }

    /// The next piece of the body, waiting for events if need be; `None` after the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            match self.try_chunk() {
                Fill::Chunk(b) => return Poll::Ready(Some(b)),
                Fill::End => return Poll::Ready(None),
                Fill::Empty => {}
            }
            if self.shared.wait(self.at.id, cx.waker()) {
                return Poll::Pending;
            }
        }
    }

    /// The next event and its id, waiting for it if need be; `None` after the terminal event.
    pub async fn next_event(&mut self) -> Option<(u64, Event)> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u64, Event)>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            {
                let log = self.shared.read();
                if let Some(e) = log.next(&mut self.at) {
                    self.ended = e.is_terminal();
                    return Poll::Ready(Some((self.at.id, e.to_event())));
                }
                if log.terminal().is_some() || self.shared.is_discarded() {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            }
            if self.shared.wait(self.at.id, cx.waker()) {
                return Poll::Pending;
            }
        }
    }

    /// This reader as an SSE body: the format's preamble, then events, with a keep-alive
    /// comment after `keep_alive` of silence. Ends after the terminal event.
    pub fn into_sse(self, keep_alive: Duration) -> SseBody {
        let (pumped, quiet) = Signal::pair();
        SseBody {
            preamble: self.format.preamble(),
            reader: self,
            silence: Silence::new(keep_alive),
            driving: false,
            fresh: true,
            pumped,
            quiet,
        }
    }

    /// Like [`into_sse`](Self::into_sse), for the stream's first reader, which also drives the
    /// stream's writer: `driver` (the future that appends the events) is polled by the body
    /// itself, so each event goes from the upstream to the client in one task, without a wake-up
    /// of another. The driver is handed to its `hand_off` (to spawn it) and runs on alone when
    /// the body is dropped (the client went away) before the driver is done, and when the
    /// stream is cancelled: the body may be one nobody polls (a client that stopped reading),
    /// and the driver must still see the cancel at once.
    pub fn into_sse_driving(self, keep_alive: Duration, driver: Driver) -> SseBody {
        self.shared.set_pump(driver);
        let mut body = self.into_sse(keep_alive);
        body.driving = true;
        body
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.remove_reader();
    }
}

/// The future that writes a stream, and what to do with it if its first reader goes away.
pub struct Driver {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
    hand_off: Option<HandOff>,
}

type HandOff = Box<dyn FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) + Send>;

impl Driver {
    pub fn new(
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
        hand_off: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + 'static,
    ) -> Self {
        Self {
            future,
            hand_off: Some(Box::new(hand_off)),
        }
    }
}

impl Driver {
    /// Polls the future; once it is done there is nothing to hand off.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let r = self.future.as_mut().poll(cx);
        if r.is_ready() {
            self.hand_off = None;
        }
        r
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(hand_off) = self.hand_off.take() {
            let future = std::mem::replace(&mut self.future, Box::pin(async {}));
            hand_off(future);
        }
    }
}

/// A reader as a response body of SSE bytes.
pub struct SseBody {
    reader: Reader,
    preamble: &'static [u8],
    silence: Silence,
    /// This body polls the stream's writer (see [`Reader::into_sse_driving`]) until the driver
    /// is done or taken away.
    driving: bool,
    /// While driving: the writer may have appended since the log was last found empty.
    fresh: bool,
    /// The writer's wake-ups, and the keep-alive timer's (see [`signal`](crate::signal)).
    pumped: Signal,
    quiet: Signal,
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if self.driving {
            // The client went away first: the writer runs on alone.
            self.reader.shared.release_pump(false);
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.preamble.is_empty() {
            let p = std::mem::take(&mut this.preamble);
            return Poll::Ready(Some(Ok(Bytes::from_static(p))));
        }
        // Registered before the signals are looked at: a wake-up in between is seen next time.
        this.pumped.register(cx.waker());
        // The writer is polled only when one of its own wake-ups fired (the upstream has bytes,
        // its pump asked for another turn, a cancel): hyper polls a body again after each
        // write, and the whole upstream stack would be polled to find nothing. The slot's lock
        // is uncontended: it is shared only with a cancel.
        if this.driving && this.pumped.take() {
            this.fresh = true;
            if !this.reader.shared.poll_pump(&mut this.pumped.context()) {
                this.driving = false;
            }
        }
        if this.driving {
            // Only the driver appends, and its wake-ups are this task's: waiting on the log as
            // well would only wake this task a second time.
            if this.fresh {
                match this.reader.try_chunk() {
                    Fill::Chunk(b) => {
                        this.silence.activity();
                        return Poll::Ready(Some(Ok(b)));
                    }
                    Fill::End => return Poll::Ready(None),
                    Fill::Empty => this.fresh = false,
                }
            }
        } else if let Poll::Ready(b) = this.reader.poll_chunk(cx) {
            this.silence.activity();
            return Poll::Ready(b.map(Ok));
        }
        if !this.quiet.take() {
            return Poll::Pending;
        }
        match this.silence.poll_elapsed(&mut this.quiet.context()) {
            Poll::Ready(()) => {
                // The timer was moved on without being polled: poll it next time to arm it.
                this.quiet.arm();
                Poll::Ready(Some(Ok(Bytes::from_static(
                    this.reader.format.keep_alive(),
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A keep-alive timer that costs nothing per event: sending an event only records the time,
/// and the one sleep (registered once) is moved when it fires early.
struct Silence {
    sleep: Pin<Box<Sleep>>,
    last: Instant,
    period: Duration,
}

impl Silence {
    fn new(period: Duration) -> Self {
        let now = Instant::now();
        Self {
            sleep: Box::pin(tokio::time::sleep_until(now + period)),
            last: now,
            period,
        }
    }

    fn activity(&mut self) {
        self.last = Instant::now();
    }

    /// Ready once `period` has passed since the last activity (or the last keep-alive).
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.period;
            let now = Instant::now();
            if now >= due {
                self.last = now;
                self.sleep.as_mut().reset(now + self.period);
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(due);
        }
    }
}
