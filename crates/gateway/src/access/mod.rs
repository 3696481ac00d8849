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

mod auth;
pub mod estimate;
pub mod headers;
pub mod limits;
pub mod rate;
pub mod redis_store;
pub mod usage;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use provider_adapter::ChatRequest;
use serde_json::{json, Value};

use crate::config::TeamConfig;
use crate::error::GatewayError;
pub use auth::{presented_key, AuthProblem};
pub use limits::{
    Admitted, LimitStatus, LimitStore, MemoryStore, Origin, Refusal, Reservation, TeamLimits,
    Unavailable,
};
pub use redis_store::RedisStore;
pub use usage::{LimitKind, TeamUsage, UsageBook};

/// A configured team, as the current config describes it.
#[derive(Debug)]
pub struct Team {
    pub name: Arc<str>,
    pub limits: TeamLimits,
    models: crate::glob::Patterns,
    usage: Arc<TeamUsage>,
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

/// Admission of one request: headers to send, and a slot held until dropped.
///
/// Its token reservation ends in exactly one of: [`settle`](Self::settle) (the upstream's
/// usage), [`settle_estimated`](Self::settle_estimated) (the upstream did the work but reported
/// no usage), [`refund`](Self::refund) (the upstream refused), or being dropped: before
/// [`sent_upstream`](Self::sent_upstream) nothing is charged; after it (the client went away
/// while the upstream worked) the prompt estimate is.
#[derive(Debug, Default)]
pub struct Admission {
    pub headers: HeaderMap,
    charge: Option<Charge>,
}

impl Admission {
    /// The request is about to go upstream: from now on the upstream may be working on it.
    pub fn sent_upstream(&mut self) {
        if let Some(c) = self.charge.as_mut() {
            c.sent = true;
        }
    }

    /// Settles the token budget with what the generation really used.
    pub fn settle(mut self, prompt_tokens: u64, completion_tokens: u64) {
        if let Some(c) = self.charge.as_mut() {
            c.settle(prompt_tokens, completion_tokens);
        }
    }

    /// Settles a generation whose upstream reported no usage (or ended before reporting it):
    /// the prompt estimate, and `completion_estimate` (see `estimate`).
    pub fn settle_estimated(self, completion_estimate: u64) {
        let prompt = self.prompt_estimate();
        self.settle(prompt, completion_estimate);
    }

    /// Tokens taken from the team's budget for this generation so far (its reservation, and
    /// what [`take_more`](Self::take_more) added); `None` without a token limit.
    pub fn tokens_taken(&self) -> Option<u64> {
        self.charge
            .as_ref()
            .filter(|c| c.team.limits.tokens.is_some())
            .map(|c| c.reserved)
    }

    /// For a stream that has used `used` tokens (estimated as it goes), more than it took: takes
    /// the overrun and a chunk more ([`rate::stream_chunk`]) from the team's budget, as much of
    /// it as is there. Returns the new total taken, or `None` when the budget could not even
    /// cover the overrun: the stream must end (its settlement then charges what it generated).
    /// One store call per chunk, never per token.
    pub async fn take_more(&mut self, used: u64) -> Option<u64> {
        let c = self.charge.as_mut()?;
        let cap = c.team.limits.tokens?;
        let overrun = used.saturating_sub(c.reserved);
        let want = overrun.saturating_add(rate::stream_chunk(cap));
        let granted = c
            .store
            .take_more(&c.team.name, c.origin, &c.team.limits, want)
            .await
            // The shared store did not answer and fails closed: nothing more is granted.
            .unwrap_or(0);
        c.reserved = c.reserved.saturating_add(granted);
        (granted >= overrun).then_some(c.reserved)
    }

    /// What the prompt was estimated at when admitted (0 in open mode, which estimates
    /// nothing).
    pub fn prompt_estimate(&self) -> u64 {
        self.charge.as_ref().map_or(0, |c| c.prompt_estimate)
    }

    /// The upstream refused the request (an error status, or no connection): it did no work
    /// to charge, and the reservation comes back whole.
    pub fn refund(mut self) {
        if let Some(c) = self.charge.as_mut() {
            c.refund();
        }
    }
}

impl Admission {
    /// The team the request was admitted for (`None` in open mode): the owner of its stream.
    pub fn team(&self) -> Option<Arc<str>> {
        self.charge.as_ref().map(|c| c.team.name.clone())
    }
}

/// What an admitted request holds: its token reservation and its stream slot.
#[derive(Debug)]
struct Charge {
    store: Arc<dyn LimitStore>,
    team: Arc<Team>,
    /// Where the slot and the reservation are kept.
    origin: Origin,
    /// Tokens taken from the budget at admission, plus what a stream took as it went (0
    /// without a token limit): what settling gives back before taking the real usage.
    reserved: u64,
    prompt_estimate: u64,
    /// The stream slot held (its lease), if the team has a concurrency limit.
    slot: Option<u64>,
    /// The request went upstream: dropping the charge unsettled charges the prompt estimate.
    sent: bool,
    settled: bool,
}

impl Charge {
    /// Charges `prompt + completion` tokens in the usage counters and the budget, once.
    fn settle(&mut self, prompt: u64, completion: u64) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.team.usage.charged(prompt, completion);
        if self.team.limits.tokens.is_some() {
            self.store.clone().settle_later(
                self.team.name.clone(),
                self.origin,
                self.reserved,
                prompt.saturating_add(completion),
            );
        }
    }

    /// Gives the whole reservation back, charging nothing.
    fn refund(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        if self.reserved > 0 {
            self.store
                .clone()
                .settle_later(self.team.name.clone(), self.origin, self.reserved, 0);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.store
                .clone()
                .release_later(self.team.name.clone(), self.origin, slot);
        }
        if self.sent {
            // The client went away while the upstream was working on the request: the prompt
            // was sent and read, whatever came of it.
            self.settle(self.prompt_estimate, 0);
        } else {
            // Refused, or gone before anything was sent: nothing to charge.
            self.refund();
        }
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
                origin: Origin::Local,
                slot: None,
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
        Ok(Admission {
            headers: headers::rate_limit_headers(admitted.requests, admitted.tokens),
            charge: Some(Charge {
                store: self.store.clone(),
                team,
                origin: admitted.origin,
                reserved: admitted.reserved,
                prompt_estimate,
                slot: admitted.slot,
                sent: false,
                settled: false,
            }),
        })
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
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn team(name: &str, key_hash: &str) -> TeamConfig {
        TeamConfig {
            name: name.into(),
            api_keys_sha256: vec![key_hash.into()],
            requests_per_minute: None,
            request_burst: None,
            tokens_per_minute: None,
            max_concurrent_streams: None,
            default_max_tokens: None,
            models: vec!["*".into()],
        }
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        h
    }

    fn req(body: &str) -> ChatRequest {
        ChatRequest::parse(body.as_bytes()).unwrap()
    }

    const CHAT: &str =
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#;

    fn kind(e: &GatewayError) -> (&'static str, u64) {
        match e {
            GatewayError::RateLimited {
                kind,
                retry_after_secs,
                ..
            } => (kind, *retry_after_secs),
            other => panic!("not a 429: {other:?}"),
        }
    }

    #[tokio::test]
    async fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    #[tokio::test]
    async fn a_stream_takes_more_a_chunk_at_a_time_until_the_budget_is_empty() {
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        // 1600 a minute: chunks of 100.
        t.tokens_per_minute = Some(1600);
        let a = Access::new(vec![t], Duration::from_secs(60));
        let c = a.authenticate(&bearer(&k)).unwrap();
        let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
        let reserved = adm.tokens_taken().unwrap();
        assert_eq!(reserved, adm.prompt_estimate() + 10);
        // 5 past the reservation: the overrun and a chunk more.
        let taken = adm.take_more(reserved + 5).await.unwrap();
        assert_eq!(taken, reserved + 5 + 100);
        // Far past it: granted as much as is left, and that does not cover the overrun.
        assert_eq!(adm.take_more(taken + 5000).await, None);
        assert_eq!(adm.tokens_taken(), Some(1600));
        // The budget is empty: the next request is refused until it refills.
        let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
        assert_eq!(kind(&e).0, "tokens");
        // Settling what was generated: a debt of what went past the budget.
        adm.settle(0, 1600 + 50);
        // Open mode and teams without a token limit never take more.
        assert_eq!(Admission::default().tokens_taken(), None);
    }

    #[tokio::test]
    async fn open_mode_lets_everyone_in() {
        let a = Access::default();
        assert!(a.open_mode());
        let c = a.authenticate(&HeaderMap::new()).unwrap();
        assert!(c.team.is_none());
        let adm = a.admit(&c, &req(CHAT)).await.unwrap();
        assert!(adm.headers.is_empty());
        assert!(a.headers(&c).await.is_empty());
        assert!(a.usage(&c).await.is_none());
    }

    #[tokio::test]
    async fn keys_identify_teams() {
        let (k1, h1) = crate::keys::generate();
        let (k2, h2) = crate::keys::generate();
        let a = Access::new(
            vec![team("a", &h1), team("b", &h2)],
            Duration::from_secs(60),
        );
        assert_eq!(a.authenticate(&bearer(&k1)).unwrap().team_name(), Some("a"));
        assert_eq!(a.authenticate(&bearer(&k2)).unwrap().team_name(), Some("b"));
        for h in [HeaderMap::new(), bearer("sk-wrong"), bearer(&h1)] {
            let e = a.authenticate(&h).unwrap_err();
            assert!(matches!(e, GatewayError::Unauthorized(_)));
            assert!(!e.to_string().contains(&k1));
        }
    }

    #[tokio::test]
    async fn models_are_checked() {
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        t.models = vec!["sluice-*".into()];
        let a = Access::new(vec![t], Duration::from_secs(60));
        let c = a.authenticate(&bearer(&k)).unwrap();
        assert!(a.may_use(&c, "sluice-demo"));
        assert!(!a.may_use(&c, "gpt-4o"));
        let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
        assert!(matches!(e, GatewayError::Forbidden(_)));
    }

    #[tokio::test]
    async fn slots_come_back_on_drop_and_refusals_cost_nothing() {
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        t.max_concurrent_streams = Some(2);
        t.tokens_per_minute = Some(1000);
        let a = Access::new(vec![t], Duration::from_secs(60));
        let c = a.authenticate(&bearer(&k)).unwrap();
        let one = a.admit(&c, &req(CHAT)).await.unwrap();
        let two = a.admit(&c, &req(CHAT)).await.unwrap();
        let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
        assert_eq!(kind(&e), ("concurrency", 1));
        // The refused request reserved nothing: 2 x (prompt estimate + 10) are out.
        let est = estimate::prompt_tokens(&req(CHAT)) + 10;
        assert!(remaining_tokens(&a, &c).await <= 1000 - 2 * est);
        one.settle(5, 3);
        drop(two); // not settled: refunded
        assert!(remaining_tokens(&a, &c).await >= 1000 - 8 - 1);
        let u = a.usage(&c).await.unwrap();
        assert_eq!(u["requests"], 2);
        assert_eq!(u["prompt_tokens"], 5);
        assert_eq!(u["completion_tokens"], 3);
        assert_eq!(u["rejected"]["concurrency"], 1);
        assert_eq!(u["open_streams"], 0);
        let _again = a.admit(&c, &req(CHAT)).await.unwrap();
        assert_eq!(a.usage(&c).await.unwrap()["open_streams"], 1);
    }

    #[tokio::test]
    async fn token_budget_refuses_with_the_wait() {
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        // 600 tokens per 6 s: 100 a second.
        t.tokens_per_minute = Some(600);
        let a = Access::new(vec![t], Duration::from_secs(6));
        let c = a.authenticate(&bearer(&k)).unwrap();
        // Prompt estimate: 59 bytes of body -> 15; with max_tokens 485: 500.
        let big = req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":485}"#);
        assert_eq!(estimate::prompt_tokens(&big), 15);
        let adm = a.admit(&c, &big).await.unwrap();
        assert_eq!(adm.headers["x-ratelimit-limit-tokens"], "600");
        assert_eq!(adm.headers["x-ratelimit-remaining-tokens"], "100");
        assert_eq!(adm.headers["x-ratelimit-reset-tokens"], "5s");
        adm.settle(8, 192); // 200 used, 300 back: 400 left
        let e = a.admit(&c, &big).await.unwrap_err();
        assert_eq!(kind(&e), ("tokens", 1));
        let cut = a
            .admit(
                &c,
                &req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":285}"#),
            )
            .await;
        let cut = cut.unwrap();
        cut.settle_estimated(2); // prompt estimate 15 + 2 estimated
        let u = a.usage(&c).await.unwrap();
        assert_eq!(u["prompt_tokens"], 23);
        assert_eq!(u["completion_tokens"], 194);
        assert_eq!(u["rejected"]["tokens"], 1);
    }

    async fn remaining_tokens(a: &Access, c: &Caller) -> u64 {
        a.headers(c).await["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn what_an_admission_charges_on_each_way_it_ends() {
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        t.tokens_per_minute = Some(100_000);
        let a = Access::new(vec![t], Duration::from_secs(60));
        let c = a.authenticate(&bearer(&k)).unwrap();
        let p = estimate::prompt_tokens(&req(CHAT));
        async fn charged_to(a: &Access, c: &Caller) -> (u64, u64) {
            let u = a.usage(c).await.unwrap();
            (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
            )
        }
        // Dropped before it went upstream: nothing.
        drop(a.admit(&c, &req(CHAT)).await.unwrap());
        assert_eq!(charged_to(&a, &c).await, (0, 0));
        assert_eq!(remaining_tokens(&a, &c).await, 100_000);
        // Refused by the upstream: nothing.
        let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
        adm.sent_upstream();
        adm.refund();
        assert_eq!(charged_to(&a, &c).await, (0, 0));
        assert_eq!(remaining_tokens(&a, &c).await, 100_000);
        // The client left while the upstream worked: the prompt estimate.
        let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
        adm.sent_upstream();
        drop(adm);
        assert_eq!(charged_to(&a, &c).await, (p, 0));
        assert!((100_000 - p..=100_000 - p + 1).contains(&remaining_tokens(&a, &c).await));
        // No usage from the upstream: the prompt estimate and the completion's.
        let mut adm = a.admit(&c, &req(CHAT)).await.unwrap();
        adm.sent_upstream();
        adm.settle_estimated(40);
        assert_eq!(charged_to(&a, &c).await, (2 * p, 40));
        assert!(remaining_tokens(&a, &c).await <= 100_000 - 2 * p - 40 + 1);
    }

    #[tokio::test]
    async fn caps_apply_to_every_caller_before_any_limit() {
        let huge =
            req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":18446744073709551615}"#);
        let open = Access::default();
        let e = open.admit(&Caller::default(), &huge).await.unwrap_err();
        assert!(
            matches!(e, GatewayError::BadRequest { param: Some(ref p), .. } if p == "max_tokens")
        );
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        t.tokens_per_minute = Some(30);
        let a = Access::new(vec![t], Duration::from_secs(60));
        let c = a.authenticate(&bearer(&k)).unwrap();
        assert!(matches!(
            a.admit(&c, &huge).await.unwrap_err(),
            GatewayError::BadRequest { .. }
        ));
        assert_eq!(a.usage(&c).await.unwrap()["requests"], 0);
        assert_eq!(remaining_tokens(&a, &c).await, 30);
        // The biggest allowed request takes the whole budget, for one window at most.
        let big =
            req(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":16777216,"n":128}"#);
        let adm = a.admit(&c, &big).await.unwrap();
        assert_eq!(adm.headers["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(adm.headers["x-ratelimit-reset-tokens"], "1m0s");
        let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
        assert!(kind(&e).1 <= 60);
        drop(adm);
        assert_eq!(remaining_tokens(&a, &c).await, 30);
    }

    #[tokio::test]
    async fn request_limit_and_headers() {
        let (k, h) = crate::keys::generate();
        let mut t = team("a", &h);
        t.requests_per_minute = Some(60);
        t.request_burst = Some(3);
        let a = Access::new(vec![t], Duration::from_secs(60));
        let c = a.authenticate(&bearer(&k)).unwrap();
        let h0 = a.headers(&c).await;
        assert_eq!(h0["x-ratelimit-limit-requests"], "60");
        assert_eq!(h0["x-ratelimit-remaining-requests"], "3");
        assert_eq!(h0["x-ratelimit-reset-requests"], "0s");
        assert_eq!(h0["x-ratelimit-limit-tokens"], "4294967295");
        for left in ["2", "1", "0"] {
            let adm = a.admit(&c, &req(CHAT)).await.unwrap();
            assert_eq!(adm.headers["x-ratelimit-remaining-requests"], left);
        }
        let e = a.admit(&c, &req(CHAT)).await.unwrap_err();
        assert_eq!(kind(&e), ("requests", 1));
        let mut out = HeaderMap::new();
        out.insert(
            "x-ratelimit-limit-requests",
            HeaderValue::from_static("keep"),
        );
        a.fill_headers(&c, &mut out).await;
        assert_eq!(out.len(), 6);
        assert_eq!(out["x-ratelimit-limit-requests"], "keep");
        assert_eq!(out["x-ratelimit-remaining-requests"], "0");
        assert_eq!(a.usage(&c).await.unwrap()["rejected"]["requests"], 1);
    }

    #[tokio::test]
    async fn reload_keeps_unchanged_limiters_and_counters() {
        let (ka, ha) = crate::keys::generate();
        let (kb, hb) = crate::keys::generate();
        let (kc, hc) = crate::keys::generate();
        let limited = |name: &str, h: &str| {
            let mut t = team(name, h);
            t.requests_per_minute = Some(60);
            t.request_burst = Some(1);
            t
        };
        let w = Duration::from_secs(60);
        let a = Access::new(vec![limited("a", &ha), limited("b", &hb)], w);
        let ca = a.authenticate(&bearer(&ka)).unwrap();
        let cb = a.authenticate(&bearer(&kb)).unwrap();
        drop(a.admit(&ca, &req(CHAT)).await.unwrap());
        drop(a.admit(&cb, &req(CHAT)).await.unwrap());
        assert!(a.admit(&ca, &req(CHAT)).await.is_err());
        assert!(a.admit(&cb, &req(CHAT)).await.is_err());
        // b gets a bigger burst and a new key; a is unchanged; c is new.
        let mut b2 = limited("b", &hb);
        b2.request_burst = Some(5);
        b2.api_keys_sha256.push(hc.clone());
        let summary = a.reload(vec![limited("a", &ha), b2], w).expect("reload");
        assert!(summary.contains("changed [b]"), "{summary}");
        assert!(
            a.admit(&ca, &req(CHAT)).await.is_err(),
            "a's limiter was reset"
        );
        // The caller authenticated before the reload is admitted under b's new limits.
        assert!(a.admit(&cb, &req(CHAT)).await.is_ok());
        assert_eq!(a.authenticate(&bearer(&kc)).unwrap().team_name(), Some("b"));
        assert_eq!(a.usage(&ca).await.unwrap()["requests"], 1);
        assert_eq!(a.usage(&ca).await.unwrap()["rejected"]["requests"], 2);
        // To open mode: refused. A bad table: refused.
        assert!(a.reload(vec![], w).is_err());
        assert!(a.reload(vec![team("x", "nothex")], w).is_err());
        assert_eq!(a.authenticate(&bearer(&ka)).unwrap().team_name(), Some("a"));
        // Removing a team locks its callers out.
        a.reload(vec![limited("b", &hb)], w).unwrap();
        assert!(a.authenticate(&bearer(&ka)).is_err());
        assert!(matches!(
            a.admit(&ca, &req(CHAT)).await.unwrap_err(),
            GatewayError::Unauthorized(_)
        ));
        let mut registry = prometheus_client::registry::Registry::default();
        a.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("sluice_team_requests_total{team=\"a\"} 1"));
    }
}
