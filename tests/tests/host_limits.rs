//! What the machine allows: the open-file limit raised and logged at start, `accept` failing
//! for want of descriptors without taking the server down, and the relay bound's default.

use std::time::Duration;

use serde_json::json;
use sluice_tests::e2e::{client, wait_for};
use sluice_tests::{metric, start_sluice, start_sluice_with_open_files};

#[tokio::test]
async fn out_of_descriptors_backs_off_counts_and_keeps_serving() {
    // Enough descriptors for the runtime, the demo upstream and a few connections.
    let s = start_sluice_with_open_files(64, &[], &[("SLUICE_DEMO_TOKENS_PER_SEC", "0")]);
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

#[tokio::test]
async fn the_relay_bound_defaults_to_a_share_of_memory_and_is_shown() {
    let s = start_sluice(&[], &[]);
    let metrics = s.metrics().await;
    let bound = metric(&metrics, "sluice_relay_max_bytes");
    assert!((16 << 20..=256 << 20).contains(&bound), "{bound}");
    assert!(s.logs().contains("relay memory bound"), "{}", s.logs());
    let set = start_sluice(&[], &[("SLUICE_RELAY_MAX_TOTAL_BYTES", "1048576")]);
    let metrics = set.metrics().await;
    assert_eq!(metric(&metrics, "sluice_relay_max_bytes"), 1 << 20);
}
