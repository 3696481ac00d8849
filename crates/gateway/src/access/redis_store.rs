//! The limit state in Redis, shared by every instance that points at the same server
//! (`SLUICE_REDIS_URL`).
//!
//! Per team, keys hash-tagged with its name (so that a cluster keeps them on one node):
//!
//! - `sluice:limits:{team}:requests`: a hash `tat`, `interval`, `burst`: GCRA (see
//!   `super::rate::Gcra`);
//! - `sluice:limits:{team}:tokens`: a hash `level`, `at`, `cap`, `win`: the token budget (see
//!   `super::rate::TokenBucket`);
//! - `sluice:limits:{team}:slots`: a sorted set of concurrency leases, `instance:n → expiry`.
//!
//! Times are microseconds of the Redis server's clock (`TIME`, read inside the scripts), so
//! that instances with skewed clocks agree, and a microsecond count since 1970 is exact in a
//! Lua number. Each operation is one Lua script (`lua/*.lua`; EVALSHA, loaded again by redis-rs
//! when Redis forgot it), so one round trip: an admission (slot, tokens, request, all or nothing), a
//! settlement, a status. The scripts mirror `super::rate` line for line, and carry a team's
//! state over when the quota they are called with (this instance's config) differs from the
//! one stored beside it. The rate keys expire after two windows unused (a budget left that long
//! is full again: nothing is lost), the slot set after two leases.
//!
//! A slot is a lease: it expires `lease` after it was taken or last renewed. This instance
//! renews the leases it holds every `lease / 3`, and removes one when its admission ends; the
//! slots of an instance that died come free within `lease`. A renewal adds back a lease Redis
//! lost (a restart without persistence, `FLUSHALL`): its stream still runs, and must keep
//! counting against the team's `max_concurrent_streams`.
//!
//! When Redis does not answer within the timeout, a call is [`Unavailable`]: what happens then
//! (this instance's own limits, or a 503) is [`FailOver`](super::FailOver)'s decision, not
//! this store's. The connection reconnects by itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use redis::Script;

use super::limits::{
    AdmitOutcome, Admitted, LimitStatus, LimitStore, Refusal, TeamLimits, Ticket, Unavailable,
};
use crate::lifecycle::Lifecycle;
use crate::shared_state::SharedState;

/// A limit script: the shared helpers (`lua/prelude.lua`), then the script itself. Each file
/// opens with a comment on its KEYS, ARGV and reply.
macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/prelude.lua"),
                include_str!($file)
            ))
        })
    };
}

static ADMIT: LazyLock<Script> = script!("lua/admit.lua");
static SETTLE: LazyLock<Script> = script!("lua/settle.lua");
static TAKE_MORE: LazyLock<Script> = script!("lua/take_more.lua");
static STATUS: LazyLock<Script> = script!("lua/status.lua");
static OPEN: LazyLock<Script> = script!("lua/open.lua");
static RENEW: LazyLock<Script> = script!("lua/renew.lua");

fn key(team: &str, what: &str) -> String {
    format!("sluice:limits:{{{team}}}:{what}")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A quota as a script argument: -1 for none.
fn quota_arg(q: Option<u64>) -> i64 {
    q.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn status(limit: Option<u64>, remaining: i64, reset_us: i64) -> LimitStatus {
    match limit {
        None => LimitStatus::UNLIMITED,
        Some(limit) => LimitStatus {
            limit,
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset: Duration::from_micros(u64::try_from(reset_us).unwrap_or(0)),
        },
    }
}

fn wait(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// Per team, the leases this instance holds in Redis.
type Leases = HashMap<Arc<str>, HashSet<u64>>;

/// The shared [`LimitStore`]: see the module docs.
pub struct RedisStore {
    state: Arc<SharedState>,
    /// Runs the lease renewal, and the settlements and releases made from a drop.
    lifecycle: Lifecycle,
    /// The next admission's ticket: its lease ID (a member of the slot set) if it takes a slot.
    next_lease: AtomicU64,
    leases: Mutex<Leases>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The quota arguments of a team's limits: (capacity, window µs, interval µs, burst).
fn quota_args(limits: &TeamLimits) -> (i64, u64, i64, u32) {
    let window = micros(limits.window).max(1);
    let interval = limits
        .requests
        .map(|r| (window / u64::from(r.max(1))).max(1));
    (
        quota_arg(limits.tokens),
        window,
        quota_arg(interval),
        limits.burst.max(1),
    )
}

impl RedisStore {
    /// The store, and its lease renewal task (which ends when the store is dropped or the
    /// lifecycle stops). Needs a Tokio runtime.
    pub fn new(state: Arc<SharedState>, lifecycle: Lifecycle) -> Arc<Self> {
        let store = Arc::new(Self {
            state,
            lifecycle,
            next_lease: AtomicU64::new(1),
            leases: Mutex::default(),
        });
        let every = (store.state.lease / 3).max(Duration::from_millis(100));
        // Weak: a store that is gone (an instance that died, in the tests) stops renewing, so
        // its leases expire.
        let weak: Weak<Self> = Arc::downgrade(&store);
        store.lifecycle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.renew().await;
            }
        });
        store
    }

    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.state.instance)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews every lease this instance holds: one call per team.
    pub async fn renew(&self) {
        let held: Vec<(Arc<str>, Vec<u64>)> = self
            .leases()
            .iter()
            .map(|(t, ids)| (t.clone(), ids.iter().copied().collect()))
            .collect();
        for (team, ids) in held {
            let mut inv = RENEW.prepare_invoke();
            inv.key(key(&team, "slots")).arg(micros(self.state.lease));
            for id in ids {
                inv.arg(self.member(id));
            }
            let mut conn = self.state.conn();
            let restored = match self
                .state
                .call(inv.invoke_async::<Vec<String>>(&mut conn))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(team = %team, error = %e, "could not renew the stream slot leases");
                    continue;
                }
            };
            if restored.is_empty() {
                continue;
            }
            tracing::info!(team = %team, restored = restored.len(), "stream slot leases missing in redis (restart or flush): added again");
            // A lease released while the renewal was on its way (its ZREM came first) was
            // added again: remove it once more. Checked after the renewal, so a release that
            // comes later removes it itself.
            let released: Vec<String> = {
                let leases = self.leases();
                let held = leases.get(&team);
                restored
                    .into_iter()
                    .filter(|m| {
                        !m.rsplit_once(':')
                            .and_then(|(_, n)| n.parse::<u64>().ok())
                            .is_some_and(|n| held.is_some_and(|ids| ids.contains(&n)))
                    })
                    .collect()
            };
            if !released.is_empty() {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(key(&team, "slots")).arg(released);
                let _ = self.state.call(zrem.query_async::<i64>(&mut conn)).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl LimitStore for RedisStore {
    async fn admit(&self, team: &str, limits: &TeamLimits, estimate: u64) -> AdmitOutcome {
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let (cap, window, interval, burst) = quota_args(limits);
        let ttl_ms = (2 * window / 1000).max(1000);
        let mut inv = ADMIT.prepare_invoke();
        inv.key(key(team, "slots"))
            .key(key(team, "tokens"))
            .key(key(team, "requests"))
            .arg(limits.streams.map_or(-1, i64::from))
            .arg(self.member(id))
            .arg(micros(self.state.lease))
            .arg(cap)
            .arg(window)
            .arg(estimate)
            .arg(interval)
            .arg(burst)
            .arg(ttl_ms);
        let mut conn = self.state.conn();
        let r: Vec<i64> = self
            .state
            .call(inv.invoke_async(&mut conn))
            .await
            .map_err(|_| Unavailable)?;
        let at = |i: usize| r.get(i).copied().unwrap_or(0);
        Ok(match at(0) {
            0 => {
                let slot = limits.streams.is_some();
                if slot {
                    self.leases().entry(team.into()).or_default().insert(id);
                }
                Ok(Admitted {
                    ticket: Ticket(id),
                    slot,
                    reserved: u64::try_from(at(2)).unwrap_or(0),
                    requests: status(limits.requests.map(u64::from), at(3), at(4)),
                    tokens: status(limits.tokens, at(5), at(6)),
                })
            }
            1 => Err(Refusal::Concurrency),
            2 => Err(Refusal::Tokens(wait(at(1)))),
            _ => Err(Refusal::Requests(wait(at(1)))),
        })
    }

    async fn settle(
        &self,
        team: &str,
        _: Ticket,
        reserved: u64,
        used: u64,
    ) -> Result<(), Unavailable> {
        let mut inv = SETTLE.prepare_invoke();
        inv.key(key(team, "tokens")).arg(reserved).arg(used);
        let mut conn = self.state.conn();
        self.state
            .call(inv.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
            .map_err(|_| Unavailable)
    }

    async fn take_more(
        &self,
        team: &str,
        _: Ticket,
        limits: &TeamLimits,
        want: u64,
    ) -> Result<u64, Unavailable> {
        let Some(cap) = limits.tokens else {
            return Ok(want);
        };
        let window = micros(limits.window).max(1);
        let mut inv = TAKE_MORE.prepare_invoke();
        inv.key(key(team, "tokens"))
            .arg(cap)
            .arg(window)
            .arg(want)
            .arg((2 * window / 1000).max(1000));
        let mut conn = self.state.conn();
        self.state
            .call(inv.invoke_async::<u64>(&mut conn))
            .await
            .map_err(|_| Unavailable)
    }

    async fn release(&self, team: &str, ticket: Ticket) -> Result<(), Unavailable> {
        self.forget(team, ticket);
        let mut conn = self.state.conn();
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(key(team, "slots")).arg(self.member(ticket.0));
        let zrem = zrem.query_async::<i64>(&mut conn);
        // If Redis does not answer, the lease (no longer renewed) expires by itself.
        self.state
            .call(zrem)
            .await
            .map(drop)
            .map_err(|_| Unavailable)
    }

    async fn status(
        &self,
        team: &str,
        limits: &TeamLimits,
    ) -> Result<(LimitStatus, LimitStatus), Unavailable> {
        let (cap, window, interval, burst) = quota_args(limits);
        let mut inv = STATUS.prepare_invoke();
        inv.key(key(team, "tokens"))
            .key(key(team, "requests"))
            .arg(cap)
            .arg(window)
            .arg(interval)
            .arg(burst);
        let mut conn = self.state.conn();
        let r = self
            .state
            .call(inv.invoke_async::<Vec<i64>>(&mut conn))
            .await
            .map_err(|_| Unavailable)?;
        let at = |i: usize| r.get(i).copied().unwrap_or(0);
        Ok((
            status(limits.requests.map(u64::from), at(0), at(1)),
            status(limits.tokens, at(2), at(3)),
        ))
    }

    async fn open_streams(&self, team: &str) -> Result<u64, Unavailable> {
        let mut inv = OPEN.prepare_invoke();
        inv.key(key(team, "slots"));
        let mut conn = self.state.conn();
        self.state
            .call(inv.invoke_async::<u64>(&mut conn))
            .await
            .map_err(|_| Unavailable)
    }

    fn open_streams_here(&self, team: &str) -> u64 {
        self.leases().get(team).map_or(0, |ids| ids.len() as u64)
    }

    fn settle_later(self: Arc<Self>, team: Arc<str>, ticket: Ticket, reserved: u64, used: u64) {
        // No runtime (a test's drop): nothing can reach Redis.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // As a generation: shutdown gives it its grace period, so that the shared budget is
        // right for the instances that stay.
        self.lifecycle.clone().spawn_generation(async move {
            if self.settle(&team, ticket, reserved, used).await.is_err() {
                tracing::debug!(team = %team, reserved, used, "token settlement lost: redis did not answer");
            }
        });
    }

    fn release_later(self: Arc<Self>, team: Arc<str>, ticket: Ticket) {
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime (a test's drop): at least stop renewing it, so that it expires.
            self.forget(&team, ticket);
            return;
        }
        // Likewise a generation: the other instances get the slot back now, not a lease later.
        self.lifecycle.clone().spawn_generation(async move {
            let _ = self.release(&team, ticket).await;
        });
    }
}

impl RedisStore {
    /// Stops renewing the lease of admission `ticket`.
    fn forget(&self, team: &str, ticket: Ticket) {
        let mut leases = self.leases();
        if let Some(ids) = leases.get_mut(team) {
            ids.remove(&ticket.0);
            if ids.is_empty() {
                leases.remove(team);
            }
        }
    }
}
