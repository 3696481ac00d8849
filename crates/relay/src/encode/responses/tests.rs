use bytes::BytesMut;

use super::super::dialect::{Ctx, State};
use super::super::Format;
use crate::event::{Delta, Done, Event, Failure, Meta, ToolCall, Usage};

fn ctx() -> Ctx {
    Ctx {
        stream_id: "S".into(),
        meta: Meta {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 7,
            system_fingerprint: None,
        },
    }
}

/// The wire bytes of `events` from wire event `from` on.
fn wire(events: &[Event], from: u64) -> String {
    let mut state = State::new(Format::Responses, ctx(), from).unwrap();
    let mut buf = BytesMut::new();
    for e in events {
        state.encode(&mut buf, e.view());
    }
    String::from_utf8(buf.to_vec()).unwrap()
}

fn body(events: &[Event]) -> serde_json::Value {
    let mut state = State::new(Format::Responses, ctx(), u64::MAX).unwrap();
    let mut buf = BytesMut::new();
    for e in events {
        state.encode(&mut buf, e.view());
    }
    assert!(buf.is_empty());
    state.body().unwrap()
}

fn done(reason: &str, usage: Option<Usage>) -> Event {
    Event::Done(Done {
        finish_reasons: vec![(0, reason.into())],
        usage,
    })
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 9,
        completion_tokens: 2,
        total_tokens: 11,
        ..Usage::default()
    }
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

const RESP_OPEN: &str = "{\"id\":\"resp_S\",\"object\":\"response\",\"created_at\":7,\"status\":\"in_progress\",\"background\":false,\"error\":null,\"incomplete_details\":null,\"instructions\":null,\"max_output_tokens\":null,\"model\":\"m\",\"output\":[],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,\"temperature\":null,\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":null,\"truncation\":\"disabled\",\"usage\":null,\"user\":null,\"metadata\":{}}";

fn opening() -> String {
    format!(
        "id: 0\nevent: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{RESP_OPEN}}}\n\n\
         id: 1\nevent: response.in_progress\ndata: {{\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{RESP_OPEN}}}\n\n"
    )
}

fn final_response(status: &str, extra: &str, output: &str, usage: &str) -> String {
    RESP_OPEN
        .replace(
            "\"status\":\"in_progress\"",
            &format!("\"status\":\"{status}\""),
        )
        .replace("\"output\":[]", &format!("\"output\":[{output}]"))
        .replace("\"usage\":null", &format!("\"usage\":{usage}"))
        .replace("\"error\":null,\"incomplete_details\":null", extra)
}

const USAGE: &str = "{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":11}";
const NO_USAGE: &str = "{\"input_tokens\":0,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":0,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":0}";
const NO_END: &str = "\"error\":null,\"incomplete_details\":null";

fn text_events() -> Vec<Event> {
    vec![
        Event::Delta(Delta::text(0, "Hel")),
        Event::Delta(Delta::text(0, "lo \"x\"")),
        done("stop", Some(usage())),
    ]
}

fn text_golden() -> String {
    let msg = "{\"id\":\"msg_S_0\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hello \\\"x\\\"\"}],\"role\":\"assistant\"}";
    format!(
        "{}\
id: 2\nevent: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{{\"id\":\"msg_S_0\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}}}\n\n\
id: 3\nevent: response.content_part.added\ndata: {{\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}}}\n\n\
id: 4\nevent: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\",\"logprobs\":[]}}\n\n\
id: 5\nevent: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"delta\":\"lo \\\"x\\\"\",\"logprobs\":[]}}\n\n\
id: 6\nevent: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"text\":\"Hello \\\"x\\\"\",\"logprobs\":[]}}\n\n\
id: 7\nevent: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":7,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hello \\\"x\\\"\"}}}}\n\n\
id: 8\nevent: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":8,\"output_index\":0,\"item\":{msg}}}\n\n\
id: 9\nevent: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{}}}\n\n",
        opening(),
        final_response("completed", NO_END, msg, USAGE)
    )
}

#[test]
fn text_golden_bytes() {
    assert_eq!(wire(&text_events(), 0), text_golden());
}

#[test]
fn resume_from_any_position_is_the_tail() {
    let all = text_golden();
    let events: Vec<&str> = all.split_inclusive("\n\n").collect();
    assert_eq!(events.len(), 10);
    for from in 0..=10u64 {
        let tail: String = events[from as usize..].concat();
        assert_eq!(wire(&text_events(), from), tail, "from {from}");
    }
}

#[test]
fn resume_through_the_handle() {
    use crate::registry::{Limits, Registry};
    let registry = Registry::new(Limits::default());
    let mut w = registry
        .create(ctx().meta, true)
        .expect("stream registered");
    for e in text_events() {
        match e {
            Event::Delta(d) => assert!(w.push_delta(d)),
            Event::Done(d) => {
                w.record_finish(0, &d.finish_reasons[0].1);
                w.record_usage(d.usage.unwrap());
            }
            Event::Failed(_) => unreachable!(),
        }
    }
    let id = w.id().as_str().to_owned();
    w.finish();
    let h = registry.get(&id).expect("handle");
    let sid = h.id().as_str().to_owned();
    let mut r = h.subscribe_from(6, Format::Responses).expect("reader");
    let mut got = String::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        while let Some(b) = std::future::poll_fn(|cx| r.poll_chunk(cx)).await {
            got.push_str(std::str::from_utf8(&b).unwrap());
        }
    });
    let expected: String = text_golden()
        .replace("_S", &format!("_{sid}"))
        .split_inclusive("\n\n")
        .skip(6)
        .collect();
    assert_eq!(got, expected);
    assert!(matches!(
        h.subscribe_from(10, Format::Responses),
        Err(crate::RelayError::AtEnd(9))
    ));
    assert_eq!(h.body(Format::Responses).unwrap()["status"], "completed");
}

#[test]
fn reasoning_then_text() {
    let events = vec![
        reasoning("think"),
        Event::Delta(Delta::text(0, "ok")),
        done("stop", None),
    ];
    let got = wire(&events, 2);
    let rs = "{\"id\":\"rs_S_0\",\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"think\"}]}";
    let msg = "{\"id\":\"msg_S_1\",\"type\":\"message\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"ok\"}],\"role\":\"assistant\"}";
    let expected = format!("\
id: 2\nevent: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{{\"id\":\"rs_S_0\",\"type\":\"reasoning\",\"summary\":[]}}}}\n\n\
id: 3\nevent: response.reasoning_summary_part.added\ndata: {{\"type\":\"response.reasoning_summary_part.added\",\"sequence_number\":3,\"item_id\":\"rs_S_0\",\"output_index\":0,\"summary_index\":0,\"part\":{{\"type\":\"summary_text\",\"text\":\"\"}}}}\n\n\
id: 4\nevent: response.reasoning_summary_text.delta\ndata: {{\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":4,\"item_id\":\"rs_S_0\",\"output_index\":0,\"summary_index\":0,\"delta\":\"think\"}}\n\n\
id: 5\nevent: response.reasoning_summary_text.done\ndata: {{\"type\":\"response.reasoning_summary_text.done\",\"sequence_number\":5,\"item_id\":\"rs_S_0\",\"output_index\":0,\"summary_index\":0,\"text\":\"think\"}}\n\n\
id: 6\nevent: response.reasoning_summary_part.done\ndata: {{\"type\":\"response.reasoning_summary_part.done\",\"sequence_number\":6,\"item_id\":\"rs_S_0\",\"output_index\":0,\"summary_index\":0,\"part\":{{\"type\":\"summary_text\",\"text\":\"think\"}}}}\n\n\
id: 7\nevent: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":7,\"output_index\":0,\"item\":{rs}}}\n\n\
id: 8\nevent: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":8,\"output_index\":1,\"item\":{{\"id\":\"msg_S_1\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}}}\n\n\
id: 9\nevent: response.content_part.added\ndata: {{\"type\":\"response.content_part.added\",\"sequence_number\":9,\"item_id\":\"msg_S_1\",\"output_index\":1,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}}}\n\n\
id: 10\nevent: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":10,\"item_id\":\"msg_S_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"ok\",\"logprobs\":[]}}\n\n\
id: 11\nevent: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"sequence_number\":11,\"item_id\":\"msg_S_1\",\"output_index\":1,\"content_index\":0,\"text\":\"ok\",\"logprobs\":[]}}\n\n\
id: 12\nevent: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":12,\"item_id\":\"msg_S_1\",\"output_index\":1,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"ok\"}}}}\n\n\
id: 13\nevent: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":13,\"output_index\":1,\"item\":{msg}}}\n\n\
id: 14\nevent: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":14,\"response\":{}}}\n\n",
        final_response("completed", NO_END, &format!("{rs},{msg}"), NO_USAGE));
    assert_eq!(got, expected);
}

#[test]
fn tool_calls_golden() {
    let events = vec![
        call(0, Some("call_a"), Some("get_weather"), ""),
        call(0, None, None, "{\"city\":"),
        call(0, None, None, "\"Paris\"}"),
        call(1, None, Some("tools.spawn_agent"), "{}"),
        done("tool_calls", Some(usage())),
    ];
    let got = wire(&events, 2);
    let fc0 = "{\"id\":\"fc_S_0\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\",\"call_id\":\"call_a\",\"name\":\"get_weather\"}";
    let fc1 = "{\"id\":\"fc_S_1\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"{}\",\"call_id\":\"call_S_1\",\"name\":\"spawn_agent\",\"namespace\":\"tools\"}";
    let expected = format!("\
id: 2\nevent: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{{\"id\":\"fc_S_0\",\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":\"\",\"call_id\":\"call_a\",\"name\":\"get_weather\"}}}}\n\n\
id: 3\nevent: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":3,\"item_id\":\"fc_S_0\",\"output_index\":0,\"delta\":\"{{\\\"city\\\":\"}}\n\n\
id: 4\nevent: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":4,\"item_id\":\"fc_S_0\",\"output_index\":0,\"delta\":\"\\\"Paris\\\"}}\"}}\n\n\
id: 5\nevent: response.function_call_arguments.done\ndata: {{\"type\":\"response.function_call_arguments.done\",\"sequence_number\":5,\"item_id\":\"fc_S_0\",\"output_index\":0,\"name\":\"get_weather\",\"arguments\":\"{{\\\"city\\\":\\\"Paris\\\"}}\"}}\n\n\
id: 6\nevent: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":6,\"output_index\":0,\"item\":{fc0}}}\n\n\
id: 7\nevent: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":7,\"output_index\":1,\"item\":{{\"id\":\"fc_S_1\",\"type\":\"function_call\",\"status\":\"in_progress\",\"arguments\":\"\",\"call_id\":\"call_S_1\",\"name\":\"spawn_agent\",\"namespace\":\"tools\"}}}}\n\n\
id: 8\nevent: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":8,\"item_id\":\"fc_S_1\",\"output_index\":1,\"delta\":\"{{}}\"}}\n\n\
id: 9\nevent: response.function_call_arguments.done\ndata: {{\"type\":\"response.function_call_arguments.done\",\"sequence_number\":9,\"item_id\":\"fc_S_1\",\"output_index\":1,\"name\":\"spawn_agent\",\"arguments\":\"{{}}\"}}\n\n\
id: 10\nevent: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":10,\"output_index\":1,\"item\":{fc1}}}\n\n\
id: 11\nevent: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":11,\"response\":{}}}\n\n",
        final_response("completed", NO_END, &format!("{fc0},{fc1}"), USAGE));
    assert_eq!(got, expected);
}

#[test]
fn failure_closes_the_open_item_then_fails() {
    let events = vec![
        Event::Delta(Delta::text(0, "Hi")),
        Event::Failed(Failure {
            message: "upstream reset".into(),
            kind: "upstream_truncated".into(),
            code: Some("upstream_truncated".into()),
            ..Failure::default()
        }),
    ];
    let got = wire(&events, 5);
    let msg = "{\"id\":\"msg_S_0\",\"type\":\"message\",\"status\":\"incomplete\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hi\"}],\"role\":\"assistant\"}";
    let expected = format!("\
id: 5\nevent: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"sequence_number\":5,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"text\":\"Hi\",\"logprobs\":[]}}\n\n\
id: 6\nevent: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":6,\"item_id\":\"msg_S_0\",\"output_index\":0,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hi\"}}}}\n\n\
id: 7\nevent: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":7,\"output_index\":0,\"item\":{msg}}}\n\n\
id: 8\nevent: response.failed\ndata: {{\"type\":\"response.failed\",\"sequence_number\":8,\"response\":{}}}\n\n",
        final_response(
            "failed",
            "\"error\":{\"code\":\"upstream_truncated\",\"message\":\"upstream reset\"},\"incomplete_details\":null",
            msg,
            NO_USAGE
        ));
    assert_eq!(got, expected);
}

#[test]
fn incomplete_reasons() {
    for (reason, status, detail) in [
        ("length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
        ("cancelled", "cancelled", "cancelled"),
    ] {
        let events = vec![Event::Delta(Delta::text(0, "a")), done(reason, None)];
        let got = wire(&events, 8);
        let msg = "{\"id\":\"msg_S_0\",\"type\":\"message\",\"status\":\"incomplete\",\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"a\"}],\"role\":\"assistant\"}";
        let expected = format!(
            "id: 8\nevent: response.incomplete\ndata: {{\"type\":\"response.incomplete\",\"sequence_number\":8,\"response\":{}}}\n\n",
            final_response(
                status,
                &format!("\"error\":null,\"incomplete_details\":{{\"reason\":\"{detail}\"}}"),
                msg,
                NO_USAGE
            )
        );
        assert_eq!(got, expected, "{reason}");
    }
}

#[test]
fn first_event_terminal_still_opens_and_body_follows_the_log() {
    let got = wire(&[done("stop", None)], 0);
    assert!(got.starts_with(&opening()));
    assert!(got.contains("id: 2\nevent: response.completed\n"));
    let b = body(&[Event::Delta(Delta::text(0, "x"))]);
    assert_eq!(b["status"], "in_progress");
    assert_eq!(b["output"][0]["status"], "in_progress");
    assert_eq!(b["usage"], serde_json::Value::Null);
    let b = body(&text_events());
    assert_eq!(b["object"], "response");
    assert_eq!(b["id"], "resp_S");
    assert_eq!(b["output"][0]["content"][0]["text"], "Hello \"x\"");
    assert_eq!(b["usage"]["total_tokens"], 11);
}

#[test]
fn other_choices_and_empty_text_are_skipped() {
    let events = vec![
        Event::Delta(Delta::text(1, "other")),
        Event::Delta(Delta::text(0, "")),
        done("stop", None),
    ];
    let got = wire(&events, 2);
    assert!(
        got.starts_with("id: 2\nevent: response.completed\n"),
        "{got}"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn delta() -> impl Strategy<Value = Event> {
        prop_oneof![
            "[a-z \"\\\\\n]{0,4}".prop_map(|t| Event::Delta(Delta::text(0, t))),
            "[a-z ]{1,4}".prop_map(|t| reasoning(&t)),
            "[a-z ]{1,4}".prop_map(|t| Event::Delta(Delta {
                refusal: Some(t),
                ..Delta::default()
            })),
            (0u32..3, any::<bool>(), "[{}a-z:\"]{0,4}").prop_map(|(i, first, a)| {
                if first {
                    call(i, Some("c"), Some("ns.f"), &a)
                } else {
                    call(i, None, None, &a)
                }
            }),
            "[a-z]{1,3}".prop_map(|t| Event::Delta(Delta::text(1, t))),
        ]
    }

    fn end() -> impl Strategy<Value = Option<Event>> {
        prop_oneof![
            Just(None),
            prop_oneof![
                "stop",
                "length",
                "tool_calls",
                "content_filter",
                "cancelled"
            ]
            .prop_map(|r| Some(done(&r, Some(usage())))),
            Just(Some(Event::Failed(Failure {
                message: "m".into(),
                kind: "k".into(),
                code: None,
                ..Failure::default()
            }))),
        ]
    }

    proptest! {
        /// From any position, the bytes are the tail of a reader's from the start; the
        /// numbering has no gap; the object agrees with the terminal event's response.
        #[test]
        fn every_position_is_the_tail(deltas in proptest::collection::vec(delta(), 0..12), end in end()) {
            let mut events = deltas;
            events.extend(end.clone());
            let all = wire(&events, 0);
            let parts: Vec<&str> = all.split_inclusive("\n\n").collect();
            for (i, p) in parts.iter().enumerate() {
                let head = format!("id: {i}\nevent: ");
                prop_assert!(p.starts_with(&head));
                let seq = format!("\"sequence_number\":{i},");
                prop_assert!(p.contains(&seq));
            }
            for from in 0..=parts.len() {
                prop_assert_eq!(wire(&events, from as u64), parts[from..].concat());
            }
            let terminal = parts.iter().filter(|p| {
                p.contains("event: response.completed\n")
                    || p.contains("event: response.incomplete\n")
                    || p.contains("event: response.failed\n")
            }).count();
            prop_assert_eq!(terminal, usize::from(end.is_some()));
            if end.is_some() {
                let last = parts.last().unwrap();
                let data = last.split_once("data: ").unwrap().1.trim_end();
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                prop_assert_eq!(&v["response"], &body(&events));
                // Every added item was closed.
                let added = all.matches("event: response.output_item.added\n").count();
                let closed = all.matches("event: response.output_item.done\n").count();
                prop_assert_eq!(added, closed);
            }
        }
    }
}
