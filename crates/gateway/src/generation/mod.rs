//! One generation's life in the gateway, in one place: start (register it in the relay, send
//! the upstream request and wait for its status), pump (the upstream's normalised events into
//! the relay's writer until the upstream ends, fails, the stream is cancelled or abandoned, or
//! the server shuts down), end (settle the team's tokens, and report it once, as a
//! [`Summary`], in [`finished`]). A non-streaming generation ([`complete`]) ends the same way.
//!
//! Every pump is tracked, so shutdown waits for them. A pump runs either in its own task or,
//! for `POST /v1/chat/completions`, inside the response body of its first reader, so that each
//! token goes from the upstream to the client without waking a second task; if that client goes
//! away first, the pump moves to a task of its own and the grace period rules apply.
//!
//! How long a pump runs on once its last reader is gone is decided per generation, when it
//! starts: the route's and the team's `on_disconnect` (see `config::disconnect`), `"cancel"`
//! being no grace at all; a stream that exists to be resumed ([`Started::resumable`]) keeps a
//! grace period whatever they say.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use provider_adapter::{AdapterError, ChatRequest, EventStream, StreamEvent};
use relay::{Delta, Driver, Failure, Handle, Meta, ToolCall, Usage, Writer};
use tracing::Instrument;

use crate::access::{estimate, Admission};
use crate::config::Disconnect;
use crate::error::GatewayError;
use crate::metrics::{Outcome, StreamLabels};
use crate::net::socket::{FlushHint, BURST_GAP};
use crate::routing::failover::{try_targets, Attempt};
use crate::routing::Plan;
use crate::state::AppState;

mod complete;
pub mod first_content;
mod summary;

pub use complete::{complete, Answer};
use summary::{finished, settle};
pub use summary::{Summary, Tokens};

/// Most events appended before readers are woken (bounds a reader's wait behind a fast upstream).
const MAX_BATCH: usize = 64;

/// What a generation carries for its [`Summary`] besides its writer.
struct Context {
    model: Arc<str>,
    labels: StreamLabels,
    arrival: Instant,
    /// When the upstream request was sent.
    sent: Instant,
    /// How long the pump runs on with no reader (zero: cancel as the last one leaves).
    grace: Duration,
    /// The grace of a stream that exists to be resumed ([`Started::resumable`]).
    resumable_grace: Duration,
}

/// A generation whose upstream has answered, ready to be pumped.
pub struct Started {
    /// The request's span: the pump's log lines carry its request ID, wherever the pump runs.
    span: tracing::Span,
    writer: Writer,
    upstream: EventStream,
    admission: Admission,
    context: Context,
    /// The provider that served it (`x-sluice-provider`).
    provider: String,
}

/// Starts a generation: registers it and waits for the upstream's headers, so that an upstream
/// HTTP error becomes a real status. If the caller goes away meanwhile, this future is dropped
/// and so is the writer, which ends the registered stream as cancelled. `arrival` is when the
/// request came in, `labels` its metric labels (the provider's is set to the target that
/// serves). The plan's targets are tried in turn (see [`try_targets`]): failover happens here,
/// before any response header is sent, never once the stream has started.
pub async fn start(
    state: &AppState,
    req: &ChatRequest,
    plan: &Plan<'_>,
    admission: Admission,
    mut labels: StreamLabels,
    arrival: Instant,
) -> Result<Started, GatewayError> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut writer = state
        .registry
        .create_owned(
            Meta {
                id: String::new(),
                model: req.model.clone(),
                created,
                system_fingerprint: None,
            },
            req.include_usage,
            admission.team(),
        )
        .map_err(|e| match e {
            relay::RelayError::TooManyStreams(_) => GatewayError::TooManyStreams(e.to_string()),
            _ => GatewayError::Unavailable(
                "the relay is at its memory limit; try again shortly".into(),
            ),
        })?;
    // Used when the upstream sends no chunk id. Clients store and log chunk ids, and the stream
    // ID is the read credential of its events URL: the chunk id is derived from it one way.
    let id = chunk_id(writer.id().as_str());
    writer.set_meta(|m| m.id = id);
    // Other instances can resume it (a no-op in memory).
    let published = state.streams.publish(writer.handle());
    // If the caller goes away during the await, the admission is dropped with this future and
    // charges the prompt estimate: the upstream was working on it.
    let disconnect = Disconnect::decide(
        plan.on_disconnect(),
        admission.on_disconnect(),
        state.settings.stream_grace,
    );
    let mut admission = admission;
    admission.sent_upstream();
    let sent = Instant::now();
    // Every target but the last is held until its first content (see `first_content`); the
    // last is accepted at its headers, under the first-token deadline if there is one.
    let first_token = plan.first_token_timeout(state.settings.first_token_timeout);
    match try_targets(&state.metrics, plan, req, |p, r, last| async move {
        let upstream = p.stream(&r).await?;
        if last {
            return Ok(match first_token {
                Some(t) => Box::pin(first_content::Deadline::new(upstream, t, &p.name)),
                None => upstream,
            });
        }
        first_content::hold(upstream, first_token, &p.name)
            .await
            .map_err(Attempt::first_token)
    })
    .await
    {
        Ok((upstream, target)) => {
            // Before the client learns the stream's ID (in practice already done: the upstream
            // took longer than one Redis write).
            published.announced().await;
            labels.provider = target.label.clone();
            state.metrics.stream_started(&labels);
            Ok(Started {
                span: tracing::Span::current(),
                writer,
                upstream,
                admission,
                context: Context {
                    model: req.model.as_str().into(),
                    labels,
                    arrival,
                    sent,
                    grace: disconnect.grace(false, state.settings.stream_grace),
                    resumable_grace: disconnect.grace(true, state.settings.stream_grace),
                },
                provider: target.provider.name.clone(),
            })
        }
        Err(e) => {
            admission.refund();
            writer.fail(gateway_failure(&e));
            Err(e)
        }
    }
}

/// `chatcmpl-` and 24 hex digits of the SHA-256 of the stream ID: stable for the stream (and on
/// every resume), and no help in finding the ID.
fn chunk_id(stream_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(stream_id.as_bytes());
    format!("chatcmpl-{}", hex::encode(&digest[..12]))
}

/// A gateway error as the in-band failure readers of a stream that never started see.
fn gateway_failure(e: &GatewayError) -> Failure {
    match e {
        GatewayError::Upstream(a) => failure(a),
        GatewayError::AllTargetsFailed { code, message, .. } => Failure {
            message: message.clone(),
            kind: "upstream_error".into(),
            code: Some((*code).into()),
            ..Default::default()
        },
        other => Failure {
            message: other.to_string(),
            kind: "upstream_error".into(),
            code: Some("all_targets_failed".into()),
            ..Default::default()
        },
    }
}

impl Started {
    pub fn handle(&self) -> Handle {
        self.writer.handle()
    }

    /// The name of the provider that served.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Marks a stream that exists to be resumed (`POST /v1/streams`, the AI SDK's UI stream):
    /// it keeps a grace period after its last reader leaves even where `on_disconnect` says
    /// `"cancel"`.
    pub fn resumable(mut self) -> Self {
        self.context.grace = self.context.resumable_grace;
        self
    }

    /// Renames tool calls from the upstream's names to the client's (`renames`: upstream →
    /// client), before they reach the log: a dialect that flattened the client's tools for
    /// the upstream (the Responses API's namespace tools) maps them back here, so every
    /// reader and every replay shows the client's own names.
    // The closure returns the upstream stream's own item type, error and all.
    #[allow(clippy::result_large_err)]
    pub fn rename_tools(mut self, renames: std::collections::HashMap<String, String>) -> Self {
        if renames.is_empty() {
            return self;
        }
        self.upstream = Box::pin(self.upstream.map(move |mut ev| {
            if let Ok(StreamEvent::Delta(d)) = &mut ev {
                for call in &mut d.tool_calls {
                    if let Some(client) = call.name.as_ref().and_then(|n| renames.get(n)) {
                        call.name = Some(client.clone());
                    }
                }
            }
            ev
        }));
        self
    }

    /// Runs the pump in a task of its own (streams whose readers come later).
    pub fn spawn(self, state: &AppState) -> Handle {
        let handle = self.handle();
        state.lifecycle.spawn_generation(
            pump(
                state.clone(),
                self.writer,
                self.upstream,
                self.admission,
                self.context,
                None,
            )
            .instrument(self.span),
        );
        handle
    }

    /// The pump as a [`Driver`] for the first reader's body to poll; handed to a task of its
    /// own if that body is dropped first. `hint` is the reader's connection's (see `conn`).
    pub fn into_driver(self, state: &AppState, hint: Option<FlushHint>) -> Driver {
        let token = state.lifecycle.generation_token();
        let fut = pump(
            state.clone(),
            self.writer,
            self.upstream,
            self.admission,
            self.context,
            hint,
        )
        .instrument(self.span);
        // `map`, not an `async` block awaiting `fut`: that would hold the pump twice over (the
        // captured copy and the awaited one) for the whole stream.
        let tracked: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(fut.map(move |()| drop(token)));
        Driver::new(tracked, state.lifecycle.generation_spawner())
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
    Shutdown,
}

/// Runs a generation to its end. `admission` is held (a concurrency slot) until then and settled
/// with the real usage. `hint` is told when upstream chunks come in a burst.
async fn pump(
    state: AppState,
    mut writer: Writer,
    mut upstream: EventStream,
    mut admission: Admission,
    context: Context,
    hint: Option<FlushHint>,
) {
    let mut last_chunk = Instant::now();
    let mut ttft = None;
    let mut upstream_ttft = None;
    // Bytes of generated text, to estimate the completion if the upstream reports no usage.
    let mut text_bytes = 0u64;
    // Tokens taken from the team's budget so far (`None`: no token limit); checked after each
    // batch against the estimate of what was used, and topped up a chunk at a time.
    let mut budget = admission.tokens_taken();
    let prompt_estimate = admission.prompt_estimate();
    let abandoned = writer.abandoned(context.grace);
    let cancelled = writer.cancelled();
    let shutdown = state.lifecycle.grace_over();
    tokio::pin!(abandoned, cancelled, shutdown);
    let end = loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => break End::Cancelled,
            _ = &mut shutdown => break End::Shutdown,
            _ = &mut abandoned => {
                tracing::info!(stream = %writer.id().log_tag(), grace_secs = context.grace.as_secs(), "no reader for the grace period: cancelling the upstream");
                break End::Cancelled;
            }
            item = next_or_panic(&mut upstream) => {
                // Take every event already decoded from the same upstream read before waking
                // the readers, so that they write them in one piece. One token per read (the
                // usual pace of a model) is a batch of one: no added latency.
                let mut batch = writer.batch();
                let mut item = item;
                let mut taken = 0;
                let end = loop {
                    match item {
                        Some(Ok(ev)) => {
                            if let StreamEvent::Delta(d) = &ev {
                                text_bytes =
                                    text_bytes.saturating_add(estimate::delta_text_bytes(d));
                                // A delta always carries output (see `ChoiceDelta`): the
                                // first one is the first token.
                                if upstream_ttft.is_none() {
                                    upstream_ttft = Some(context.sent.elapsed());
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
                        break None;
                    }
                    match next_or_panic(&mut upstream).now_or_never() {
                        Some(next) => item = next,
                        None => break None,
                    }
                };
                // Readers are woken here: the first token is now theirs to write.
                drop(batch);
                if ttft.is_none() && upstream_ttft.is_some() {
                    ttft = Some(context.arrival.elapsed());
                }
                if let Some(end) = end {
                    break end;
                }
                if let Some(limit) = budget {
                    let used = prompt_estimate.saturating_add(
                        estimate::streamed_completion_tokens(writer.last_id(), text_bytes),
                    );
                    if used > limit {
                        // Once per chunk: the only store call (a Redis round trip) in the pump.
                        match admission.take_more(used).await {
                            Some(more) => budget = Some(more),
                            None => break End::OutOfTokens,
                        }
                    }
                }
                if let Some(hint) = &hint {
                    let now = Instant::now();
                    if now.duration_since(last_chunk) < BURST_GAP {
                        hint.burst();
                    }
                    last_chunk = now;
                }
            }
        }
    };
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

/// The upstream's next event. A panic while decoding it (a bug, but one an upstream's bytes could
/// trigger) becomes an error that ends the stream, instead of a dead task whose readers would
/// wait for an end that never comes.
pub(crate) async fn next_or_panic(
    upstream: &mut EventStream,
) -> Option<Result<StreamEvent, AdapterError>> {
    match std::panic::AssertUnwindSafe(upstream.next())
        .catch_unwind()
        .await
    {
        Ok(item) => item,
        Err(_) => Some(Err(AdapterError::Protocol(
            "internal error while decoding the upstream's stream".into(),
        ))),
    }
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

pub fn usage(u: provider_adapter::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        prompt_tokens_details: u
            .prompt_tokens_details
            .map(|d| relay::event::PromptDetails {
                cached_tokens: d.cached_tokens,
            }),
        completion_tokens_details: u.completion_tokens_details.map(|d| {
            relay::event::CompletionDetails {
                reasoning_tokens: d.reasoning_tokens,
            }
        }),
    }
}

/// An adapter error as the in-band failure readers see.
pub fn failure(e: &AdapterError) -> Failure {
    Failure {
        message: e.message(),
        kind: e.kind().to_owned(),
        code: e.code().map(str::to_owned),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_the_upstream_stream_is_an_error_item() {
        let mut upstream: EventStream = Box::pin(futures::stream::poll_fn(
            |_| -> std::task::Poll<Option<Result<StreamEvent, AdapterError>>> {
                panic!("decoder bug")
            },
        ));
        assert!(matches!(
            next_or_panic(&mut upstream).await,
            Some(Err(AdapterError::Protocol(_)))
        ));
    }
}
