//! Who holds a key: the `[[teams]]` (checked at start and on every reload) and the keys that
//! may read `/metrics`. Keys are only ever configured as SHA-256 hashes.

use crate::glob;

use super::error::Problems;
use super::source::Sourced;
use super::{ConfigError, OnDisconnect, TeamConfig};

/// Checks the `[[teams]]` (at start, and on reload), reporting every problem.
pub fn validate_teams(teams: &[TeamConfig]) -> Result<(), ConfigError> {
    let mut p = Problems::default();
    check_teams(teams, &mut p);
    p.finish()
}

pub(super) fn check_teams(teams: &[TeamConfig], p: &mut Problems) {
    let mut names = Vec::new();
    let mut hashes: Vec<&str> = Vec::new();
    for (i, t) in teams.iter().enumerate() {
        let key = |field: &str| format!("teams[{i}].{field}");
        if t.name.trim().is_empty() {
            p.push(ConfigError::new(key("name"), "must not be empty"));
        }
        if names.contains(&&t.name) {
            p.push(ConfigError::new(
                key("name"),
                format!("'{}' is used by two teams", t.name),
            ));
        }
        names.push(&t.name);
        if t.api_keys_sha256.is_empty() {
            p.push(ConfigError::new(
                key("api_keys_sha256"),
                "list at least one key hash (see `sluice gen-key`)",
            ));
        }
        for (j, h) in t.api_keys_sha256.iter().enumerate() {
            if !is_sha256_hex(h) {
                p.push(ConfigError::new(
                    format!("teams[{i}].api_keys_sha256[{j}]"),
                    "must be 64 hex characters: the SHA-256 of a key, never the key itself",
                ));
            }
            if hashes.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                p.push(ConfigError::new(
                    format!("teams[{i}].api_keys_sha256[{j}]"),
                    "the same key hash is listed twice",
                ));
            }
            hashes.push(h);
        }
        if t.requests_per_minute == Some(0) {
            p.push(ConfigError::new(
                key("requests_per_minute"),
                "must be at least 1",
            ));
        }
        if t.request_burst == Some(0) {
            p.push(ConfigError::new(key("request_burst"), "must be at least 1"));
        }
        if t.tokens_per_minute == Some(0) {
            p.push(ConfigError::new(
                key("tokens_per_minute"),
                "must be at least 1",
            ));
        }
        if t.max_concurrent_streams == Some(0) {
            p.push(ConfigError::new(
                key("max_concurrent_streams"),
                "must be at least 1",
            ));
        }
        if t.default_max_tokens == Some(0) {
            p.push(ConfigError::new(
                key("default_max_tokens"),
                "must be at least 1",
            ));
        }
        if let Err(problems) = OnDisconnect::parse(t.on_disconnect.as_deref(), t.grace_secs) {
            for (field, message) in problems {
                p.push(ConfigError::new(key(field), message));
            }
        }
        for (j, m) in t.models.iter().enumerate() {
            if let Err(e) = glob::validate(m) {
                p.push(ConfigError::new(format!("teams[{i}].models[{j}]"), e));
            }
        }
    }
}

/// `metrics_api_keys_sha256`, lower case; and, with `metrics_require_key` on, at least one.
pub(super) fn metrics_keys(
    list: Option<&[String]>,
    require_key: &Sourced<bool>,
    p: &mut Problems,
) -> Vec<String> {
    let mut out = Vec::new();
    for (j, h) in list.into_iter().flatten().enumerate() {
        if !is_sha256_hex(h) {
            p.push(ConfigError::new(
                format!("metrics_api_keys_sha256[{j}]"),
                "must be 64 hex characters: the SHA-256 of a key, never the key itself",
            ));
        }
        out.push(h.to_ascii_lowercase());
    }
    if require_key.value && out.is_empty() {
        // Otherwise nobody could ever read /metrics: surely not what was meant.
        p.push(require_key.problem(
            "needs at least one key in metrics_api_keys_sha256 (`sluice gen-key` makes one)",
        ));
    }
    out
}

fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::super::{parse_toml, vars, FileConfig, Flags, Settings, Vars};

    #[test]
    fn metrics_keys_are_checked_and_required_by_the_key_that_asked() {
        let file = parse_toml(&format!(
            "metrics_api_keys_sha256 = [\"{}\", \"short\"]\n",
            "AB".repeat(32)
        ))
        .unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "metrics_api_keys_sha256[1]");
        let file = parse_toml(&format!(
            "metrics_api_keys_sha256 = [\"{}\"]\n",
            "AB".repeat(32)
        ))
        .unwrap();
        let s = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap();
        assert_eq!(s.metrics_keys_sha256, ["ab".repeat(32)]);
        let file = parse_toml("metrics_require_key = true\n").unwrap();
        let e = Settings::resolve(file, &Flags::default(), &Vars::new()).unwrap_err();
        assert_eq!(e.key, "metrics_require_key");
        let v = vars(&[("SLUICE_METRICS_REQUIRE_KEY", "1")]);
        let e = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap_err();
        assert_eq!(e.key, "SLUICE_METRICS_REQUIRE_KEY");
    }
}
