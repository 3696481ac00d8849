//! The registry: lookup, expiry, memory accounting, the reader cap, and the `Stats` figures for
//! `/metrics`.

use std::time::Duration;

use crate::common::*;
use relay::{Delta, Format, Limits, Registry, RelayError, Stats, Writer};

fn fill(w: &mut Writer, n: usize) {
    for _ in 0..n {
        assert!(w.push_delta(Delta::text(0, "abcd")));
    }
}

#[test]
fn stats_count_live_finished_and_bytes() {
    let r = Registry::new(Limits::default());
    assert_eq!(
        r.stats(),
        Stats {
            max_bytes: Limits::default().max_total_bytes,
            ..Stats::default()
        }
    );

    let mut a = r.create(meta(), false).unwrap();
    let mut b = r.create(meta(), false).unwrap();
    let mut c = r.create(meta(), true).unwrap();
    let (ha, hb, hc) = (a.handle(), b.handle(), c.handle());
    let st = r.stats();
    assert_eq!((st.live, st.finished, st.evicted, st.refused), (3, 0, 0, 0));
    assert_eq!(st.bytes, ha.bytes() + hb.bytes() + hc.bytes());
    assert_eq!(st.live_bytes, st.bytes, "every stream is live");
    assert!(
        st.bytes > 0,
        "a stream costs something even before its first event"
    );
    assert_eq!(st.oldest_finished_age, None);

    fill(&mut a, 10);
    fill(&mut b, 20);
    b.finish();
    fill(&mut c, 5);
    c.fail(relay::Failure {
        message: "x".into(),
        kind: "y".into(),
        code: None,
        ..Default::default()
    });
    let st = r.stats();
    assert_eq!((st.live, st.finished), (1, 2));
    assert_eq!(st.bytes, ha.bytes() + hb.bytes() + hc.bytes());
    assert_eq!(st.live_bytes, ha.bytes(), "only `a` is live");
    assert!(st.oldest_finished_age.is_some());
    assert!(
        ha.bytes() > 10 * "abcd".len(),
        "per-event overhead is counted"
    );
    assert!(hb.bytes() > ha.bytes());
    assert_eq!((st.evicted, st.refused), (0, 0));

    // Lookup by ID string; junk and unknown IDs are not found.
    assert_eq!(r.get(a.id().as_str()).unwrap().id(), a.id());
    assert_eq!(r.get(hb.id().as_str()).unwrap().id(), hb.id());
    assert_eq!(r.get(hc.id().as_str()).unwrap().id(), hc.id());
    assert_eq!(r.get("").err(), Some(RelayError::NotFound));
    assert_eq!(r.get("../../etc/passwd").err(), Some(RelayError::NotFound));
    assert_eq!(
        r.get(relay::StreamId::random().as_str()).err(),
        Some(RelayError::NotFound)
    );
    // What the registry hands out is the same stream.
    let found = r.get(a.id().as_str()).unwrap();
    assert_eq!(found.bytes(), ha.bytes());
    assert!(!found.is_finished());
    // Default retention: nothing to sweep yet.
    assert_eq!(r.sweep(), 0);
    assert_eq!(r.stats().finished, 2);
    a.finish();
    assert_eq!(r.stats().live_bytes, 0);
}

#[tokio::test]
async fn memory_returns_to_zero_once_every_stream_is_gone() {
    let r = Registry::new(Limits {
        retention: Duration::ZERO,
        ..Limits::default()
    });
    let mut writers: Vec<_> = (0..5).map(|_| r.create(meta(), false).unwrap()).collect();
    let handles: Vec<_> = writers.iter().map(Writer::handle).collect();
    for (i, w) in writers.iter_mut().enumerate() {
        fill(w, 100 * (i + 1));
    }
    let total = |hs: &[relay::Handle]| hs.iter().map(relay::Handle::bytes).sum::<usize>();
    assert_eq!(r.stats().bytes, total(&handles));
    assert!(total(&handles) > 0);

    // Readers, some of which encode: reading holds no memory of its own.
    let reader = handles[0].reader(Format::Browser);
    let body = tokio::spawn(sse_body(handles[1].reader(Format::OpenAi), NO_KEEPALIVE));
    for w in writers {
        w.finish();
    }
    assert!(!body.await.unwrap().is_empty());
    assert_eq!(r.stats().bytes, total(&handles));
    assert_eq!(r.stats().live_bytes, 0);

    // Expired streams are swept from the registry, and their memory goes with them, even
    // while a reader (one that stopped reading, say) still holds the first.
    assert_eq!(r.sweep(), 5);
    assert_eq!(r.stats().live + r.stats().finished, 0);
    assert_eq!(r.stats().oldest_finished_age, None);
    assert_eq!(r.stats().bytes, 0);
    assert_eq!(total(&handles), 0);
    drop(handles);
    assert!(drain(reader).await.is_empty(), "the reader ends");
    assert_eq!(r.stats().bytes, 0);
}

/// A finished 100-token answer is held in a couple of KiB, and readers in either format do not
/// add to it (nothing is cached; events are encoded as they are read).
#[tokio::test]
async fn a_finished_answer_is_compact_and_reading_it_holds_nothing() {
    let r = Registry::new(Limits::default());
    let mut w = r
        .create(
            relay::Meta {
                id: "chatcmpl-0123456789012345678901".into(),
                model: "sluice-demo".into(),
                created: 1,
                system_fingerprint: Some("fp_0123456789".into()),
            },
            true,
        )
        .unwrap();
    let h = w.handle();
    for i in 0..100 {
        assert!(w.push_delta(Delta::text(
            0,
            ["Hello ", "from ", "Sluice! ", "gateway. "][i % 4]
        )));
    }
    w.record_finish(0, "stop");
    w.record_usage(usage());
    w.finish();
    let st = r.stats();
    assert_eq!((st.live, st.finished, st.live_bytes), (0, 1, 0));
    assert_eq!(st.bytes, h.bytes());
    assert!(h.bytes() <= 2048, "{} bytes for 100 tokens", h.bytes());

    let before = r.stats().bytes;
    for format in [Format::Browser, Format::OpenAi] {
        for _ in 0..3 {
            let body = sse_body(h.reader(format), NO_KEEPALIVE).await;
            assert!(body.len() > 100 * 10, "{format:?}: {} bytes", body.len());
            assert_eq!(drain(h.reader(format)).await.len(), 101);
        }
        assert_eq!(
            r.stats().bytes,
            before,
            "reading {format:?} changed the bytes"
        );
        assert_eq!(h.bytes(), before);
    }
}

#[tokio::test]
async fn readers_per_stream_are_capped() {
    let r = Registry::new(Limits {
        max_readers_per_stream: 2,
        ..Limits::default()
    });
    let mut w = r.create(meta(), false).unwrap();
    let h = r.get(w.id().as_str()).unwrap();
    fill(&mut w, 3);
    let a = h.subscribe(0, Format::Browser).unwrap();
    let b = h.subscribe(2, Format::OpenAi).unwrap();
    assert_eq!(h.reader_count(), 2);
    // Every later subscription is refused, whatever its format or position, and is not a
    // reader.
    for (after, format) in [
        (0, Format::Browser),
        (3, Format::OpenAi),
        (1, Format::Browser),
    ] {
        assert_eq!(
            h.subscribe(after, format).err(),
            Some(RelayError::TooManyReaders(2))
        );
    }
    assert_eq!(h.reader_count(), 2);
    // A bad position is reported as such, before the cap.
    assert_eq!(
        h.subscribe(9, Format::Browser).err(),
        Some(RelayError::BadPosition(9))
    );
    // A stream's first reader (`reader()`, from the start) is always admitted.
    let first = h.reader(Format::OpenAi);
    assert_eq!(h.reader_count(), 3);
    drop(first);
    // A reader leaving makes room.
    drop(a);
    let c = h.subscribe(1, Format::Browser).unwrap();
    assert_eq!(h.reader_count(), 2);
    w.finish();
    // The readers admitted read to the end.
    assert_eq!(ids(&drain(b).await), vec![3, 4]);
    assert_eq!(ids(&drain(c).await), vec![2, 3, 4]);
    assert_eq!(h.reader_count(), 0);
    // At the end: AtEnd, not TooManyReaders, once readers are gone or not.
    let _x = h.subscribe(0, Format::Browser).unwrap();
    let _y = h.subscribe(0, Format::Browser).unwrap();
    assert_eq!(
        h.subscribe(4, Format::Browser).err(),
        Some(RelayError::AtEnd(4))
    );
    assert_eq!(
        h.subscribe(0, Format::Browser).err(),
        Some(RelayError::TooManyReaders(2))
    );
}

/// Bytes counted for one 4-byte text delta.
fn per_event() -> usize {
    let (mut w, h) = stream(false);
    let empty = h.bytes();
    let mut n = 0;
    // Past the first few appends, which round capacities up.
    while h.bytes() == empty || n < 64 {
        assert!(w.push_delta(Delta::text(0, "abcd")));
        n += 1;
    }
    (h.bytes() - empty).div_ceil(n)
}

/// Bytes a finished stream of `n` 4-byte text deltas holds.
fn finished_bytes(n: usize) -> usize {
    let (mut w, h) = stream(false);
    fill(&mut w, n);
    w.finish();
    h.bytes()
}

/// How many deltas a stream that was only given "abcd" deltas has.
fn pushes(h: &relay::Handle) -> usize {
    h.last_event_id(Format::Browser) as usize
}

#[test]
fn evicted_and_failed_streams_release_their_memory() {
    let per = per_event();
    const STREAM: usize = 10_000;
    const TOTAL: usize = 12_000;
    let r = Registry::new(Limits {
        max_stream_bytes: STREAM,
        max_total_bytes: TOTAL,
        ..Limits::default()
    });
    // One stream hits its own bound and fails.
    let mut big = r.create(meta(), false).unwrap();
    let hbig = big.handle();
    let mut n = 0;
    while big.push_delta(Delta::text(0, "abcd")) {
        n += 1;
        assert!(n < STREAM, "the per-stream bound never triggered");
    }
    assert!(
        n * "abcd".len() < STREAM && n * per > STREAM / 2,
        "{n} events"
    );
    assert!(hbig.is_finished());
    let big_bytes = hbig.bytes();
    assert!(big_bytes < TOTAL, "{big_bytes}");
    assert_eq!(r.stats().bytes, big_bytes);
    assert_eq!(r.stats().live_bytes, 0);
    drop((big, hbig));
    assert_eq!(r.stats().bytes, big_bytes, "still findable: still held");

    // Another stream brings the total past its bound.
    let mut live = r.create(meta(), false).unwrap();
    let hlive = live.handle();
    while r.stats().bytes < TOTAL {
        assert!(live.push_delta(Delta::text(0, "abcd")));
    }

    // The failed (finished) stream is evicted to make room; the live one is never cut.
    let mut fresh = r.create(meta(), false).unwrap();
    let hfresh = fresh.handle();
    let st = r.stats();
    assert_eq!(st.evicted, 1);
    assert_eq!(
        st.bytes,
        hlive.bytes() + hfresh.bytes(),
        "the evicted stream's bytes are free"
    );
    assert_eq!(st.live_bytes, st.bytes);
    assert_eq!((st.live, st.finished), (2, 0));

    // Over the bound with live streams alone: refused, and counted.
    while r.stats().live_bytes < TOTAL {
        assert!(fresh.push_delta(Delta::text(0, "abcd")));
    }
    assert_eq!(r.create(meta(), false).err(), Some(RelayError::Full));
    assert_eq!(r.create(meta(), false).err(), Some(RelayError::Full));
    assert_eq!(r.stats().refused, 2);
    assert!(!hlive.is_finished() && !hfresh.is_finished());
    assert!(
        live.push_delta(Delta::text(0, "abcd")),
        "a live stream is not cut by the global bound"
    );

    // Finishing compacts a log, which may free enough by itself: top the two up so that, even
    // compacted, they hold more than the bound.
    let (mut n_live, mut n_fresh) = (pushes(&hlive), pushes(&hfresh));
    while finished_bytes(n_live) + finished_bytes(n_fresh) < TOTAL + 64 {
        let (w, n) = if n_live <= n_fresh {
            (&mut live, &mut n_live)
        } else {
            (&mut fresh, &mut n_fresh)
        };
        fill(w, 10);
        *n += 10;
    }
    live.finish();
    fresh.finish();
    assert_eq!(hlive.bytes(), finished_bytes(n_live));
    assert!(r.stats().bytes >= TOTAL);
    let (live_id, fresh_id) = (*hlive.id(), *hfresh.id());
    drop((hlive, hfresh));
    // Room again once finished streams can be evicted: the oldest goes, and that is enough.
    let again = r.create(meta(), false).unwrap();
    let st = r.stats();
    assert_eq!(st.evicted, 2);
    assert_eq!(r.get(live_id.as_str()).err(), Some(RelayError::NotFound));
    let kept = r.get(fresh_id.as_str()).unwrap();
    assert_eq!(st.bytes, kept.bytes() + again.handle().bytes());
    assert!(st.bytes < TOTAL);
    assert_eq!((st.live, st.finished, st.refused), (1, 1, 2));
    drop(again);
}

/// Thousands of short streams through a small bound: none refused, the finished ones evicted in
/// the order they finished, and a stream evicted while someone still holds it is emptied and
/// uncounted at once: holding it (a client that stopped reading) keeps none of its memory.
#[tokio::test]
async fn eviction_under_churn() {
    const TOTAL: usize = 16 * 1024;
    let r = Registry::new(Limits {
        max_total_bytes: TOTAL,
        ..Limits::default()
    });
    let mut live = std::collections::VecDeque::new();
    let mut held = Vec::new();
    let mut finished_order = Vec::new();
    for i in 0..3000 {
        let mut w = r.create(meta(), false).expect("admitted");
        assert!(w.push_delta(Delta::text(0, format!("answer {i} ").repeat(8))));
        if i % 500 == 0 {
            held.push((i, w.handle()));
        }
        live.push_back(w);
        if live.len() > 4 || i % 3 == 0 {
            if let Some(mut w) = live.pop_front() {
                w.record_finish(0, "stop");
                finished_order.push(*w.id());
                w.finish();
            }
        }
        let st = r.stats();
        assert_eq!(st.refused, 0);
        assert!(st.live <= 5);
    }
    let st = r.stats();
    assert!(st.evicted > 2500, "{st:?}");
    // What is still findable is the most recently finished streams, with none missing in
    // between: eviction goes oldest first.
    let findable: Vec<bool> = finished_order
        .iter()
        .map(|id| r.get(id.as_str()).is_ok())
        .collect();
    let first_kept = findable.iter().position(|f| *f).expect("some are kept");
    assert!(
        findable[first_kept..].iter().all(|f| *f),
        "evicted out of order"
    );
    assert_eq!(findable.len() - first_kept, st.finished);
    assert_eq!(st.evicted, first_kept);

    // The held streams were evicted, emptied and uncounted.
    assert!(st.bytes <= TOTAL + 4096, "{st:?}");
    for (_, h) in &held {
        assert_eq!(r.get(h.id().as_str()).err(), Some(RelayError::NotFound));
        assert_eq!(h.bytes(), 0);
        assert!(drain(h.reader(Format::Browser)).await.is_empty());
    }
    let before = r.stats().bytes;
    drop(held);
    assert_eq!(r.stats().bytes, before);

    // The streams still live finish; the bound still holds, with nothing refused.
    for w in live {
        w.finish();
    }
    let st = r.stats();
    assert_eq!((st.live, st.live_bytes, st.refused), (0, 0, 0));
    assert!(st.bytes <= TOTAL + 4096, "{st:?}");
    assert!(r.create(meta(), false).is_ok());
}

/// `oldest_finished_age` is how long ago the oldest retained stream finished: the retention in
/// effect, which eviction shortens and sweeping bounds.
#[tokio::test]
async fn oldest_finished_age_follows_the_oldest_retained_stream() {
    let retention = Duration::from_millis(300);
    let r = Registry::new(Limits {
        retention,
        ..Limits::default()
    });
    let a = r.create(meta(), false).unwrap();
    let b = r.create(meta(), false).unwrap();
    assert_eq!(
        r.stats().oldest_finished_age,
        None,
        "live streams do not count"
    );
    a.finish();
    let age = r.stats().oldest_finished_age.expect("a finished");
    assert!(age < retention, "{age:?}");
    tokio::time::sleep(retention + Duration::from_millis(50)).await;
    b.finish();
    let age_a = r
        .stats()
        .oldest_finished_age
        .expect("a retained until swept");
    assert!(age_a >= retention + Duration::from_millis(50), "{age_a:?}");
    assert_eq!(r.stats().finished, 2);
    // Past its retention, `a` is no longer findable, and sweeping drops it: now `b` is the
    // oldest.
    assert_eq!(r.sweep(), 1);
    let st = r.stats();
    assert_eq!(st.finished, 1);
    match st.oldest_finished_age {
        // `b` finished just now, unless this test was paused for longer than the retention.
        Some(age_b) => assert!(age_b < age_a && age_b < retention, "{age_b:?}"),
        None => assert_eq!(r.sweep(), 0),
    }
    tokio::time::sleep(retention).await;
    assert_eq!(r.sweep(), usize::from(st.finished == 1));
    assert_eq!(r.stats().oldest_finished_age, None);
    assert_eq!(r.stats().bytes, 0);
}

/// A reader that stopped reading a finished stream (a stalled client) holds only what it has
/// buffered once the stream is evicted: its bytes stop counting at once, so later streams push
/// out that one old stream, not every finished stream after it.
#[test]
fn a_reader_of_an_evicted_stream_holds_none_of_its_bytes() {
    let r = Registry::new(Limits {
        max_total_bytes: 20_000,
        ..Limits::default()
    });
    let mut big = r.create(meta(), false).unwrap();
    assert!(big.push_delta(Delta::text(0, "x".repeat(12_000))));
    let h = big.handle();
    big.finish();
    let mut stalled = h.subscribe(0, Format::Browser).unwrap();
    // Small finished streams until the first eviction.
    let mut small = Vec::new();
    while r.stats().evicted == 0 {
        assert!(small.len() < 100, "never evicted");
        let mut w = r.create(meta(), false).unwrap();
        fill(&mut w, 20);
        small.push(*w.id());
        w.finish();
    }
    let st = r.stats();
    assert_eq!(st.evicted, 1, "{st:?}");
    assert_eq!(h.bytes(), 0);
    assert!(
        h.is_finished(),
        "a discarded stream still reads as finished"
    );
    assert!(st.bytes < 20_000, "the evicted stream is uncounted: {st:?}");
    for id in &small[..small.len() - 1] {
        assert!(r.get(id.as_str()).is_ok(), "small streams stay resumable");
    }
    // The stalled reader ends (its stream is gone) instead of waiting for ever.
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert_eq!(
        stalled.poll_chunk(&mut cx),
        std::task::Poll::Ready(None),
        "a reader of a discarded stream ends"
    );
}
