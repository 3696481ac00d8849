//! The chat page's modules under node's built-in test runner: the unit tests in
//! `tests/web/*.test.mjs` -- the markdown renderer (`web/markdown.js`: block and inline parsing,
//! link safety, incremental rendering into a fake DOM, pathological inputs finishing in linear
//! time) and the conversation store (`web/store.js`: save and load, the recent list, quota
//! errors, disabled storage, two tabs writing at once).
//!
//! The files are passed by name: a bare directory (`node --test tests/web/`) is searched by
//! node 20 but taken as a module path by node 21 and later, and globs are not expanded by 20.
//! Without `node` the test prints `SKIPPED: ...`; under `CI=true` that is a failure.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_tests::sdk::{run_script, skip_or_fail};

/// `Err(why)` unless `node` runs and is recent enough for `node:test` (18 or later).
fn node_major() -> Result<u32, String> {
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("node is not available ({e}); the web unit tests need Node.js 20 or later")
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| format!("`node --version` printed {version:?}"))?;
    if major < 18 {
        return Err(format!(
            "node {version} is too old for node:test; the web unit tests need Node.js 20 or later"
        ));
    }
    Ok(major)
}

#[test]
fn markdown_unit_tests_under_node() {
    if let Err(why) = node_major() {
        skip_or_fail(&why);
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.test.mjs files in {}",
        dir.display()
    );

    let mut args = vec!["--test", "--test-reporter=tap"];
    args.extend(files.iter().map(String::as_str));
    // run_script panics, printing node's whole output, unless node exits 0.
    let out = run_script("node", &args, Duration::from_secs(300));
    let count = |key: &str| {
        out.lines()
            .filter_map(|l| l.strip_prefix(key))
            .find_map(|n| n.trim().parse::<u32>().ok())
    };
    let (pass, fail) = (count("# pass "), count("# fail "));
    assert!(
        fail == Some(0) && pass.is_some_and(|n| n > 0),
        "node exited 0 but reported pass {pass:?}, fail {fail:?}:\n{out}"
    );
}
