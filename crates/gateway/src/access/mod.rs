//! Who is calling and what they may do: team keys, model permissions, and the request, token
//! and concurrency limits. In open mode (no `[[teams]]`) every caller is let through.
//!
//! Handlers see only [`Access::authenticate`], [`Access::admit`] and the [`Admission`] it
//! returns: a permit that carries the `x-ratelimit-*` headers, holds a concurrency slot until it
//! is dropped, and settles the token budget with the real usage.

use std::sync::Arc;

use axum::http::HeaderMap;
use provider_adapter::ChatRequest;

use crate::config::TeamConfig;
use crate::error::GatewayError;

/// The authenticated caller: a team, or nobody in open mode.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub team: Option<Arc<str>>,
}

/// Admission of one request: headers to send, and a slot held until dropped.
#[derive(Debug, Default)]
pub struct Admission {
    pub headers: HeaderMap,
}

impl Admission {
    /// Settles the token budget with what the generation really used.
    pub fn settle(self, _prompt_tokens: u64, _completion_tokens: u64) {}
}

#[derive(Debug, Default)]
pub struct Access {
    teams: Vec<TeamConfig>,
}

impl Access {
    pub fn new(teams: Vec<TeamConfig>) -> Self {
        Self { teams }
    }

    pub fn open_mode(&self) -> bool {
        self.teams.is_empty()
    }

    /// Identifies the caller from `Authorization: Bearer` or `x-api-key`.
    pub fn authenticate(&self, _headers: &HeaderMap) -> Result<Caller, GatewayError> {
        Ok(Caller::default())
    }

    /// May the caller use `model`?
    pub fn may_use(&self, _caller: &Caller, _model: &str) -> bool {
        true
    }

    /// Checks the caller's model permission and limits for `req`.
    pub fn admit(&self, caller: &Caller, req: &ChatRequest) -> Result<Admission, GatewayError> {
        if !self.may_use(caller, &req.model) {
            return Err(GatewayError::Forbidden(format!(
                "your team may not use the model '{}'",
                req.model
            )));
        }
        Ok(Admission::default())
    }

    /// Headers for a team response that was not admitted against a model (e.g. `/v1/models`).
    pub fn headers(&self, _caller: &Caller) -> HeaderMap {
        HeaderMap::new()
    }
}
