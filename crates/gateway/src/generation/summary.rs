//! The end of every generation, streamed or not: its tokens settled with the team's budget
//! ([`settle`]), and one [`Summary`] reported to the metrics and the log ([`finished`]).

use std::time::Duration;

use crate::access::Admission;
pub use crate::metrics::Summary;
use crate::state::AppState;

/// The tokens a generation was charged (see [`settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    /// They are the upstream's usage; `false`: the gateway's estimate.
    pub reported: bool,
}

/// Settles `admission` with what its generation used, and returns it: the upstream's usage
/// (`(prompt, completion)`) when it reported one; else (it sends none, or the answer was cut
/// short before it) the prompt estimate made at admission and `completion_estimate()`, only
/// computed then.
pub fn settle(
    admission: Admission,
    usage: Option<(u64, u64)>,
    completion_estimate: impl FnOnce() -> u64,
) -> Tokens {
    match usage {
        Some((prompt, completion)) => {
            admission.settle(prompt, completion);
            Tokens {
                prompt,
                completion,
                reported: true,
            }
        }
        None => {
            let prompt = admission.prompt_estimate();
            let completion = completion_estimate();
            admission.settle_estimated(completion);
            Tokens {
                prompt,
                completion,
                reported: false,
            }
        }
    }
}

/// A generation ended: the one place that reports it, to the metrics and in one log line.
pub(crate) fn finished(state: &AppState, summary: &Summary) {
    let what = match summary.stream {
        Some(_) => {
            state.metrics.stream_finished(summary);
            "stream finished"
        }
        None => {
            // The stream families (started, completed, time to first token, duration) count
            // streams: a non-streaming completion adds its tokens only.
            let l = &summary.labels;
            state.metrics.tokens(
                &l.model,
                &l.team,
                summary.prompt_tokens,
                summary.completion_tokens,
            );
            "completion finished"
        }
    };
    // One line per generation, in the request's span (its request ID). Never the text.
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        stream = summary.stream.as_deref().map(tracing::field::display),
        team = %summary.labels.team,
        model = %summary.model,
        provider = %summary.labels.provider,
        outcome = summary.outcome.as_str(),
        error_type = summary.outcome.error_type(),
        ttft_ms = summary.ttft.map(ms),
        upstream_ttft_ms = summary.upstream_ttft.map(ms),
        duration_ms = ms(summary.duration),
        prompt_tokens = summary.prompt_tokens,
        completion_tokens = summary.completion_tokens,
        usage_reported = summary.usage_reported,
        resumes = summary.resumes,
        "{what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstreams_usage_else_the_estimate() {
        // Open mode: no budget to charge, and a prompt estimate of 0.
        let reported = settle(Admission::default(), Some((12, 5)), || {
            panic!("estimated although the upstream reported its usage")
        });
        assert_eq!(
            reported,
            Tokens {
                prompt: 12,
                completion: 5,
                reported: true
            }
        );
        let estimated = settle(Admission::default(), None, || 7);
        assert_eq!(
            estimated,
            Tokens {
                prompt: 0,
                completion: 7,
                reported: false
            }
        );
    }
}
