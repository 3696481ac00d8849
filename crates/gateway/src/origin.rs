//! Which web pages and which host names may reach the gateway.
//!
//! A browser lets any page send a "simple" cross-site POST, and DNS rebinding lets a page reach a
//! loopback server under the page's own host name. In open mode (no keys) either would spend the
//! operator's upstream keys, so:
//!
//! - **Origin**: a request that carries an `Origin` must come from the gateway's own page (the
//!   origin's `host[:port]` is the request's `Host`, or `X-Forwarded-Host` behind a proxy) or
//!   from an origin listed in `SLUICE_CORS_ORIGINS`; any other gets 403. Requests without an
//!   `Origin` (curl, SDKs, same-origin GETs) are not affected. A page cannot forge `Origin`, nor
//!   add `X-Forwarded-Host` without a preflight, which itself carries its foreign `Origin`.
//! - **Host**: in open mode on a loopback address, the `Host` must be a loopback name or address
//!   (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`) or listed in `SLUICE_ALLOWED_HOSTS`;
//!   any other gets 421. The same list applies in open mode on any address once it is set.
//!
//! CORS itself (the `Access-Control-*` answers) is tower-http's, built in `crate::app` from the
//! same list: off unless origins are configured.
//!
//! This module reads no configuration: the configuration uses [`normalize_origin`] to check its
//! lists and hands the checks a [`Policy`] (`Settings::web_policy`).

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Uri};

use crate::error::GatewayError;

/// What the checks of one request go by.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The address the gateway listens on: a `Host` naming it is the gateway's own.
    pub listen: IpAddr,
    /// No keys are configured, so a request from anywhere would spend the upstream keys.
    pub open_mode: bool,
    /// Origins allowed to call with CORS, normalised (`*` = any).
    pub cors_origins: &'a [String],
    /// Extra `Host` names accepted in open mode, lower case.
    pub allowed_hosts: &'a [String],
}

/// An origin as browsers serialise it: `scheme://host[:port]` in lower case, without a default
/// port or a trailing slash; `*` stays `*`. `None` if it is not one (a path, no scheme, ...).
pub fn normalize_origin(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw == "*" {
        return Some("*".into());
    }
    let lower = raw.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        || authority.is_empty()
        || authority
            .bytes()
            .any(|b| b"/?#@ ".contains(&b) || b.is_ascii_control())
    {
        return None;
    }
    let authority = strip_default_port(scheme, authority);
    Some(format!("{scheme}://{authority}"))
}

fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    match (scheme, authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host,
        _ => authority,
    }
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`), lower case, without a
/// trailing dot.
fn host_part(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` (a `Host` header value) names this machine's loopback interface, the address
/// the gateway listens on, or a name the operator allowed.
pub fn host_allowed(host: &str, listen: IpAddr, allowed: &[String]) -> bool {
    let name = host_part(host);
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        if ip.to_canonical().is_loopback() || ip == listen {
            return true;
        }
    }
    let full = host.trim().to_ascii_lowercase();
    allowed.iter().any(|a| {
        a == "*"
            || *a == full
            || *a == name
            || a.strip_prefix("*.")
                .is_some_and(|suffix| name.ends_with(&format!(".{suffix}")))
    })
}

/// Whether a request with this `Origin` may be served: the gateway's own page, or a listed
/// origin.
pub fn origin_allowed(origin: &str, headers: &HeaderMap, uri: &Uri, cors: &[String]) -> bool {
    let Some(origin) = normalize_origin(origin) else {
        // `null` (sandboxed frames, file: pages) or junk: only a wildcard lets it in.
        return cors.iter().any(|c| c == "*")
            || cors.iter().any(|c| c.eq_ignore_ascii_case(origin.trim()));
    };
    if cors.iter().any(|c| c == "*" || *c == origin) {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let own = |host: &str| {
        let host = host.trim().to_ascii_lowercase();
        strip_default_port(scheme, &host) == authority
    };
    request_host(headers, uri).is_some_and(own)
        || headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(own)
}

/// The request's `Host` (HTTP/1.1) or `:authority` (HTTP/2).
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// The checks above for one request, in the order a refusal is given.
pub fn check(policy: &Policy, headers: &HeaderMap, uri: &Uri) -> Result<(), GatewayError> {
    let listen = policy.listen;
    if policy.open_mode && (listen.is_loopback() || !policy.allowed_hosts.is_empty()) {
        if let Some(host) = request_host(headers, uri) {
            if !host_allowed(host, listen, policy.allowed_hosts) {
                return Err(GatewayError::MisdirectedHost(format!(
                    "this gateway runs without keys and answers only to loopback host names; \
                     '{}' is not one. To serve it under that name, add it to SLUICE_ALLOWED_HOSTS",
                    shorten(host)
                )));
            }
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !origin_allowed(text, headers, uri, policy.cors_origins) {
            return Err(GatewayError::ForeignOrigin(format!(
                "requests from the web origin '{}' are not allowed; the gateway's operator can allow it with SLUICE_CORS_ORIGINS",
                shorten(text)
            )));
        }
    }
    Ok(())
}

/// Client-supplied text quoted in an error: bounded.
fn shorten(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn origins_normalise_like_browsers() {
        assert_eq!(
            normalize_origin("HTTPS://Chat.Example.com:443/").as_deref(),
            Some("https://chat.example.com")
        );
        assert_eq!(
            normalize_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            normalize_origin("http://a.example:80").as_deref(),
            Some("http://a.example")
        );
        assert_eq!(normalize_origin("*").as_deref(), Some("*"));
        assert_eq!(normalize_origin("chat.example.com"), None);
        assert_eq!(normalize_origin("https://a.example/path"), None);
        assert_eq!(normalize_origin("https://user@a.example"), None);
        assert_eq!(normalize_origin("null"), None);
    }

    #[test]
    fn loopback_names_and_allowed_hosts() {
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:3000",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(host_allowed(ok, lo, &[]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "",
        ] {
            assert!(!host_allowed(bad, lo, &[]), "{bad}");
        }
        let allowed = vec!["chat.example.com".to_owned(), "*.corp.example".to_owned()];
        assert!(host_allowed("Chat.Example.com:443", lo, &allowed));
        assert!(host_allowed("a.corp.example", lo, &allowed));
        assert!(!host_allowed("corp.example", lo, &allowed));
        assert!(!host_allowed("chat.example.com.evil", lo, &allowed));
        // The address it listens on is its own name.
        let lan: IpAddr = "10.1.2.3".parse().expect("ip");
        assert!(host_allowed("10.1.2.3:8080", lan, &[]));
    }

    #[test]
    fn own_origin_is_the_host_or_the_forwarded_host() {
        let uri = Uri::from_static("/v1/streams");
        let h = headers(&[("host", "localhost:8080")]);
        assert!(origin_allowed("http://localhost:8080", &h, &uri, &[]));
        assert!(!origin_allowed("http://localhost:9090", &h, &uri, &[]));
        assert!(!origin_allowed("https://evil.example", &h, &uri, &[]));
        assert!(!origin_allowed("null", &h, &uri, &[]));
        let h = headers(&[("host", "chat.example.com:443")]);
        assert!(origin_allowed("https://chat.example.com", &h, &uri, &[]));
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "chat.example.com"),
        ]);
        assert!(origin_allowed("https://chat.example.com", &h, &uri, &[]));
        let cors = vec!["https://app.example".to_owned()];
        assert!(origin_allowed("https://APP.example", &h, &uri, &cors));
        assert!(!origin_allowed("https://app.example.evil", &h, &uri, &cors));
        assert!(origin_allowed(
            "https://any.example",
            &h,
            &uri,
            &["*".into()]
        ));
        assert!(origin_allowed("null", &h, &uri, &["*".into()]));
    }
}
