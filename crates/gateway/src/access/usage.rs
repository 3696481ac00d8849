//! Per-team usage counters: requests admitted, prompt and completion tokens charged, and
//! rejections by limit. One set per team name, kept across config reloads (counters never go
//! back); shown in `/metrics` (the `sluice_team_*` families) and at `GET /v1/usage`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::LimitStore;

/// Which limit refused a request: also the error `type` of the 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
}

impl LimitKind {
    pub const ALL: [Self; 3] = [Self::Requests, Self::Tokens, Self::Concurrency];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Concurrency => "concurrency",
        }
    }
}

/// One team's counters: handles on its series in the `sluice_team_*` families, so that
/// `/metrics` and `GET /v1/usage` read the same atomics, and counting is one atomic add with no
/// label lookup (the handles are made once, with the team).
#[derive(Debug)]
pub struct TeamUsage {
    requests: Counter,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    /// Indexed by [`LimitKind`].
    rejected: [Counter; 3],
}

impl TeamUsage {
    pub fn admitted(&self) {
        self.requests.inc();
    }

    pub fn rejected(&self, kind: LimitKind) {
        self.rejected[kind as usize].inc();
    }

    pub fn charged(&self, prompt: u64, completion: u64) {
        self.prompt_tokens.inc_by(prompt);
        self.completion_tokens.inc_by(completion);
    }

    pub fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            requests: self.requests.get(),
            prompt_tokens: self.prompt_tokens.get(),
            completion_tokens: self.completion_tokens.get(),
            rejected: self.rejected.each_ref().map(Counter::get),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Indexed by [`LimitKind`].
    pub rejected: [u64; 3],
}

impl UsageSnapshot {
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
            "rejected": {
                "requests": self.rejected[0],
                "tokens": self.rejected[1],
                "concurrency": self.rejected[2],
            },
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TeamLabel {
    team: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    team: Arc<str>,
    r#type: &'static str,
}

type Teams = Arc<RwLock<BTreeMap<Arc<str>, Arc<TeamUsage>>>>;

/// Every team's counters, by name, and the metric families they count in.
#[derive(Debug, Default)]
pub struct UsageBook {
    teams: Teams,
    requests: Family<TeamLabel, Counter>,
    prompt_tokens: Family<TeamLabel, Counter>,
    completion_tokens: Family<TeamLabel, Counter>,
    rejected: Family<RejectedLabels, Counter>,
}

impl UsageBook {
    /// The counters of `team`, created at zero on first use (every series shows from then on,
    /// zeros included, so a graph of a quiet team is a flat line rather than nothing).
    pub fn team(&self, team: &str) -> Arc<TeamUsage> {
        if let Some(u) = self
            .teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(team)
        {
            return u.clone();
        }
        let name: Arc<str> = team.into();
        let label = TeamLabel { team: name.clone() };
        let usage = TeamUsage {
            requests: self.requests.get_or_create_owned(&label),
            prompt_tokens: self.prompt_tokens.get_or_create_owned(&label),
            completion_tokens: self.completion_tokens.get_or_create_owned(&label),
            rejected: LimitKind::ALL.map(|kind| {
                self.rejected.get_or_create_owned(&RejectedLabels {
                    team: name.clone(),
                    r#type: kind.as_str(),
                })
            }),
        };
        self.teams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_insert_with(|| Arc::new(usage))
            .clone()
    }

    /// Registers the `sluice_team_*` families; `sluice_team_open_streams` is read from
    /// `store` at scrape time.
    pub fn register(&self, registry: &mut Registry, store: Arc<dyn LimitStore>) {
        registry.register(
            "sluice_team_requests",
            "Chat requests admitted, by team",
            self.requests.clone(),
        );
        registry.register(
            "sluice_team_prompt_tokens",
            "Prompt tokens charged to the team",
            self.prompt_tokens.clone(),
        );
        registry.register(
            "sluice_team_completion_tokens",
            "Completion tokens charged to the team",
            self.completion_tokens.clone(),
        );
        registry.register(
            "sluice_team_rejected",
            "Requests refused with 429, by team and limit type",
            self.rejected.clone(),
        );
        registry.register_collector(Box::new(OpenStreams {
            teams: self.teams.clone(),
            store,
        }));
    }
}

/// `sluice_team_open_streams`: each team's concurrency slots in use through this instance,
/// from the limit store (with shared limits, the sum over the instances is the team's total).
#[derive(Debug)]
struct OpenStreams {
    teams: Teams,
    store: Arc<dyn LimitStore>,
}

impl Collector for OpenStreams {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let names: Vec<Arc<str>> = self
            .teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "sluice_team_open_streams",
            "Generations in flight holding one of the team's concurrency slots.",
            None,
            MetricType::Gauge,
        )?;
        for team in names {
            let v = self.store.open_streams_here(&team);
            let label = TeamLabel { team };
            ConstGauge::new(v).encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::MemoryStore;

    fn render(book: &UsageBook) -> String {
        let mut registry = Registry::default();
        book.register(&mut registry, Arc::new(MemoryStore::new()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn counts_and_renders() {
        let book = UsageBook::default();
        let a = book.team("alpha");
        a.admitted();
        a.admitted();
        a.charged(10, 5);
        a.rejected(LimitKind::Tokens);
        book.team("be\"ta").rejected(LimitKind::Concurrency);
        assert!(Arc::ptr_eq(&a, &book.team("alpha")));
        let s = a.snapshot();
        assert_eq!(
            (s.requests, s.prompt_tokens, s.completion_tokens),
            (2, 10, 5)
        );
        assert_eq!(s.rejected, [0, 1, 0]);
        assert_eq!(s.to_json()["total_tokens"], 15);
        assert_eq!(s.to_json()["rejected"]["tokens"], 1);
        let text = render(&book);
        for line in [
            "# TYPE sluice_team_requests counter",
            "sluice_team_requests_total{team=\"alpha\"} 2",
            "sluice_team_prompt_tokens_total{team=\"alpha\"} 10",
            "sluice_team_completion_tokens_total{team=\"alpha\"} 5",
            "sluice_team_rejected_total{team=\"alpha\",type=\"tokens\"} 1",
            "sluice_team_rejected_total{team=\"alpha\",type=\"requests\"} 0",
            "sluice_team_rejected_total{team=\"be\\\"ta\",type=\"concurrency\"} 1",
            "sluice_team_open_streams{team=\"alpha\"} 0",
            "# TYPE sluice_team_open_streams gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(text.matches("# TYPE sluice_team_rejected").count(), 1);
        assert_eq!(render(&UsageBook::default()), "# EOF\n");
    }
}
