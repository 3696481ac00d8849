//! The registry: lookup, expiry, memory accounting and the `Stats` figures for `/metrics`.

mod common;

use std::time::Duration;

use common::*;
use relay::{Delta, Limits, Registry, RelayError, Stats};

fn fill(g: &relay::Generation, n: usize) {
    for _ in 0..n {
        assert!(g.push_delta(Delta::text(0, "abcd")));
    }
}

#[test]
fn stats_count_live_finished_and_bytes() {
    let r = Registry::new(Limits::default());
    assert_eq!(r.stats(), Stats::default());

    let a = r.create(meta(), false).unwrap();
    let b = r.create(meta(), false).unwrap();
    let c = r.create(meta(), true).unwrap();
    assert_eq!(
        r.stats(),
        Stats {
            live: 3,
            ..Stats::default()
        }
    );
    fill(&a, 10);
    fill(&b, 20);
    b.finish();
    fill(&c, 5);
    c.fail(relay::Failure {
        message: "x".into(),
        kind: "y".into(),
        code: None,
    });
    let st = r.stats();
    assert_eq!((st.live, st.finished), (1, 2));
    assert_eq!(st.bytes, a.bytes() + b.bytes() + c.bytes());
    assert!(
        a.bytes() > 10 * "abcd".len(),
        "per-event overhead is counted"
    );
    assert!(b.bytes() > a.bytes());
    assert_eq!((st.evicted, st.refused), (0, 0));

    let live = r.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id(), a.id());

    // Lookup by ID string; junk and unknown IDs are not found.
    assert_eq!(r.get(a.id().as_str()).unwrap().id(), a.id());
    assert_eq!(r.get(b.id().as_str()).unwrap().id(), b.id());
    assert_eq!(r.get("").err(), Some(RelayError::NotFound));
    assert_eq!(r.get("../../etc/passwd").err(), Some(RelayError::NotFound));
    assert_eq!(
        r.get(relay::StreamId::random().as_str()).err(),
        Some(RelayError::NotFound)
    );
    // Default retention: nothing to sweep yet.
    assert_eq!(r.sweep(), 0);
    assert_eq!(r.stats().finished, 2);
}

#[tokio::test]
async fn memory_returns_to_zero_once_every_generation_is_gone() {
    let r = Registry::new(Limits {
        retention: Duration::ZERO,
        ..Limits::default()
    });
    let gens: Vec<_> = (0..5).map(|_| r.create(meta(), false).unwrap()).collect();
    for (i, g) in gens.iter().enumerate() {
        fill(g, 100 * (i + 1));
    }
    let total: usize = gens.iter().map(|g| g.bytes()).sum();
    assert_eq!(r.stats().bytes, total);
    assert!(total > 0);

    // Readers, some of which encode (which caches bytes in the log entries).
    let reader = gens[0].subscribe(0).unwrap();
    let body = tokio::spawn(sse_body(
        gens[1].subscribe(0).unwrap(),
        relay::Format::OpenAi,
        NO_KEEPALIVE,
    ));
    for g in &gens {
        g.finish();
    }
    assert!(!body.await.unwrap().is_empty());
    assert_eq!(
        r.stats().bytes,
        gens.iter().map(|g| g.bytes()).sum::<usize>()
    );

    // Expired streams are swept from the registry...
    assert_eq!(r.sweep(), 5);
    assert_eq!(r.stats().live + r.stats().finished, 0);
    // ...but their memory is held until the last handle goes.
    assert_eq!(
        r.stats().bytes,
        gens.iter().map(|g| g.bytes()).sum::<usize>()
    );
    let first_bytes = gens[0].bytes();
    drop(gens);
    assert_eq!(
        r.stats().bytes,
        first_bytes,
        "the reader still holds the first log"
    );
    let entries = drain(reader).await;
    assert_eq!(entries.len(), 101);
    drop(entries);
    assert_eq!(r.stats().bytes, 0);
}

/// Bytes counted for one 4-byte text delta.
fn per_event() -> usize {
    let g = relay::Generation::standalone(meta(), false);
    g.push_delta(Delta::text(0, "abcd"));
    g.bytes()
}

#[test]
fn evicted_and_failed_streams_release_their_memory() {
    let per = per_event();
    let r = Registry::new(Limits {
        max_stream_bytes: 30 * per,
        max_total_bytes: 50 * per,
        ..Limits::default()
    });
    // One stream hits its own bound and fails.
    let big = r.create(meta(), false).unwrap();
    let mut n = 0;
    while big.push_delta(Delta::text(0, "abcd")) {
        n += 1;
    }
    assert_eq!(n, 30);
    assert!(big.is_finished());
    let big_bytes = big.bytes();
    assert!(big_bytes <= 31 * per);
    assert_eq!(r.stats().bytes, big_bytes);
    drop(big);

    // Another stream brings the total past its bound.
    let live = r.create(meta(), false).unwrap();
    fill(&live, 25);
    assert!(r.stats().bytes >= 50 * per);

    // The failed (finished) stream is evicted to make room; the live one is never cut.
    let fresh = r.create(meta(), false).unwrap();
    let st = r.stats();
    assert_eq!(st.evicted, 1);
    assert_eq!(st.bytes, live.bytes());
    assert_eq!((st.live, st.finished), (2, 0));

    // Over the bound with live streams alone: refused, and counted.
    fill(&fresh, 25);
    assert_eq!(r.create(meta(), false).err(), Some(RelayError::Full));
    assert_eq!(r.create(meta(), false).err(), Some(RelayError::Full));
    assert_eq!(r.stats().refused, 2);
    assert!(!live.is_finished() && !fresh.is_finished());
    assert!(
        fill_ok(&live),
        "a live stream is not cut by the global bound"
    );

    live.finish();
    fresh.finish();
    let (live_id, fresh_id) = (live.id().clone(), fresh.id().clone());
    drop((live, fresh));
    // Room again once finished streams can be evicted: the oldest goes, and that is enough.
    let again = r.create(meta(), false).unwrap();
    let st = r.stats();
    assert_eq!(st.evicted, 2);
    assert_eq!(r.get(live_id.as_str()).err(), Some(RelayError::NotFound));
    let kept = r.get(fresh_id.as_str()).unwrap();
    assert_eq!(st.bytes, kept.bytes());
    assert!(st.bytes < 50 * per);
    assert_eq!((st.live, st.finished, st.refused), (1, 1, 2));
    drop(again);
}

fn fill_ok(g: &relay::Generation) -> bool {
    g.push_delta(Delta::text(0, "abcd"))
}
