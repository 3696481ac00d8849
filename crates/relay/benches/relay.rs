//! Relay benchmarks: fan-out of one stream to 1 and 100 readers, append and append+encode cost
//! per event, and the memory retained per token of a finished answer.
//!
//! `cargo bench -p sluice-relay --features bench` (about a minute). Figures to read: `fanout/readers/N` throughput
//! (events x readers per second; its inverse is ns per event per reader), the printed
//! `fanout summary` lines, `append_encode/*` time per event, and the printed `memory` lines.

use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures::{FutureExt, StreamExt};
use relay::{Delta, Format, Meta, Reader, Writer};

/// Events per stream in the fan-out runs.
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

/// One writer appends `EVENTS` deltas and a `done` while `readers` tasks drain the stream with
/// `Reader::next_event()`. Returns the wall time from the first append until every reader has
/// seen the end.
fn fanout_once(rt: &tokio::runtime::Runtime, readers: usize) -> Duration {
    rt.block_on(async {
        let mut w = relay::standalone(meta(), false);
        let h = w.handle();
        let subs: Vec<_> = (0..readers)
            .map(|_| h.subscribe(0, Format::Browser).expect("subscribe"))
            .collect();
        let handles: Vec<_> = subs
            .into_iter()
            .map(|mut r| {
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while let Some(e) = r.next_event().await {
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
        let producer = tokio::spawn(async move {
            for i in 0..EVENTS as usize {
                w.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
            }
            w.record_finish(0, "stop");
            w.finish();
        });
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

/// Runs `per_event` for `iters` events on fresh streams of at most `EVENTS` events each, with
/// one reader in `format` attached from the start.
fn per_event_loop(
    iters: u64,
    format: Format,
    mut per_event: impl FnMut(&mut Writer, &mut Reader, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let batch = (iters - done).min(EVENTS);
        let mut w = relay::standalone(meta(), false);
        let mut r = w.handle().reader(format);
        let start = Instant::now();
        for i in 0..batch as usize {
            per_event(&mut w, &mut r, i);
        }
        total += start.elapsed();
        done += batch;
        drop(r);
        drop(w);
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
            per_event_loop(iters, Format::Browser, |w, _, i| {
                black_box(w.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()])));
            })
        })
    });

    // Append, then the reader encodes the new event into the bytes of its next write (what a
    // server's body does per event, without the body's keep-alive timer).
    let waker = futures::task::noop_waker();
    for (name, format) in [
        ("append+openai", Format::OpenAi),
        ("append+browser", Format::Browser),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut cx = Context::from_waker(&waker);
                per_event_loop(iters, format, |w, r, i| {
                    w.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
                    let Poll::Ready(Some(bytes)) = r.poll_chunk(&mut cx) else {
                        panic!("no bytes after an append");
                    };
                    black_box(bytes);
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
                    let mut w = relay::standalone(meta(), false);
                    let body = w
                        .handle()
                        .reader(Format::OpenAi)
                        .into_sse(Duration::from_secs(15));
                    let mut body = std::pin::pin!(body);
                    let start = Instant::now();
                    for i in 0..batch as usize {
                        w.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
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

/// Drains a reader of a finished stream without a runtime (every event is already there).
fn read_all(mut r: Reader) -> usize {
    let mut bytes = 0;
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    while let Poll::Ready(Some(b)) = r.poll_chunk(&mut cx) {
        bytes += b.len();
    }
    assert!(r.next_event().now_or_never().flatten().is_none());
    bytes
}

/// One-off: bytes retained per ~4-byte token of a finished answer, as counted by the relay's
/// memory bounds (`Handle::bytes()`) and as seen in the process's resident memory, before and
/// after readers in both formats (which encode on the fly and cache nothing).
fn memory(_c: &mut Criterion) {
    for n in [100usize, 10_000, 100_000] {
        let rss0 = rss_bytes();
        let mut w = relay::standalone(meta(), false);
        let h = w.handle();
        for i in 0..n {
            w.push_delta(Delta::text(0, TOKENS[i % TOKENS.len()]));
        }
        w.record_finish(0, "stop");
        w.finish();
        let rss1 = rss_bytes();
        let retained = h.bytes();
        let openai = read_all(h.reader(Format::OpenAi));
        let rss2 = rss_bytes();
        let browser = read_all(h.reader(Format::Browser));
        let rss3 = rss_bytes();
        assert_eq!(h.bytes(), retained, "reading holds no memory in the stream");
        println!(
            "memory: {n} deltas of ~4-byte tokens: Handle::bytes() = {retained} = {:.1} bytes/token retained \
             (unchanged after reading it as OpenAI, {:.0} bytes/token on the wire, and browser, {:.0}); \
             RSS growth {} bytes/token after appending, {} after an OpenAI reader, {} after a browser reader too",
            retained as f64 / n as f64,
            openai as f64 / n as f64,
            browser as f64 / n as f64,
            per_token(rss0, rss1, n),
            per_token(rss0, rss2, n),
            per_token(rss0, rss3, n),
        );
        drop(h);
    }
}

criterion_group!(benches, memory, fanout, append_encode);
criterion_main!(benches);
