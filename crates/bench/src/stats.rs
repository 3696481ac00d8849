//! Percentiles over recorded latencies.
//!
//! Samples are whole microseconds in a `u32` (up to 71 minutes): compact enough to keep every
//! sample of a run (a few million gaps are a few MB) and sort it afterwards, so the figures are
//! exact order statistics rather than histogram estimates. A gateway's added latency is often
//! a fraction of a millisecond; a bucketed histogram's rounding would be of the same size.

use std::time::Duration;

use serde::Serialize;

/// A duration as whole microseconds, saturating.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted samples: the smallest value with
/// at least p % of the samples at or below it.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90, p99 and max of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Sorts `samples` (microseconds) in place and summarises them.
    pub fn of(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let ms = |p: f64| percentile(samples, p).map_or(0.0, |us| f64::from(us) / 1000.0);
        Self {
            n: samples.len(),
            p50: ms(50.0),
            p90: ms(90.0),
            p99: ms(99.0),
            max: ms(100.0),
        }
    }
}

/// `a / b`, or NaN when `b` is zero (printed as `-`).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.1), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // 10 samples: p90 is the 9th, p99 the 10th.
        let v: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&v, 90.0), Some(9));
        assert_eq!(percentile(&v, 99.0), Some(10));
    }

    #[test]
    fn summary_sorts_and_converts_to_ms() {
        let mut v = vec![3000, 1000, 2000, 4000];
        let s = Summary::of(&mut v);
        assert_eq!(s.n, 4);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.max, 4.0);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn micros_saturates() {
        assert_eq!(micros(Duration::from_millis(2)), 2000);
        assert_eq!(micros(Duration::from_secs(1 << 40)), u32::MAX);
        assert!(ratio(1.0, 0.0).is_nan());
    }
}
