//! `Writer::abandoned(grace)`: when the upstream request may be cancelled because nobody is
//! reading any more. Time is paused, so the durations are exact.

use std::time::Duration;

use crate::common::*;
use relay::writer::FIRST_READER_WAIT;
use relay::{Format, Handle, Writer};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const GRACE: Duration = Duration::from_secs(30);

/// A stream whose writer is watching for abandonment in a task of its own (as the gateway's
/// pump does); the task returns when `abandoned` resolved, and the writer.
fn watched(grace: Duration) -> (Handle, JoinHandle<(Instant, Writer)>) {
    let (w, h) = stream(false);
    (h, watch_abandoned(w, grace))
}

fn watch_abandoned(w: Writer, grace: Duration) -> JoinHandle<(Instant, Writer)> {
    tokio::spawn(async move {
        w.abandoned(grace).await;
        (Instant::now(), w)
    })
}

async fn resolved_at(done: JoinHandle<(Instant, Writer)>) -> Instant {
    done.await.expect("watcher task").0
}

/// Lets spawned tasks see what just happened, without moving the clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn resolves_grace_after_the_last_reader_leaves() {
    let (h, done) = watched(GRACE);
    let r1 = h.reader(Format::Browser);
    let r2 = h.subscribe(0, Format::OpenAi).unwrap();
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
    let at = resolved_at(done).await;
    assert_eq!(at - left, GRACE);
}

#[tokio::test(start_paused = true)]
async fn never_resolves_while_a_reader_is_attached() {
    let (w, h) = stream(false);
    let _r = h.reader(Format::Browser);
    assert!(timeout(Duration::from_secs(24 * 3600), w.abandoned(GRACE))
        .await
        .is_err());
    // Not even with no grace at all.
    assert!(
        timeout(Duration::from_secs(3600), w.abandoned(Duration::ZERO))
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn zero_grace_resolves_as_soon_as_the_last_reader_leaves() {
    let (w, h) = stream(false);
    let r = h.reader(Format::Browser);
    let done = watch_abandoned(w, Duration::ZERO);
    sleep(Duration::from_secs(60)).await;
    assert!(!done.is_finished());
    drop(r);
    let left = Instant::now();
    assert_eq!(resolved_at(done).await - left, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_reader_reattaching_within_grace_resets_it() {
    let (w, h) = stream(false);
    let r = h.reader(Format::Browser);
    let done = watch_abandoned(w, GRACE);
    settle().await;
    drop(r);
    sleep(Duration::from_secs(20)).await;
    // The browser reconnects with Last-Event-ID and reads for a while.
    let r = h.subscribe(0, Format::Browser).unwrap();
    sleep(Duration::from_secs(15)).await;
    assert!(
        !done.is_finished(),
        "resolved while the reconnected reader was attached"
    );
    drop(r);
    let left = Instant::now();
    sleep(GRACE - Duration::from_secs(1)).await;
    assert!(!done.is_finished(), "the grace period was not restarted");
    assert_eq!(resolved_at(done).await - left, GRACE);
}

/// A reconnect that comes and goes between two polls of the watcher still counts as a reader:
/// the stream "has had no reader for grace" only `grace` after it left.
#[tokio::test(start_paused = true)]
async fn a_brief_reattach_also_resets_the_grace() {
    let (w, h) = stream(false);
    let r = h.reader(Format::Browser);
    let done = watch_abandoned(w, GRACE);
    settle().await;
    drop(r);
    settle().await;
    sleep(Duration::from_secs(20)).await;
    // Attach and leave with no await in between (a reconnect that fails at once, or a
    // `Last-Event-ID` reader that had just the last few events to send).
    drop(h.subscribe(0, Format::OpenAi).unwrap());
    let left = Instant::now();
    let at = resolved_at(done).await;
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
        let start = Instant::now();
        let (_h, done) = watched(grace);
        assert_eq!(
            resolved_at(done).await - start,
            FIRST_READER_WAIT,
            "grace {grace:?}"
        );
    }
    // A longer grace still applies.
    let start = Instant::now();
    let long = FIRST_READER_WAIT + GRACE;
    let (_h, done) = watched(long);
    assert_eq!(resolved_at(done).await - start, long);
}

#[tokio::test(start_paused = true)]
async fn a_first_reader_within_the_wait_switches_to_the_grace() {
    let (h, done) = watched(Duration::ZERO);
    sleep(FIRST_READER_WAIT / 2).await;
    let r = h.reader(Format::Browser);
    sleep(FIRST_READER_WAIT * 3).await;
    assert!(!done.is_finished(), "resolved with a reader attached");
    drop(r);
    let left = Instant::now();
    // After a reader has come, the plain grace applies (here zero), not FIRST_READER_WAIT.
    assert_eq!(resolved_at(done).await - left, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn refused_subscriptions_are_not_readers() {
    // Past the end of a live stream (bad position): no reader attaches.
    let (mut w, h) = stream(false);
    assert!(w.push_delta(relay::Delta::text(0, "x")));
    let done = watch_abandoned(w, Duration::ZERO);
    let start = Instant::now();
    assert!(h.subscribe(2, Format::Browser).is_err());
    assert!(h.subscribe(3, Format::OpenAi).is_err());
    assert_eq!(h.reader_count(), 0);
    assert_eq!(resolved_at(done).await - start, FIRST_READER_WAIT);

    // Over the reader cap: refused, not counted, and the stream is abandoned on time.
    let r = relay::Registry::new(relay::Limits {
        max_readers_per_stream: 1,
        ..relay::Limits::default()
    });
    let w = r.create(meta(), false).unwrap();
    let h = w.handle();
    let first = h.reader(Format::Browser);
    let done = watch_abandoned(w, GRACE);
    settle().await;
    assert_eq!(
        h.subscribe(0, Format::Browser).err(),
        Some(relay::RelayError::TooManyReaders(1))
    );
    assert_eq!(h.reader_count(), 1);
    drop(first);
    let left = Instant::now();
    assert_eq!(resolved_at(done).await - left, GRACE);

    // At the end of a finished stream (the 204 case): nothing attaches either.
    let h = finished(&["x".to_owned()]);
    assert!(h.subscribe(2, Format::Browser).is_err());
    assert!(h.subscribe(3, Format::Browser).is_err());
    assert_eq!(h.reader_count(), 0);
}

/// `Handle::finished` waits for the end without being a reader: the grace period still runs
/// while it waits, and it resolves once the terminal event is in the log.
#[tokio::test(start_paused = true)]
async fn waiting_for_the_end_is_not_reading() {
    let (w, h) = stream(false);
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { h.finished().await })
    };
    let done = watch_abandoned(w, GRACE);
    settle().await;
    assert_eq!(h.reader_count(), 0);
    sleep(FIRST_READER_WAIT.max(GRACE) + Duration::from_secs(1)).await;
    assert!(
        done.is_finished(),
        "the waiter kept the stream from being abandoned"
    );
    assert!(!waiter.is_finished(), "resolved before the end");
    let (_, w) = done.await.expect("watcher task");
    w.finish_cancelled();
    timeout(Duration::from_secs(1), waiter)
        .await
        .expect("resolved at the end")
        .expect("waiter task");
    // Once ended, at once.
    timeout(Duration::from_millis(1), h.finished())
        .await
        .expect("an ended stream is finished");
}
