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
use crate::provider::{Completion, StreamMapper, UpstreamRequest};
use crate::{AdapterError, ChatRequest};

/// The upstream request: `POST {base}/chat/completions` with the client's body.
pub(crate) fn build_request(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> UpstreamRequest {
    let body = Forward {
        body: &req.body,
        stream,
    };
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    UpstreamRequest {
        url: format!("{base_url}/chat/completions"),
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
            u.total_tokens = u.prompt_tokens + u.completion_tokens;
        }
        Some(u)
    });
    Completion { body, usage }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(borrow, default)]
    system_fingerprint: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    choices: Vec<ChunkChoice<'a>>,
    /// Parsed on its own (see [`usage`]): a malformed usage report must not fail the answer.
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// An upstream's usage report, if it is one: a missing `total_tokens` is the sum of the other
/// two; anything unreadable (`null`, wrong types) is no report rather than a failed stream.
fn usage(raw: &RawValue) -> Option<Usage> {
    let mut u: Usage = serde_json::from_str(raw.get()).ok()?;
    if u.total_tokens == 0 {
        u.total_tokens = u.prompt_tokens + u.completion_tokens;
    }
    Some(u)
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    /// vLLM and OpenRouter name the thinking text `reasoning`.
    #[serde(borrow, default)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

/// Maps OpenAI chunks to normalised events and tracks which choices are still open.
#[derive(Default)]
pub(crate) struct ChunkMapper {
    meta_sent: bool,
    /// Choices that have started (bit per index below 64; higher indexes in `extra`).
    open: Vec<u32>,
    finished: Vec<u32>,
    saw_done: bool,
}

fn owned(s: Option<std::borrow::Cow<'_, str>>) -> Option<String> {
    s.map(std::borrow::Cow::into_owned)
}

fn non_null(r: Option<&RawValue>) -> Option<Box<RawValue>> {
    r.filter(|r| r.get() != "null").map(ToOwned::to_owned)
}

impl ChunkMapper {
    fn note_choice(&mut self, index: u32) {
        if !self.open.contains(&index) {
            self.open.push(index);
        }
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
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| {
            AdapterError::Protocol(format!("a stream chunk is not valid JSON ({e})"))
        })?;
        if let Some(err) = chunk.error {
            let v: Value = serde_json::from_str(err.get()).unwrap_or(Value::Null);
            let wrapped = serde_json::json!({ "error": v });
            return Err(
                AdapterError::from_error_body(None, &wrapped).unwrap_or_else(|| {
                    AdapterError::Protocol("an error chunk without details".into())
                }),
            );
        }
        if !self.meta_sent && (chunk.id.is_some() || chunk.model.is_some()) {
            self.meta_sent = true;
            out.push_back(StreamEvent::Meta(ResponseMeta {
                id: owned(chunk.id),
                model: owned(chunk.model),
                created: chunk.created,
                system_fingerprint: owned(chunk.system_fingerprint),
            }));
        }
        for c in chunk.choices {
            self.note_choice(c.index);
            let d = c.delta.unwrap_or_default();
            let delta = ChoiceDelta {
                choice: c.index,
                content: owned(d.content),
                reasoning: owned(d.reasoning_content.or(d.reasoning)),
                refusal: owned(d.refusal),
                tool_calls: d
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        let (name, arguments) = t
                            .function
                            .map_or((None, None), |f| (owned(f.name), owned(f.arguments)));
                        ToolCallDelta {
                            index: t.index,
                            id: owned(t.id),
                            name,
                            arguments,
                        }
                    })
                    .collect(),
                logprobs: non_null(c.logprobs),
            };
            if !delta.is_empty() {
                out.push_back(StreamEvent::Delta(delta));
            }
            if let Some(reason) = c.finish_reason.filter(|r| !r.is_empty()) {
                if !self.finished.contains(&c.index) {
                    self.finished.push(c.index);
                }
                out.push_back(StreamEvent::Finish {
                    choice: c.index,
                    reason: FinishReason::parse(&reason),
                });
            }
        }
        if let Some(u) = chunk.usage.and_then(usage) {
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
