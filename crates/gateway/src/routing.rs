//! Model routing: a `[[routes]]` entry whose model (exact or glob) matches a request's model
//! serves it through its targets (`provider:model`, tried in turn until one answers, see
//! [`Plan`]); otherwise the first provider whose model globs match serves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provider_adapter::Provider;

use crate::config::{RouteSettings, Strategy};
use crate::glob::{self, Patterns};
use crate::metrics::Label;

/// How long upstream model lists are reused for `/v1/models`.
const MODEL_LIST_TTL: Duration = Duration::from_secs(60);

type ModelList = Vec<(String, String)>;

#[derive(Debug, Default)]
pub struct ModelRouter {
    routes: Vec<(Provider, Patterns)>,
    /// Metric labels, made once: each provider's name (by index in `routes`), and every model
    /// name the config writes out exactly. A model matched only by a glob is `other`, so that
    /// clients cannot mint label values.
    provider_labels: Vec<Label>,
    model_labels: HashMap<String, Label>,
    /// Upstream model lists of glob providers, with when they were fetched.
    cache: Mutex<Option<(Instant, ModelList)>>,
    /// `[[routes]]`, matched before the providers' globs.
    model_routes: Vec<Route>,
}

/// A `[[routes]]` entry, resolved against the providers.
#[derive(Debug)]
struct Route {
    name: String,
    pattern: Patterns,
    /// `(index in ModelRouter::routes, upstream model)`.
    targets: Vec<(usize, String)>,
    strategy: Strategy,
    cooldown: Duration,
    /// Round robin: where the next request starts.
    next: AtomicUsize,
    /// Per target: until when it is skipped after a retryable failure.
    cooling: Mutex<Vec<Option<Instant>>>,
}

/// One upstream to try for a request.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub provider: &'a Provider,
    pub label: &'a Label,
    /// The model to send upstream; `None`: the client's.
    pub model: Option<&'a str>,
    /// Index in its route (for cooldowns); `None` for a plain provider match.
    index: Option<usize>,
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
    route: Option<&'a Route>,
}

impl Plan<'_> {
    /// The route's name, when the request went through `[[routes]]`.
    pub fn route_name(&self) -> Option<&str> {
        self.route.map(|r| r.name.as_str())
    }

    /// A target failed retryably: skip it for the route's cooldown.
    pub fn failed(&self, t: &Target<'_>) {
        if let (Some(r), Some(i)) = (self.route, t.index) {
            if r.cooldown.is_zero() {
                return;
            }
            let mut c = r.cooling.lock().unwrap_or_else(|p| p.into_inner());
            c[i] = Some(Instant::now() + r.cooldown);
        }
    }

    /// A target answered: it is no longer cooling down.
    pub fn served(&self, t: &Target<'_>) {
        if let (Some(r), Some(i)) = (self.route, t.index) {
            let mut c = r.cooling.lock().unwrap_or_else(|p| p.into_inner());
            c[i] = None;
        }
    }
}

impl ModelRouter {
    pub fn push(&mut self, provider: Provider, models: Vec<String>) {
        for m in models.iter().filter(|m| !glob::is_glob(m)) {
            self.model_labels
                .entry(m.clone())
                .or_insert_with(|| m.as_str().into());
        }
        self.provider_labels.push(provider.name.as_str().into());
        self.routes.push((provider, Patterns::compiled(&models)));
    }

    /// Adds a route; targets whose provider is unknown are left out (config validation
    /// reports them before this).
    pub fn push_route(&mut self, r: &RouteSettings) {
        let targets: Vec<(usize, String)> = r
            .targets
            .iter()
            .filter_map(|(prov, model)| {
                let i = self.routes.iter().position(|(p, _)| p.name == *prov)?;
                Some((i, model.clone()))
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        if !glob::is_glob(&r.model) {
            self.model_labels
                .entry(r.model.clone())
                .or_insert_with(|| r.model.as_str().into());
        }
        self.model_routes.push(Route {
            name: r.model.clone(),
            pattern: Patterns::compiled(std::slice::from_ref(&r.model)),
            cooling: Mutex::new(vec![None; targets.len()]),
            targets,
            strategy: r.strategy,
            cooldown: r.cooldown,
            next: AtomicUsize::new(0),
        });
    }

    /// What to try for `model`: a route's targets (in its strategy's order, those cooling
    /// down left out unless all are, then the one whose cooldown ends first leads), or the
    /// one provider whose globs match.
    pub fn plan(&self, model: &str) -> Option<Plan<'_>> {
        let Some(route) = self.model_routes.iter().find(|r| r.pattern.matches(model)) else {
            let (provider, label) = self.route_labelled(model)?;
            return Some(Plan {
                targets: vec![Target {
                    provider,
                    label,
                    model: None,
                    index: None,
                }],
                route: None,
            });
        };
        let n = route.targets.len();
        let start = match route.strategy {
            Strategy::Fallback => 0,
            Strategy::RoundRobin => route.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        let order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        let now = Instant::now();
        let cooling = route
            .cooling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let until = |i: usize| cooling[i].filter(|t| *t > now);
        let mut ready: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| until(i).is_none())
            .collect();
        if ready.is_empty() {
            ready = order;
            ready.sort_by_key(|&i| until(i));
        }
        let targets = ready
            .into_iter()
            .map(|i| {
                let (p, m) = &route.targets[i];
                Target {
                    provider: &self.routes[*p].0,
                    label: &self.provider_labels[*p],
                    model: Some(m.as_str()),
                    index: Some(i),
                }
            })
            .collect();
        Some(Plan {
            targets,
            route: Some(route),
        })
    }

    pub fn route(&self, model: &str) -> Option<&Provider> {
        self.route_labelled(model).map(|(p, _)| p)
    }

    /// The provider serving `model`, with its metric label.
    pub fn route_labelled(&self, model: &str) -> Option<(&Provider, &Label)> {
        let i = self
            .routes
            .iter()
            .position(|(_, pats)| pats.matches(model))?;
        Some((&self.routes[i].0, &self.provider_labels[i]))
    }

    /// The metric label of a requested model: its name if the config lists it exactly, else
    /// `other`.
    pub fn model_label(&self, model: &str) -> Label {
        self.model_labels
            .get(model)
            .cloned()
            .unwrap_or_else(crate::metrics::other_label)
    }

    fn routes_to(&self, model: &str, provider: &Provider) -> bool {
        // A name a route claims is the route's, not the provider's.
        !self.model_routes.iter().any(|r| r.pattern.matches(model))
            && self.route(model).is_some_and(|r| r.name == provider.name)
    }

    /// Every model name the config names exactly (non-glob), in routing order, with the
    /// provider that serves it.
    pub fn listed_models(&self) -> ModelList {
        let mut out: ModelList = Vec::new();
        // Route names first (exact ones: a glob is not a model a client can pick from a list).
        for r in self.model_routes.iter().filter(|r| !glob::is_glob(&r.name)) {
            if !out.iter().any(|(n, _)| *n == r.name) {
                out.push((r.name.clone(), "sluice".to_owned()));
            }
        }
        for (p, pats) in &self.routes {
            for m in pats.as_written().iter().filter(|m| !glob::is_glob(m)) {
                if self.routes_to(m, p) && !out.iter().any(|(n, _)| n == m) {
                    out.push((m.clone(), p.name.clone()));
                }
            }
        }
        out
    }

    /// The listed models plus, for providers whose globs claim more than they name, the
    /// upstream's own list filtered to what routes there. Upstream lists are cached for a
    /// minute; an upstream that fails to answer contributes nothing.
    pub async fn all_models(&self) -> ModelList {
        let mut out = self.listed_models();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(t, _)| t.elapsed() < MODEL_LIST_TTL)
            .map(|(_, l)| l.clone());
        let fetched = match cached {
            Some(l) => l,
            None => {
                let mut list = ModelList::new();
                for (p, pats) in self
                    .routes
                    .iter()
                    .filter(|(_, pats)| pats.as_written().iter().any(|m| glob::is_glob(m)))
                {
                    let models = match tokio::time::timeout(Duration::from_secs(5), p.list_models())
                        .await
                    {
                        Ok(Ok(m)) => m,
                        Ok(Err(e)) => {
                            tracing::warn!(provider = %p.name, error = %e, "cannot list the upstream's models");
                            continue;
                        }
                        Err(_) => continue,
                    };
                    for m in models {
                        if pats.matches(&m) && self.routes_to(&m, p) {
                            list.push((m, p.name.clone()));
                        }
                    }
                }
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), list.clone()));
                list
            }
        };
        for (m, p) in fetched {
            if !out.iter().any(|(n, _)| *n == m) {
                out.push((m, p));
            }
        }
        out
    }
}
