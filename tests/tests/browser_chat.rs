//! The chat page (`GET /`) in headless Chromium against the real `sluice` and its demo model:
//! the answer types out over time and ends equal to the server's replay; an events connection
//! cut mid-answer (by a TCP proxy) shows "reconnecting" and resumes with no gap or duplicate;
//! the stop button ends the answer with a "stopped" mark (server: `done` / `cancelled`); markup
//! in the model's output is shown as text; a screenshot lands in `test-artifacts/chat.png`.
//! The checks live in `tests/sdk/browser_chat.mjs` (Node + playwright-core).
//!
//! Without Debian's `chromium` or `tests/sdk/node_modules` the test prints `SKIPPED ...`;
//! under `CI=true` (where `.ci/run` installed both) a missing piece is a failure.

use std::time::Duration;

use sluice_tests::sdk::{browser_or_skip, run_checks};
use sluice_tests::Gateway;

#[test]
fn chat_page_in_headless_chromium() {
    let Some(browser) = browser_or_skip() else {
        return;
    };

    // 30 tokens/s: an answer takes about 4 s, slow enough to sample it growing.
    let sluice = Gateway::builder()
        .env(&[("SLUICE_DEMO_TOKENS_PER_SEC", "30")])
        .start();
    let base = format!("http://{}", sluice.addr);
    let browser = browser.to_string_lossy().into_owned();
    run_checks(
        &sluice,
        "node",
        &["browser_chat.mjs", &base, &browser],
        Duration::from_secs(150),
        "PASS browser chat: every check passed",
    );
}
