//! The one SSE parser of the tests: [`parse_sse`] splits a body into events the way the WHATWG
//! algorithm reads lines (LF, CRLF or CR endings; `:` comments skipped; `data` lines joined with
//! LF; one optional space after the colon), keeping every field for assertions. [`sse_events`]
//! gives the same events typed ([`SseEvent`]), and [`complete_part`] cuts a body still arriving
//! at its last complete event.

use std::collections::HashMap;

use serde_json::Value;

/// Parses an SSE body into events: each event as a map of field name to value (`data` lines
/// joined with `\n`, any other repeated field keeps its last value). An event is every field
/// before a blank line, so a `retry:`-only block counts as an event too.
pub fn parse_sse(body: &str) -> Vec<HashMap<String, String>> {
    let mut events = Vec::new();
    let mut cur: HashMap<String, String> = HashMap::new();
    // "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF)
    // character pair, a single U+000A LINE FEED (LF) character, or a single U+000D CARRIAGE
    // RETURN (CR) character."
    let normalised = body.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalised.split('\n') {
        if line.is_empty() {
            if !cur.is_empty() {
                events.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (k, v) = match line.split_once(':') {
            Some((k, v)) => (k, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match cur.get_mut(k) {
            Some(existing) if k == "data" => {
                existing.push('\n');
                existing.push_str(v);
            }
            _ => {
                cur.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    if !cur.is_empty() {
        events.push(cur);
    }
    events
}

/// One SSE event, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `id:` field, which Sluice always writes as a number.
    pub id: Option<u64>,
    /// The `event:` field (the browser format names its events; the OpenAI format has none).
    pub event: Option<String>,
    /// The joined `data:` lines (empty when there were none).
    pub data: String,
    /// Every field name the event had, sorted (to check that no `event:`/`retry:` leaked
    /// through).
    pub fields: Vec<String>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }

    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// Whether the event had a `field:` line.
    pub fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|f| f == field)
    }
}

/// Parses an SSE body into typed events; panics on an `id:` that is not a number.
pub fn sse_events(body: &str) -> Vec<SseEvent> {
    parse_sse(body)
        .into_iter()
        .map(|mut m| {
            let mut fields: Vec<String> = m.keys().cloned().collect();
            fields.sort();
            SseEvent {
                id: m.get("id").map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("id is not a number: {v:?}"))
                }),
                event: m.remove("event"),
                data: m.remove("data").unwrap_or_default(),
                fields,
            }
        })
        .collect()
}

/// The part of a body still arriving that holds complete events: up to its last blank line
/// (LF endings, as Sluice writes them).
pub fn complete_part(body: &str) -> &str {
    body.rfind("\n\n").map_or("", |end| &body[..end + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_comments_multi_line_data_and_every_line_ending() {
        for eol in ["\n", "\r\n", "\r"] {
            let body = [
                "retry: 1000",
                "",
                ": comment",
                "id: 7",
                "event: delta",
                "data: a",
                "data:b",
                "",
                "data: [DONE]",
                "",
            ]
            .join(eol);
            let evs = sse_events(&body);
            assert_eq!(evs.len(), 3, "{eol:?}");
            assert_eq!(evs[0].fields, vec!["retry".to_owned()]);
            assert_eq!(evs[1].id, Some(7));
            assert_eq!(evs[1].event.as_deref(), Some("delta"));
            assert_eq!(evs[1].data, "a\nb");
            assert!(evs[2].is_done() && !evs[2].has("id"));
        }
    }

    #[test]
    fn complete_part_stops_at_the_last_blank_line() {
        assert_eq!(
            complete_part("id: 1\ndata: x\n\nid: 2\nda"),
            "id: 1\ndata: x\n\n"
        );
        assert_eq!(complete_part("id: 1\n"), "");
    }
}
