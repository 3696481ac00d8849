//! Model routing: the first provider whose model globs match a request's model serves it.

use provider_adapter::Provider;

use crate::glob;

#[derive(Debug, Default)]
pub struct ModelRouter {
    routes: Vec<(Provider, Vec<String>)>,
}

impl ModelRouter {
    pub fn push(&mut self, provider: Provider, models: Vec<String>) {
        self.routes.push((provider, models));
    }

    pub fn route(&self, model: &str) -> Option<&Provider> {
        self.routes
            .iter()
            .find(|(_, pats)| glob::any_matches(pats, model))
            .map(|(p, _)| p)
    }

    /// Every model name that can be listed: the exact (non-glob) names, in routing order.
    pub fn listed_models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (p, pats) in &self.routes {
            for m in pats.iter().filter(|m| !glob::is_glob(m)) {
                // Listed only if this provider is the one that would serve it.
                if self.route(m).is_some_and(|r| r.name == p.name)
                    && !out.iter().any(|(n, _)| n == m)
                {
                    out.push((m.clone(), p.name.clone()));
                }
            }
        }
        out
    }

    /// Providers whose globs can match more than they list (their upstream's own model list
    /// is consulted for `/v1/models`).
    pub fn glob_routes(&self) -> impl Iterator<Item = (&Provider, &[String])> {
        self.routes
            .iter()
            .filter(|(_, pats)| pats.iter().any(|p| glob::is_glob(p)))
            .map(|(p, pats)| (p, pats.as_slice()))
    }
}
