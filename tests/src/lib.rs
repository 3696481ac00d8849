//! Shared harness for the end-to-end tests: starts a gateway ([`Gateway::builder`], in this
//! process by default, the `sluice` binary on request), reads its metrics ([`metric`],
//! [`sample`]) and logs ([`Sluice::logs`]).
//!
//! - [`config`]: temp config files removed on drop ([`config::ConfigFile`]).
//! - [`e2e`]: requests, streaming bodies and the checks every OpenAI-format stream must pass.
//! - [`gateway`]: starting and stopping a gateway ([`Gateway`], [`Sluice`]).
//! - [`redis`]: a private `redis-server` per test, or skipping.
//! - [`scripted`]: raw-bytes upstreams that play a fixed script.
//! - [`sdk`]: running the SDK, EventSource and browser scripts of `tests/sdk/`, or skipping.
//! - [`sse`]: the one SSE parser.
//! - [`streams`]: resumable streams: create, open, read, and the events of a body.
//! - [`teams`]: API keys, `[[teams]]` entries and the requests and checks of team tests.
//! - [`wait`]: polling with a deadline.

pub mod config;
pub mod e2e;
pub mod gateway;
pub mod redis;
pub mod scripted;
pub mod sdk;
pub mod sse;
pub mod streams;
pub mod teams;
pub mod wait;

pub use config::ConfigFile;
pub use gateway::{Builder, Gateway, Sluice};
pub use sse::parse_sse;

/// The value of the sample `series` (a name, with its `{labels}` if it has any) in Prometheus
/// text `metrics`; panics if there is none.
pub fn metric(metrics: &str, series: &str) -> u64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

/// The value of the sample `series` in Prometheus text `metrics`, if there is one.
pub fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One sample line of the text format: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample in Prometheus or OpenMetrics text (`#` lines skipped; label values unescaped).
pub fn samples(metrics: &str) -> Vec<Sample> {
    metrics.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        // label="value" pairs, values escaped with \\, \" and \n.
        let mut chars = inner.char_indices().peekable();
        loop {
            match chars.peek() {
                Some((i, '}')) => {
                    rest = &inner[i + 1..];
                    break;
                }
                Some((_, ',')) => {
                    chars.next();
                    continue;
                }
                None => return None,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let value = match rest.split_ascii_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples named `name` whose labels include every pair of `labels` (0 when none
/// does: a labelled series appears only once something was counted in it). For a histogram,
/// `name` is e.g. `..._seconds_count`.
pub fn metric_with(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    samples(metrics)
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum::<f64>() as u64
}

/// The observation count of histogram `name` (without `_count`), summed over the series that
/// match `labels`.
pub fn histogram_count(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metric_with(metrics, &format!("{name}_count"), labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_samples_and_sums_matches() {
        let text = "# TYPE sluice_http_requests counter\n\
                    sluice_http_requests_total{route=\"/v1/chat/completions\",status=\"200\",team=\"a\"} 3\n\
                    sluice_http_requests_total{route=\"/v1/chat/completions\",status=\"429\",team=\"a\"} 2\n\
                    sluice_http_requests_total{route=\"/v1/models\",status=\"200\",team=\"b,\\\"x\\\"}\"} 1\n\
                    sluice_ttft_seconds_count{model=\"m\"} 7\n\
                    sluice_ttft_seconds_sum{model=\"m\"} 0.25\n\
                    sluice_relay_bytes 12\n\
                    # EOF\n";
        let route = ("route", "/v1/chat/completions");
        assert_eq!(metric_with(text, "sluice_http_requests_total", &[route]), 5);
        assert_eq!(
            metric_with(
                text,
                "sluice_http_requests_total",
                &[route, ("status", "429")]
            ),
            2
        );
        assert_eq!(
            metric_with(text, "sluice_http_requests_total", &[("team", "b,\"x\"}")]),
            1
        );
        assert_eq!(
            metric_with(text, "sluice_http_requests_total", &[("team", "c")]),
            0
        );
        assert_eq!(
            histogram_count(text, "sluice_ttft_seconds", &[("model", "m")]),
            7
        );
        assert_eq!(metric_with(text, "sluice_relay_bytes", &[]), 12);
        assert_eq!(metric(text, "sluice_relay_bytes"), 12);
    }
}
