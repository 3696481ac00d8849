//! OpenAI-compatible upstreams (OpenAI, vLLM, llama.cpp, Ollama's `/v1`, OpenRouter, ...).
//!
//! The request is the client's body, forwarded unchanged except that a streaming request always
//! asks for the final usage chunk (Sluice needs real token counts; the relay shows that chunk to
//! the client only if the client asked). Each stream chunk is parsed once into typed structs that
//! borrow from the event's data and mapped to normalised events.

use std::collections::VecDeque;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{ChoiceDelta, FinishReason, ResponseMeta, StreamEvent, ToolCallDelta, Usage};
use crate::lenient::{Content, Num, Text};
use crate::provider::{Completion, StreamMapper, UpstreamRequest};
use crate::{AdapterError, ChatRequest};

mod fast;

/// The upstream request: `POST {base}/chat/completions` with the client's body.
pub(crate) fn build_request(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> UpstreamRequest {
    let mut up = request_at(format!("{base_url}/chat/completions"), req, stream);
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        up.headers.push(("authorization", format!("Bearer {key}")));
    }
    up
}

/// The OpenAI-format request to `url`, without credentials: shared with the OpenAI-format
/// upstreams that differ only in URL and key header (Azure).
pub(crate) fn request_at(url: String, req: &ChatRequest, stream: bool) -> UpstreamRequest {
    let body = Forward {
        body: &req.body,
        stream,
    };
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    UpstreamRequest {
        url,
        headers,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The client's body as forwarded: written straight from the parsed request, with `stream` set
/// and, when streaming, `stream_options.include_usage` on (each in its place if the client sent
/// it, else at the end); without streaming, no `stream_options`. Nothing is copied.
struct Forward<'a> {
    body: &'a Map<String, Value>,
    stream: bool,
}

/// The client's `stream_options` with `include_usage` set.
struct StreamOptions<'a>(Option<&'a Map<String, Value>>);

impl Serialize for StreamOptions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let mut seen = false;
        for (k, v) in self.0.into_iter().flatten() {
            if k == "include_usage" {
                seen = true;
                m.serialize_entry(k, &true)?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        if !seen {
            m.serialize_entry("include_usage", &true)?;
        }
        m.end()
    }
}

impl Serialize for Forward<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let opts = || StreamOptions(self.body.get("stream_options").and_then(Value::as_object));
        for (k, v) in self.body {
            match k.as_str() {
                "stream" => m.serialize_entry(k, &self.stream)?,
                "stream_options" if self.stream => m.serialize_entry(k, &opts())?,
                "stream_options" => {}
                _ => m.serialize_entry(k, v)?,
            }
        }
        if !self.body.contains_key("stream") {
            m.serialize_entry("stream", &self.stream)?;
        }
        if self.stream && !self.body.contains_key("stream_options") {
            m.serialize_entry("stream_options", &opts())?;
        }
        m.end()
    }
}

/// A non-streaming answer is already in the client's format: passed on as it came.
pub(crate) fn completion(body: Value) -> Completion {
    let usage = body.get("usage").and_then(|u| {
        let mut u = Usage::deserialize(u).ok()?;
        if u.total_tokens == 0 {
            u.total_tokens = u.prompt_tokens.saturating_add(u.completion_tokens);
        }
        Some(u)
    });
    Completion { body, usage }
}

/// One chunk, as OpenAI-compatible servers send it. Every field is optional and read leniently
/// (see [`lenient`](crate::lenient)): servers omit or null fields OpenAI always sends (`id`,
/// `object`, `created`, `model`, `choices[].index`; llama.cpp sends `"model":""`, Mistral's
/// first chunk has no `object`/`created`), and one odd value must not cost the user the answer.
#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    model: Text<'a>,
    #[serde(default)]
    created: Num,
    #[serde(borrow, default)]
    system_fingerprint: Text<'a>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    /// Parsed on its own (see [`usage`]): a malformed usage report must not fail the answer.
    /// Servers send it on the usage chunk (OpenAI), on the finish chunk (Gemini, Mistral,
    /// DeepSeek) or on every chunk (vLLM's `continuous_usage_stats`, xAI); the last one wins.
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    /// Groq reports usage in `x_groq.usage` on its finish chunk
    /// (<https://github.com/Portkey-AI/gateway/issues/1072>).
    #[serde(borrow, default)]
    x_groq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    /// Error events in other shapes: vLLM before 0.10.1 put `object: "error"`, `message`,
    /// `type` and `code` at the top; llama.cpp's old `error:` events carry `message` and `type`.
    #[serde(borrow, default)]
    object: Text<'a>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
}

/// An upstream's usage report, if it is one: a missing `total_tokens` is the sum of the other
/// two; anything unreadable (`null`, wrong types) is no report rather than a failed stream.
fn usage(raw: &RawValue) -> Option<Usage> {
    let mut u: Usage = serde_json::from_str(raw.get()).ok()?;
    if u.total_tokens == 0 {
        // The upstream's numbers: saturate rather than wrap.
        u.total_tokens = u.prompt_tokens.saturating_add(u.completion_tokens);
    }
    Some(u)
}

#[derive(Deserialize)]
struct XGroq<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Num,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
    /// `""` (sent by some servers on every chunk before the last) reads as no finish reason.
    #[serde(borrow, default)]
    finish_reason: Text<'a>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Content<'a>,
    /// DeepSeek's and older vLLM's name for the thinking text.
    #[serde(borrow, default)]
    reasoning_content: Text<'a>,
    /// vLLM 0.11+, OpenRouter and Ollama name it `reasoning`
    /// (<https://github.com/vllm-project/vllm/pull/34030>); some vLLM versions send both, with
    /// the same text, so only one is taken.
    #[serde(borrow, default)]
    reasoning: Text<'a>,
    #[serde(borrow, default)]
    refusal: Text<'a>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct ToolCall<'a> {
    /// Gemini leaves it out (<https://github.com/openai/openai-python/issues/2806>).
    #[serde(default)]
    index: Num,
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    /// A JSON string of arguments; kept raw because some servers send the arguments object
    /// itself, which clients still need as text.
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// Tool-call arguments as the text clients concatenate: a JSON string's contents, or an object
/// sent whole written out as JSON.
fn arguments(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?.get();
    if raw.starts_with('"') {
        serde_json::from_str::<std::borrow::Cow<'_, str>>(raw)
            .ok()
            .map(std::borrow::Cow::into_owned)
    } else if raw == "null" {
        None
    } else {
        Some(raw.to_owned())
    }
}

/// The tool calls of one choice so far, to number calls that come without `index`.
struct ToolNumbers {
    choice: u32,
    /// The index the next new call gets.
    next: u32,
    /// The call the last fragment belonged to.
    last: Option<u32>,
}

/// Maps OpenAI chunks to normalised events and tracks which choices are still open.
#[derive(Default)]
pub(crate) struct ChunkMapper {
    meta_sent: bool,
    /// Choices that have started.
    open: Vec<u32>,
    finished: Vec<u32>,
    saw_done: bool,
    tools: Vec<ToolNumbers>,
}

fn non_null(r: Option<&RawValue>) -> Option<Box<RawValue>> {
    r.filter(|r| r.get() != "null").map(ToOwned::to_owned)
}

/// A finish reason in OpenAI's vocabulary. Mistral ends at the model's context size with
/// `model_length` (<https://docs.mistral.ai/api/#tag/chat>), which OpenAI calls `length`.
fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "model_length" => FinishReason::Length,
        other => FinishReason::parse(other),
    }
}

/// Most distinct choices a stream may carry (OpenAI's own limit on `n`). Each new index is
/// tracked here and in the relay, and looked up on every chunk: an upstream that numbered every
/// chunk anew would otherwise make each chunk cost more than the last.
pub const MAX_CHOICES: usize = 128;

impl ChunkMapper {
    fn note_choice(&mut self, index: u32) -> Result<(), AdapterError> {
        if !self.open.contains(&index) {
            if self.open.len() >= MAX_CHOICES {
                return Err(AdapterError::Protocol(format!(
                    "the upstream sent more than {MAX_CHOICES} choices"
                )));
            }
            self.open.push(index);
        }
        Ok(())
    }

    /// The index of a tool-call fragment of `choice`. OpenAI numbers every fragment; Gemini
    /// sends none, each call whole or split over fragments where only the first has the id
    /// and name (<https://github.com/open-webui/computer/issues/224>). So a fragment without
    /// an index that starts a call (has an id or a name) is the next call, and one that does
    /// not continues the last call.
    fn tool_index(&mut self, choice: u32, given: Option<u32>, starts_call: bool) -> u32 {
        let at = match self.tools.iter().position(|t| t.choice == choice) {
            Some(at) => at,
            None => {
                self.tools.push(ToolNumbers {
                    choice,
                    next: 0,
                    last: None,
                });
                self.tools.len() - 1
            }
        };
        let t = &mut self.tools[at];
        let index = match (given, t.last) {
            (Some(i), _) => i,
            (None, Some(last)) if !starts_call => last,
            (None, _) => t.next,
        };
        t.next = t.next.max(index.saturating_add(1));
        t.last = Some(index);
        index
    }

    /// An error event in a shape other than `{"error":...}`, if `chunk` is one: it has no
    /// `choices` and no usage, but the fields of an error.
    fn other_error(chunk: &Chunk<'_>, data: &str) -> Option<AdapterError> {
        let looks_like_error = chunk.choices.is_none()
            && chunk.usage.is_none()
            && (chunk.object.as_deref() == Some("error")
                || chunk.message.is_some()
                || chunk.detail.is_some());
        if !looks_like_error {
            return None;
        }
        let v: Value = serde_json::from_str(data).ok()?;
        AdapterError::from_any_error_body(None, &v)
    }
}

impl StreamMapper for ChunkMapper {
    fn on_event(
        &mut self,
        _event: &str,
        data: &str,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, AdapterError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.saw_done = true;
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        if data.starts_with('[') {
            // Gemini sends errors as a list of error objects.
            let v: Value = serde_json::from_str(data).map_err(|e| {
                AdapterError::Protocol(format!("a stream chunk is not valid JSON ({e})"))
            })?;
            return Err(
                AdapterError::from_any_error_body(None, &v).unwrap_or_else(|| {
                    AdapterError::Protocol("a stream event is a JSON list, not a chunk".into())
                }),
            );
        }
        // The common shapes are read by hand; serde reads the rest (and says what is wrong).
        let chunk = match fast::chunk(data) {
            Some(chunk) => chunk,
            None => serde_json::from_str::<Chunk<'_>>(data).map_err(|e| {
                AdapterError::Protocol(format!("a stream chunk is not valid JSON ({e})"))
            })?,
        };
        if let Some(err) = chunk.error {
            // OpenRouter's mid-stream error chunk also has a choice with `finish_reason:
            // "error"`; the error object is what the client needs
            // (<https://openrouter.ai/docs/api-reference/streaming>).
            let v: Value = serde_json::from_str(err.get()).unwrap_or(Value::Null);
            let wrapped = serde_json::json!({ "error": v });
            return Err(
                AdapterError::from_error_body(None, &wrapped).unwrap_or_else(|| {
                    AdapterError::Protocol("an error chunk without details".into())
                }),
            );
        }
        if let Some(err) = Self::other_error(&chunk, data) {
            return Err(err);
        }
        if !self.meta_sent && (chunk.id.0.is_some() || chunk.model.0.is_some()) {
            self.meta_sent = true;
            out.push_back(StreamEvent::Meta(ResponseMeta {
                id: chunk.id.into_owned(),
                model: chunk.model.into_owned(),
                created: chunk.created.0.filter(|&c| c > 0),
                system_fingerprint: chunk.system_fingerprint.into_owned(),
            }));
        }
        for c in chunk.choices.unwrap_or_default() {
            // A missing index is the first choice: the servers that leave it out have one.
            let index = c.index.as_u32().unwrap_or(0);
            self.note_choice(index)?;
            let d = c.delta.unwrap_or_default();
            let mut tool_calls = Vec::new();
            for t in d.tool_calls.unwrap_or_default() {
                let (name, args) = t.function.map_or((None, None), |f| {
                    (f.name.into_owned(), arguments(f.arguments))
                });
                let id = t.id.into_owned();
                let starts_call = id.is_some() || name.is_some();
                tool_calls.push(ToolCallDelta {
                    index: self.tool_index(index, t.index.as_u32(), starts_call),
                    id,
                    name,
                    arguments: args,
                });
            }
            let delta = ChoiceDelta {
                choice: index,
                content: d.content.text.map(std::borrow::Cow::into_owned),
                reasoning: d
                    .reasoning_content
                    .into_owned()
                    .or_else(|| d.reasoning.into_owned())
                    .or(d.content.thinking),
                refusal: d.refusal.into_owned(),
                tool_calls,
                logprobs: non_null(c.logprobs),
                reasoning_signature: None,
            };
            if !delta.is_empty() {
                out.push_back(StreamEvent::Delta(delta));
            }
            if let Some(reason) = c.finish_reason.as_deref() {
                if reason == "error" {
                    // OpenRouter and Mistral end a choice that failed mid-generation with
                    // `finish_reason: "error"`; no OpenAI client knows it, and the answer is
                    // not complete, so it is the upstream's error, not a finish.
                    return Err(AdapterError::Upstream {
                        status: None,
                        kind: "upstream_error".into(),
                        message: format!(
                            "the upstream ended choice {index} with finish_reason \"error\""
                        ),
                        code: None,
                        param: None,
                        retry_after: None,
                    });
                }
                if !self.finished.contains(&index) {
                    self.finished.push(index);
                }
                out.push_back(StreamEvent::Finish {
                    choice: index,
                    reason: finish_reason(reason),
                });
            }
        }
        let groq = || {
            let x: XGroq<'_> = serde_json::from_str(chunk.x_groq?.get()).ok()?;
            x.usage.and_then(usage)
        };
        if let Some(u) = chunk.usage.and_then(usage).or_else(groq) {
            out.push_back(StreamEvent::Usage(u));
        }
        Ok(false)
    }

    fn on_end(&mut self, _out: &mut VecDeque<StreamEvent>) -> Result<(), AdapterError> {
        let unfinished = self
            .open
            .iter()
            .filter(|i| !self.finished.contains(i))
            .count();
        if self.open.is_empty() {
            return Err(AdapterError::Truncated(if self.saw_done {
                "the upstream ended the stream without generating any choice".into()
            } else {
                "the upstream closed the stream before sending anything".into()
            }));
        }
        if unfinished > 0 {
            return Err(AdapterError::Truncated(format!(
                "the upstream ended the stream before {unfinished} choice(s) had a finish reason"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
