//! How a generation ends other than `done`/`stop`: failure and cancellation.

mod common;

use std::time::Duration;

use common::*;
use relay::encode::{encode, Format};
use relay::{Delta, Event, Failure, Generation};

fn failure() -> Failure {
    Failure {
        message: "upstream went away".into(),
        kind: "upstream_truncated".into(),
        code: Some("upstream_truncated".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_replayed_identically_and_never_becomes_done() {
    let g = Generation::standalone(meta(), true);
    let live_entries = tokio::spawn(drain(g.subscribe(0).unwrap()));
    let live_browser = tokio::spawn(sse_body(
        g.subscribe(0).unwrap(),
        Format::Browser,
        NO_KEEPALIVE,
    ));
    let live_openai = tokio::spawn(sse_body(
        g.subscribe(0).unwrap(),
        Format::OpenAi,
        NO_KEEPALIVE,
    ));
    for p in ["Hel", "lo", " wö"] {
        assert!(g.push_delta(Delta::text(0, p)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    g.record_usage(usage());
    g.fail(failure());
    // The end is final: nothing more is written after it.
    assert!(!g.push_delta(Delta::text(0, "late")));
    g.finish();
    g.finish_cancelled();
    g.fail(Failure {
        message: "second".into(),
        kind: "x".into(),
        code: None,
    });
    assert_eq!(g.last_id(), 4);
    assert!(g.is_finished());
    assert!(matches!(g.outcome(), Some(Event::Failed(f)) if f == failure()));

    let entries = live_entries.await.unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries.iter().map(|e| text_of(e)).collect::<String>(),
        "Hello wö"
    );
    assert!(matches!(&entries[3].event, Event::Failed(f) if *f == failure()));

    let live_browser = live_browser.await.unwrap();
    let live_openai = live_openai.await.unwrap();
    let late_browser = sse_body(g.subscribe(0).unwrap(), Format::Browser, NO_KEEPALIVE).await;
    let late_openai = sse_body(g.subscribe(0).unwrap(), Format::OpenAi, NO_KEEPALIVE).await;
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
    let (events, _) = parse_sse(&late_browser);
    assert!(events.iter().all(|e| e.event.as_deref() != Some("done")));
    assert!(events.iter().all(|e| e.event.as_deref() != Some("error")));

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
    let rest = sse_body(g.subscribe(2).unwrap(), Format::Browser, NO_KEEPALIVE).await;
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
    let g = r.create(meta(), false).unwrap();
    let mut n = 0;
    while g.push_delta(Delta::text(0, "abcd")) {
        n += 1;
        assert!(n < 1000, "the per-stream bound never triggered");
    }
    assert!(n > 0);
    assert!(
        g.bytes() <= 2000 + 300,
        "bytes {} far past the bound",
        g.bytes()
    );
    match g.outcome() {
        Some(Event::Failed(f)) => assert_eq!(f.kind, "stream_too_large"),
        other => panic!("expected failed, got {other:?}"),
    }
    g.finish();
    assert!(matches!(g.outcome(), Some(Event::Failed(_))));
}

#[tokio::test]
async fn cancel_resolves_cancelled_and_ends_with_cancelled_done() {
    let g = Generation::standalone(meta(), false);
    let reader = g.subscribe(0).unwrap();
    let waiter = {
        let g = g.clone();
        tokio::spawn(async move { g.cancelled().await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    assert!(!g.is_cancelled());
    assert!(g.push_delta(Delta::text(0, "Hel")));

    g.cancel();
    assert!(g.is_cancelled());
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("cancelled() did not resolve")
        .unwrap();
    // Resolves at once when already cancelled.
    tokio::time::timeout(Duration::from_secs(5), g.cancelled())
        .await
        .expect("cancelled() after cancel");

    // Cancelling asks the producer to stop; it is the producer that writes the end.
    assert!(!g.is_finished());
    g.finish_cancelled();
    let entries = drain(reader).await;
    assert_eq!(entries.len(), 2);
    let done = &entries[1];
    assert!(matches!(&done.event, Event::Done(d) if d.finish_reason() == "cancelled"));
    let bytes = encode(Format::Browser, done.id, &done.event, &meta(), false);
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        "id: 2\nevent: done\ndata: {\"finish_reason\":\"cancelled\",\"usage\":null}\n\n"
    );

    // A reader arriving later sees the same, through into_sse.
    let body = sse_body(g.subscribe(1).unwrap(), Format::Browser, NO_KEEPALIVE).await;
    let (events, _) = parse_sse(&body);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_deref(), Some("done"));
    assert!(events[0].data.contains("\"finish_reason\":\"cancelled\""));

    let body = sse_body(g.subscribe(0).unwrap(), Format::OpenAi, NO_KEEPALIVE).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\"finish_reason\":\"cancelled\""), "{text}");
    // The finish chunk is id 2, [DONE] numbers on.
    assert!(text.ends_with("id: 3\ndata: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn cancel_before_any_delta_and_with_a_finished_choice() {
    // Nothing generated yet: still one `done` with `cancelled`.
    let g = Generation::standalone(meta(), false);
    g.cancel();
    g.finish_cancelled();
    let entries = drain(g.subscribe(0).unwrap()).await;
    assert_eq!(entries.len(), 1);
    let bytes = encode(Format::Browser, 1, &entries[0].event, &meta(), false);
    assert!(std::str::from_utf8(&bytes)
        .unwrap()
        .contains("\"finish_reason\":\"cancelled\""));

    // Two choices, one already finished: only the open one becomes `cancelled`.
    let g = Generation::standalone(meta(), false);
    g.push_delta(Delta::text(0, "a"));
    g.push_delta(Delta::text(1, "b"));
    g.record_finish(1, "stop");
    g.finish_cancelled();
    match g.outcome() {
        Some(Event::Done(d)) => assert_eq!(
            d.finish_reasons,
            vec![(0, "cancelled".to_owned()), (1, "stop".to_owned())]
        ),
        other => panic!("expected done, got {other:?}"),
    }

    // Cancelling a finished stream changes nothing.
    let g = finished(&["x".to_owned()]);
    g.cancel();
    g.finish_cancelled();
    match g.outcome() {
        Some(Event::Done(d)) => assert_eq!(d.finish_reason(), "stop"),
        other => panic!("expected done, got {other:?}"),
    }
    assert_eq!(g.last_id(), 2);
}
