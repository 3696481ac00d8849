//! An admitted request's permit: the `x-ratelimit-*` headers it answers with, the stream slot it
//! holds until dropped, and the settling of its token reservation with the real usage.

use std::sync::Arc;

use axum::http::HeaderMap;

use super::limits::{Admitted, LimitStore, Ticket};
use super::{headers, rate, Team};

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
            .take_more(&c.team.name, c.ticket, &c.team.limits, want)
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

    /// The team's `on_disconnect` (as the config said at admission), if it sets one.
    pub fn on_disconnect(&self) -> Option<crate::config::OnDisconnect> {
        self.charge.as_ref().and_then(|c| c.team.on_disconnect)
    }
}

/// What an admitted request holds: its token reservation and its stream slot.
#[derive(Debug)]
struct Charge {
    store: Arc<dyn LimitStore>,
    team: Arc<Team>,
    /// What the store calls this admission (where it keeps its slot and reservation).
    ticket: Ticket,
    /// Tokens taken from the budget at admission, plus what a stream took as it went (0
    /// without a token limit): what settling gives back before taking the real usage.
    reserved: u64,
    prompt_estimate: u64,
    /// A stream slot is held (the team has a concurrency limit) and not given back yet.
    slot: bool,
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
                self.ticket,
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
                .settle_later(self.team.name.clone(), self.ticket, self.reserved, 0);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if std::mem::take(&mut self.slot) {
            self.store
                .clone()
                .release_later(self.team.name.clone(), self.ticket);
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

impl Admission {
    /// The permit for what the store `admitted` for `team`: settled and released back in
    /// `store`.
    pub(super) fn new(
        store: Arc<dyn LimitStore>,
        team: Arc<Team>,
        admitted: Admitted,
        prompt_estimate: u64,
    ) -> Self {
        Self {
            headers: headers::rate_limit_headers(admitted.requests, admitted.tokens),
            charge: Some(Charge {
                store,
                team,
                ticket: admitted.ticket,
                reserved: admitted.reserved,
                prompt_estimate,
                slot: admitted.slot,
                sent: false,
                settled: false,
            }),
        }
    }
}
