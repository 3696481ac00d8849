//! `Reader::into_sse`: the exact bytes of a response body in both formats, and keep-alives on a
//! silent stream (time paused).

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use relay::reader::MAX_WRITE;
use relay::{Delta, Format, Handle};
use tokio::time::{timeout, Instant};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

fn body(h: &Handle, after: u64, format: Format) -> Body {
    Box::pin(
        h.subscribe(after, format)
            .expect("subscribe")
            .into_sse(KEEP_ALIVE),
    )
}

async fn next(b: &mut Body) -> Option<Bytes> {
    b.next().await.map(|r| {
        let Ok(bytes) = r;
        bytes
    })
}

fn s(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("UTF-8")
}

/// A short answer: "Hel", "lo", done with usage.
fn example(include_usage: bool) -> Handle {
    let (mut w, h) = stream(include_usage);
    w.push_delta(Delta::text(0, "Hel"));
    w.push_delta(Delta::text(0, "lo"));
    w.record_finish(0, "stop");
    w.record_usage(usage());
    w.finish();
    h
}

const CHUNK_HEAD: &str =
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","#;

#[tokio::test]
async fn browser_golden_bytes() {
    let h = example(false);
    let all = sse_body(h.subscribe(0, Format::Browser).unwrap(), NO_KEEPALIVE).await;
    assert_eq!(
        s(&all),
        concat!(
            "retry: 1000\n\n",
            "id: 1\nevent: delta\ndata: {\"index\":0,\"text\":\"Hel\"}\n\n",
            "id: 2\nevent: delta\ndata: {\"index\":0,\"text\":\"lo\"}\n\n",
            "id: 3\nevent: done\ndata: {\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        )
    );
    // The preamble is its own first piece; a resumed body starts with it too.
    let mut b = body(&h, 2, Format::Browser);
    assert_eq!(s(&next(&mut b).await.unwrap()), "retry: 1000\n\n");
    assert_eq!(
        s(&next(&mut b).await.unwrap()),
        "id: 3\nevent: done\ndata: {\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
    );
    assert!(next(&mut b).await.is_none());
}

#[tokio::test]
async fn browser_reasoning_and_tool_call_events() {
    let (mut w, h) = stream(false);
    w.push_delta(Delta {
        reasoning: Some("hmm".into()),
        ..Delta::default()
    });
    w.push_delta(Delta {
        tool_calls: vec![relay::ToolCall {
            index: 0,
            id: Some("call_1".into()),
            name: Some("f".into()),
            arguments: Some("{\"a\":".into()),
        }],
        ..Delta::default()
    });
    w.record_finish(0, "tool_calls");
    w.finish();
    let all = sse_body(h.subscribe(0, Format::Browser).unwrap(), NO_KEEPALIVE).await;
    assert_eq!(
        s(&all),
        concat!(
            "retry: 1000\n\n",
            "id: 1\nevent: reasoning\ndata: {\"index\":0,\"text\":\"hmm\"}\n\n",
            "id: 2\nevent: tool_call\ndata: {\"index\":0,\"id\":\"call_1\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}\n\n",
            "id: 3\nevent: done\ndata: {\"finish_reason\":\"tool_calls\",\"usage\":null}\n\n",
        )
    );
}

#[tokio::test]
async fn openai_golden_bytes() {
    let h = example(true);
    let all = sse_body(h.subscribe(0, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    let expected = format!(
        concat!(
            "id: 1\ndata: {h}\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"Hel\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
            "id: 2\ndata: {h}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"lo\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
            "id: 3\ndata: {h}\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n",
            "id: 4\ndata: {h}\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}}}\n\n",
            "id: 5\ndata: [DONE]\n\n",
        ),
        h = CHUNK_HEAD
    );
    assert_eq!(s(&all), expected);
    assert!(
        !all.starts_with(b"retry"),
        "no preamble on the OpenAI format"
    );
    assert!(all.ends_with(b"id: 5\ndata: [DONE]\n\n"));
    assert_openai_blank_lines_ok(&all);

    // Without include_usage: no usage chunk, so [DONE] comes one id earlier.
    let h = example(false);
    let all = sse_body(h.subscribe(0, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    assert!(!s(&all).contains("\"usage\""));
    assert!(all.ends_with(b"id: 4\ndata: [DONE]\n\n"));
    // A resumed body starts directly with the next event.
    let rest = sse_body(h.subscribe(2, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    assert!(rest.starts_with(b"id: 3\ndata: {"), "{}", s(&rest));
}

#[tokio::test]
async fn openai_meta_set_before_the_first_event_reaches_early_readers() {
    let mut w = relay::standalone(relay::Meta::default(), false);
    let h = w.handle();
    let early = tokio::spawn(sse_body(
        h.subscribe(0, Format::OpenAi).unwrap(),
        NO_KEEPALIVE,
    ));
    tokio::task::yield_now().await;
    w.set_meta(|m| *m = meta());
    w.push_delta(Delta::text(0, "x"));
    // Too late: the first event fixed the metadata.
    w.set_meta(|m| m.model = "other".into());
    w.finish();
    let early = early.await.unwrap();
    let late = sse_body(h.subscribe(0, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    assert_eq!(early, late);
    assert!(s(&early).starts_with(&format!("id: 1\ndata: {CHUNK_HEAD}")));
    assert!(!s(&early).contains("other"));
}

#[tokio::test(start_paused = true)]
async fn browser_keep_alive_on_a_silent_stream() {
    let (mut w, h) = stream(false);
    let mut b = body(&h, 0, Format::Browser);
    let mut all = Vec::new();
    let first = next(&mut b).await.unwrap();
    assert_eq!(s(&first), "retry: 1000\n\n");
    all.extend_from_slice(&first);

    let start = Instant::now();
    assert!(
        timeout(KEEP_ALIVE - Duration::from_millis(1), b.next())
            .await
            .is_err(),
        "keep-alive before {KEEP_ALIVE:?} of silence"
    );
    let ka = next(&mut b).await.unwrap();
    assert_eq!(s(&ka), ": keep-alive\n\n");
    assert_eq!(start.elapsed(), KEEP_ALIVE);
    all.extend_from_slice(&ka);

    w.push_delta(Delta::text(0, "Hel"));
    let d = next(&mut b).await.unwrap();
    assert_eq!(
        s(&d),
        "id: 1\nevent: delta\ndata: {\"index\":0,\"text\":\"Hel\"}\n\n"
    );
    all.extend_from_slice(&d);

    // Silence counts from the last thing sent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.push_delta(Delta::text(0, "lo"));
    let start = Instant::now();
    all.extend_from_slice(&next(&mut b).await.unwrap());
    assert_eq!(start.elapsed(), Duration::ZERO);
    let ka = next(&mut b).await.unwrap();
    assert_eq!(s(&ka), ": keep-alive\n\n");
    assert_eq!(start.elapsed(), KEEP_ALIVE);
    all.extend_from_slice(&ka);
    all.extend_from_slice(&next(&mut b).await.unwrap());
    all.extend_from_slice(&next(&mut b).await.unwrap());

    w.finish();
    all.extend_from_slice(&next(&mut b).await.unwrap());
    assert!(next(&mut b).await.is_none());

    let (events, _) = parse_sse(&all);
    assert_eq!(browser_text(&events), "Hello");
    assert_eq!(
        events.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(s(&all).matches(": keep-alive\n\n").count(), 4);
}

#[tokio::test(start_paused = true)]
async fn openai_keep_alive_is_a_lone_comment_line() {
    let (mut w, h) = stream(true);
    let mut b = body(&h, 0, Format::OpenAi);
    let mut all = Vec::new();

    // No preamble: the first thing on a silent stream is the keep-alive.
    let start = Instant::now();
    let ka = next(&mut b).await.unwrap();
    assert_eq!(s(&ka), ": keep-alive\n");
    assert_eq!(start.elapsed(), KEEP_ALIVE);
    all.extend_from_slice(&ka);
    all.extend_from_slice(&next(&mut b).await.unwrap());
    assert_eq!(s(&all), ": keep-alive\n: keep-alive\n");

    w.push_delta(Delta::text(0, "Hel"));
    all.extend_from_slice(&next(&mut b).await.unwrap());
    for _ in 0..3 {
        let ka = next(&mut b).await.unwrap();
        assert_eq!(s(&ka), ": keep-alive\n");
        all.extend_from_slice(&ka);
    }
    w.push_delta(Delta::text(0, "lo"));
    all.extend_from_slice(&next(&mut b).await.unwrap());
    all.extend_from_slice(&next(&mut b).await.unwrap());
    w.record_finish(0, "stop");
    w.record_usage(usage());
    w.finish();
    all.extend_from_slice(&next(&mut b).await.unwrap());
    assert!(next(&mut b).await.is_none());

    let text = s(&all);
    assert_eq!(text.matches(": keep-alive\n").count(), 6);
    assert!(!text.contains(": keep-alive\n\n"), "{text}");
    assert!(text.ends_with("id: 5\ndata: [DONE]\n\n"), "{text}");
    assert_openai_blank_lines_ok(&all);
    let (events, empty) = parse_sse(&all);
    assert_eq!(empty, 0, "a blank line that dispatches nothing: {text}");
    assert_eq!(openai_text(&events), "Hello");
    // Every dispatched event is a complete chunk or [DONE].
    for e in &events {
        assert!(e.id.is_some());
        assert!(e.data == "[DONE]" || serde_json::from_str::<serde_json::Value>(&e.data).is_ok());
    }
}

/// Many keep-alives interleaved with a whole stream, read from several positions: the OpenAI
/// body stays clean whatever the timing.
#[tokio::test(start_paused = true)]
async fn openai_body_has_no_stray_blank_lines_under_any_timing() {
    let (mut w, h) = stream(true);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(sse_body(
                h.subscribe(0, Format::OpenAi).unwrap(),
                Duration::from_secs(1),
            ))
        })
        .collect();
    for i in 0..40u64 {
        w.push_delta(Delta::text(0, format!("t{i}\n\n")));
        tokio::time::sleep(Duration::from_millis(300 * (i % 7))).await;
    }
    w.fail(relay::Failure {
        message: "bad\n\nthing".into(),
        kind: "upstream_protocol_error".into(),
        code: None,
        ..Default::default()
    });
    for r in readers {
        let all = r.await.unwrap();
        assert!(s(&all).contains(": keep-alive\n"), "no keep-alive was sent");
        assert_openai_blank_lines_ok(&all);
        let (events, empty) = parse_sse(&all);
        assert_eq!(empty, 0);
        assert_eq!(events.len(), 41);
        assert!(events.last().unwrap().data.starts_with("{\"error\":"));
    }
}

/// Checks that `chunks` are writes of at most `MAX_WRITE` bytes, and that together they are the
/// preamble and then `events` encoded one by one.
fn assert_bounded_and_exact(chunks: &[Bytes], format: Format, events: &[(u64, relay::Event)]) {
    for (i, c) in chunks.iter().enumerate() {
        assert!(
            c.len() <= MAX_WRITE,
            "{format:?}: write {i} is {} bytes",
            c.len()
        );
        assert!(!c.is_empty(), "{format:?}: write {i} is empty");
    }
    let body = chunks.concat();
    let want = [format.preamble(), &encode_each(format, events, true)[..]].concat();
    assert!(
        body == want,
        "{format:?}: the body differs from the events encoded one by one"
    );
}

/// A reader catching up on a log larger than one write gets it in writes of at most
/// `MAX_WRITE` bytes, byte-identical to encoding the events one by one.
#[tokio::test]
async fn a_large_backlog_comes_in_bounded_writes() {
    let (mut w, h) = stream(true);
    for i in 0..5000 {
        // 100 bytes each, with characters that need escaping.
        let text = format!("{i:>5}é\"\n{}", "x".repeat(91));
        assert_eq!(text.len(), 100);
        assert!(w.push_delta(Delta::text(0, text)));
    }
    // A reader attached before the events, polled only once they are all there.
    let early = [
        h.reader(Format::Browser),
        h.subscribe(0, Format::OpenAi).unwrap(),
    ];
    w.record_finish(0, "stop");
    w.record_usage(usage());
    w.finish();
    let events = drain(h.reader(Format::Browser)).await;
    assert_eq!(events.len(), 5001);
    for format in [Format::Browser, Format::OpenAi] {
        let chunks = sse_chunks(h.reader(format), NO_KEEPALIVE).await;
        let total: usize = chunks.iter().map(Bytes::len).sum();
        assert!(total > 8 * MAX_WRITE, "{format:?}: only {total} bytes");
        // A backlog goes out in a few large writes, not one per event.
        assert!(
            chunks.len() <= 2 * total / MAX_WRITE + 2,
            "{format:?}: {} writes for {total} bytes",
            chunks.len()
        );
        assert_bounded_and_exact(&chunks, format, &events);
    }
    for r in early {
        let format = r.format();
        let chunks = sse_chunks(r, NO_KEEPALIVE).await;
        assert_bounded_and_exact(&chunks, format, &events);
    }
}

/// One event larger than a write (a text far past 64 KiB) is sent in several writes.
#[tokio::test]
async fn an_event_larger_than_a_write_is_split_across_writes() {
    let (mut w, h) = stream(true);
    assert!(w.push_delta(Delta::text(0, "a")));
    assert!(w.push_delta(Delta::text(0, "🦀\n".repeat(60_000))));
    assert!(w.push_delta(Delta {
        reasoning: Some("ü".repeat(100_000)),
        ..Delta::default()
    }));
    assert!(w.push_delta(Delta::text(0, "z")));
    w.record_finish(0, "stop");
    w.finish();
    let events = drain(h.reader(Format::Browser)).await;
    assert_eq!(events.len(), 5);
    for format in [Format::Browser, Format::OpenAi] {
        let chunks = sse_chunks(h.reader(format), NO_KEEPALIVE).await;
        assert!(chunks.len() >= 6, "{format:?}: {} writes", chunks.len());
        assert_bounded_and_exact(&chunks, format, &events);
        // Resuming after the big events: just the rest.
        let rest = sse_body(h.subscribe(3, format).unwrap(), NO_KEEPALIVE).await;
        let want = [
            format.preamble(),
            &encode_each(format, &events[3..], true)[..],
        ]
        .concat();
        assert_eq!(s(&rest), s(&want));
    }
}

/// `DELETE` while the driving body is not polled (its client stopped reading): the cancel takes
/// the driver out of the body and hands it off, so the writer sees the cancel at once; the body,
/// polled again, reads on like any reader.
#[tokio::test]
async fn a_cancel_hands_off_the_driver_of_a_body_nobody_polls() {
    let r = relay::Registry::new(relay::Limits::default());
    let mut w = r.create(meta(), false).unwrap();
    let h = w.handle();
    let reader = h.reader(Format::Browser);
    let (handed_tx, handed_rx) = std::sync::mpsc::channel();
    let cancelled = w.cancelled();
    let driver = relay::Driver::new(
        Box::pin(async move {
            assert!(w.push_delta(Delta::text(0, "Hel")));
            cancelled.await;
            w.finish_cancelled();
        }),
        move |rest| {
            handed_tx.send(()).unwrap();
            tokio::spawn(rest);
        },
    );
    let mut b: Body = Box::pin(reader.into_sse_driving(KEEP_ALIVE, driver));
    // The preamble, then the first event: the body drove the writer.
    assert_eq!(s(&next(&mut b).await.unwrap()), "retry: 1000\n\n");
    assert!(s(&next(&mut b).await.unwrap()).contains("Hel"));
    // Nobody polls the body now; the stop button still ends the stream.
    h.cancel();
    handed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the driver was handed off");
    timeout(Duration::from_secs(5), async {
        while !h.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the writer saw the cancel without the body being polled");
    let rest = timeout(Duration::from_secs(5), next(&mut b))
        .await
        .expect("the body reads on")
        .unwrap();
    assert!(s(&rest).contains("cancelled"), "{}", s(&rest));
    assert_eq!(
        timeout(Duration::from_secs(5), next(&mut b)).await.unwrap(),
        None
    );
}

/// hyper polls a body again after every write, twice, to find it empty. A driving body polls
/// its writer (the whole upstream stack, down to the socket) only when one of the writer's own
/// wake-ups fired, and its keep-alive timer only when that fired.
#[tokio::test(start_paused = true)]
async fn a_driving_body_polls_its_writer_only_after_the_writer_was_woken() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    let r = relay::Registry::new(relay::Limits::default());
    let mut w = r.create(meta(), false).unwrap();
    let h = w.handle();
    let reader = h.reader(Format::Browser);
    let polls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let counted = polls.clone();
    let driver = relay::Driver::new(
        Box::pin(async move {
            let mut next = std::future::poll_fn(move |cx| {
                counted.fetch_add(1, Ordering::SeqCst);
                rx.poll_recv(cx)
            });
            while let Some(text) = (&mut next).await {
                w.push_delta(Delta::text(0, text));
            }
            w.finish();
        }),
        |rest| {
            tokio::spawn(rest);
        },
    );
    let mut b: Body = Box::pin(reader.into_sse_driving(KEEP_ALIVE, driver));
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut poll = |b: &mut Body| match b.as_mut().poll_next(&mut cx) {
        Poll::Ready(Some(Ok(bytes))) => Some(String::from_utf8(bytes.to_vec()).unwrap()),
        Poll::Ready(None) => panic!("the body ended"),
        Poll::Pending => None,
    };
    assert_eq!(poll(&mut b).as_deref(), Some("retry: 1000\n\n"));
    for _ in 0..5 {
        assert_eq!(poll(&mut b), None);
    }
    assert_eq!(
        polls.load(Ordering::SeqCst),
        1,
        "armed once, then left alone"
    );

    tx.send("Hel").unwrap();
    assert!(poll(&mut b).unwrap().contains("Hel"));
    let after = polls.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(poll(&mut b), None);
    }
    assert_eq!(
        polls.load(Ordering::SeqCst),
        after,
        "not polled without a wake-up"
    );

    // The keep-alive timer still fires, and the writer is not polled for it.
    tokio::time::advance(KEEP_ALIVE + Duration::from_secs(1)).await;
    assert_eq!(
        poll(&mut b).as_deref(),
        Some(s(Format::Browser.keep_alive()))
    );
    assert_eq!(poll(&mut b), None);
    assert_eq!(polls.load(Ordering::SeqCst), after);
    tokio::time::advance(KEEP_ALIVE + Duration::from_secs(1)).await;
    assert_eq!(
        poll(&mut b).as_deref(),
        Some(s(Format::Browser.keep_alive())),
        "the timer was armed again"
    );

    drop(tx);
    assert!(poll(&mut b).unwrap().contains("done"));
}
