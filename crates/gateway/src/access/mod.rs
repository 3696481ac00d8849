//! Who is calling and what they may do: team keys, model permissions, and the request, token
//! and concurrency limits. In open mode (no `[[teams]]`) every caller is let through.
//!
//! Handlers see only [`Access::authenticate`] (called by the auth layer in `crate::app`),
//! [`Access::admit`] and the [`Admission`] it returns: a permit that carries the
//! `x-ratelimit-*` headers, holds a concurrency slot until it is dropped, and settles the token
//! budget with the real usage. The auth layer also fills the `x-ratelimit-*` headers into every
//! other response to a team (errors included) from [`Access::fill_headers`].
//!
//! # The limits
//!
//! "Per minute" means per *limit window*: a minute, unless `rate_limit_window_secs` /
//! `SLUICE_RATE_LIMIT_WINDOW_SECS` makes it shorter (for tests).
//!
//! - **Requests**: GCRA, one limiter per team: `requests_per_minute` spread evenly over the
//!   window, with `request_burst` (default a sixth of it, at least 1) allowed at once.
//! - **Tokens: reserve and settle.** Before a request, its estimate must fit in the team's
//!   budget, a bucket of `tokens_per_minute` that refills continuously; the estimate is then
//!   taken from it. The estimate is the prompt estimate plus `max_completion_tokens` /
//!   `max_tokens` (or the team's `default_max_tokens`) times `n`. The prompt estimate is a
//!   token per four bytes of the whole JSON body (messages, `tools`, `response_format`, ...:
//!   all that goes upstream), see [`estimate`]. An estimate larger than the whole budget takes
//!   the whole budget and is admitted when the budget is full, so a big request is slow, not
//!   impossible, and never reserves more than one window's tokens. Reserving (rather than
//!   admitting whenever the budget is positive) keeps a burst of parallel requests from
//!   overspending it.
//!
//!   A stream that generates more than it reserved (no `max_tokens`, and a long answer) takes
//!   more as it goes: each time its estimated use (the prompt estimate plus the streamed
//!   completion estimate) passes what it took, it takes the overrun and a chunk more (a
//!   sixteenth of the budget, 32 to 4096 tokens: one store call per chunk), as much as the
//!   budget holds without going below zero. When the budget cannot cover the overrun, the
//!   stream ends with an in-band error (`type` `tokens`, `code` `rate_limit_exceeded`) and its
//!   upstream request is cancelled. So parallel streams take at most the budget (and its
//!   refill) plus what each generated since its last take.
//!
//!   When the generation ends the reservation is settled, in one signed step, against what
//!   is charged: the difference is given back or taken as well. The budget may go below zero,
//!   to minus one window's tokens at most, and the next request waits until the refill has
//!   paid that debt. What is charged:
//!   - the upstream's usage, when it reports it;
//!   - when it does not (or a stream ends before it does): the prompt estimate plus, for the
//!     completion, a token per four bytes of the answer's text, or for a stream the larger of
//!     that and one token per streamed event;
//!   - when the client goes away while the upstream works on its request (before the answer,
//!     or before a stream's upstream has answered): the prompt estimate;
//!   - nothing when the upstream refused the request (an error status, no connection) or it
//!     never went upstream.
//!
//!   `max_tokens` and `max_completion_tokens` above [`estimate::MAX_TOKENS_CEILING`] and `n`
//!   above [`estimate::MAX_N`] are refused with a 400 naming the field, for every caller.
//! - **Concurrency**: generations in flight (streams, and non-streaming requests while they
//!   wait for the upstream) per team, at most `max_concurrent_streams`. The [`Admission`] holds
//!   the slot and gives it back when dropped, whatever ended the generation.
//!
//! Limits are checked concurrency first, then tokens, then requests, and a refusal undoes the
//! earlier steps, so a refused request costs the team nothing. The 429 carries `Retry-After`
//! in whole seconds (at least 1), rounded up from the time until the refusing limit has room:
//! a retry after it succeeds unless others used the room first. Concurrency has no such time
//! (nobody knows when a stream ends): it says 1 second.
//!
//! # Headers
//!
//! `x-ratelimit-limit-requests` is `requests_per_minute`, `-remaining-requests` the requests
//! that may be sent at once now (at most the burst), `-reset-requests` the time until the
//! whole burst is back; `-tokens` likewise for the token budget. A limit the team does not
//! have is shown as 4294967295 remaining of 4294967295, reset `0s`.
//!
//! # Reloading
//!
//! The team table sits behind a `RwLock<Arc<_>>` that is only held to clone or swap the `Arc`.
//! [`Access::reload`] swaps in a new table; limiter state lives in the [`LimitStore`] keyed by
//! team name and survives a reload. A team whose limits changed keeps what it used: the
//! requests in use of its burst (at most the new burst) and the tokens used of its budget
//! (within the new budget and its floor). So a reload never refills a limit: reloading a
//! bigger burst adds only the difference, and shrinking it back takes the surplus away.

mod admission;
mod auth;
pub mod estimate;
pub mod failover;
pub mod headers;
pub mod limits;
pub mod memory_store;
pub mod rate;
pub mod redis_store;
pub mod usage;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use provider_adapter::ChatRequest;
use serde_json::{json, Value};

use crate::config::{OnDisconnect, TeamConfig};
use crate::error::GatewayError;
pub use admission::Admission;
pub use auth::{presented_key, AuthProblem};
pub use failover::FailOver;
pub use limits::{
    Admitted, LimitStatus, LimitStore, Refusal, Reservation, TeamLimits, Ticket, Unavailable,
};
pub use memory_store::MemoryStore;
pub use redis_store::RedisStore;
pub use usage::{LimitKind, TeamUsage, UsageBook};

/// A configured team, as the current config describes it.
#[derive(Debug)]
pub struct Team {
    pub name: Arc<str>,
    pub limits: TeamLimits,
    models: crate::glob::Patterns,
    usage: Arc<TeamUsage>,
    /// `on_disconnect` / `grace_secs`; `None`: not set for this team.
    pub on_disconnect: Option<OnDisconnect>,
    config: TeamConfig,
}

impl Team {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.matches(model)
    }
}

/// The authenticated caller: a team, or nobody in open mode.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub team: Option<Arc<Team>>,
}

impl Caller {
    pub fn team_name(&self) -> Option<&str> {
        self.team.as_deref().map(|t| &*t.name)
    }
}

#[derive(Debug, Default)]
struct Table {
    teams: Vec<Arc<Team>>,
    keys: auth::KeyTable,
}

impl Table {
    fn build(teams: Vec<TeamConfig>, window: Duration, usage: &UsageBook) -> Self {
        let mut table = Table::default();
        for (i, t) in teams.into_iter().enumerate() {
            for h in &t.api_keys_sha256 {
                // The config validated every hash; a bad one would simply never match.
                let _ = table.keys.add(h, u32::try_from(i).unwrap_or(u32::MAX));
            }
            table.teams.push(Arc::new(Team {
                name: t.name.as_str().into(),
                limits: TeamLimits::from_config(&t, window),
                models: crate::glob::Patterns::compiled(&t.models),
                usage: usage.team(&t.name),
                // Validated with the rest of the config; a bad one would mean "not set".
                on_disconnect: OnDisconnect::parse(t.on_disconnect.as_deref(), t.grace_secs)
                    .ok()
                    .flatten(),
                config: t,
            }));
        }
        table
    }

    fn find(&self, name: &str) -> Option<&Arc<Team>> {
        self.teams.iter().find(|t| &*t.name == name)
    }
}

#[derive(Debug)]
pub struct Access {
    table: RwLock<Arc<Table>>,
    store: Arc<dyn LimitStore>,
    usage: UsageBook,
}

impl Default for Access {
    fn default() -> Self {
        Self::new(Vec::new(), Duration::from_secs(60))
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
}

impl Access {
    /// Access with the in-memory limit store.
    pub fn new(teams: Vec<TeamConfig>, window: Duration) -> Self {
        Self::with_store(teams, window, Arc::new(MemoryStore::new()))
    }

    pub fn with_store(
        teams: Vec<TeamConfig>,
        window: Duration,
        store: Arc<dyn LimitStore>,
    ) -> Self {
        let usage = UsageBook::default();
        let table = Table::build(teams, window, &usage);
        Self {
            table: RwLock::new(Arc::new(table)),
            store,
            usage,
        }
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn open_mode(&self) -> bool {
        self.table().teams.is_empty()
    }

    /// Identifies the caller from `Authorization: Bearer` or `x-api-key`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, GatewayError> {
        let table = self.table();
        if table.teams.is_empty() {
            return Ok(Caller::default());
        }
        let unauthorized = |p: AuthProblem| {
            tracing::debug!(problem = ?p, "request refused: no valid API key");
            GatewayError::Unauthorized(p.message().to_owned())
        };
        let key = auth::presented_key(headers).map_err(unauthorized)?;
        let idx = table
            .keys
            .lookup(key)
            .ok_or_else(|| unauthorized(AuthProblem::Unknown))?;
        let team = table
            .teams
            .get(idx as usize)
            .ok_or_else(|| unauthorized(AuthProblem::Unknown))?;
        Ok(Caller {
            team: Some(team.clone()),
        })
    }

    /// The caller's team as the config now describes it (it may have been reloaded since the
    /// caller was authenticated); `None` in open mode or if the team is gone.
    fn current(&self, caller: &Caller) -> Option<Arc<Team>> {
        let team = caller.team.as_ref()?;
        self.table().find(&team.name).cloned()
    }

    /// May the caller use `model`?
    pub fn may_use(&self, caller: &Caller, model: &str) -> bool {
        match &caller.team {
            None => true,
            Some(t) => self
                .current(caller)
                .unwrap_or_else(|| t.clone())
                .may_use(model),
        }
    }

    /// Checks the caps on what `req` may ask for (for everyone: see `estimate`), then the
    /// caller's model permission and limits (one call to the limit store, none for a team
    /// without limits).
    pub async fn admit(
        &self,
        caller: &Caller,
        req: &ChatRequest,
    ) -> Result<Admission, GatewayError> {
        estimate::check_caps(req)?;
        if caller.team.is_none() {
            return Ok(Admission::default());
        }
        let Some(team) = self.current(caller) else {
            return Err(GatewayError::Unauthorized(
                AuthProblem::Unknown.message().to_owned(),
            ));
        };
        if !team.may_use(&req.model) {
            return Err(GatewayError::Forbidden(format!(
                "your team may not use the model '{}'",
                req.model
            )));
        }
        let l = team.limits;
        let prompt_estimate = estimate::prompt_tokens(req);
        let estimate =
            prompt_estimate.saturating_add(estimate::completion_budget(req, l.default_max_tokens));
        let admitted = if l.requests.is_none() && l.tokens.is_none() && l.streams.is_none() {
            Admitted {
                ticket: Ticket::default(),
                slot: false,
                reserved: 0,
                requests: LimitStatus::UNLIMITED,
                tokens: LimitStatus::UNLIMITED,
            }
        } else {
            match self.store.admit(&team.name, &l, estimate).await {
                Ok(Ok(a)) => a,
                Ok(Err(refusal)) => return Err(refused(&team, refusal, estimate)),
                Err(Unavailable) => {
                    tracing::debug!(team = %team.name, "request refused: the shared limits do not answer");
                    return Err(GatewayError::SharedStateUnavailable);
                }
            }
        };
        team.usage.admitted();
        Ok(Admission::new(
            self.store.clone(),
            team,
            admitted,
            prompt_estimate,
        ))
    }

    /// The `x-ratelimit-*` headers for a team response, showing where the limits stand now
    /// without taking from them. Empty in open mode.
    /// Empty too when the shared limits do not answer (`fail_closed`).
    pub async fn headers(&self, caller: &Caller) -> HeaderMap {
        let Some(team) = self.current(caller) else {
            return HeaderMap::new();
        };
        let l = &team.limits;
        if l.requests.is_none() && l.tokens.is_none() {
            return headers::rate_limit_headers(LimitStatus::UNLIMITED, LimitStatus::UNLIMITED);
        }
        match self.store.status(&team.name, l).await {
            Ok((requests, tokens)) => headers::rate_limit_headers(requests, tokens),
            Err(Unavailable) => HeaderMap::new(),
        }
    }

    /// Adds the `x-ratelimit-*` headers that a team response does not carry yet (an admitted
    /// request carries its own from the moment of admission).
    pub async fn fill_headers(&self, caller: &Caller, out: &mut HeaderMap) {
        if caller.team.is_none() || headers::ALL.iter().all(|h| out.contains_key(*h)) {
            return;
        }
        for (name, value) in self.headers(caller).await {
            if let Some(name) = name {
                if !out.contains_key(&name) {
                    out.insert::<HeaderName>(name, value);
                }
            }
        }
    }

    /// Replaces the teams (config reload). Limiter state is kept for every team that stays,
    /// and carried over to new limits for one whose limits changed (see `limits`); usage
    /// counters are kept for all. Refuses to drop from teams to open mode, which
    /// would serve without keys: that needs a restart.
    pub fn reload(&self, teams: Vec<TeamConfig>, window: Duration) -> Result<String, String> {
        crate::config::validate_teams(&teams).map_err(|e| e.to_string())?;
        let old = self.table();
        if !old.teams.is_empty() && teams.is_empty() {
            return Err(
                "the new config has no [[teams]]: switching to open mode (no keys) needs a restart"
                    .into(),
            );
        }
        let new = Table::build(teams, window, &self.usage);
        let mut added = Vec::new();
        let mut changed = Vec::new();
        let mut same = 0;
        for t in &new.teams {
            match old.find(&t.name) {
                None => added.push(t.name.to_string()),
                Some(o) if o.config != t.config || o.limits != t.limits => {
                    changed.push(t.name.to_string())
                }
                Some(_) => same += 1,
            }
        }
        let removed: Vec<String> = old
            .teams
            .iter()
            .filter(|t| new.find(&t.name).is_none())
            .map(|t| t.name.to_string())
            .collect();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(format!(
            "added [{}], changed [{}], removed [{}], unchanged {same}",
            added.join(", "),
            changed.join(", "),
            removed.join(", ")
        ))
    }

    /// `GET /v1/usage` for the caller's team; `None` in open mode.
    /// `open_streams` counts every instance's (this one's, if the shared limits do not answer).
    pub async fn usage(&self, caller: &Caller) -> Option<Value> {
        let stale = caller.team.as_ref()?;
        let team = self.current(caller).unwrap_or_else(|| stale.clone());
        let s = team.usage.snapshot();
        let l = team.limits;
        let open_streams = match self.store.open_streams(&team.name).await {
            Ok(n) => n,
            Err(Unavailable) => self.store.open_streams_here(&team.name),
        };
        let mut v = json!({ "object": "team.usage", "team": &*team.name });
        if let (Some(o), Value::Object(counts)) = (v.as_object_mut(), s.to_json()) {
            o.extend(counts);
            o.insert("open_streams".into(), open_streams.into());
            o.insert(
                "limits".into(),
                json!({
                    "requests_per_minute": l.requests,
                    "request_burst": l.burst,
                    "tokens_per_minute": l.tokens,
                    "max_concurrent_streams": l.streams,
                    "window_secs": l.window.as_secs_f64(),
                }),
            );
        }
        Some(v)
    }

    /// Registers the per-team families (`sluice_team_*`) for `/metrics`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.usage.register(registry, self.store.clone());
    }
}

/// The 429 for a refusal, with its message.
fn refused(team: &Team, refusal: Refusal, estimate: u64) -> GatewayError {
    let l = &team.limits;
    match refusal {
        Refusal::Concurrency => reject(
            team,
            LimitKind::Concurrency,
            Duration::from_secs(1),
            format!(
                "Too many concurrent streams for team '{}': limit {}. Try again when one of them has ended.",
                team.name,
                l.streams.unwrap_or_default()
            ),
        ),
        Refusal::Tokens(wait) => reject(
            team,
            LimitKind::Tokens,
            wait,
            format!(
                "Rate limit reached for team '{}' on tokens per minute: limit {}, requested {estimate} (prompt estimate plus max_tokens times n). Please try again in {}s.",
                team.name,
                l.tokens.unwrap_or_default(),
                retry_after_secs(wait)
            ),
        ),
        Refusal::Requests(wait) => reject(
            team,
            LimitKind::Requests,
            wait,
            format!(
                "Rate limit reached for team '{}' on requests per minute: limit {}. Please try again in {}s.",
                team.name,
                l.requests.unwrap_or_default(),
                retry_after_secs(wait)
            ),
        ),
    }
}

fn reject(team: &Team, kind: LimitKind, wait: Duration, message: String) -> GatewayError {
    team.usage.rejected(kind);
    tracing::debug!(team = %team.name, limit = kind.as_str(), "request refused: over the limit");
    GatewayError::RateLimited {
        kind: kind.as_str(),
        retry_after_secs: retry_after_secs(wait),
        message,
    }
}

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
