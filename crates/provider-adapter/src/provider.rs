//! The I/O shell around the pure mapping modules: one [`Provider`] per configured upstream,
//! sending the request with reqwest, applying the three timeouts, and turning the response body
//! into a stream of normalised events.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::driver::drive;
use crate::{
    anthropic, azure, openai, AdapterError, ChatRequest, Secret, StreamEvent, TimeoutPhase, Usage,
};

/// A stream of normalised events. It ends after the first `Err`, and ends with `Ok` items only
/// when the upstream finished every choice. Dropping it closes the upstream connection.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, AdapterError>> + Send>>;

pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_HEADERS_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;
/// A non-streaming answer: its upstream sends the headers only with the whole answer.
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u64 = 600;

/// Idle upstream connections kept per host for reuse. Under steady load a connection goes back
/// to the pool and out again at once, so few are idle at any moment; the cap matters after a
/// burst, which would otherwise leave one idle connection (and its buffers) per stream it had.
pub const POOL_MAX_IDLE_PER_HOST: usize = 128;
/// How long an idle upstream connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest upstream error or non-streaming body Sluice reads.
const MAX_BODY_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until a stream's status line and headers.
    pub headers: Duration,
    pub idle: Duration,
    /// A whole non-streaming answer, headers and body.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            headers: Duration::from_secs(DEFAULT_HEADERS_TIMEOUT_SECS),
            idle: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            response: Duration::from_secs(DEFAULT_RESPONSE_TIMEOUT_SECS),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    /// Azure OpenAI deployments; needs [`Provider::with_api_version`].
    Azure,
}

/// A finished non-streaming answer: the `chat.completion` object a client receives.
#[derive(Debug, Clone)]
pub struct Completion {
    pub body: Value,
    pub usage: Option<Usage>,
}

/// What each upstream kind's pure mapping module provides.
pub(crate) trait StreamMapper: Send + 'static {
    /// Maps one SSE event (`event` is the SSE event name, `message` when none was given).
    /// Returns `Ok(true)` when the upstream said the stream is complete.
    fn on_event(
        &mut self,
        event: &str,
        data: &str,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, AdapterError>;

    /// Called once at the end (after the completion marker, or at end of input): checks that
    /// every choice finished, and may emit final events.
    fn on_end(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), AdapterError>;
}

/// An HTTP request ready to send: built by a pure function, so it can be tested as data.
pub(crate) struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    api_key: Option<Secret>,
    /// Azure's `api-version` query parameter.
    api_version: Option<String>,
    /// Static headers sent with every request, replacing a header of the same name that the
    /// kind's request builder set (`accept`, `anthropic-version`, ...). The gateway's config
    /// keeps credential and framing headers out of this list.
    headers: http::HeaderMap,
    client: reqwest::Client,
    timeouts: Timeouts,
    /// The streaming endpoint's URL, parsed once: parsing it for every request cost as much as
    /// a tenth of all the work a short answer makes.
    pub(crate) endpoint: Option<reqwest::Url>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("api_version", &self.api_version)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Provider {
    pub fn new(
        name: impl Into<String>,
        kind: ProviderKind,
        base_url: impl Into<String>,
        api_key: Option<Secret>,
        timeouts: Timeouts,
    ) -> Result<Self, AdapterError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build()
            .map_err(|e| AdapterError::Connect(e.to_string()))?;
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let endpoint = match kind {
            ProviderKind::OpenAi => Some(format!("{base_url}/chat/completions")),
            ProviderKind::Anthropic => Some(crate::anthropic::url(&base_url, "messages")),
            // Per model (the deployment is in the path).
            ProviderKind::Azure => None,
        }
        .and_then(|u| reqwest::Url::parse(&u).ok());
        Ok(Self {
            name: name.into(),
            kind,
            base_url,
            api_key,
            api_version: None,
            headers: http::HeaderMap::new(),
            client,
            timeouts,
            endpoint,
        })
    }

    /// Sets Azure's `api-version` (required for [`ProviderKind::Azure`], unused by the others).
    pub fn with_api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// Static headers sent upstream with every request (OpenRouter's `HTTP-Referer` and
    /// `X-Title`, an `anthropic-beta`, ...).
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn build(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<UpstreamRequest, AdapterError> {
        let key = self.api_key.as_ref().map(Secret::expose);
        let mut up = match self.kind {
            ProviderKind::OpenAi => openai::build_request(&self.base_url, key, req, stream),
            ProviderKind::Anthropic => anthropic::build_request(&self.base_url, key, req, stream)?,
            ProviderKind::Azure => {
                let version = self.api_version.as_deref().ok_or_else(|| {
                    AdapterError::Protocol(format!(
                        "provider '{}' is of kind azure but has no api_version",
                        self.name
                    ))
                })?;
                azure::build_request(&self.base_url, version, key, req, stream)
            }
        };
        if let Some(id) = &req.request_id {
            up.headers.push(("x-request-id", id.clone()));
        }
        Ok(up)
    }

    /// Sends `up` and waits up to `wait` for the status line and headers (`phase` names that
    /// wait when it runs out).
    async fn send(
        &self,
        up: UpstreamRequest,
        wait: Duration,
        phase: TimeoutPhase,
    ) -> Result<reqwest::Response, AdapterError> {
        let mut headers = http::HeaderMap::with_capacity(up.headers.len() + self.headers.len());
        for (k, v) in up.headers {
            let v = http::HeaderValue::try_from(v)
                .map_err(|_| AdapterError::Protocol(format!("header {k} has an invalid value")))?;
            headers.append(k, v);
        }
        for (k, v) in &self.headers {
            // Beta flags add up: the client's (its own Messages request) and the provider's.
            if k == "anthropic-beta" {
                if let Some(joined) = headers.get(k).and_then(|c| join_flags(c, v)) {
                    headers.insert(k, joined);
                    continue;
                }
            }
            headers.insert(k, v.clone());
        }
        let rb = match &self.endpoint {
            Some(url) if url.as_str() == up.url => self.client.post(url.clone()),
            _ => self.client.post(&up.url),
        };
        let rb = rb.body(up.body).headers(headers);
        let resp = match tokio::time::timeout(wait, rb.send()).await {
            Err(_) => return Err(self.timeout(phase)),
            Ok(Err(e)) if e.is_timeout() => return Err(self.timeout(TimeoutPhase::Connect)),
            Ok(Err(e)) => return Err(self.connect_error(e)),
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_from_response(resp).await)
    }

    /// The provider did not answer in time: named, never located (clients see it).
    pub(crate) fn timeout(&self, phase: TimeoutPhase) -> AdapterError {
        AdapterError::Timeout {
            provider: self.name.clone(),
            phase,
        }
    }

    /// A failure to reach the upstream, as clients may see it: the provider's name and the
    /// cause, not its URL (an internal host and port, an Azure resource and deployment). The
    /// log gets the URL.
    fn connect_error(&self, e: reqwest::Error) -> AdapterError {
        let e = e.without_url();
        tracing::debug!(provider = %self.name, base_url = %self.base_url, error = %error_chain(&e), "cannot reach the upstream");
        AdapterError::Connect(format!("provider '{}': {}", self.name, error_chain(&e)))
    }

    async fn error_from_response(&self, resp: reqwest::Response) -> AdapterError {
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403) {
            return AdapterError::Auth {
                provider: self.name.clone(),
                status,
            };
        }
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(resp, self.timeouts.idle, &self.name)
            .await
            .unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let mut err = parsed
            .as_ref()
            .and_then(|v| AdapterError::from_any_error_body(Some(status), v))
            .unwrap_or_else(|| {
                // The key is masked before the text is cut, so that a key straddling the cut
                // cannot leave its first half behind.
                let text = self.scrub_text(&String::from_utf8_lossy(&body));
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("upstream answered HTTP {status}")
                } else {
                    let cut: String = text.chars().take(500).collect();
                    format!("upstream answered HTTP {status}: {cut}")
                };
                AdapterError::Upstream {
                    status: Some(status),
                    kind: "upstream_error".into(),
                    message,
                    code: None,
                    param: None,
                    retry_after: None,
                }
            });
        if let AdapterError::Upstream {
            retry_after: ra, ..
        } = &mut err
        {
            *ra = retry_after;
        }
        self.scrub(err)
    }

    /// Removes this provider's key from an upstream-supplied message (some servers echo the
    /// key they were given in their "invalid key" errors).
    pub(crate) fn scrub(&self, mut err: AdapterError) -> AdapterError {
        if let AdapterError::Upstream { message, .. } = &mut err {
            *message = self.scrub_text(message);
        }
        err
    }

    fn scrub_text(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if !key.expose().is_empty() && text.contains(key.expose()) => {
                text.replace(key.expose(), "*****")
            }
            _ => text.to_owned(),
        }
    }

    /// Starts a streaming generation. Returns once the upstream has answered with its status
    /// line and headers: an HTTP error, refused connection or headers timeout is an `Err` here
    /// (so it can become a real HTTP status); everything after is an item of the stream.
    pub async fn stream(&self, req: &ChatRequest) -> Result<EventStream, AdapterError> {
        let up = self.build(req, true)?;
        let resp = self
            .send(up, self.timeouts.headers, TimeoutPhase::Headers)
            .await?;
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !content_type.starts_with("text/event-stream") {
            let err = AdapterError::Protocol(format!(
                "expected a text/event-stream response, got content type '{content_type}'"
            ));
            return Ok(Box::pin(futures::stream::once(async move { Err(err) })));
        }
        let mapper: Box<dyn StreamMapper> = match self.kind {
            ProviderKind::OpenAi | ProviderKind::Azure => Box::new(openai::ChunkMapper::default()),
            ProviderKind::Anthropic => Box::new(anthropic::StreamState::default()),
        };
        // Without the URL: a transport error's text reaches clients in the stream's failure.
        Ok(drive(
            resp.bytes_stream()
                .map(|r| r.map_err(reqwest::Error::without_url)),
            self.timeouts.idle,
            mapper,
            self.clone(),
        ))
    }

    /// The upstream's own count of a request's input tokens, where it has one: an Anthropic
    /// provider, asked with the client's own Messages request (`POST /v1/messages/count_tokens`
    /// with the keys that endpoint takes). `Ok(None)` for anything else: the gateway estimates.
    pub async fn count_tokens(&self, req: &ChatRequest) -> Result<Option<u64>, AdapterError> {
        if self.kind != ProviderKind::Anthropic {
            return Ok(None);
        }
        let key = self.api_key.as_ref().map(Secret::expose);
        let Some(mut up) = anthropic::build_count_tokens(&self.base_url, key, req) else {
            return Ok(None);
        };
        if let Some(id) = &req.request_id {
            up.headers.push(("x-request-id", id.clone()));
        }
        let resp = self
            .send(up, self.timeouts.headers, TimeoutPhase::Headers)
            .await?;
        let body = read_body(resp, self.timeouts.idle, &self.name).await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| AdapterError::Protocol(format!("token count is not JSON: {e}")))?;
        if let Some(err) = AdapterError::from_error_body(None, &value) {
            return Err(self.scrub(err));
        }
        anthropic::counted_tokens(&value).map(Some)
    }

    /// The upstream's own model list (`GET /models`), for `/v1/models` where a provider's globs
    /// claim more models than the config names.
    pub async fn list_models(&self) -> Result<Vec<String>, AdapterError> {
        let key = self
            .api_key
            .as_ref()
            .map(Secret::expose)
            .filter(|k| !k.is_empty());
        let rb = match self.kind {
            ProviderKind::OpenAi => {
                let rb = self.client.get(format!("{}/models", self.base_url));
                match key {
                    Some(k) => rb.bearer_auth(k),
                    None => rb,
                }
            }
            ProviderKind::Anthropic => {
                let base = self.base_url.strip_suffix("/v1").unwrap_or(&self.base_url);
                let rb = self
                    .client
                    .get(format!("{base}/v1/models?limit=1000"))
                    .header("anthropic-version", "2023-06-01");
                match key {
                    Some(k) => rb.header("x-api-key", k),
                    None => rb,
                }
            }
            // Azure lists base models, not deployments, and the deployments list is gone from
            // the data-plane API since 2023-03-15: a deployment is known only by its config.
            ProviderKind::Azure => return Ok(Vec::new()),
        };
        let rb = rb.headers(self.headers.clone());
        let resp = match tokio::time::timeout(self.timeouts.headers, rb.send()).await {
            Err(_) => return Err(self.timeout(TimeoutPhase::Headers)),
            Ok(Err(e)) => return Err(self.connect_error(e)),
            Ok(Ok(r)) if !r.status().is_success() => return Err(self.error_from_response(r).await),
            Ok(Ok(r)) => r,
        };
        let body = read_body(resp, self.timeouts.idle, &self.name).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| AdapterError::Protocol(format!("model list is not JSON: {e}")))?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A non-streaming generation. Its upstream sends the headers only once the whole answer is
    /// ready, so the headers timeout (meant for streams) does not apply: the whole answer has
    /// the response timeout. Running out of it is `Timeout(Response)`, after the upstream has
    /// been working on the request.
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, AdapterError> {
        let up = self.build(req, false)?;
        let deadline = tokio::time::Instant::now() + self.timeouts.response;
        let resp = self
            .send(up, self.timeouts.response, TimeoutPhase::Response)
            .await?;
        let body =
            tokio::time::timeout_at(deadline, read_body(resp, self.timeouts.idle, &self.name))
                .await
                .map_err(|_| self.timeout(TimeoutPhase::Response))??;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| AdapterError::Protocol(format!("response is not JSON: {e}")))?;
        if let Some(err) = AdapterError::from_error_body(None, &value) {
            return Err(self.scrub(err));
        }
        match self.kind {
            ProviderKind::OpenAi | ProviderKind::Azure => Ok(openai::completion(value)),
            ProviderKind::Anthropic => anthropic::completion(&value),
        }
    }
}

/// `a,b` of two comma-separated flag lists, leaving out flags of `b` that `a` has; `None` when
/// either is not text.
fn join_flags(a: &http::HeaderValue, b: &http::HeaderValue) -> Option<http::HeaderValue> {
    let (a, b) = (a.to_str().ok()?, b.to_str().ok()?);
    let mut joined = a.trim().to_owned();
    for flag in b.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !a.split(',').any(|f| f.trim() == flag) {
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(flag);
        }
    }
    http::HeaderValue::try_from(joined).ok()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn read_body(
    mut resp: reqwest::Response,
    idle: Duration,
    provider: &str,
) -> Result<Vec<u8>, AdapterError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => {
                return Err(AdapterError::Timeout {
                    provider: provider.to_owned(),
                    phase: TimeoutPhase::Idle,
                })
            }
            Ok(Err(e)) => return Err(AdapterError::Truncated(error_chain(&e.without_url()))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(AdapterError::Protocol("upstream response too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
