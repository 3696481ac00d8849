//! Smoke test: `sluice-bench suite --quick --scenarios throughput,retention` against the debug
//! `sluice` binary exits 0, prints a ratio line and a non-zero bytes-per-stream figure.
//! Nothing is timed: the figures of a debug build on a shared machine mean nothing, only
//! that the whole path (spawning, auth, streaming, /proc, /metrics, reports) works.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn sluice_debug() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/sluice")
}

#[test]
fn quick_suite_prints_ratios_and_bytes_per_stream() {
    let sluice = sluice_debug();
    if !sluice.is_file() {
        let msg = format!("skipped: no {} (run cargo build first)", sluice.display());
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        println!("{msg}");
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["suite", "--quick", "--scenarios", "throughput,retention"])
        .arg("--sluice")
        .arg(&sluice)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run sluice-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice-bench failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ratio sluice/direct throughput C=")),
        "no ratio line in:\n{stdout}"
    );
    let bytes: f64 = stdout
        .lines()
        .find_map(|l| l.split_once("bytes per retained stream: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no bytes-per-stream figure in:\n{stdout}"));
    assert!(bytes > 0.0, "bytes per retained stream is {bytes}");
    assert!(out.path().join("summary.json").is_file());
    // Informational: the suite is meant to stay well inside the smoke budget.
    let took = start.elapsed();
    if took > Duration::from_secs(40) {
        eprintln!("note: the quick suite took {took:?}");
    }
}
