//! `[[routes]]`: a model name (or glob) served by `provider:model` targets in order or in turn,
//! checked against the providers.

use std::time::Duration;

use crate::glob;

use super::error::Problems;
use super::{
    ConfigError, OnDisconnect, ProviderSettings, RouteConfig, DEFAULT_ROUTE_COOLDOWN_SECS,
};

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
    /// `on_disconnect` / `grace_secs`; `None`: not set here.
    pub on_disconnect: Option<OnDisconnect>,
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
        let on_disconnect = match OnDisconnect::parse(r.on_disconnect.as_deref(), r.grace_secs) {
            Ok(o) => o,
            Err(problems) => {
                for (field, message) in problems {
                    p.push(ConfigError::new(key(field), message));
                }
                ok = false;
                None
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
                on_disconnect,
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
    fn disconnect_settings_of_routes_and_teams_are_checked_by_key() {
        let team = |extra: &str| {
            format!(
                "[[teams]]\nname = \"t\"\napi_keys_sha256 = [\"{}\"]\n{extra}\n",
                "0".repeat(64)
            )
        };
        let file = parse_toml(&format!(
            "[[routes]]\nmodel = \"a\"\ntargets = [\"openai:x\"]\non_disconnect = \"drop\"\n\
             [[routes]]\nmodel = \"b\"\ntargets = [\"openai:x\"]\ngrace_secs = 3601\n\
             [[routes]]\nmodel = \"c\"\ntargets = [\"openai:x\"]\non_disconnect = \"cancel\"\ngrace_secs = 5\n\
             {}{}",
            team("grace_secs = 86400"),
            team("on_disconnect = \"later\"").replace("\"t\"", "\"u\"").replace(
                &"0".repeat(64),
                &"1".repeat(64)
            ),
        ))
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
                "routes[0].on_disconnect",
                "routes[1].grace_secs",
                "teams[0].grace_secs",
                "teams[1].on_disconnect",
            ],
            "{e}"
        );

        let file = parse_toml(&format!(
            "[[routes]]\nmodel = \"a\"\ntargets = [\"openai:x\"]\non_disconnect = \"cancel\"\n\
             [[routes]]\nmodel = \"b\"\ntargets = [\"openai:x\"]\non_disconnect = \"grace\"\ngrace_secs = 2\n\
             [[routes]]\nmodel = \"c\"\ntargets = [\"openai:x\"]\n{}",
            team("on_disconnect = \"cancel\"")
        ))
        .unwrap();
        let s = Settings::resolve(
            file,
            &Flags::default(),
            &vars(&[("OPENAI_API_KEY", "sk-x")]),
        )
        .unwrap();
        let on: Vec<_> = s.routes.iter().map(|r| r.on_disconnect).collect();
        assert_eq!(
            on,
            [
                Some(OnDisconnect::Cancel),
                Some(OnDisconnect::Grace(Some(Duration::from_secs(2)))),
                None
            ]
        );
        assert_eq!(s.teams[0].on_disconnect.as_deref(), Some("cancel"));
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
