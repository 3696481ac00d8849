use super::*;
use crate::event::{Delta, PromptDetails, Usage};

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-1".into(),
        model: "m".into(),
        created: 7,
        system_fingerprint: None,
    }
}

fn s(b: Bytes) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn browser(id: u64, e: &Event) -> Bytes {
    encode(Format::Browser, id, e, &meta(), false)
}

fn openai(id: u64, e: &Event, meta: &Meta, include_usage: bool, skip: u64) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(
        &mut buf,
        Format::OpenAi,
        id,
        e.view(),
        &chunk_head(meta),
        include_usage,
        skip,
    );
    buf.freeze()
}

fn openai_tail(id: u64, e: &Event, meta: &Meta, include_usage: bool, skip: u64) -> Bytes {
    openai(id, e, meta, include_usage, skip)
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 9,
        completion_tokens: 2,
        total_tokens: 11,
        ..Usage::default()
    }
}

#[test]
fn browser_golden() {
    let d = Event::Delta(Delta::text(0, "Hel\"lo\n"));
    assert_eq!(
        s(browser(1, &d)),
        "id: 1\nevent: delta\ndata: {\"index\":0,\"text\":\"Hel\\\"lo\\n\"}\n\n"
    );
    let done = Event::Done(Done {
        finish_reasons: vec![(0, "stop".into())],
        usage: Some(usage()),
    });
    assert_eq!(
        s(browser(3, &done)),
        "id: 3\nevent: done\ndata: {\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
    );
    let failed = Event::Failed(Failure {
        message: "boom".into(),
        kind: "upstream_truncated".into(),
        code: Some("upstream_truncated".into()),
        ..Default::default()
    });
    assert_eq!(
        s(browser(12, &failed)),
        "id: 12\nevent: failed\ndata: {\"message\":\"boom\",\"type\":\"upstream_truncated\",\"code\":\"upstream_truncated\"}\n\n"
    );
    let tc = Event::Delta(Delta {
        tool_calls: vec![ToolCall {
            index: 0,
            id: Some("call_1".into()),
            name: Some("f".into()),
            arguments: Some("{\"a\":".into()),
        }],
        ..Delta::default()
    });
    assert_eq!(
        s(browser(4, &tc)),
        "id: 4\nevent: tool_call\ndata: {\"index\":0,\"id\":\"call_1\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}\n\n"
    );
    let r = Event::Delta(Delta {
        reasoning: Some("hmm".into()),
        ..Delta::default()
    });
    assert_eq!(
        s(browser(5, &r)),
        "id: 5\nevent: reasoning\ndata: {\"index\":0,\"text\":\"hmm\"}\n\n"
    );
}

#[test]
fn openai_golden() {
    let mut d = Delta::text(0, "Hel");
    d.first = true;
    assert_eq!(
        s(openai(1, &Event::Delta(d), &meta(), false, 0)),
        "id: 1\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    );
    let done = Event::Done(Done {
        finish_reasons: vec![(0, "stop".into())],
        usage: Some(Usage {
            prompt_tokens_details: Some(PromptDetails { cached_tokens: 1 }),
            ..usage()
        }),
    });
    assert_eq!(
        s(openai(3, &done, &meta(), true, 0)),
        "id: 3\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n\
         id: 4\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\n\
         id: 5\ndata: [DONE]\n\n"
    );
    // Without include_usage the usage chunk is not sent.
    assert!(!s(openai(3, &done, &meta(), false, 0)).contains("\"usage\""));
    let failed = Event::Failed(Failure {
        message: "cut".into(),
        kind: "upstream_truncated".into(),
        code: None,
        ..Default::default()
    });
    assert_eq!(
        s(openai(2, &failed, &meta(), true, 0)),
        "id: 2\ndata: {\"error\":{\"message\":\"cut\",\"type\":\"upstream_truncated\",\"param\":null,\"code\":null}}\n\n"
    );
    // n > 1: a choice that had finished keeps its finish chunk, ahead of the error; a
    // reader resuming after it gets the error alone.
    let failed = Event::Failed(Failure {
        message: "cut".into(),
        kind: "upstream_truncated".into(),
        code: None,
        finish_reasons: vec![(0, "stop".into())],
    });
    assert_eq!(event_count(Format::OpenAi, failed.view(), true), 2);
    assert_eq!(event_count(Format::Browser, failed.view(), true), 1);
    assert_eq!(
        s(openai(2, &failed, &meta(), true, 0)),
        "id: 2\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n\
         id: 3\ndata: {\"error\":{\"message\":\"cut\",\"type\":\"upstream_truncated\",\"param\":null,\"code\":null}}\n\n"
    );
    assert_eq!(
        s(openai_tail(2, &failed, &meta(), true, 1)),
        "id: 3\ndata: {\"error\":{\"message\":\"cut\",\"type\":\"upstream_truncated\",\"param\":null,\"code\":null}}\n\n"
    );
}

#[test]
fn openai_end_numbers_on_and_resumes_mid_way() {
    let done = Event::Done(Done {
        finish_reasons: vec![(0, "stop".into()), (1, "length".into())],
        usage: Some(usage()),
    });
    assert_eq!(event_count(Format::OpenAi, done.view(), true), 4);
    assert_eq!(event_count(Format::OpenAi, done.view(), false), 3);
    assert_eq!(event_count(Format::Browser, done.view(), true), 1);
    let full = s(openai(7, &done, &meta(), true, 0));
    let ids: Vec<&str> = full.lines().filter(|l| l.starts_with("id: ")).collect();
    assert_eq!(ids, vec!["id: 7", "id: 8", "id: 9", "id: 10"]);
    let tail = s(openai_tail(7, &done, &meta(), true, 2));
    assert!(full.ends_with(&tail), "{tail}");
    assert!(tail.starts_with("id: 9\ndata: {"), "{tail}");
    assert_eq!(
        s(openai_tail(7, &done, &meta(), true, 3)),
        "id: 10\ndata: [DONE]\n\n"
    );
}

#[test]
fn openai_tool_call_and_logprobs() {
    let d = Delta {
        choice: 1,
        tool_calls: vec![ToolCall {
            index: 0,
            id: Some("c".into()),
            name: Some("f".into()),
            arguments: Some(String::new()),
        }],
        logprobs: Some(RawValue::from_string("{\"content\":[]}".into()).unwrap()),
        ..Delta::default()
    };
    let out = s(openai(9, &Event::Delta(d), &meta(), false, 0));
    assert!(out.contains("\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"logprobs\":{\"content\":[]}"), "{out}");
}

#[test]
fn hand_written_chunks_match_the_serializer() {
    let head = chunk_head(&Meta {
        system_fingerprint: Some("fp\"1".into()),
        ..meta()
    });
    for (first, text) in [
        (true, "a"),
        (false, "\u{0}\u{1f}\"\\\n\t\r\u{8}\u{c}é\u{7f}"),
    ] {
        for kind in 0..3 {
            let mut d = DeltaRef {
                choice: 3,
                first,
                ..DeltaRef::default()
            };
            match kind {
                0 => d.content = Some(text),
                1 => d.reasoning = Some(text),
                _ => d.refusal = Some(text),
            }
            let mut fast = BytesMut::new();
            openai_delta(&mut fast, 9, &d, &head);
            // The serializer's path for the same delta writes the same bytes.
            let choices = [ChunkChoice {
                index: d.choice,
                delta: ChunkDelta {
                    role: d.first.then_some("assistant"),
                    content: d.content,
                    reasoning_content: d.reasoning,
                    refusal: d.refusal,
                    tool_calls: Vec::new(),
                },
                logprobs: None,
                finish_reason: None,
            }];
            let mut slow = BytesMut::new();
            chunk(&mut slow, 9, &head, &choices, None);
            assert_eq!(s(fast.freeze()), s(slow.freeze()));
        }
    }
}

proptest::proptest! {
    #[test]
    fn json_strings_match_serde_json(v in ".*") {
        let mut b = BytesMut::new();
        put_json_str(&mut b, &v);
        proptest::prop_assert_eq!(s(b.freeze()), serde_json::to_string(&v).unwrap());
    }
}

#[test]
fn digits() {
    for n in [0u64, 7, 10, 123_456, u64::MAX] {
        assert_eq!(itoa_buf(n).as_str(), n.to_string());
    }
}

#[test]
fn a_thinking_signature_is_not_shown_and_keeps_its_id() {
    let signed = Event::Delta(Delta {
        reasoning: Some("hmm".into()),
        signature: Some("EqQBsig".into()),
        ..Delta::default()
    });
    let alone = Event::Delta(Delta {
        signature: Some("EqQBsig".into()),
        ..Delta::default()
    });
    let mut first = Delta {
        signature: Some("EqQBsig".into()),
        ..Delta::default()
    };
    first.first = true;
    let first = Event::Delta(first);
    assert_eq!(
        s(browser(5, &signed)),
        "id: 5\nevent: reasoning\ndata: {\"index\":0,\"text\":\"hmm\"}\n\n"
    );
    assert_eq!(
        s(browser(6, &alone)),
        "id: 6\nevent: reasoning\ndata: {\"index\":0,\"text\":\"\"}\n\n"
    );
    let head = "id: 6\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,";
    assert_eq!(
        s(openai(6, &signed, &meta(), false, 0)),
        format!("{head}\"delta\":{{\"reasoning_content\":\"hmm\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
    );
    assert_eq!(
        s(openai(6, &alone, &meta(), false, 0)),
        format!("{head}\"delta\":{{}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
    );
    assert_eq!(
        s(openai(6, &first, &meta(), false, 0)),
        format!("{head}\"delta\":{{\"role\":\"assistant\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
    );
    for e in [&signed, &alone] {
        for f in [Format::Browser, Format::OpenAi] {
            assert!(
                !s(encode(f, 6, e, &meta(), false)).contains("EqQBsig"),
                "{f:?}"
            );
        }
    }
}
