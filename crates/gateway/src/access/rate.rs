//! The limit arithmetic, as pure functions over plain numbers, so that a store kept elsewhere
//! (a Redis script) can mirror it line for line. Times are nanoseconds since an origin the
//! store chooses (`u64`: 584 years); every function is total: no panic, no overflow, whatever
//! the quota, the estimate or the clock say.
//!
//! - [`Gcra`]: the request limit. Its state is one number, the theoretical arrival time (TAT):
//!   `TAT - now` is the part of the burst in use, in time; each request adds one interval.
//! - [`TokenBucket`]: the token budget. Its state is a [`Level`] (tokens held, and when) that
//!   refills continuously, never above the capacity and never below the floor (minus the
//!   capacity: at most one window of debt).
//!
//! Both carry their state over to a new quota ([`Gcra::carry`], [`TokenBucket::carry`]), keeping
//! what was used, so that a config reload neither refills a limit nor forgets a debt.

use std::time::Duration;

/// Nanoseconds in `d`, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// GCRA over `burst` requests at once and one request per `interval` at the steady pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds between two requests at the steady pace; at least 1.
    pub interval: u64,
    /// Requests allowed at once; at least 1.
    pub burst: u32,
}

impl Gcra {
    /// `per_window` requests per `window`, `burst` at once.
    pub fn new(per_window: u32, burst: u32, window: Duration) -> Self {
        let interval = window.as_nanos() / u128::from(per_window.max(1));
        Self {
            interval: u64::try_from(interval).unwrap_or(u64::MAX).max(1),
            burst: burst.max(1),
        }
    }

    /// The time the whole burst stands for: `burst × interval`.
    fn span(&self) -> u64 {
        self.interval.saturating_mul(u64::from(self.burst))
    }

    /// One request at `now`: the new TAT, or the nanoseconds until it would be allowed.
    pub fn take(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let new_tat = tat.max(now).saturating_add(self.interval);
        let used = new_tat - now;
        match used.checked_sub(self.span()) {
            Some(over) if over > 0 => Err(over),
            _ => Ok(new_tat),
        }
    }

    /// Requests that may be sent at once at `now`, and the nanoseconds until the whole burst
    /// is back.
    pub fn status(&self, tat: u64, now: u64) -> (u32, u64) {
        let used = tat.saturating_sub(now).min(self.span());
        let free = self.span() - used;
        let remaining = (free / self.interval).min(u64::from(self.burst));
        (u32::try_from(remaining).unwrap_or(self.burst), used)
    }

    /// The TAT under this quota that keeps the requests in use under `old` (fractions
    /// included), at most this burst.
    pub fn carry(&self, old: &Gcra, tat: u64, now: u64) -> u64 {
        let used = u128::from(tat.saturating_sub(now).min(old.span()));
        let in_new_time = used * u128::from(self.interval) / u128::from(old.interval.max(1));
        now.saturating_add(
            u64::try_from(in_new_time)
                .unwrap_or(u64::MAX)
                .min(self.span()),
        )
    }
}

/// Tokens a stream takes from its team's budget each time it has used all it took (see
/// [`TokenBucket::take_up_to`]): a sixteenth of the budget, within 32 and 4096, so the store is
/// asked a few times a window per stream, never per token, and a stream refused more has
/// overrun the budget by at most what it generated since its last take.
pub fn stream_chunk(capacity: u64) -> u64 {
    (capacity / 16).clamp(32, 4096)
}

/// A token budget's state: tokens held (negative: a debt) at time `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub tokens: f64,
    pub at: u64,
}

/// A budget of `capacity` tokens that refills continuously at `capacity` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub capacity: u64,
    /// Nanoseconds; at least 1.
    pub window: u64,
}

/// Slack for float rounding (see [`TokenBucket::slack`]): a client that waited the full
/// `Retry-After` must not be refused by a rounding error.
const SLACK: f64 = 1e-6;

impl TokenBucket {
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self {
            capacity,
            window: nanos(window).max(1),
        }
    }

    /// A full budget at `now`.
    pub fn full(&self, now: u64) -> Level {
        Level {
            tokens: self.capacity as f64,
            at: now,
        }
    }

    /// The lowest level: a debt of at most one window's tokens, so a generation that used far
    /// more than its reservation delays its team by at most two windows.
    pub fn floor(&self) -> f64 {
        -(self.capacity as f64)
    }

    /// `tokens` held within [floor, capacity] (NaN, which the arithmetic never makes, as 0).
    fn bounded(&self, tokens: f64) -> f64 {
        if tokens.is_nan() {
            return 0.0;
        }
        tokens.max(self.floor()).min(self.capacity as f64)
    }

    /// Rounding slack: a millionth of a token, or a trillionth of the capacity where a token
    /// is below what an f64 of that size can tell apart.
    fn slack(&self) -> f64 {
        SLACK.max(self.capacity as f64 * 1e-12)
    }

    /// Nanoseconds until `tokens` more have come in, rounded up. (Multiplying first keeps
    /// whole numbers exact: 500 tokens of 600 per 6 s are exactly 5 s.)
    fn nanos_for(&self, tokens: f64) -> u64 {
        let ns = (tokens * self.window as f64 / self.capacity as f64).ceil();
        if ns.is_nan() || ns <= 0.0 {
            0
        } else if ns >= u64::MAX as f64 {
            u64::MAX
        } else {
            ns as u64
        }
    }

    /// The level at `now` (a `now` before `at` is taken as `at`).
    pub fn refill(&self, s: Level, now: u64) -> Level {
        let dt = now.saturating_sub(s.at) as f64;
        Level {
            tokens: self.bounded(s.tokens + dt * self.capacity as f64 / self.window as f64),
            at: s.at.max(now),
        }
    }

    /// Reserves `estimate` tokens, bounded by the capacity (a request estimated above the
    /// whole budget is admitted when the budget is full, and takes all of it): the new level
    /// and the tokens taken, or the nanoseconds until they are there.
    pub fn reserve(&self, s: Level, estimate: u64, now: u64) -> Result<(Level, u64), u64> {
        let s = self.refill(s, now);
        let take = estimate.min(self.capacity);
        if s.tokens + self.slack() >= take as f64 {
            let tokens = self.bounded(s.tokens - take as f64);
            Ok((Level { tokens, ..s }, take))
        } else {
            Err(self.nanos_for(take as f64 - s.tokens))
        }
    }

    /// Takes up to `want` more tokens for a generation that outgrew its reservation: what the
    /// budget holds now, never below zero (a running stream may use what is there, not run up
    /// a debt), as the new level and the tokens granted (0: nothing left).
    pub fn take_up_to(&self, s: Level, want: u64, now: u64) -> (Level, u64) {
        let s = self.refill(s, now);
        let held = (s.tokens + self.slack()).floor();
        let granted = if held.is_nan() || held <= 0.0 {
            0
        } else {
            want.min(held as u64)
        };
        let tokens = self.bounded(s.tokens - granted as f64);
        (Level { tokens, ..s }, granted)
    }

    /// Settles a reservation of `reserved` tokens that really used `used`: the difference
    /// comes back or is taken too, in one signed step.
    pub fn settle(&self, s: Level, reserved: u64, used: u64, now: u64) -> Level {
        let s = self.refill(s, now);
        let back = i128::from(reserved) - i128::from(used);
        Level {
            tokens: self.bounded(s.tokens + back as f64),
            ..s
        }
    }

    /// Tokens that may be reserved now, and the nanoseconds until the budget is full.
    pub fn status(&self, s: Level, now: u64) -> (u64, u64) {
        let s = self.refill(s, now);
        let remaining = s.tokens.max(0.0).floor() as u64;
        (remaining, self.nanos_for(self.capacity as f64 - s.tokens))
    }

    /// The level under this quota that keeps the tokens used under `old`: `capacity − used`,
    /// within this budget's [floor, capacity].
    pub fn carry(&self, old: &TokenBucket, s: Level, now: u64) -> Level {
        let s = old.refill(s, now);
        let used = old.capacity as f64 - s.tokens;
        Level {
            tokens: self.bounded(self.capacity as f64 - used),
            at: s.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn gcra_burst_then_pace() {
        // 60 a minute, 10 at once: one a second.
        let g = Gcra::new(60, 10, Duration::from_secs(60));
        assert_eq!(g.interval, S);
        let mut tat = 0;
        let now = 100 * S;
        assert_eq!(g.status(tat, now), (10, 0));
        for left in (0..10).rev() {
            tat = g.take(tat, now).expect("within the burst");
            assert_eq!(g.status(tat, now).0, left);
        }
        assert_eq!(g.take(tat, now), Err(S));
        assert_eq!(g.status(tat, now), (0, 10 * S));
        // Half a second later: still refused, half a second to wait; a second later: one.
        assert_eq!(g.take(tat, now + S / 2), Err(S / 2));
        let tat2 = g.take(tat, now + S).expect("one came back");
        assert_eq!(g.status(tat2, now + S), (0, 10 * S));
        assert_eq!(g.status(tat, now + 10 * S), (10, 0));
    }

    #[test]
    fn gcra_carry_keeps_what_was_used() {
        let w = Duration::from_secs(60);
        let (b2, b3) = (Gcra::new(6, 2, w), Gcra::new(6, 3, w));
        let now = 5 * S;
        let tat = b2.take(b2.take(0, now).unwrap(), now).unwrap();
        assert_eq!(b2.status(tat, now).0, 0);
        // A bigger burst adds its difference, a smaller one takes the surplus away.
        let tat = b3.carry(&b2, tat, now);
        assert_eq!(b3.status(tat, now).0, 1);
        let tat = b3.take(tat, now).unwrap();
        let tat = b2.carry(&b3, tat, now);
        assert_eq!(b2.status(tat, now), (0, 20 * S));
        // A faster pace: the same requests in use, each worth a shorter time.
        let fast = Gcra::new(60, 3, w);
        let tat = fast.carry(&b2, tat, now);
        assert_eq!(fast.status(tat, now), (1, 2 * S));
    }

    #[test]
    fn stream_chunk_is_a_sixteenth_within_bounds() {
        assert_eq!(stream_chunk(0), 32);
        assert_eq!(stream_chunk(100), 32);
        assert_eq!(stream_chunk(10_000), 625);
        assert_eq!(stream_chunk(1 << 20), 4096);
        assert_eq!(stream_chunk(u64::MAX), 4096);
    }

    #[test]
    fn take_up_to_grants_what_is_there_and_never_makes_a_debt() {
        // 600 tokens per 6 s: 100 a second.
        let b = TokenBucket::new(600, Duration::from_secs(6));
        let t0 = 7 * S;
        let s = b.full(t0);
        let (s, got) = b.take_up_to(s, 250, t0);
        assert_eq!(got, 250);
        assert_eq!(b.status(s, t0).0, 350);
        // More than is left: what is left, down to zero, not below.
        let (s, got) = b.take_up_to(s, 1000, t0);
        assert_eq!(got, 350);
        assert_eq!(b.status(s, t0).0, 0);
        let (s, got) = b.take_up_to(s, 10, t0);
        assert_eq!(got, 0);
        // Half a second refills 50.
        let (s, got) = b.take_up_to(s, 80, t0 + S / 2);
        assert_eq!(got, 50);
        // In debt (a settlement took more than reserved): nothing.
        let s = b.settle(s, 0, 300, t0 + S / 2);
        assert_eq!(b.take_up_to(s, 10, t0 + S), (b.refill(s, t0 + S), 0));
        // Nothing asked, nothing taken; a zero budget never grants.
        assert_eq!(b.take_up_to(b.full(t0), 0, t0).1, 0);
        let z = TokenBucket::new(0, Duration::from_secs(6));
        assert_eq!(z.take_up_to(z.full(t0), 5, t0).1, 0);
        // Rounding: a level a hair under a whole token still grants it.
        let s = Level {
            tokens: 3.0 - 1e-9,
            at: t0,
        };
        assert_eq!(b.take_up_to(s, 10, t0).1, 3);
    }

    #[test]
    fn bucket_reserve_settle_refill() {
        // 600 tokens per 6 s: 100 a second.
        let b = TokenBucket::new(600, Duration::from_secs(6));
        let t0 = 7 * S;
        let s = b.full(t0);
        assert_eq!(b.status(s, t0), (600, 0));
        let (s, took) = b.reserve(s, 500, t0).unwrap();
        assert_eq!(took, 500);
        assert_eq!(b.status(s, t0), (100, 5 * S));
        // Real usage 200: 300 come back.
        let s = b.settle(s, 500, 200, t0);
        assert_eq!(b.status(s, t0).0, 400);
        // 500 more need 100 more tokens: one second.
        assert_eq!(b.reserve(s, 500, t0), Err(S));
        assert!(b.reserve(s, 500, t0 + S - 1_000_000).is_err());
        let (s, _) = b.reserve(s, 500, t0 + S).unwrap();
        assert_eq!(b.status(s, t0 + S).0, 0);
    }

    #[test]
    fn a_reservation_is_bounded_by_the_capacity_and_a_debt_by_the_floor() {
        let b = TokenBucket::new(600, Duration::from_secs(6));
        let (s, took) = b.reserve(b.full(0), u64::MAX, 0).unwrap();
        assert_eq!(took, 600);
        assert_eq!(b.status(s, 0), (0, 6 * S));
        // Given back exactly.
        assert_eq!(b.settle(s, took, 0, 0).tokens, 600.0);
        // Used far more than reserved: a debt of one window at most.
        let s = b.settle(s, took, u64::MAX, 0);
        assert_eq!(s.tokens, -600.0);
        assert_eq!(b.status(s, 0), (0, 12 * S));
        assert_eq!(b.reserve(s, 1, 0), Err(6 * S + S / 100));
        // Refunds never fill it past its capacity.
        let s = b.settle(b.full(0), u64::MAX, 0, 0);
        assert_eq!(s.tokens, 600.0);
    }

    #[test]
    fn bucket_carry_keeps_the_used_tokens() {
        let w = Duration::from_secs(6);
        let (small, big) = (TokenBucket::new(600, w), TokenBucket::new(1000, w));
        let (s, _) = small.reserve(small.full(0), 500, 0).unwrap();
        assert_eq!(big.status(big.carry(&small, s, 0), 0).0, 500);
        let tiny = TokenBucket::new(50, w);
        let s = tiny.carry(&small, s, 0);
        assert_eq!(s.tokens, -50.0, "500 used of 50: the debt is bounded");
    }

    fn bucket() -> impl Strategy<Value = TokenBucket> {
        (
            prop_oneof![Just(1u64), Just(30), 1u64..1_000_000_000, Just(u64::MAX)],
            prop_oneof![Just(1u64), Just(60 * S), 1u64..u64::MAX, Just(u64::MAX)],
        )
            .prop_map(|(capacity, window)| TokenBucket { capacity, window })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(u64),
        Settle(u64, u64),
        Status,
        Carry(TokenBucket),
    }

    fn amount() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 1u64..10_000, Just(u64::MAX), any::<u64>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            amount().prop_map(Op::Reserve),
            (amount(), amount()).prop_map(|(r, u)| Op::Settle(r, u)),
            Just(Op::Status),
            bucket().prop_map(Op::Carry),
        ]
    }

    proptest! {
        #[test]
        fn bucket_level_stays_within_floor_and_capacity(
            start in bucket(),
            ops in proptest::collection::vec((op(), prop_oneof![Just(0u64), any::<u64>()]), 1..40),
        ) {
            let mut b = start;
            let mut s = b.full(0);
            let mut now = 0u64;
            for (op, step) in ops {
                now = now.saturating_add(step);
                match op {
                    Op::Reserve(n) => match b.reserve(s, n, now) {
                        Ok((next, took)) => {
                            prop_assert!(took <= b.capacity && took <= n);
                            s = next;
                        }
                        Err(wait) => {
                            prop_assert!(wait > 0);
                            // Waiting it out is enough.
                            prop_assert!(
                                wait == u64::MAX
                                    || now.checked_add(wait).is_none()
                                    || b.reserve(s, n, now + wait).is_ok()
                            );
                        }
                    },
                    Op::Settle(r, u) => s = b.settle(s, r, u, now),
                    Op::Status => {
                        let (remaining, _) = b.status(s, now);
                        prop_assert!(remaining <= b.capacity);
                    }
                    Op::Carry(next) => {
                        s = next.carry(&b, s, now);
                        b = next;
                    }
                }
                prop_assert!(s.tokens >= b.floor() && s.tokens <= b.capacity as f64, "{s:?} {b:?}");
            }
        }

        #[test]
        fn settling_with_no_use_gives_back_exactly_what_was_taken(
            b in bucket(),
            used_before in 0u64..1_000_000,
            estimate in amount(),
        ) {
            let (s, _) = b.reserve(b.full(0), used_before, 0).unwrap();
            if let Ok((r, took)) = b.reserve(s, estimate, 0) {
                let back = b.settle(r, took, 0, 0);
                let tolerance = (b.capacity as f64) * 1e-12 + 1e-9;
                prop_assert!((back.tokens - s.tokens).abs() <= tolerance, "{back:?} vs {s:?}");
            }
        }

        #[test]
        fn gcra_never_holds_more_than_its_burst(
            per_window in prop_oneof![Just(1u32), 1u32..100_000, Just(u32::MAX)],
            burst in prop_oneof![Just(1u32), 1u32..1000, Just(u32::MAX)],
            window in prop_oneof![Just(1u64), 1u64..u64::MAX, Just(u64::MAX)],
            steps in proptest::collection::vec(
                (prop_oneof![Just(0u64), any::<u64>()], any::<bool>(), 1u32..10, 1u32..10),
                1..40,
            ),
        ) {
            let mut g = Gcra::new(per_window, burst, Duration::from_nanos(window));
            let mut tat = 0u64;
            let mut now = 0u64;
            for (step, reload, rpm, b) in steps {
                now = now.saturating_add(step);
                if reload {
                    let next = Gcra::new(rpm, b, Duration::from_nanos(window));
                    tat = next.carry(&g, tat, now);
                    g = next;
                }
                match g.take(tat, now) {
                    Ok(t) => tat = t,
                    Err(wait) => prop_assert!(wait > 0),
                }
                let (remaining, reset) = g.status(tat, now);
                prop_assert!(remaining <= g.burst);
                prop_assert!(reset <= g.interval.saturating_mul(u64::from(g.burst)));
            }
        }
    }
}
