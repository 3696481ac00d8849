//! Reading a gateway's `GET /metrics` (Prometheus text exposition format) into a name -> value
//! map, without knowing in advance which metrics exist: a gauge added later (or missing from an
//! older build) is simply present or absent.

use std::collections::BTreeMap;

/// Metrics by name; a sample with labels is keyed by its full `name{labels}` text.
pub type Metrics = BTreeMap<String, f64>;

/// Parses the text format: `# ...` lines are skipped, and each sample line is
/// `name[{labels}] value [timestamp]`. Lines that do not parse are ignored.
pub fn parse(text: &str) -> Metrics {
    let mut out = Metrics::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Label values may hold spaces; the name part ends at the closing brace.
        let (name, rest) = match line.find('{') {
            Some(open) => match line[open..].rfind('}') {
                Some(close) => line.split_at(open + close + 1),
                None => continue,
            },
            None => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, r),
                None => continue,
            },
        };
        let Some(value) = rest.split_ascii_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.insert(name.to_owned(), value);
    }
    out
}

/// The names the benchmark reports, in the order it prints them.
pub const RELAY_METRICS: [&str; 6] = [
    "sluice_relay_bytes",
    "sluice_relay_finished_streams",
    "sluice_relay_live_streams",
    "sluice_relay_evicted_streams_total",
    "sluice_relay_refused_streams_total",
    "sluice_relay_oldest_retained_seconds",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_gauges_labels_and_skips_comments() {
        let text = "# HELP sluice_relay_bytes Bytes held by replay logs.\n\
                    # TYPE sluice_relay_bytes gauge\n\
                    sluice_relay_bytes 123456\n\
                    sluice_relay_finished_streams 200\n\
                    sluice_http_requests_total{route=\"/v1/chat completions\",code=\"200\"} 7 1700000000\n\
                    weird_line_without_value\n\
                    bad_value abc\n\
                    up +Inf\n\
                    \n\
                    float_gauge 1.5e3\n";
        let m = parse(text);
        assert_eq!(m["sluice_relay_bytes"], 123_456.0);
        assert_eq!(m["sluice_relay_finished_streams"], 200.0);
        assert_eq!(
            m["sluice_http_requests_total{route=\"/v1/chat completions\",code=\"200\"}"],
            7.0
        );
        assert_eq!(m["float_gauge"], 1500.0);
        assert!(m["up"].is_infinite());
        assert!(!m.contains_key("bad_value"));
        assert!(!m.contains_key("sluice_relay_oldest_retained_seconds"));
        assert_eq!(m.len(), 5);
    }
}
