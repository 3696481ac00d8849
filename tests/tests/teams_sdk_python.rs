//! The official OpenAI Python SDK (PyPI `openai`), left with its default retries, against a
//! team whose request limit is far below the pace it sends at: every request completes,
//! because the SDK honours `Retry-After` and a retry after it fits. The client side lives in
//! `tests/sdk/team_backoff.py`.

use std::time::Duration;

use sluice_tests::e2e::config_file;
use sluice_tests::sdk::{python_openai, run_script, skip_or_fail};
use sluice_tests::start_sluice;

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_backs_off_and_completes_every_request() {
    if let Err(why) = python_openai() {
        skip_or_fail(&why);
        return;
    }
    let (key, hash) = sluice_gateway::keys::generate();
    // 6 requests per 6-second window, 2 at once: after the burst, one request a second, and
    // each 429 says `Retry-After: 1`.
    let path = config_file(&format!(
        "rate_limit_window_secs = 6\n\n[[teams]]\nname = \"sdk\"\napi_keys_sha256 = [{hash:?}]\n\
         requests_per_minute = 6\nrequest_burst = 2\n"
    ));
    let path = path.to_str().expect("utf-8 path").to_owned();
    let sluice = start_sluice(&["--config", &path], &[("SLUICE_DEMO_TOKENS_PER_SEC", "0")]);
    let base = sluice.url("/v1");
    let requests = 8;
    let script_key = key.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_script(
            "python3",
            &["team_backoff.py", &base, &script_key, &requests.to_string()],
            Duration::from_secs(120),
        )
    })
    .await
    .expect("script task");
    assert!(
        out.contains(&format!("PASS team-backoff: {requests} requests completed")),
        "no closing PASS line:\n{out}\nsluice logs:\n{}",
        sluice.logs()
    );
    // The SDK really was refused and backed off: every request admitted once, refusals seen.
    let usage: serde_json::Value = reqwest::Client::new()
        .get(sluice.url("/v1/usage"))
        .bearer_auth(&key)
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
