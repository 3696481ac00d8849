//! What the machine allows (the open-file limit is the process's own, so those tests run the
//! binary under `prlimit`): the open-file limit raised and logged at start, `accept` failing
//! for want of descriptors without taking the server down, and the relay bound's default.

use std::time::Duration;

use serde_json::json;
use sluice_tests::e2e::{client, wait_for};
use sluice_tests::metric;
use sluice_tests::Gateway;

#[tokio::test]
async fn out_of_descriptors_backs_off_counts_and_keeps_serving() {
    // Enough descriptors for the runtime, the demo upstream and a few connections; a
    // connection cap set far above them, so that `accept` itself runs out (the default caps
    // stop short of that: see the next test).
    let s = crate::binary()
        .open_files(64)
        .env([
            ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ("SLUICE_MAX_CONNECTIONS", "1000"),
        ])
        .start();
    assert!(
        s.logs().contains("open-file limit"),
        "the limits are logged at start:\n{}",
        s.logs()
    );
    // Idle connections until the server can accept no more.
    let mut idle = Vec::new();
    for _ in 0..120 {
        match tokio::net::TcpStream::connect(s.addr).await {
            Ok(c) => idle.push(c),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(idle);
    // Once descriptors are free again, it serves as before and says what happened.
    let client = client();
    let (c, url) = (&client, s.url("/metrics"));
    let served = wait_for(Duration::from_secs(4), || {
        let url = url.clone();
        async move { c.get(url).send().await.ok() }
    })
    .await;
    let metrics = served
        .expect("the server serves again")
        .text()
        .await
        .expect("metrics");
    assert!(
        metric(&metrics, "sluice_accept_errors_total") > 0,
        "{metrics}"
    );
    let resp = client
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"model": "sluice-demo", "stream": true,
                      "messages": [{"role": "user", "content": "still here?"}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .expect("body")
        .ends_with("data: [DONE]\n\n"));
    assert!(s.logs().contains("accept failed"), "{}", s.logs());
}

/// With the default caps, a flood of streams against a low descriptor limit meets the stream
/// cap (503 `too_many_streams`) or the connection cap (closed at once), never "Too many open
/// files", and a health check still gets through while the streams run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_caps_run_out_before_the_descriptors_do() {
    // The demo on: three descriptors a stream. Slow enough that every stream is still running
    // when the last one is asked for.
    let s = crate::binary()
        .open_files(64)
        .env([("SLUICE_DEMO_TOKENS_PER_SEC", "5")])
        .start();
    let body = json!({"model": "sluice-demo", "stream": true, "max_tokens": 400,
                      "messages": [{"role": "user", "content": "fill the house"}]});
    // One client per stream (its own connection each), held open while the others start.
    let mut running = Vec::new();
    let (mut ok, mut too_many, mut refused) = (0, 0, 0);
    for _ in 0..40 {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        match c
            .post(s.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                ok += 1;
                running.push((c, r));
            }
            Ok(r) => {
                assert_eq!(r.status(), 503, "{:?}", r.text().await);
                let v: serde_json::Value = r.json().await.expect("json error");
                assert_eq!(v["error"]["code"], "too_many_streams", "{v}");
                too_many += 1;
            }
            // The connection cap: closed at once.
            Err(_) => refused += 1,
        }
    }
    assert!(ok >= 1, "ok={ok} too_many={too_many} refused={refused}");
    assert!(too_many + refused > 0, "ok={ok}: no cap met");
    // The house is full, and a health check is still answered.
    let health = reqwest::Client::new()
        .get(s.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("healthz while full");
    assert_eq!(health.status(), 200);
    // The running streams are whole: the first of them reads on.
    let (_c, first) = running.swap_remove(0);
    let mut first = sluice_tests::e2e::StreamReader::new(first);
    first
        .read_until(Duration::from_secs(10), |b| {
            b.matches("data: {").count() >= 3
        })
        .await;
    assert!(!first.body.contains("\"error\""), "{}", first.body);
    drop(running);
    let logs = s.logs();
    assert!(!logs.contains("Too many open files"), "{logs}");
    assert!(!logs.contains("accept failed"), "{logs}");
}

#[tokio::test]
async fn the_relay_bound_defaults_to_a_share_of_memory_and_is_shown() {
    let s = Gateway::builder().start();
    let metrics = s.metrics().await;
    let bound = metric(&metrics, "sluice_relay_max_bytes");
    assert!((16 << 20..=256 << 20).contains(&bound), "{bound}");
    assert!(s.logs().contains("relay memory bound"), "{}", s.logs());
    let set = Gateway::builder()
        .env(&[("SLUICE_RELAY_MAX_TOTAL_BYTES", "1048576")])
        .start();
    let metrics = set.metrics().await;
    assert_eq!(metric(&metrics, "sluice_relay_max_bytes"), 1 << 20);
}
