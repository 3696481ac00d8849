//! Which of a route's targets go first: round robin, and cooldowns after retryable failures.
//! The clock is a parameter (`now`), so that both are tested without waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Round robin over a route's targets: each request starts one target further along.
#[derive(Debug, Default)]
pub(super) struct RoundRobin {
    /// Where the next request starts (taken modulo the number of targets).
    next: AtomicUsize,
}

impl RoundRobin {
    /// The order for the next request over `n` targets: all of them, starting one further
    /// than the previous request did and wrapping around.
    pub(super) fn next_order(&self, n: usize) -> Vec<usize> {
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n).map(|k| (start + k) % n).collect()
    }
}

/// Per target of a route: until when it is skipped after a retryable failure.
#[derive(Debug)]
pub(super) struct Cooldowns {
    period: Duration,
    until: Mutex<Vec<Option<Instant>>>,
}

impl Cooldowns {
    /// `n` targets, none cooling down; a failure skips a target for `period` (zero: never).
    pub(super) fn new(n: usize, period: Duration) -> Self {
        Self {
            period,
            until: Mutex::new(vec![None; n]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        // A panic elsewhere while holding the lock leaves plain instants: still usable.
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Target `i` failed retryably at `now`: it is skipped until `now` plus the period.
    pub(super) fn failed(&self, i: usize, now: Instant) {
        if self.period.is_zero() {
            return;
        }
        if let Some(slot) = self.lock().get_mut(i) {
            // `cooldown_secs` is the operator's number and has no upper bound: a period past
            // what an `Instant` can hold cools the target down for as long as one can.
            *slot = Some(
                now.checked_add(self.period)
                    .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX))),
            );
        }
    }

    /// Target `i` answered: it is no longer cooling down.
    pub(super) fn served(&self, i: usize) {
        if let Some(slot) = self.lock().get_mut(i) {
            *slot = None;
        }
    }

    /// `order` without the targets cooling down at `now`. When every one of them is, all are
    /// kept (a request is never refused for cooldowns alone), the one whose cooldown ends
    /// first leading; ties keep `order`.
    pub(super) fn arrange(&self, order: Vec<usize>, now: Instant) -> Vec<usize> {
        let until = self.lock().clone();
        let cooling = |i: usize| until.get(i).copied().flatten().filter(|t| *t > now);
        let ready: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| cooling(i).is_none())
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        let mut all = order;
        // Stable: targets whose cooldowns end together keep the strategy's order.
        all.sort_by_key(|&i| cooling(i));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn round_robin_starts_one_further_each_time_and_wraps() {
        let rr = RoundRobin::default();
        assert_eq!(rr.next_order(3), [0, 1, 2]);
        assert_eq!(rr.next_order(3), [1, 2, 0]);
        assert_eq!(rr.next_order(3), [2, 0, 1]);
        assert_eq!(rr.next_order(3), [0, 1, 2]);
        assert_eq!(RoundRobin::default().next_order(1), [0]);
        assert!(RoundRobin::default().next_order(0).is_empty());
    }

    #[test]
    fn a_failed_target_is_skipped_until_its_cooldown_expires() {
        let t0 = Instant::now();
        let c = Cooldowns::new(3, 10 * S);
        c.failed(0, t0);
        assert_eq!(c.arrange(vec![0, 1, 2], t0), [1, 2]);
        assert_eq!(c.arrange(vec![0, 1, 2], t0 + 9 * S), [1, 2]);
        // The cooldown ends at t0 + 10 s exactly: from then on it is tried again.
        assert_eq!(c.arrange(vec![0, 1, 2], t0 + 10 * S), [0, 1, 2]);
        assert_eq!(c.arrange(vec![2, 0, 1], t0 + 11 * S), [2, 0, 1]);
    }

    #[test]
    fn an_answer_restores_a_cooled_down_target_at_once() {
        let t0 = Instant::now();
        let c = Cooldowns::new(2, 10 * S);
        c.failed(1, t0);
        assert_eq!(c.arrange(vec![0, 1], t0 + S), [0]);
        c.served(1);
        assert_eq!(c.arrange(vec![0, 1], t0 + S), [0, 1]);
    }

    #[test]
    fn when_all_are_cooling_down_all_are_tried_soonest_ready_first() {
        let t0 = Instant::now();
        let c = Cooldowns::new(3, 10 * S);
        c.failed(0, t0 + 2 * S);
        c.failed(1, t0);
        c.failed(2, t0 + S);
        assert_eq!(c.arrange(vec![0, 1, 2], t0 + 3 * S), [1, 2, 0]);
        // Equal ends keep the strategy's order.
        let c = Cooldowns::new(2, 10 * S);
        c.failed(0, t0);
        c.failed(1, t0);
        assert_eq!(c.arrange(vec![1, 0], t0), [1, 0]);
    }

    #[test]
    fn a_zero_cooldown_never_skips() {
        let t0 = Instant::now();
        let c = Cooldowns::new(2, Duration::ZERO);
        c.failed(0, t0);
        assert_eq!(c.arrange(vec![0, 1], t0), [0, 1]);
    }

    #[test]
    fn a_cooldown_too_long_for_the_clock_does_not_panic() {
        let t0 = Instant::now();
        let c = Cooldowns::new(2, Duration::MAX);
        c.failed(0, t0);
        assert_eq!(c.arrange(vec![0, 1], t0 + 1000 * S), [1]);
    }
}
