//! `Generation::abandoned(grace)`: when the upstream request may be cancelled because nobody is
//! reading any more. Time is paused, so the durations are exact.

mod common;

use std::time::Duration;

use common::*;
use relay::generation::FIRST_READER_WAIT;
use relay::Generation;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const GRACE: Duration = Duration::from_secs(30);

fn watch_abandoned(g: &std::sync::Arc<Generation>, grace: Duration) -> JoinHandle<Instant> {
    let g = g.clone();
    tokio::spawn(async move {
        g.abandoned(grace).await;
        Instant::now()
    })
}

/// Lets spawned tasks see what just happened, without moving the clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn resolves_grace_after_the_last_reader_leaves() {
    let g = Generation::standalone(meta(), false);
    let r1 = g.subscribe(0).unwrap();
    let r2 = g.subscribe(0).unwrap();
    let done = watch_abandoned(&g, GRACE);
    sleep(Duration::from_secs(3600)).await;
    assert!(!done.is_finished(), "resolved while readers were attached");
    drop(r1);
    sleep(GRACE * 2).await;
    assert!(
        !done.is_finished(),
        "resolved while one reader was still attached"
    );
    drop(r2);
    let left = Instant::now();
    let at = done.await.unwrap();
    assert_eq!(at - left, GRACE);
}

#[tokio::test(start_paused = true)]
async fn never_resolves_while_a_reader_is_attached() {
    let g = Generation::standalone(meta(), false);
    let _r = g.subscribe(0).unwrap();
    assert!(timeout(Duration::from_secs(24 * 3600), g.abandoned(GRACE))
        .await
        .is_err());
    // Not even with no grace at all.
    assert!(
        timeout(Duration::from_secs(3600), g.abandoned(Duration::ZERO))
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn zero_grace_resolves_as_soon_as_the_last_reader_leaves() {
    let g = Generation::standalone(meta(), false);
    let r = g.subscribe(0).unwrap();
    let done = watch_abandoned(&g, Duration::ZERO);
    sleep(Duration::from_secs(60)).await;
    assert!(!done.is_finished());
    drop(r);
    let left = Instant::now();
    assert_eq!(done.await.unwrap() - left, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_reader_reattaching_within_grace_resets_it() {
    let g = Generation::standalone(meta(), false);
    let r = g.subscribe(0).unwrap();
    let done = watch_abandoned(&g, GRACE);
    settle().await;
    drop(r);
    sleep(Duration::from_secs(20)).await;
    // The browser reconnects with Last-Event-ID and reads for a while.
    let r = g.subscribe(0).unwrap();
    sleep(Duration::from_secs(15)).await;
    assert!(
        !done.is_finished(),
        "resolved while the reconnected reader was attached"
    );
    drop(r);
    let left = Instant::now();
    sleep(GRACE - Duration::from_secs(1)).await;
    assert!(!done.is_finished(), "the grace period was not restarted");
    assert_eq!(done.await.unwrap() - left, GRACE);
}

/// A reconnect that comes and goes between two polls of the watcher still counts as a reader:
/// the generation "has had no reader for grace" only `grace` after it left.
#[tokio::test(start_paused = true)]
async fn a_brief_reattach_also_resets_the_grace() {
    let g = Generation::standalone(meta(), false);
    let r = g.subscribe(0).unwrap();
    let done = watch_abandoned(&g, GRACE);
    settle().await;
    drop(r);
    settle().await;
    sleep(Duration::from_secs(20)).await;
    // Attach and leave with no await in between (a reconnect that fails at once, or a
    // `Last-Event-ID` reader that had just the last few events to send).
    drop(g.subscribe(0).unwrap());
    let left = Instant::now();
    let at = done.await.unwrap();
    assert_eq!(
        at - left,
        GRACE,
        "abandoned() resolved {:?} after the last reader left, not {GRACE:?}",
        at - left
    );
}

#[tokio::test(start_paused = true)]
async fn before_any_reader_it_waits_at_least_first_reader_wait() {
    assert!(FIRST_READER_WAIT > Duration::ZERO);
    for grace in [Duration::ZERO, Duration::from_secs(1), FIRST_READER_WAIT] {
        let g = Generation::standalone(meta(), false);
        let start = Instant::now();
        let done = watch_abandoned(&g, grace);
        assert_eq!(
            done.await.unwrap() - start,
            FIRST_READER_WAIT,
            "grace {grace:?}"
        );
    }
    // A longer grace still applies.
    let g = Generation::standalone(meta(), false);
    let start = Instant::now();
    let long = FIRST_READER_WAIT + GRACE;
    assert_eq!(watch_abandoned(&g, long).await.unwrap() - start, long);
}

#[tokio::test(start_paused = true)]
async fn a_first_reader_within_the_wait_switches_to_the_grace() {
    let g = Generation::standalone(meta(), false);
    let done = watch_abandoned(&g, Duration::ZERO);
    sleep(FIRST_READER_WAIT / 2).await;
    let r = g.subscribe(0).unwrap();
    sleep(FIRST_READER_WAIT * 3).await;
    assert!(!done.is_finished(), "resolved with a reader attached");
    drop(r);
    let left = Instant::now();
    // After a reader has come, the plain grace applies (here zero), not FIRST_READER_WAIT.
    assert_eq!(done.await.unwrap() - left, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn refused_subscriptions_are_not_readers() {
    let g = finished(&["x".to_owned()]);
    let done = watch_abandoned(&g, Duration::ZERO);
    // At the end (the 204 case) and past it (bad position): no reader attaches.
    assert!(g.subscribe(2).is_err());
    assert!(g.subscribe(3).is_err());
    assert_eq!(g.reader_count(), 0);
    let start = Instant::now();
    assert_eq!(done.await.unwrap() - start, FIRST_READER_WAIT);
}
