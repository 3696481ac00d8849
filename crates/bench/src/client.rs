//! The HTTP side of the load generator: hyper 1.x client connections straight over
//! `tokio::net::TcpStream` (TCP_NODELAY, HTTP/1.1 keep-alive, one connection per worker), and
//! one streaming chat request timed event by event.
//!
//! No pool, no proxy lookup, no TLS, no redirects: what reqwest would add is CPU the gateway
//! under test would not get, and on a two-core machine that matters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::sse::{ScanMode, Scanner};
use crate::stats::micros;

/// How long a TCP connect may take on loopback before it counts as an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where requests go: a loopback address and the path prefix of the OpenAI-compatible API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port`, for the `Host` header.
    pub authority: String,
    /// `http://host:port` (no trailing slash).
    pub base: String,
    /// The chat completions path, e.g. `/v1/chat/completions`.
    pub chat_path: String,
}

impl Endpoint {
    /// Parses `http://127.0.0.1:PORT`, optionally followed by a path prefix (a trailing `/v1`
    /// is understood as the API root). Only loopback addresses are accepted: this tool never
    /// sends load anywhere else.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL '{url}'"))?;
        if uri.scheme_str() != Some("http") {
            bail!("'{url}': only http:// URLs are supported");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("'{url}' has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse()
                .with_context(|| format!("'{url}': the host must be a loopback IP address"))?
        };
        if !ip.is_loopback() {
            bail!("'{url}': refusing to send load to a non-loopback address");
        }
        let port = authority
            .port_u16()
            .with_context(|| format!("'{url}' has no port"))?;
        let prefix = uri.path().trim_end_matches('/');
        let prefix = prefix.strip_suffix("/v1").unwrap_or(prefix);
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority: authority.as_str().to_owned(),
            base: format!("http://{}", authority.as_str()),
            chat_path: format!("{prefix}/v1/chat/completions"),
        })
    }
}

/// A keep-alive HTTP/1.1 connection.
pub type Conn<B> = SendRequest<B>;

/// Opens a connection; its driver runs as a task that ends when the returned sender is dropped.
pub async fn connect<B>(addr: SocketAddr) -> anyhow::Result<Conn<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP/1 handshake")?;
    tokio::spawn(async move {
        // Ends with an error when the peer closes; the worker notices on its next request.
        let _ = conn.await;
    });
    Ok(sender)
}

/// One-shot `GET base + path` on a fresh connection; the body as text (bounded by `timeout`).
pub async fn get_text(ep: &Endpoint, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let fut = async {
        let mut conn = connect::<Empty<Bytes>>(ep.addr).await?;
        let req = Request::get(path)
            .header(header::HOST, &ep.authority)
            .body(Empty::new())
            .context("build GET")?;
        let resp = conn.send_request(req).await.context("GET")?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("GET body")?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    };
    tokio::time::timeout(timeout, fut)
        .await
        .with_context(|| format!("GET {path} timed out"))?
}

/// The JSON body of a benchmark request: the mock's `mock` knobs shape the answer.
pub fn chat_body(tokens: u32, delay_ms: u32, first_token_delay_ms: u32) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "bench",
            "stream": true,
            "messages": [{"role": "user", "content": "bench"}],
            "mock": {"tokens": tokens, "delay_ms": delay_ms, "first_token_delay_ms": first_token_delay_ms},
        })
        .to_string(),
    )
}

/// Builds a chat request for `ep` (with `Authorization: Bearer KEY` when a key is given).
pub fn chat_request(
    ep: &Endpoint,
    key: Option<&str>,
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut b = Request::post(&ep.chat_path)
        .header(header::HOST, &ep.authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream");
    if let Some(k) = key {
        b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    b.body(Full::new(body)).context("build request")
}

/// Why a request did not count as a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request could not be sent or the body broke off (connection-level).
    Transport,
    /// A status other than 200.
    Status(u16),
    /// `data: {"error":...}` in the stream.
    InBand,
    /// Fewer content tokens than asked for, or no `data: [DONE]`.
    Truncated,
    Timeout,
    Connect,
}

impl Failure {
    /// The name errors are counted under.
    pub fn label(&self) -> String {
        match self {
            Self::Transport => "transport".into(),
            Self::Status(s) => format!("status {s}"),
            Self::InBand => "in-band error".into(),
            Self::Truncated => "truncated".into(),
            Self::Timeout => "timeout".into(),
            Self::Connect => "connect".into(),
        }
    }

    /// Whether the connection can still be used after this failure.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, Self::InBand | Self::Truncated)
    }
}

/// The timing of one successful stream. `gaps` is appended to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ttft_us: u32,
    pub total_us: u32,
    pub tokens: u32,
    /// The longest wait between two reads that carried content (0 with fewer than two).
    pub max_gap_us: u32,
}

/// Sends one streaming chat request on `conn` and reads the answer to its end.
///
/// The clock starts just before the request is written (connection set-up is not included);
/// every content event is stamped when the network read that completed it returned, so events
/// that arrive in one read get a gap of 0. On success the inter-token gaps are appended to
/// `gaps` (when given); on failure `gaps` is left as it was.
pub async fn stream_once(
    conn: &mut Conn<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    expect_tokens: u32,
    mode: ScanMode,
    mut gaps: Option<&mut Vec<u32>>,
) -> Result<Timing, Failure> {
    let gaps_len = gaps.as_ref().map_or(0, |g| g.len());
    let start = Instant::now();
    let resp = conn
        .send_request(req)
        .await
        .map_err(|_| Failure::Transport)?;
    if resp.status() != StatusCode::OK {
        return Err(Failure::Status(resp.status().as_u16()));
    }
    let mut body = resp.into_body();
    let mut scanner = Scanner::new(mode);
    let mut ttft = None;
    let mut last = start;
    let mut tokens = 0u32;
    let mut max_gap_us = 0u32;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            if let Some(g) = gaps.as_deref_mut() {
                g.truncate(gaps_len);
            }
            return Err(Failure::Transport);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let n = scanner.feed(&data);
        if n == 0 {
            continue;
        }
        let now = Instant::now();
        if ttft.is_none() {
            ttft = Some(micros(now - start));
        } else {
            let gap = micros(now - last);
            max_gap_us = max_gap_us.max(gap);
            if let Some(g) = gaps.as_deref_mut() {
                g.push(gap);
            }
        }
        if let Some(g) = gaps.as_deref_mut() {
            g.extend(std::iter::repeat_n(0, n as usize - 1));
        }
        last = now;
        tokens += n;
    }
    let total_us = micros(start.elapsed());
    let failure = if scanner.error() {
        Some(Failure::InBand)
    } else if !scanner.done() || tokens < expect_tokens {
        Some(Failure::Truncated)
    } else {
        None
    };
    if let Some(f) = failure {
        if let Some(g) = gaps {
            g.truncate(gaps_len);
        }
        return Err(f);
    }
    Ok(Timing {
        ttft_us: ttft.unwrap_or(total_us),
        total_us,
        tokens,
        max_gap_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("http://127.0.0.1:8080").expect("plain");
        assert_eq!(e.addr.port(), 8080);
        assert_eq!(e.chat_path, "/v1/chat/completions");
        assert_eq!(e.authority, "127.0.0.1:8080");
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:1/v1/")
                .expect("v1")
                .chat_path,
            "/v1/chat/completions"
        );
        assert_eq!(
            Endpoint::parse("http://localhost:1/api")
                .expect("prefix")
                .chat_path,
            "/api/v1/chat/completions"
        );
        assert!(Endpoint::parse("http://[::1]:9/").is_ok());
        assert!(Endpoint::parse("http://10.0.0.1:80").is_err());
        assert!(Endpoint::parse("https://127.0.0.1:80").is_err());
        assert!(Endpoint::parse("http://example.com:80").is_err());
    }

    #[test]
    fn body_carries_the_mock_knobs() {
        let v: serde_json::Value =
            serde_json::from_slice(&chat_body(50, 10, 0)).expect("json body");
        assert_eq!(v["mock"]["tokens"], 50);
        assert_eq!(v["mock"]["delay_ms"], 10);
        assert_eq!(v["stream"], true);
    }
}
