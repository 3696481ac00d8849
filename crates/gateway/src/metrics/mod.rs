//! `GET /metrics`: every metric family, registered once in a `prometheus_client` [`Registry`]
//! and encoded at scrape time.
//!
//! What the hot path pays: nothing per token. A request costs one label-set lookup (a read lock
//! and a hash) in the HTTP counter when its response head is ready; a generation costs one
//! lookup when it starts and one set of updates when it ends ([`Metrics::stream_finished`], fed
//! from the stream's [`Summary`]). Values that live elsewhere (relay memory,
//! open connections, each team's open streams) are read by collectors at scrape time, so
//! nobody updates a gauge on the way.
//!
//! Label cardinality is bounded: `route` is the matched route template (never the raw path,
//! whose stream IDs are credentials), `model` is a model the config names exactly or `other`,
//! `team` a configured team (`""` in open mode), error kinds a fixed list.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use provider_adapter::AdapterError;

use crate::access::Access;
use crate::net::connections::Connections;

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

mod collectors;
mod labels;
mod summary;

use collectors::{ConnectionsCollector, RelayCollector};
pub use labels::{
    empty_label, method_label, other_label, HttpLabels, Label, RequestLabels, Route, StreamLabels,
};
use labels::{
    FailedLabels, FailoverLabels, ModelLabels, PhaseLabels, ProviderLabels, TokenLabels,
    UpstreamErrorLabels,
};
pub use summary::{Outcome, Summary};

/// The `Content-Type` of what [`Metrics::render`] writes (OpenMetrics text, ending `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Time-to-first-token buckets, seconds: 5 ms (a cached answer, the gateway's own share) to 60 s
/// (a long reasoning model's first visible token).
const TTFT_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Stream duration buckets, seconds: 0.1 s (a one-word answer) to 10 minutes (a long agentic
/// generation).
const DURATION_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The totals `GET /v1/usage` shows in open mode (with teams it shows the team's counters).
/// Not registered: `/metrics` has them by model and team.
#[derive(Debug, Default)]
pub struct Totals {
    pub requests: Counter,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    streams_started: Family<StreamLabels, Counter>,
    streams_completed: Family<StreamLabels, Counter>,
    streams_cancelled: Family<StreamLabels, Counter>,
    streams_failed: Family<FailedLabels, Counter>,
    ttft: HistogramFamily<ModelLabels>,
    upstream_ttft: HistogramFamily<ModelLabels>,
    duration: HistogramFamily<ModelLabels>,
    prompt_tokens: Family<TokenLabels, Counter>,
    completion_tokens: Family<TokenLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_requests: Family<ProviderLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    failovers_by_phase: Family<PhaseLabels, Counter>,
    resumes: Counter,
    accept_errors: Counter,
    pub totals: Totals,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every family, and collectors that read the relay's memory, the connections and
    /// the teams' counters at scrape time.
    pub fn new(
        relay: Arc<relay::Registry>,
        connections: Arc<Connections>,
        access: &Access,
    ) -> Self {
        let mut m = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            streams_started: Family::default(),
            streams_completed: Family::default(),
            streams_cancelled: Family::default(),
            streams_failed: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            upstream_ttft: Family::new_with_constructor(ttft_histogram),
            duration: Family::new_with_constructor(duration_histogram),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            upstream_errors: Family::default(),
            upstream_requests: Family::default(),
            failovers: Family::default(),
            failovers_by_phase: Family::default(),
            resumes: Counter::default(),
            accept_errors: Counter::default(),
            totals: Totals::default(),
        };
        // Each family is registered as a clone: a handle on the same series.
        let r = &mut m.registry;
        r.register(
            "sluice_http_requests",
            "HTTP requests answered, by route template, method and status; model and team for chat completions and stream creation",
            m.http_requests.clone(),
        );
        r.register(
            "sluice_streams_started",
            "Generations whose upstream answered and that began streaming",
            m.streams_started.clone(),
        );
        r.register(
            "sluice_streams_completed",
            "Generations that finished normally",
            m.streams_completed.clone(),
        );
        r.register(
            "sluice_streams_failed",
            "Generations that ended with an error event, by error type",
            m.streams_failed.clone(),
        );
        r.register(
            "sluice_streams_cancelled",
            "Generations cancelled (DELETE, stop button, no reader for the grace period)",
            m.streams_cancelled.clone(),
        );
        r.register(
            "sluice_time_to_first_token_seconds",
            "Gateway side: from the request's arrival to its first token in the relay, ready for readers",
            m.ttft.clone(),
        );
        r.register(
            "sluice_upstream_time_to_first_token_seconds",
            "Upstream side: from the upstream request being sent to the first token received from it",
            m.upstream_ttft.clone(),
        );
        r.register(
            "sluice_stream_duration_seconds",
            "Generations from the request's arrival to the stream's end, whatever the outcome",
            m.duration.clone(),
        );
        r.register(
            "sluice_prompt_tokens",
            "Prompt tokens of finished generations: the upstream's usage, or the gateway's estimate when it reported none",
            m.prompt_tokens.clone(),
        );
        r.register(
            "sluice_completion_tokens",
            "Completion tokens of finished generations: the upstream's usage, or the gateway's estimate when it reported none",
            m.completion_tokens.clone(),
        );
        r.register(
            "sluice_upstream_errors",
            "Upstream failures, before or during streaming, by provider, kind and (for upstream_http) HTTP status",
            m.upstream_errors.clone(),
        );
        r.register(
            "sluice_upstream_requests",
            "Requests sent upstream, by provider: one per target tried, so failovers count each attempt",
            m.upstream_requests.clone(),
        );
        r.register(
            "sluice_failovers",
            "Moves from a route's target that failed before answering to the next one, by provider",
            m.failovers.clone(),
        );
        r.register(
            "sluice_failovers_by_phase",
            "Moves from a route's target to the next one, by when the target failed: before its headers (headers) or after a 200 but before its first content (first_token)",
            m.failovers_by_phase.clone(),
        );
        r.register(
            "sluice_stream_resumes",
            "Event stream reads that resumed from a position after the start (Last-Event-ID)",
            m.resumes.clone(),
        );
        r.register(
            "sluice_accept_errors",
            "Connections that could not be accepted (e.g. out of file descriptors)",
            m.accept_errors.clone(),
        );
        r.register_collector(Box::new(RelayCollector(relay)));
        r.register_collector(Box::new(ConnectionsCollector(connections)));
        access.register_metrics(r);
        m
    }

    /// The whole exposition, in OpenMetrics text (see [`CONTENT_TYPE`]), ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and every encoder here only writes.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one answered HTTP request.
    pub fn http_request(&self, labels: &HttpLabels) {
        self.http_requests.get_or_create(labels).inc();
    }

    /// A chat request was admitted (open mode's `/v1/usage` counts these).
    pub fn admitted(&self) {
        self.totals.requests.inc();
    }

    pub fn stream_started(&self, labels: &StreamLabels) {
        self.streams_started.get_or_create(labels).inc();
    }

    /// An upstream request failed, before or while streaming.
    pub fn upstream_error(&self, provider: &Label, e: &AdapterError) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                provider: provider.clone(),
                kind: e.metric_kind(),
                status: e.upstream_status(),
            })
            .inc();
    }

    /// A request was sent to `provider` (each target tried counts).
    pub fn upstream_request(&self, provider: &Label) {
        self.upstream_requests
            .get_or_create(&ProviderLabels {
                provider: provider.clone(),
            })
            .inc();
    }

    /// A route moved from one target's provider to the next's.
    pub fn failover(&self, from: &Label, to: &Label) {
        self.failovers
            .get_or_create(&FailoverLabels {
                from: from.clone(),
                to: to.clone(),
            })
            .inc();
    }

    /// A failover, by phase (`headers` | `first_token`), beside [`Self::failover`].
    pub fn failover_phase(&self, phase: &'static str) {
        self.failovers_by_phase
            .get_or_create(&PhaseLabels { phase })
            .inc();
    }

    /// Tokens of a non-streaming completion (a stream's come with its summary).
    pub fn tokens(&self, model: &Label, team: &Label, prompt: u64, completion: u64) {
        let labels = TokenLabels {
            model: model.clone(),
            team: team.clone(),
        };
        self.prompt_tokens.get_or_create(&labels).inc_by(prompt);
        self.completion_tokens
            .get_or_create(&labels)
            .inc_by(completion);
        self.totals.prompt_tokens.inc_by(prompt);
        self.totals.completion_tokens.inc_by(completion);
    }

    pub fn resumed(&self) {
        self.resumes.inc();
    }

    /// The counter of failed `accept` calls, for the accept loop.
    pub fn accept_errors(&self) -> Counter {
        self.accept_errors.clone()
    }

    /// Everything a finished generation adds, in one call.
    pub fn stream_finished(&self, s: &Summary) {
        let l = &s.labels;
        match s.outcome {
            Outcome::Completed => {
                self.streams_completed.get_or_create(l).inc();
            }
            Outcome::Cancelled => {
                self.streams_cancelled.get_or_create(l).inc();
            }
            Outcome::Failed(error_type) => {
                self.streams_failed
                    .get_or_create(&FailedLabels {
                        model: l.model.clone(),
                        provider: l.provider.clone(),
                        team: l.team.clone(),
                        error_type,
                    })
                    .inc();
            }
        }
        let ml = ModelLabels {
            model: l.model.clone(),
            provider: l.provider.clone(),
        };
        if let Some(t) = s.ttft {
            self.ttft.get_or_create(&ml).observe(t.as_secs_f64());
        }
        if let Some(t) = s.upstream_ttft {
            self.upstream_ttft
                .get_or_create(&ml)
                .observe(t.as_secs_f64());
        }
        self.duration
            .get_or_create(&ml)
            .observe(s.duration.as_secs_f64());
        self.tokens(&l.model, &l.team, s.prompt_tokens, s.completion_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use std::time::Duration;

    fn labels() -> StreamLabels {
        StreamLabels {
            model: "m".into(),
            provider: "p".into(),
            team: "".into(),
        }
    }

    fn metrics() -> Metrics {
        Metrics::new(
            Arc::new(relay::Registry::new(relay::Limits::default())),
            Connections::new(crate::net::connections::Caps {
                max_total: 0,
                max_per_ip: 0,
                max_new_per_sec: 0,
            }),
            &Access::default(),
        )
    }

    fn summary(outcome: Outcome) -> Summary {
        Summary {
            stream: Some("abcdef".into()),
            model: "m".into(),
            labels: labels(),
            outcome,
            ttft: Some(Duration::from_millis(30)),
            upstream_ttft: Some(Duration::from_millis(20)),
            duration: Duration::from_secs(2),
            prompt_tokens: 10,
            completion_tokens: 4,
            usage_reported: true,
            resumes: 0,
        }
    }

    #[test]
    fn renders_openmetrics_with_the_names_dashboards_use() {
        let m = metrics();
        m.http_request(&HttpLabels {
            route: Route::new(None),
            method: "GET",
            status: 404,
            model: "".into(),
            team: "".into(),
        });
        m.stream_started(&labels());
        m.stream_finished(&summary(Outcome::Completed));
        m.stream_finished(&summary(Outcome::Failed("upstream_truncated")));
        m.upstream_error(
            &"p".into(),
            &AdapterError::Upstream {
                status: Some(503),
                kind: "x".into(),
                message: String::new(),
                code: None,
                param: None,
                retry_after: None,
            },
        );
        m.accept_errors().inc();
        let text = m.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "# TYPE sluice_http_requests counter",
            "sluice_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\",model=\"\",team=\"\"} 1",
            "sluice_streams_started_total{model=\"m\",provider=\"p\",team=\"\"} 1",
            "sluice_streams_completed_total{model=\"m\",provider=\"p\",team=\"\"} 1",
            "sluice_streams_failed_total{model=\"m\",provider=\"p\",team=\"\",error_type=\"upstream_truncated\"} 1",
            "sluice_time_to_first_token_seconds_count{model=\"m\",provider=\"p\"} 2",
            "sluice_time_to_first_token_seconds_bucket{le=\"0.05\",model=\"m\",provider=\"p\"} 2",
            "sluice_time_to_first_token_seconds_bucket{le=\"0.025\",model=\"m\",provider=\"p\"} 0",
            "sluice_upstream_time_to_first_token_seconds_bucket{le=\"0.025\",model=\"m\",provider=\"p\"} 2",
            "sluice_stream_duration_seconds_count{model=\"m\",provider=\"p\"} 2",
            "sluice_completion_tokens_total{model=\"m\",team=\"\"} 8",
            "sluice_prompt_tokens_total{model=\"m\",team=\"\"} 20",
            "sluice_upstream_errors_total{provider=\"p\",kind=\"upstream_http\",status=\"503\"} 1",
            "sluice_accept_errors_total 1",
            "sluice_relay_bytes 0",
            "sluice_relay_live_bytes 0",
            "sluice_relay_oldest_retained_seconds 0",
            "# TYPE sluice_relay_evicted_streams counter",
            "sluice_relay_evicted_streams_total 0",
            "sluice_relay_refused_streams_total 0",
            "sluice_connections_open 0",
            "sluice_connections_evicted_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(m.totals.completion_tokens.get(), 8);
        // Nothing cancelled yet: the family is left out, not shown empty.
        assert!(!text.contains("sluice_streams_cancelled"), "{text}");
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
