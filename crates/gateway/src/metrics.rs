//! Counters for `GET /metrics`, in Prometheus text format. Plain atomics: the hot path pays one
//! relaxed increment per request, never a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub chat_completions: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_failed: AtomicU64,
    pub streams_cancelled: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub resumes: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// `accept` failures (out of descriptors, say): the server backs off and keeps serving.
    pub accept_errors: AtomicU64,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn render(&self, relay: relay::Stats, extra: &str) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "sluice_http_requests_total",
            "HTTP requests received.",
            g(&self.requests),
        );
        counter(
            "sluice_chat_completions_total",
            "Chat completion requests admitted.",
            g(&self.chat_completions),
        );
        counter(
            "sluice_streams_started_total",
            "Generations started.",
            g(&self.streams_started),
        );
        counter(
            "sluice_streams_completed_total",
            "Generations that finished normally.",
            g(&self.streams_completed),
        );
        counter(
            "sluice_streams_failed_total",
            "Generations that ended with an error.",
            g(&self.streams_failed),
        );
        counter(
            "sluice_streams_cancelled_total",
            "Generations cancelled (stop button, readers gone, shutdown).",
            g(&self.streams_cancelled),
        );
        counter(
            "sluice_upstream_errors_total",
            "Upstream requests that failed before streaming.",
            g(&self.upstream_errors),
        );
        counter(
            "sluice_stream_resumes_total",
            "Event stream reads that resumed from a Last-Event-ID.",
            g(&self.resumes),
        );
        counter(
            "sluice_prompt_tokens_total",
            "Prompt tokens reported by upstreams.",
            g(&self.prompt_tokens),
        );
        counter(
            "sluice_completion_tokens_total",
            "Completion tokens reported by upstreams.",
            g(&self.completion_tokens),
        );
        counter(
            "sluice_accept_errors_total",
            "Connections that could not be accepted (e.g. out of file descriptors).",
            g(&self.accept_errors),
        );
        counter(
            "sluice_relay_evicted_streams_total",
            "Finished streams evicted to stay under the relay memory bound.",
            relay.evicted as u64,
        );
        counter(
            "sluice_relay_refused_streams_total",
            "New streams refused because live streams filled the relay memory bound.",
            relay.refused as u64,
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "sluice_relay_live_streams",
            "Generations in progress.",
            relay.live as u64,
        );
        gauge(
            "sluice_relay_finished_streams",
            "Finished generations kept for resuming.",
            relay.finished as u64,
        );
        gauge(
            "sluice_relay_bytes",
            "Bytes held by replay logs (live and finished streams).",
            relay.bytes as u64,
        );
        gauge(
            "sluice_relay_max_bytes",
            "The relay memory bound (SLUICE_RELAY_MAX_TOTAL_BYTES, or its default).",
            relay.max_bytes as u64,
        );
        gauge(
            "sluice_relay_live_bytes",
            "Bytes held by the replay logs of generations in progress.",
            relay.live_bytes as u64,
        );
        gauge(
            "sluice_relay_oldest_retained_seconds",
            "Seconds since the oldest retained finished stream ended: how long answers stay resumable now.",
            relay.oldest_finished_age.map_or(0, |d| d.as_secs()),
        );
        out.push_str(extra);
        out
    }
}
