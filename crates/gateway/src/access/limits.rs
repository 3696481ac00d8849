//! The limit store interface: a team's limits ([`TeamLimits`]), what an admission takes and
//! answers, and the [`LimitStore`] trait every store implements. The arithmetic is in
//! `super::rate`, pure functions a script can mirror:
//!
//! - **requests**: GCRA per team (`requests_per_minute` spread evenly over the window,
//!   `request_burst` at once);
//! - **tokens**: a bucket per team that holds `tokens_per_minute` and refills continuously at
//!   that rate; a reservation takes its estimate, at most the whole budget, and its settlement
//!   gives back or takes the difference with the real usage; the level may go below zero, to
//!   minus one window's tokens at most (a debt the refill pays off before the next admission);
//! - **streams**: a counter of open streams per team.
//!
//! Every call names the team and passes its current [`TeamLimits`]. When they differ from the
//! ones a team's state was kept under (a config reload changed them), the state is carried over
//! to the new limits, keeping what was used: a reload neither refills a limit nor forgets a
//! debt. The stream counter is never reset (open streams still give their slot back when they
//! end).
//!
//! The store is called only for limits a team has; the caller deals with unlimited ones.
//! `super::memory_store::MemoryStore`, the default, keeps the state in this process;
//! `super::redis_store` keeps the same state in Redis, with the same arithmetic in Lua.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::rate::{Gcra, TokenBucket};
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

    pub(crate) fn request_quota(&self) -> Option<RequestQuota> {
        self.requests.map(|per_window| RequestQuota {
            per_window,
            gcra: Gcra::new(per_window, self.burst, self.window),
        })
    }

    pub(crate) fn token_quota(&self) -> Option<TokenBucket> {
        self.tokens.map(|t| TokenBucket::new(t, self.window))
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

/// A token reservation: what it took from the budget, and where the budget stands after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Tokens taken: the estimate, at most the budget's capacity. Settle with exactly this.
    pub tokens: u64,
    pub status: LimitStatus,
}

/// What a store hands out with an admission, and takes back with every later call about it
/// (settle, take more, release): which of its slots the admission holds, and whatever else the
/// store needs to find it again. Opaque to everyone but the store that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ticket(pub(super) u64);

/// What an admission took: a stream slot, tokens, one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Names the admission in the later calls about it.
    pub ticket: Ticket,
    /// Whether it took a stream slot (only for a team with a concurrency limit): give it back
    /// once with [`LimitStore::release`].
    pub slot: bool,
    /// Tokens reserved (0 without a token limit): settle with exactly this.
    pub reserved: u64,
    pub requests: LimitStatus,
    pub tokens: LimitStatus,
}

/// Why an admission was refused: the limit, and for a rate the time until it has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Concurrency,
    Tokens(Duration),
    Requests(Duration),
}

/// The store did not answer (Redis did not, within its timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What [`LimitStore::admit`] answers: admitted or refused, or no answer at all.
pub type AdmitOutcome = Result<Result<Admitted, Refusal>, Unavailable>;

/// The state of every team's limits: [`MemoryStore`](super::MemoryStore) in this process, or
/// [`RedisStore`](super::RedisStore) shared by every instance, behind
/// [`FailOver`](super::FailOver), which decides what happens when Redis does not answer.
#[async_trait::async_trait]
pub trait LimitStore: Send + Sync + fmt::Debug {
    /// Takes a stream slot (if the team has a concurrency limit), then reserves `estimate`
    /// tokens (see [`TokenBucket::reserve`]), then one request, all or nothing: a refusal
    /// leaves the team as it was.
    async fn admit(&self, team: &str, limits: &TeamLimits, estimate: u64) -> AdmitOutcome;
    /// Settles the reservation of admission `ticket`, `reserved` tokens, with the `used`
    /// tokens, against the team's budget as it is now (a reload may have changed its limits
    /// since). Nothing for a team with no budget kept.
    async fn settle(
        &self,
        team: &str,
        ticket: Ticket,
        reserved: u64,
        used: u64,
    ) -> Result<(), Unavailable>;
    /// Takes up to `want` more tokens for admission `ticket`, a stream that used all it took
    /// (see [`TokenBucket::take_up_to`]): returns the tokens granted, 0 when the budget is
    /// empty.
    async fn take_more(
        &self,
        team: &str,
        ticket: Ticket,
        limits: &TeamLimits,
        want: u64,
    ) -> Result<u64, Unavailable>;
    /// Gives the slot of admission `ticket` back.
    async fn release(&self, team: &str, ticket: Ticket) -> Result<(), Unavailable>;
    /// Where the request and token limits stand, without taking from them.
    async fn status(
        &self,
        team: &str,
        limits: &TeamLimits,
    ) -> Result<(LimitStatus, LimitStatus), Unavailable>;
    /// Slots in use by the team, on every instance sharing the store.
    async fn open_streams(&self, team: &str) -> Result<u64, Unavailable>;
    /// Slots held through this instance (for `/metrics`, read at scrape time: no I/O).
    fn open_streams_here(&self, team: &str) -> u64;
    /// [`settle`](Self::settle) from a place that cannot wait (a drop): done now in memory,
    /// spawned for a shared store.
    fn settle_later(self: Arc<Self>, team: Arc<str>, ticket: Ticket, reserved: u64, used: u64);
    /// [`release`](Self::release) likewise.
    fn release_later(self: Arc<Self>, team: Arc<str>, ticket: Ticket);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestQuota {
    pub(crate) per_window: u32,
    pub(crate) gcra: Gcra,
}

#[cfg(test)]
mod tests {
    use super::*;

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
            on_disconnect: None,
            grace_secs: None,
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
}
