//! The dialects: wire formats whose events do not map one to one onto log events (the OpenAI
//! Responses API, Anthropic Messages, the AI SDK's UI message stream).
//!
//! A dialect's encoder is a state machine folded over the log from its first event: one log
//! event becomes zero or more wire events (a text delta may open an output item and a content
//! part before it), and each wire event gets the next number of the dialect's own sequence.
//! The state is a function of the log alone (ids derive from the stream ID, times from its
//! metadata), so a reader resuming from wire event N folds the log from its start, writes
//! nothing before N, and produces the same bytes a reader from the start wrote: nothing lost,
//! nothing doubled, whatever position it asks for. Encoders update their state outside the
//! closures they pass to [`Out::emit`], which are skipped for events before the reader's start.

use bytes::{BufMut, BytesMut};

use super::{anthropic, responses, ui, Format};
use crate::event::{EventRef, Meta};

/// What every event of a stream may use: fixed for the stream's life.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The stream's ID: the dialects' own ids (response, message, items) derive from it.
    pub stream_id: String,
    /// The response metadata (model, creation time) as the stream's chunks carry it.
    pub meta: Meta,
}

/// Where a dialect's wire events go: numbered, and written only from the reader's start on.
pub struct Out<'b> {
    buf: &'b mut BytesMut,
    /// The next event's number.
    next: u64,
    /// Events numbered below this are folded into the state but not written.
    from: u64,
    /// Whether events carry their number as an `id:` line.
    ids: bool,
}

impl<'b> Out<'b> {
    /// The number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// One wire event: `id: N` (when the dialect numbers its events), `event: NAME` (when
    /// named), `data: ` followed by what `data` writes (given the event's number), a blank line.
    /// `data` is not called for an event before the reader's start: it must only write.
    pub fn emit(&mut self, name: Option<&str>, data: impl FnOnce(&mut BytesMut, u64)) {
        let seq = self.next;
        self.next += 1;
        if seq < self.from {
            return;
        }
        if self.ids {
            self.buf.put_slice(b"id: ");
            self.buf.put_slice(super::itoa_buf(seq).as_str().as_bytes());
            self.buf.put_u8(b'\n');
        }
        if let Some(n) = name {
            self.buf.put_slice(b"event: ");
            self.buf.put_slice(n.as_bytes());
            self.buf.put_u8(b'\n');
        }
        self.buf.put_slice(b"data: ");
        data(self.buf, seq);
        self.buf.put_slice(b"\n\n");
    }
}

/// A dialect's encoder: its state so far, and what one log event adds to the wire.
pub trait Encoder: Send + Sync + std::fmt::Debug {
    /// Folds `event` into the state and emits its wire events to `out`.
    fn event(&mut self, out: &mut Out<'_>, ctx: &Ctx, event: EventRef<'_>);

    /// The non-streaming answer as it stands (the whole answer once the terminal event has
    /// been folded in): the Responses API's response object, Anthropic's message. `None` for a
    /// dialect with no such object.
    fn body(&self, ctx: &Ctx) -> Option<serde_json::Value>;
}

/// One reader's dialect state: the encoder, the sequence, where the reader starts.
#[derive(Debug)]
pub struct State {
    ctx: Ctx,
    encoder: Box<dyn Encoder>,
    /// The next wire event's number.
    next: u64,
    /// The first wire event to write.
    from: u64,
    ids: bool,
}

impl State {
    /// A fresh encoder for `format` (a dialect), writing from wire event `from` on.
    pub fn new(format: Format, ctx: Ctx, from: u64) -> Option<Self> {
        let encoder: Box<dyn Encoder> = match format {
            Format::Responses => Box::new(responses::Encoder::default()),
            Format::Anthropic => Box::new(anthropic::Encoder::default()),
            Format::UiMessage => Box::new(ui::Encoder::default()),
            Format::Browser | Format::OpenAi => return None,
        };
        Some(Self {
            ctx,
            encoder,
            next: format.first_id(),
            from,
            ids: format.numbered(),
        })
    }

    /// Folds one log event in, writing its wire events from the reader's start on.
    pub fn encode(&mut self, buf: &mut BytesMut, event: EventRef<'_>) {
        let mut out = Out {
            buf,
            next: self.next,
            from: self.from,
            ids: self.ids,
        };
        self.encoder.event(&mut out, &self.ctx, event);
        self.next = out.next;
    }

    /// The number the next wire event will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// See [`Encoder::body`].
    pub fn body(&self) -> Option<serde_json::Value> {
        self.encoder.body(&self.ctx)
    }
}
