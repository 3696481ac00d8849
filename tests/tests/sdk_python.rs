//! The official OpenAI Python SDK (PyPI `openai`) against the real `sluice`: streaming and
//! non-streaming text, finish reasons, usage, a slow stream whose silences outlast the
//! keep-alive interval (the SDK dies on a stray blank line once it has seen an `id:`), and
//! `NotFoundError` for an unknown model. The checks live in `tests/sdk/openai_python.py`.

use std::time::Duration;

use sluice_tests::sdk::{python_openai, require, run_checks};
use sluice_tests::Gateway;

#[test]
fn official_python_sdk_against_sluice() {
    let Some(()) = require(python_openai()) else {
        return;
    };
    // A 1 s keep-alive interval puts keep-alive comments into the slow stream's 2.5 s silences.
    let sluice = Gateway::builder()
        .env(&[("SLUICE_KEEPALIVE_SECS", "1")])
        .start();
    let base = sluice.url("/v1");
    run_checks(
        &sluice,
        "python3",
        &["openai_python.py", &base],
        Duration::from_secs(180),
        "PASS openai-python: every check passed",
    );
}
