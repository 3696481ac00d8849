use super::*;
use std::convert::Infallible;

use eventsource_stream::{Event, EventStreamError};

/// [`parser`] as a stream of owned events (type and data), for the tests.
fn events<S, E>(
    body: S,
    idle: Duration,
    completed_at_eof: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Event, SseError>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    let mut parser = parser(body, idle, completed_at_eof);
    futures::stream::poll_fn(move |cx| {
        parser.poll_event(cx, |event, data| Event {
            event: event.to_owned(),
            data: data.to_owned(),
            ..Event::default()
        })
    })
}

async fn parse(chunks: &[&'static [u8]]) -> (Vec<(String, String)>, bool) {
    let flag = Arc::new(AtomicBool::new(false));
    let body = futures::stream::iter(
        chunks
            .iter()
            .map(|c| Ok::<_, Infallible>(Bytes::from_static(c)))
            .collect::<Vec<_>>(),
    );
    let evs: Vec<_> = events(body, Duration::from_secs(5), flag.clone())
        .map(|e| {
            let e = e.expect("event");
            (e.event, e.data)
        })
        .collect()
        .await;
    (evs, flag.load(Ordering::Relaxed))
}

#[tokio::test]
async fn complete_stream_needs_no_help() {
    let (evs, flag) = parse(&[b"data: a\n\n", b"data: b\r\n\r\n"]).await;
    assert_eq!(
        evs,
        vec![
            ("message".into(), "a".into()),
            ("message".into(), "b".into())
        ]
    );
    assert!(!flag);
}

#[tokio::test]
async fn last_event_without_blank_line_is_dispatched() {
    for body in [
        &b"data: a\n\ndata: b"[..],
        b"data: a\n\ndata: b\n",
        b"data: a\r\rdata: b\r",
        b"data: a\r\n\r\ndata: b\r\n",
    ] {
        let (evs, flag) = parse(&[body]).await;
        assert_eq!(evs.len(), 2, "{body:?}");
        assert_eq!(evs[1].1, "b", "{body:?}");
        assert!(flag);
    }
}

#[tokio::test]
async fn crlf_split_between_reads_and_utf8_split() {
    let (evs, _) = parse(&[b"data: h\xc3", b"\xa9\r", b"\n\r", b"\ndata: x\n\n"]).await;
    assert_eq!(
        evs,
        vec![
            ("message".into(), "h\u{e9}".into()),
            ("message".into(), "x".into())
        ]
    );
}

#[tokio::test]
async fn cr_only_stream_keeps_its_last_event() {
    // Ends on a complete event whose blank line is a lone CR.
    let (evs, flag) = parse(&[b"data: a\r\rdata: b\r\r"]).await;
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].1, "b");
    assert!(!flag, "the event was complete");
    let (evs, _) = parse(&[b"data: a\r", b"\r", b"data: b\r", b"\r"]).await;
    assert_eq!(evs.len(), 2);
}

/// The data of the events in `whole` delivered in three reads, cut at `cut1` and `cut2`.
async fn data_of_cut(whole: &[u8], cut1: usize, cut2: usize) -> Vec<String> {
    let chunks = [&whole[..cut1], &whole[cut1..cut2], &whole[cut2..]];
    let body = futures::stream::iter(
        chunks
            .iter()
            .map(|c| Ok::<_, Infallible>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    events(
        body,
        Duration::from_secs(5),
        Arc::new(AtomicBool::new(false)),
    )
    .map(|e| e.expect("event").data)
    .collect()
    .await
}

#[tokio::test]
async fn a_leading_bom_is_stripped_however_it_is_split() {
    let whole: &[u8] = b"\xef\xbb\xbfdata: a\n\ndata: b\n\n";
    for cut1 in 0..whole.len() {
        for cut2 in cut1..whole.len() {
            let evs = data_of_cut(whole, cut1, cut2).await;
            assert_eq!(evs, vec!["a", "b"], "cuts {cut1} {cut2}");
        }
    }
    // Only the first BOM is a BOM: a second one is part of the first line's field name,
    // which makes it an unknown field (WHATWG), and must not crash anything.
    let (evs, _) = parse(&[b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n"]).await;
    assert_eq!(evs, vec![("message".into(), "y".into())]);
    // A body that starts like a BOM but is not one is passed on as it is (here: not UTF-8).
    let flag = Arc::new(AtomicBool::new(false));
    let body = futures::stream::iter([
        Ok::<_, Infallible>(Bytes::from_static(b"\xef")),
        Ok(Bytes::from_static(b"\xbbdata: x\n\n")),
    ]);
    let items: Vec<_> = events(body, Duration::from_secs(5), flag).collect().await;
    assert!(
        matches!(items[..], [Err(EventStreamError::Utf8(_))]),
        "{items:?}"
    );
}

#[tokio::test]
async fn an_endless_line_is_an_error_not_an_endless_buffer() {
    let flag = Arc::new(AtomicBool::new(false));
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let body = futures::stream::iter(
        std::iter::once(Ok::<_, Infallible>(Bytes::from_static(b"data: ")))
            .chain(std::iter::repeat_n(chunk, 20).map(Ok)),
    );
    let mut s = Box::pin(events(body, Duration::from_secs(5), flag));
    let first = s.next().await.expect("item");
    assert!(
        matches!(
            first,
            Err(EventStreamError::Transport(ReadError::LineTooLong))
        ),
        "{first:?}"
    );
}

/// A body of `chunks`, counting the bytes the parser pulled from it.
fn counted(
    chunks: Vec<Bytes>,
    pulled: Arc<std::sync::atomic::AtomicUsize>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Unpin + 'static {
    futures::stream::iter(chunks).map(move |c| {
        pulled.fetch_add(c.len(), Ordering::Relaxed);
        Ok(c)
    })
}

#[tokio::test]
async fn an_event_of_many_capped_lines_is_an_error_before_it_outgrows_the_cap() {
    // 48 `data:` lines of 1 MiB each, each under the line cap, in one event: the reviewer's
    // reproduction. The error comes within one read of the cap, not at the end.
    let line = {
        let mut l = b"data: ".to_vec();
        l.extend(std::iter::repeat_n(b'x', 1 << 20));
        l.push(b'\n');
        Bytes::from(l)
    };
    for eol_line in [line.clone(), {
        // The same with CRLF line ends, split between the CR and the LF.
        let mut l = line[..line.len() - 1].to_vec();
        l.push(b'\r');
        Bytes::from(l)
    }] {
        let crlf = eol_line.ends_with(b"\r");
        let mut chunks = Vec::new();
        for _ in 0..48 {
            chunks.push(eol_line.clone());
            if crlf {
                chunks.push(Bytes::from_static(b"\n"));
            }
        }
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flag = Arc::new(AtomicBool::new(false));
        let body = counted(chunks, pulled.clone());
        let items: Vec<_> = events(body, Duration::from_secs(5), flag).collect().await;
        assert!(
            matches!(
                items[..],
                [Err(EventStreamError::Transport(ReadError::EventTooLarge))]
            ),
            "{items:?}"
        );
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(
            pulled <= MAX_EVENT_BYTES + line.len() + 1,
            "read {pulled} bytes before noticing"
        );
    }
}

#[tokio::test]
async fn the_event_cap_counts_one_event_not_the_stream_and_skips_comments() {
    // 24 MiB of events of 1 MiB each, with every kind of blank line: no error.
    let payload = "y".repeat(1 << 20);
    let mut chunks = Vec::new();
    for (i, end) in ["\n\n", "\r\n\r\n", "\r\r"]
        .iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        // Split the blank line from its event, and CRLF between its CR and LF.
        let ev = format!("data: {payload}{end}");
        let cut = ev.len() - end.len() + usize::from(i % 2 == 0);
        chunks.push(Bytes::from(ev[..cut].to_owned()));
        chunks.push(Bytes::from(ev[cut..].to_owned()));
    }
    // One event under the cap after 20 MiB of comment lines (dropped by the parser).
    for _ in 0..20 {
        chunks.push(Bytes::from(format!(": {payload}\n")));
    }
    chunks.push(Bytes::from_static(b"data: last\n\n"));
    let flag = Arc::new(AtomicBool::new(false));
    let body = futures::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let evs: Vec<_> = events(body, Duration::from_secs(5), flag)
        .map(|e| e.expect("event").data.len())
        .collect()
        .await;
    assert_eq!(evs.len(), 25);
    assert!(evs[..24].iter().all(|&n| n == 1 << 20));
    assert_eq!(evs[24], 4);
}

#[tokio::test]
async fn an_error_field_line_is_read_as_data_however_it_is_split() {
    // llama.cpp's old mid-stream error, then its [DONE].
    let whole: &[u8] =
        b"data: a\r\n\r\nerror: {\"message\":\"full\"}\n\ndata: [DONE]\n\n: error: no\n\n";
    for cut1 in 0..whole.len() {
        for cut2 in (cut1..whole.len()).step_by(3) {
            let evs = data_of_cut(whole, cut1, cut2).await;
            assert_eq!(
                evs,
                vec!["a", " {\"message\":\"full\"}", "[DONE]"],
                "cuts {cut1} {cut2}"
            );
        }
    }
    // `error` inside a line, and a body that ends in what could have become `error:`.
    let (evs, _) = parse(&[b"data: error: x\n\nerro"]).await;
    assert_eq!(evs, vec![("message".into(), "error: x".into())]);
}

#[tokio::test]
async fn idle_timeout_is_an_error() {
    let flag = Arc::new(AtomicBool::new(false));
    let body = futures::stream::pending::<Result<Bytes, Infallible>>();
    let mut s = Box::pin(events(body, Duration::from_millis(20), flag));
    let first = s.next().await.expect("item");
    assert!(matches!(
        first,
        Err(EventStreamError::Transport(ReadError::Idle))
    ));
}

#[tokio::test]
async fn reads_without_a_bom_or_error_line_reach_the_parser_uncopied() {
    let reads = [
        Bytes::from_static(b"data: {\"a\":1}\n\n"),
        Bytes::from_static(b"data: {\"b\""),
        Bytes::from_static(b":2}\r\n\r\n"),
    ];
    let body = futures::stream::iter(reads.clone().map(Ok::<_, Infallible>));
    let prelude = Prelude::new(
        body,
        Duration::from_secs(5),
        Arc::new(AtomicBool::new(false)),
    );
    let out: Vec<Bytes> = prelude.map(|r| r.expect("bytes")).collect().await;
    assert_eq!(out.len(), 3, "{out:?}");
    for (read, passed) in reads.iter().zip(&out) {
        assert_eq!(read.as_ptr(), passed.as_ptr(), "{read:?} was copied");
        assert_eq!(read, passed);
    }
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_last_read() {
    // A read every 15 ms for 90 ms against an idle timeout of 20 ms: no timeout while they
    // come, then one exactly 20 ms after the last.
    let start = tokio::time::Instant::now();
    let reads = futures::stream::unfold(0, |n| async move {
        (n < 6).then_some(())?;
        tokio::time::sleep(Duration::from_millis(15)).await;
        Some((
            Ok::<_, Infallible>(Bytes::from_static(b"data: x\n\n")),
            n + 1,
        ))
    });
    let body = Box::pin(reads.chain(futures::stream::pending()));
    let flag = Arc::new(AtomicBool::new(false));
    let items: Vec<_> = events(body, Duration::from_millis(20), flag)
        .collect()
        .await;
    assert_eq!(items.len(), 7, "{items:?}");
    assert!(items[..6].iter().all(Result::is_ok), "{items:?}");
    assert!(matches!(
        items[6],
        Err(EventStreamError::Transport(ReadError::Idle))
    ));
    assert_eq!(start.elapsed(), Duration::from_millis(90 + 20));
}

#[tokio::test]
async fn a_body_that_is_not_utf8_fails_at_once_instead_of_being_buffered_to_its_end() {
    // The events before the bad byte, then the parser's UTF-8 failure, without reading the
    // 1,000 reads after it (the parser would have kept all of them).
    let mut chunks = vec![Bytes::from_static(b"data: a\n\ndata: b\xff\n\n")];
    let first = chunks[0].len();
    chunks.extend(std::iter::repeat_n(
        Bytes::from_static(b"data: c\n\n"),
        1000,
    ));
    let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = counted(chunks, pulled.clone());
    let flag = Arc::new(AtomicBool::new(false));
    let items: Vec<_> = events(body, Duration::from_secs(5), flag.clone())
        .collect()
        .await;
    assert!(
        matches!(&items[..], [Ok(a), Err(EventStreamError::Utf8(_))] if a.data == "a"),
        "{items:?}"
    );
    assert_eq!(
        pulled.load(Ordering::Relaxed),
        first,
        "read past the bad byte"
    );
    assert!(!flag.load(Ordering::Relaxed));
}

#[test]
fn utf8_check_follows_characters_across_reads() {
    let text = "h\u{e9}\u{20ac}\u{1f600}x".as_bytes();
    for cut1 in 0..=text.len() {
        for cut2 in cut1..=text.len() {
            let mut check = Utf8Check::default();
            for part in [&text[..cut1], &text[cut1..cut2], &text[cut2..]] {
                assert!(check.check(part), "cuts {cut1} {cut2}");
            }
        }
    }
    // Bad at once, bad only with the next read, and a lead byte that can never start one.
    for (a, b) in [
        (&b"a\xff"[..], &b""[..]),
        (b"\xe2\x82", b"x"),
        (b"\xf0", b"\x9f\x98("),
        (b"\xc0\x80", b""),
    ] {
        let mut check = Utf8Check::default();
        assert!(!(check.check(a) && check.check(b)), "{a:?} {b:?}");
    }
}

/// Reads of SSE-ish bytes: field lines, `error:` lines and pieces of them, every line end.
fn sse_reads() -> impl proptest::strategy::Strategy<Value = Vec<Vec<u8>>> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just(b"data: x".to_vec()),
        Just(b"error: {}".to_vec()),
        Just(b"err".to_vec()),
        Just(b"or:".to_vec()),
        Just(b": c".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
    ];
    proptest::collection::vec(proptest::collection::vec(piece, 0..6), 0..8)
        .prop_map(|reads| reads.into_iter().map(|r| r.concat()).collect())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// The shortcuts for the usual read (whole events, LF ends, no `error:`) leave `Tail` and
    /// `ErrorLines` exactly as the line-by-line walk does, whatever came before.
    #[test]
    fn the_usual_read_shortcuts_match_the_line_walk(reads in sse_reads()) {
        let (mut fast, mut walk) = (Tail::default(), Tail::default());
        let (mut lines, mut walked) = (ErrorLines::default(), ErrorLines::default());
        // The last four bytes, kept one byte at a time: the plainest form of what `push` does.
        let mut last: Vec<u8> = Vec::new();
        for read in reads {
            fast.push(&read);
            walk.push_lines(&read);
            for &b in &read {
                last.push(b);
                if last.len() > 4 {
                    last.remove(0);
                }
            }
            proptest::prop_assert_eq!(
                (fast.line_len, fast.event_len, fast.after_cr, fast.last.get()),
                (walk.line_len, walk.event_len, walk.after_cr, &last[..])
            );
            if fast.line_len > 0 {
                proptest::prop_assert_eq!(fast.comment, walk.comment);
            }
            let out = lines.rewrite(Bytes::from(read.clone()));
            let want = walked.rewrite_lines(Bytes::from(read));
            proptest::prop_assert_eq!(out, want);
            proptest::prop_assert_eq!(lines.line_start, walked.line_start);
            proptest::prop_assert_eq!(&lines.held, &walked.held);
        }
    }
}
