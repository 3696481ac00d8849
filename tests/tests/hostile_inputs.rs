//! Numbers a client or an upstream controls (counts, sizes, durations) never make Sluice
//! allocate or wait without a bound: the demo model's `mock` knobs are clamped and its answer is
//! produced lazily, so one request cannot stop the process.

use std::time::Duration;

use serde_json::json;
use sluice_tests::e2e::{chat, check_openai_wire, chunks, client_with_timeout, post_chat};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_huge_demo_token_count_is_clamped_and_the_process_keeps_serving() {
    let sluice = sluice_tests::Gateway::builder().start();
    let huge = json!({"mock": {"tokens": 10_000_000_000_000u64, "delay_ms": 0}});
    // Non-streaming: before the fix the demo allocated 10^13 pieces up front and the process
    // aborted.
    let a = post_chat(&sluice, &chat("sluice-demo", false, huge.clone()), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.json()["usage"]["completion_tokens"],
        mock_upstream::MAX_TOKENS,
        "the count is clamped to the documented maximum"
    );
    // Streaming, cut by max_tokens (which the demo applied only after building every piece):
    // a short stream keeps the test quick on a debug build.
    let mut body = chat("sluice-demo", true, huge);
    body["max_tokens"] = json!(50);
    let a = post_chat(&sluice, &body, LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = check_openai_wire(&a.body);
    let content = chunks(&events)
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(content, 50);
    let health = client_with_timeout(Duration::from_secs(5))
        .get(sluice.url("/healthz"))
        .send()
        .await
        .expect("the process still serves");
    assert_eq!(health.status(), 200);
}
