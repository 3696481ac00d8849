//! Failover until the first content: a target that answered 200 has not served yet. Its
//! events before the first content (text, reasoning, a refusal or a tool call) — the response's
//! metadata, usage, empty deltas, finishes — are held back, so that a target that fails before
//! saying anything can be dropped without a trace: no chunk of it reaches the relay's log, and
//! the next target is tried (`routing::failover`). Once content comes, the held events and the
//! rest flow on as one stream, unchanged. Pure over a `futures::Stream`.
//!
//! On a route's last target nothing is held (the response starts at its headers, keep-alives
//! flow); [`Deadline`] only ends its stream with `upstream_timeout` if no content comes in time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use provider_adapter::{AdapterError, EventStream, StreamEvent, TimeoutPhase};

use super::next_or_panic;

/// Most events held before the first content. An upstream that sends this many without any
/// content is accepted as it is (its events flow on, still under the first-token deadline):
/// holding is for the few events a stream opens with, not a buffer of the answer.
pub const MAX_HELD: usize = 32;

/// Whether an event is content: a delta with text, reasoning, a refusal or a tool call (an
/// empty string, logprobs alone or a thinking block's signature alone are not).
pub fn is_content(ev: &StreamEvent) -> bool {
    let full = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    match ev {
        StreamEvent::Delta(d) => {
            full(&d.content) || full(&d.reasoning) || full(&d.refusal) || !d.tool_calls.is_empty()
        }
        _ => false,
    }
}

/// Reads `upstream` until its first content and returns a stream that yields every event read
/// so far and then the rest. Fails, the upstream dropped, when before any content it sends an
/// error, ends without a finish reason (a finish with no content is an empty answer: accepted),
/// or sends no content within `timeout` (`None`: no limit). `provider` names it in a timeout.
pub async fn hold(
    mut upstream: EventStream,
    timeout: Option<Duration>,
    provider: &str,
) -> Result<EventStream, AdapterError> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let timed_out = || AdapterError::Timeout {
        provider: provider.to_owned(),
        phase: TimeoutPhase::FirstToken,
    };
    let mut held = Vec::new();
    loop {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, next_or_panic(&mut upstream))
                .await
                .map_err(|_| timed_out())?,
            None => next_or_panic(&mut upstream).await,
        };
        match next {
            Some(Ok(ev)) => {
                let content = is_content(&ev);
                held.push(ev);
                if content {
                    return Ok(replay(held, upstream));
                }
                if held.len() >= MAX_HELD {
                    let rest = match deadline {
                        Some(d) => Box::pin(Deadline::at(upstream, d, provider)),
                        None => upstream,
                    };
                    return Ok(replay(held, rest));
                }
            }
            Some(Err(e)) => return Err(e),
            None if held
                .iter()
                .any(|ev| matches!(ev, StreamEvent::Finish { .. })) =>
            {
                return Ok(replay(held, upstream))
            }
            None => {
                return Err(AdapterError::Truncated(
                    "the upstream ended the stream before any content".into(),
                ))
            }
        }
    }
}

fn replay(held: Vec<StreamEvent>, rest: EventStream) -> EventStream {
    Box::pin(futures::stream::iter(held.into_iter().map(Ok)).chain(rest))
}

/// A stream that ends with an `upstream_timeout` error (phase: first token) if no content or
/// finish comes before its deadline; after that, a pass-through (one branch per event).
pub struct Deadline {
    inner: EventStream,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    provider: String,
    done: bool,
}

impl Deadline {
    pub fn new(inner: EventStream, timeout: Duration, provider: &str) -> Self {
        Self::at(inner, tokio::time::Instant::now() + timeout, provider)
    }

    fn at(inner: EventStream, deadline: tokio::time::Instant, provider: &str) -> Self {
        Self {
            inner,
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
            provider: provider.to_owned(),
            done: false,
        }
    }
}

impl Stream for Deadline {
    type Item = Result<StreamEvent, AdapterError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.poll_next_unpin(cx) {
            if this.sleep.is_some() {
                match &item {
                    Some(Ok(ev))
                        if !is_content(ev) && !matches!(ev, StreamEvent::Finish { .. }) => {}
                    _ => this.sleep = None,
                }
            }
            return Poll::Ready(item);
        }
        if let Some(sleep) = &mut this.sleep {
            if sleep.as_mut().poll(cx).is_ready() {
                this.sleep = None;
                this.done = true;
                return Poll::Ready(Some(Err(AdapterError::Timeout {
                    provider: std::mem::take(&mut this.provider),
                    phase: TimeoutPhase::FirstToken,
                })));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
// The upstream stream's own item type, error and all.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use provider_adapter::{ChoiceDelta, FinishReason, ResponseMeta, Usage};

    type Item = Result<StreamEvent, AdapterError>;

    fn meta() -> StreamEvent {
        StreamEvent::Meta(ResponseMeta {
            id: Some("a".into()),
            ..Default::default()
        })
    }

    fn text(t: &str) -> StreamEvent {
        StreamEvent::Delta(ChoiceDelta::text(0, t))
    }

    fn finish() -> StreamEvent {
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::Stop,
        }
    }

    fn overloaded() -> AdapterError {
        AdapterError::Upstream {
            status: None,
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
            code: None,
            param: None,
            retry_after: None,
        }
    }

    fn of(items: Vec<Item>) -> EventStream {
        Box::pin(futures::stream::iter(items))
    }

    /// Then never ends.
    fn then_silent(items: Vec<Item>) -> EventStream {
        Box::pin(futures::stream::iter(items).chain(futures::stream::pending()))
    }

    async fn all(s: EventStream) -> Vec<String> {
        s.map(|i| match i {
            Ok(ev) => format!("{ev:?}"),
            Err(e) => format!("error: {e}"),
        })
        .collect()
        .await
    }

    fn shown(items: Vec<Item>) -> Vec<String> {
        items
            .into_iter()
            .map(|i| match i {
                Ok(ev) => format!("{ev:?}"),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    }

    #[test]
    fn content_is_text_reasoning_refusal_or_a_tool_call() {
        assert!(is_content(&text("a")));
        assert!(!is_content(&text("")));
        assert!(!is_content(&meta()));
        assert!(!is_content(&finish()));
        assert!(!is_content(&StreamEvent::Usage(Usage::default())));
        let d = |f: fn(&mut ChoiceDelta)| {
            let mut d = ChoiceDelta::default();
            f(&mut d);
            StreamEvent::Delta(d)
        };
        assert!(is_content(&d(|d| d.reasoning = Some("hm".into()))));
        assert!(is_content(&d(|d| d.refusal = Some("no".into()))));
        assert!(is_content(&d(|d| d.tool_calls.push(Default::default()))));
        assert!(!is_content(
            &d(|d| d.reasoning_signature = Some("s".into()))
        ));
    }

    #[tokio::test]
    async fn the_held_events_and_the_rest_come_out_unchanged() {
        let items = || {
            vec![
                Ok(meta()),
                Ok(text("")),
                Ok(text("hi")),
                Ok(text(" there")),
                Ok(finish()),
                Ok(StreamEvent::Usage(Usage::default())),
            ]
        };
        let s = hold(of(items()), Some(Duration::from_secs(5)), "p")
            .await
            .unwrap();
        assert_eq!(all(s).await, shown(items()));
    }

    #[tokio::test]
    async fn an_error_before_content_fails_the_attempt() {
        let e = hold(of(vec![Ok(meta()), Err(overloaded())]), None, "p")
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), "overloaded_error");
        assert!(e.is_retryable_before_content());
    }

    #[tokio::test]
    async fn an_error_after_content_is_the_streams() {
        let s = hold(
            of(vec![Ok(meta()), Ok(text("a")), Err(overloaded())]),
            None,
            "p",
        )
        .await
        .unwrap();
        let got = all(s).await;
        assert_eq!(got.len(), 3);
        assert!(got[2].starts_with("error: "));
    }

    #[tokio::test]
    async fn an_end_without_content_fails_unless_it_finished() {
        let e = hold(of(vec![Ok(meta())]), None, "p").await.err().unwrap();
        assert!(matches!(e, AdapterError::Truncated(_)));
        assert!(e.is_retryable_before_content());
        let s = hold(of(vec![Ok(meta()), Ok(finish())]), None, "p")
            .await
            .unwrap();
        assert_eq!(all(s).await, shown(vec![Ok(meta()), Ok(finish())]));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_timeout_fails_the_attempt() {
        let e = hold(
            then_silent(vec![Ok(meta())]),
            Some(Duration::from_secs(2)),
            "p",
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(
            e,
            AdapterError::Timeout {
                phase: TimeoutPhase::FirstToken,
                ..
            }
        ));
        assert_eq!(e.kind(), "upstream_timeout");
        assert!(e.is_retryable_before_content());
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_held_events_accept_the_stream_still_under_its_deadline() {
        let items: Vec<Item> = (0..MAX_HELD + 2)
            .map(|_| Ok(StreamEvent::Usage(Usage::default())))
            .collect();
        let s = hold(then_silent(items), Some(Duration::from_secs(2)), "p")
            .await
            .unwrap();
        let got = all(s).await;
        assert_eq!(got.len(), MAX_HELD + 3);
        assert!(got[MAX_HELD + 2].contains("first token"), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_a_silent_stream_and_lets_a_talking_one_be() {
        let s: EventStream = Box::pin(Deadline::new(
            then_silent(vec![Ok(meta())]),
            Duration::from_secs(2),
            "p",
        ));
        let got = all(s).await;
        assert_eq!(got.len(), 2);
        assert!(got[1].contains("timed out waiting for the upstream's first token"));
        // Content in time: no timeout afterwards, however long the silence.
        let mut s = Deadline::new(
            then_silent(vec![Ok(meta()), Ok(text("a"))]),
            Duration::from_secs(2),
            "p",
        );
        assert!(s.next().await.is_some());
        assert!(s.next().await.is_some());
        assert!(tokio::time::timeout(Duration::from_secs(60), s.next())
            .await
            .is_err());
    }
}
