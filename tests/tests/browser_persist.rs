//! The chat page keeps its conversations in the browser (`web/store.js`), in headless Chromium
//! against the real `sluice` whose one provider is a scripted upstream that streams a known
//! answer slowly: a reload mid-answer resumes the same stream from the next event and ends
//! with exactly the upstream's answer; a reload after the end shows the conversation as it
//! was; a follow-up after a reload carries the first turn; New chat then reload is empty;
//! conversations are switched and deleted from the recent list; a stream that expired while
//! the tab was closed leaves the kept text marked interrupted, with a working Retry; Stop
//! after a reload cancels the stored stream; two tabs keep two whole conversations; a
//! throwing `localStorage` leaves a working page that says once that nothing is kept.
//! The checks and the scripted upstream live in `tests/sdk/browser_persist.mjs`.
//!
//! Without Debian's `chromium` or `tests/sdk/node_modules` the test prints `SKIPPED ...`;
//! under `CI=true` (where `.ci/run` installed both) a missing piece is a failure.

use std::time::Duration;

use sluice_tests::e2e::openai_provider;
use sluice_tests::sdk::{browser_or_skip, run_checks};
use sluice_tests::Gateway;

#[test]
fn chat_page_keeps_conversations_in_headless_chromium() {
    let Some(browser) = browser_or_skip() else {
        return;
    };

    // The node script serves the upstream on this port; the gateway connects only when the
    // page asks, by which time the script listens. (Bound and released here: another process
    // taking the port in between would fail the script's listen, loudly.)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let upstream = format!("http://127.0.0.1:{port}/v1");
    // Retention 2 s: the "expired after a closed tab" check waits for the 404 that follows.
    let sluice = Gateway::builder()
        .config(&openai_provider("scripted", &upstream, &["scripted"]))
        .demo(false)
        .env(&[("SLUICE_STREAM_RETENTION_SECS", "2")])
        .start();
    let base = format!("http://{}", sluice.addr);
    let browser = browser.to_string_lossy().into_owned();
    run_checks(
        &sluice,
        "node",
        &["browser_persist.mjs", &base, &browser, &port.to_string()],
        Duration::from_secs(180),
        "PASS browser persist: every check passed",
    );
}
