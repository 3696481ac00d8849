//! Readers on a live stream: the seam between the replayed log and live events, under a real
//! race with a producer on another worker thread.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rand::Rng;
use relay::{Delta, Event, Format, Generation, RelayError};

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
    let g = Generation::standalone(meta(), false);

    // Per-reader randomness drawn up front (the thread RNG is not Send).
    let plans: Vec<(u64, u64, bool)> = {
        let mut rng = rand::rng();
        (0..READERS)
            .map(|_| {
                (
                    rng.random_range(0..=DELTAS + 1), // when to subscribe (last_id reached)
                    rng.random_range(0..=1000),       // where, in thousandths of last_id
                    rng.random_bool(0.5),             // read as SSE bytes or as entries
                )
            })
            .collect()
    };

    let mut readers = Vec::new();
    for (i, (when, frac, as_sse)) in plans.into_iter().enumerate() {
        let g = g.clone();
        readers.push(tokio::spawn(async move {
            while g.last_id() < when.min(DELTAS) {
                tokio::task::yield_now().await;
            }
            if when > DELTAS {
                // Some readers come after the end.
                while !g.is_finished() {
                    tokio::task::yield_now().await;
                }
            }
            let pos = g.last_id() * frac / 1000;
            let r = match g.subscribe(pos) {
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
            let live = !g.is_finished();
            if as_sse {
                let body = sse_body(r, Format::Browser, NO_KEEPALIVE).await;
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
                let entries = drain(r).await;
                assert!(entries.last().expect("some event").event.is_terminal());
                Seen {
                    pos,
                    live,
                    ids: entries.iter().map(|e| e.id).collect(),
                    texts: entries
                        .iter()
                        .filter(|e| matches!(e.event, Event::Delta(_)))
                        .map(|e| text_of(e).to_owned())
                        .collect(),
                }
            }
        }));
    }

    let producer = {
        let g = g.clone();
        tokio::spawn(async move {
            for i in 1..=DELTAS {
                assert!(g.push_delta(Delta::text(0, format!("<{i}>"))));
                if i % 7 == 0 || i % 97 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            g.record_finish(0, "stop");
            g.finish();
        })
    };
    producer.await.expect("producer task");
    let last = DELTAS + 1;
    assert_eq!(g.last_id(), last);

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
    assert_eq!(g.reader_count(), 0);
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
    let g = Generation::standalone(meta(), true);
    let pieces = numbered_pieces(50);
    let a = tokio::spawn(sse_body(
        g.subscribe(0).unwrap(),
        Format::Browser,
        NO_KEEPALIVE,
    ));
    let b = tokio::spawn(sse_body(
        g.subscribe(0).unwrap(),
        Format::Browser,
        NO_KEEPALIVE,
    ));
    let c = tokio::spawn(drain(g.subscribe(0).unwrap()));
    assert_eq!(g.reader_count(), 3);
    for (i, p) in pieces.iter().enumerate() {
        assert!(g.push_delta(Delta::text(0, p.clone())));
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    g.record_finish(0, "stop");
    g.record_usage(usage());
    g.finish();

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
    let text: String = c.iter().map(|e| text_of(e)).collect();
    assert_eq!(text, pieces.concat());
    assert_eq!(c.len(), 51);
    assert_eq!(g.reader_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_early_readers_get_identical_bytes_in_both_formats() {
    let g = Generation::standalone(meta(), true);
    let early_b = tokio::spawn(sse_body(
        g.subscribe(0).unwrap(),
        Format::Browser,
        NO_KEEPALIVE,
    ));
    let early_o = tokio::spawn(sse_body(
        g.subscribe(0).unwrap(),
        Format::OpenAi,
        NO_KEEPALIVE,
    ));
    let pieces = numbered_pieces(20);
    for p in &pieces {
        g.push_delta(Delta::text(0, p.clone()));
        tokio::task::yield_now().await;
    }
    g.record_finish(0, "length");
    g.record_usage(usage());
    g.finish();
    let late_b = sse_body(g.subscribe(0).unwrap(), Format::Browser, NO_KEEPALIVE).await;
    let late_o = sse_body(g.subscribe(0).unwrap(), Format::OpenAi, NO_KEEPALIVE).await;
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
    let g = Generation::standalone(meta(), false);
    let mut r1 = g.subscribe(0).unwrap();
    let r2 = g.subscribe(0).unwrap();
    g.push_delta(Delta::text(0, "a"));
    assert_eq!(r1.next().await.unwrap().id, 1);
    drop(r1);
    assert_eq!(g.reader_count(), 1);
    g.push_delta(Delta::text(0, "b"));
    g.finish();
    let all = drain(r2).await;
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(g.reader_count(), 0);
    // The generation outlives its readers.
    let _keep: Arc<Generation> = g;
}

#[tokio::test]
async fn a_batch_wakes_a_waiting_reader_once_with_every_event() {
    use futures::StreamExt;
    let g = Generation::standalone(meta(), false);
    let mut body = Box::pin(
        g.subscribe(0)
            .unwrap()
            .into_sse(Format::OpenAi, NO_KEEPALIVE),
    );
    let waiting = tokio::spawn(async move { body.next().await.unwrap().unwrap() });
    tokio::task::yield_now().await;
    g.begin_batch();
    for p in ["a", "b", "c"] {
        assert!(g.push_delta(Delta::text(0, p)));
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "no wake-up inside a batch");
    g.end_batch();
    let first = waiting.await.unwrap();
    let text = String::from_utf8(first.to_vec()).unwrap();
    assert_eq!(
        text.matches("data: ").count(),
        3,
        "one write for the batch: {text}"
    );
    assert!(text.starts_with("id: 1\n") && text.contains("id: 3\n"));
}
