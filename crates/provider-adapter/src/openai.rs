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
#[derive(Deserialize)]
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

#[derive(Deserialize)]
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
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| {
            AdapterError::Protocol(format!("a stream chunk is not valid JSON ({e})"))
        })?;
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
mod tests {
    use super::*;

    fn map(events: &[&str]) -> (Vec<StreamEvent>, Result<(), AdapterError>) {
        let mut m = ChunkMapper::default();
        let mut out = VecDeque::new();
        for e in events {
            match m.on_event("message", e, &mut out) {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => return (out.into_iter().collect(), Err(err)),
            }
        }
        let end = m.on_end(&mut out);
        (out.into_iter().collect(), end)
    }

    #[test]
    fn plain_text_stream() {
        let (evs, end) = map(&[
            r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            "[DONE]",
        ]);
        end.unwrap();
        assert_eq!(
            evs,
            vec![
                StreamEvent::Meta(ResponseMeta {
                    id: Some("c1".into()),
                    model: Some("gpt".into()),
                    created: Some(5),
                    system_fingerprint: None
                }),
                StreamEvent::Delta(ChoiceDelta::text(0, "Hel")),
                StreamEvent::Finish {
                    choice: 0,
                    reason: FinishReason::Stop
                },
                StreamEvent::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1,
                    total_tokens: 4,
                    ..Usage::default()
                }),
            ]
        );
    }

    #[test]
    fn tool_calls_logprobs_refusal_and_reasoning_are_kept() {
        let (evs, end) = map(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.1}]}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"refusal":"no"}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"},{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
        ]);
        end.unwrap();
        let StreamEvent::Delta(d) = &evs[0] else {
            panic!()
        };
        assert_eq!(d.tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(d.tool_calls[0].name.as_deref(), Some("f"));
        let StreamEvent::Delta(d) = &evs[1] else {
            panic!()
        };
        assert_eq!(d.tool_calls[0].arguments.as_deref(), Some("{\"a\":"));
        let StreamEvent::Delta(d) = &evs[2] else {
            panic!()
        };
        assert_eq!(
            d.logprobs.as_ref().unwrap().get(),
            r#"{"content":[{"token":"x","logprob":-0.1}]}"#
        );
        let StreamEvent::Delta(d) = &evs[3] else {
            panic!()
        };
        assert_eq!(d.refusal.as_deref(), Some("no"));
        let StreamEvent::Delta(d) = &evs[4] else {
            panic!()
        };
        assert_eq!(d.reasoning.as_deref(), Some("hmm"));
        assert_eq!(evs.len(), 7);
    }

    #[test]
    fn unfinished_choice_is_truncation() {
        let (_, end) = map(&[r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#]);
        assert!(matches!(end, Err(AdapterError::Truncated(_))));
        let (_, end) = map(&[
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert!(matches!(end, Err(AdapterError::Truncated(_))));
    }

    #[test]
    fn error_chunk_keeps_upstream_type_and_message() {
        let (evs, end) = map(&[
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"error":{"message":"overloaded","type":"server_error","code":"busy"}}"#,
        ]);
        assert_eq!(evs.len(), 1);
        let Err(AdapterError::Upstream {
            kind,
            message,
            code,
            ..
        }) = end
        else {
            panic!("{end:?}")
        };
        assert_eq!(
            (kind.as_str(), message.as_str(), code.as_deref()),
            ("server_error", "overloaded", Some("busy"))
        );
    }

    #[test]
    fn usage_reports_with_missing_or_odd_fields_do_not_fail_the_stream() {
        let finish = r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#;
        let (evs, end) = map(&[
            finish,
            r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":7}}"#,
        ]);
        end.unwrap();
        assert_eq!(
            evs.last(),
            Some(&StreamEvent::Usage(Usage {
                prompt_tokens: 4,
                completion_tokens: 7,
                total_tokens: 11,
                ..Usage::default()
            }))
        );
        for odd in [
            r#"{"choices":[],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":"4"}}"#,
        ] {
            let (evs, end) = map(&[finish, odd]);
            end.unwrap();
            assert!(
                !evs.iter().any(|e| matches!(e, StreamEvent::Usage(_))),
                "{odd}"
            );
        }
    }

    fn text_of(evs: &[StreamEvent]) -> (String, String) {
        let mut content = String::new();
        let mut reasoning = String::new();
        for e in evs {
            if let StreamEvent::Delta(d) = e {
                content.push_str(d.content.as_deref().unwrap_or_default());
                reasoning.push_str(d.reasoning.as_deref().unwrap_or_default());
            }
        }
        (content, reasoning)
    }

    #[test]
    fn fields_left_out_nulled_or_oddly_typed_do_not_fail_the_chunk() {
        let (evs, end) = map(&[
            // llama.cpp: `"model":""`; no id; `created` as a float; `index: null`.
            r#"{"model":"","created":1.7e9,"choices":[{"index":null,"delta":{"role":"assistant","content":null},"finish_reason":""}]}"#,
            r#"{"id":42,"object":null,"choices":[{"delta":{"content":"Hel","role":null},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"logprobs":null,"finish_reason":""}],"usage":{"prompt_tokens":2,"completion_tokens":null,"prompt_tokens_details":{"cached_tokens":null}}}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        ]);
        end.unwrap();
        assert!(
            !evs.iter().any(|e| matches!(e, StreamEvent::Meta(_))),
            "{evs:?}"
        );
        assert_eq!(text_of(&evs).0, "Hello");
        assert!(evs.contains(&StreamEvent::Usage(Usage {
            prompt_tokens: 2,
            total_tokens: 2,
            prompt_tokens_details: Some(crate::event::PromptTokensDetails { cached_tokens: 0 }),
            ..Usage::default()
        })));
        assert_eq!(
            evs.last(),
            Some(&StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Stop
            })
        );
    }

    #[test]
    fn upstream_numbers_are_bounded() {
        // Usage near u64::MAX saturates instead of wrapping.
        let (evs, end) = map(&[
            r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":5}}"#,
            "[DONE]",
        ]);
        end.unwrap();
        let Some(StreamEvent::Usage(u)) = evs.last() else {
            panic!("{evs:?}")
        };
        assert_eq!(u.total_tokens, u64::MAX);
        // A huge choice index is a number to track, never a size.
        let (evs, end) = map(&[
            r#"{"choices":[{"index":4294967295,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        end.unwrap();
        assert_eq!(evs.len(), 2, "{evs:?}");
        // Distinct choices past the cap end the stream with a protocol error.
        let many: Vec<String> = (0..=MAX_CHOICES)
            .map(|i| format!(r#"{{"choices":[{{"index":{i},"delta":{{"content":"x"}}}}]}}"#))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let (evs, end) = map(&refs);
        assert!(matches!(end, Err(AdapterError::Protocol(_))), "{end:?}");
        assert_eq!(
            evs.len(),
            MAX_CHOICES,
            "the choices before the cap are delivered"
        );
    }

    #[test]
    fn usage_from_groq_and_on_content_chunks() {
        let u = |p, c| {
            StreamEvent::Usage(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: p + c,
                ..Usage::default()
            })
        };
        let (evs, end) = map(&[
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"}}],"x_groq":{"id":"req_1"}}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"req_1","usage":{"queue_time":0.1,"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}"#,
        ]);
        end.unwrap();
        assert_eq!(evs.last(), Some(&u(3, 1)));
        // vLLM's continuous usage: every content chunk reports; each is passed on.
        let (evs, end) = map(&[
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        ]);
        end.unwrap();
        assert_eq!(text_of(&evs).0, "ab");
        assert_eq!(evs.last(), Some(&u(3, 2)));
    }

    #[test]
    fn reasoning_in_every_field_name_and_mistral_content_parts() {
        let (evs, end) = map(&[
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"a","content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning":"c","reasoning_content":"c"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"","reasoning":"d"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":"e"}]}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":[{"type":"text","text":"Hi"}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":""},"finish_reason":"model_length"}]}"#,
        ]);
        end.unwrap();
        assert_eq!(text_of(&evs), ("Hi".into(), "abcde".into()));
        assert_eq!(
            evs.last(),
            Some(&StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Length
            })
        );
    }

    #[test]
    fn tool_calls_without_index_are_numbered_and_whole_arguments_kept() {
        let (evs, end) = map(&[
            // Gemini: two calls, whole, no index, in one chunk; then one split in two.
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},{"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c","function":{"name":"h","arguments":"{\"y\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"2}"}}]}}]}"#,
            // Arguments sent as an object, not a string.
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":null,"id":"d","function":{"name":"k","arguments":{"z":[1]}}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ]);
        end.unwrap();
        let calls: Vec<(u32, Option<&str>, Option<&str>)> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => Some(&d.tool_calls),
                _ => None,
            })
            .flatten()
            .map(|t| (t.index, t.id.as_deref(), t.arguments.as_deref()))
            .collect();
        assert_eq!(
            calls,
            vec![
                (0, Some("a"), Some("{\"x\":1}")),
                (1, Some("b"), Some("{}")),
                (2, Some("c"), Some("{\"y\":")),
                (2, None, Some("2}")),
                (3, Some("d"), Some("{\"z\":[1]}")),
            ]
        );
    }

    #[test]
    fn error_events_in_other_shapes_keep_the_upstreams_words() {
        let kind_msg = |events: &[&str]| match map(events).1 {
            Err(AdapterError::Upstream { kind, message, .. }) => (kind, message),
            other => panic!("{events:?}: {other:?}"),
        };
        let first = r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#;
        for (what, event, kind, message) in [
            (
                "vLLM < 0.10.1",
                r#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#,
                "BadRequestError",
                "too long",
            ),
            (
                "llama.cpp error: field",
                r#" {"code":500,"message":"context full","type":"server_error"}"#,
                "server_error",
                "context full",
            ),
            (
                "Gemini list",
                r#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
                "RESOURCE_EXHAUSTED",
                "quota",
            ),
            (
                "FastAPI",
                r#"{"detail":"Internal Server Error"}"#,
                "upstream_error",
                "Internal Server Error",
            ),
            (
                "error as text",
                r#"{"error":"model crashed"}"#,
                "upstream_error",
                "model crashed",
            ),
            (
                "OpenRouter",
                r#"{"id":"gen-1","object":"chat.completion.chunk","error":{"code":502,"message":"Provider disconnected"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#,
                "upstream_error",
                "Provider disconnected",
            ),
        ] {
            assert_eq!(
                kind_msg(&[first, event]),
                (kind.to_owned(), message.to_owned()),
                "{what}"
            );
        }
        let (_, msg) = kind_msg(&[
            first,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}"#,
        ]);
        assert!(msg.contains("finish_reason \"error\""), "{msg}");
        // A usage chunk and Azure's prompt-filter chunk are not errors.
        let (_, end) = map(&[
            r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
            first,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        ]);
        end.unwrap();
    }

    #[test]
    fn invalid_json_is_a_protocol_error() {
        let (_, end) = map(&["{not json"]);
        assert!(matches!(end, Err(AdapterError::Protocol(_))));
    }

    #[test]
    fn forwarded_body_golden() {
        let body = |req: &str, stream: bool| {
            let req = ChatRequest::parse(req.as_bytes()).unwrap();
            String::from_utf8(build_request("http://h/v1", None, &req, stream).body).unwrap()
        };
        // Keys stay in the client's order; `stream` and `stream_options` change in place.
        let req = r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":false,"x":1},"n":1}"#;
        assert_eq!(
            body(req, true),
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true,"x":1},"n":1}"#
        );
        assert_eq!(
            body(req, false),
            r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}],"n":1}"#
        );
        // Absent ones are added at the end.
        let req = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            body(req, true),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn request_forces_usage_and_keeps_unknown_fields() {
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":1,"stream_options":{"x":1},"vendor_ext":[1,2]}"#,
        )
        .unwrap();
        let up = build_request("http://h/v1", Some("sk-1"), &req, true);
        assert_eq!(up.url, "http://h/v1/chat/completions");
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            body["stream_options"],
            serde_json::json!({"x":1,"include_usage":true})
        );
        assert_eq!(body["seed"], 1);
        assert_eq!(body["vendor_ext"], serde_json::json!([1, 2]));
        assert!(up
            .headers
            .contains(&("authorization", "Bearer sk-1".to_owned())));
    }
}
