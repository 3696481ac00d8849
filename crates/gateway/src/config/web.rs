//! Which web pages and host names may reach the gateway: the `cors_origins` and `allowed_hosts`
//! lists, checked, and the policy `crate::origin` applies to each request from them.

use super::source::{Key, Reader};
use super::{ConfigError, FileConfig, Settings, ENV_ALLOWED_HOSTS, ENV_CORS_ORIGINS};
use crate::origin;

/// Origins allowed to call with CORS, normalised (`*` = any); empty = CORS off.
pub(super) fn cors_origins(file: &FileConfig, r: &mut Reader) -> Vec<String> {
    let list = r.list(
        Key::new(ENV_CORS_ORIGINS, "cors_origins"),
        file.cors_origins.clone(),
    );
    r.problems
        .take(parse_origins(list.key, list.value))
        .unwrap_or_default()
}

/// Extra `Host` names accepted in open mode, lower case.
pub(super) fn allowed_hosts(file: &FileConfig, r: &mut Reader) -> Vec<String> {
    let list = r.list(
        Key::new(ENV_ALLOWED_HOSTS, "allowed_hosts"),
        file.allowed_hosts.clone(),
    );
    r.problems
        .take(parse_hosts(list.key, list.value))
        .unwrap_or_default()
}

impl Settings {
    /// What `crate::origin::check` applies to a request. `open_mode`: no teams are configured
    /// (known to the access layer, which may reload them).
    pub fn web_policy(&self, open_mode: bool) -> origin::Policy<'_> {
        origin::Policy {
            listen: self.addr.ip(),
            open_mode,
            cors_origins: &self.cors_origins,
            allowed_hosts: &self.allowed_hosts,
        }
    }
}

/// Origins as browsers serialise them: `scheme://host[:port]`, lower case, no path, no default
/// port; or `*` for any origin.
fn parse_origins(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|o| {
            origin::normalize_origin(&o).ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!(
                        "'{o}' is not an origin: write scheme://host[:port] (e.g. https://chat.example.com), or * for any"
                    ),
                )
            })
        })
        .collect()
}

/// Host names (optionally with `:port`), lower case.
fn parse_hosts(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|h| {
            let lower = h.trim().to_ascii_lowercase();
            let ok = !lower.is_empty()
                && lower.len() <= 253
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_*".contains(&b));
            if ok {
                Ok(lower)
            } else {
                Err(ConfigError::new(
                    key,
                    format!(
                        "'{h}' is not a host name (e.g. chat.example.com or chat.example.com:8443)"
                    ),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{parse_toml, vars, Flags, Vars};
    use super::*;

    #[test]
    fn lists_are_normalised_and_named_by_their_source() {
        let file = parse_toml(
            "cors_origins = [\"HTTPS://App.Example:443/\"]\nallowed_hosts = [\"Chat.Example.com\"]\n",
        )
        .unwrap();
        let s = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.cors_origins, ["https://app.example"]);
        assert_eq!(s.allowed_hosts, ["chat.example.com"]);
        let v = vars(&[
            ("SLUICE_CORS_ORIGINS", "http://a.example, *"),
            ("SLUICE_ALLOWED_HOSTS", "*.corp.example"),
        ]);
        let s = Settings::resolve(file, &Flags::default(), &v).unwrap();
        assert_eq!(s.cors_origins, ["http://a.example", "*"]);
        assert_eq!(s.allowed_hosts, ["*.corp.example"]);
        let policy = s.web_policy(true);
        assert_eq!(policy.listen, s.addr.ip());
        assert!(policy.open_mode);
        assert_eq!(policy.allowed_hosts, ["*.corp.example"]);

        let file =
            parse_toml("cors_origins = [\"a.example\"]\nallowed_hosts = [\"a b\"]\n").unwrap();
        let e = Settings::resolve(file.clone(), &Flags::default(), &Vars::new()).unwrap_err();
        let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
        assert_eq!(keys, ["cors_origins", "allowed_hosts"], "{e}");
        let v = vars(&[
            ("SLUICE_CORS_ORIGINS", "a.example"),
            ("SLUICE_ALLOWED_HOSTS", "a b"),
        ]);
        let e = Settings::resolve(file, &Flags::default(), &v).unwrap_err();
        let keys: Vec<&str> = e.problems().map(|(k, _)| k).collect();
        assert_eq!(keys, ["SLUICE_CORS_ORIGINS", "SLUICE_ALLOWED_HOSTS"], "{e}");
    }
}
