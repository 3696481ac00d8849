//! The chat page (`GET /`) in headless Chromium against the real `sluice` running with
//! `[[teams]]`: the first load asks for a key (401 from `/v1/models`), the right key is kept in
//! `localStorage`, fills the model picker and streams an answer equal to the server's replay; a
//! reload reuses the stored key; a wrong key is refused with a clear message and asked again; a
//! team at its request limit sees "Rate limited: try again in N s" (N from `Retry-After`) and
//! the Retry button after N s goes through; a team whose model globs match nothing the gateway
//! serves sees the 403 as a clear message. The checks live in `tests/sdk/browser_teams.mjs`
//! (Node + playwright-core); a screenshot lands in `test-artifacts/teams.png`.
//!
//! Without Debian's `chromium` or `tests/sdk/node_modules` the test prints `SKIPPED ...`;
//! under `CI=true` (where `.ci/run` installed both) a missing piece is a failure.

use std::time::Duration;

use sluice_tests::e2e::openai_provider;
use sluice_tests::sdk::{browser_or_skip, run_checks};
use sluice_tests::teams::{new_key, team};
use sluice_tests::Gateway;

#[test]
fn chat_page_with_teams_in_headless_chromium() {
    let Some(browser) = browser_or_skip() else {
        return;
    };

    let (main, limited, narrow) = (new_key(), new_key(), new_key());
    // A second, exactly named model (never asked for: its upstream is a closed port) so that
    // /v1/models lists more than the page's one built-in option and the picker visibly fills.
    let toml = openai_provider("spare", "http://127.0.0.1:9/v1", &["gpt-spare"])
        + &team("main", &[&main], "")
        + &team(
            "limited",
            &[&limited],
            "requests_per_minute = 60\nrequest_burst = 2",
        )
        + &team("narrow", &[&narrow], "models = [\"claude-*\"]");
    // 300 tokens/s: an answer streams for about a third of a second, so three messages sent one
    // after another fit in the burst's first second and the limit is reached.
    let sluice = Gateway::builder()
        .config(&toml)
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "300")])
        .start();
    let base = format!("http://{}", sluice.addr);
    let browser = browser.to_string_lossy().into_owned();
    run_checks(
        &sluice,
        "node",
        &[
            "browser_teams.mjs",
            &base,
            &browser,
            &main.key,
            &limited.key,
            &narrow.key,
        ],
        Duration::from_secs(150),
        "PASS browser teams: every check passed",
    );
    // The page sent every key in headers only: none of them may appear in the gateway's logs.
    let logs = sluice.logs();
    for (name, key) in [
        ("main", &main.key),
        ("limited", &limited.key),
        ("narrow", &narrow.key),
    ] {
        assert!(
            !logs.contains(key.as_str()),
            "the {name} team's key appears in the sluice logs"
        );
    }
}
