//! One request's plan: the targets to try, in order, and what a target's failure or answer
//! does to the plans of the requests after it (through its route's cooldowns).

use std::time::{Duration, Instant};

use provider_adapter::Provider;

use super::rotation::{Cooldowns, RoundRobin};
use crate::config::{OnDisconnect, RouteSettings, Strategy};
use crate::glob::Patterns;
use crate::metrics::Label;

/// A `[[routes]]` entry, resolved against the providers.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) name: String,
    pub(super) pattern: Patterns,
    /// `(index in ModelRouter::routes, upstream model)`.
    pub(super) targets: Vec<(usize, String)>,
    strategy: Strategy,
    round_robin: RoundRobin,
    cooldowns: Cooldowns,
    on_disconnect: Option<OnDisconnect>,
    /// `first_token_timeout_secs` (`None`: unset; zero: off).
    first_token_timeout: Option<Duration>,
}

impl Route {
    /// `targets` are `r`'s, resolved to provider indices.
    pub(super) fn new(r: &RouteSettings, targets: Vec<(usize, String)>) -> Self {
        Self {
            name: r.model.clone(),
            pattern: Patterns::compiled(std::slice::from_ref(&r.model)),
            cooldowns: Cooldowns::new(targets.len(), r.cooldown),
            targets,
            strategy: r.strategy,
            round_robin: RoundRobin::default(),
            on_disconnect: r.on_disconnect,
            first_token_timeout: r.first_token_timeout,
        }
    }

    /// The targets (indices in `targets`) to try at `now`: in the strategy's order, those
    /// cooling down left out unless all are, then the one whose cooldown ends first leads.
    pub(super) fn order(&self, now: Instant) -> Vec<usize> {
        let n = self.targets.len();
        let order = match self.strategy {
            Strategy::Fallback => (0..n).collect(),
            Strategy::RoundRobin => self.round_robin.next_order(n),
        };
        self.cooldowns.arrange(order, now)
    }
}

/// One upstream to try for a request.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub provider: &'a Provider,
    pub label: &'a Label,
    /// The model to send upstream; `None`: the client's.
    pub model: Option<&'a str>,
    /// Index in its route (for cooldowns); `None` for a plain provider match.
    pub(super) index: Option<usize>,
}

impl Target<'_> {
    /// How the target is named in errors and logs: `provider:model`, or the provider's name.
    pub fn describe(&self) -> String {
        match self.model {
            Some(m) => format!("{}:{m}", self.provider.name),
            None => self.provider.name.clone(),
        }
    }
}

/// The targets to try for one request, in order, and the route they belong to.
#[derive(Debug)]
pub struct Plan<'a> {
    pub targets: Vec<Target<'a>>,
    pub(super) route: Option<&'a Route>,
}

impl Plan<'_> {
    /// The route's name, when the request went through `[[routes]]`.
    pub fn route_name(&self) -> Option<&str> {
        self.route.map(|r| r.name.as_str())
    }

    /// The route's `on_disconnect`, when it went through one that sets it.
    pub fn on_disconnect(&self) -> Option<OnDisconnect> {
        self.route.and_then(|r| r.on_disconnect)
    }

    /// How long a target may take from its headers to its first content: the route's
    /// `first_token_timeout_secs` if set (0: none), else `global`.
    pub fn first_token_timeout(&self, global: Option<Duration>) -> Option<Duration> {
        match self.route.and_then(|r| r.first_token_timeout) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => global,
        }
    }

    /// A target failed retryably at `now`: skip it for the route's cooldown.
    pub fn failed(&self, t: &Target<'_>, now: Instant) {
        if let (Some(r), Some(i)) = (self.route, t.index) {
            r.cooldowns.failed(i, now);
        }
    }

    /// A target answered: it is no longer cooling down.
    pub fn served(&self, t: &Target<'_>) {
        if let (Some(r), Some(i)) = (self.route, t.index) {
            r.cooldowns.served(i);
        }
    }
}
