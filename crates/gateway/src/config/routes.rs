//! `[[routes]]`: a model name (or glob) served by `provider:model` targets in order or in turn,
//! checked against the providers.

use std::time::Duration;

use crate::glob;

use super::error::Problems;
use super::{ConfigError, ProviderSettings, RouteConfig, DEFAULT_ROUTE_COOLDOWN_SECS};

/// How a route orders its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In the order written.
    Fallback,
    /// Each request starts at the next target.
    RoundRobin,
}

/// A route, validated: targets split into `(provider name, upstream model)`.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub model: String,
    pub targets: Vec<(String, String)>,
    pub strategy: Strategy,
    pub cooldown: Duration,
    /// `first_token_timeout_secs`: `None` unset (the global value applies), zero off.
    pub first_token_timeout: Option<Duration>,
}

/// Checks `[[routes]]` against the providers (the env shortcuts `openai` and `anthropic`
/// included; `sluice-demo` when the demo is on), reporting every problem.
pub(super) fn resolve(
    list: &[RouteConfig],
    providers: &[ProviderSettings],
    demo: bool,
    p: &mut Problems,
) -> Vec<RouteSettings> {
    let known =
        |name: &str| providers.iter().any(|pr| pr.name == name) || (demo && name == "sluice-demo");
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let mut ok = true;
        if r.model.trim().is_empty() {
            p.push(ConfigError::new(key("model"), "must not be empty"));
            ok = false;
        } else if let Err(e) = glob::validate(&r.model) {
            p.push(ConfigError::new(key("model"), e));
            ok = false;
        }
        if let Some(j) = list[..i].iter().position(|o| o.model == r.model) {
            p.push(ConfigError::new(
                key("model"),
                format!(
                    "'{}' is already routed by routes[{j}]: this route is never reached",
                    r.model
                ),
            ));
            ok = false;
        }
        let strategy = match r.strategy.as_deref() {
            None | Some("fallback") => Strategy::Fallback,
            Some("round_robin") => Strategy::RoundRobin,
            Some(other) => {
                p.push(ConfigError::new(
                    key("strategy"),
                    format!("'{other}' is not a strategy (fallback | round_robin)"),
                ));
                ok = false;
                Strategy::Fallback
            }
        };
        if r.targets.is_empty() {
            p.push(ConfigError::new(
                key("targets"),
                "list at least one target, as provider:model",
            ));
            ok = false;
        }
        let mut targets = Vec::new();
        for (j, t) in r.targets.iter().enumerate() {
            let tkey = format!("routes[{i}].targets[{j}]");
            match t.split_once(':') {
                None => {
                    p.push(ConfigError::new(
                        tkey,
                        format!("'{t}' is not provider:model"),
                    ));
                    ok = false;
                }
                Some((prov, model)) if prov.is_empty() || model.is_empty() => {
                    p.push(ConfigError::new(
                        tkey,
                        format!("'{t}' is not provider:model (both parts are needed)"),
                    ));
                    ok = false;
                }
                Some((prov, model)) => {
                    if !known(prov) {
                        p.push(ConfigError::new(
                            tkey,
                            format!("no provider is named '{prov}'"),
                        ));
                        ok = false;
                    }
                    targets.push((prov.to_owned(), model.to_owned()));
                }
            }
        }
        if ok {
            out.push(RouteSettings {
                model: r.model.clone(),
                targets,
                strategy,
                cooldown: Duration::from_secs(
                    r.cooldown_secs.unwrap_or(DEFAULT_ROUTE_COOLDOWN_SECS),
                ),
                first_token_timeout: r.first_token_timeout_secs.map(Duration::from_secs),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{parse_toml, vars, Flags, Settings};
    use super::*;

    #[test]
    fn route_problems_are_all_reported() {
        let file = parse_toml(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nmodels = [\"x\"]\n\
             [[routes]]\nmodel = \"smart\"\ntargets = [\"p:qwen2.5:7b\", \"nope:m\", \"plain\"]\nstrategy = \"random\"\n\
             [[routes]]\nmodel = \"smart\"\ntargets = [\"openai:gpt-4o\"]\n\
             [[routes]]\nmodel = \"empty\"\n",
        )
        .unwrap();
        let e = Settings::resolve(
            file,
            &Flags::default(),
            &vars(&[("OPENAI_API_KEY", "sk-x")]),
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "routes[0].strategy",
                "routes[0].targets[1]",
                "routes[0].targets[2]",
                "routes[1].model",
                "routes[2].targets",
            ],
            "{e}"
        );
        let ok = parse_toml(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nmodels = [\"x\"]\n\
             [[routes]]\nmodel = \"smart\"\ntargets = [\"p:qwen2.5:7b\"]\n",
        )
        .unwrap();
        let s = Settings::resolve(ok, &Flags::default(), &vars(&[])).unwrap();
        assert_eq!(
            s.routes[0].targets,
            [("p".to_owned(), "qwen2.5:7b".to_owned())]
        );
        assert_eq!(
            s.routes[0].cooldown,
            Duration::from_secs(DEFAULT_ROUTE_COOLDOWN_SECS)
        );
    }

    #[test]
    fn first_token_timeouts_per_route_and_global_and_their_keys() {
        let toml = |route: &str, global: &str| {
            format!(
                "{global}[[providers]]\nname = \"p\"\nkind = \"openai\"\nmodels = [\"x\"]\n\
                 [[routes]]\nmodel = \"smart\"\ntargets = [\"p:a\", \"p:b\"]\n{route}"
            )
        };
        let resolve = |text: &str, env: &[(&str, &str)]| {
            Settings::resolve(parse_toml(text).unwrap(), &Flags::default(), &vars(env))
        };
        // Off by default.
        let s = resolve(&toml("", ""), &[]).unwrap();
        assert_eq!(
            (s.first_token_timeout, s.routes[0].first_token_timeout),
            (None, None)
        );
        // The route's own value; the global one from TOML or the environment.
        let s = resolve(
            &toml(
                "first_token_timeout_secs = 5\n",
                "upstream_first_token_timeout_secs = 7\n",
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.routes[0].first_token_timeout,
            Some(Duration::from_secs(5))
        );
        assert_eq!(s.first_token_timeout, Some(Duration::from_secs(7)));
        let s = resolve(
            &toml("first_token_timeout_secs = 0\n", ""),
            &[("SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS", "3")],
        )
        .unwrap();
        assert_eq!(s.first_token_timeout, Some(Duration::from_secs(3)));
        assert_eq!(s.routes[0].first_token_timeout, Some(Duration::ZERO));
        // Errors name the key.
        let e = resolve(
            &toml("", ""),
            &[("SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS", "soon")],
        )
        .unwrap_err();
        assert_eq!(e.key, "SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS", "{e}");
        let e = parse_toml(&toml("first_token_timeout_secs = -1\n", "")).unwrap_err();
        assert_eq!(e.key, "routes[0].first_token_timeout_secs", "{e}");
        let e = parse_toml(&toml("", "upstream_first_token_timeout_secs = \"x\"\n")).unwrap_err();
        assert_eq!(e.key, "upstream_first_token_timeout_secs", "{e}");
    }
}
