//! Upstream bytes to SSE events: eventsource-stream, with end of input handled here.
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
//! pending event dispatches nothing), so its own check never sees a BOM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
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

pub type SseItem = Result<Event, EventStreamError<ReadError>>;

/// Parses `body` as SSE. `completed_at_eof` becomes true when the body ended without a final
/// blank line and Sluice completed the last event itself.
pub fn events<S, E>(
    body: S,
    idle: Duration,
    completed_at_eof: Arc<AtomicBool>,
) -> impl Stream<Item = SseItem> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    // Track the last two bytes so we know whether the body ended on a blank line.
    let bytes = futures::stream::unfold(
        (
            body,
            Some((Tail::default(), IdleTimer::new(idle))),
            completed_at_eof,
        ),
        move |(mut body, state, flag)| async move {
            let (mut tail, mut timer) = state?;
            let next = tokio::select! {
                biased;
                next = body.next() => Some(next),
                () = timer.expired() => None,
            };
            match next {
                None => Some((Err(ReadError::Idle), (body, None, flag))),
                Some(Some(Ok(chunk))) => {
                    tail.push(&chunk);
                    if tail.line_len > MAX_LINE_BYTES {
                        return Some((Err(ReadError::LineTooLong), (body, None, flag)));
                    }
                    if tail.event_len > MAX_EVENT_BYTES {
                        return Some((Err(ReadError::EventTooLarge), (body, None, flag)));
                    }
                    timer.activity();
                    Some((Ok(chunk), (body, Some((tail, timer)), flag)))
                }
                Some(Some(Err(e))) => Some((Err(ReadError::Io(e.to_string())), (body, None, flag))),
                Some(None) => {
                    if tail.ends_event() {
                        // A last blank line written as a lone CR is still pending in the
                        // parser; an LF completes it (as CRLF) without adding a line.
                        tail.ends_with_cr()
                            .then(|| (Ok(Bytes::from_static(b"\n")), (body, None, flag)))
                    } else {
                        flag.store(true, Ordering::Relaxed);
                        Some((Ok(Bytes::from_static(b"\n\n")), (body, None, flag)))
                    }
                }
            }
        },
    );
    let start = futures::stream::once(futures::future::ready(Ok(Bytes::from_static(b"\n"))));
    let body = error_lines_as_data(Box::pin(strip_bom(Box::pin(bytes).fuse())));
    Box::pin(start.chain(body)).eventsource()
}

/// llama.cpp's server (builds until September 2025) sent a mid-stream failure as an `error:`
/// line, a field SSE does not have, so a WHATWG parser drops it and the user sees a stream that
/// just stops (<https://github.com/ggml-org/llama.cpp/pull/16109>). The error's JSON is what the
/// user needs, so a line that starts with `error:` is read as a `data:` line: the six bytes are
/// replaced in place by `data: ` (the value then starts with a space, which JSON ignores).
fn error_lines_as_data<S>(body: S) -> impl Stream<Item = Result<Bytes, ReadError>> + Send
where
    S: Stream<Item = Result<Bytes, ReadError>> + Send + Unpin,
{
    futures::stream::unfold(
        (body, Some(ErrorLines::default())),
        |(mut body, state)| async move {
            let mut state = state?;
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let chunk = state.rewrite(chunk);
                        if chunk.is_empty() {
                            continue;
                        }
                        return Some((Ok(chunk), (body, Some(state))));
                    }
                    Some(Err(e)) => return Some((Err(e), (body, None))),
                    None => {
                        let rest = std::mem::take(&mut state.held);
                        return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), (body, None)));
                    }
                }
            }
        },
    )
}

const ERROR_FIELD: &[u8] = b"error:";

/// Line-start tracking for [`error_lines_as_data`].
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
    fn rewrite(&mut self, chunk: Bytes) -> Bytes {
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
            match data[at..].iter().position(|&b| b == b'\n' || b == b'\r') {
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

/// Removes a byte order mark from the start of `body`, wherever the reads split it.
fn strip_bom<S>(body: S) -> impl Stream<Item = Result<Bytes, ReadError>> + Send
where
    S: Stream<Item = Result<Bytes, ReadError>> + futures::stream::FusedStream + Send + Unpin,
{
    // `Some(bytes)`: the start of the body, while it could still be a BOM.
    futures::stream::unfold((body, Some(Vec::new())), |(mut body, head)| async move {
        let Some(mut head) = head else {
            let item = body.next().await?;
            return Some((item, (body, None)));
        };
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    head.extend_from_slice(&chunk);
                    if head.len() < BOM.len() && BOM.starts_with(&head) {
                        continue;
                    }
                    let rest = match head.strip_prefix(BOM) {
                        Some(rest) => rest.to_vec(),
                        None => head,
                    };
                    return Some((Ok(Bytes::from(rest)), (body, None)));
                }
                Some(Err(e)) => return Some((Err(e), (body, None))),
                None if head.is_empty() => return None,
                None => return Some((Ok(Bytes::from(head)), (body, None))),
            }
        }
    })
}

/// The idle timeout without a timer per read: a read only records the time, and the one sleep
/// (registered once) is moved on when it fires before the silence is long enough.
struct IdleTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
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

    /// Resolves once nothing has been read for the idle timeout.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let due = self.last + self.idle;
            if tokio::time::Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// The last bytes seen, enough to tell whether the body ended at an event boundary, and the
/// sizes of the current line and event (WHATWG line ends: CRLF, LF or a lone CR).
#[derive(Default)]
struct Tail {
    last: [u8; 4],
    len: usize,
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
        let mut rest = chunk;
        if std::mem::take(&mut self.after_cr) {
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
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
        for &b in &chunk[chunk.len().saturating_sub(4)..] {
            self.last.rotate_left(1);
            self.last[3] = b;
            self.len = (self.len + 1).min(4);
        }
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
        self.len > 0 && self.last[3] == b'\r'
    }

    /// Nothing seen, or the body ends with a blank line (`\n\n`, `\r\r`, `\r\n\r\n`, `\n\r\n`...).
    fn ends_event(&self) -> bool {
        if self.len == 0 {
            return true;
        }
        let t = &self.last[4 - self.len..];
        t.ends_with(b"\n\n")
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
