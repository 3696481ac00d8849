//! The client's chat request: parsed once, validated, and forwarded with every field the gateway
//! does not interpret left exactly as the client sent it.

use serde_json::{Map, Value};

use crate::AdapterError;

/// Default `max_tokens` when a request does not set one, used for budget estimates and for
/// upstreams (Anthropic) that require the field.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The body as the client sent it.
    pub body: Map<String, Value>,
    /// The gateway's request ID, sent upstream as `x-request-id` so both sides' logs meet.
    pub request_id: Option<String>,
    /// The client's own Anthropic Messages request (`POST /v1/messages`), which an Anthropic
    /// upstream receives as sent instead of a translation of `body` (which every other kind
    /// of upstream receives).
    pub anthropic: Option<AnthropicNative>,
}

/// An Anthropic Messages request as its client sent it, with the headers that shape it.
#[derive(Debug, Clone, Default)]
pub struct AnthropicNative {
    pub body: Map<String, Value>,
    /// `anthropic-version`, as the client sent it.
    pub version: Option<String>,
    /// `anthropic-beta`, as the client sent it.
    pub beta: Option<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest {
        message: message.into(),
        param: param.to_owned(),
    }
}

impl ChatRequest {
    /// Parses and validates a `POST /v1/chat/completions` body. Errors name the offending field.
    pub fn parse(bytes: &[u8]) -> Result<Self, AdapterError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid("body", format!("request body is not valid JSON: {e}")))?;
        let Value::Object(body) = value else {
            return Err(invalid("body", "request body must be a JSON object"));
        };
        Self::from_map(body)
    }

    pub fn from_map(body: Map<String, Value>) -> Result<Self, AdapterError> {
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) => return Err(invalid("model", "'model' must not be empty")),
            None | Some(Value::Null) => {
                return Err(invalid("model", "'model' is a required property"))
            }
            Some(_) => return Err(invalid("model", "'model' must be a string")),
        };
        match body.get("messages") {
            Some(Value::Array(msgs)) if msgs.is_empty() => {
                return Err(invalid(
                    "messages",
                    "'messages' must contain at least one message",
                ))
            }
            Some(Value::Array(msgs)) => {
                for (i, m) in msgs.iter().enumerate() {
                    let Value::Object(m) = m else {
                        return Err(invalid(
                            &format!("messages[{i}]"),
                            format!("'messages[{i}]' must be an object"),
                        ));
                    };
                    match m.get("role") {
                        Some(Value::String(_)) => {}
                        None => {
                            return Err(invalid(
                                &format!("messages[{i}].role"),
                                format!("'messages[{i}].role' is a required property"),
                            ))
                        }
                        Some(_) => {
                            return Err(invalid(
                                &format!("messages[{i}].role"),
                                format!("'messages[{i}].role' must be a string"),
                            ))
                        }
                    }
                    match m.get("content") {
                        None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
                        Some(_) => {
                            return Err(invalid(
                                &format!("messages[{i}].content"),
                                format!("'messages[{i}].content' must be a string or an array of content parts"),
                            ))
                        }
                    }
                }
            }
            None | Some(Value::Null) => {
                return Err(invalid("messages", "'messages' is a required property"))
            }
            Some(_) => return Err(invalid("messages", "'messages' must be an array")),
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream", "'stream' must be a boolean")),
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(
                        "stream_options.include_usage",
                        "'stream_options.include_usage' must be a boolean",
                    ))
                }
            },
            Some(_) => {
                return Err(invalid(
                    "stream_options",
                    "'stream_options' must be an object",
                ))
            }
        };
        for field in ["n", "max_tokens", "max_completion_tokens"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {}
                Some(_) => {
                    return Err(invalid(
                        field,
                        format!("'{field}' must be a positive integer"),
                    ))
                }
            }
        }
        Ok(Self {
            model,
            stream,
            include_usage,
            body,
            request_id: None,
            anthropic: None,
        })
    }

    /// The completion budget the client set, if any.
    pub fn max_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(Value::as_u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> (String, String) {
        match ChatRequest::parse(body.as_bytes()) {
            Err(AdapterError::InvalidRequest { message, param }) => (param, message),
            other => panic!("expected invalid request, got {other:?}"),
        }
    }

    #[test]
    fn valid_request_keeps_every_field() {
        let r = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"seed":7,"x_vendor":{"a":1}}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.model, "m");
        assert_eq!(r.body["seed"], 7);
        assert_eq!(r.body["x_vendor"]["a"], 1);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err("{").0, "body");
        assert_eq!(err("[]").0, "body");
        assert_eq!(err(r#"{"messages":[{"role":"user"}]}"#).0, "model");
        assert_eq!(err(r#"{"model":1,"messages":[]}"#).0, "model");
        assert_eq!(err(r#"{"model":"m"}"#).0, "messages");
        assert_eq!(err(r#"{"model":"m","messages":"hi"}"#).0, "messages");
        assert_eq!(err(r#"{"model":"m","messages":[]}"#).0, "messages");
        assert_eq!(err(r#"{"model":"m","messages":[1]}"#).0, "messages[0]");
        assert_eq!(
            err(r#"{"model":"m","messages":[{"content":"x"}]}"#).0,
            "messages[0].role"
        );
        assert_eq!(
            err(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#).0,
            "messages[0].content"
        );
        assert_eq!(
            err(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).0,
            "stream"
        );
        assert_eq!(
            err(r#"{"model":"m","messages":[{"role":"user"}],"n":0}"#).0,
            "n"
        );
        let (p, m) = err(
            r#"{"model":"m","messages":[{"role":"user"}],"stream_options":{"include_usage":1}}"#,
        );
        assert_eq!(p, "stream_options.include_usage");
        assert!(m.contains("include_usage"));
    }
}
