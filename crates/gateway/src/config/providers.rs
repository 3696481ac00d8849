//! `[[providers]]` and the `OPENAI_API_KEY`/`ANTHROPIC_API_KEY` shortcuts: each provider's kind,
//! URL, key (read from the variable it names) and static headers, checked.

use std::collections::BTreeMap;

use crate::glob;

use super::error::Problems;
use super::source::Reader;
use super::{
    ConfigError, ProviderConfig, DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_OPENAI_BASE_URL,
    ENV_ANTHROPIC_API_KEY, ENV_ANTHROPIC_BASE_URL, ENV_OPENAI_API_KEY, ENV_OPENAI_BASE_URL,
};

/// A provider, resolved: its key read from the variables.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: provider_adapter::ProviderKind,
    pub base_url: String,
    pub api_key: Option<provider_adapter::Secret>,
    pub api_version: Option<String>,
    /// Static headers sent upstream, validated.
    pub headers: http::HeaderMap,
    pub models: Vec<String>,
}

/// Header names a provider's static `headers` may not set: credentials (a key belongs in
/// `api_key_env`, which keeps it out of logs and config dumps), and the headers that frame the
/// request or that Sluice sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "host",
    "x-request-id",
];

/// Validates a provider's static headers; problems are named `providers[i].headers.NAME`.
fn resolve_headers(
    i: usize,
    headers: &BTreeMap<String, String>,
    p: &mut Problems,
) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    for (name, value) in headers {
        let key = format!("providers[{i}].headers.{name}");
        let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
            p.push(ConfigError::new(key, "is not a valid HTTP header name"));
            continue;
        };
        if RESERVED_HEADERS.contains(&n.as_str()) {
            p.push(ConfigError::new(
                key,
                "may not be set here (credentials go in api_key_env; Sluice sets this header itself)",
            ));
            continue;
        }
        if out.contains_key(&n) {
            p.push(ConfigError::new(
                key,
                "is given twice (header names ignore case)",
            ));
            continue;
        }
        match http::HeaderValue::from_str(value) {
            Ok(v) => {
                out.insert(n, v);
            }
            Err(_) => p.push(ConfigError::new(
                key,
                "the value must be visible ASCII characters, spaces or tabs",
            )),
        }
    }
    out
}

/// The file's providers, then the environment's shortcuts; every problem is kept.
pub(super) fn resolve(list: &[ProviderConfig], r: &mut Reader) -> Vec<ProviderSettings> {
    use provider_adapter::{ProviderKind, Secret};
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, prov) in list.iter().enumerate() {
        let key = |field: &str| format!("providers[{i}].{field}");
        if prov.name.trim().is_empty() {
            r.push(ConfigError::new(key("name"), "must not be empty"));
        }
        if names.contains(&prov.name) {
            r.push(ConfigError::new(
                key("name"),
                format!("'{}' is used by two providers", prov.name),
            ));
        }
        names.push(prov.name.clone());
        let kind = match prov.kind.as_str() {
            "openai" => ProviderKind::OpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "azure" => ProviderKind::Azure,
            other => {
                r.push(ConfigError::new(
                    key("kind"),
                    format!("'{other}' is not a provider kind (openai | anthropic | azure)"),
                ));
                continue;
            }
        };
        let base_url = match (&prov.base_url, kind) {
            (Some(u), _) => u.clone(),
            (None, ProviderKind::OpenAi) => DEFAULT_OPENAI_BASE_URL.to_owned(),
            (None, ProviderKind::Anthropic) => DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            (None, ProviderKind::Azure) => {
                r.push(ConfigError::new(
                    key("base_url"),
                    "is required for kind azure (https://RESOURCE.openai.azure.com)",
                ));
                String::from("https://")
            }
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            r.push(ConfigError::new(
                key("base_url"),
                format!("'{base_url}' is not an http(s) URL"),
            ));
        }
        // Refused on the other kinds rather than ignored: an `api_version` there most likely
        // means a wrong `kind`, which would otherwise show only as 404s from the upstream.
        match (kind, &prov.api_version) {
            (ProviderKind::Azure, None) => r.push(ConfigError::new(
                key("api_version"),
                "is required for kind azure (for example \"2024-10-21\")",
            )),
            (ProviderKind::Azure, Some(v))
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
            {
                r.push(ConfigError::new(
                    key("api_version"),
                    format!("'{v}' is not an API version (for example \"2024-10-21\")"),
                ))
            }
            (ProviderKind::Azure, Some(_)) | (_, None) => {}
            (_, Some(_)) => r.push(ConfigError::new(
                key("api_version"),
                "is only for kind azure",
            )),
        }
        let headers = resolve_headers(i, &prov.headers, &mut r.problems);
        let api_key = match &prov.api_key_env {
            Some(name) => match r.var(name) {
                Some(v) => Some(Secret::new(v)),
                None => {
                    r.push(ConfigError::new(
                        key("api_key_env"),
                        format!("the variable {name} is not set"),
                    ));
                    None
                }
            },
            None => None,
        };
        for (j, m) in prov.models.iter().enumerate() {
            if let Err(e) = glob::validate(m) {
                r.push(ConfigError::new(format!("providers[{i}].models[{j}]"), e));
            }
        }
        out.push(ProviderSettings {
            name: prov.name.clone(),
            kind,
            base_url,
            api_key,
            api_version: prov.api_version.clone(),
            headers,
            models: prov.models.clone(),
        });
    }
    // Environment shortcuts: Anthropic claims claude-*, OpenAI every model no other claims.
    if let Some(k) = r.var(ENV_ANTHROPIC_API_KEY) {
        out.push(ProviderSettings {
            name: "anthropic".into(),
            kind: ProviderKind::Anthropic,
            base_url: r
                .var(ENV_ANTHROPIC_BASE_URL)
                .unwrap_or(DEFAULT_ANTHROPIC_BASE_URL)
                .to_owned(),
            api_key: Some(Secret::new(k)),
            api_version: None,
            headers: http::HeaderMap::new(),
            models: vec!["claude-*".into()],
        });
    }
    if let Some(k) = r.var(ENV_OPENAI_API_KEY) {
        out.push(ProviderSettings {
            name: "openai".into(),
            kind: ProviderKind::OpenAi,
            base_url: r
                .var(ENV_OPENAI_BASE_URL)
                .unwrap_or(DEFAULT_OPENAI_BASE_URL)
                .to_owned(),
            api_key: Some(Secret::new(k)),
            api_version: None,
            headers: http::HeaderMap::new(),
            models: vec!["*".into()],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{vars, FileConfig, Flags, Settings, DEFAULT_OPENAI_BASE_URL};

    #[test]
    fn env_shortcut_providers_come_last() {
        let v = vars(&[("OPENAI_API_KEY", "sk-a"), ("ANTHROPIC_API_KEY", "sk-b")]);
        let s = Settings::resolve(FileConfig::default(), &Flags::default(), &v).unwrap();
        assert_eq!(s.providers[0].models, vec!["claude-*"]);
        assert_eq!(s.providers[1].models, vec!["*"]);
        assert_eq!(s.providers[1].base_url, DEFAULT_OPENAI_BASE_URL);
        assert!(!format!("{:?}", s.providers).contains("sk-a"));
    }
}
