//! Failover: a plan's targets tried in turn before any response header is sent, and for a
//! stream until its first content (never once content has been sent), and the one error that
//! answers when every target failed.

use std::future::Future;
use std::time::Instant;

use axum::http::StatusCode;
use provider_adapter::{AdapterError, ChatRequest, Provider};

use super::{Plan, Target};
use crate::error::GatewayError;
use crate::metrics::Metrics;

/// When an attempt failed: before its headers, or after a 200 but before its first content
/// (`generation::first_content`). The label of `sluice_failovers_by_phase_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Headers,
    FirstToken,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Self::Headers => "headers",
            Self::FirstToken => "first_token",
        }
    }
}

/// A failed attempt: the error and when it came.
#[derive(Debug)]
pub struct Attempt {
    pub error: AdapterError,
    pub phase: Phase,
}

impl Attempt {
    pub fn first_token(error: AdapterError) -> Self {
        Self {
            error,
            phase: Phase::FirstToken,
        }
    }

    /// Whether the next target is tried: [`AdapterError::is_retryable`] before the headers,
    /// [`AdapterError::is_retryable_before_content`] after them.
    fn is_retryable(&self) -> bool {
        match self.phase {
            Phase::Headers => self.error.is_retryable(),
            Phase::FirstToken => self.error.is_retryable_before_content(),
        }
    }
}

impl From<AdapterError> for Attempt {
    fn from(error: AdapterError) -> Self {
        Self {
            error,
            phase: Phase::Headers,
        }
    }
}

/// Tries `plan`'s targets in turn with `call` (the request carrying each target's model, and
/// whether this target is the last to try) until one answers, and returns its answer and the
/// target. A retryable failure moves on (and cools the target down); any other is returned at
/// once. When every target failed: with one target, its error as is; with more, the last
/// failure's status and a message naming each target tried and why.
pub async fn try_targets<'a, T, F, Fut>(
    metrics: &Metrics,
    plan: &Plan<'a>,
    req: &ChatRequest,
    mut call: F,
) -> Result<(T, Target<'a>), GatewayError>
where
    F: FnMut(&'a Provider, ChatRequest, bool) -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let mut tried: Vec<(String, AdapterError)> = Vec::new();
    let mut previous: Option<(&Target<'a>, Phase)> = None;
    let last = plan.targets.len().saturating_sub(1);
    for (i, t) in plan.targets.iter().enumerate() {
        if let Some((from, phase)) = previous {
            metrics.failover(from.label, t.label);
            metrics.failover_phase(phase.label());
            tracing::info!(from = %from.describe(), to = %t.describe(), phase = phase.label(), "failing over");
        }
        let mut r = req.clone();
        if let Some(m) = t.model {
            r.model = m.to_owned();
            r.body
                .insert("model".into(), serde_json::Value::String(m.to_owned()));
        }
        metrics.upstream_request(t.label);
        match call(t.provider, r, i == last).await {
            Ok(v) => {
                plan.served(t);
                return Ok((v, t.clone()));
            }
            Err(a) => {
                let e = &a.error;
                metrics.upstream_error(t.label, e);
                tracing::warn!(provider = %t.provider.name, target = %t.describe(), error = %e, phase = a.phase.label(), "upstream request failed");
                if !a.is_retryable() {
                    return Err(a.error.into());
                }
                plan.failed(t, Instant::now());
                previous = Some((t, a.phase));
                tried.push((t.describe(), a.error));
            }
        }
    }
    Err(all_failed(plan.route_name(), tried))
}

/// The answer when every target failed (see [`try_targets`]).
fn all_failed(route: Option<&str>, mut tried: Vec<(String, AdapterError)>) -> GatewayError {
    if tried.len() <= 1 {
        return match tried.pop() {
            Some((_, e)) => e.into(),
            None => GatewayError::Unavailable("no upstream to try".into()),
        };
    }
    let last = &tried[tried.len() - 1].1;
    let (status, retry_after) = if tried.iter().all(|(_, e)| e.is_rate_limited()) {
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some(last.retry_after().unwrap_or("1").to_owned()),
        )
    } else {
        match crate::error::upstream_status(last) {
            s if s.is_server_error() => (s, None),
            _ => (StatusCode::BAD_GATEWAY, None),
        }
    };
    let why: Vec<String> = tried
        .iter()
        .map(|(t, e)| {
            let reason = match e.upstream_status() {
                Some(s) => format!("HTTP {s}: {}", e.message()),
                None => e.to_string(),
            };
            format!("{t} ({reason})")
        })
        .collect();
    // Every provider refused the gateway's own keys: say so, so that an operator (and not the
    // client, whose key is fine) is the one who acts.
    let code = if tried
        .iter()
        .all(|(_, e)| matches!(e, AdapterError::Auth { .. }))
    {
        "upstream_auth_failed"
    } else {
        "all_targets_failed"
    };
    GatewayError::AllTargetsFailed {
        status,
        code,
        message: format!(
            "every target of '{}' failed: {}",
            route.unwrap_or("the model"),
            why.join("; ")
        ),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, retry_after: Option<&str>) -> AdapterError {
        AdapterError::Upstream {
            status: Some(status),
            kind: "x".into(),
            message: format!("said {status}"),
            code: None,
            param: None,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    fn auth(provider: &str) -> AdapterError {
        AdapterError::Auth {
            provider: provider.into(),
            status: 401,
        }
    }

    fn fail(tried: Vec<AdapterError>) -> GatewayError {
        let tried = tried
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("p{i}:m"), e))
            .collect();
        all_failed(Some("smart"), tried)
    }

    /// `(status, code, message, retry_after)` of an all-targets-failed error.
    fn parts(e: GatewayError) -> (u16, &'static str, String, Option<String>) {
        match e {
            GatewayError::AllTargetsFailed {
                status,
                code,
                message,
                retry_after,
            } => (status.as_u16(), code, message, retry_after),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn after_the_headers_more_fails_over_but_never_what_the_client_caused() {
        let in_stream = |kind: &str| AdapterError::Upstream {
            status: None,
            kind: kind.into(),
            message: "m".into(),
            code: None,
            param: None,
            retry_after: None,
        };
        let idle = AdapterError::Timeout {
            provider: "p".into(),
            phase: provider_adapter::TimeoutPhase::Idle,
        };
        let cut = AdapterError::Truncated("cut".into());
        for e in [in_stream("overloaded_error"), idle, cut] {
            assert!(!Attempt::from(e.clone()).is_retryable(), "{e:?}");
            assert!(Attempt::first_token(e.clone()).is_retryable(), "{e:?}");
        }
        assert!(!Attempt::first_token(in_stream("invalid_request_error")).is_retryable());
        // A status error is classified the same in either phase.
        assert!(Attempt::first_token(http(503, None)).is_retryable());
        assert!(!Attempt::first_token(http(400, None)).is_retryable());
        assert_eq!(
            (Phase::Headers.label(), Phase::FirstToken.label()),
            ("headers", "first_token")
        );
    }

    #[test]
    fn one_target_answers_with_its_own_error() {
        let e = fail(vec![http(503, None)]);
        assert!(matches!(e, GatewayError::Upstream(ref a) if a.upstream_status() == Some(503)));
        assert!(matches!(fail(vec![]), GatewayError::Unavailable(_)));
    }

    #[test]
    fn every_target_rate_limited_is_a_429_with_the_last_retry_after() {
        let (status, code, _, ra) = parts(fail(vec![http(429, Some("3")), http(429, Some("9"))]));
        assert_eq!(
            (status, code, ra.as_deref()),
            (429, "all_targets_failed", Some("9"))
        );
        let (_, _, _, ra) = parts(fail(vec![http(429, Some("3")), http(429, None)]));
        assert_eq!(ra.as_deref(), Some("1"));
    }

    #[test]
    fn otherwise_the_last_failures_server_status_or_502() {
        let (status, code, message, ra) = parts(fail(vec![
            http(429, Some("3")),
            AdapterError::Connect("refused".into()),
            http(529, None),
        ]));
        assert_eq!((status, code, ra), (503, "all_targets_failed", None));
        assert_eq!(
            message,
            "every target of 'smart' failed: p0:m (HTTP 429: said 429); \
             p1:m (upstream connection failed: refused); p2:m (HTTP 529: said 529)"
        );
        assert_eq!(parts(fail(vec![http(500, None), http(503, None)])).0, 502);
        // A last failure that is not a server error (a 408) still answers 502.
        assert_eq!(parts(fail(vec![http(500, None), http(408, None)])).0, 502);
        let timeout = AdapterError::Timeout {
            provider: "p".into(),
            phase: provider_adapter::TimeoutPhase::Headers,
        };
        assert_eq!(parts(fail(vec![http(500, None), timeout])).0, 504);
    }

    #[test]
    fn every_provider_refusing_the_gateways_keys_is_named_as_such() {
        let (status, code, _, _) = parts(fail(vec![auth("a"), auth("b")]));
        assert_eq!((status, code), (502, "upstream_auth_failed"));
        let (_, code, _, _) = parts(fail(vec![auth("a"), http(500, None)]));
        assert_eq!(code, "all_targets_failed");
    }
}
