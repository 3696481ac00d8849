use std::collections::VecDeque;

use super::stream::*;
use crate::event::{
    ChoiceDelta, FinishReason, PromptTokensDetails, ResponseMeta, StreamEvent, ToolCallDelta, Usage,
};
use crate::provider::StreamMapper;
use crate::AdapterError;

/// Feeds a literal SSE transcript (`event:`/`data:` lines, blank line between events).
fn run(sse: &str) -> (Vec<StreamEvent>, Result<(), AdapterError>) {
    let mut st = StreamState::default();
    let mut out = VecDeque::new();
    let mut event = String::from("message");
    let mut data = String::new();
    for line in sse.lines().map(str::trim).chain(std::iter::once("")) {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            match st.on_event(&event, &data, &mut out) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return (out.into_iter().collect(), Err(e)),
            }
            event = "message".into();
            data.clear();
        }
    }
    let end = st.on_end(&mut out);
    (out.into_iter().collect(), end)
}

fn content(evs: &[StreamEvent]) -> String {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => d.content.clone(),
            _ => None,
        })
        .collect()
}

fn reasoning(evs: &[StreamEvent]) -> String {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => d.reasoning.clone(),
            _ => None,
        })
        .collect()
}

fn finishes(evs: &[StreamEvent]) -> Vec<FinishReason> {
    evs.iter()
        .filter_map(|e| match e {
            StreamEvent::Finish { choice: 0, reason } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

const TEXT_STREAM: &str = r#"
    event: message_start
    data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}

    event: content_block_start
    data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

    event: ping
    data: {"type": "ping"}

    event: content_block_delta
    data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

    event: content_block_delta
    data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", world \u00e9"}}

    event: content_block_stop
    data: {"type":"content_block_stop","index":0}

    event: message_delta
    data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

    event: message_stop
    data: {"type":"message_stop"}
"#;

#[test]
fn text_stream_with_cache_usage() {
    let (evs, end) = run(TEXT_STREAM);
    end.unwrap();
    assert_eq!(
        evs,
        vec![
            StreamEvent::Meta(ResponseMeta {
                id: Some("msg_01".into()),
                model: Some("claude-sonnet-4-5".into()),
                created: None,
                system_fingerprint: None,
            }),
            StreamEvent::Delta(ChoiceDelta::text(0, "Hello")),
            StreamEvent::Delta(ChoiceDelta::text(0, ", world é")),
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Stop
            },
            StreamEvent::Usage(Usage {
                prompt_tokens: 135,
                // Cumulative: the last value, not 1 + 15.
                completion_tokens: 15,
                total_tokens: 150,
                prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 100 }),
                completion_tokens_details: None,
            }),
        ]
    );
}

#[test]
fn huge_usage_numbers_saturate() {
    let (evs, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":18446744073709551615,"output_tokens":18446744073709551615}}}

        data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":18446744073709551615}}

        data: {"type":"message_stop"}
    "#);
    end.unwrap();
    let Some(StreamEvent::Usage(u)) = evs.last() else {
        panic!("{evs:?}")
    };
    assert_eq!((u.prompt_tokens, u.total_tokens), (u64::MAX, u64::MAX));
}

#[test]
fn message_delta_may_update_input_counts() {
    let (evs, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":5,"output_tokens":1}}}

        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}}

        data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":7,"cache_creation_input_tokens":null,"cache_read_input_tokens":3,"output_tokens":4}}

        data: {"type":"message_stop"}
    "#);
    end.unwrap();
    // The start block's own text is output too.
    assert_eq!(content(&evs), "Hi");
    let Some(StreamEvent::Usage(u)) = evs.last() else {
        panic!("{evs:?}")
    };
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (10, 4, 14)
    );
    assert_eq!(
        u.prompt_tokens_details,
        Some(PromptTokensDetails { cached_tokens: 3 })
    );
}

#[test]
fn tool_calls_past_the_cap_end_the_stream() {
    let mut sse = String::from(
        r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_03","type":"message","role":"assistant","model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"output_tokens":1}}}

"#,
    );
    for i in 0..=MAX_TOOL_CALLS {
        sse.push_str(&format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_{i}\",\"name\":\"f\",\"input\":{{}}}}}}\n\n"
        ));
    }
    let (evs, end) = run(&sse);
    let calls = evs
        .iter()
        .filter(|e| matches!(e, StreamEvent::Delta(d) if !d.tool_calls.is_empty()))
        .count();
    assert_eq!(calls, MAX_TOOL_CALLS);
    assert!(
        matches!(&end, Err(AdapterError::Protocol(m)) if m.contains("tool calls")),
        "{end:?}"
    );
}

#[test]
fn thinking_text_and_two_tools() {
    let (evs, end) = run(r#"
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_02","type":"message","role":"assistant","model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":400,"output_tokens":2}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants "}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"two lookups."}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: content_block_start
        data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_A","name":"get_weather","input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":1}

        event: content_block_start
        data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_B","name":"get_time","input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"tz\":\"CET\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":2}

        event: content_block_start
        data: {"type":"content_block_start","index":3,"content_block":{"type":"text","text":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":3,"delta":{"type":"text_delta","text":"Checking."}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":3}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

        event: message_stop
        data: {"type":"message_stop"}
    "#);
    end.unwrap();
    assert_eq!(reasoning(&evs), "The user wants two lookups.");
    assert_eq!(content(&evs), "Checking.");
    // The signature closes the thinking: a delta of its own, after the thinking text and
    // before the first tool call.
    let deltas: Vec<&ChoiceDelta> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(d),
            _ => None,
        })
        .collect();
    let signed: Vec<usize> = (0..deltas.len())
        .filter(|&i| deltas[i].reasoning_signature.is_some())
        .collect();
    assert_eq!(signed, vec![2], "{deltas:?}");
    assert_eq!(
        deltas[2],
        &ChoiceDelta {
            reasoning_signature: Some("EqQBCgIYAhIM".into()),
            ..ChoiceDelta::default()
        }
    );
    assert!(deltas[3].tool_calls.first().is_some_and(|c| c.id.is_some()));
    for e in &evs {
        if let StreamEvent::Delta(d) = e {
            assert!(d.reasoning.is_none() || d.content.is_none(), "{d:?}");
            assert_eq!(d.choice, 0);
        }
    }
    let calls: Vec<&ToolCallDelta> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(&d.tool_calls),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        calls[0],
        &ToolCallDelta {
            index: 0,
            id: Some("toolu_A".into()),
            name: Some("get_weather".into()),
            arguments: Some(String::new()),
        }
    );
    let args = |i: u32| -> String {
        calls
            .iter()
            .filter(|c| c.index == i)
            .filter_map(|c| c.arguments.clone())
            .collect()
    };
    assert_eq!(args(0), r#"{"city": "Paris"}"#);
    assert_eq!(args(1), r#"{"tz":"CET"}"#);
    let b = calls
        .iter()
        .find(|c| c.id.as_deref() == Some("toolu_B"))
        .unwrap();
    assert_eq!((b.index, b.name.as_deref()), (1, Some("get_time")));
    assert!(calls.iter().all(|c| c.index <= 1));
    assert_eq!(finishes(&evs), vec![FinishReason::ToolCalls]);
    let Some(StreamEvent::Usage(u)) = evs.last() else {
        panic!()
    };
    assert_eq!((u.prompt_tokens, u.completion_tokens), (400, 89));
}

#[test]
fn tool_without_arguments_gets_an_empty_object() {
    let (evs, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

        data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}

        data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

        data: {"type":"content_block_stop","index":0}

        data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}

        data: {"type":"message_stop"}
    "#);
    end.unwrap();
    let args: String = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(d.tool_calls.iter().filter_map(|c| c.arguments.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(args, "{}");
}

#[test]
fn every_stop_reason_maps() {
    for (stop, want) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("pause_turn", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("something_new", FinishReason::Other("something_new".into())),
    ] {
        let sse = format!(
            "data: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"model\":\"c\",\"usage\":{{\"input_tokens\":1,\"output_tokens\":1}}}}}}\n\n\
             data: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{stop}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":2}}}}\n\n\
             data: {{\"type\":\"message_stop\"}}\n\n"
        );
        let (evs, end) = run(&sse);
        end.unwrap();
        assert_eq!(finishes(&evs), vec![want], "{stop}");
    }
}

#[test]
fn error_event_mid_stream() {
    let (evs, end) = run(r#"
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_03","model":"claude","usage":{"input_tokens":3,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Par"}}

        event: error
        data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"never"}}
    "#);
    assert_eq!(evs.len(), 2);
    assert_eq!(content(&evs), "Par");
    let Err(AdapterError::Upstream {
        status,
        kind,
        message,
        code,
        param,
        retry_after,
    }) = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(
        (
            status,
            kind.as_str(),
            message.as_str(),
            code,
            param,
            retry_after
        ),
        (None, "overloaded_error", "Overloaded", None, None, None)
    );
}

#[test]
fn cut_streams_are_truncated() {
    // Cut after the content, before message_delta.
    let (evs, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}
    "#);
    assert_eq!(content(&evs), "Hel");
    assert!(matches!(end, Err(AdapterError::Truncated(_))), "{end:?}");
    // message_stop without a stop reason.
    let (_, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

        data: {"type":"message_stop"}
    "#);
    assert!(matches!(end, Err(AdapterError::Truncated(_))), "{end:?}");
    // Nothing at all.
    let (evs, end) = run("");
    assert!(evs.is_empty());
    assert!(matches!(end, Err(AdapterError::Truncated(_))), "{end:?}");
}

#[test]
fn a_clean_end_after_the_stop_reason_without_message_stop_is_complete() {
    let (evs, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":1}}}

        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

        data: {"type":"content_block_stop","index":0}

        data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":7}}

        event: ping
        data: {"type":"ping"}
    "#);
    end.unwrap();
    assert_eq!(content(&evs), "Hi");
    assert_eq!(finishes(&evs), vec![FinishReason::Length]);
    assert_eq!(
        evs.last(),
        Some(&StreamEvent::Usage(Usage {
            prompt_tokens: 5,
            completion_tokens: 7,
            total_tokens: 12,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 2 }),
            completion_tokens_details: None,
        }))
    );
}

#[test]
fn invalid_json_is_a_protocol_error_and_unknown_events_are_ignored() {
    let mut st = StreamState::default();
    let mut out = VecDeque::new();
    assert!(matches!(
        st.on_event("content_block_delta", "{\"type\":\"content_blo", &mut out),
        Err(AdapterError::Protocol(_))
    ));
    assert!(!st
        .on_event(
            "future_event",
            r#"{"type":"future_event","x":[1]}"#,
            &mut out
        )
        .unwrap());
    assert!(!st.on_event("ping", r#"{"type":"ping"}"#, &mut out).unwrap());
    assert!(out.is_empty());
    // The data's `type` decides, not the SSE event name.
    assert!(st
        .on_event("message", r#"{"type":"message_stop"}"#, &mut out)
        .unwrap());
}

#[test]
fn a_thinking_block_that_opens_complete_keeps_its_signature_and_an_empty_one_none() {
    let (evs, end) = run(r#"
        data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}

        data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"Whole.","signature":"sig-1"}}

        data: {"type":"content_block_stop","index":0}

        data: {"type":"content_block_start","index":1,"content_block":{"type":"thinking","thinking":"","signature":""}}

        data: {"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":""}}

        data: {"type":"content_block_stop","index":1}

        data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}

        data: {"type":"message_stop"}
    "#);
    end.unwrap();
    let deltas: Vec<&ChoiceDelta> = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(d),
            _ => None,
        })
        .collect();
    // Empty thinking with an empty signature carries nothing: no delta at all.
    assert_eq!(
        deltas,
        vec![&ChoiceDelta {
            reasoning: Some("Whole.".into()),
            reasoning_signature: Some("sig-1".into()),
            ..ChoiceDelta::default()
        }]
    );
}
