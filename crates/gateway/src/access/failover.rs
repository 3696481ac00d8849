//! What the limits do when Redis does not answer: the one place that decides between this
//! instance's own limits (`fail_open`) and a refusal (`fail_closed`, a 503).
//!
//! [`FailOver`] is the limit store the gateway uses with Redis: every call goes to the
//! [`RedisStore`]; when it is [`Unavailable`], an admission, a status or a stream's extra
//! tokens go to this instance's [`MemoryStore`] under `fail_open`, and stay unavailable under
//! `fail_closed`. An admission made in memory is settled and released in memory too (its
//! [`Ticket`] says so), and one made in Redis back in Redis: neither store hears of the
//! other's.

use std::sync::Arc;

use super::limits::{AdmitOutcome, LimitStatus, LimitStore, TeamLimits, Ticket, Unavailable};
use super::memory_store::MemoryStore;
use super::redis_store::RedisStore;
use crate::config::OnFailure;

/// The ticket of an admission made in memory. The memory store needs no ticket of its own,
/// and Redis tickets count up from 1, never reaching this.
const LOCAL: Ticket = Ticket(u64::MAX);

/// Redis, with this instance's own limits behind it: see the module docs.
#[derive(Debug)]
pub struct FailOver {
    shared: Arc<RedisStore>,
    local: MemoryStore,
    policy: OnFailure,
}

impl FailOver {
    pub fn new(shared: Arc<RedisStore>, policy: OnFailure) -> Self {
        Self {
            shared,
            local: MemoryStore::new(),
            policy,
        }
    }

    /// Redis did not answer: the store to go on with (`fail_open`), or none.
    fn fallback(&self) -> Option<&MemoryStore> {
        match self.policy {
            OnFailure::FailOpen => Some(&self.local),
            OnFailure::FailClosed => None,
        }
    }

    /// Whether an admission was made in this instance's memory (Redis did not answer).
    #[cfg(test)]
    pub(super) fn is_local(a: &super::Admitted) -> bool {
        a.ticket == LOCAL
    }
}

#[async_trait::async_trait]
impl LimitStore for FailOver {
    async fn admit(&self, team: &str, limits: &TeamLimits, estimate: u64) -> AdmitOutcome {
        match self.shared.admit(team, limits, estimate).await {
            Err(Unavailable) => {
                let local = self.fallback().ok_or(Unavailable)?;
                Ok(local
                    .admit_now(team, limits, estimate)
                    .map(|a| super::Admitted { ticket: LOCAL, ..a }))
            }
            shared => shared,
        }
    }

    async fn settle(
        &self,
        team: &str,
        ticket: Ticket,
        reserved: u64,
        used: u64,
    ) -> Result<(), Unavailable> {
        if ticket == LOCAL {
            self.local.settle_tokens(team, reserved, used);
            return Ok(());
        }
        // The reservation was made in Redis: there is nothing to settle it against here.
        self.shared.settle(team, ticket, reserved, used).await
    }

    async fn take_more(
        &self,
        team: &str,
        ticket: Ticket,
        limits: &TeamLimits,
        want: u64,
    ) -> Result<u64, Unavailable> {
        if ticket == LOCAL {
            return Ok(self.local.take_more_tokens(team, limits, want));
        }
        match self.shared.take_more(team, ticket, limits, want).await {
            // Like an admission: go on in memory, or say so.
            Err(Unavailable) => Ok(self
                .fallback()
                .ok_or(Unavailable)?
                .take_more_tokens(team, limits, want)),
            granted => granted,
        }
    }

    async fn release(&self, team: &str, ticket: Ticket) -> Result<(), Unavailable> {
        if ticket == LOCAL {
            self.local.close_stream(team);
            return Ok(());
        }
        self.shared.release(team, ticket).await
    }

    async fn status(
        &self,
        team: &str,
        limits: &TeamLimits,
    ) -> Result<(LimitStatus, LimitStatus), Unavailable> {
        match self.shared.status(team, limits).await {
            Err(Unavailable) => {
                let local = self.fallback().ok_or(Unavailable)?;
                Ok((
                    local.request_status(team, limits),
                    local.token_status(team, limits),
                ))
            }
            shared => shared,
        }
    }

    async fn open_streams(&self, team: &str) -> Result<u64, Unavailable> {
        // Every instance's in Redis, and the ones this instance holds in memory (Redis was
        // down when they were admitted).
        let shared = self.shared.open_streams(team).await?;
        Ok(shared.saturating_add(self.local.open_streams(team)))
    }

    fn open_streams_here(&self, team: &str) -> u64 {
        self.shared
            .open_streams_here(team)
            .saturating_add(self.local.open_streams(team))
    }

    fn settle_later(self: Arc<Self>, team: Arc<str>, ticket: Ticket, reserved: u64, used: u64) {
        if ticket == LOCAL {
            self.local.settle_tokens(&team, reserved, used);
        } else {
            self.shared
                .clone()
                .settle_later(team, ticket, reserved, used);
        }
    }

    fn release_later(self: Arc<Self>, team: Arc<str>, ticket: Ticket) {
        if ticket == LOCAL {
            self.local.close_stream(&team);
        } else {
            self.shared.clone().release_later(team, ticket);
        }
    }
}
