//! Per-team usage counters: requests admitted, prompt and completion tokens charged, and
//! rejections by limit. Plain atomics, one set per team name, kept across config reloads
//! (counters never go back); shown in `/metrics` and at `GET /v1/usage`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

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

#[derive(Debug, Default)]
pub struct TeamUsage {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    rejected: [AtomicU64; 3],
}

impl TeamUsage {
    pub fn admitted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, kind: LimitKind) {
        self.rejected[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn charged(&self, prompt: u64, completion: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> UsageSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UsageSnapshot {
            requests: g(&self.requests),
            prompt_tokens: g(&self.prompt_tokens),
            completion_tokens: g(&self.completion_tokens),
            rejected: [
                g(&self.rejected[0]),
                g(&self.rejected[1]),
                g(&self.rejected[2]),
            ],
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
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "rejected": {
                "requests": self.rejected[0],
                "tokens": self.rejected[1],
                "concurrency": self.rejected[2],
            },
        })
    }
}

/// Every team's counters, by name.
#[derive(Debug, Default)]
pub struct UsageBook {
    teams: RwLock<BTreeMap<String, Arc<TeamUsage>>>,
}

impl UsageBook {
    /// The counters of `team`, created at zero on first use.
    pub fn team(&self, team: &str) -> Arc<TeamUsage> {
        if let Some(u) = self
            .teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(team)
        {
            return u.clone();
        }
        self.teams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(team.to_owned())
            .or_default()
            .clone()
    }

    /// Prometheus text for every team's counters; `open_streams` gives each team's gauge.
    pub fn render(&self, open_streams: impl Fn(&str) -> u64) -> String {
        let teams: Vec<(String, UsageSnapshot)> = self
            .teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (escape_label(k), v.snapshot()))
            .collect();
        let mut out = String::new();
        if teams.is_empty() {
            return out;
        }
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        };
        let per_team = |f: &dyn Fn(&UsageSnapshot) -> u64| -> Vec<(String, u64)> {
            teams
                .iter()
                .map(|(t, s)| (format!("team=\"{t}\""), f(s)))
                .collect()
        };
        family(
            "sluice_team_requests_total",
            "counter",
            "Chat requests admitted, by team.",
            per_team(&|s| s.requests),
        );
        family(
            "sluice_team_prompt_tokens_total",
            "counter",
            "Prompt tokens charged to the team.",
            per_team(&|s| s.prompt_tokens),
        );
        family(
            "sluice_team_completion_tokens_total",
            "counter",
            "Completion tokens charged to the team.",
            per_team(&|s| s.completion_tokens),
        );
        let mut rejected = Vec::new();
        for (t, s) in &teams {
            for kind in LimitKind::ALL {
                rejected.push((
                    format!("team=\"{t}\",type=\"{}\"", kind.as_str()),
                    s.rejected[kind as usize],
                ));
            }
        }
        family(
            "sluice_team_rejected_total",
            "counter",
            "Requests refused with 429, by team and limit type.",
            rejected,
        );
        let names: Vec<String> = self
            .teams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        family(
            "sluice_team_open_streams",
            "gauge",
            "Generations in flight holding one of the team's concurrency slots.",
            names
                .iter()
                .map(|n| (format!("team=\"{}\"", escape_label(n)), open_streams(n)))
                .collect(),
        );
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = book.render(|t| if t == "alpha" { 3 } else { 0 });
        for line in [
            "# TYPE sluice_team_requests_total counter",
            "sluice_team_requests_total{team=\"alpha\"} 2",
            "sluice_team_prompt_tokens_total{team=\"alpha\"} 10",
            "sluice_team_completion_tokens_total{team=\"alpha\"} 5",
            "sluice_team_rejected_total{team=\"alpha\",type=\"tokens\"} 1",
            "sluice_team_rejected_total{team=\"be\\\"ta\",type=\"concurrency\"} 1",
            "sluice_team_open_streams{team=\"alpha\"} 3",
            "# TYPE sluice_team_open_streams gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(text.matches("# TYPE sluice_team_rejected_total").count(), 1);
        assert_eq!(UsageBook::default().render(|_| 0), "");
    }

    #[test]
    fn escapes_labels() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
