//! A non-streaming generation: the plan's targets tried for a whole answer, which is then
//! settled and reported like a stream's end (see `summary`).

use std::time::Instant;

use provider_adapter::ChatRequest;

use super::summary::{finished, settle, Summary};
use crate::access::{estimate, Admission};
use crate::error::GatewayError;
use crate::metrics::{Outcome, StreamLabels};
use crate::routing::failover::try_targets;
use crate::routing::Plan;
use crate::state::AppState;

/// A whole answer, and who gave it.
#[derive(Debug)]
pub struct Answer {
    /// The `chat.completion` object the client receives.
    pub body: serde_json::Value,
    /// The name of the provider that served (`x-sluice-provider`).
    pub provider: String,
}

/// Asks the plan's targets in turn (see [`try_targets`]) for a whole answer to `req`, then
/// settles `admission` and reports the generation. `labels` are its metric labels (the
/// provider's is set to the target that serves), `arrival` when the request came in.
pub async fn complete(
    state: &AppState,
    req: &ChatRequest,
    plan: &Plan<'_>,
    mut admission: Admission,
    mut labels: StreamLabels,
    arrival: Instant,
) -> Result<Answer, GatewayError> {
    // If the client goes away during the await, the admission is dropped with this future and
    // charges the prompt estimate: the upstream was working on it.
    admission.sent_upstream();
    let (completion, target) = match try_targets(&state.metrics, plan, req, |p, r, _| async move {
        Ok(p.complete(&r).await?)
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            if matches!(&e, GatewayError::Upstream(a) if a.upstream_worked()) {
                // Timed out after the upstream took the request: its prompt is charged, as
                // when the client goes away.
                admission.settle_estimated(0);
            } else {
                admission.refund();
            }
            return Err(e);
        }
    };
    let usage = completion
        .usage
        .as_ref()
        .map(|u| (u.prompt_tokens, u.completion_tokens));
    // The upstream did the work but did not say how much: estimated from the answer.
    let tokens = settle(admission, usage, || {
        estimate::completion_tokens(&completion.body)
    });
    labels.provider = target.label.clone();
    finished(
        state,
        &Summary {
            stream: None,
            model: req.model.as_str().into(),
            labels,
            outcome: Outcome::Completed,
            ttft: None,
            upstream_ttft: None,
            duration: arrival.elapsed(),
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            usage_reported: tokens.reported,
            resumes: 0,
        },
    );
    Ok(Answer {
        body: completion.body,
        provider: target.provider.name.clone(),
    })
}
