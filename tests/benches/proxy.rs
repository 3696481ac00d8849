//! Proxy overhead, measured against a direct connection in the same run.
//!
//! Starts the demo upstream (at full speed) and a Sluice in front of it, in this process on
//! loopback, then times the same requests both ways: time to first token, a long stream's total
//! time, and many parallel streams. Prints medians and the ratio Sluice / direct.
//! Run: `cargo bench -p sluice-tests --bench proxy`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_gateway::config::{FileConfig, Flags, ProviderConfig, Settings, Vars};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The allocator the `sluice` binary uses, so the in-process gateway is measured as it ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TTFB_RUNS: usize = 200;
const LONG_TOKENS: usize = 5000;
const LONG_RUNS: usize = 20;
const PARALLEL: usize = 64;
const PARALLEL_TOKENS: usize = 200;

fn body(tokens: usize) -> String {
    format!(
        r#"{{"model":"sluice-demo","stream":true,"messages":[{{"role":"user","content":"bench"}}],"mock":{{"tokens":{tokens},"delay_ms":0}}}}"#
    )
}

/// Sends one streaming request; returns (time to first content byte, total time, bytes).
async fn one(client: &reqwest::Client, url: &str, tokens: usize) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body(tokens))
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success(), "status {}", resp.status());
    let mut s = resp.bytes_stream();
    let mut first = None;
    let mut n = 0;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.expect("chunk");
        if first.is_none() && chunk.windows(9).any(|w| w == b"\"content\"") {
            first = Some(start.elapsed());
        }
        n += chunk.len();
    }
    (first.unwrap_or_else(|| start.elapsed()), start.elapsed(), n)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stop = CancellationToken::new();
    let up = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let up_addr = up.local_addr().expect("addr");
    tokio::spawn(mock_upstream::serve(
        up,
        mock_upstream::MockConfig {
            tokens_per_sec: 0.0,
        },
        stop.clone().cancelled_owned(),
    ));
    let file = FileConfig {
        demo: Some(false),
        providers: vec![ProviderConfig {
            name: "bench".into(),
            kind: "openai".into(),
            base_url: Some(format!("http://{up_addr}/v1")),
            api_key_env: None,
            models: vec!["*".into()],
        }],
        ..FileConfig::default()
    };
    let settings = Settings::resolve(file, &Flags::default(), &Vars::new()).expect("settings");
    let state = sluice_gateway::build_state(settings, stop.clone())
        .await
        .expect("state");
    let gw = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let gw_addr = gw.local_addr().expect("addr");
    tokio::spawn(sluice_gateway::serve(
        gw,
        state,
        stop.clone().cancelled_owned(),
    ));

    let direct = format!("http://{up_addr}/v1/chat/completions");
    let via = format!("http://{gw_addr}/v1/chat/completions");
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    // Warm up both paths (connection pools, allocators).
    for _ in 0..20 {
        one(&client, &direct, 10).await;
        one(&client, &via, 10).await;
    }

    // `SLUICE_BENCH_PROFILE=1`: only the parallel streams through Sluice, many times over (for a
    // profiler to sample).
    if std::env::var_os("SLUICE_BENCH_PROFILE").is_some() {
        for _ in 0..100 {
            let tasks: Vec<_> = (0..PARALLEL)
                .map(|_| {
                    let client = client.clone();
                    let url = via.clone();
                    tokio::spawn(async move { one(&client, &url, PARALLEL_TOKENS).await })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
        }
        stop.cancel();
        return;
    }

    println!("sluice proxy benchmark (2 worker threads, loopback, demo upstream at full speed)");
    let (mut d_ttfb, mut v_ttfb) = (Vec::new(), Vec::new());
    for _ in 0..TTFB_RUNS {
        d_ttfb.push(one(&client, &direct, 10).await.0);
        v_ttfb.push(one(&client, &via, 10).await.0);
    }
    let (dm, vm) = (median(d_ttfb.clone()), median(v_ttfb.clone()));
    println!(
        "time to first token, median of {TTFB_RUNS}: direct {:>8.1?}  sluice {:>8.1?}  added {:>8.1?}  (p99 direct {:.1?}, sluice {:.1?})",
        dm,
        vm,
        vm.saturating_sub(dm),
        p99(d_ttfb),
        p99(v_ttfb)
    );

    let (mut d_long, mut v_long) = (Vec::new(), Vec::new());
    let mut bytes = (0, 0);
    for _ in 0..LONG_RUNS {
        let d = one(&client, &direct, LONG_TOKENS).await;
        let v = one(&client, &via, LONG_TOKENS).await;
        d_long.push(d.1);
        v_long.push(v.1);
        bytes = (d.2, v.2);
    }
    let (dl, vl) = (median(d_long), median(v_long));
    println!(
        "{LONG_TOKENS}-token stream, median of {LONG_RUNS}: direct {:>8.1?}  sluice {:>8.1?}  ratio {:.2}  ({:.0} vs {:.0} tokens/s; {} vs {} bytes)",
        dl,
        vl,
        vl.as_secs_f64() / dl.as_secs_f64(),
        LONG_TOKENS as f64 / dl.as_secs_f64(),
        LONG_TOKENS as f64 / vl.as_secs_f64(),
        bytes.0,
        bytes.1
    );

    for (name, url) in [("direct", &direct), ("sluice", &via)] {
        let start = Instant::now();
        let tasks: Vec<_> = (0..PARALLEL)
            .map(|_| {
                let client = client.clone();
                let url = url.clone();
                tokio::spawn(async move { one(&client, &url, PARALLEL_TOKENS).await })
            })
            .collect();
        let mut ttfbs = Vec::new();
        for t in tasks {
            ttfbs.push(t.await.expect("task").0);
        }
        let total = start.elapsed();
        println!(
            "{PARALLEL} parallel {PARALLEL_TOKENS}-token streams, {name:>6}: all done in {:>8.1?} ({:.0} tokens/s), median first token {:.1?}",
            total,
            (PARALLEL * PARALLEL_TOKENS) as f64 / total.as_secs_f64(),
            median(ttfbs)
        );
    }
    stop.cancel();
}
