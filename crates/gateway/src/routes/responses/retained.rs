//! Sluice's retained responses: a response id (`resp_<stream>`) and an output item id
//! (`msg_<stream>_<n>`, `rs_…`, `fc_…`) lead back to the relay stream they came from, which
//! holds the response (and its events) for as long as the stream is retained; after that, to
//! the object kept in the responses store ([`crate::streams::ResponsesStore`]), which
//! [`keep_at_end`] puts there when the stream ends. A response belongs to the team that started
//! it: to another team it does not exist.

use std::collections::HashMap;

use relay::{Format, Handle};
use serde_json::Value;

use crate::access::Caller;
use crate::error::GatewayError;
use crate::state::AppState;

/// The stream ID of response id `resp_<stream>`.
pub fn stream_of_response(id: &str) -> Option<&str> {
    id.strip_prefix("resp_").filter(|s| valid_stream_id(s))
}

/// The stream ID and output index of an output item id `<kind>_<stream>_<n>`. Stream IDs
/// may hold `_` themselves: the kind ends at the first, the index starts after the last.
pub fn stream_of_item(id: &str) -> Option<(&str, usize)> {
    let (kind, rest) = id.split_once('_')?;
    if !matches!(kind, "msg" | "rs" | "fc") {
        return None;
    }
    let (stream, n) = rest.rsplit_once('_')?;
    let n = n.parse().ok()?;
    valid_stream_id(stream).then_some((stream, n))
}

/// Only what could be a stream ID Sluice made (`relay::StreamId::parse`): anything else (a
/// client-made id such as Codex's `msg_<uuid>`) is not one of ours, and is not looked up.
fn valid_stream_id(s: &str) -> bool {
    relay::StreamId::parse(s).is_some()
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound(format!("response '{id}' not found or expired"))
}

/// The stream behind response `id`, if it exists and is the caller's team's.
pub async fn open(
    state: &AppState,
    caller: &Caller,
    id: &str,
    after: u64,
) -> Result<Handle, GatewayError> {
    let stream = stream_of_response(id).ok_or_else(|| not_found(id))?;
    let handle = state
        .streams
        .open(stream, after, Format::Responses)
        .await
        .map_err(|_| not_found(id))?;
    if handle.owner().is_some() && handle.owner() != caller.team_name() {
        return Err(not_found(id));
    }
    Ok(handle)
}

/// Where a response was found: its relay stream (events and object), or only its kept object.
pub enum Found {
    Stream(Handle),
    Kept(Value),
}

/// Response `id` of the caller's team: its relay stream while it is retained, else the object
/// the store kept.
pub async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
    after: u64,
) -> Result<Found, GatewayError> {
    let missing = match open(state, caller, id, after).await {
        Ok(handle) => return Ok(Found::Stream(handle)),
        Err(e) => e,
    };
    if stream_of_response(id).is_none() {
        return Err(missing);
    }
    match state.streams.responses.get(id, caller.team_name()).await? {
        Some(object) => Ok(Found::Kept(object)),
        None => Err(missing),
    }
}

/// Keeps the response of stream `handle` (just started by `POST /v1/responses`) in the store
/// once the stream has ended, however it ends. The task waits without being a reader, so a
/// generation whose client went away is still abandoned after its grace period.
pub fn keep_at_end(state: &AppState, handle: Handle) {
    if !state.streams.responses.is_enabled() {
        return;
    }
    let task_state = state.clone();
    state.lifecycle.spawn(async move {
        handle.finished().await;
        let Some(object) = handle.body(Format::Responses) else {
            return;
        };
        let id = format!("resp_{}", handle.id().as_str());
        task_state
            .streams
            .responses
            .put(&id, handle.owner(), &object)
            .await;
    });
}

/// The output items that `ids` name, from the caller's retained responses. Ids that are
/// not Sluice's, or whose response is gone or another team's, are left out (the translator
/// then answers 400 naming them). Each stream is folded once.
pub async fn resolve(state: &AppState, caller: &Caller, ids: &[String]) -> HashMap<String, Value> {
    let mut bodies: HashMap<&str, Option<Value>> = HashMap::new();
    let mut found = HashMap::new();
    for id in ids {
        let Some((stream, n)) = stream_of_item(id) else {
            continue;
        };
        if !bodies.contains_key(stream) {
            let body = match find(state, caller, &format!("resp_{stream}"), 0).await {
                Ok(Found::Stream(h)) => h.body(Format::Responses),
                Ok(Found::Kept(object)) => Some(object),
                Err(_) => None,
            };
            bodies.insert(stream, body);
        }
        let item = bodies
            .get(stream)
            .and_then(Option::as_ref)
            .and_then(|b| b["output"].get(n))
            .filter(|item| item["id"] == id.as_str());
        if let Some(item) = item {
            found.insert(id.clone(), item.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lead_back_to_streams() {
        let s = "AbCdEfGhIjKlMnOpQr_-12";
        assert_eq!(stream_of_response(&format!("resp_{s}")), Some(s));
        assert_eq!(stream_of_item(&format!("msg_{s}_3")), Some((s, 3)));
        assert_eq!(stream_of_item(&format!("fc_{s}_10")), Some((s, 10)));
        assert_eq!(stream_of_item(&format!("rs_{s}_0")), Some((s, 0)));
        // Codex's own ids are not ours.
        assert_eq!(
            stream_of_item("msg_01a24ecb-7276-7e72-a70f-b016886fe519"),
            None
        );
        assert_eq!(stream_of_item(&format!("msg_{s}")), None);
        assert_eq!(stream_of_item(&format!("xx_{s}_1")), None);
        assert_eq!(stream_of_response("resp_short"), None);
    }
}
