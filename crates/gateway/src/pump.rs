//! The glue between the provider-adapter and the relay: one task per generation reads the
//! upstream's normalised events and appends them to the generation's log until the upstream
//! ends, fails, the generation is cancelled, or no reader has been attached for the grace
//! period. Dropping the upstream stream closes the upstream connection.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use provider_adapter::{AdapterError, EventStream, StreamEvent};
use relay::{Delta, Failure, Generation, ToolCall, Usage};

use crate::access::Admission;
use crate::metrics::inc;
use crate::state::AppState;

/// Most events appended before readers are woken (bounds a reader's wait behind a fast upstream).
const MAX_BATCH: usize = 64;

/// How the upstream's part of a generation ended.
enum End {
    Finished,
    Failed(AdapterError),
    /// The relay refused more (the per-stream memory bound); it failed the stream itself.
    Refused,
}

/// Runs a generation to its end. `admission` is held (a concurrency slot) until then and settled
/// with the real usage.
pub async fn pump(
    state: AppState,
    gen: Arc<Generation>,
    mut upstream: EventStream,
    admission: Admission,
) {
    let grace = state.settings.stream_grace;
    let abandoned = gen.abandoned(grace);
    let cancelled = gen.cancelled();
    tokio::pin!(abandoned, cancelled);
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                drop(upstream);
                gen.finish_cancelled();
                inc(&state.metrics.streams_cancelled);
                break;
            }
            _ = &mut abandoned => {
                tracing::info!(stream = %gen.id(), "no reader for the grace period: cancelling the upstream");
                drop(upstream);
                gen.finish_cancelled();
                inc(&state.metrics.streams_cancelled);
                break;
            }
            item = next_or_panic(&mut upstream) => {
                // Take every event already decoded from the same upstream read before waking
                // the readers, so that they write them in one piece. One token per read (the
                // usual pace of a model) is a batch of one: no added latency.
                gen.begin_batch();
                let mut item = item;
                let mut taken = 0;
                let end = loop {
                    match item {
                        Some(Ok(ev)) => {
                            if !apply(&gen, ev) {
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
                gen.end_batch();
                match end {
                    None => {}
                    Some(End::Refused) => {
                        drop(upstream);
                        inc(&state.metrics.streams_failed);
                        break;
                    }
                    Some(End::Failed(e)) => {
                        tracing::warn!(stream = %gen.id(), error = %e, "upstream stream failed");
                        drop(upstream);
                        gen.fail(failure(&e));
                        inc(&state.metrics.streams_failed);
                        break;
                    }
                    Some(End::Finished) => {
                        drop(upstream);
                        gen.finish();
                        inc(&state.metrics.streams_completed);
                        break;
                    }
                }
            }
        }
    }
    let usage = gen.usage();
    if let Some(u) = usage {
        state
            .metrics
            .prompt_tokens
            .fetch_add(u.prompt_tokens, std::sync::atomic::Ordering::Relaxed);
        state
            .metrics
            .completion_tokens
            .fetch_add(u.completion_tokens, std::sync::atomic::Ordering::Relaxed);
    }
    match usage {
        Some(u) => admission.settle(u.prompt_tokens, u.completion_tokens),
        // Cut short before the upstream's usage report: charged for what was generated (the
        // log holds one event per delta, plus the terminal event).
        None => admission.settle_cut_short(gen.last_id().saturating_sub(1)),
    }
}

/// The upstream's next event. A panic while decoding it (a bug, but one an upstream's bytes could
/// trigger) becomes an error that ends the stream, instead of a dead task whose readers would
/// wait for an end that never comes.
async fn next_or_panic(upstream: &mut EventStream) -> Option<Result<StreamEvent, AdapterError>> {
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

/// Appends one normalised event; false when the generation refuses more (memory bound).
fn apply(gen: &Generation, ev: StreamEvent) -> bool {
    match ev {
        StreamEvent::Meta(m) => {
            gen.set_meta(|meta| {
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
        StreamEvent::Delta(d) => gen.push_delta(Delta {
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
            first: false,
        }),
        StreamEvent::Finish { choice, reason } => {
            gen.record_finish(choice, reason.as_str());
            true
        }
        StreamEvent::Usage(u) => {
            gen.record_usage(usage(u));
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
    }
}

/// Ends every live generation for shutdown, after they had `grace` to finish on their own.
pub async fn drain(state: &AppState, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && !state.registry.live().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for gen in state.registry.live() {
        gen.fail(Failure {
            message: "the server is shutting down".into(),
            kind: "server_shutdown".into(),
            code: Some("server_shutdown".into()),
        });
        gen.cancel();
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
