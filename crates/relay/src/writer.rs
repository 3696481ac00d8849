//! The write side of one generation: a single owner (the gateway's pump) appends events, then
//! ends the stream exactly once. Ending consumes the writer; dropping it without an end (a
//! panic, a cancelled task) ends the stream as cancelled, so no reader ever waits on a stream
//! nobody writes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::event::{Delta, Event, Failure, Meta, Usage};
use crate::log::Log;
use crate::shared::Shared;
use crate::Handle;

/// How long a generation that never had a reader waits for its first one (the browser opens its
/// EventSource right after `POST /v1/streams` answers) before the grace period rules apply.
pub const FIRST_READER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    /// Appends wake readers only when no [`Batch`] is open.
    batching: bool,
    ended: bool,
    /// Events in the log: the writer is its only appender, so it knows without a lock.
    len: u64,
}

/// Appends made while this guard lives wake readers once, when it drops: a producer holding
/// several events (an upstream read that carried many) lets each reader send them in one write.
#[derive(Debug)]
pub struct Batch<'w> {
    writer: &'w mut Writer,
}

impl std::ops::Deref for Batch<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        self.writer
    }
}

impl std::ops::DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.writer
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.writer.batching = false;
        self.writer.shared.publish(self.writer.len);
    }
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            batching: false,
            ended: false,
            len: 0,
        }
    }

    /// A handle on the read side of this stream.
    pub fn handle(&self) -> Handle {
        Handle::new(self.shared.clone())
    }

    pub fn id(&self) -> &crate::StreamId {
        &self.shared.id
    }

    /// Opens a batch; see [`Batch`].
    pub fn batch(&mut self) -> Batch<'_> {
        self.batching = true;
        Batch { writer: self }
    }

    /// Replaces the response metadata; only before the first event, so every chunk of a stream
    /// carries the same id and model.
    pub fn set_meta(&mut self, f: impl FnOnce(&mut Meta)) {
        let mut log = self.shared.write();
        log.set_meta(f);
        self.shared.recount(&log);
    }

    /// Fixes the OpenAI chunk head as given (a replica takes its original's); only before the
    /// first event.
    pub(crate) fn set_chunk_head(&mut self, head: &str) {
        let mut log = self.shared.write();
        log.set_chunk_head(head);
        self.shared.recount(&log);
    }

    /// Ends the stream with `event` as it is (a replica copies its original's end).
    pub(crate) fn end_with(&mut self, event: Event) {
        self.end(|_| event);
    }

    /// Appends a delta. Returns false when the stream went past its memory bound (it is failed
    /// here and the writer should stop).
    pub fn push_delta(&mut self, mut d: Delta) -> bool {
        if d.signature.as_deref() == Some("") {
            d.signature = None;
        }
        let present = |t: &Option<String>| usize::from(t.as_deref().is_some_and(|t| !t.is_empty()));
        // A thinking signature goes with the thinking text; without any, it is a kind of its own.
        let signature = usize::from(present(&d.signature) == 1 && present(&d.reasoning) == 0);
        let kinds = present(&d.reasoning)
            + signature
            + present(&d.content)
            + present(&d.refusal)
            + d.tool_calls.len();
        if kinds <= 1 {
            return self.push_one(d);
        }
        // One kind of output per event, so that each log event is exactly one browser event
        // (`reasoning`, `delta`, `tool_call`) and one OpenAI chunk with the same id.
        split(d).into_iter().all(|part| self.push_one(part))
    }

    fn push_one(&mut self, d: Delta) -> bool {
        if self.ended {
            return false;
        }
        let mut log = self.shared.write();
        if log.event_bytes() + Log::delta_bytes(&d) > self.shared.max_bytes {
            let f = Failure {
                message: "the answer exceeded the relay's per-stream memory limit".into(),
                kind: "stream_too_large".into(),
                code: Some("stream_too_large".into()),
                ..Default::default()
            };
            drop(log);
            self.end(|_| Event::Failed(f));
            return false;
        }
        log.push_delta(d);
        self.len = log.len();
        self.shared.recount(&log);
        drop(log);
        if !self.batching {
            self.shared.publish(self.len);
        }
        true
    }

    /// Records that a choice finished; written out with the terminal `done` event.
    pub fn record_finish(&mut self, choice: u32, reason: impl Into<String>) {
        self.shared.write().record_finish(choice, reason.into());
    }

    /// Records the latest usage (an upstream's last report is its final one).
    pub fn record_usage(&mut self, usage: Usage) {
        self.shared.write().set_usage(usage);
    }

    pub fn usage(&self) -> Option<Usage> {
        self.shared.read().usage()
    }

    /// The id of the last event so far (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.len
    }

    /// Ends the stream successfully: `done` with the recorded finishes and usage.
    pub fn finish(mut self) {
        self.end_done(None);
    }

    /// Ends the stream as cancelled: every choice without a finish reason gets `cancelled`.
    pub fn finish_cancelled(mut self) {
        self.end_done(Some("cancelled"));
    }

    /// Ends the stream with an error.
    pub fn fail(mut self, mut failure: Failure) {
        self.end(|log| {
            // Choices already finished keep their finish reasons (delivered before the error).
            failure.finish_reasons = log.done(None).finish_reasons;
            Event::Failed(failure)
        });
    }

    /// The final event, once the stream has ended (after the memory bound failed it).
    pub fn outcome(&self) -> Option<Event> {
        self.shared.read().terminal().cloned()
    }

    fn end_done(&mut self, open_reason: Option<&str>) {
        self.end(|log| Event::Done(log.done(open_reason)));
    }

    /// Appends the terminal event `make` builds from the log, under one lock, once.
    fn end(&mut self, make: impl FnOnce(&mut Log) -> Event) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut log = self.shared.write();
        let event = make(&mut log);
        log.push_terminal(event);
        self.len = log.len();
        self.shared.recount(&log);
        drop(log);
        self.shared.budget.retain(&self.shared);
        // The terminal event always wakes readers: nothing may wait on a finished stream.
        self.shared.publish(self.len);
    }

    /// Readers that have resumed the stream from a position after its start so far.
    pub fn resumes(&self) -> u32 {
        self.shared
            .resumes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True once the stream has ended (here, or by the memory bound).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Resolves when a reader's side asks the stream to stop (the stop button). Owns what it
    /// needs, so the writer stays free to append while it is pending.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move { shared.until_cancelled().await }
    }

    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
    }

    /// Resolves once the stream has had no reader for `grace` (counted from creation, and at
    /// least [`FIRST_READER_WAIT`], while no reader has come yet). Owns what it needs, like
    /// [`cancelled`](Self::cancelled).
    pub fn abandoned(&self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move { shared.until_abandoned(grace, FIRST_READER_WAIT).await }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.end_done(Some("cancelled"));
    }
}

/// Splits a delta that carries several kinds of output into one delta per kind, in the order a
/// reader would see them: thinking (with its signature, or the signature alone), text (with the
/// logprobs), refusal, then each tool call.
fn split(d: Delta) -> Vec<Delta> {
    let base = |choice| Delta {
        choice,
        ..Delta::default()
    };
    let mut parts = Vec::with_capacity(4);
    let signature = d.signature.filter(|s| !s.is_empty());
    match d.reasoning.filter(|t| !t.is_empty()) {
        Some(t) => parts.push(Delta {
            reasoning: Some(t),
            signature,
            ..base(d.choice)
        }),
        None if signature.is_some() => parts.push(Delta {
            signature,
            ..base(d.choice)
        }),
        None => {}
    }
    if let Some(t) = d.content.filter(|t| !t.is_empty()) {
        parts.push(Delta {
            content: Some(t),
            ..base(d.choice)
        });
    }
    if let Some(t) = d.refusal.filter(|t| !t.is_empty()) {
        parts.push(Delta {
            refusal: Some(t),
            ..base(d.choice)
        });
    }
    for call in d.tool_calls {
        parts.push(Delta {
            tool_calls: vec![call],
            ..base(d.choice)
        });
    }
    if let Some(lp) = d.logprobs {
        let at = parts.iter().position(|p| p.content.is_some()).unwrap_or(0);
        if let Some(p) = parts.get_mut(at) {
            p.logprobs = Some(lp);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ToolCall;

    fn kinds(d: &Delta) -> (Option<&str>, Option<&str>, Option<&str>, usize) {
        (
            d.reasoning.as_deref(),
            d.signature.as_deref(),
            d.content.as_deref(),
            d.tool_calls.len(),
        )
    }

    #[test]
    fn a_signature_goes_with_its_thinking_or_alone_before_the_rest() {
        let call = ToolCall {
            index: 0,
            id: Some("c".into()),
            ..ToolCall::default()
        };
        let with_thinking = split(Delta {
            reasoning: Some("hm".into()),
            signature: Some("sig".into()),
            content: Some("a".into()),
            tool_calls: vec![call.clone()],
            ..Delta::default()
        });
        assert_eq!(
            with_thinking.iter().map(kinds).collect::<Vec<_>>(),
            vec![
                (Some("hm"), Some("sig"), None, 0),
                (None, None, Some("a"), 0),
                (None, None, None, 1)
            ]
        );
        let alone = split(Delta {
            reasoning: Some(String::new()),
            signature: Some("sig".into()),
            content: Some("a".into()),
            ..Delta::default()
        });
        assert_eq!(
            alone.iter().map(kinds).collect::<Vec<_>>(),
            vec![(None, Some("sig"), None, 0), (None, None, Some("a"), 0)]
        );
    }

    #[test]
    fn signatures_are_events_of_the_log_kept_whole() {
        let mut w = crate::standalone(crate::Meta::default(), false);
        let h = w.handle();
        // Thinking with its signature: one event. A signature alone: one event. An empty
        // signature is none.
        assert!(w.push_delta(Delta {
            reasoning: Some("hm".into()),
            signature: Some("s1".into()),
            ..Delta::default()
        }));
        assert!(w.push_delta(Delta {
            signature: Some("s2".into()),
            content: Some("a".into()),
            ..Delta::default()
        }));
        assert!(w.push_delta(Delta {
            signature: Some(String::new()),
            content: Some("b".into()),
            ..Delta::default()
        }));
        assert_eq!(w.last_id(), 4);
        let before = h.bytes();
        assert!(w.push_delta(Delta {
            signature: Some("x".repeat(4000)),
            ..Delta::default()
        }));
        assert!(h.bytes() >= before + 4000, "the signature is counted");
        w.finish();
        let log = h.body(crate::Format::Browser);
        assert!(log.is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let events = rt.block_on(async {
            let mut r = h.reader(crate::Format::Browser);
            let mut out = Vec::new();
            while let Some((_, e)) = r.next_event().await {
                out.push(e);
            }
            out
        });
        let got: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Delta(d) => Some((
                    d.reasoning.clone(),
                    d.signature.clone(),
                    d.content.clone(),
                    d.first,
                )),
                _ => None,
            })
            .collect();
        let o = |s: &str| Some(s.to_owned());
        assert_eq!(
            got,
            vec![
                (o("hm"), o("s1"), None, true),
                (None, o("s2"), None, false),
                (None, None, o("a"), false),
                (None, None, o("b"), false),
                (None, Some("x".repeat(4000)), None, false),
            ]
        );
    }
}
