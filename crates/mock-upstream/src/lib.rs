//! The built-in demo model: an OpenAI-compatible server (`POST /v1/chat/completions`, streaming
//! or not; `GET /v1/models`) that streams a deterministic, useful reply at a configurable token
//! rate. It is what `cargo run --release` serves as `sluice-demo` (through the same HTTP + SSE
//! path a real upstream takes), what `sluice mock-upstream` serves alone, and the upstream the
//! tests and benchmarks run against.
//!
//! Requests may carry a `mock` object (forwarded by the gateway like any unknown field) to
//! shape the answer for tests: `{"mock":{"delay_ms":50,"tokens":200,"first_token_delay_ms":0}}`.
//! A server honours it only when its [`MockConfig::knobs`] says so: the test upstreams
//! (`sluice mock-upstream`, `sluice-bench mock-upstream`) always, the gateway's built-in demo
//! only in a build with the `test-knobs` feature ([`TEST_KNOBS`]), which the test suites turn on
//! through dev-dependencies, so that the released demo serves every client the same answer.
//!
//! Wherever they are honoured, any client of that server may send them, so each is clamped ([`MAX_TOKENS`], [`MAX_DELAY_MS`],
//! [`MAX_FIRST_TOKEN_DELAY_MS`]) and the answer is produced lazily, one frame at a time: a
//! request costs at most about what a real model's 10,000-token answer costs, and no client
//! number sizes an allocation.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The demo model's name.
pub const DEMO_MODEL: &str = "sluice-demo";

/// Default pace of the demo model: fast enough to read, slow enough to watch it type.
pub const DEFAULT_TOKENS_PER_SEC: f64 = 40.0;

/// Most content tokens `mock.tokens` (or the default reply) may ask for.
pub const MAX_TOKENS: u64 = 10_000;
/// Longest `mock.delay_ms` between tokens.
pub const MAX_DELAY_MS: u64 = 10_000;
/// Longest `mock.first_token_delay_ms`.
pub const MAX_FIRST_TOKEN_DELAY_MS: u64 = 60_000;

/// Whether this build was made for tests (the `test-knobs` feature): the built-in demo honours
/// the `mock` knobs only then. `cargo test` turns the feature on through dev-dependencies;
/// `cargo build` and `cargo run` (resolver 2 leaves dev-dependencies out) do not.
pub const TEST_KNOBS: bool = cfg!(feature = "test-knobs");

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Tokens per second; 0 or less streams as fast as possible.
    pub tokens_per_sec: f64,
    /// Honour a request's `mock` object; when false it is ignored like any unknown field.
    pub knobs: bool,
}

impl Default for MockConfig {
    /// The default pace, and the knobs off.
    fn default() -> Self {
        Self {
            tokens_per_sec: DEFAULT_TOKENS_PER_SEC,
            knobs: false,
        }
    }
}

/// The reply's text for a conversation whose last user message is `last`.
pub fn reply_text(last: &str) -> String {
    let quoted: String = last.chars().take(200).collect();
    format!(
        "Hello from Sluice! You said: \"{quoted}\"\n\n\
         Sluice is a token streaming gateway. It relays a model's answer token by token, keeps \
         each answer in a replay log so that a dropped connection resumes exactly where it \
         stopped, and speaks the OpenAI API at `/v1/chat/completions`, so any OpenAI SDK can \
         point at it.\n\n\
         To talk to a real model, give Sluice a provider before starting it:\n\n\
         ```sh\nexport OPENAI_API_KEY=sk-...\ncargo run --release\n```\n\n\
         - `ANTHROPIC_API_KEY` serves the `claude-*` models\n\
         - a `[[providers]]` entry in a config file adds vLLM, Ollama or llama.cpp\n\n\
         This answer came from the built-in demo model, `sluice-demo`."
    )
}

/// Splits text into token-like pieces: each word with the whitespace that follows it.
pub fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if in_space && !space {
            out.push(&text[start..i]);
            start = i;
        }
        in_space = space;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn last_user_message(body: &Value) -> String {
    let Some(msgs) = body.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(m) = msgs
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn prompt_tokens(body: &Value) -> u64 {
    fn len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(len).sum(),
            Value::Object(o) => o.values().map(len).sum(),
            _ => 0,
        }
    }
    (body.get("messages").map_or(0, len) as u64)
        .div_ceil(4)
        .max(1)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn app(cfg: MockConfig) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        // The gateway enforces its own (configurable) body limit before forwarding; axum's
        // default 2 MB here would refuse requests the gateway accepted.
        .layer(DefaultBodyLimit::disable())
        .with_state(cfg)
}

/// Serves the demo upstream on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: MockConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(cfg))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": DEMO_MODEL, "object": "model", "created": 0, "owned_by": "sluice"}]
    }))
}

fn error(status: StatusCode, message: &str, param: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}})),
    )
        .into_response()
}

/// What one request gets: the reply's pieces are the reply text's tokens repeated, produced on
/// demand by index, so an answer of `count` tokens never holds more than the base reply.
struct Plan {
    id: String,
    model: String,
    /// The reply's pieces; the answer is `count` of them, cycling.
    base: Vec<String>,
    count: usize,
    finish: &'static str,
    prompt_tokens: u64,
    delay: Duration,
    first_delay: Duration,
}

impl Plan {
    fn piece(&self, i: usize) -> &str {
        self.base
            .get(i % self.base.len().max(1))
            .map_or("", String::as_str)
    }
}

fn plan(cfg: &MockConfig, body: &Value) -> Plan {
    let mock = body.get("mock").filter(|_| cfg.knobs);
    let knob = |k: &str, max: u64| {
        mock.and_then(|m| m.get(k))
            .and_then(Value::as_u64)
            .map(|v| v.min(max))
    };
    let text = reply_text(&last_user_message(body));
    let base: Vec<String> = tokens(&text).into_iter().map(str::to_owned).collect();
    // A longer (or shorter) answer for tests and benchmarks repeats the reply's pieces.
    let mut count = knob("tokens", MAX_TOKENS).unwrap_or(base.len() as u64);
    let mut finish = "stop";
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    if let Some(max) = max {
        if max < count {
            count = max;
            finish = "length";
        }
    }
    let max_delay = Duration::from_millis(MAX_DELAY_MS);
    let delay = match knob("delay_ms", MAX_DELAY_MS) {
        Some(ms) => Duration::from_millis(ms),
        // A pace so slow that one token would take longer than the cap (or not a number) is
        // the cap.
        None if cfg.tokens_per_sec > 0.0 => Duration::try_from_secs_f64(1.0 / cfg.tokens_per_sec)
            .map_or(max_delay, |d| d.min(max_delay)),
        None => Duration::ZERO,
    };
    Plan {
        id: format!("chatcmpl-demo{}", now()),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(DEMO_MODEL)
            .to_owned(),
        base,
        // At most MAX_TOKENS: fits any usize.
        count: usize::try_from(count).unwrap_or(0),
        finish,
        prompt_tokens: prompt_tokens(body),
        delay,
        first_delay: Duration::from_millis(
            knob("first_token_delay_ms", MAX_FIRST_TOKEN_DELAY_MS).unwrap_or(0),
        ),
    }
}

/// Where a streamed answer is: the frames are made one at a time as the body is polled.
enum Next {
    Role,
    Piece(usize),
    Finish,
    Usage,
    Done,
    End,
}

async fn chat(State(cfg): State<MockConfig>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "request body is not valid JSON",
            "body",
        );
    };
    if !body.get("messages").is_some_and(Value::is_array) {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' is a required property",
            "messages",
        );
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let p = plan(&cfg, &body);
    let usage = json!({
        "prompt_tokens": p.prompt_tokens,
        "completion_tokens": p.count,
        "total_tokens": p.prompt_tokens + p.count as u64,
    });
    if !stream {
        // Bounded by MAX_TOKENS pieces of the reply.
        let text: String = (0..p.count).map(|i| p.piece(i)).collect();
        return Json(json!({
            "id": p.id, "object": "chat.completion", "created": now(), "model": p.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "logprobs": null, "finish_reason": p.finish}],
            "usage": usage,
        }))
        .into_response();
    }
    let created = now();
    let chunk = move |p: &Plan, delta: Value, finish: Option<&str>| -> Bytes {
        let v = json!({
            "id": p.id, "object": "chat.completion.chunk", "created": created, "model": p.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {v}\n\n"))
    };
    // Made once (it is small): the body's closure is called once per frame.
    let usage_frame = Bytes::from(format!(
        "data: {}\n\n",
        json!({"id": p.id, "object": "chat.completion.chunk", "created": created,
               "model": p.model, "choices": [], "usage": usage})
    ));
    let body = futures::stream::unfold((p, Next::Role), move |(p, next)| {
        let usage_frame = usage_frame.clone();
        async move {
            let (wait, bytes, after) = match next {
                Next::Role => (
                    p.first_delay,
                    chunk(&p, json!({"role": "assistant", "content": ""}), None),
                    if p.count > 0 {
                        Next::Piece(0)
                    } else {
                        Next::Finish
                    },
                ),
                Next::Piece(i) => (
                    if i == 0 { Duration::ZERO } else { p.delay },
                    chunk(&p, json!({ "content": p.piece(i) }), None),
                    if i + 1 < p.count {
                        Next::Piece(i + 1)
                    } else {
                        Next::Finish
                    },
                ),
                Next::Finish => (
                    Duration::ZERO,
                    chunk(&p, json!({}), Some(p.finish)),
                    if include_usage {
                        Next::Usage
                    } else {
                        Next::Done
                    },
                ),
                Next::Usage => (Duration::ZERO, usage_frame, Next::Done),
                Next::Done => (
                    Duration::ZERO,
                    Bytes::from_static(b"data: [DONE]\n\n"),
                    Next::End,
                ),
                Next::End => return None,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Some((Ok::<_, Infallible>(bytes), (p, after)))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rebuild_the_text() {
        let t = reply_text("héllo <b>");
        assert_eq!(tokens(&t).concat(), t);
        assert!(tokens(&t).len() > 50);
        assert_eq!(tokens("a  b\nc"), vec!["a  ", "b\n", "c"]);
    }

    #[test]
    fn the_knobs_are_clamped_to_their_maxima() {
        let cfg = MockConfig {
            knobs: true,
            ..MockConfig::default()
        };
        let body = json!({"messages": [], "mock": {"tokens": 10_000_000_000_000u64,
            "delay_ms": u64::MAX, "first_token_delay_ms": u64::MAX}});
        let p = plan(&cfg, &body);
        assert_eq!(p.count, MAX_TOKENS as usize);
        assert_eq!(p.delay, Duration::from_millis(MAX_DELAY_MS));
        assert_eq!(
            p.first_delay,
            Duration::from_millis(MAX_FIRST_TOKEN_DELAY_MS)
        );
        // The pieces are made on demand from the base reply, whatever the count.
        assert!(p.base.len() < 200);
        assert_eq!(p.piece(p.base.len()), p.piece(0));
        // max_tokens below the count cuts it with `length`; above it changes nothing.
        let p = plan(&cfg, &json!({"max_tokens": 3, "mock": {"tokens": 10}}));
        assert_eq!((p.count, p.finish), (3, "length"));
        let p = plan(
            &cfg,
            &json!({"max_tokens": u64::MAX, "mock": {"tokens": 10}}),
        );
        assert_eq!((p.count, p.finish), (10, "stop"));
        // Knobs that are not whole numbers are ignored; a pace too slow to express is capped.
        let slow = MockConfig {
            tokens_per_sec: 1e-300,
            knobs: true,
        };
        let p = plan(&slow, &json!({"mock": {"tokens": -1, "delay_ms": 1.5}}));
        assert_eq!(p.count, p.base.len());
        assert_eq!(p.delay, Duration::from_millis(MAX_DELAY_MS));
    }

    #[test]
    fn without_knobs_the_mock_object_changes_nothing() {
        let cfg = MockConfig::default();
        let body = json!({"messages": [], "mock": {"tokens": 3, "delay_ms": 5000,
            "first_token_delay_ms": 5000}});
        let (with, without) = (plan(&cfg, &body), plan(&cfg, &json!({"messages": []})));
        assert_eq!(with.count, without.count);
        assert_eq!(with.count, with.base.len());
        assert_eq!(with.delay, without.delay);
        assert_eq!(with.first_delay, Duration::ZERO);
    }
}
