//! Upstream bytes to SSE events: eventsource-stream, with end of input handled here. Reads that
//! are whole simple events (one or a few per read, as model upstreams write their tokens) are
//! split in place instead, while eventsource-stream holds nothing (see [`parser`]); everything
//! below is about the reads it parses.
//!
//! eventsource-stream follows the WHATWG parsing algorithm, with one gap that matters for model
//! streams: an event whose last line is not followed by a blank line (the upstream closed the
//! connection right after its last `data:` line, or ended the line with a lone CR) is never
//! dispatched. The HTML spec discards such an event ("If the file ends in the middle of an event,
//! before the final empty line, the incomplete event is not dispatched"), but a model upstream
//! that does this has still sent text the user is waiting for, so after a clean end of input we
//! feed the parser one more `\n\n`: it completes a pending line (including one ended by a lone CR)
//! and dispatches a pending event, and is a no-op when nothing is pending. Whether that happened
//! is reported, so a half-written JSON event at the end reads as truncation, not as garbage.
//! A body that ends on a blank line written as a lone CR (`\r\r`) is complete, but the parser
//! is still waiting to see whether that CR starts a CRLF; a final `\n` settles it.
//!
//! eventsource-stream 0.2 also panics on a leading byte order mark (it slices the first string
//! at byte 1, inside the three-byte BOM). So the BOM is stripped here, on the bytes (it may be
//! split across reads), and the parser's first input is a harmless `\n` (a blank line with no
//! pending event dispatches nothing; given by the `Parser` just before the first read it hands
//! over, if any), so its own check never sees a BOM.
//!
//! Its UTF-8 decoder keeps every byte from the first invalid one until the end of input and only
//! then fails, so the body is ended here at the first read that cannot be UTF-8: the parser fails
//! the same way at once instead of buffering the rest of the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Why the byte stream under the SSE parser stopped.
#[derive(Debug)]
pub enum ReadError {
    /// No bytes for the idle timeout.
    Idle,
    /// The connection failed mid-body.
    Io(String),
    /// A line longer than [`MAX_LINE_BYTES`]: the parser would buffer it without end.
    LineTooLong,
    /// An event whose lines add up to more than [`MAX_EVENT_BYTES`]: the parser joins every
    /// `data:` line of an event into one buffer, so many capped lines would still grow it
    /// without end.
    EventTooLarge,
}

/// Longest SSE line Sluice buffers. A hostile upstream that never ends its line would
/// otherwise grow the parser's buffer without bound.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Most bytes of field lines (comments excluded) one SSE event may have before its blank line.
/// The parser appends every `data:` line of an event to one buffer and only hands it over at the
/// blank line, so without this cap an upstream could grow that buffer without bound one capped
/// line at a time. 16 MiB is far above any real chunk (the largest seen are tool-call arguments
/// or inline images of a few MiB sent whole) and keeps a hostile stream's cost to a few times
/// that (the parser's buffer, then the decoded text). Checked on every read before the bytes
/// reach the parser, so it is never passed by more than one read.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("idle timeout"),
            Self::Io(e) => f.write_str(e),
            Self::LineTooLong => write!(f, "an SSE line longer than {MAX_LINE_BYTES} bytes"),
            Self::EventTooLarge => {
                write!(f, "an SSE event larger than {MAX_EVENT_BYTES} bytes")
            }
        }
    }
}

/// Parses `body` as SSE, as the [`Parser`] the stream driver polls: simple reads (whole events,
/// one or a few per read, as every model upstream writes its tokens) are split in place, and
/// eventsource-stream parses the rest. `completed_at_eof` becomes true when the body ended
/// without a final blank line and Sluice completed the last event itself.
pub fn parser<S, E>(
    body: S,
    idle: Duration,
    completed_at_eof: Arc<AtomicBool>,
) -> Parser<impl Stream<Item = Result<Bytes, ReadError>> + Send + Unpin>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    Parser::new(Prelude::new(body, idle, completed_at_eof))
}

/// The bytes the parser reads: `body` with everything above done to it in one `poll_next`, so a
/// frame passes one layer here, not one `async` state machine per job. In order, per read: the
/// size limits and the end-of-input check ([`Tail`], on the bytes as they came), the UTF-8
/// check ([`Utf8Check`]), the BOM removed and `error:` lines rewritten ([`ErrorLines`]); the
/// idle timeout when the body has nothing. A read with no BOM and no `error:` line is passed on
/// as the same `Bytes`, uncopied.
struct Prelude<S> {
    body: S,
    /// After end of input or a failure: nothing more.
    done: bool,
    tail: Tail,
    /// `Some(start)` while the body's start could still be a BOM; empty until the first bytes.
    bom_head: Option<Vec<u8>>,
    lines: ErrorLines,
    utf8: Utf8Check,
    idle: IdleTimer,
    completed_at_eof: Arc<AtomicBool>,
}

impl<S> Prelude<S> {
    fn new(body: S, idle: Duration, completed_at_eof: Arc<AtomicBool>) -> Self {
        Self {
            body,
            done: false,
            tail: Tail::default(),
            bom_head: Some(Vec::new()),
            lines: ErrorLines::default(),
            utf8: Utf8Check::default(),
            idle: IdleTimer::new(idle),
            completed_at_eof,
        }
    }

    /// `chunk` without a leading BOM, however the reads split it: empty while undecided.
    fn strip_bom(&mut self, chunk: Bytes) -> Bytes {
        let Some(mut head) = self.bom_head.take() else {
            return chunk;
        };
        let head = if head.is_empty() && chunk.len() >= BOM.len() {
            // The usual first read: decided on its own, without a copy.
            chunk
        } else {
            head.extend_from_slice(&chunk);
            if head.len() < BOM.len() && BOM.starts_with(&head) {
                self.bom_head = Some(head);
                return Bytes::new();
            }
            Bytes::from(head)
        };
        if head.starts_with(BOM) {
            head.slice(BOM.len()..)
        } else {
            head
        }
    }

    /// The bytes that end the body once the upstream has: what completes a last event the
    /// upstream left open (and marks that), and anything held back while undecided.
    fn finish(&mut self) -> Bytes {
        let end: &'static [u8] = if !self.tail.ends_event() {
            self.completed_at_eof.store(true, Ordering::Relaxed);
            b"\n\n"
        } else if self.tail.ends_with_cr() {
            // A last blank line written as a lone CR is still pending in the parser; an LF
            // completes it (as CRLF) without adding a line.
            b"\n"
        } else {
            b""
        };
        let end = self.strip_bom(Bytes::from_static(end));
        let mut out = self.lines.rewrite(end);
        // Nothing is left here in practice (a body that ends on a blank line has decided both
        // its BOM and its last line start), but nothing the upstream sent is dropped either.
        let head = self.bom_head.take().unwrap_or_default();
        let head = self.lines.rewrite(Bytes::from(head));
        let held = std::mem::take(&mut self.lines.held);
        if !head.is_empty() || !held.is_empty() {
            let mut joined = out.to_vec();
            joined.extend_from_slice(&head);
            joined.extend_from_slice(&held);
            out = Bytes::from(joined);
        }
        out
    }
}

impl<S, E> Stream for Prelude<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            // The body first: the idle timer is looked at only when it has nothing, so it costs
            // nothing while bytes flow.
            let chunk = match this.body.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(Some(Err(e))) => return this.fail(ReadError::Io(e.to_string())),
                Poll::Ready(None) => {
                    this.done = true;
                    let end = this.finish();
                    return Poll::Ready((!end.is_empty()).then_some(Ok(end)));
                }
                Poll::Pending => {
                    return match this.idle.poll_expired(cx) {
                        Poll::Ready(()) => this.fail(ReadError::Idle),
                        Poll::Pending => Poll::Pending,
                    };
                }
            };
            this.tail.push(&chunk);
            if this.tail.line_len > MAX_LINE_BYTES {
                return this.fail(ReadError::LineTooLong);
            }
            if this.tail.event_len > MAX_EVENT_BYTES {
                return this.fail(ReadError::EventTooLarge);
            }
            this.idle.activity();
            let valid = this.utf8.check(&chunk);
            let chunk = this.strip_bom(chunk);
            let chunk = this.lines.rewrite(chunk);
            if !valid {
                // The parser keeps every byte from the first one that is not UTF-8 until the
                // end of input, dispatches nothing more, and then fails on them
                // (`EventStreamError::Utf8`). Ending the body here gives the same events and the
                // same failure now, instead of buffering the rest of the upstream's stream.
                this.done = true;
                return Poll::Ready((!chunk.is_empty()).then_some(Ok(chunk)));
            }
            // Empty when all of it is held back until the next read decides it.
            if !chunk.is_empty() {
                return Poll::Ready(Some(Ok(chunk)));
            }
        }
    }
}

impl<S> Prelude<S> {
    /// Ends the body with `e`. Bytes held back are dropped: the stream has failed.
    fn fail(&mut self, e: ReadError) -> Poll<Option<Result<Bytes, ReadError>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }
}

/// llama.cpp's server (builds until September 2025) sent a mid-stream failure as an `error:`
/// line, a field SSE does not have, so a WHATWG parser drops it and the user sees a stream that
/// just stops (<https://github.com/ggml-org/llama.cpp/pull/16109>). The error's JSON is what the
/// user needs, so a line that starts with `error:` is read as a `data:` line: the six bytes are
/// replaced in place by `data: ` (the value then starts with a space, which JSON ignores).
const ERROR_FIELD: &[u8] = b"error:";

/// Built once: building a searcher costs more than searching a read.
static ERROR_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(ERROR_FIELD));

/// Line-start tracking for the `error:` rewrite.
struct ErrorLines {
    /// The next byte starts a line. (The LF of a CRLF split between reads then counts as a
    /// blank line of its own here, which does not matter for finding `error:`.)
    line_start: bool,
    /// The start of a line that may still become `error:`, held back until it is known.
    held: Vec<u8>,
}

impl Default for ErrorLines {
    fn default() -> Self {
        Self {
            line_start: true,
            held: Vec::new(),
        }
    }
}

impl ErrorLines {
    /// `chunk` with its `error:` lines rewritten; the same bytes when it has none.
    fn rewrite(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_empty() && chunk.ends_with(b"\n") && ERROR_FINDER.find(&chunk).is_none() {
            // The usual read: no line of it can start with `error:`, and it ends at a line end.
            self.line_start = true;
            return chunk;
        }
        self.rewrite_lines(chunk)
    }

    /// [`rewrite`](Self::rewrite), line by line.
    fn rewrite_lines(&mut self, chunk: Bytes) -> Bytes {
        let mut data = if self.held.is_empty() {
            chunk
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(&chunk);
            Bytes::from(joined)
        };
        let mut found: Vec<usize> = Vec::new();
        let mut at = 0;
        while at <= data.len() {
            if self.line_start {
                let rest = &data[at..];
                if rest.starts_with(ERROR_FIELD) {
                    found.push(at);
                } else if rest.len() < ERROR_FIELD.len() && ERROR_FIELD.starts_with(rest) {
                    if rest.is_empty() {
                        break;
                    }
                    // Undecided until the next read: hold it back.
                    self.held = rest.to_vec();
                    data.truncate(at);
                    break;
                }
            }
            match memchr::memchr2(b'\n', b'\r', &data[at..]) {
                Some(end) => {
                    self.line_start = true;
                    at += end + 1;
                }
                None => {
                    self.line_start = false;
                    break;
                }
            }
        }
        if found.is_empty() {
            return data;
        }
        let mut bytes = data.to_vec();
        for at in found {
            bytes[at..at + ERROR_FIELD.len()].copy_from_slice(b"data: ");
        }
        Bytes::from(bytes)
    }
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// Whether the body is still UTF-8, however the reads split its characters.
#[derive(Default)]
struct Utf8Check {
    /// The start of a character the last read ended inside.
    carry: [u8; 4],
    carried: usize,
}

impl Utf8Check {
    /// False once `chunk` has a byte that cannot be UTF-8 whatever follows.
    fn check(&mut self, chunk: &[u8]) -> bool {
        let mut rest = chunk;
        if self.carried > 0 {
            let width = match self.carry[0] {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            let take = (width - self.carried).min(rest.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&rest[..take]);
            self.carried += take;
            rest = &rest[take..];
            match std::str::from_utf8(&self.carry[..self.carried]) {
                Ok(_) => self.carried = 0,
                // Still inside the character: this read was all of it.
                Err(e) if e.error_len().is_none() => return true,
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(rest) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let tail = &rest[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len();
                true
            }
            Err(_) => false,
        }
    }
}

/// The idle timeout without a timer per read: a read only records the time, and the one sleep
/// (registered once) is moved on when it fires before the silence is long enough.
struct IdleTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    last: tokio::time::Instant,
    idle: Duration,
}

impl IdleTimer {
    fn new(idle: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            last: now,
            idle,
        }
    }

    fn activity(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Ready once nothing has been read for the idle timeout. Polled only when the body has
    /// nothing, which registers the waker with the one sleep.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let due = self.last + self.idle;
            if tokio::time::Instant::now() >= due {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// The last (up to) four bytes of a run of reads, oldest first: enough to tell whether they
/// ended with a blank line, whatever its line ends.
#[derive(Debug, Default)]
struct LastBytes {
    bytes: [u8; 4],
    len: usize,
}

impl LastBytes {
    fn push(&mut self, read: &[u8]) {
        // Shifted in at once (a rotate per byte is a call per byte).
        let n = read.len().min(4);
        self.bytes.copy_within(n.., 0);
        self.bytes[4 - n..].copy_from_slice(&read[read.len() - n..]);
        self.len = (self.len + n).min(4);
    }

    /// Empty while nothing was pushed.
    fn get(&self) -> &[u8] {
        &self.bytes[4 - self.len..]
    }
}

/// The last bytes seen, enough to tell whether the body ended at an event boundary, and the
/// sizes of the current line and event (WHATWG line ends: CRLF, LF or a lone CR).
#[derive(Default)]
struct Tail {
    last: LastBytes,
    /// Bytes of the current line so far.
    line_len: usize,
    /// Bytes of the current event's field lines so far, one more per line for the LF the
    /// parser joins `data:` lines with. Comment lines are not counted: the parser drops them.
    event_len: usize,
    /// The current line is a comment (starts with `:`).
    comment: bool,
    /// The last byte was a CR: an LF at the start of the next read belongs to it.
    after_cr: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        if !self.after_cr && chunk.ends_with(b"\n\n") && memchr::memchr(b'\r', chunk).is_none() {
            // The usual read, whole events with LF ends: whatever its lines, it ends with a
            // blank line, so nothing of a line or an event is left open.
            self.line_len = 0;
            self.event_len = 0;
        } else {
            self.push_lines(chunk);
        }
        self.last.push(chunk);
    }

    fn push_lines(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if std::mem::take(&mut self.after_cr) {
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
            self.extend_line(&rest[..at]);
            self.end_line();
            let cr = rest[at] == b'\r';
            rest = &rest[at + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.extend_line(rest);
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        let Some(&first) = bytes.first() else {
            return;
        };
        if self.line_len == 0 {
            self.comment = first == b':';
        }
        self.line_len += bytes.len();
        if !self.comment {
            self.event_len += bytes.len();
        }
    }

    fn end_line(&mut self) {
        if self.line_len == 0 {
            // A blank line ends the event.
            self.event_len = 0;
        } else if !self.comment {
            self.event_len += 1;
        }
        self.line_len = 0;
    }

    fn ends_with_cr(&self) -> bool {
        self.last.get().ends_with(b"\r")
    }

    /// Nothing seen, or the body ends with a blank line (`\n\n`, `\r\r`, `\r\n\r\n`, `\n\r\n`...).
    fn ends_event(&self) -> bool {
        let t = self.last.get();
        t.is_empty()
            || t.ends_with(b"\n\n")
            || t.ends_with(b"\r\r")
            || t.ends_with(b"\n\r\n")
            || t.ends_with(b"\r\n\r\n")
    }
}

mod parser;
mod simple;

pub use parser::{Parser, SseError};

#[cfg(test)]
mod tests;
