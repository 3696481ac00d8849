//! Resuming a finished stream from every position: exactly the events after N, no gap, no
//! duplicate, and the text a client pieces together is the whole answer.

mod common;

use common::*;
use proptest::prelude::*;
use relay::{Event, Format, RelayError};

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
    let g = finished(&pieces);
    assert_eq!(g.last_id(), k + 1);

    for n in 0..=k {
        let events = drain(g.subscribe(n).unwrap()).await;
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (n + 1..=k + 1).collect::<Vec<_>>(), "resume from {n}");
        let last = events.last().unwrap();
        assert!(matches!(last.event, Event::Done(_)), "ends with done");
        assert!(events[..events.len() - 1]
            .iter()
            .all(|e| matches!(e.event, Event::Delta(_))));

        let seen: String = pieces[..n as usize].concat();
        let resumed: String = events.iter().map(|e| text_of(e)).collect();
        assert_eq!(seen + &resumed, full, "resume from {n}");

        // The same, as the bytes a browser and an OpenAI client receive.
        let body = sse_body(g.subscribe(n).unwrap(), Format::Browser, NO_KEEPALIVE).await;
        assert!(body.starts_with(b"retry: 1000\n\n"));
        let (sse, empty) = parse_sse(&body);
        assert_eq!(empty, 1, "only the retry preamble is a blank dispatch");
        let sse_ids: Vec<u64> = sse.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(sse_ids, ids, "browser ids from {n}");
        assert_eq!(sse.last().unwrap().event.as_deref(), Some("done"));
        assert_eq!(pieces[..n as usize].concat() + &browser_text(&sse), full);

        let body = sse_body(g.subscribe(n).unwrap(), Format::OpenAi, NO_KEEPALIVE).await;
        assert_openai_blank_lines_ok(&body);
        let (sse, empty) = parse_sse(&body);
        assert_eq!(empty, 0);
        assert_eq!(sse.last().unwrap().data, "[DONE]");
        // The OpenAI end (finish chunk, [DONE]) numbers on from the `done` event's id.
        assert_eq!(
            sse.last().unwrap().id,
            Some(g.last_event_id(Format::OpenAi))
        );
        let oids: Vec<u64> = sse.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(
            oids,
            (n + 1..=g.last_event_id(Format::OpenAi)).collect::<Vec<_>>(),
            "openai ids from {n}"
        );
        assert_eq!(pieces[..n as usize].concat() + &openai_text(&sse), full);
        // Only the first chunk of the whole stream carries the role, resumed or not.
        let roles = sse.iter().filter(|e| e.data.contains("\"role\"")).count();
        assert_eq!(roles, usize::from(n == 0), "role chunks resuming from {n}");
    }

    // In the OpenAI numbering, resuming inside the end yields exactly its remaining events.
    let last = g.last_event_id(Format::OpenAi);
    assert!(last > k + 1);
    for n in k + 1..last {
        let r = g.subscribe_as(n, Format::OpenAi).unwrap();
        let body = sse_body(r, Format::OpenAi, NO_KEEPALIVE).await;
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
        g.subscribe_as(last, Format::OpenAi).err(),
        Some(RelayError::AtEnd(last))
    );
    assert_eq!(
        g.subscribe_as(last + 1, Format::OpenAi).err(),
        Some(RelayError::BadPosition(last + 1))
    );

    assert_eq!(g.subscribe(k + 1).err(), Some(RelayError::AtEnd(k + 1)));
    assert_eq!(
        g.subscribe(k + 2).err(),
        Some(RelayError::BadPosition(k + 2))
    );
    assert_eq!(
        g.subscribe(u64::MAX).err(),
        Some(RelayError::BadPosition(u64::MAX))
    );
    // Refused subscriptions do not count as readers.
    assert_eq!(g.reader_count(), 0);
}

#[tokio::test]
async fn resume_on_a_live_stream() {
    let g = relay::Generation::standalone(meta(), false);
    // Position 0 on an empty live stream is fine, anything past it is not.
    assert!(g.subscribe(0).is_ok());
    assert_eq!(g.subscribe(1).err(), Some(RelayError::BadPosition(1)));
    for p in numbered_pieces(3) {
        assert!(g.push_delta(relay::Delta::text(0, p)));
    }
    // The last id of a live stream is a valid position: the reader waits for what comes next.
    let r = g.subscribe(3).unwrap();
    assert_eq!(g.subscribe(4).err(), Some(RelayError::BadPosition(4)));
    g.finish();
    let events = drain(r).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, 4);
    assert!(matches!(events[0].event, Event::Done(_)));
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
        let g = finished(&pieces);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();

        let events = rt.block_on(drain(g.subscribe(n).unwrap()));
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        prop_assert_eq!(ids, (n + 1..=k + 1).collect::<Vec<_>>());
        let resumed: String = events.iter().map(|e| text_of(e)).collect();
        prop_assert_eq!(pieces[..n as usize].concat() + &resumed, text.clone());

        let body = rt.block_on(sse_body(g.subscribe(n).unwrap(), Format::Browser, NO_KEEPALIVE));
        let (sse, _) = parse_sse(&body);
        prop_assert_eq!(pieces[..n as usize].concat() + &browser_text(&sse), text.clone());
        let body = rt.block_on(sse_body(g.subscribe(n).unwrap(), Format::OpenAi, NO_KEEPALIVE));
        assert_openai_blank_lines_ok(&body);
        let (sse, _) = parse_sse(&body);
        prop_assert_eq!(pieces[..n as usize].concat() + &openai_text(&sse), text);

        prop_assert_eq!(g.subscribe(k + 1).err(), Some(RelayError::AtEnd(k + 1)));
        prop_assert_eq!(g.subscribe(k + 2).err(), Some(RelayError::BadPosition(k + 2)));
    }
}
