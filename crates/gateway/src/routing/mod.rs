//! Model routing: a `[[routes]]` entry whose model (exact or glob) matches a request's model
//! serves it through its targets (`provider:model`, tried in turn until one answers, see
//! [`Plan`]); otherwise the first provider whose model globs match serves it.

pub mod failover;
mod plan;
mod rotation;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provider_adapter::Provider;

use crate::config::RouteSettings;
use crate::glob::{self, Patterns};
use crate::metrics::Label;
use plan::Route;
pub use plan::{Plan, Target};

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
        self.model_routes.push(Route::new(r, targets));
    }

    /// What to try for `model` now (see [`Self::plan_at`]).
    pub fn plan(&self, model: &str) -> Option<Plan<'_>> {
        self.plan_at(model, Instant::now())
    }

    /// What to try for `model` at `now`: a route's targets (in its strategy's order, those
    /// cooling down left out unless all are, then the one whose cooldown ends first leads), or
    /// the one provider whose globs match.
    pub fn plan_at(&self, model: &str, now: Instant) -> Option<Plan<'_>> {
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
        let targets = route
            .order(now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;
    use provider_adapter::{ProviderKind, Timeouts};

    fn router(strategy: Strategy) -> ModelRouter {
        let mut r = ModelRouter::default();
        for name in ["a", "b", "c"] {
            let p = Provider::new(
                name,
                ProviderKind::OpenAi,
                "http://127.0.0.1:9",
                None,
                Timeouts::default(),
            )
            .unwrap();
            r.push(p, vec![format!("{name}-*")]);
        }
        r.push_route(&RouteSettings {
            model: "smart".into(),
            targets: ["a", "b", "c"]
                .iter()
                .map(|p| (p.to_string(), format!("{p}-1")))
                .collect(),
            strategy,
            cooldown: Duration::from_secs(10),
            on_disconnect: None,
            first_token_timeout: None,
        });
        r
    }

    #[test]
    fn a_routes_first_token_timeout_wins_over_the_global_one() {
        let global = Some(Duration::from_secs(30));
        let mut r = router(Strategy::Fallback);
        assert_eq!(r.plan("smart").unwrap().first_token_timeout(global), global);
        assert_eq!(r.plan("a-x").unwrap().first_token_timeout(global), global);
        for (model, secs) in [("quick", 5), ("patient", 0)] {
            r.push_route(&RouteSettings {
                model: model.into(),
                targets: vec![("a".into(), "a-1".into())],
                strategy: Strategy::Fallback,
                cooldown: Duration::from_secs(10),
                on_disconnect: None,
                first_token_timeout: Some(Duration::from_secs(secs)),
            });
        }
        let quick = r.plan("quick").unwrap().first_token_timeout(global);
        assert_eq!(quick, Some(Duration::from_secs(5)));
        // 0 on a route: no limit there, whatever the global setting.
        assert_eq!(r.plan("patient").unwrap().first_token_timeout(global), None);
        assert_eq!(r.plan("smart").unwrap().first_token_timeout(None), None);
    }

    fn tried(plan: &Plan<'_>) -> Vec<String> {
        plan.targets.iter().map(Target::describe).collect()
    }

    #[test]
    fn a_failed_target_goes_out_of_the_plans_for_its_cooldown() {
        let r = router(Strategy::Fallback);
        let t0 = Instant::now();
        let plan = r.plan_at("smart", t0).unwrap();
        assert_eq!(plan.route_name(), Some("smart"));
        assert_eq!(tried(&plan), ["a:a-1", "b:b-1", "c:c-1"]);
        plan.failed(&plan.targets[0], t0);
        let later = r.plan_at("smart", t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(tried(&later), ["b:b-1", "c:c-1"]);
        let after = r.plan_at("smart", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(tried(&after), ["a:a-1", "b:b-1", "c:c-1"]);
        // A plain provider match has no route, and nothing to cool down.
        let plain = r.plan_at("b-7", t0).unwrap();
        assert_eq!(
            (plain.route_name(), tried(&plain)),
            (None, vec!["b".into()])
        );
        plain.failed(&plain.targets[0], t0);
        assert_eq!(tried(&r.plan_at("b-7", t0).unwrap()), ["b"]);
    }

    #[test]
    fn round_robin_plans_rotate_past_cooling_targets() {
        let r = router(Strategy::RoundRobin);
        let t0 = Instant::now();
        let first = r.plan_at("smart", t0).unwrap();
        assert_eq!(tried(&first), ["a:a-1", "b:b-1", "c:c-1"]);
        first.failed(&first.targets[1], t0);
        assert_eq!(tried(&r.plan_at("smart", t0).unwrap()), ["c:c-1", "a:a-1"]);
        assert_eq!(tried(&r.plan_at("smart", t0).unwrap()), ["c:c-1", "a:a-1"]);
        assert_eq!(tried(&r.plan_at("smart", t0).unwrap()), ["a:a-1", "c:c-1"]);
    }
}
