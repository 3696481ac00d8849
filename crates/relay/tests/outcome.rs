//! How a stream ends other than `done`/`stop`: failure, cancellation, and a writer dropped
//! without an end.

use std::time::Duration;

use crate::common::*;
use relay::encode::{encode, Format};
use relay::{Delta, Event, Failure};

fn failure() -> Failure {
    Failure {
        message: "upstream went away".into(),
        kind: "upstream_truncated".into(),
        code: Some("upstream_truncated".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_replayed_identically_and_never_becomes_done() {
    let (mut w, h) = stream(true);
    let live_events = tokio::spawn(drain(h.reader(Format::Browser)));
    let live_browser = tokio::spawn(sse_body(
        h.subscribe(0, Format::Browser).unwrap(),
        NO_KEEPALIVE,
    ));
    let live_openai = tokio::spawn(sse_body(
        h.subscribe(0, Format::OpenAi).unwrap(),
        NO_KEEPALIVE,
    ));
    for p in ["Hel", "lo", " wö"] {
        assert!(w.push_delta(Delta::text(0, p)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    w.record_usage(usage());
    w.fail(failure());
    // The end is final: the writer is gone, so nothing more can be written after it (the
    // type system sees to that), and the stream stays as it ended.
    assert_eq!(h.last_event_id(Format::Browser), 4);
    assert_eq!(h.last_event_id(Format::OpenAi), 4);
    assert!(h.is_finished());
    assert!(matches!(h.outcome(), Some(Event::Failed(f)) if f == failure()));
    assert_eq!(h.usage(), Some(usage()));

    let events = live_events.await.unwrap();
    assert_eq!(ids(&events), vec![1, 2, 3, 4]);
    assert_eq!(
        events.iter().map(|(_, e)| text_of(e)).collect::<String>(),
        "Hello wö"
    );
    assert!(matches!(&events[3].1, Event::Failed(f) if *f == failure()));

    let live_browser = live_browser.await.unwrap();
    let live_openai = live_openai.await.unwrap();
    let late_browser = sse_body(h.subscribe(0, Format::Browser).unwrap(), NO_KEEPALIVE).await;
    let late_openai = sse_body(h.subscribe(0, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    assert_eq!(
        live_browser, late_browser,
        "browser bytes differ between live and replay"
    );
    assert_eq!(
        live_openai, late_openai,
        "OpenAI bytes differ between live and replay"
    );

    let expected = concat!(
        "retry: 1000\n\n",
        "id: 1\nevent: delta\ndata: {\"index\":0,\"text\":\"Hel\"}\n\n",
        "id: 2\nevent: delta\ndata: {\"index\":0,\"text\":\"lo\"}\n\n",
        "id: 3\nevent: delta\ndata: {\"index\":0,\"text\":\" wö\"}\n\n",
        "id: 4\nevent: failed\ndata: {\"message\":\"upstream went away\",\"type\":\"upstream_truncated\",\"code\":\"upstream_truncated\"}\n\n",
    );
    assert_eq!(String::from_utf8(late_browser.clone()).unwrap(), expected);
    let (sse, _) = parse_sse(&late_browser);
    assert!(sse.iter().all(|e| e.event.as_deref() != Some("done")));
    assert!(sse.iter().all(|e| e.event.as_deref() != Some("error")));

    assert_openai_blank_lines_ok(&late_openai);
    let text = String::from_utf8(late_openai).unwrap();
    assert!(text.ends_with(
        "id: 4\ndata: {\"error\":{\"message\":\"upstream went away\",\"type\":\"upstream_truncated\",\"param\":null,\"code\":\"upstream_truncated\"}}\n\n"
    ));
    assert!(
        !text.contains("[DONE]"),
        "a failed stream must not look finished"
    );
    assert!(!text.contains("\"finish_reason\":\"stop\""));

    // Resuming from the middle gets the rest and the same failure.
    let rest = sse_body(h.subscribe(2, Format::Browser).unwrap(), NO_KEEPALIVE).await;
    let tail = &expected[expected.find("id: 3").unwrap()..];
    assert_eq!(
        String::from_utf8(rest).unwrap(),
        format!("retry: 1000\n\n{tail}")
    );
}

#[test]
fn per_stream_bound_ends_in_failed_not_done() {
    let r = relay::Registry::new(relay::Limits {
        max_stream_bytes: 2000,
        ..relay::Limits::default()
    });
    let mut w = r.create(meta(), false).unwrap();
    let h = w.handle();
    let mut n = 0;
    while w.push_delta(Delta::text(0, "abcd")) {
        n += 1;
        assert!(n < 1000, "the per-stream bound never triggered");
    }
    assert!(n > 0);
    assert!(w.is_ended());
    assert!(h.is_finished());
    assert!(
        h.bytes() <= 2000 + 1024,
        "bytes {} far past the bound",
        h.bytes()
    );
    match h.outcome() {
        Some(Event::Failed(f)) => assert_eq!(f.kind, "stream_too_large"),
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(matches!(w.outcome(), Some(Event::Failed(_))));
    // The end is final: the writer, which the bound ended, can no longer append or end it.
    let last = w.last_id();
    assert_eq!(last, n + 1);
    assert!(!w.push_delta(Delta::text(0, "late")));
    w.record_finish(0, "stop");
    w.finish();
    assert_eq!(h.last_event_id(Format::Browser), last);
    assert!(matches!(h.outcome(), Some(Event::Failed(_))));
    assert_eq!(r.stats().finished, 1);
}

#[tokio::test]
async fn cancel_resolves_cancelled_and_ends_with_cancelled_done() {
    let (mut w, h) = stream(false);
    let reader = h.reader(Format::Browser);
    assert!(w.push_delta(Delta::text(0, "Hel")));
    assert!(!w.is_cancelled());
    // The writer's task waits for the stop button.
    let waiter = tokio::spawn(async move {
        w.cancelled().await;
        w
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());

    h.cancel();
    let w = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("cancelled() did not resolve")
        .unwrap();
    assert!(w.is_cancelled());
    // Resolves at once when already cancelled.
    tokio::time::timeout(Duration::from_secs(5), w.cancelled())
        .await
        .expect("cancelled() after cancel");

    // Cancelling asks the writer to stop; it is the writer that writes the end.
    assert!(!h.is_finished());
    w.finish_cancelled();
    let events = drain(reader).await;
    assert_eq!(events.len(), 2);
    let (id, done) = &events[1];
    assert!(matches!(done, Event::Done(d) if d.finish_reason() == "cancelled"));
    let bytes = encode(Format::Browser, *id, done, &meta(), false);
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        "id: 2\nevent: done\ndata: {\"finish_reason\":\"cancelled\",\"usage\":null}\n\n"
    );

    // A reader arriving later sees the same, through into_sse.
    let body = sse_body(h.subscribe(1, Format::Browser).unwrap(), NO_KEEPALIVE).await;
    let (sse, _) = parse_sse(&body);
    assert_eq!(sse.len(), 1);
    assert_eq!(sse[0].event.as_deref(), Some("done"));
    assert!(sse[0].data.contains("\"finish_reason\":\"cancelled\""));

    let body = sse_body(h.subscribe(0, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\"finish_reason\":\"cancelled\""), "{text}");
    // The finish chunk is id 2, [DONE] numbers on.
    assert!(text.ends_with("id: 3\ndata: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn cancel_before_any_delta_and_with_a_finished_choice() {
    // Nothing generated yet: still one `done` with `cancelled`.
    let (w, h) = stream(false);
    h.cancel();
    assert!(w.is_cancelled());
    w.finish_cancelled();
    let events = drain(h.reader(Format::Browser)).await;
    assert_eq!(events.len(), 1);
    let bytes = encode(Format::Browser, 1, &events[0].1, &meta(), false);
    assert!(std::str::from_utf8(&bytes)
        .unwrap()
        .contains("\"finish_reason\":\"cancelled\""));

    // Two choices, one already finished: only the open one becomes `cancelled`.
    let (mut w, h) = stream(false);
    w.push_delta(Delta::text(0, "a"));
    w.push_delta(Delta::text(1, "b"));
    w.record_finish(1, "stop");
    w.finish_cancelled();
    match h.outcome() {
        Some(Event::Done(d)) => assert_eq!(
            d.finish_reasons,
            vec![(0, "cancelled".to_owned()), (1, "stop".to_owned())]
        ),
        other => panic!("expected done, got {other:?}"),
    }

    // Cancelling a finished stream changes nothing (and its writer, dropped when it finished,
    // did not end it again).
    let h = finished(&["x".to_owned()]);
    h.cancel();
    match h.outcome() {
        Some(Event::Done(d)) => assert_eq!(d.finish_reasons, vec![(0, "stop".to_owned())]),
        other => panic!("expected done, got {other:?}"),
    }
    assert_eq!(h.last_event_id(Format::Browser), 2);
}

/// A writer dropped without an end (its task panicked or was aborted) ends the stream as
/// cancelled, and wakes the readers waiting for more.
#[tokio::test]
async fn a_dropped_writer_ends_the_stream_as_cancelled() {
    let (mut w, h) = stream(true);
    let events = tokio::spawn(drain(h.reader(Format::Browser)));
    let body = tokio::spawn(sse_body(h.reader(Format::OpenAi), NO_KEEPALIVE));
    assert!(w.push_delta(Delta::text(0, "Hel")));
    assert!(w.push_delta(Delta::text(1, "x")));
    w.record_finish(1, "stop");
    w.record_usage(usage());
    tokio::task::yield_now().await;
    assert!(!events.is_finished() && !body.is_finished());
    drop(w);
    assert!(h.is_finished());

    let events = tokio::time::timeout(Duration::from_secs(5), events)
        .await
        .expect("the reader was not woken by the drop")
        .unwrap();
    assert_eq!(ids(&events), vec![1, 2, 3]);
    match &events[2].1 {
        Event::Done(d) => {
            assert_eq!(
                d.finish_reasons,
                vec![(0, "cancelled".to_owned()), (1, "stop".to_owned())]
            );
            assert_eq!(d.finish_reason(), "cancelled");
            assert_eq!(d.usage, Some(usage()));
        }
        other => panic!("expected done, got {other:?}"),
    }
    let body = body.await.unwrap();
    assert_openai_blank_lines_ok(&body);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"cancelled\""),
        "{text}"
    );
    // Finish chunks 3 and 4, the usage chunk 5, then [DONE].
    assert_eq!(h.last_event_id(Format::OpenAi), 6);
    assert!(text.ends_with("id: 6\ndata: [DONE]\n\n"), "{text}");

    // The same when the writer's task panics.
    let (mut w, h) = stream(false);
    let reader = tokio::spawn(drain(h.reader(Format::Browser)));
    tokio::task::yield_now().await;
    let task = tokio::spawn(async move {
        assert!(w.push_delta(Delta::text(0, "a")));
        tokio::task::yield_now().await;
        panic!("the pump failed");
    });
    assert!(task.await.unwrap_err().is_panic());
    let events = reader.await.unwrap();
    assert_eq!(ids(&events), vec![1, 2]);
    assert!(matches!(&events[1].1, Event::Done(d) if d.finish_reason() == "cancelled"));

    // And when it is aborted while waiting.
    let (w, h) = stream(false);
    let reader = tokio::spawn(drain(h.reader(Format::Browser)));
    let task = tokio::spawn(async move {
        w.cancelled().await;
        w.finish();
    });
    tokio::task::yield_now().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let events = reader.await.unwrap();
    assert_eq!(ids(&events), vec![1]);
    assert!(matches!(&events[0].1, Event::Done(d) if d.finish_reason() == "cancelled"));
}
