//! The SSE parser of one upstream body: each read that is simple (see [`simple`]) is split in
//! place, with no copy and no allocation; every other read goes to eventsource-stream, which
//! implements the whole of the HTML spec's parsing (CR and CRLF line ends, split lines and
//! characters, `id:` and `retry:`, multi-line data). A read is simple only while
//! eventsource-stream holds nothing between events ([`Framing`]), so the two never see parts of
//! the same event, and the events come out in the order of the bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use eventsource_stream::{Event, EventStream, EventStreamError};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};

use super::simple::{self, Framing, Simple};
use super::ReadError;

/// What eventsource-stream reads: the reads the simple path did not take, in order.
type Feed = futures::stream::Map<mpsc::UnboundedReceiver<Bytes>, fn(Bytes) -> FeedItem>;
type FeedItem = Result<Bytes, ReadError>;

/// A failed body or a failed parse.
pub type SseError = EventStreamError<ReadError>;

/// SSE events from `reads` (an upstream body's reads, after the prelude).
pub struct Parser<R> {
    reads: R,
    general: EventStream<Feed>,
    /// `None` once the body ended: eventsource-stream then ends too.
    feed: Option<mpsc::UnboundedSender<Bytes>>,
    framing: Framing,
    /// The simple read being handed out, and its events.
    read: Bytes,
    events: Vec<Simple>,
    next: usize,
    /// eventsource-stream was given bytes (or the end) it may not have turned into events yet.
    general_busy: bool,
    /// eventsource-stream was given its first input, a `\n` (see the `sse` module doc): only
    /// when a read first goes to it, so a body of simple reads never touches it (a `\n` read
    /// at the start would send the first event, the role chunk, through it too).
    general_primed: bool,
    done: bool,
}

impl<R> Parser<R> {
    pub fn new(reads: R) -> Self {
        let (tx, rx) = mpsc::unbounded();
        Self {
            reads,
            general: EventStream::new(rx.map(Ok as fn(Bytes) -> FeedItem)),
            feed: Some(tx),
            framing: Framing::default(),
            read: Bytes::new(),
            events: Vec::new(),
            next: 0,
            general_busy: false,
            general_primed: false,
            done: false,
        }
    }
}

impl<R> Parser<R>
where
    R: Stream<Item = Result<Bytes, ReadError>> + Unpin,
{
    /// The next event, handed to `on` as its type and data; `None` after the last. Events come
    /// in the order of the bytes: a read is taken only once every event of the one before it
    /// is out.
    pub fn poll_event<T>(
        &mut self,
        cx: &mut Context<'_>,
        on: impl FnOnce(&str, &str) -> T,
    ) -> Poll<Option<Result<T, SseError>>> {
        loop {
            if let Some(ev) = self.events.get(self.next) {
                self.next += 1;
                // The read was checked as UTF-8 when it was split, and its ranges start and end
                // at ASCII bytes: only this event's own bytes are looked at again (the whole
                // read per event would cost a burst of N events in one read N times its size).
                let text = |r: std::ops::Range<usize>| {
                    std::str::from_utf8(&self.read[r]).unwrap_or_default()
                };
                let event = ev.event.clone().map_or("message", text);
                let out = on(event, text(ev.data.clone()));
                if self.next == self.events.len() {
                    // Let go of the read at once: it is a slice of the upstream connection's
                    // read buffer, which hyper can reuse for the next read only once nothing
                    // else holds it (else it allocates a new one, and an idle stream would
                    // keep two).
                    self.read = Bytes::new();
                    self.events.clear();
                    self.next = 0;
                }
                return Poll::Ready(Some(Ok(out)));
            }
            if self.general_busy {
                match self.poll_general() {
                    Poll::Ready(Some(Ok(ev))) => {
                        return Poll::Ready(Some(Ok(on(&ev.event, &ev.data))))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(None) => self.done = true,
                    Poll::Pending => {}
                }
                self.general_busy = false;
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.reads.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(read))) => self.take(read),
                Poll::Ready(Some(Err(e))) => {
                    // What eventsource-stream holds is an unfinished event: it is dropped, as
                    // eventsource-stream drops it when its input fails.
                    self.done = true;
                    return Poll::Ready(Some(Err(EventStreamError::Transport(e))));
                }
                Poll::Ready(None) => {
                    self.feed = None;
                    self.general_busy = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Splits a simple read, or hands the read to eventsource-stream.
    fn take(&mut self, read: Bytes) {
        // Called only once the events of the read before are all out (and it was let go).
        let simple = self.framing.clean()
            && std::str::from_utf8(&read).is_ok_and(|text| simple::split(text, &mut self.events));
        if simple {
            self.next = 0;
            // A read of comments and blank lines alone (a keep-alive) has no event to hand out:
            // it is not kept, so as not to hold the connection's read buffer.
            if !self.events.is_empty() {
                self.read = read;
            }
            return;
        }
        self.framing.gave_parser(&read);
        if let Some(feed) = &self.feed {
            // A blank line with no event pending: it dispatches nothing and leaves the parser
            // where it was, at an event boundary (so `framing` need not see it).
            if !std::mem::replace(&mut self.general_primed, true) {
                let _ = feed.unbounded_send(Bytes::from_static(b"\n"));
            }
            // Unbounded, but it never holds more than this read (and the `\n` before the
            // first): eventsource-stream is polled until it has taken them before the next
            // read is taken.
            let _ = feed.unbounded_send(read);
        }
        self.general_busy = true;
    }

    /// Polls eventsource-stream, whose input is already there (or closed): it waits on nothing
    /// but this parser, so a waker that does nothing is enough.
    fn poll_general(&mut self) -> Poll<Option<Result<Event, SseError>>> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        Pin::new(&mut self.general).poll_next(&mut cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (type, data) of every event, and whether the parse failed, with this parser.
    fn hybrid(reads: &[Vec<u8>]) -> (Vec<(String, String)>, bool) {
        let reads: Vec<Result<Bytes, ReadError>> = reads
            .iter()
            .map(|r| Ok(Bytes::copy_from_slice(r)))
            .collect();
        let mut p = Parser::new(futures::stream::iter(reads));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = Vec::new();
        loop {
            match p.poll_event(&mut cx, |e, d| (e.to_owned(), d.to_owned())) {
                Poll::Ready(Some(Ok(ev))) => out.push(ev),
                Poll::Ready(Some(Err(_))) => return (out, true),
                Poll::Ready(None) => return (out, false),
                Poll::Pending => unreachable!("the reads are all there"),
            }
        }
    }

    /// The same with eventsource-stream alone.
    fn general(reads: &[Vec<u8>]) -> (Vec<(String, String)>, bool) {
        let reads: Vec<Result<Bytes, ReadError>> = reads
            .iter()
            .map(|r| Ok(Bytes::copy_from_slice(r)))
            .collect();
        let mut s = EventStream::new(futures::stream::iter(reads));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut s).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(ev))) => out.push((ev.event, ev.data)),
                Poll::Ready(Some(Err(_))) => return (out, true),
                Poll::Ready(None) => return (out, false),
                Poll::Pending => unreachable!("the reads are all there"),
            }
        }
    }

    fn split_at(doc: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (doc.len() + 1)).collect();
        cuts.sort_unstable();
        let mut reads = Vec::new();
        let mut at = 0;
        for c in cuts {
            reads.push(doc[at..c].to_vec());
            at = c;
        }
        reads.push(doc[at..].to_vec());
        reads
    }

    #[test]
    fn a_body_of_simple_reads_never_reaches_eventsource_stream() {
        // One read per event, as upstreams write them: the first event (OpenAI's role chunk)
        // too, which a leading `\n` for eventsource-stream used to push onto its path.
        let reads: Vec<Result<Bytes, ReadError>> =
            [&b"data: {\"role\":1}\n\n"[..], b"data: [DONE]\n\n"]
                .iter()
                .map(|r| Ok(Bytes::from_static(r)))
                .collect();
        let mut p = Parser::new(futures::stream::iter(reads));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut n = 0;
        while let Poll::Ready(Some(ev)) = p.poll_event(&mut cx, |_, d| d.len()) {
            assert!(ev.is_ok());
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(!p.general_primed, "eventsource-stream was fed");
        // A read that is not simple goes to it, after its `\n`, and it reads the same events.
        let split = [b"data: {\"a\"".to_vec(), b":1}\n\n".to_vec()];
        assert_eq!(hybrid(&split), general(&split));
        assert_eq!(
            hybrid(&split).0,
            vec![("message".to_owned(), "{\"a\":1}".to_owned())]
        );
    }

    #[test]
    fn model_streams_come_out_as_eventsource_stream_reads_them() {
        let openai =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"h\xc3\xa9\"}}]}\n\ndata: [DONE]\n\n";
        let anthropic = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\nevent: content_block_delta\ndata: {\"b\":2}\n\n";
        for doc in [&openai[..], &anthropic[..]] {
            // One read per event, as upstreams write them, then every split in two.
            for cut in 0..=doc.len() {
                let reads = vec![doc[..cut].to_vec(), doc[cut..].to_vec()];
                assert_eq!(hybrid(&reads), general(&reads), "cut at {cut}");
            }
        }
        let (events, failed) = hybrid(&[openai.to_vec()]);
        assert!(!failed);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], ("message".to_owned(), "[DONE]".to_owned()));
        // Reads of whole events never reach eventsource-stream.
        let reads: Vec<Result<Bytes, ReadError>> = vec![
            Ok(Bytes::from_static(b"data: {}\n\n")),
            Ok(Bytes::from_static(b"event: e\ndata: 1\n\n: c\n\n")),
        ];
        let mut p = Parser::new(futures::stream::iter(reads));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut n = 0;
        while let Poll::Ready(Some(ev)) = p.poll_event(&mut cx, |_, _| ()) {
            ev.expect("an event");
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(p.framing.untouched());
    }

    /// A read is a slice of the upstream connection's read buffer: once its events are out (or
    /// it had none, a keep-alive), the parser must not hold it, or hyper allocates a new buffer
    /// for every read and an idle stream keeps two.
    #[test]
    fn a_read_is_let_go_once_its_events_are_out() {
        let reads: Vec<Result<Bytes, ReadError>> = vec![
            Ok(Bytes::from_static(b"data: {}\n\n")),
            Ok(Bytes::from_static(b": keep-alive\n\n")),
        ];
        let mut p = Parser::new(futures::stream::iter(reads).chain(futures::stream::pending()));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(matches!(
            p.poll_event(&mut cx, |_, d| d.to_owned()),
            Poll::Ready(Some(Ok(d))) if d == "{}"
        ));
        assert!(p.read.is_empty(), "held after its last event");
        assert!(p.poll_event(&mut cx, |_, _| ()).is_pending());
        assert!(p.read.is_empty(), "a keep-alive read held");
        assert!(p.framing.untouched());
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        let body = prop_oneof![
            Just(&b"data: {\"x\":1}"[..]),
            Just(&b"data:tight"[..]),
            Just(&b"data:  two spaces"[..]),
            Just(&b"data:"[..]),
            Just(&b"data"[..]),
            Just(&b"data: h\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"[..]),
            Just(&b"event: delta"[..]),
            Just(&b"event:"[..]),
            Just(&b": comment"[..]),
            Just(&b":"[..]),
            Just(&b"id: 7"[..]),
            Just(&b"retry: 100"[..]),
            Just(&b"error: {\"e\":1}"[..]),
            Just(&b"other: x"[..]),
            Just(&b""[..]),
        ];
        let end = prop_oneof![
            6 => Just(&b"\n"[..]),
            1 => Just(&b"\r\n"[..]),
            1 => Just(&b"\r"[..]),
        ];
        (body, end).prop_map(|(b, e)| [b, e].concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any document, however it is split into reads, gives the same events (and the same
        /// failure) as eventsource-stream alone.
        #[test]
        fn any_split_of_any_stream_reads_as_eventsource_stream_reads_it(
            lines in proptest::collection::vec(line(), 0..24),
            tail in proptest::collection::vec(any::<u8>().prop_map(|b| b % 4), 0..3),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut doc = lines.concat();
            // Sometimes an unfinished last line, or extra blank lines.
            for t in tail {
                doc.extend_from_slice([&b"\n"[..], b"data: end", b"\r", b"x"][usize::from(t)]);
            }
            let reads = split_at(&doc, &cuts);
            prop_assert_eq!(hybrid(&reads), general(&reads));
        }
    }
}
