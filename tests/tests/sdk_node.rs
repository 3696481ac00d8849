//! The official OpenAI Node SDK (npm `openai`) against the real `sluice`: streaming and
//! non-streaming text, finish reasons, usage, a slow stream with keep-alives between events,
//! and `NotFoundError` for an unknown model. The checks live in `tests/sdk/openai_node.mjs`.

use std::time::Duration;

use sluice_tests::sdk::{node_package, run_script, skip_or_fail};
use sluice_tests::start_sluice;

#[test]
fn official_node_sdk_against_sluice() {
    if let Err(why) = node_package("openai") {
        skip_or_fail(&why);
        return;
    }
    let sluice = start_sluice(&[], &[("SLUICE_KEEPALIVE_SECS", "1")]);
    let base = sluice.url("/v1");
    let out = run_script(
        "node",
        &["openai_node.mjs", &base],
        Duration::from_secs(180),
    );
    assert!(
        out.contains("PASS openai-node: every check passed"),
        "script exited 0 without its closing PASS line:\n{out}\nsluice logs:\n{}",
        sluice.logs()
    );
}
