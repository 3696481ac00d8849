//! The chat page (`GET /`) in headless Chromium against the real `sluice` and its demo model:
//! the answer types out over time and ends equal to the server's replay; an events connection
//! cut mid-answer (by a TCP proxy) shows "reconnecting" and resumes with no gap or duplicate;
//! the stop button ends the answer with a "stopped" mark (server: `done` / `cancelled`); markup
//! in the model's output is shown as text; a screenshot lands in `test-artifacts/chat.png`.
//! The checks live in `tests/sdk/browser_chat.mjs` (Node + playwright-core).
//!
//! Without Debian's `chromium` or `tests/sdk/node_modules` the test prints `SKIPPED: ...`;
//! under `CI=true` (where `.ci/run` installed both) a missing piece is a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::sdk::{in_ci, node_package, run_script};
use sluice_tests::start_sluice;

const SKIP: &str = "headless Chromium tests need Debian's chromium and tests/sdk node_modules \
                    (bash .ci/run installs both)";

/// `/usr/bin/chromium`, else `chromium` found on `PATH`.
fn chromium() -> Option<PathBuf> {
    let debian = Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

#[test]
fn chat_page_in_headless_chromium() {
    let browser = chromium();
    let node = node_package("playwright-core");
    let (browser, missing) = match (browser, node) {
        (Some(b), Ok(())) => (b, None),
        (None, Ok(())) => (
            PathBuf::new(),
            Some("chromium (/usr/bin/chromium) not found".into()),
        ),
        (Some(b), Err(why)) => (b, Some(why)),
        (None, Err(why)) => (PathBuf::new(), Some(format!("chromium not found; {why}"))),
    };
    if let Some(missing) = missing {
        if in_ci() {
            panic!("{SKIP}: {missing} (CI=true: a missing browser is a failure, not a skip)");
        }
        println!("SKIPPED: {SKIP}");
        println!("  missing: {missing}");
        return;
    }

    // 30 tokens/s: an answer takes about 4 s, slow enough to sample it growing.
    let sluice = start_sluice(&[], &[("SLUICE_DEMO_TOKENS_PER_SEC", "30")]);
    let base = format!("http://{}", sluice.addr);
    let browser = browser.to_string_lossy().into_owned();
    let run = std::panic::catch_unwind(|| {
        run_script(
            "node",
            &["browser_chat.mjs", &base, &browser],
            Duration::from_secs(150),
        )
    });
    let out = match run {
        Ok(out) => out,
        Err(panic) => {
            println!("--- sluice logs ---\n{}", sluice.logs());
            std::panic::resume_unwind(panic);
        }
    };
    assert!(
        out.contains("PASS browser chat: every check passed"),
        "script exited 0 without its closing PASS line:\n{out}\nsluice logs:\n{}",
        sluice.logs()
    );
}
