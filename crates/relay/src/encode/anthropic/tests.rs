use bytes::BytesMut;

use super::super::dialect::{Ctx, State};
use super::super::Format;
use crate::event::{Delta, Done, Event, Failure, Meta, PromptDetails, ToolCall, Usage};

fn ctx() -> Ctx {
    Ctx {
        stream_id: "abcdefghijklmnopqrstuv".into(),
        meta: Meta {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 7,
            system_fingerprint: None,
        },
    }
}

/// The wire bytes of `events` for a reader from wire event `from`, and the state after them.
fn wire(events: &[Event], from: u64) -> (String, State) {
    let mut st = State::new(Format::Anthropic, ctx(), from).unwrap();
    let mut buf = BytesMut::new();
    for e in events {
        st.encode(&mut buf, e.view());
    }
    (String::from_utf8(buf.to_vec()).unwrap(), st)
}

fn first(d: Delta) -> Event {
    Event::Delta(Delta { first: true, ..d })
}

fn reasoning(t: &str) -> Event {
    Event::Delta(Delta {
        reasoning: Some(t.into()),
        ..Delta::default()
    })
}

fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Event {
    Event::Delta(Delta {
        tool_calls: vec![ToolCall {
            index,
            id: id.map(Into::into),
            name: name.map(Into::into),
            arguments: Some(args.into()),
        }],
        ..Delta::default()
    })
}

fn done(reason: &str, usage: Option<Usage>) -> Event {
    Event::Done(Done {
        finish_reasons: vec![(0, reason.into())],
        usage,
    })
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Usage::default()
    }
}

const START: &str = "id: 1\nevent: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_f69f9b70d1c9a5442258ca76\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\nid: 2\nevent: ping\ndata: {\"type\":\"ping\"}\n\n";

#[test]
fn message_id_is_a_digest_of_the_stream_id() {
    let id = super::message_id("abcdefghijklmnopqrstuv");
    assert_eq!(id.len(), 28);
    assert!(id.starts_with("msg_"));
    assert!(START.contains(&id), "{id}");
    assert_ne!(id, super::message_id("abcdefghijklmnopqrstuw"));
}

#[test]
fn text_stream_golden() {
    let events = [
        first(Delta::text(0, "Hel\"lo")),
        Event::Delta(Delta::text(0, "\n")),
        done("stop", Some(usage(9, 2))),
    ];
    let (got, st) = wire(&events, 1);
    let want = START.to_owned()
        + "id: 3\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        + "id: 4\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\\\"lo\"}}\n\n"
        + "id: 5\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\n\"}}\n\n"
        + "id: 6\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        + "id: 7\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}\n\n"
        + "id: 8\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_eq!(got, want);
    assert_eq!(st.next_seq(), 9);
    assert_eq!(
        st.body().unwrap().to_string(),
        r#"{"id":"msg_f69f9b70d1c9a5442258ca76","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"Hel\"lo\n"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":2}}"#
    );
}

#[test]
fn thinking_then_text_then_tools_golden() {
    let events = [
        reasoning("hm"),
        Event::Delta(Delta::text(0, "ok")),
        call(0, Some("call_1"), Some("get"), ""),
        call(0, None, None, "{\"a\":"),
        // A server that repeats the id on every fragment: still the same call.
        call(0, Some("call_1"), None, "1}"),
        call(1, Some("call_2"), Some("put"), "{}"),
        done(
            "tool_calls",
            Some(Usage {
                prompt_tokens_details: Some(PromptDetails { cached_tokens: 4 }),
                ..usage(10, 5)
            }),
        ),
    ];
    let (got, st) = wire(&events, 3);
    let want = "id: 3\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n".to_owned()
        + "id: 4\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n"
        + "id: 5\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        + "id: 6\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        + "id: 7\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n"
        + "id: 8\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
        + "id: 9\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get\",\"input\":{}}}\n\n"
        + "id: 10\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n"
        + "id: 11\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n"
        + "id: 12\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
        + "id: 13\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":\"put\",\"input\":{}}}\n\n"
        + "id: 14\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n"
        + "id: 15\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":3}\n\n"
        + "id: 16\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":6,\"cache_read_input_tokens\":4,\"output_tokens\":5}}\n\n"
        + "id: 17\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_eq!(got, want);
    assert_eq!(
        st.body().unwrap()["content"].to_string(),
        r#"[{"type":"thinking","thinking":"hm","signature":""},{"type":"text","text":"ok"},{"type":"tool_use","id":"call_1","name":"get","input":{"a":1}},{"type":"tool_use","id":"call_2","name":"put","input":{}}]"#
    );
    assert_eq!(st.body().unwrap()["stop_reason"], "tool_use");
}

#[test]
fn a_failure_is_an_error_event_and_no_message_stop() {
    let events = [
        first(Delta::text(0, "Hi")),
        Event::Failed(Failure {
            message: "upstream went away".into(),
            kind: "upstream_truncated".into(),
            code: Some("upstream_truncated".into()),
            ..Default::default()
        }),
    ];
    let (got, st) = wire(&events, 4);
    assert_eq!(
        got,
        "id: 4\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
         id: 5\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream went away\"}}\n\n"
    );
    assert_eq!(st.body().unwrap()["stop_reason"], serde_json::Value::Null);
}

#[test]
fn error_types_and_stop_reasons() {
    let f = |kind: &str, code: Option<&str>| Failure {
        kind: kind.into(),
        code: code.map(Into::into),
        ..Default::default()
    };
    assert_eq!(
        super::error_type(&f("tokens", Some("rate_limit_exceeded"))),
        "rate_limit_error"
    );
    assert_eq!(
        super::error_type(&f("server_shutdown", None)),
        "overloaded_error"
    );
    assert_eq!(
        super::error_type(&f("overloaded_error", None)),
        "overloaded_error"
    );
    assert_eq!(
        super::error_type(&f("upstream_timeout", None)),
        "timeout_error"
    );
    assert_eq!(super::error_type(&f("upstream_error", None)), "api_error");
    assert_eq!(super::stop_reason("stop"), "end_turn");
    assert_eq!(super::stop_reason("length"), "max_tokens");
    assert_eq!(super::stop_reason("tool_calls"), "tool_use");
    assert_eq!(super::stop_reason("content_filter"), "refusal");
    assert_eq!(super::stop_reason("cancelled"), "end_turn");
}

#[test]
fn other_choices_empty_text_and_a_bare_end() {
    let events = [
        Event::Delta(Delta::text(1, "other choice")),
        first(Delta::text(0, "")),
        done("length", None),
    ];
    let (got, _) = wire(&events, 3);
    assert_eq!(
        got,
        "id: 3\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}\n\n\
         id: 4\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
}

#[test]
fn every_resume_position_gives_the_tail_of_the_whole() {
    let events = [
        reasoning("a"),
        first(Delta::text(0, "b")),
        call(0, Some("c"), Some("f"), "{}"),
        done("stop", Some(usage(1, 2))),
    ];
    let (whole, st) = wire(&events, 1);
    let last = st.next_seq();
    for from in 1..=last {
        let (tail, _) = wire(&events, from);
        let cut = whole.find(&format!("id: {from}\n")).unwrap_or(whole.len());
        assert_eq!(tail, whole[cut..], "from {from}");
    }
}

/// One arbitrary log event of choice 0 (or, rarely, another choice).
fn arb_event() -> impl proptest::strategy::Strategy<Value = Event> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z \"\\n日]{0,4}".prop_map(|t| Event::Delta(Delta::text(0, t))),
        "[a-z]{1,3}".prop_map(|t| reasoning(&t)),
        (
            0u32..3,
            proptest::option::of("call_[a-z]"),
            "[{}a-z:\"]{0,4}"
        )
            .prop_map(|(i, id, args)| call(i, id.as_deref(), Some("f"), &args)),
        "[a-z]{1,3}".prop_map(|t| Event::Delta(Delta::text(1, t))),
    ]
}

proptest::proptest! {
    /// Any log, any resume position: the resumed bytes are the tail of the whole, and the
    /// numbering has no gap.
    #[test]
    fn resuming_anywhere_is_the_tail_of_the_whole(
        events in proptest::collection::vec(arb_event(), 0..12),
        end in 0u8..3,
        from in 1u64..40,
    ) {
        let mut events = events;
        match end {
            0 => events.push(done("stop", Some(usage(1, 1)))),
            1 => events.push(Event::Failed(Failure {
                message: "x".into(),
                kind: "upstream_error".into(),
                ..Default::default()
            })),
            _ => {}
        }
        let (whole, st) = wire(&events, 1);
        let ids: Vec<u64> = whole
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|n| n.parse().unwrap())
            .collect();
        proptest::prop_assert_eq!(&ids, &(1..st.next_seq()).collect::<Vec<_>>());
        let (tail, _) = wire(&events, from);
        let cut = whole.find(&format!("id: {from}\n")).unwrap_or(whole.len());
        proptest::prop_assert_eq!(tail, &whole[cut..]);
    }
}
