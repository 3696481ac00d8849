//! The common case of an upstream read, recognised without the general parser: a run of whole
//! events made only of `data:` and `event:` lines, comments and blank lines, every line ended by
//! LF. Every model upstream writes its tokens this way, one or a few events per read, and for
//! those reads the general parser (eventsource-stream, which walks the text one character at a
//! time through nom, copies its buffer after every line and allocates the event's strings) costs
//! more than everything else Sluice does with a token. Anything else (a CR, an `id:`, `retry:`
//! or unknown field, an `error:` line, an event with two `data:` lines, a read that does not end
//! on a blank line) is left to the general parser, and so is every read after one it saw until
//! it is back at an event boundary (see [`Framing`]).
//!
//! What this yields is what the HTML spec's "interpret an event stream" steps yield for the same
//! bytes (a property test holds it to eventsource-stream's output): for a `data` field, append
//! the value (after one optional leading space) to the data buffer; for `event`, set the event
//! type; a line starting with a colon is ignored; at a blank line, if the data buffer is empty,
//! reset and dispatch nothing, else dispatch with the type `message` when none was set.

use std::ops::Range;

use super::LastBytes;

/// One event of a simple read: ranges into the read's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Simple {
    /// The `event:` value; `None`: `message`.
    pub event: Option<Range<usize>>,
    pub data: Range<usize>,
}

/// Splits `text` (one upstream read) into its events when it is simple (see the module doc);
/// false, with `out` empty, when it is not. `out` is a buffer the caller reuses.
pub(crate) fn split(text: &str, out: &mut Vec<Simple>) -> bool {
    out.clear();
    let bytes = text.as_bytes();
    if !bytes.ends_with(b"\n\n") || memchr::memchr(b'\r', bytes).is_some() {
        return false;
    }
    let mut event: Option<Range<usize>> = None;
    let mut data: Option<Range<usize>> = None;
    let mut at = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[at..end];
        let start = at;
        at = end + 1;
        if line.is_empty() {
            // Dispatch: nothing without data, and the event type goes either way.
            if let Some(data) = data.take() {
                out.push(Simple {
                    event: event.take(),
                    data,
                });
            }
            event = None;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = if let Some(rest) = line.strip_prefix(b"data:") {
            (Field::Data, rest)
        } else if let Some(rest) = line.strip_prefix(b"event:") {
            (Field::Event, rest)
        } else {
            out.clear();
            return false;
        };
        let skip = usize::from(value.first() == Some(&b' '));
        let value_start = start + (line.len() - value.len()) + skip;
        let range = value_start..end;
        match field {
            Field::Data if data.is_some() => {
                // Two data lines are joined with an LF: a new string, left to the parser.
                out.clear();
                return false;
            }
            Field::Data => data = Some(range),
            // An empty `event:` value leaves the type `message`, as an unset one does.
            Field::Event => event = (!range.is_empty()).then_some(range),
        }
    }
    true
}

enum Field {
    Data,
    Event,
}

/// Whether the general parser holds nothing between events, so that the next read can be taken
/// by [`split`]: true at the start, and whenever every byte it was given so far ends with a
/// blank line ended by LF (a final CR could still be the first half of a CRLF it waits for).
/// Tracks the last bytes given to it, across reads.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    /// The last bytes the parser was given.
    last: LastBytes,
}

impl Framing {
    pub(crate) fn clean(&self) -> bool {
        let t = self.last.get();
        // `\r\n\n` is CRLF then LF, `\n\r\n` LF then CRLF: both a line end and a blank line.
        t.is_empty() || t.ends_with(b"\n\n") || t.ends_with(b"\n\r\n")
    }

    /// Nothing went to the general parser yet.
    #[cfg(test)]
    pub(crate) fn untouched(&self) -> bool {
        self.last.get().is_empty()
    }

    /// `bytes` went to the general parser.
    pub(crate) fn gave_parser(&mut self, bytes: &[u8]) {
        self.last.push(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        split(text, &mut out).then(|| {
            out.iter()
                .map(|s| {
                    (
                        s.event
                            .clone()
                            .map_or("message".into(), |r| text[r].to_owned()),
                        text[s.data.clone()].to_owned(),
                    )
                })
                .collect()
        })
    }

    fn pair(e: &str, d: &str) -> (String, String) {
        (e.to_owned(), d.to_owned())
    }

    #[test]
    fn openai_and_anthropic_reads_are_simple() {
        assert_eq!(
            events("data: {\"a\":1}\n\n"),
            Some(vec![pair("message", "{\"a\":1}")])
        );
        assert_eq!(
            events("event: content_block_delta\ndata: {\"b\":2}\n\nevent: ping\ndata: {}\n\n"),
            Some(vec![
                pair("content_block_delta", "{\"b\":2}"),
                pair("ping", "{}")
            ])
        );
        // No space after the colon; a value's second space is kept.
        assert_eq!(
            events("data:x\n\ndata:  y\n\n"),
            Some(vec![pair("message", "x"), pair("message", " y")])
        );
        assert_eq!(
            events("data: [DONE]\n\n"),
            Some(vec![pair("message", "[DONE]")])
        );
    }

    #[test]
    fn comments_blank_lines_and_empty_events_dispatch_nothing() {
        assert_eq!(events(": OPENROUTER PROCESSING\n\n"), Some(vec![]));
        assert_eq!(events("\n\n\n"), Some(vec![]));
        // An event type without data is dropped, and does not carry over.
        assert_eq!(
            events("event: x\n\ndata: d\n\n"),
            Some(vec![pair("message", "d")])
        );
        // An empty data value is an event with empty data.
        assert_eq!(events("data:\n\n"), Some(vec![pair("message", "")]));
        assert_eq!(
            events("event:\ndata: d\n\n"),
            Some(vec![pair("message", "d")])
        );
    }

    #[test]
    fn anything_else_is_left_to_the_parser() {
        for text in [
            "data: a\r\n\r\n",
            "data: a\n",
            "data: a",
            "id: 1\ndata: a\n\n",
            "retry: 10\n\n",
            "error: {}\n\n",
            "data: a\ndata: b\n\n",
            "dat: a\n\n",
            "data: a\n\ndata: b",
            "",
        ] {
            assert_eq!(events(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_parser_is_clean_after_a_read_that_ends_an_event() {
        let mut f = Framing::default();
        assert!(f.clean());
        f.gave_parser(b"data: a\r");
        assert!(!f.clean());
        f.gave_parser(b"\n\r\n");
        assert!(f.clean());
        f.gave_parser(b"data: a\r\r");
        assert!(!f.clean(), "a final CR may still be half of a CRLF");
        f.gave_parser(b"\n\n");
        assert!(f.clean());
        f.gave_parser(b"data: a\n");
        assert!(!f.clean());
        f.gave_parser(b"\n");
        assert!(f.clean(), "the blank line came in a read of its own");
        f.gave_parser(b"\r\n\r\n");
        assert!(f.clean());
    }
}
