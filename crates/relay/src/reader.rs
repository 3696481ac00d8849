//! A reader of one generation from its own position: the log from there, then live events,
//! with no gap and no duplicate at the seam, as an SSE body with keep-alive comments.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::event::Meta;
use crate::generation::Entry;
use crate::{Format, Generation};

pub struct Reader {
    gen: Arc<Generation>,
    /// Id of the last event handed out.
    pos: u64,
    /// Events of the OpenAI end to leave out: the reader resumed in the middle of it.
    skip: u64,
    len: watch::Receiver<u64>,
    buf: VecDeque<Arc<Entry>>,
    meta: Arc<Meta>,
    ended: bool,
}

impl Reader {
    pub(crate) fn new(
        gen: Arc<Generation>,
        pos: u64,
        skip: u64,
        len: watch::Receiver<u64>,
    ) -> Self {
        let meta = gen.meta();
        Self {
            gen,
            pos,
            skip,
            len,
            buf: VecDeque::new(),
            meta,
            ended: false,
        }
    }

    pub fn generation(&self) -> &Arc<Generation> {
        &self.gen
    }

    /// Takes what the log holds past our position into the buffer. Returns false when the log
    /// has nothing more and never will.
    fn fill(&mut self) -> bool {
        // Mark the current length as seen *before* reading the log: an append after this
        // point changes the watch version, so the following `changed()` returns at once.
        self.len.borrow_and_update();
        let st = self.gen.lock();
        let from = self.pos as usize;
        if from < st.log.len() {
            if self.pos == 0 || !Arc::ptr_eq(&self.meta, &st.meta) {
                self.meta = st.meta.clone();
            }
            self.buf.extend(st.log[from..].iter().cloned());
            self.pos = st.log.len() as u64;
            return true;
        }
        st.finished_at.is_none()
    }

    /// The next event, waiting for it if need be; `None` after the terminal event.
    pub async fn next(&mut self) -> Option<Arc<Entry>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                if e.event.is_terminal() {
                    self.ended = true;
                }
                return Some(e);
            }
            if self.ended || !self.fill() {
                return None;
            }
            if self.buf.is_empty() && self.len.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Everything available now, encoded as one piece, or waits for more; `None` at the end.
    async fn next_bytes(&mut self, format: Format) -> Option<Bytes> {
        let first = self.next().await?;
        let tail;
        let first_bytes = if self.skip > 0 && format == Format::OpenAi {
            tail = crate::encode::openai_tail(
                first.id,
                &first.event,
                &self.meta,
                self.gen.include_usage(),
                std::mem::take(&mut self.skip),
            );
            &tail
        } else {
            self.gen.encoded(&first, format, &self.meta)
        };
        if self.buf.is_empty() {
            return Some(first_bytes.clone());
        }
        // A reader catching up: send the backlog in one write instead of one per event.
        let mut out = BytesMut::with_capacity(first_bytes.len() * (self.buf.len() + 1));
        out.extend_from_slice(first_bytes);
        while let Some(e) = self.buf.pop_front() {
            if e.event.is_terminal() {
                self.ended = true;
            }
            out.extend_from_slice(self.gen.encoded(&e, format, &self.meta));
        }
        Some(out.freeze())
    }

    /// This reader as an SSE body: the format's preamble, then events, with a keep-alive
    /// comment after `keep_alive` of silence. Ends after the terminal event.
    pub fn into_sse(
        self,
        format: Format,
        keep_alive: Duration,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let preamble = format.preamble();
        let silence = Silence::new(keep_alive);
        futures::stream::unfold(
            (self, silence, !preamble.is_empty()),
            move |(mut reader, mut silence, send_preamble)| async move {
                if send_preamble {
                    return Some((Ok(Bytes::from_static(preamble)), (reader, silence, false)));
                }
                // Both branches are cancel-safe: the reader only waits on its watch channel,
                // the silence timer only on its sleep.
                tokio::select! {
                    biased;
                    b = reader.next_bytes(format) => {
                        silence.activity();
                        b.map(|b| (Ok(b), (reader, silence, false)))
                    }
                    () = silence.elapsed() => Some((
                        Ok(Bytes::from_static(format.keep_alive())),
                        (reader, silence, false),
                    )),
                }
            },
        )
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

    /// Resolves once `period` has passed since the last activity (or the last keep-alive).
    async fn elapsed(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let due = self.last + self.period;
            let now = Instant::now();
            if now >= due {
                self.last = now;
                self.sleep.as_mut().reset(now + self.period);
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.gen.reader_gone();
    }
}
