//! A real WHATWG-conformant EventSource client (npm `eventsource`) reads a resumable stream
//! through a proxy that cuts its first connection mid-stream: it must reconnect on its own with
//! `Last-Event-ID` and end with the full answer, ids consecutive, no gap and no duplicate.
//! The checks live in `tests/sdk/eventsource_resume.mjs`.

use std::time::Duration;

use sluice_tests::sdk::{node_package, require, run_checks};
use sluice_tests::Gateway;

#[test]
fn eventsource_reconnects_and_resumes_without_gap_or_duplicate() {
    let Some(()) = require(node_package("eventsource")) else {
        return;
    };
    let sluice = Gateway::builder().start();
    let base = sluice.url("/v1");
    run_checks(
        &sluice,
        "node",
        &["eventsource_resume.mjs", &base],
        Duration::from_secs(120),
        "PASS eventsource: every check passed",
    );
}
