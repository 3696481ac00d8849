//! A reader of one generation from its own position: the log from there, then live events,
//! with no gap and no duplicate at the seam, as an SSE body with keep-alive comments.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::watch;

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
        futures::stream::unfold(
            (self, !preamble.is_empty()),
            move |(mut reader, send_preamble)| async move {
                if send_preamble {
                    return Some((Ok(Bytes::from_static(preamble)), (reader, false)));
                }
                match tokio::time::timeout(keep_alive, reader.next_bytes(format)).await {
                    Ok(Some(b)) => Some((Ok(b), (reader, false))),
                    Ok(None) => None,
                    Err(_) => Some((Ok(Bytes::from_static(format.keep_alive())), (reader, false))),
                }
            },
        )
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.gen.reader_gone();
    }
}
