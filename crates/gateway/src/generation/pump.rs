//! The pump: a generation's upstream events into its relay writer, until the upstream ends or
//! fails, the stream is cancelled or abandoned, or the server shuts down.
//!
//! This runs once per token for every open stream, so it is written as a plain poll rather than
//! a `select!` loop. Each wake-up polls the upstream until it has nothing more, appends what it
//! got as one batch (readers are woken once, when the batch is published) and returns `Pending`
//! from inside the same poll: the upstream stack is polled once per token plus once to find it
//! empty, and nothing else is. The three things that end a stream from outside (a cancel, the
//! last reader gone for the grace period, shutdown) are one future polled only when its own
//! waker fired (a [`Gate`]), not on every token. The request's span is entered where the pump
//! logs (its end, a token top-up), not on every poll.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use provider_adapter::{AdapterError, EventStream, StreamEvent};
use relay::{Delta, Failure, ToolCall, Writer};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use super::summary::{finished, settle};
use super::{failure, usage, Context as GenContext, Started, Summary};
use crate::access::{estimate, Admission};
use crate::gate::Gate;
use crate::metrics::Outcome;
use crate::net::socket::{FlushHint, BURST_GAP};
use crate::state::AppState;

/// Most events appended before readers are woken (bounds a reader's wait behind a fast upstream).
const MAX_BATCH: usize = 64;

/// Batches that must follow each other within [`BURST_GAP`] before the next write is put off
/// to join the following one. One close pair is not a burst: on a loaded machine two tokens of
/// a slow stream are often taken back to back because the pump was late for the first, and
/// holding the second back would bunch them further. A real burst (a fast model, a replayed
/// answer) makes the streak in its first few tokens.
const BURST_STREAK: u32 = 2;

/// Whether the upstream is bursting, from when batches are published.
#[derive(Debug, Default)]
struct Burst {
    /// When the last batch was published (`None` before the first: a stream's opening chunks
    /// are not a burst to wait for).
    last: Option<Instant>,
    /// Batches in a row that followed the previous one within [`BURST_GAP`].
    streak: u32,
}

impl Burst {
    /// A batch was published at `now`: true when the next write should wait for the following
    /// one.
    fn batch(&mut self, now: Instant) -> bool {
        let close = self
            .last
            .is_some_and(|last| now.duration_since(last) < BURST_GAP);
        self.last = Some(now);
        self.streak = if close {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.streak >= BURST_STREAK
    }
}

/// How the upstream's part of a generation ended.
enum End {
    Finished,
    Failed(AdapterError),
    /// The relay refused more (the per-stream memory bound); it failed the stream itself.
    Refused,
    /// The team's token budget could not cover what the stream generated past its
    /// reservation.
    OutOfTokens,
    Cancelled,
    /// No reader for the grace period.
    Abandoned,
    Shutdown,
}

/// What one poll of the pump comes back with, besides `Pending`.
enum Step {
    End(End),
    /// The stream has used more than its token reservation: take this many from the budget.
    TakeMore(u64),
}

/// A generation being pumped; [`run`](Self::run) drives it to its end.
pub(super) struct Pump {
    state: AppState,
    span: tracing::Span,
    writer: Writer,
    upstream: EventStream,
    admission: Admission,
    context: GenContext,
    control: Control,
    hint: Option<FlushHint>,
    /// Held until the pump ends: shutdown waits for it (a pump polled by a response body).
    _token: Option<TaskTrackerToken>,
    burst: Burst,
    ttft: Option<Duration>,
    upstream_ttft: Option<Duration>,
    /// Bytes of generated text, to estimate the completion if the upstream reports no usage.
    text_bytes: u64,
    /// Tokens taken from the team's budget so far (`None`: no token limit); checked after each
    /// batch against the estimate of what was used, and topped up a chunk at a time.
    budget: Option<u64>,
    prompt_estimate: u64,
}

impl Pump {
    pub(super) fn new(
        state: AppState,
        started: Started,
        hint: Option<FlushHint>,
        token: Option<TaskTrackerToken>,
    ) -> Self {
        let Started {
            span,
            writer,
            upstream,
            admission,
            context,
            provider: _,
        } = started;
        let control = control(&writer, &state, context.grace);
        Self {
            budget: admission.tokens_taken(),
            prompt_estimate: admission.prompt_estimate(),
            state,
            span,
            writer,
            upstream,
            admission,
            context,
            control,
            hint,
            _token: token,
            burst: Burst::default(),
            ttft: None,
            upstream_ttft: None,
            text_bytes: 0,
        }
    }

    /// Runs the generation to its end. The admission is held (a concurrency slot) until then
    /// and settled with the real usage.
    pub(super) async fn run(mut self) {
        let end = loop {
            match std::future::poll_fn(|cx| self.poll_step(cx)).await {
                Step::End(end) => break end,
                Step::TakeMore(used) => {
                    // Once per chunk past the reservation: the only store call (a Redis round
                    // trip) in the pump.
                    let span = self.span.clone();
                    match self.admission.take_more(used).instrument(span).await {
                        Some(more) => self.budget = Some(more),
                        None => break End::OutOfTokens,
                    }
                }
            }
        };
        let span = self.span.clone();
        span.in_scope(|| self.end(end));
    }

    /// Appends what the upstream has ready; `Pending` once it has nothing more (readers woken
    /// for what was appended).
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if let Poll::Ready(end) = Pin::new(&mut self.control).poll(cx) {
            return Poll::Ready(Step::End(end));
        }
        let mut item = match poll_next_or_panic(&mut self.upstream, cx) {
            Poll::Ready(item) => item,
            Poll::Pending => return Poll::Pending,
        };
        let mut batch = self.writer.batch();
        let mut taken = 0;
        let end = loop {
            match item {
                Some(Ok(ev)) => {
                    if let StreamEvent::Delta(d) = &ev {
                        self.text_bytes = self
                            .text_bytes
                            .saturating_add(estimate::delta_text_bytes(d));
                        // A delta always carries output (see `ChoiceDelta`): the first one is
                        // the first token.
                        if self.upstream_ttft.is_none() {
                            self.upstream_ttft = Some(self.context.sent.elapsed());
                        }
                    }
                    if !apply(&mut batch, ev) {
                        break Some(End::Refused);
                    }
                }
                Some(Err(e)) => break Some(End::Failed(e)),
                None => break Some(End::Finished),
            }
            taken += 1;
            if taken == MAX_BATCH {
                // Let the readers write these before taking more.
                cx.waker().wake_by_ref();
                break None;
            }
            item = match poll_next_or_panic(&mut self.upstream, cx) {
                Poll::Ready(item) => item,
                Poll::Pending => break None,
            };
        };
        // Readers are woken here: the first token is now theirs to write.
        drop(batch);
        if self.ttft.is_none() && self.upstream_ttft.is_some() {
            self.ttft = Some(self.context.arrival.elapsed());
        }
        if let Some(end) = end {
            return Poll::Ready(Step::End(end));
        }
        if let Some(hint) = &self.hint {
            if self.burst.batch(Instant::now()) {
                hint.burst();
            }
        }
        if let Some(limit) = self.budget {
            let used = self
                .prompt_estimate
                .saturating_add(estimate::streamed_completion_tokens(
                    self.writer.last_id(),
                    self.text_bytes,
                ));
            if used > limit {
                return Poll::Ready(Step::TakeMore(used));
            }
        }
        Poll::Pending
    }

    /// Ends the stream in the relay, settles the team's tokens and reports the generation.
    fn end(self, end: End) {
        let Self {
            state,
            writer,
            upstream,
            admission,
            context,
            ttft,
            upstream_ttft,
            text_bytes,
            ..
        } = self;
        // The upstream connection closes before the stream's end is written.
        drop(upstream);
        let usage = writer.usage();
        let cut_short = writer.last_id();
        let stream = writer.id().log_tag().to_owned();
        let resumes = writer.resumes();
        let outcome = match end {
            End::Finished => {
                writer.finish();
                Outcome::Completed
            }
            End::Abandoned => {
                tracing::info!(stream = %stream, grace_secs = context.grace.as_secs(), "no reader for the grace period: cancelling the upstream");
                writer.finish_cancelled();
                Outcome::Cancelled
            }
            End::Cancelled => {
                writer.finish_cancelled();
                Outcome::Cancelled
            }
            // The relay failed the stream itself, with this type.
            End::Refused => Outcome::Failed("stream_too_large"),
            End::OutOfTokens => {
                tracing::warn!(stream = %stream, team = %context.labels.team, "stream ended: the team's token budget is used up");
                writer.fail(Failure {
                    message: "the team's token budget (tokens_per_minute) is used up; the answer was cut short".into(),
                    kind: "tokens".into(),
                    code: Some("rate_limit_exceeded".into()),
                    ..Default::default()
                });
                Outcome::Failed("tokens")
            }
            End::Failed(e) => {
                tracing::warn!(stream = %stream, error = %e, "upstream stream failed");
                state.metrics.upstream_error(&context.labels.provider, &e);
                writer.fail(failure(&e));
                Outcome::Failed(e.metric_kind())
            }
            End::Shutdown => {
                writer.fail(Failure {
                    message: "the server is shutting down".into(),
                    kind: "server_shutdown".into(),
                    code: Some("server_shutdown".into()),
                    ..Default::default()
                });
                Outcome::Failed("server_shutdown")
            }
        };
        let tokens = settle(
            admission,
            usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            // An estimate of what was generated: the log holds about one event per delta.
            || estimate::streamed_completion_tokens(cut_short, text_bytes),
        );
        finished(
            &state,
            &Summary {
                stream: Some(stream),
                model: context.model,
                labels: context.labels,
                outcome,
                ttft,
                upstream_ttft,
                duration: context.arrival.elapsed(),
                prompt_tokens: tokens.prompt,
                completion_tokens: tokens.completion,
                usage_reported: tokens.reported,
                resumes,
            },
        );
    }
}

/// What ends a stream from outside: a cancel, no reader for the grace period, shutdown.
/// Gated: polled again only after one of them woke it, not on every token.
type Control = Gate<Pin<Box<dyn Future<Output = End> + Send>>>;

fn control(writer: &Writer, state: &AppState, grace: Duration) -> Control {
    let cancelled = writer.cancelled();
    let abandoned = writer.abandoned(grace);
    let shutdown = state.lifecycle.grace_over();
    Gate::new(Box::pin(async move {
        tokio::select! {
            biased;
            () = cancelled => End::Cancelled,
            () = shutdown => End::Shutdown,
            () = abandoned => End::Abandoned,
        }
    }))
}

/// The upstream's next event. A panic while decoding it (a bug, but one an upstream's bytes could
/// trigger) becomes an error that ends the stream, instead of a dead task whose readers would
/// wait for an end that never comes.
fn poll_next_or_panic(
    upstream: &mut EventStream,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<StreamEvent, AdapterError>>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        upstream.as_mut().poll_next(cx)
    }))
    .unwrap_or_else(|_| {
        Poll::Ready(Some(Err(AdapterError::Protocol(
            "internal error while decoding the upstream's stream".into(),
        ))))
    })
}

/// [`poll_next_or_panic`] as a future.
pub(crate) async fn next_or_panic(
    upstream: &mut EventStream,
) -> Option<Result<StreamEvent, AdapterError>> {
    std::future::poll_fn(|cx| poll_next_or_panic(upstream, cx)).await
}

/// Appends one normalised event; false when the relay refuses more (memory bound).
fn apply(writer: &mut Writer, ev: StreamEvent) -> bool {
    match ev {
        StreamEvent::Meta(m) => {
            writer.set_meta(|meta| {
                if let Some(id) = m.id {
                    meta.id = id;
                }
                if let Some(model) = m.model {
                    meta.model = model;
                }
                if let Some(c) = m.created {
                    meta.created = c;
                }
                if m.system_fingerprint.is_some() {
                    meta.system_fingerprint = m.system_fingerprint;
                }
            });
            true
        }
        StreamEvent::Delta(d) => writer.push_delta(Delta {
            choice: d.choice,
            content: d.content,
            reasoning: d.reasoning,
            refusal: d.refusal,
            tool_calls: d
                .tool_calls
                .into_iter()
                .map(|t| ToolCall {
                    index: t.index,
                    id: t.id,
                    name: t.name,
                    arguments: t.arguments,
                })
                .collect(),
            logprobs: d.logprobs,
            signature: d.reasoning_signature,
            first: false,
        }),
        StreamEvent::Finish { choice, reason } => {
            writer.record_finish(choice, reason.as_str());
            true
        }
        StreamEvent::Usage(u) => {
            writer.record_usage(usage(u));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame that arrives alone leaves alone, at once: only a run of close batches (a fast
    /// model, a replayed answer) puts a write off.
    #[test]
    fn only_a_run_of_close_batches_is_a_burst() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut b = Burst::default();
        // A trickled stream: its opening pair (role chunk, first token) and then 20 ms apart.
        assert!(!b.batch(ms(0)));
        assert!(!b.batch(ms(0)), "a stream's opening pair is not a burst");
        for n in 1..10 {
            assert!(!b.batch(ms(20 * n)), "a trickled token leaves at once");
        }
        // Two tokens taken back to back because the pump was late for the first: not yet.
        assert!(!b.batch(ms(201)));
        assert!(!b.batch(ms(202)));
        // A third close one: the upstream is bursting.
        assert!(b.batch(ms(203)));
        assert!(b.batch(ms(204)));
        // A pause ends it.
        assert!(!b.batch(ms(250)));
    }
}
