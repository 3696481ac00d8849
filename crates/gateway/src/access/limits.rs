//! The limit state of every team, behind the small [`LimitStore`] trait so that a later store
//! can share one budget per team between several Sluice instances (Redis). [`MemoryStore`], the
//! default, keeps it in this process:
//!
//! - **requests**: a governor GCRA limiter per team (`requests_per_minute` spread evenly over
//!   the window, `request_burst` at once);
//! - **tokens**: a bucket per team that holds `tokens_per_minute` and refills continuously at
//!   that rate; reservations take from it, settlements give back or take more, and the level
//!   may go below zero (a debt that the refill pays off before the next admission);
//! - **streams**: a counter of open streams per team.
//!
//! Every call names the team and passes its current [`TeamLimits`]: a store rebuilds a team's
//! limiter only when the limits it was built with differ, so reloading the config leaves the
//! limiters of unchanged teams alone, and the stream counter is never reset (open streams still
//! give their slot back when they end).
//!
//! The store is called only for limits a team has; the caller deals with unlimited ones.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::{TeamConfig, DEFAULT_MAX_TOKENS_ESTIMATE};

/// A team's limits, resolved from its config and the limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeamLimits {
    /// Requests per window (`requests_per_minute`); `None`: unlimited.
    pub requests: Option<u32>,
    /// Requests allowed at once.
    pub burst: u32,
    /// Prompt + completion tokens per window (`tokens_per_minute`); `None`: unlimited.
    pub tokens: Option<u64>,
    /// Streams open at once; `None`: unlimited.
    pub streams: Option<u32>,
    /// Completion tokens reserved for a request without `max_tokens`.
    pub default_max_tokens: u64,
    /// The window the "per minute" numbers apply to (a minute, unless configured shorter).
    pub window: Duration,
}

impl TeamLimits {
    pub fn from_config(t: &TeamConfig, window: Duration) -> Self {
        let requests = t.requests_per_minute;
        Self {
            requests,
            burst: t
                .request_burst
                .unwrap_or_else(|| requests.map_or(1, |r| r / 6))
                .max(1),
            tokens: t.tokens_per_minute,
            streams: t.max_concurrent_streams,
            default_max_tokens: t.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS_ESTIMATE),
            window,
        }
    }

    fn request_quota(&self) -> Option<RequestQuota> {
        self.requests.map(|per_window| RequestQuota {
            per_window,
            burst: self.burst,
            window: self.window,
        })
    }

    fn token_quota(&self) -> Option<TokenQuota> {
        self.tokens.map(|per_window| TokenQuota {
            per_window,
            window: self.window,
        })
    }
}

/// Where one limit stands, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// The configured limit per window.
    pub limit: u64,
    /// What may be used right now.
    pub remaining: u64,
    /// Time until the limit is fully replenished.
    pub reset: Duration,
}

impl LimitStatus {
    /// What the headers show for a limit the team does not have.
    pub const UNLIMITED: Self = Self {
        limit: u32::MAX as u64,
        remaining: u32::MAX as u64,
        reset: Duration::ZERO,
    };
}

/// The state of every team's limits. Calls are short and never block on I/O in the in-memory
/// store; a store backed by a server would make them async.
pub trait LimitStore: Send + Sync + fmt::Debug {
    /// Takes one request from the team's request limit; `Err` holds the time until one is free.
    fn take_request(&self, team: &str, limits: &TeamLimits) -> Result<LimitStatus, Duration>;
    /// Where the request limit stands, without taking from it.
    fn request_status(&self, team: &str, limits: &TeamLimits) -> LimitStatus;
    /// Reserves `tokens` if the budget has room for them (a reservation larger than the whole
    /// budget is let through when the budget is full); `Err` holds the time until it has room.
    fn reserve_tokens(
        &self,
        team: &str,
        limits: &TeamLimits,
        tokens: u64,
    ) -> Result<LimitStatus, Duration>;
    /// Settles: `delta` tokens more (positive) or fewer (negative) than were reserved, against
    /// the team's budget as it is now (`limits` may be those of before a reload).
    fn adjust_tokens(&self, team: &str, limits: &TeamLimits, delta: i64);
    /// Where the token budget stands, without taking from it.
    fn token_status(&self, team: &str, limits: &TeamLimits) -> LimitStatus;
    /// Takes a stream slot if fewer than `max` are open.
    fn open_stream(&self, team: &str, max: u32) -> bool;
    /// Gives a slot taken by [`open_stream`](Self::open_stream) back.
    fn close_stream(&self, team: &str);
    /// Streams open now.
    fn open_streams(&self, team: &str) -> u64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestQuota {
    per_window: u32,
    burst: u32,
    window: Duration,
}

impl RequestQuota {
    /// Time between two requests at the steady pace.
    fn interval(&self) -> Duration {
        let nanos = self.window.as_nanos() / u128::from(self.per_window.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenQuota {
    per_window: u64,
    window: Duration,
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A team's request limiter, with the last decision kept so the headers of a response that
/// takes no request (e.g. `GET /v1/models`) can say where the limit stands.
struct Requests {
    quota: RequestQuota,
    gcra: Gcra,
    /// When the last decision was made and how many requests remained after it.
    last: Mutex<Option<(Instant, u32)>>,
}

impl Requests {
    fn new(quota: RequestQuota) -> Self {
        let burst = NonZeroU32::new(quota.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let q = Quota::with_period(quota.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            quota,
            gcra: RateLimiter::direct(q).with_middleware::<StateInformationMiddleware>(),
            last: Mutex::new(None),
        }
    }

    fn take(&self) -> Result<LimitStatus, Duration> {
        let now = Instant::now();
        match self.gcra.check() {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                *lock(&self.last) = Some((now, remaining));
                Ok(self.status_from(now, remaining, now))
            }
            Err(not_until) => {
                *lock(&self.last) = Some((now, 0));
                Err(not_until.wait_time_from(self.gcra.clock().now()))
            }
        }
    }

    fn status(&self) -> LimitStatus {
        let now = Instant::now();
        match *lock(&self.last) {
            Some((at, remaining)) => self.status_from(at, remaining, now),
            None => self.status_from(now, self.quota.burst, now),
        }
    }

    /// The status at `now`, `remaining` having been measured at `at`. Governor exposes the
    /// remaining burst but not the exact time the next request comes back, so this may show
    /// one request fewer and a reset one interval later than the limiter would allow.
    fn status_from(&self, at: Instant, remaining: u32, now: Instant) -> LimitStatus {
        let interval = self.quota.interval();
        let burst = self.quota.burst;
        let elapsed = now.saturating_duration_since(at);
        let regained =
            u32::try_from(elapsed.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u32::MAX);
        let remaining = remaining.saturating_add(regained).min(burst);
        let missing = interval.saturating_mul(burst.saturating_sub(remaining));
        let since_measure = elapsed.saturating_sub(interval.saturating_mul(regained));
        LimitStatus {
            limit: u64::from(self.quota.per_window),
            remaining: u64::from(remaining),
            reset: missing.saturating_sub(since_measure),
        }
    }
}

/// A token budget that refills continuously: `per_window` tokens per window, at most
/// `per_window` held. Pure arithmetic over the times it is given, for testing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    capacity: f64,
    /// Tokens per second.
    rate: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn full(per_window: u64, window: Duration, now: Instant) -> Self {
        let capacity = per_window as f64;
        Self {
            capacity,
            rate: capacity / window.as_secs_f64().max(0.001),
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.capacity);
        self.at = self.at.max(now);
    }

    pub(crate) fn reserve(&mut self, tokens: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let need = (tokens as f64).min(self.capacity);
        // A little slack for float rounding: a client that waited the full Retry-After must
        // not be refused by a rounding error.
        if self.level + 1e-6 >= need {
            self.level -= tokens as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.level) / self.rate))
        }
    }

    pub(crate) fn adjust(&mut self, delta: i64, now: Instant) {
        self.refill(now);
        self.level = (self.level - delta as f64).min(self.capacity);
    }

    pub(crate) fn status(&mut self, now: Instant) -> LimitStatus {
        self.refill(now);
        LimitStatus {
            limit: self.capacity as u64,
            remaining: self.level.max(0.0).floor() as u64,
            reset: Duration::from_secs_f64(((self.capacity - self.level) / self.rate).max(0.0)),
        }
    }

    /// The same level under a new quota (never more than the new capacity).
    fn requota(&self, per_window: u64, window: Duration, now: Instant) -> Self {
        let mut old = *self;
        old.refill(now);
        let mut b = Self::full(per_window, window, now);
        b.level = old.level.min(b.capacity);
        b
    }
}

struct Tokens {
    quota: TokenQuota,
    bucket: Bucket,
}

#[derive(Default)]
struct TeamState {
    requests: RwLock<Option<Arc<Requests>>>,
    tokens: Mutex<Option<Tokens>>,
    streams: Mutex<u64>,
}

/// The in-process [`LimitStore`]: the default, and the only one a single instance needs.
#[derive(Default)]
pub struct MemoryStore {
    teams: RwLock<HashMap<String, Arc<TeamState>>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("teams", &read(&self.teams).len())
            .finish()
    }
}

/// Locks are only ever held for a few arithmetic steps; a panic in one leaves plain numbers
/// behind, so a poisoned lock is still safe to use.
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

    fn team(&self, team: &str) -> Arc<TeamState> {
        if let Some(t) = read(&self.teams).get(team) {
            return t.clone();
        }
        write(&self.teams)
            .entry(team.to_owned())
            .or_default()
            .clone()
    }

    /// The team's request limiter, rebuilt if its quota changed.
    fn requests(&self, team: &str, quota: RequestQuota) -> Arc<Requests> {
        let t = self.team(team);
        if let Some(r) = read(&t.requests).as_ref().filter(|r| r.quota == quota) {
            return r.clone();
        }
        let mut slot = write(&t.requests);
        match slot.as_ref().filter(|r| r.quota == quota) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(Requests::new(quota));
                *slot = Some(r.clone());
                r
            }
        }
    }

    fn with_tokens<R>(
        &self,
        team: &str,
        quota: TokenQuota,
        f: impl FnOnce(&mut Bucket, Instant) -> R,
    ) -> R {
        let t = self.team(team);
        let now = Instant::now();
        let mut slot = lock(&t.tokens);
        let bucket = match &mut *slot {
            Some(tk) if tk.quota == quota => &mut tk.bucket,
            other => {
                let bucket = match other {
                    Some(old) => old.bucket.requota(quota.per_window, quota.window, now),
                    None => Bucket::full(quota.per_window, quota.window, now),
                };
                &mut other.insert(Tokens { quota, bucket }).bucket
            }
        };
        f(bucket, now)
    }
}

impl LimitStore for MemoryStore {
    fn take_request(&self, team: &str, limits: &TeamLimits) -> Result<LimitStatus, Duration> {
        match limits.request_quota() {
            Some(q) => self.requests(team, q).take(),
            None => Ok(LimitStatus::UNLIMITED),
        }
    }

    fn request_status(&self, team: &str, limits: &TeamLimits) -> LimitStatus {
        match limits.request_quota() {
            Some(q) => self.requests(team, q).status(),
            None => LimitStatus::UNLIMITED,
        }
    }

    fn reserve_tokens(
        &self,
        team: &str,
        limits: &TeamLimits,
        tokens: u64,
    ) -> Result<LimitStatus, Duration> {
        match limits.token_quota() {
            Some(q) => self.with_tokens(team, q, |b, now| {
                b.reserve(tokens, now)?;
                Ok(b.status(now))
            }),
            None => Ok(LimitStatus::UNLIMITED),
        }
    }

    fn adjust_tokens(&self, team: &str, _limits: &TeamLimits, delta: i64) {
        // Settles against the budget as it is now, even if a reload changed its quota since
        // the reservation (rebuilding it under the old quota would undo the reload).
        if let Some(t) = read(&self.teams).get(team) {
            if let Some(tk) = lock(&t.tokens).as_mut() {
                tk.bucket.adjust(delta, Instant::now());
            }
        }
    }

    fn token_status(&self, team: &str, limits: &TeamLimits) -> LimitStatus {
        match limits.token_quota() {
            Some(q) => self.with_tokens(team, q, |b, now| b.status(now)),
            None => LimitStatus::UNLIMITED,
        }
    }

    fn open_stream(&self, team: &str, max: u32) -> bool {
        let t = self.team(team);
        let mut n = lock(&t.streams);
        if *n < u64::from(max) {
            *n += 1;
            true
        } else {
            false
        }
    }

    fn close_stream(&self, team: &str) {
        let t = self.team(team);
        let mut n = lock(&t.streams);
        *n = n.saturating_sub(1);
    }

    fn open_streams(&self, team: &str) -> u64 {
        read(&self.teams).get(team).map_or(0, |t| *lock(&t.streams))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, burst: u32, tpm: Option<u64>, streams: Option<u32>) -> TeamLimits {
        TeamLimits {
            requests: rpm,
            burst,
            tokens: tpm,
            streams,
            default_max_tokens: 100,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn burst_defaults_to_a_sixth_at_least_one() {
        let t = |rpm, burst| TeamConfig {
            name: "t".into(),
            api_keys_sha256: vec![],
            requests_per_minute: rpm,
            request_burst: burst,
            tokens_per_minute: None,
            max_concurrent_streams: None,
            default_max_tokens: None,
            models: vec![],
        };
        let w = Duration::from_secs(60);
        assert_eq!(TeamLimits::from_config(&t(Some(60), None), w).burst, 10);
        assert_eq!(TeamLimits::from_config(&t(Some(5), None), w).burst, 1);
        assert_eq!(TeamLimits::from_config(&t(Some(60), Some(3)), w).burst, 3);
        assert_eq!(TeamLimits::from_config(&t(None, None), w).burst, 1);
        assert_eq!(
            TeamLimits::from_config(&t(None, None), w).default_max_tokens,
            DEFAULT_MAX_TOKENS_ESTIMATE
        );
    }

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
        // Same limits: same limiter, still exhausted. Changed limits: a new limiter.
        assert!(s.take_request("a", &l).is_err());
        let l2 = limits(Some(120), 10, None, None);
        assert!(s.take_request("a", &l2).is_ok());
    }

    #[test]
    fn unlimited_requests_and_tokens() {
        let s = MemoryStore::new();
        let l = limits(None, 1, None, None);
        for _ in 0..100 {
            assert_eq!(s.take_request("a", &l), Ok(LimitStatus::UNLIMITED));
            assert_eq!(
                s.reserve_tokens("a", &l, 1 << 40),
                Ok(LimitStatus::UNLIMITED)
            );
        }
    }

    #[test]
    fn bucket_reserve_settle_refill() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        // 600 tokens per 6 s: 100 a second.
        let mut b = Bucket::full(600, Duration::from_secs(6), t0);
        assert_eq!(b.status(t0).remaining, 600);
        assert_eq!(b.status(t0).reset, Duration::ZERO);
        b.reserve(500, t0).unwrap();
        assert_eq!(b.status(t0).remaining, 100);
        assert_eq!(b.status(t0).reset, Duration::from_secs(5));
        // Real usage 200: 300 come back.
        b.adjust(200 - 500, t0);
        assert_eq!(b.status(t0).remaining, 400);
        // 500 more need 100 more tokens: one second.
        let wait = b.reserve(500, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert!(b.reserve(500, s(999)).is_err());
        b.reserve(500, s(1000)).unwrap();
        assert_eq!(b.status(s(1000)).remaining, 0);
        // A reservation larger than the budget passes when full, leaving a debt.
        let mut b = Bucket::full(600, Duration::from_secs(6), t0);
        b.reserve(1000, t0).unwrap();
        assert_eq!(b.status(t0).remaining, 0);
        assert_eq!(b.status(t0).reset, Duration::from_secs(10));
        let wait = b.reserve(1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 4.01).abs() < 1e-6, "{wait:?}");
        // Refunds never fill it past its capacity.
        b.adjust(-10_000, t0);
        assert_eq!(b.status(t0).remaining, 600);
    }

    #[test]
    fn bucket_requota_keeps_the_level() {
        let t0 = Instant::now();
        let mut b = Bucket::full(600, Duration::from_secs(6), t0);
        b.reserve(500, t0).unwrap();
        let mut b2 = b.requota(1000, Duration::from_secs(6), t0);
        assert_eq!(b2.status(t0).remaining, 100);
        assert_eq!(b2.status(t0).limit, 1000);
        let mut b3 = b.requota(50, Duration::from_secs(6), t0);
        assert_eq!(b3.status(t0).remaining, 50);
    }

    #[test]
    fn token_quota_change_keeps_level_and_other_teams_alone() {
        let s = MemoryStore::new();
        let l = limits(None, 1, Some(1000), None);
        s.reserve_tokens("a", &l, 900).unwrap();
        s.reserve_tokens("b", &l, 100).unwrap();
        let l2 = limits(None, 1, Some(2000), None);
        assert!(s.token_status("a", &l2).remaining <= 101);
        assert!(s.token_status("b", &l).remaining >= 900);
    }

    #[test]
    fn settling_after_a_quota_change_keeps_the_new_quota() {
        let s = MemoryStore::new();
        let old = limits(None, 1, Some(1000), None);
        s.reserve_tokens("a", &old, 900).unwrap();
        let new = limits(None, 1, Some(5000), None);
        assert_eq!(s.token_status("a", &new).limit, 5000);
        s.adjust_tokens("a", &old, -800);
        let st = s.token_status("a", &new);
        assert_eq!(st.limit, 5000);
        assert!(st.remaining >= 900, "{st:?}");
        // Nothing reserved yet: nothing to settle.
        s.adjust_tokens("b", &old, 10);
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
