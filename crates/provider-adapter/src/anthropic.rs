//! Anthropic Messages API (placeholder; being written).
use std::collections::VecDeque;

use serde_json::Value;

use crate::provider::{Completion, StreamMapper, UpstreamRequest};
use crate::{AdapterError, ChatRequest, StreamEvent};

pub(crate) fn build_request(
    base_url: &str,
    api_key: Option<&str>,
    req: &ChatRequest,
    stream: bool,
) -> Result<UpstreamRequest, AdapterError> {
    let _ = (base_url, api_key, req, stream);
    Err(AdapterError::Protocol("anthropic not yet implemented".into()))
}

#[derive(Default)]
pub(crate) struct StreamState {}

impl StreamMapper for StreamState {
    fn on_event(&mut self, _e: &str, _d: &str, _o: &mut VecDeque<StreamEvent>) -> Result<bool, AdapterError> {
        Ok(true)
    }
    fn on_end(&mut self, _o: &mut VecDeque<StreamEvent>) -> Result<(), AdapterError> {
        Ok(())
    }
}

pub(crate) fn completion(value: &Value) -> Result<Completion, AdapterError> {
    let _ = value;
    Err(AdapterError::Protocol("anthropic not yet implemented".into()))
}
