//! Every format, the dialects included, over random logs: a stream written once reads the same,
//! byte for byte, however and whenever it is read. Two readers from the start agree; a reader
//! from any wire event `p` gets exactly the whole body's suffix from the event numbered `p`; a
//! reader made while the stream is open, read as events arrive, ends with the bytes of one made
//! after the end. Nothing here knows what a format's events say (only the SSE framing and the
//! `id:` numbering), so the test holds every encoder, present and future, to the same rule.

use std::task::{Context, Poll};

use proptest::prelude::*;
use relay::{Delta, Failure, Format, Handle, Reader, RelayError, ToolCall, Writer};

use crate::common::*;

const FORMATS: [Format; 5] = [
    Format::Browser,
    Format::OpenAi,
    Format::Responses,
    Format::Anthropic,
    Format::UiMessage,
];

/// One step of a generated answer, as an upstream would produce it.
#[derive(Debug, Clone)]
enum Step {
    Text(String),
    Reasoning(String),
    /// A thinking signature alone (Anthropic's `signature_delta`).
    Signature(String),
    /// Thinking text and its signature in one delta.
    SignedReasoning(String, String),
    Refusal(String),
    /// Several kinds in one delta (the writer splits it).
    Mixed(String, String),
    /// A new tool call (id and name, maybe first arguments), or, when `start` is false and a
    /// call has started, arguments for the started call `pick` picks.
    Tool {
        start: bool,
        pick: usize,
        name: String,
        args: String,
    },
    /// Output of another choice (`n` > 1), which the dialects leave out.
    OtherChoice(String),
}

/// How the generated stream ends.
#[derive(Debug, Clone)]
enum End {
    /// `done` with choice 0's finish reason (if any recorded) and maybe usage.
    Finish(Option<String>, bool),
    /// The stop button: `done` with `cancelled`.
    Cancelled,
    /// An upstream failure after the start.
    Failed(String, Option<String>),
    /// Still running.
    Open,
}

fn short_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "\\PC{0,8}",
        1 => Just(String::new()),
        1 => Just("\"q\"\n\\\u{1}</s>".to_owned()),
        1 => Just("é🦀日本".to_owned()),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => short_text().prop_map(Step::Text),
        3 => short_text().prop_map(Step::Reasoning),
        1 => "[A-Za-z0-9+/=]{1,24}".prop_map(Step::Signature),
        1 => (short_text(), "[A-Za-z0-9+/=]{1,24}").prop_map(|(t, s)| Step::SignedReasoning(t, s)),
        1 => short_text().prop_map(Step::Refusal),
        1 => (short_text(), short_text()).prop_map(|(r, c)| Step::Mixed(r, c)),
        4 => (any::<bool>(), 0usize..4, "[a-z_]{1,6}", "\\PC{0,8}").prop_map(
            |(start, pick, name, args)| Step::Tool { start, pick, name, args }
        ),
        1 => short_text().prop_map(Step::OtherChoice),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        6 => (
            proptest::option::weighted(
                0.9,
                prop_oneof![
                    Just("stop"),
                    Just("length"),
                    Just("tool_calls"),
                    Just("content_filter"),
                    Just("cancelled"),
                    Just("eos"),
                ]
                .prop_map(str::to_owned)
            ),
            any::<bool>()
        )
            .prop_map(|(r, u)| End::Finish(r, u)),
        1 => Just(End::Cancelled),
        2 => (
            prop_oneof![Just("upstream_truncated"), Just("overloaded_error"), Just("server_error")],
            proptest::option::of(Just("stream_error".to_owned()))
        )
            .prop_map(|(k, c)| End::Failed(k.to_owned(), c)),
        2 => Just(End::Open),
    ]
}

/// The deltas of `steps`: tool calls numbered 0, 1, 2, ... as started, each first fragment with
/// its id and name.
fn deltas(steps: &[Step]) -> Vec<Delta> {
    let mut calls = 0u32;
    steps
        .iter()
        .map(|s| match s {
            Step::Text(t) => Delta::text(0, t.clone()),
            Step::Reasoning(t) => Delta {
                reasoning: Some(t.clone()),
                ..Delta::default()
            },
            Step::Signature(sig) => Delta {
                signature: Some(sig.clone()),
                ..Delta::default()
            },
            Step::SignedReasoning(t, sig) => Delta {
                reasoning: Some(t.clone()),
                signature: Some(sig.clone()),
                ..Delta::default()
            },
            Step::Refusal(t) => Delta {
                refusal: Some(t.clone()),
                ..Delta::default()
            },
            Step::Mixed(r, c) => Delta {
                reasoning: Some(r.clone()),
                content: Some(c.clone()),
                ..Delta::default()
            },
            Step::Tool {
                start,
                pick,
                name,
                args,
            } => {
                let call = if *start || calls == 0 {
                    calls += 1;
                    ToolCall {
                        index: calls - 1,
                        id: Some(format!("call_{calls}")),
                        name: Some(name.clone()),
                        arguments: Some(args.clone()),
                    }
                } else {
                    ToolCall {
                        index: (*pick as u32) % calls,
                        arguments: Some(args.clone()),
                        ..ToolCall::default()
                    }
                };
                Delta {
                    tool_calls: vec![call],
                    ..Delta::default()
                }
            }
            Step::OtherChoice(t) => Delta::text(1, t.clone()),
        })
        .collect()
}

fn push_all(w: &mut Writer, deltas: &[Delta]) {
    for d in deltas {
        assert!(w.push_delta(d.clone()));
    }
}

/// Ends the stream as `end` says; an open stream's writer is handed back.
fn finish(mut w: Writer, end: &End) -> Option<Writer> {
    match end {
        End::Finish(reason, with_usage) => {
            if let Some(r) = reason {
                w.record_finish(0, r.clone());
            }
            if *with_usage {
                w.record_usage(usage());
            }
            w.finish();
        }
        End::Cancelled => w.finish_cancelled(),
        End::Failed(kind, code) => w.fail(Failure {
            message: "upstream \"cut\"\n\nshort".into(),
            kind: kind.clone(),
            code: code.clone(),
            ..Failure::default()
        }),
        End::Open => return Some(w),
    }
    None
}

/// A body's events: each one's `id:` (in a numbered format) and its bytes.
type Events = Vec<(Option<u64>, Vec<u8>)>;

/// What `r` yields without waiting: its bytes, and whether it has ended.
fn take_now(r: &mut Reader) -> (Vec<u8>, bool) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    loop {
        match r.poll_chunk(&mut cx) {
            Poll::Ready(Some(b)) => out.extend_from_slice(&b),
            Poll::Ready(None) => return (out, true),
            Poll::Pending => return (out, false),
        }
    }
}

/// A body's events (each with its blank line), checking the framing on the way: lines of
/// `id: N` (first, in a numbered format, and only there), `event: NAME`, then one `data:` line.
fn events(format: Format, body: &[u8]) -> Result<Events, TestCaseError> {
    let text = std::str::from_utf8(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "{:?}: body does not end with a whole event: {:?}",
        format,
        text
    );
    let mut out = Vec::new();
    for event in text.split_inclusive("\n\n") {
        let lines: Vec<&str> = event.trim_end_matches('\n').split('\n').collect();
        let mut rest = &lines[..];
        let id = match rest.first().and_then(|l| l.strip_prefix("id: ")) {
            Some(n) => {
                rest = &rest[1..];
                Some(
                    n.parse::<u64>()
                        .map_err(|e| TestCaseError::fail(format!("id {n:?}: {e}")))?,
                )
            }
            None => None,
        };
        prop_assert_eq!(id.is_some(), format.numbered(), "{:?}: {:?}", format, event);
        if rest.first().is_some_and(|l| l.starts_with("event: ")) {
            rest = &rest[1..];
        }
        prop_assert!(
            rest.len() == 1 && rest[0].starts_with("data: "),
            "{:?}: an event is id, event and one data line: {:?}",
            format,
            event
        );
        out.push((id, event.as_bytes().to_vec()));
    }
    Ok(out)
}

/// The bytes of the events numbered `p` and after.
fn suffix(events: &Events, p: u64) -> Vec<u8> {
    events
        .iter()
        .filter(|(id, _)| id.is_some_and(|id| id >= p))
        .flat_map(|(_, e)| e.iter().copied())
        .collect()
}

/// The checks on one stream as it stands (finished or not), for one format. Returns the body.
fn check_format(h: &Handle, format: Format) -> Result<Vec<u8>, TestCaseError> {
    let finished = h.is_finished();
    let (whole, ended) = take_now(&mut h.reader(format));
    prop_assert_eq!(
        ended,
        finished,
        "{:?}: a reader ends with the stream",
        format
    );
    let (again, _) = take_now(&mut h.reader(format));
    prop_assert!(
        whole == again,
        "{:?}: two readers from the start differ",
        format
    );
    prop_assert_eq!(
        h.body(format),
        h.body(format),
        "{:?}: the body is a function of the log",
        format
    );
    let evs = events(format, &whole)?;
    if !format.numbered() {
        return Ok(whole);
    }
    // Numbered 1, 2, 3, ... (0, 1, 2, ... for the Responses API), one more per event.
    let first = format.first_id();
    let ids: Vec<u64> = evs.iter().filter_map(|(id, _)| *id).collect();
    let want: Vec<u64> = (first..first + ids.len() as u64).collect();
    prop_assert_eq!(&ids, &want, "{:?}: ids", format);
    let next = first + ids.len() as u64;
    if !ids.is_empty() {
        prop_assert_eq!(h.last_event_id(format), next - 1, "{:?}: last id", format);
    }
    for &p in &ids {
        let mut r = h
            .subscribe_from(p, format)
            .map_err(|e| TestCaseError::fail(format!("{format:?} from {p}: {e}")))?;
        let (body, ended) = take_now(&mut r);
        prop_assert_eq!(ended, finished);
        prop_assert!(
            body == suffix(&evs, p),
            "{:?} from {}: not the suffix of the whole body:\n{}\n---\n{}",
            format,
            p,
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&whole)
        );
    }
    // Past the last event: nothing more of a finished stream (the client stops), a wait on an
    // open one; further on, a position that never was.
    if !ids.is_empty() || first > 0 {
        match h.subscribe_from(next, format) {
            Err(RelayError::AtEnd(n)) if finished => prop_assert_eq!(n, next - 1),
            Ok(mut r) if !finished => {
                let (body, ended) = take_now(&mut r);
                prop_assert!(
                    body.is_empty() && !ended,
                    "{:?}: a reader at the end waits",
                    format
                );
            }
            other => prop_assert!(
                false,
                "{:?} from {} (finished {}): {:?}",
                format,
                next,
                finished,
                other.map(|_| ())
            ),
        }
        prop_assert_eq!(
            h.subscribe_from(next + 1, format).err(),
            Some(RelayError::BadPosition(next))
        );
    }
    Ok(whole)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn every_format_replays_byte_for_byte_from_anywhere(
        steps in proptest::collection::vec(step(), 0..14),
        end in end(),
        include_usage in any::<bool>(),
        cut_seed in 0usize..1000,
        at_seed in 0u64..1000,
    ) {
        let deltas = deltas(&steps);
        let cut = cut_seed % (deltas.len() + 1);
        let (mut w, h) = stream(include_usage);
        push_all(&mut w, &deltas[..cut]);

        // Readers made while the stream is open: one read at once and again at the end, one
        // read only at the end, one from a position already written.
        let mut live: Vec<(Format, Reader, Vec<u8>, Option<u64>)> = Vec::new();
        for format in FORMATS {
            let mut early = h.reader(format);
            let (now, _) = take_now(&mut early);
            live.push((format, early, now, None));
            live.push((format, h.reader(format), Vec::new(), None));
            if format.numbered() {
                let (so_far, _) = take_now(&mut h.reader(format));
                let ids: Vec<u64> = events(format, &so_far)?.iter().filter_map(|(id, _)| *id).collect();
                if !ids.is_empty() {
                    let p = ids[(at_seed % ids.len() as u64) as usize];
                    let mut r = h.subscribe_from(p, format).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let (now, _) = take_now(&mut r);
                    live.push((format, r, now, Some(p)));
                }
            }
            check_format(&h, format)?;
        }

        push_all(&mut w, &deltas[cut..]);
        let open = finish(w, &end);
        prop_assert_eq!(h.is_finished(), open.is_none());

        for format in FORMATS {
            let whole = check_format(&h, format)?;
            for (f, r, before, from) in live.iter_mut().filter(|(f, ..)| *f == format) {
                let (rest, ended) = take_now(r);
                prop_assert_eq!(ended, open.is_none());
                let got = [before.as_slice(), rest.as_slice()].concat();
                let want = match from {
                    Some(p) => suffix(&events(*f, &whole)?, *p),
                    None => whole.clone(),
                };
                prop_assert!(
                    got == want,
                    "{:?}: a reader made at event {} (from {:?}) differs from one made later:\n{}\n---\n{}",
                    f,
                    cut,
                    from,
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                );
            }
        }
        drop(live);
        drop(open);
    }
}
