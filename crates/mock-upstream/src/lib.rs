//! The built-in demo model: an OpenAI-compatible server (`POST /v1/chat/completions`, streaming
//! or not; `GET /v1/models`) that streams a deterministic, useful reply at a configurable token
//! rate. It is what `cargo run --release` serves as `sluice-demo` (through the same HTTP + SSE
//! path a real upstream takes), what `sluice mock-upstream` serves alone, and the upstream the
//! tests and benchmarks run against.
//!
//! Requests may carry a `mock` object (forwarded by the gateway like any unknown field) to
//! shape the answer for tests: `{"mock":{"delay_ms":50,"tokens":200,"first_token_delay_ms":0}}`.

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

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Tokens per second; 0 or less streams as fast as possible.
    pub tokens_per_sec: f64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            tokens_per_sec: DEFAULT_TOKENS_PER_SEC,
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

struct Plan {
    id: String,
    model: String,
    pieces: Vec<String>,
    finish: &'static str,
    prompt_tokens: u64,
    delay: Duration,
    first_delay: Duration,
}

fn plan(cfg: &MockConfig, body: &Value) -> Plan {
    let mock = body.get("mock");
    let knob = |k: &str| mock.and_then(|m| m.get(k)).and_then(Value::as_u64);
    let text = reply_text(&last_user_message(body));
    let mut pieces: Vec<String> = tokens(&text).into_iter().map(str::to_owned).collect();
    if let Some(n) = knob("tokens") {
        // A longer (or shorter) answer for tests and benchmarks: repeat the reply's pieces.
        let base = pieces.clone();
        pieces = base.iter().cycle().take(n as usize).cloned().collect();
    }
    let mut finish = "stop";
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    if let Some(max) = max {
        if (max as usize) < pieces.len() {
            pieces.truncate(max as usize);
            finish = "length";
        }
    }
    let delay = match knob("delay_ms") {
        Some(ms) => Duration::from_millis(ms),
        None if cfg.tokens_per_sec > 0.0 => Duration::from_secs_f64(1.0 / cfg.tokens_per_sec),
        None => Duration::ZERO,
    };
    Plan {
        id: format!("chatcmpl-demo{}", now()),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(DEMO_MODEL)
            .to_owned(),
        pieces,
        finish,
        prompt_tokens: prompt_tokens(body),
        delay,
        first_delay: Duration::from_millis(knob("first_token_delay_ms").unwrap_or(0)),
    }
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
        "completion_tokens": p.pieces.len(),
        "total_tokens": p.prompt_tokens + p.pieces.len() as u64,
    });
    if !stream {
        let text: String = p.pieces.concat();
        return Json(json!({
            "id": p.id, "object": "chat.completion", "created": now(), "model": p.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "logprobs": null, "finish_reason": p.finish}],
            "usage": usage,
        }))
        .into_response();
    }
    let created = now();
    let (id, model) = (p.id.clone(), p.model.clone());
    let chunk = move |delta: Value, finish: Option<&str>| -> Bytes {
        let v = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut frames: Vec<(Duration, Bytes)> = Vec::with_capacity(p.pieces.len() + 4);
    frames.push((
        p.first_delay,
        chunk(json!({"role": "assistant", "content": ""}), None),
    ));
    for (i, piece) in p.pieces.iter().enumerate() {
        let wait = if i == 0 { Duration::ZERO } else { p.delay };
        frames.push((wait, chunk(json!({ "content": piece }), None)));
    }
    frames.push((Duration::ZERO, chunk(json!({}), Some(p.finish))));
    if include_usage {
        let v = json!({"id": p.id, "object": "chat.completion.chunk", "created": created,
                       "model": p.model, "choices": [], "usage": usage});
        frames.push((Duration::ZERO, Bytes::from(format!("data: {v}\n\n"))));
    }
    frames.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    let body = futures::stream::unfold(frames.into_iter(), |mut it| async move {
        let (wait, bytes) = it.next()?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some((Ok::<_, Infallible>(bytes), it))
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
}
