//! Relay benchmarks: fan-out of one generation to 1 and 100 readers, append+encode cost per
//! event, and the memory held per buffered token.
//!
//! `cargo bench -p relay` (about a minute). Figures to read: `fanout/readers/N` throughput
//! (events x readers per second; its inverse is ns per event per reader), the printed
//! `fanout summary` lines, `append_encode/*` time per event, and the printed `memory` lines.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures::{FutureExt, StreamExt};
use relay::{Delta, Format, Generation, Meta};

/// Events per generation in the fan-out runs.
const EVENTS: u64 = 10_000;

/// Typical ~4-byte tokens.
const TOKENS: [&str; 8] = [" the", " cat", " sat", " on", " a", " mat", ".", " And"];

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-0123456789abcdef".into(),
        model: "gpt-4o-mini-2024-07-18".into(),
        created: 1_700_000_000,
        system_fingerprint: Some("fp_0123456789".into()),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One producer appends `EVENTS` deltas and a `done` while `readers` tasks drain the
/// generation with `Reader::next()`. Returns the wall time from the first append until every
/// reader has seen the end.
fn fanout_once(rt: &tokio::runtime::Runtime, readers: usize) -> Duration {
    rt.block_on(async {
        let g = Generation::standalone(meta(), false);
        let subs: Vec<_> = (0..readers)
            .map(|_| g.subscribe(0).expect("subscribe"))
            .collect();
        let handles: Vec<_> = subs
            .into_iter()
            .map(|mut r| {
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while let Some(e) = r.next().await {
                        black_box(&e);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // Let the readers park on the empty log first, as on a live stream.
        tokio::task::yield_now().await;
        let start = Instant::now();
        let producer = {
            let g = g.clone();
            tokio::spawn(async move {
                for i in 0..EVENTS as usize {
                    g.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
                }
                g.record_finish(0, "stop");
                g.finish();
            })
        };
        producer.await.expect("producer");
        for h in handles {
            assert_eq!(h.await.expect("reader"), EVENTS + 1);
        }
        start.elapsed()
    })
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for readers in [1usize, 100] {
        group.throughput(Throughput::Elements(EVENTS * readers as u64));
        group.bench_with_input(BenchmarkId::new("readers", readers), &readers, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| fanout_once(&rt, n)).sum())
        });
    }
    group.finish();

    // The headline figure, measured directly: ns per event per reader (median of 9 runs).
    for readers in [1usize, 100] {
        let mut runs: Vec<Duration> = (0..9).map(|_| fanout_once(&rt, readers)).collect();
        runs.sort();
        let per = |d: Duration| d.as_nanos() as f64 / (EVENTS as f64 * readers as f64);
        println!(
            "fanout summary: {readers:>3} reader(s), {EVENTS} events: median {:.1} ns/event/reader \
             (min {:.1}, max {:.1}); median total {:.2} ms",
            per(runs[4]),
            per(runs[0]),
            per(runs[8]),
            runs[4].as_secs_f64() * 1e3
        );
    }
}

/// Runs `per_event` for `iters` events on fresh generations of at most `EVENTS` events each.
fn per_event_loop(
    iters: u64,
    mut per_event: impl FnMut(&Arc<Generation>, &mut relay::Reader, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let batch = (iters - done).min(EVENTS);
        let g = Generation::standalone(meta(), false);
        let mut r = g.subscribe(0).expect("subscribe");
        let start = Instant::now();
        for i in 0..batch as usize {
            per_event(&g, &mut r, i);
        }
        total += start.elapsed();
        done += batch;
        drop(r);
        drop(g);
    }
    total
}

fn append_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_encode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));

    group.bench_function("append", |b| {
        b.iter_custom(|iters| {
            per_event_loop(iters, |g, _, i| {
                black_box(g.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()])));
            })
        })
    });

    for (name, format) in [
        ("append+openai", Format::OpenAi),
        ("append+browser", Format::Browser),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let meta = meta();
                per_event_loop(iters, |g, r, i| {
                    g.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
                    let e = r.next().now_or_never().flatten().expect("event");
                    black_box(g.encoded(&e, format, &meta));
                })
            })
        });
    }

    // The whole reader path a server runs per event: the SSE body stream (with its keep-alive
    // timer) yielding OpenAI bytes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    group.bench_function("append+openai_into_sse", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let batch = (iters - done).min(EVENTS);
                    let g = Generation::standalone(meta(), false);
                    let body = g
                        .subscribe(0)
                        .expect("subscribe")
                        .into_sse(Format::OpenAi, Duration::from_secs(15));
                    let mut body = std::pin::pin!(body);
                    let start = Instant::now();
                    for i in 0..batch as usize {
                        g.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
                        black_box(body.next().await);
                    }
                    total += start.elapsed();
                    done += batch;
                }
                total
            })
        })
    });
    group.finish();
}

/// Resident set size of this process, from /proc (Linux); None elsewhere.
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn per_token(before: Option<usize>, after: Option<usize>, n: usize) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / n as f64),
        _ => "n/a".into(),
    }
}

/// One-off: bytes held per buffered ~4-byte token, as counted by the relay's memory bounds
/// and as seen in the process's resident memory (before and after readers cached encodings).
fn memory(_c: &mut Criterion) {
    for n in [10_000usize, 100_000] {
        let rss0 = rss_bytes();
        let g = Generation::standalone(meta(), false);
        for i in 0..n {
            g.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
        }
        g.record_finish(0, "stop");
        g.finish();
        let rss1 = rss_bytes();
        let counted = g.bytes();
        let mut r = g.subscribe(0).expect("subscribe");
        let meta = g.meta();
        while let Some(e) = r.next().now_or_never().flatten() {
            g.encoded(&e, Format::OpenAi, &meta);
        }
        drop(r);
        let rss2 = rss_bytes();
        let mut r = g.subscribe(0).expect("subscribe");
        while let Some(e) = r.next().now_or_never().flatten() {
            g.encoded(&e, Format::Browser, &meta);
        }
        drop(r);
        let rss3 = rss_bytes();
        let with_encodings = g.bytes();
        assert!(
            with_encodings > counted,
            "cached encodings count against the bounds"
        );
        println!(
            "memory: {n} deltas of ~4-byte tokens: Generation::bytes() = {counted} = {:.1} bytes/token before any reader, \
             {:.1} bytes/token with both encodings cached; \
             RSS growth {} bytes/token after appending, {} after an OpenAI reader, {} after a browser reader too",
            counted as f64 / n as f64,
            with_encodings as f64 / n as f64,
            per_token(rss0, rss1, n),
            per_token(rss0, rss2, n),
            per_token(rss0, rss3, n),
        );
        drop(g);
    }
}

criterion_group!(benches, memory, fanout, append_encode);
criterion_main!(benches);
