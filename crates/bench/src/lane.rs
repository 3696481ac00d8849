//! The stream lane's rules, kept pure so they can be tested: Busbar's "On the Bench" stream
//! lane (a role chunk, 64 content deltas 20 ms apart, finish, `[DONE]`), where a step of
//! concurrency *holds* when every frame arrives, no stream has a gap over 200 ms and fewer
//! than 0.1 % of streams fail.

use std::time::Duration;

use serde::Serialize;

use crate::stats::micros;

/// Content deltas per stream.
pub const FRAMES: u32 = 64;
/// Between two content deltas.
pub const FRAME_DELAY_MS: u32 = 20;
/// A stream with a gap longer than this between two content reads has stalled.
pub const STALL: Duration = Duration::from_millis(200);
/// A step holds only while failed streams stay below this share (0.1 %).
pub const MAX_FAILED_SHARE: f64 = 0.001;
/// The default concurrency sweep.
pub const DEFAULT_STEPS: [usize; 6] = [64, 128, 256, 512, 1024, 2048];

/// How many streams (given their longest gaps, µs) had a gap over `limit`.
pub fn stalled(max_gaps_us: &[u32], limit: Duration) -> u64 {
    let limit = micros(limit);
    max_gaps_us.iter().filter(|&&g| g > limit).count() as u64
}

/// What one target did at one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepCounts {
    /// Streams that ended well (`[DONE]` and every content frame).
    pub ok: u64,
    /// Streams that failed (status, transport, timeout, truncated).
    pub failed: u64,
    /// Content frames the successful streams received.
    pub frames: u64,
    /// Successful streams with a gap over [`STALL`].
    pub stalled: u64,
}

/// Whether a step held, and if not, every reason why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub holds: bool,
    pub reasons: Vec<String>,
}

/// The hold rule: streams ran, every successful stream got all `frames_per_stream` content
/// frames, none stalled, and failures stayed under 0.1 % of the streams started.
pub fn verdict(c: &StepCounts, frames_per_stream: u32) -> Verdict {
    let mut reasons = Vec::new();
    let started = c.ok + c.failed;
    if c.ok == 0 {
        reasons.push("no stream succeeded".to_owned());
    }
    let expected = c.ok * u64::from(frames_per_stream);
    if c.frames < expected {
        reasons.push(format!(
            "{} of {expected} frames missing",
            expected - c.frames
        ));
    }
    if c.stalled > 0 {
        reasons.push(format!(
            "{} stream(s) with a gap over {} ms",
            c.stalled,
            STALL.as_millis()
        ));
    }
    if started > 0 && c.failed as f64 / started as f64 >= MAX_FAILED_SHARE {
        reasons.push(format!(
            "{} of {started} streams failed ({:.2} %)",
            c.failed,
            100.0 * c.failed as f64 / started as f64
        ));
    }
    Verdict {
        holds: reasons.is_empty(),
        reasons,
    }
}

/// The sustained concurrency: the highest step such that it and every lower step held
/// (steps in any order; 0 when the lowest did not hold).
pub fn sustained(steps: &[(usize, bool)]) -> usize {
    let mut sorted = steps.to_vec();
    sorted.sort_by_key(|&(c, _)| c);
    sorted
        .iter()
        .take_while(|&&(_, holds)| holds)
        .last()
        .map_or(0, |&(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_over_200_ms_is_a_stall_and_200_ms_is_not() {
        assert_eq!(stalled(&[], STALL), 0);
        assert_eq!(stalled(&[200_000, 199_999, 0], STALL), 0);
        assert_eq!(stalled(&[200_001, 5_000_000, 20_000], STALL), 2);
    }

    fn counts(ok: u64, failed: u64, stalled: u64) -> StepCounts {
        StepCounts {
            ok,
            failed,
            frames: ok * u64::from(FRAMES),
            stalled,
        }
    }

    #[test]
    fn a_clean_step_holds() {
        let v = verdict(&counts(5000, 0, 0), FRAMES);
        assert!(v.holds, "{v:?}");
        assert!(v.reasons.is_empty());
    }

    #[test]
    fn failures_under_a_thousandth_are_tolerated() {
        // 4 of 5000 = 0.08 %: holds; 5 of 5000 = 0.1 %: does not.
        assert!(verdict(&counts(4996, 4, 0), FRAMES).holds);
        let v = verdict(&counts(4995, 5, 0), FRAMES);
        assert!(!v.holds);
        assert!(v.reasons[0].contains("5 of 5000 streams failed"), "{v:?}");
    }

    #[test]
    fn one_stall_or_one_missing_frame_breaks_the_step() {
        assert!(!verdict(&counts(5000, 0, 1), FRAMES).holds);
        let mut c = counts(10, 0, 0);
        c.frames -= 1;
        let v = verdict(&c, FRAMES);
        assert_eq!(v.reasons, vec!["1 of 640 frames missing".to_owned()]);
        assert!(!verdict(&StepCounts::default(), FRAMES).holds);
    }

    #[test]
    fn sustained_is_the_top_of_the_unbroken_run_from_below() {
        assert_eq!(sustained(&[]), 0);
        assert_eq!(sustained(&[(64, false), (128, true)]), 0);
        assert_eq!(sustained(&[(512, false), (64, true), (256, true)]), 256);
        // A step that holds above a broken one does not count.
        assert_eq!(sustained(&[(64, true), (128, false), (256, true)]), 64);
        assert_eq!(sustained(&[(64, true), (2048, true)]), 2048);
    }
}
