//! Resuming a finished stream from every position: exactly the events after N, no gap, no
//! duplicate, and the text a client pieces together is the whole answer.

use crate::common::*;
use proptest::prelude::*;
use relay::{Delta, Event, Format, RelayError, ToolCall};
use serde_json::value::RawValue;

fn pieces() -> Vec<String> {
    [
        "Hel", "lo", ", ", "wörld", " ", "🦀", "日本", "語", "", "e\u{301}", "\"q\"\n", "end.",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test]
async fn resume_at_every_position() {
    let pieces = pieces();
    let k = pieces.len() as u64;
    let full: String = pieces.concat();
    let h = finished(&pieces);
    assert_eq!(h.last_event_id(Format::Browser), k + 1);

    for n in 0..=k {
        let events = drain(h.subscribe(n, Format::Browser).unwrap()).await;
        let ids = ids(&events);
        assert_eq!(ids, (n + 1..=k + 1).collect::<Vec<_>>(), "resume from {n}");
        let (_, last) = events.last().unwrap();
        assert!(matches!(last, Event::Done(_)), "ends with done");
        assert!(events[..events.len() - 1]
            .iter()
            .all(|(_, e)| matches!(e, Event::Delta(_))));

        let seen: String = pieces[..n as usize].concat();
        let resumed: String = events.iter().map(|(_, e)| text_of(e)).collect();
        assert_eq!(seen + &resumed, full, "resume from {n}");
        // The reader's format does not change the events it yields.
        let openai_events = drain(h.subscribe(n, Format::OpenAi).unwrap()).await;
        assert_eq!(format!("{events:?}"), format!("{openai_events:?}"));

        // The same, as the bytes a browser and an OpenAI client receive.
        let body = sse_body(h.subscribe(n, Format::Browser).unwrap(), NO_KEEPALIVE).await;
        assert!(body.starts_with(b"retry: 1000\n\n"));
        let (sse, empty) = parse_sse(&body);
        assert_eq!(empty, 1, "only the retry preamble is a blank dispatch");
        let sse_ids: Vec<u64> = sse.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(sse_ids, ids, "browser ids from {n}");
        assert_eq!(sse.last().unwrap().event.as_deref(), Some("done"));
        assert_eq!(pieces[..n as usize].concat() + &browser_text(&sse), full);

        let body = sse_body(h.subscribe(n, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
        assert_openai_blank_lines_ok(&body);
        let (sse, empty) = parse_sse(&body);
        assert_eq!(empty, 0);
        assert_eq!(sse.last().unwrap().data, "[DONE]");
        // The OpenAI end (finish chunk, [DONE]) numbers on from the `done` event's id.
        assert_eq!(
            sse.last().unwrap().id,
            Some(h.last_event_id(Format::OpenAi))
        );
        let oids: Vec<u64> = sse.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(
            oids,
            (n + 1..=h.last_event_id(Format::OpenAi)).collect::<Vec<_>>(),
            "openai ids from {n}"
        );
        assert_eq!(pieces[..n as usize].concat() + &openai_text(&sse), full);
        // Only the first chunk of the whole stream carries the role, resumed or not.
        let roles = sse.iter().filter(|e| e.data.contains("\"role\"")).count();
        assert_eq!(roles, usize::from(n == 0), "role chunks resuming from {n}");
    }

    // In the OpenAI numbering, resuming inside the end yields exactly its remaining events.
    let last = h.last_event_id(Format::OpenAi);
    assert!(last > k + 1);
    for n in k + 1..last {
        let r = h.subscribe(n, Format::OpenAi).unwrap();
        let body = sse_body(r, NO_KEEPALIVE).await;
        let (sse, _) = parse_sse(&body);
        let oids: Vec<u64> = sse.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(
            oids,
            (n + 1..=last).collect::<Vec<_>>(),
            "openai resume from {n}"
        );
        assert_eq!(sse.last().unwrap().data, "[DONE]");
    }
    assert_eq!(
        h.subscribe(last, Format::OpenAi).err(),
        Some(RelayError::AtEnd(last))
    );
    assert_eq!(
        h.subscribe(last + 1, Format::OpenAi).err(),
        Some(RelayError::BadPosition(last + 1))
    );

    assert_eq!(
        h.subscribe(k + 1, Format::Browser).err(),
        Some(RelayError::AtEnd(k + 1))
    );
    assert_eq!(
        h.subscribe(k + 2, Format::Browser).err(),
        Some(RelayError::BadPosition(k + 2))
    );
    assert_eq!(
        h.subscribe(u64::MAX, Format::Browser).err(),
        Some(RelayError::BadPosition(u64::MAX))
    );
    // Refused subscriptions do not count as readers.
    assert_eq!(h.reader_count(), 0);
}

#[tokio::test]
async fn resume_on_a_live_stream() {
    let (mut w, h) = stream(false);
    // Position 0 on an empty live stream is fine, anything past it is not.
    assert!(h.subscribe(0, Format::Browser).is_ok());
    assert!(h.subscribe(0, Format::OpenAi).is_ok());
    assert_eq!(
        h.subscribe(1, Format::Browser).err(),
        Some(RelayError::BadPosition(1))
    );
    for p in numbered_pieces(3) {
        assert!(w.push_delta(relay::Delta::text(0, p)));
    }
    // The last id of a live stream is a valid position: the reader waits for what comes next.
    let r = h.subscribe(3, Format::Browser).unwrap();
    let o = h.subscribe(3, Format::OpenAi).unwrap();
    assert_eq!(r.position(), 3);
    assert_eq!(
        h.subscribe(4, Format::Browser).err(),
        Some(RelayError::BadPosition(4))
    );
    assert_eq!(
        h.subscribe(4, Format::OpenAi).err(),
        Some(RelayError::BadPosition(4))
    );
    w.record_finish(0, "stop");
    w.finish();
    let events = drain(r).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, 4);
    assert!(matches!(events[0].1, Event::Done(_)));
    // The OpenAI reader that waited at 3 gets the whole end: finish chunk and [DONE].
    let body = sse_body(o, NO_KEEPALIVE).await;
    let (sse, _) = parse_sse(&body);
    assert_eq!(
        sse.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(sse[1].data, "[DONE]");
}

/// Splits `text` at the given char positions (sorted, deduplicated, in range).
fn split_at_chars(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain(std::iter::once(chars.len())) {
        out.push(chars[start..c].iter().collect());
        start = c;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resume_anywhere(
        text in "\\PC{0,60}",
        cuts in proptest::collection::vec(0usize..1000, 0..12),
        n_seed in 0u64..1000,
    ) {
        let pieces = split_at_chars(&text, &cuts);
        let k = pieces.len() as u64;
        let n = n_seed % (k + 1);
        let h = finished(&pieces);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();

        let events = rt.block_on(drain(h.subscribe(n, Format::Browser).unwrap()));
        prop_assert_eq!(ids(&events), (n + 1..=k + 1).collect::<Vec<_>>());
        let resumed: String = events.iter().map(|(_, e)| text_of(e)).collect();
        prop_assert_eq!(pieces[..n as usize].concat() + &resumed, text.clone());

        let body = rt.block_on(sse_body(h.subscribe(n, Format::Browser).unwrap(), NO_KEEPALIVE));
        let (sse, _) = parse_sse(&body);
        prop_assert_eq!(pieces[..n as usize].concat() + &browser_text(&sse), text.clone());
        let body = rt.block_on(sse_body(h.subscribe(n, Format::OpenAi).unwrap(), NO_KEEPALIVE));
        assert_openai_blank_lines_ok(&body);
        let (sse, _) = parse_sse(&body);
        prop_assert_eq!(pieces[..n as usize].concat() + &openai_text(&sse), text);

        prop_assert_eq!(h.subscribe(k + 1, Format::Browser).err(), Some(RelayError::AtEnd(k + 1)));
        prop_assert_eq!(
            h.subscribe(k + 2, Format::Browser).err(),
            Some(RelayError::BadPosition(k + 2))
        );
        prop_assert_eq!(h.reader_count(), 0);
    }
}

/// One delta as the property test generates it: any mix of the kinds of output.
#[derive(Debug, Clone)]
struct Spec {
    choice: u32,
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<ToolCall>,
    logprobs: bool,
    signature: Option<String>,
}

impl Spec {
    fn delta(&self) -> Delta {
        Delta {
            choice: self.choice,
            content: self.content.clone(),
            reasoning: self.reasoning.clone(),
            refusal: self.refusal.clone(),
            tool_calls: self.tool_calls.clone(),
            logprobs: self.logprobs.then(|| {
                RawValue::from_string(r#"{"content":[{"token":"a","logprob":-0.25}]}"#.into())
                    .expect("valid JSON")
            }),
            signature: self.signature.clone(),
            first: false,
        }
    }
}

/// How the generated stream ends.
#[derive(Debug, Clone)]
enum End {
    /// `done`, with finish reasons recorded for some choices and maybe usage.
    Finish(Vec<(u32, String)>, bool),
    Cancelled,
    Failed,
    /// The writer is dropped without an end.
    Dropped,
}

/// Short texts, and now and then one longer than 65535 bytes (the log keeps those whole).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "\\PC{0,12}",
        1 => (0usize..3, 0usize..100).prop_map(|(i, extra)| {
            let unit = ["ab", "é🦀", "\"q\"\n\\\u{1}"][i];
            unit.repeat(65_536 / unit.len() + 1 + extra)
        }),
    ]
}

fn choice() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(255),
        Just(256),
        Just(300),
        Just(70_000)
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let tool = (
        0u32..3,
        proptest::option::of("call_[a-z]{1,3}"),
        proptest::option::of("[a-z_]{1,6}"),
        proptest::option::of("\\PC{0,8}"),
    )
        .prop_map(|(index, id, name, arguments)| ToolCall {
            index,
            id,
            name,
            arguments,
        });
    (
        choice(),
        proptest::option::weighted(0.7, text()),
        proptest::option::weighted(0.3, text()),
        proptest::option::weighted(0.1, text()),
        proptest::collection::vec(tool, 0..3),
        proptest::bool::weighted(0.2),
        proptest::option::weighted(0.1, "[A-Za-z0-9+/=]{0,12}"),
    )
        .prop_map(
            |(choice, content, reasoning, refusal, tool_calls, logprobs, signature)| Spec {
                choice,
                content,
                reasoning,
                refusal,
                tool_calls,
                logprobs,
                signature,
            },
        )
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => (
            proptest::collection::vec((choice(), "stop|length|tool_calls"), 0..3),
            any::<bool>()
        )
            .prop_map(|(f, u)| End::Finish(f, u)),
        1 => Just(End::Cancelled),
        1 => Just(End::Failed),
        1 => Just(End::Dropped),
    ]
}

/// Splits an SSE body (no preamble, no keep-alives) into its events, each with its id.
fn by_id(body: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("event ends with a blank line")
            + 2;
        let (event, tail) = rest.split_at(end);
        let line = &event[..event.iter().position(|&b| b == b'\n').expect("a line")];
        let id = std::str::from_utf8(line)
            .expect("UTF-8")
            .strip_prefix("id: ")
            .expect("every event starts with its id")
            .parse()
            .expect("numeric id");
        out.push((id, event));
        rest = tail;
    }
    out
}

/// The concatenated text of one kind of output of one choice.
fn kind_text(events: &[(u64, Event)], choice: u32, pick: fn(&Delta) -> Option<&str>) -> String {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Delta(d) if d.choice == choice => pick(d),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any sequence of deltas, any end, any resume position, both formats: the SSE body from
    /// that position is the suffix of the whole body, byte for byte, and the whole body is the
    /// events encoded one by one.
    #[test]
    fn resume_mixed_deltas_byte_exact(
        specs in proptest::collection::vec(spec(), 0..10),
        end in end(),
        include_usage in any::<bool>(),
        seeds in (0u64..10_000, 0u64..10_000),
    ) {
        let (mut w, h) = stream(include_usage);
        for s in &specs {
            prop_assert!(w.push_delta(s.delta()));
        }
        match end.clone() {
            End::Finish(finishes, with_usage) => {
                for (c, r) in finishes {
                    w.record_finish(c, r);
                }
                if with_usage {
                    w.record_usage(usage());
                }
                w.finish();
            }
            End::Cancelled => w.finish_cancelled(),
            End::Failed => w.fail(relay::Failure {
                message: "cut\n\nshort".into(),
                kind: "upstream_truncated".into(),
                code: None,
                ..Default::default()
            }),
            End::Dropped => drop(w),
        }
        prop_assert!(h.is_finished());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();

        // The log: ids 1..=len, one terminal event last, and every piece of output in order.
        let events = rt.block_on(drain(h.reader(Format::Browser)));
        let len = events.len() as u64;
        prop_assert_eq!(ids(&events), (1..=len).collect::<Vec<_>>());
        prop_assert_eq!(h.last_event_id(Format::Browser), len);
        prop_assert!(events.last().unwrap().1.is_terminal());
        prop_assert!(events[..events.len() - 1].iter().all(|(_, e)| !e.is_terminal()));
        prop_assert_eq!(
            format!("{:?}", events.last().unwrap().1),
            format!("{:?}", h.outcome().unwrap())
        );
        match (&end, &events.last().unwrap().1) {
            (End::Failed, Event::Failed(_)) => {}
            (End::Cancelled | End::Dropped, Event::Done(d)) => {
                prop_assert!(d.finish_reasons.iter().all(|(_, r)| r == "cancelled"));
            }
            (End::Finish(..), Event::Done(d)) => {
                prop_assert!(d.finish_reasons.iter().all(|(_, r)| r != "cancelled"));
            }
            (e, t) => prop_assert!(false, "end {:?} became {:?}", e, t),
        }
        let mut choices: Vec<u32> = specs.iter().map(|s| s.choice).collect();
        choices.sort_unstable();
        choices.dedup();
        for &c in &choices {
            let of = |pick: fn(&Spec) -> Option<&str>| -> String {
                specs.iter().filter(|s| s.choice == c).filter_map(pick).collect()
            };
            prop_assert_eq!(kind_text(&events, c, |d| d.content.as_deref()), of(|s| s.content.as_deref()));
            prop_assert_eq!(kind_text(&events, c, |d| d.reasoning.as_deref()), of(|s| s.reasoning.as_deref()));
            prop_assert_eq!(kind_text(&events, c, |d| d.refusal.as_deref()), of(|s| s.refusal.as_deref()));
            prop_assert_eq!(kind_text(&events, c, |d| d.signature.as_deref()), of(|s| s.signature.as_deref()));
            let calls: Vec<ToolCall> = events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Delta(d) if d.choice == c => Some(d.tool_calls.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            let want: Vec<ToolCall> = specs
                .iter()
                .filter(|s| s.choice == c)
                .flat_map(|s| s.tool_calls.clone())
                .collect();
            prop_assert_eq!(calls, want);
            let logprobs = events
                .iter()
                .filter(|(_, e)| matches!(e, Event::Delta(d) if d.choice == c && d.logprobs.is_some()))
                .count();
            prop_assert_eq!(logprobs, specs.iter().filter(|s| s.choice == c && s.logprobs).count());
            // The role goes with the first delta of each choice, and only that one.
            let firsts: Vec<bool> = events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Delta(d) if d.choice == c => Some(d.first),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(firsts.iter().filter(|f| **f).count(), 1);
            prop_assert!(firsts[0]);
        }

        for (format, seed) in [(Format::Browser, seeds.0), (Format::OpenAi, seeds.1)] {
            let preamble = format.preamble();
            let last = h.last_event_id(format);
            let chunks = rt.block_on(sse_chunks(h.reader(format), NO_KEEPALIVE));
            prop_assert!(chunks.iter().all(|c| c.len() <= relay::reader::MAX_WRITE));
            let full = chunks.concat();
            let encoded = encode_each(format, &events, include_usage);
            prop_assert!(full.starts_with(preamble));
            prop_assert!(full[preamble.len()..] == encoded[..], "{:?}: whole body", format);
            let all = by_id(&encoded);
            prop_assert_eq!(
                all.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                (1..=last).collect::<Vec<_>>()
            );

            let n = seed % last;
            let chunks = rt.block_on(sse_chunks(h.subscribe(n, format).unwrap(), NO_KEEPALIVE));
            prop_assert!(chunks.iter().all(|c| c.len() <= relay::reader::MAX_WRITE));
            let body = chunks.concat();
            let suffix: Vec<u8> = all
                .iter()
                .filter(|(id, _)| *id > n)
                .flat_map(|(_, e)| e.iter().copied())
                .collect();
            prop_assert!(
                body[..] == [preamble, &suffix[..]].concat()[..],
                "{:?} from {}: not the suffix of the whole body",
                format,
                n
            );
            if n < len {
                // Before the end, exactly the events after n encoded one by one.
                let rest = encode_each(format, &events[n as usize..], include_usage);
                prop_assert!(body[preamble.len()..] == rest[..]);
                let resumed = rt.block_on(drain(h.subscribe(n, format).unwrap()));
                prop_assert_eq!(format!("{:?}", resumed), format!("{:?}", &events[n as usize..]));
            }
            if format == Format::OpenAi {
                assert_openai_blank_lines_ok(&body);
            }
            prop_assert_eq!(h.subscribe(last, format).err(), Some(RelayError::AtEnd(last)));
            prop_assert_eq!(
                h.subscribe(last + 1, format).err(),
                Some(RelayError::BadPosition(last + 1))
            );
        }
        prop_assert_eq!(h.reader_count(), 0);
    }
}
