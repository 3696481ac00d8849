//! Sluice's retained responses: a response id (`resp_<stream>`) and an output item id
//! (`msg_<stream>_<n>`, `rs_…`, `fc_…`) lead back to the relay stream they came from, which
//! holds the response for as long as the stream is retained. A stream belongs to the team that
//! started it: to another team it does not exist.

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

/// Stream IDs are 22 URL-safe characters; anything else is not one of ours (a client-made id
/// such as Codex's `msg_<uuid>`), and is not looked up.
fn valid_stream_id(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
            let body = open(state, caller, &format!("resp_{stream}"), 0)
                .await
                .ok()
                .and_then(|h| h.body(Format::Responses));
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
