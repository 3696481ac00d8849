//! The official OpenAI Node SDK (npm `openai`) against the real `sluice`: streaming and
//! non-streaming text, finish reasons, usage, a slow stream with keep-alives between events,
//! and `NotFoundError` for an unknown model. The checks live in `tests/sdk/openai_node.mjs`.

use std::time::Duration;

use sluice_tests::sdk::{node_package, require, run_checks};
use sluice_tests::Gateway;

#[test]
fn official_node_sdk_against_sluice() {
    let Some(()) = require(node_package("openai")) else {
        return;
    };
    let sluice = Gateway::builder()
        .env(&[("SLUICE_KEEPALIVE_SECS", "1")])
        .start();
    let base = sluice.url("/v1");
    run_checks(
        &sluice,
        "node",
        &["openai_node.mjs", &base],
        Duration::from_secs(180),
        "PASS openai-node: every check passed",
    );
}
