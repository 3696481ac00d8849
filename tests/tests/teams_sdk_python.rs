//! The official OpenAI Python SDK (PyPI `openai`), left with its default retries, against a
//! team whose request limit is far below the pace it sends at: every request completes,
//! because the SDK honours `Retry-After` and a retry after it fits. The client side lives in
//! `tests/sdk/team_backoff.py`.

use std::time::Duration;

use sluice_tests::e2e::client;
use sluice_tests::sdk::{python_openai, require, run_checks};
use sluice_tests::teams::{new_key, team};
use sluice_tests::Gateway;

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_backs_off_and_completes_every_request() {
    let Some(()) = require(python_openai()) else {
        return;
    };
    let k = new_key();
    // 6 requests per 6-second window, 2 at once: after the burst, one request a second, and
    // each 429 says `Retry-After: 1`.
    let toml = "rate_limit_window_secs = 6\n\n".to_owned()
        + &team("sdk", &[&k], "requests_per_minute = 6\nrequest_burst = 2");
    let sluice = Gateway::builder()
        .config(&toml)
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let base = sluice.url("/v1");
    let requests = 8;
    // The script runs on this worker thread; the runtime's other worker serves the rest.
    tokio::task::block_in_place(|| {
        run_checks(
            &sluice,
            "python3",
            &["team_backoff.py", &base, &k.key, &requests.to_string()],
            Duration::from_secs(120),
            &format!("PASS team-backoff: {requests} requests completed"),
        )
    });
    // The SDK really was refused and backed off: every request admitted once, refusals seen.
    let usage: serde_json::Value = client()
        .get(sluice.url("/v1/usage"))
        .bearer_auth(&k.key)
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(usage["requests"], requests, "{usage}");
    assert!(
        usage["rejected"]["requests"].as_u64().unwrap_or(0) >= 3,
        "the limit was hit and backed off from: {usage}"
    );
    assert_eq!(usage["open_streams"], 0, "{usage}");
}
