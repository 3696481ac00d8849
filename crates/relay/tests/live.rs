//! Readers on a live stream: the seam between the replayed log and live events, under a real
//! race with a producer on another worker thread.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::common::*;
use rand::Rng;
use relay::{Delta, Event, Format, RelayError};

const DELTAS: u64 = 10_000;
const READERS: usize = 8;

/// What one racing reader saw: its position and the ids (and texts) it received.
struct Seen {
    pos: u64,
    /// Subscribed while the producer was still writing.
    live: bool,
    ids: Vec<u64>,
    texts: Vec<String>,
}

/// Returns how many readers subscribed while the stream was live.
async fn race_once(round: usize) -> usize {
    let (mut w, h) = stream(false);

    // Per-reader randomness drawn up front (the thread RNG is not Send).
    let plans: Vec<(u64, u64, bool)> = {
        let mut rng = rand::rng();
        (0..READERS)
            .map(|_| {
                (
                    rng.random_range(0..=DELTAS + 1), // when to subscribe (last_id reached)
                    rng.random_range(0..=1000),       // where, in thousandths of last_id
                    rng.random_bool(0.5),             // read as SSE bytes or as events
                )
            })
            .collect()
    };

    let mut readers = Vec::new();
    for (i, (when, frac, as_sse)) in plans.into_iter().enumerate() {
        let h = h.clone();
        readers.push(tokio::spawn(async move {
            while h.last_event_id(Format::Browser) < when.min(DELTAS) {
                tokio::task::yield_now().await;
            }
            if when > DELTAS {
                // Some readers come after the end.
                while !h.is_finished() {
                    tokio::task::yield_now().await;
                }
            }
            let pos = h.last_event_id(Format::Browser) * frac / 1000;
            let r = match h.subscribe(pos, Format::Browser) {
                Ok(r) => r,
                Err(RelayError::AtEnd(p)) => {
                    assert_eq!(p, pos);
                    return Seen {
                        pos,
                        live: false,
                        ids: Vec::new(),
                        texts: Vec::new(),
                    };
                }
                Err(e) => panic!("round {round} reader {i}: subscribe({pos}): {e}"),
            };
            let live = !h.is_finished();
            if as_sse {
                let body = sse_body(r, NO_KEEPALIVE).await;
                let (events, _) = parse_sse(&body);
                let last = events.last().expect("some event");
                assert_eq!(last.event.as_deref(), Some("done"));
                let texts = events
                    .iter()
                    .filter(|e| e.event.as_deref() == Some("delta"))
                    .map(|e| {
                        let v: serde_json::Value = serde_json::from_str(&e.data).expect("JSON");
                        v["text"].as_str().expect("text").to_owned()
                    })
                    .collect();
                Seen {
                    pos,
                    live,
                    ids: events.iter().map(|e| e.id.expect("id")).collect(),
                    texts,
                }
            } else {
                let events = drain(r).await;
                assert!(events.last().expect("some event").1.is_terminal());
                Seen {
                    pos,
                    live,
                    ids: ids(&events),
                    texts: events
                        .iter()
                        .filter(|(_, e)| matches!(e, Event::Delta(_)))
                        .map(|(_, e)| text_of(e).to_owned())
                        .collect(),
                }
            }
        }));
    }

    let producer = tokio::spawn(async move {
        for i in 1..=DELTAS {
            assert!(w.push_delta(Delta::text(0, format!("<{i}>"))));
            if i % 7 == 0 || i % 97 == 0 {
                tokio::task::yield_now().await;
            }
        }
        w.record_finish(0, "stop");
        w.finish();
    });
    producer.await.expect("producer task");
    let last = DELTAS + 1;
    assert_eq!(h.last_event_id(Format::Browser), last);

    let mut live = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.await.expect("reader task");
        live += usize::from(seen.live);
        let want: Vec<u64> = (seen.pos + 1..=last).collect();
        assert_eq!(
            seen.ids.len(),
            want.len(),
            "round {round} reader {i} from {}: got {} events",
            seen.pos,
            seen.ids.len()
        );
        assert!(
            seen.ids == want,
            "round {round} reader {i} from {}: ids not exactly pos+1..=last (first mismatch at {:?})",
            seen.pos,
            seen.ids.iter().zip(&want).position(|(a, b)| a != b)
        );
        let want_texts: Vec<String> = (seen.pos + 1..last).map(|i| format!("<{i}>")).collect();
        assert!(
            seen.texts == want_texts,
            "round {round} reader {i}: texts differ"
        );
    }
    assert_eq!(h.reader_count(), 0);
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seam_race_no_gap_no_duplicate() {
    let mut live = 0;
    for round in 0..10 {
        live += race_once(round).await;
    }
    eprintln!("{live} of {} readers joined a live stream", 10 * READERS);
    // The race must actually have been run: most readers join mid-stream.
    assert!(live > 0, "no reader joined while the stream was live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_on_one_live_stream_both_get_the_whole_answer() {
    let (mut w, h) = stream(true);
    let pieces = numbered_pieces(50);
    let a = tokio::spawn(sse_body(h.reader(Format::Browser), NO_KEEPALIVE));
    let b = tokio::spawn(sse_body(
        h.subscribe(0, Format::Browser).unwrap(),
        NO_KEEPALIVE,
    ));
    let c = tokio::spawn(drain(h.subscribe(0, Format::OpenAi).unwrap()));
    assert_eq!(h.reader_count(), 3);
    for (i, p) in pieces.iter().enumerate() {
        assert!(w.push_delta(Delta::text(0, p.clone())));
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    w.record_finish(0, "stop");
    w.record_usage(usage());
    w.finish();

    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    // However the two live readers' writes were batched, the bytes are the same.
    assert_eq!(a, b);
    let (events, _) = parse_sse(&a);
    assert_eq!(browser_text(&events), pieces.concat());
    assert_eq!(
        events.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        (1..=51).collect::<Vec<_>>()
    );
    let done = events.last().unwrap();
    assert_eq!(done.event.as_deref(), Some("done"));
    assert_eq!(
        done.data,
        r#"{"finish_reason":"stop","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#
    );
    let text: String = c.iter().map(|(_, e)| text_of(e)).collect();
    assert_eq!(text, pieces.concat());
    assert_eq!(ids(&c), (1..=51).collect::<Vec<_>>());
    assert_eq!(h.reader_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_early_readers_get_identical_bytes_in_both_formats() {
    let (mut w, h) = stream(true);
    let early_b = tokio::spawn(sse_body(h.reader(Format::Browser), NO_KEEPALIVE));
    let early_o = tokio::spawn(sse_body(h.reader(Format::OpenAi), NO_KEEPALIVE));
    let pieces = numbered_pieces(20);
    for p in &pieces {
        w.push_delta(Delta::text(0, p.clone()));
        tokio::task::yield_now().await;
    }
    w.record_finish(0, "length");
    w.record_usage(usage());
    w.finish();
    let late_b = sse_body(h.subscribe(0, Format::Browser).unwrap(), NO_KEEPALIVE).await;
    let late_o = sse_body(h.subscribe(0, Format::OpenAi).unwrap(), NO_KEEPALIVE).await;
    let early_o = early_o.await.unwrap();
    assert_eq!(early_b.await.unwrap(), late_b);
    assert_eq!(early_o, late_o);
    assert_openai_blank_lines_ok(&late_o);
    let (events, _) = parse_sse(&late_o);
    assert_eq!(openai_text(&events), pieces.concat());
    // The finish chunk, the usage chunk and [DONE] number on from the last delta.
    let tail: Vec<_> = events.iter().rev().take(3).collect();
    assert_eq!(
        tail.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![Some(23), Some(22), Some(21)]
    );
    assert_eq!(tail[0].data, "[DONE]");
    assert!(tail[1]
        .data
        .contains(r#""choices":[],"usage":{"prompt_tokens":9"#));
    assert!(tail[2].data.contains(r#""finish_reason":"length""#));
}

/// A reader dropped mid-stream releases its place; the stream and other readers go on.
#[tokio::test]
async fn dropping_a_reader_mid_stream() {
    let (mut w, h) = stream(false);
    let mut r1 = h.subscribe(0, Format::Browser).unwrap();
    let r2 = h.subscribe(0, Format::OpenAi).unwrap();
    assert_eq!(h.reader_count(), 2);
    w.push_delta(Delta::text(0, "a"));
    assert_eq!(r1.next_event().await.unwrap().0, 1);
    assert_eq!(r1.position(), 1);
    drop(r1);
    assert_eq!(h.reader_count(), 1);
    w.push_delta(Delta::text(0, "b"));
    w.finish();
    let all = drain(r2).await;
    assert_eq!(ids(&all), vec![1, 2, 3]);
    assert_eq!(h.reader_count(), 0);
    // The stream outlives its readers and its writer.
    assert!(h.is_finished());
    let again = drain(h.reader(Format::Browser)).await;
    assert_eq!(again.len(), 3);
}

#[tokio::test]
async fn a_batch_wakes_a_waiting_reader_once_with_every_event() {
    use futures::StreamExt;
    let (mut w, h) = stream(false);
    let mut body = Box::pin(h.reader(Format::OpenAi).into_sse(NO_KEEPALIVE));
    let waiting = tokio::spawn(async move { body.next().await.unwrap().unwrap() });
    tokio::task::yield_now().await;
    {
        let mut batch = w.batch();
        for p in ["a", "b", "c"] {
            assert!(batch.push_delta(Delta::text(0, p)));
            tokio::task::yield_now().await;
        }
        assert_eq!(batch.last_id(), 3);
        assert!(!waiting.is_finished(), "no wake-up inside a batch");
    }
    let first = waiting.await.unwrap();
    let text = String::from_utf8(first.to_vec()).unwrap();
    assert_eq!(
        text.matches("data: ").count(),
        3,
        "one write for the batch: {text}"
    );
    assert!(text.starts_with("id: 1\n") && text.contains("id: 3\n"));
}

/// Counts the wake-ups of the task it is the waker of.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts its wake-ups, and the counter.
fn counting_waker() -> (Waker, Arc<Wakes>) {
    let wakes = Arc::new(Wakes::default());
    (Waker::from(wakes.clone()), wakes)
}

fn count(w: &Wakes) -> usize {
    w.0.load(Ordering::SeqCst)
}

/// Polls a reader's `next_event()` once.
fn poll_event(r: &mut relay::Reader, cx: &mut Context<'_>) -> Poll<Option<(u64, Event)>> {
    std::pin::pin!(r.next_event()).poll(cx)
}

/// A reader waiting on a live stream is woken exactly once for a batch, when its guard drops,
/// and then finds every event of the batch; appends outside a batch wake it each time.
#[tokio::test]
async fn a_batch_wakes_readers_exactly_when_its_guard_drops() {
    use futures::Stream;
    let (mut w, h) = stream(false);
    // Two readers, each in its own "task": one taking events, one an SSE body.
    let (waker_e, wakes_e) = counting_waker();
    let (waker_b, wakes_b) = counting_waker();
    let mut cx_e = Context::from_waker(&waker_e);
    let mut cx_b = Context::from_waker(&waker_b);
    let mut events = h.reader(Format::Browser);
    let mut body = Box::pin(h.reader(Format::OpenAi).into_sse(NO_KEEPALIVE));

    // Nothing yet: both wait.
    assert!(poll_event(&mut events, &mut cx_e).is_pending());
    assert!(body.as_mut().poll_next(&mut cx_b).is_pending());

    let mut batch = w.batch();
    for p in ["a", "b", "c"] {
        assert!(batch.push_delta(Delta::text(0, p)));
        assert_eq!(
            (count(&wakes_e), count(&wakes_b)),
            (0, 0),
            "woken inside a batch"
        );
    }
    drop(batch);
    assert_eq!(
        (count(&wakes_e), count(&wakes_b)),
        (1, 1),
        "each waiting reader is woken once, when the batch ends"
    );

    // Woken once, the readers find the whole batch.
    let got: Vec<u64> = (0..3)
        .map(|_| match poll_event(&mut events, &mut cx_e) {
            Poll::Ready(Some((id, _))) => id,
            other => panic!("expected an event, got {other:?}"),
        })
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    match body.as_mut().poll_next(&mut cx_b) {
        Poll::Ready(Some(Ok(b))) => {
            let text = String::from_utf8(b.to_vec()).unwrap();
            assert_eq!(text.matches("data: ").count(), 3, "one write: {text}");
        }
        _ => panic!("the body had nothing after the batch"),
    }
    assert!(poll_event(&mut events, &mut cx_e).is_pending());
    assert!(body.as_mut().poll_next(&mut cx_b).is_pending());

    // An empty batch wakes nobody.
    drop(w.batch());
    assert_eq!((count(&wakes_e), count(&wakes_b)), (1, 1));

    // Without a batch, each append wakes the waiting readers at once.
    assert!(w.push_delta(Delta::text(0, "d")));
    assert_eq!((count(&wakes_e), count(&wakes_b)), (2, 2));
    assert!(matches!(
        poll_event(&mut events, &mut cx_e),
        Poll::Ready(Some((4, _)))
    ));
    assert!(poll_event(&mut events, &mut cx_e).is_pending());

    // A second batch, then the end, which wakes them as well.
    let mut batch = w.batch();
    assert!(batch.push_delta(Delta::text(0, "e")));
    assert_eq!(count(&wakes_e), 2);
    drop(batch);
    assert_eq!(count(&wakes_e), 3);
    assert!(matches!(
        poll_event(&mut events, &mut cx_e),
        Poll::Ready(Some((5, _)))
    ));
    assert!(poll_event(&mut events, &mut cx_e).is_pending());
    w.finish();
    assert_eq!(count(&wakes_e), 4);
    assert!(matches!(
        poll_event(&mut events, &mut cx_e),
        Poll::Ready(Some((6, Event::Done(_))))
    ));
    assert!(matches!(
        poll_event(&mut events, &mut cx_e),
        Poll::Ready(None)
    ));
}
