//! The replay log of one generation, kept compact: what is retained for resuming is the answer's
//! text, not its wire encodings.
//!
//! A text delta (the overwhelming majority of events: one token of content, thinking or refusal)
//! is a 4-byte [`Slot`] plus its text, appended to one contiguous `String` shared by the whole
//! answer. Rarer deltas (tool calls, logprobs, thinking signatures, choice indexes past `u8`)
//! are kept whole beside
//! the slots. The terminal event (`done` or `failed`) is kept once. Readers encode events on the
//! fly from borrowed views ([`EventRef`]), so a 100-token answer is held in about 1.5 KB instead
//! of its events plus two encodings of each (about 45 KB before).
//!
//! The OpenAI chunk's fixed opening (id, object, created, model, fingerprint) is made once, when
//! the first event fixes the response metadata, and shared by every reader; from then on the
//! metadata is kept only as that head.

use std::time::Instant;

use crate::encode;
use crate::event::{Delta, DeltaRef, Done, Event, EventRef, Meta, Usage};

/// One text delta: the length of its text in [`Log::text`] (it starts where the previous
/// slot's text ends, so readers, which go forward, keep a running offset), its choice, its kind,
/// and whether it is its choice's first delta. Four bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    len: u16,
    choice: u8,
    /// [`Kind`] in the low bits, [`FIRST`] above.
    flags: u8,
}

const FIRST: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Content = 0,
    Reasoning = 1,
    Refusal = 2,
    /// Kept whole in [`Log::rich`], looked up by event id; no text in [`Log::text`].
    Rich = 3,
}

impl Slot {
    fn kind(self) -> Kind {
        match self.flags & 0x3 {
            0 => Kind::Content,
            1 => Kind::Reasoning,
            2 => Kind::Refusal,
            _ => Kind::Rich,
        }
    }

    fn first(self) -> bool {
        self.flags & FIRST != 0
    }
}

const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Heap bytes of one delta kept whole, for the memory bounds.
fn rich_bytes(d: &Delta) -> usize {
    std::mem::size_of::<(u64, Delta)>() + d.heap_bytes()
}

/// Where a reader is in the log: the id of the last event it took, and where the next event's
/// text starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) id: u64,
    text: usize,
}

#[derive(Debug)]
pub(crate) struct Log {
    /// The response metadata until the first event fixes it; then it lives on only in
    /// `chunk_head`.
    meta: Option<Box<Meta>>,
    /// `{"id":...,"choices":` of every OpenAI chunk; made when the first event is appended.
    chunk_head: Box<str>,
    text: String,
    slots: Vec<Slot>,
    /// Deltas that are not plain text, by event id (ascending).
    rich: Vec<(u64, Delta)>,
    rich_bytes: usize,
    terminal: Option<Box<Event>>,
    /// Choices that have had a delta (the first one carries the role).
    started: Vec<u32>,
    finishes: Vec<(u32, String)>,
    usage: Option<Usage>,
    finished_at: Option<Instant>,
}

impl Log {
    pub(crate) fn new(meta: Meta) -> Self {
        Self {
            meta: Some(Box::new(meta)),
            chunk_head: Box::default(),
            text: String::new(),
            slots: Vec::new(),
            rich: Vec::new(),
            rich_bytes: 0,
            terminal: None,
            started: Vec::new(),
            finishes: Vec::new(),
            usage: None,
            finished_at: None,
        }
    }

    /// Events in the log (the last one's id).
    pub(crate) fn len(&self) -> u64 {
        self.slots.len() as u64 + u64::from(self.terminal.is_some())
    }

    /// Changes the metadata; only before the first event, so every chunk of a stream carries the
    /// same id and model.
    pub(crate) fn set_meta(&mut self, f: impl FnOnce(&mut Meta)) {
        if let Some(meta) = &mut self.meta {
            f(meta);
        }
    }

    /// Fixes the metadata: from the first event on, chunks carry this head.
    fn fix_meta(&mut self) {
        if let Some(meta) = self.meta.take() {
            self.chunk_head = encode::chunk_head(&meta).into_boxed_str();
        }
    }

    /// Fixes the chunk head as given (a replica takes its original's); only before the first
    /// event.
    pub(crate) fn set_chunk_head(&mut self, head: &str) {
        if self.meta.is_some() {
            self.meta = None;
            self.chunk_head = head.into();
        }
    }

    /// The response metadata: as it stands before the first event, as fixed after it.
    pub(crate) fn meta(&self) -> Meta {
        match &self.meta {
            Some(m) => (**m).clone(),
            None => encode::meta_from_chunk_head(&self.chunk_head),
        }
    }

    pub(crate) fn chunk_head(&self) -> &str {
        &self.chunk_head
    }

    pub(crate) fn finished_at(&self) -> Option<Instant> {
        self.finished_at
    }

    pub(crate) fn terminal(&self) -> Option<&Event> {
        self.terminal.as_deref()
    }

    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub(crate) fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub(crate) fn record_finish(&mut self, choice: u32, reason: String) {
        match self.finishes.iter_mut().find(|(c, _)| *c == choice) {
            Some(slot) => slot.1 = reason,
            None => self.finishes.push((choice, reason)),
        }
    }

    /// Bytes of the events themselves: what the per-stream bound limits.
    pub(crate) fn event_bytes(&self) -> usize {
        self.text.len() + self.slots.len() * SLOT_BYTES + self.rich_bytes + self.terminal_bytes()
    }

    /// Heap bytes held, as counted against the memory bounds.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.slots.capacity() * SLOT_BYTES
            + self.rich.capacity() * std::mem::size_of::<(u64, Delta)>()
            + self.rich_bytes
            + self.terminal_bytes()
            + self.meta.as_ref().map_or(0, |m| {
                std::mem::size_of::<Meta>()
                    + m.id.capacity()
                    + m.model.capacity()
                    + m.system_fingerprint.as_ref().map_or(0, String::capacity)
            })
            + self.chunk_head.len()
            + self.started.capacity() * 4
            + self
                .finishes
                .iter()
                .map(|(_, r)| 4 + r.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
    }

    fn terminal_bytes(&self) -> usize {
        match self.terminal.as_deref() {
            None => 0,
            Some(Event::Done(d)) => {
                std::mem::size_of::<Event>()
                    + d.finish_reasons
                        .iter()
                        .map(|(_, r)| 4 + r.capacity() + std::mem::size_of::<String>())
                        .sum::<usize>()
            }
            Some(Event::Failed(f)) => {
                std::mem::size_of::<Event>()
                    + f.message.capacity()
                    + f.kind.capacity()
                    + f.code.as_ref().map_or(0, String::capacity)
            }
            Some(Event::Delta(d)) => std::mem::size_of::<Event>() + d.heap_bytes(),
        }
    }

    /// Bytes `d` will add to [`event_bytes`](Self::event_bytes), to check the per-stream bound
    /// before appending.
    pub(crate) fn delta_bytes(d: &Delta) -> usize {
        match compact(d) {
            Some((_, text)) => SLOT_BYTES + text.len(),
            None => SLOT_BYTES + rich_bytes(d),
        }
    }

    /// Appends a delta that carries one kind of output (the writer splits the others).
    pub(crate) fn push_delta(&mut self, mut d: Delta) {
        self.fix_meta();
        let first = if self.started.contains(&d.choice) {
            false
        } else {
            self.started.push(d.choice);
            true
        };
        let flags = if first { FIRST } else { 0 };
        match compact(&d) {
            Some((kind, text)) => {
                self.text.push_str(text);
                self.slots.push(Slot {
                    len: text.len() as u16,
                    choice: d.choice as u8,
                    flags: kind as u8 | flags,
                });
            }
            None => {
                let id = self.slots.len() as u64 + 1;
                d.first = first;
                self.rich_bytes += rich_bytes(&d);
                self.rich.push((id, d));
                self.slots.push(Slot {
                    len: 0,
                    choice: 0,
                    flags: Kind::Rich as u8 | flags,
                });
            }
        }
    }

    /// Appends the terminal event and compacts the log: it will not grow again.
    pub(crate) fn push_terminal(&mut self, event: Event) {
        self.fix_meta();
        self.terminal = Some(Box::new(event));
        self.finished_at = Some(Instant::now());
        self.text.shrink_to_fit();
        self.slots.shrink_to_fit();
        self.rich.shrink_to_fit();
        self.started = Vec::new();
        self.finishes = Vec::new();
    }

    /// The `done` event for the recorded finishes; `open_reason` is given to every started
    /// choice without a finish reason (and to choice 0 when none started).
    pub(crate) fn done(&mut self, open_reason: Option<&str>) -> Done {
        let mut finish_reasons = std::mem::take(&mut self.finishes);
        if let Some(r) = open_reason {
            for c in &self.started {
                if !finish_reasons.iter().any(|(fc, _)| fc == c) {
                    finish_reasons.push((*c, r.to_owned()));
                }
            }
            if finish_reasons.is_empty() {
                finish_reasons.push((0, r.to_owned()));
            }
        }
        finish_reasons.sort_by_key(|(c, _)| *c);
        Done {
            finish_reasons,
            usage: self.usage,
        }
    }

    /// The cursor of a reader that has taken the events up to `id` (0: none). Walks the slots
    /// once, when a reader attaches.
    pub(crate) fn cursor(&self, id: u64) -> Cursor {
        let n = usize::try_from(id)
            .unwrap_or(usize::MAX)
            .min(self.slots.len());
        Cursor {
            id,
            text: self.slots[..n].iter().map(|s| usize::from(s.len)).sum(),
        }
    }

    /// The event after `at`, borrowed, moving `at` past it.
    pub(crate) fn next(&self, at: &mut Cursor) -> Option<EventRef<'_>> {
        let i = usize::try_from(at.id).ok()?;
        let Some(slot) = self.slots.get(i).copied() else {
            let e = (i == self.slots.len()).then_some(self.terminal.as_deref())??;
            at.id += 1;
            return Some(e.view());
        };
        let id = at.id + 1;
        let start = at.text;
        let end = start + usize::from(slot.len);
        at.id = id;
        at.text = end;
        let kind = slot.kind();
        if kind == Kind::Rich {
            let k = self.rich.binary_search_by_key(&id, |(rid, _)| *rid).ok()?;
            return Some(EventRef::Delta(self.rich[k].1.view()));
        }
        let text = self.text.get(start..end)?;
        let mut d = DeltaRef {
            choice: u32::from(slot.choice),
            first: slot.first(),
            ..DeltaRef::default()
        };
        match kind {
            Kind::Content => d.content = Some(text),
            Kind::Reasoning => d.reasoning = Some(text),
            Kind::Refusal => d.refusal = Some(text),
            Kind::Rich => {}
        }
        Some(EventRef::Delta(d))
    }

    /// Bytes of text of the event after `at`, to size an output buffer before encoding.
    pub(crate) fn text_len_after(&self, id: u64) -> usize {
        match usize::try_from(id).ok().and_then(|i| self.slots.get(i)) {
            Some(s) if s.kind() != Kind::Rich => usize::from(s.len),
            _ => 256,
        }
    }
}

/// The kind and text of a delta that fits a slot: exactly one of content, thinking or refusal,
/// nothing else, and a choice index that fits in 16 bits.
fn compact(d: &Delta) -> Option<(Kind, &str)> {
    if !d.tool_calls.is_empty()
        || d.logprobs.is_some()
        || d.signature.is_some()
        || d.choice > u32::from(u8::MAX)
    {
        return None;
    }
    let (kind, text) = match (&d.content, &d.reasoning, &d.refusal) {
        (Some(t), None, None) => (Kind::Content, t),
        (None, Some(t), None) => (Kind::Reasoning, t),
        (None, None, Some(t)) => (Kind::Refusal, t),
        _ => return None,
    };
    (text.len() <= usize::from(u16::MAX)).then_some((kind, text.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ToolCall;

    fn at(log: &Log, id: u64) -> Option<EventRef<'_>> {
        log.next(&mut log.cursor(id - 1))
    }

    fn meta() -> Meta {
        Meta {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 7,
            system_fingerprint: None,
        }
    }

    #[test]
    fn text_deltas_are_slots_and_read_back() {
        let mut log = Log::new(meta());
        log.push_delta(Delta::text(0, "Hel"));
        log.push_delta(Delta {
            reasoning: Some("hmm".into()),
            ..Delta::default()
        });
        log.push_delta(Delta::text(1, ""));
        log.push_delta(Delta::text(0, "lo"));
        assert_eq!(log.len(), 4);
        let EventRef::Delta(d) = at(&log, 1).unwrap() else {
            panic!()
        };
        assert_eq!((d.content, d.first, d.choice), (Some("Hel"), true, 0));
        let EventRef::Delta(d) = at(&log, 2).unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.reasoning, d.content, d.first),
            (Some("hmm"), None, false)
        );
        let EventRef::Delta(d) = at(&log, 3).unwrap() else {
            panic!()
        };
        assert_eq!((d.content, d.first, d.choice), (Some(""), true, 1));
        let EventRef::Delta(d) = at(&log, 4).unwrap() else {
            panic!()
        };
        assert_eq!((d.content, d.first), (Some("lo"), false));
        assert!(at(&log, 5).is_none());
        assert!(log.rich.is_empty());
    }

    #[test]
    fn rich_deltas_keep_everything_in_order() {
        let mut log = Log::new(meta());
        log.push_delta(Delta::text(0, "a"));
        log.push_delta(Delta {
            tool_calls: vec![ToolCall {
                index: 0,
                id: Some("c".into()),
                name: Some("f".into()),
                arguments: Some("{".into()),
            }],
            ..Delta::default()
        });
        log.push_delta(Delta::text(0, "b"));
        log.push_delta(Delta::text(70_000, "big choice"));
        let EventRef::Delta(d) = at(&log, 2).unwrap() else {
            panic!()
        };
        assert_eq!(d.tool_calls[0].name.as_deref(), Some("f"));
        assert!(!d.first);
        let EventRef::Delta(d) = at(&log, 3).unwrap() else {
            panic!()
        };
        assert_eq!(d.content, Some("b"));
        let EventRef::Delta(d) = at(&log, 4).unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.choice, d.content, d.first),
            (70_000, Some("big choice"), true)
        );
        log.push_terminal(Event::Done(log_done()));
        assert!(matches!(at(&log, 5), Some(EventRef::Done(_))));
        assert!(at(&log, 6).is_none());
    }

    fn log_done() -> Done {
        Done {
            finish_reasons: vec![(0, "stop".into())],
            usage: None,
        }
    }

    #[test]
    fn a_hundred_tokens_fit_in_two_kib() {
        let mut log = Log::new(Meta {
            id: "chatcmpl-0123456789012345678901".into(),
            model: "sluice-demo".into(),
            created: 1,
            system_fingerprint: None,
        });
        for i in 0..100 {
            log.push_delta(Delta::text(
                0,
                ["Hello ", "from ", "Sluice! ", "gateway. "][i % 4],
            ));
        }
        let mut done = log.done(None);
        done.finish_reasons.push((0, "stop".into()));
        log.push_terminal(Event::Done(done));
        assert!(log.heap_bytes() < 1800, "{}", log.heap_bytes());
    }
}
