//! The in-process limit store: every team's limiter state in this process's memory, the
//! default, and the fallback of the shared store when Redis does not answer (`fail_open`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::limits::{
    AdmitOutcome, Admitted, LimitStatus, LimitStore, Refusal, RequestQuota, Reservation,
    TeamLimits, Ticket, Unavailable,
};
use super::rate::{nanos, Level, TokenBucket};

/// A team's request limiter: its quota and GCRA's theoretical arrival time.
struct Requests {
    quota: RequestQuota,
    tat: u64,
}

/// A team's token budget: its quota and level.
struct Tokens {
    quota: TokenBucket,
    level: Level,
}

#[derive(Default)]
struct TeamState {
    requests: Mutex<Option<Requests>>,
    tokens: Mutex<Option<Tokens>>,
    streams: Mutex<u64>,
}

/// The in-process [`LimitStore`]: the default, and the only one a single instance needs.
pub struct MemoryStore {
    /// Times are kept as nanoseconds since this instant.
    origin: Instant,
    teams: RwLock<HashMap<String, Arc<TeamState>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            teams: RwLock::default(),
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("teams", &read(&self.teams).len())
            .finish()
    }
}

/// Locks are only ever held for a few steps of total arithmetic (see `super::rate`), and the
/// state is written only once a step is complete; a poisoned lock (a panic elsewhere while it
/// was held) still guards consistent numbers, so it is used, never left to break the team.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    fn team(&self, team: &str) -> Arc<TeamState> {
        if let Some(t) = read(&self.teams).get(team) {
            return t.clone();
        }
        write(&self.teams)
            .entry(team.to_owned())
            .or_default()
            .clone()
    }

    /// Runs `f` on the team's request limiter under `quota`, carrying its state over from the
    /// quota it was kept under if that differs.
    fn with_requests<R>(
        &self,
        team: &str,
        quota: RequestQuota,
        f: impl FnOnce(&mut Requests, u64) -> R,
    ) -> R {
        let t = self.team(team);
        let mut slot = lock(&t.requests);
        let now = self.now();
        let r = slot.get_or_insert(Requests { quota, tat: 0 });
        if r.quota != quota {
            r.tat = quota.gcra.carry(&r.quota.gcra, r.tat, now);
            r.quota = quota;
        }
        f(r, now)
    }

    /// Runs `f` on the team's token budget under `quota`, carried over likewise.
    fn with_tokens<R>(
        &self,
        team: &str,
        quota: TokenBucket,
        f: impl FnOnce(&mut Tokens, u64) -> R,
    ) -> R {
        let t = self.team(team);
        let mut slot = lock(&t.tokens);
        let now = self.now();
        let tk = slot.get_or_insert(Tokens {
            quota,
            level: quota.full(now),
        });
        if tk.quota != quota {
            tk.level = quota.carry(&tk.quota, tk.level, now);
            tk.quota = quota;
        }
        f(tk, now)
    }
}

fn request_status(r: &Requests, now: u64) -> LimitStatus {
    let (remaining, reset) = r.quota.gcra.status(r.tat, now);
    LimitStatus {
        limit: u64::from(r.quota.per_window),
        remaining: u64::from(remaining),
        reset: Duration::from_nanos(reset),
    }
}

fn token_status(tk: &Tokens, now: u64) -> LimitStatus {
    let (remaining, reset) = tk.quota.status(tk.level, now);
    LimitStatus {
        limit: tk.quota.capacity,
        remaining,
        reset: Duration::from_nanos(reset),
    }
}

/// The in-process operations, synchronous: the trait's in-memory implementation, and what
/// [`FailOver`](super::FailOver) falls back to.
impl MemoryStore {
    /// Concurrency, tokens, requests, all or nothing (see [`LimitStore::admit`]).
    pub fn admit_now(
        &self,
        team: &str,
        limits: &TeamLimits,
        estimate: u64,
    ) -> Result<Admitted, Refusal> {
        let slot = match limits.streams {
            Some(max) if !self.open_stream(team, max) => return Err(Refusal::Concurrency),
            Some(_) => true,
            None => false,
        };
        let undo_slot = || {
            if slot {
                self.close_stream(team);
            }
        };
        let tokens = match self.reserve_tokens(team, limits, estimate) {
            Ok(r) => r,
            Err(wait) => {
                undo_slot();
                return Err(Refusal::Tokens(wait));
            }
        };
        match self.take_request(team, limits) {
            // A team's slots are a counter here: no ticket is needed to find one again.
            Ok(requests) => Ok(Admitted {
                ticket: Ticket::default(),
                slot,
                reserved: tokens.tokens,
                requests,
                tokens: tokens.status,
            }),
            Err(wait) => {
                if tokens.tokens > 0 {
                    self.settle_tokens(team, tokens.tokens, 0);
                }
                undo_slot();
                Err(Refusal::Requests(wait))
            }
        }
    }

    /// Takes one request from the team's request limit; `Err` holds the time until one is free.
    pub fn take_request(&self, team: &str, limits: &TeamLimits) -> Result<LimitStatus, Duration> {
        match limits.request_quota() {
            Some(q) => self.with_requests(team, q, |r, now| {
                r.tat = q.gcra.take(r.tat, now).map_err(Duration::from_nanos)?;
                Ok(request_status(r, now))
            }),
            None => Ok(LimitStatus::UNLIMITED),
        }
    }

    /// Where the request limit stands, without taking from it.
    pub fn request_status(&self, team: &str, limits: &TeamLimits) -> LimitStatus {
        match limits.request_quota() {
            Some(q) => self.with_requests(team, q, |r, now| request_status(r, now)),
            None => LimitStatus::UNLIMITED,
        }
    }

    /// Reserves `estimate` tokens, at most the whole budget (so an estimate larger than the
    /// budget is let through when the budget is full), if the budget has room for them; `Err`
    /// holds the time until it has.
    pub fn reserve_tokens(
        &self,
        team: &str,
        limits: &TeamLimits,
        estimate: u64,
    ) -> Result<Reservation, Duration> {
        match limits.token_quota() {
            Some(q) => self.with_tokens(team, q, |tk, now| {
                let (level, tokens) = q
                    .reserve(tk.level, estimate, now)
                    .map_err(Duration::from_nanos)?;
                tk.level = level;
                Ok(Reservation {
                    tokens,
                    status: token_status(tk, now),
                })
            }),
            None => Ok(Reservation {
                tokens: 0,
                status: LimitStatus::UNLIMITED,
            }),
        }
    }

    /// Settles a reservation that took `reserved` tokens with the `used` tokens.
    pub fn settle_tokens(&self, team: &str, reserved: u64, used: u64) {
        // Against the budget as it is now, even if a reload changed its quota since the
        // reservation (rebuilding it under the old quota would undo the reload).
        if let Some(t) = read(&self.teams).get(team) {
            if let Some(tk) = lock(&t.tokens).as_mut() {
                tk.level = tk.quota.settle(tk.level, reserved, used, self.now());
            }
        }
    }

    /// Takes up to `want` more tokens for a running stream (see [`LimitStore::take_more`]).
    pub fn take_more_tokens(&self, team: &str, limits: &TeamLimits, want: u64) -> u64 {
        match limits.token_quota() {
            Some(q) => self.with_tokens(team, q, |tk, now| {
                let (level, granted) = q.take_up_to(tk.level, want, now);
                tk.level = level;
                granted
            }),
            None => want,
        }
    }

    /// Where the token budget stands, without taking from it.
    pub fn token_status(&self, team: &str, limits: &TeamLimits) -> LimitStatus {
        match limits.token_quota() {
            Some(q) => self.with_tokens(team, q, |tk, now| token_status(tk, now)),
            None => LimitStatus::UNLIMITED,
        }
    }

    /// Takes a stream slot if fewer than `max` are open.
    pub fn open_stream(&self, team: &str, max: u32) -> bool {
        let t = self.team(team);
        let mut n = lock(&t.streams);
        if *n < u64::from(max) {
            *n += 1;
            true
        } else {
            false
        }
    }

    /// Gives a slot back.
    pub fn close_stream(&self, team: &str) {
        let t = self.team(team);
        let mut n = lock(&t.streams);
        *n = n.saturating_sub(1);
    }

    /// Streams open now.
    pub fn open_streams(&self, team: &str) -> u64 {
        read(&self.teams).get(team).map_or(0, |t| *lock(&t.streams))
    }
}

#[async_trait::async_trait]
impl LimitStore for MemoryStore {
    async fn admit(&self, team: &str, limits: &TeamLimits, estimate: u64) -> AdmitOutcome {
        Ok(self.admit_now(team, limits, estimate))
    }

    async fn settle(
        &self,
        team: &str,
        _: Ticket,
        reserved: u64,
        used: u64,
    ) -> Result<(), Unavailable> {
        self.settle_tokens(team, reserved, used);
        Ok(())
    }

    async fn take_more(
        &self,
        team: &str,
        _: Ticket,
        limits: &TeamLimits,
        want: u64,
    ) -> Result<u64, Unavailable> {
        Ok(self.take_more_tokens(team, limits, want))
    }

    async fn release(&self, team: &str, _: Ticket) -> Result<(), Unavailable> {
        self.close_stream(team);
        Ok(())
    }

    async fn status(
        &self,
        team: &str,
        limits: &TeamLimits,
    ) -> Result<(LimitStatus, LimitStatus), Unavailable> {
        Ok((
            self.request_status(team, limits),
            self.token_status(team, limits),
        ))
    }

    async fn open_streams(&self, team: &str) -> Result<u64, Unavailable> {
        Ok(MemoryStore::open_streams(self, team))
    }

    fn open_streams_here(&self, team: &str) -> u64 {
        MemoryStore::open_streams(self, team)
    }

    fn settle_later(self: Arc<Self>, team: Arc<str>, _: Ticket, reserved: u64, used: u64) {
        self.settle_tokens(&team, reserved, used);
    }

    fn release_later(self: Arc<Self>, team: Arc<str>, _: Ticket) {
        self.close_stream(&team);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::access::store_tests::limits;

    #[test]
    fn request_burst_then_refusal_with_the_wait() {
        let s = MemoryStore::new();
        let l = limits(Some(60), 10, None, None);
        for i in 0..10 {
            let st = s.take_request("a", &l).expect("within the burst");
            assert_eq!(st.limit, 60);
            assert_eq!(st.remaining, 9 - i);
        }
        let wait = s.take_request("a", &l).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let st = s.request_status("a", &l);
        assert_eq!(st.remaining, 0);
        assert!(st.reset > Duration::from_secs(9) && st.reset <= Duration::from_secs(10));
        // Another team is not affected.
        assert!(s.take_request("b", &l).is_ok());
        // Same limits: same limiter, still exhausted. Changed limits: the state carries over,
        // so a faster pace with the same burst is still exhausted; a bigger burst adds room.
        assert!(s.take_request("a", &l).is_err());
        assert!(s
            .take_request("a", &limits(Some(120), 10, None, None))
            .is_err());
        let l3 = limits(Some(120), 12, None, None);
        assert_eq!(s.request_status("a", &l3).remaining, 2);
        assert!(s.take_request("a", &l3).is_ok());
        assert!(s.take_request("a", &l3).is_ok());
        assert!(s.take_request("a", &l3).is_err());
        // Back to the first limits: nothing refilled.
        assert!(s.take_request("a", &l).is_err());
    }

    #[test]
    fn unlimited_requests_and_tokens() {
        let s = MemoryStore::new();
        let l = limits(None, 1, None, None);
        for _ in 0..100 {
            assert_eq!(s.take_request("a", &l), Ok(LimitStatus::UNLIMITED));
            assert_eq!(
                s.reserve_tokens("a", &l, u64::MAX),
                Ok(Reservation {
                    tokens: 0,
                    status: LimitStatus::UNLIMITED
                })
            );
        }
    }

    #[test]
    fn token_quota_change_keeps_the_used_tokens_and_other_teams_alone() {
        let s = MemoryStore::new();
        let l = limits(None, 1, Some(1000), None);
        s.reserve_tokens("a", &l, 900).unwrap();
        s.reserve_tokens("b", &l, 100).unwrap();
        let l2 = limits(None, 1, Some(2000), None);
        let st = s.token_status("a", &l2);
        assert_eq!(st.limit, 2000);
        assert!((1100..=1101).contains(&st.remaining), "{st:?}");
        assert!(s.token_status("b", &l).remaining >= 900);
    }

    #[test]
    fn a_reservation_takes_at_most_the_budget_and_gives_back_exactly_that() {
        let s = MemoryStore::new();
        let l = limits(None, 1, Some(30), None);
        let r = s.reserve_tokens("a", &l, u64::MAX).unwrap();
        assert_eq!(r.tokens, 30);
        assert_eq!(r.status.remaining, 0);
        assert!(r.status.reset <= Duration::from_secs(60), "{r:?}");
        let wait = s.reserve_tokens("a", &l, u64::MAX).unwrap_err();
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
        s.settle_tokens("a", r.tokens, 0);
        assert_eq!(s.token_status("a", &l).remaining, 30);
        // Far more used than reserved: a bounded debt, repaid within two windows.
        let r = s.reserve_tokens("a", &l, 10).unwrap();
        s.settle_tokens("a", r.tokens, u64::MAX);
        let st = s.token_status("a", &l);
        assert_eq!(st.remaining, 0);
        assert!(st.reset <= Duration::from_secs(120), "{st:?}");
    }

    #[test]
    fn a_panic_while_a_limit_is_locked_does_not_break_the_team() {
        let s = MemoryStore::new();
        // A day's window: nothing comes back while the panics print their backtraces.
        let l = TeamLimits {
            window: Duration::from_secs(86_400),
            ..limits(Some(60), 10, Some(1000), None)
        };
        s.reserve_tokens("a", &l, 100).unwrap();
        s.take_request("a", &l).unwrap();
        let q = l.token_quota().unwrap();
        let r = l.request_quota().unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.with_tokens("a", q, |_, _| panic!("a bug while the budget is locked"))
        }));
        assert!(panicked.is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.with_requests("a", r, |_, _| panic!("a bug while the limiter is locked"))
        }));
        assert!(panicked.is_err());
        let t = s.team("a");
        assert!(t.tokens.is_poisoned() && t.requests.is_poisoned());
        // The state is intact and the team is served.
        assert!(s.reserve_tokens("a", &l, 100).is_ok());
        assert!((790..=800).contains(&s.token_status("a", &l).remaining));
        assert_eq!(s.take_request("a", &l).unwrap().remaining, 8);
    }

    #[test]
    fn settling_after_a_quota_change_keeps_the_new_quota() {
        let s = MemoryStore::new();
        let old = limits(None, 1, Some(1000), None);
        s.reserve_tokens("a", &old, 900).unwrap();
        let new = limits(None, 1, Some(5000), None);
        assert_eq!(s.token_status("a", &new).limit, 5000);
        s.settle_tokens("a", 900, 100);
        let st = s.token_status("a", &new);
        assert_eq!(st.limit, 5000);
        assert!((4900..=4901).contains(&st.remaining), "{st:?}");
        // Nothing reserved yet: nothing to settle.
        s.settle_tokens("b", 0, 10);
        assert_eq!(s.token_status("b", &old).remaining, 1000);
    }

    #[test]
    fn stream_slots() {
        let s = MemoryStore::new();
        assert!(s.open_stream("a", 2));
        assert!(s.open_stream("a", 2));
        assert!(!s.open_stream("a", 2));
        assert!(s.open_stream("b", 2));
        assert_eq!(s.open_streams("a"), 2);
        s.close_stream("a");
        assert!(s.open_stream("a", 2));
        s.close_stream("a");
        s.close_stream("a");
        assert_eq!(s.open_streams("a"), 0);
        s.close_stream("a");
        assert_eq!(s.open_streams("a"), 0);
    }

    #[test]
    fn concurrent_slots_are_exact() {
        let s = Arc::new(MemoryStore::new());
        let granted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (s, granted) = (s.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if s.open_stream("a", 3) {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            assert!(s.open_streams("a") <= 3);
                            s.close_stream("a");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.open_streams("a"), 0);
        assert!(granted.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }
}
