//! The upstream stream path per frame: SSE bytes, one OpenAI chunk per read as hyper hands them
//! over, through the byte prelude, eventsource-stream's parser and the OpenAI mapper to
//! normalised events.
//!
//! `cargo bench -p sluice-provider-adapter --features bench` (under a minute). Figures to read:
//! `upstream/*` time per frame (criterion's throughput is frames per second), and the printed
//! `upstream summary` lines (median ns per frame of 15 runs, no criterion around it).
//!
//! The stream is polled by hand with a no-op waker inside a runtime context (the idle timer needs
//! one), so what is timed is the stream path's own work, not an executor's. `trickled` returns
//! `Pending` before every frame, as a live upstream does (one wake-up per token): each frame then
//! costs one `Pending` poll through every layer and one `Ready`.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::{Stream, StreamExt};
use provider_adapter::{Provider, ProviderKind, StreamEvent};

/// Typical ~4-byte tokens.
const TOKENS: [&str; 8] = [" the", " cat", " sat", " on", " a", " mat", ".", " And"];

/// One `data:` frame of an OpenAI chunk, as the bench mock and vLLM write them.
fn frame(delta: &str, finish: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-0123456789abcdef\",\"object\":\"chat.completion.chunk\",\
         \"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\
         \"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
    ))
}

/// A role frame, `tokens` content frames, a finish frame and `[DONE]`.
fn frames(tokens: usize) -> Vec<Bytes> {
    let mut v = vec![frame(r#"{"role":"assistant","content":""}"#, "null")];
    for i in 0..tokens {
        let t = TOKENS[i % TOKENS.len()];
        v.push(frame(&format!("{{\"content\":\"{t}\"}}"), "null"));
    }
    v.push(frame("{}", "\"stop\""));
    v.push(Bytes::from_static(b"data: [DONE]\n\n"));
    v
}

/// The frames one per read, `Pending` (with a wake) before each when `trickle`.
struct Body {
    frames: std::collections::VecDeque<Bytes>,
    trickle: bool,
    ready: bool,
}

impl Stream for Body {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.trickle && !std::mem::replace(&mut self.ready, false) {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.frames.pop_front().map(Ok))
    }
}

/// Runs one whole stream of `frames` and returns its time; panics unless it ends cleanly.
fn run(
    rt: &tokio::runtime::Runtime,
    provider: &Provider,
    frames: &[Bytes],
    trickle: bool,
) -> Duration {
    let _in_runtime = rt.enter();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let body = Body {
        frames: frames.iter().cloned().collect(),
        trickle,
        ready: false,
    };
    let start = Instant::now();
    let mut events =
        provider_adapter::bench::openai_stream(body, Duration::from_secs(30), provider.clone());
    let mut n = 0usize;
    loop {
        match events.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(ev))) => {
                n += usize::from(matches!(ev, StreamEvent::Delta(_)));
                black_box(ev);
            }
            Poll::Ready(Some(Err(e))) => panic!("the stream failed: {e}"),
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
    }
    let took = start.elapsed();
    // Every content frame is one delta (the role and finish frames are not).
    assert_eq!(n, frames.len() - 3, "deltas of {} frames", frames.len());
    took
}

fn upstream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let provider = Provider::new(
        "bench",
        ProviderKind::OpenAi,
        "http://127.0.0.1:9/v1",
        None,
        Default::default(),
    )
    .expect("provider");
    let mut group = c.benchmark_group("upstream");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // 1,000 frames: the per-frame cost; 64: a bench-lane stream, its setup included.
    for tokens in [1000usize, 64] {
        let frames = frames(tokens);
        group.throughput(Throughput::Elements(frames.len() as u64));
        for (shape, trickle) in [("trickled", true), ("one_per_read", false)] {
            group.bench_with_input(BenchmarkId::new(shape, tokens), &frames, |b, f| {
                b.iter_custom(|iters| (0..iters).map(|_| run(&rt, &provider, f, trickle)).sum())
            });
        }
    }
    group.finish();

    for tokens in [1000usize, 64] {
        let frames = frames(tokens);
        for (shape, trickle) in [("trickled", true), ("one_per_read", false)] {
            let mut runs: Vec<Duration> = (0..15)
                .map(|_| run(&rt, &provider, &frames, trickle))
                .collect();
            runs.sort();
            let per = |d: Duration| d.as_nanos() as f64 / frames.len() as f64;
            println!(
                "upstream summary: {shape:>12}, {} frames: median {:.0} ns/frame (min {:.0}, max {:.0})",
                frames.len(),
                per(runs[7]),
                per(runs[0]),
                per(runs[14]),
            );
        }
    }
}

criterion_group!(benches, upstream);
criterion_main!(benches);
