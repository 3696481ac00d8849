//! The `x-ratelimit-*` headers, written as OpenAI writes them: counts, and resets as Go-style
//! durations to a full reset (`1s`, `6m0s`, `12ms`, `1m30s`, `8.64s`). They are information, not
//! retry hints: `Retry-After` is the retry hint (see `crate::error`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::limits::LimitStatus;

pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
pub const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
pub const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
pub const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
pub const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";

/// The six header names, requests first.
pub const ALL: [&str; 6] = [
    LIMIT_REQUESTS,
    REMAINING_REQUESTS,
    RESET_REQUESTS,
    LIMIT_TOKENS,
    REMAINING_TOKENS,
    RESET_TOKENS,
];

/// A duration as OpenAI (Go's `time.Duration.String`) writes it, to the millisecond, rounded
/// up so that a reset still to come is never written as `0s`: `0s`, `12ms`, `1s`, `1.5s`,
/// `1m30s`, `6m0s`, `1h0m0s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        let f = format!("{frac:03}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// The six headers for a team's request and token limits.
pub fn rate_limit_headers(requests: LimitStatus, tokens: LimitStatus) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(6);
    for (names, st) in [(&ALL[..3], requests), (&ALL[3..], tokens)] {
        let values = [
            HeaderValue::from(st.limit),
            HeaderValue::from(st.remaining),
            HeaderValue::from_str(&format_duration(st.reset))
                .unwrap_or(HeaderValue::from_static("0s")),
        ];
        for (name, v) in names.iter().zip(values) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_openai_writes_them() {
        let ms = Duration::from_millis;
        let cases = [
            (Duration::ZERO, "0s"),
            (ms(12), "12ms"),
            (ms(999), "999ms"),
            (ms(1000), "1s"),
            (ms(1500), "1.5s"),
            (ms(8640), "8.64s"),
            (ms(17_283), "17.283s"),
            (ms(59_999), "59.999s"),
            (ms(60_000), "1m0s"),
            (ms(90_000), "1m30s"),
            (ms(360_000), "6m0s"),
            (ms(361_250), "6m1.25s"),
            (ms(3_600_000), "1h0m0s"),
            (ms(3_723_000), "1h2m3s"),
            (Duration::from_nanos(1), "1ms"),
            (Duration::from_micros(1_000_001), "1.001s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
        // The longest duration there is: written, not a panic.
        assert_eq!(format_duration(Duration::MAX), "5124095576030431h0m16s");
    }

    #[test]
    fn six_headers() {
        let st = |limit, remaining, reset| LimitStatus {
            limit,
            remaining,
            reset: Duration::from_millis(reset),
        };
        let h = rate_limit_headers(st(60, 9, 1000), st(200_000, 199_000, 360_000));
        assert_eq!(h.len(), 6);
        assert_eq!(h[LIMIT_REQUESTS], "60");
        assert_eq!(h[REMAINING_REQUESTS], "9");
        assert_eq!(h[RESET_REQUESTS], "1s");
        assert_eq!(h[LIMIT_TOKENS], "200000");
        assert_eq!(h[REMAINING_TOKENS], "199000");
        assert_eq!(h[RESET_TOKENS], "6m0s");
    }
}
