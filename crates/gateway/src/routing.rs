//! Model routing: the first provider whose model globs match a request's model serves it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provider_adapter::Provider;

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
        self.route(model).is_some_and(|r| r.name == provider.name)
    }

    /// Every model name the config names exactly (non-glob), in routing order, with the
    /// provider that serves it.
    pub fn listed_models(&self) -> ModelList {
        let mut out: ModelList = Vec::new();
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
