//! A real WHATWG-conformant EventSource client (npm `eventsource`) reads a resumable stream
//! through a proxy that cuts its first connection mid-stream: it must reconnect on its own with
//! `Last-Event-ID` and end with the full answer, ids consecutive, no gap and no duplicate.
//! The checks live in `tests/sdk/eventsource_resume.mjs`.

use std::time::Duration;

use sluice_tests::sdk::{node_package, run_script, skip_or_fail};
use sluice_tests::start_sluice;

#[test]
fn eventsource_reconnects_and_resumes_without_gap_or_duplicate() {
    if let Err(why) = node_package("eventsource") {
        skip_or_fail(&why);
        return;
    }
    let sluice = start_sluice(&[], &[]);
    let base = sluice.url("/v1");
    let out = run_script(
        "node",
        &["eventsource_resume.mjs", &base],
        Duration::from_secs(120),
    );
    assert!(
        out.contains("PASS eventsource: every check passed"),
        "script exited 0 without its closing PASS line:\n{out}\nsluice logs:\n{}",
        sluice.logs()
    );
}
