//! Shared harness for the end-to-end tests: starts the real `sluice` binary on port 0 and
//! reads its `listening on` line ([`Sluice`], [`start_sluice`], [`start_sluice_with_config`]),
//! reads its metrics ([`metric`], [`sample`]) and signals it ([`Sluice::signal`]).
//!
//! - [`config`]: temp config files removed on drop ([`config::ConfigFile`]).
//! - [`e2e`]: requests, streaming bodies and the checks every OpenAI-format stream must pass.
//! - [`scripted`]: raw-bytes upstreams that play a fixed script.
//! - [`sdk`]: running the SDK, EventSource and browser scripts of `tests/sdk/`, or skipping.
//! - [`sse`]: the one SSE parser.
//! - [`teams`]: API keys and `[[teams]]` entries.
//! - [`wait`]: polling with a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

pub mod config;
pub mod e2e;
pub mod redis;
pub mod scripted;
pub mod sdk;
pub mod sse;
pub mod teams;
pub mod wait;

pub use config::ConfigFile;
pub use sse::parse_sse;

/// Path of the `sluice` binary built for this test run.
pub fn sluice_bin() -> PathBuf {
    // The tests package depends on the gateway, so cargo builds the binary first; it sits in the
    // same target directory as this test executable.
    let mut dir = std::env::current_exe().expect("test exe path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
    build_once(&dir);
    assert!(
        bin.exists(),
        "sluice binary not found at {}: run `cargo build` first",
        bin.display()
    );
    bin
}

/// `cargo test -p sluice-tests` builds the gateway's library but not its binary, so a binary
/// left from an earlier build could be stale: build it once per test process (a no-op when it is
/// fresh). `SLUICE_TEST_NO_BUILD=1` skips this (the binary is then used as found).
fn build_once(profile_dir: &std::path::Path) {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("SLUICE_TEST_NO_BUILD").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "sluice-gateway",
            "--bin",
            "sluice",
        ])
        .arg("--manifest-path")
        .arg(manifest);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(target) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let out = cmd.output().expect("run cargo build for the sluice binary");
        assert!(
            out.status.success(),
            "building the sluice binary failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A running `sluice` process; killed on drop. Its stderr (the logs) is collected.
pub struct Sluice {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<String>>,
    /// The working directory it runs in, removed on drop (after the process is gone).
    _dir: TempDir,
    /// The config file it was started with, if any: it lives as long as the process.
    config: Option<ConfigFile>,
}

impl Sluice {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Everything the process wrote to stderr and stdout so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file given by [`start_sluice_with_config`]; rewrite it, then
    /// `signal("HUP")`, to test a reload.
    pub fn config(&self) -> &ConfigFile {
        self.config
            .as_ref()
            .expect("this sluice was started without a config file")
    }

    /// Sends the signal `name` (`HUP`, `TERM`, ...) to the process with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}: {status}", self.pid());
    }

    /// Waits for the process to exit (after a signal), returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            // A plain thread waiting on a child process, not a runtime worker.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The fields drop next: the working directory and the config file go.
    }
}

/// Starts `sluice` with `args`, a clean environment plus `env`, in a fresh temp directory (so
/// no stray `.env` is read), on 127.0.0.1:0 unless `args` name an address.
pub fn start_sluice(args: &[&str], env: &[(&str, &str)]) -> Sluice {
    launch(Command::new(sluice_bin()), args, env)
}

/// Like [`start_sluice`], with `toml` as its config file (`--config`, before `args`); the
/// returned `Sluice` keeps the file (see [`Sluice::config`]).
pub fn start_sluice_with_config(toml: &str, args: &[&str], env: &[(&str, &str)]) -> Sluice {
    let config = ConfigFile::new(toml);
    let mut all = vec!["--config", config.arg()];
    all.extend_from_slice(args);
    let mut sluice = start_sluice(&all, env);
    sluice.config = Some(config);
    sluice
}

/// Like [`start_sluice`], with the process's open-file limit (soft and hard) set to `limit`
/// by `prlimit` (util-linux).
pub fn start_sluice_with_open_files(limit: u64, args: &[&str], env: &[(&str, &str)]) -> Sluice {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={limit}:{limit}"))
        .arg("--")
        .arg(sluice_bin());
    launch(cmd, args, env)
}

fn launch(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Sluice {
    let dir = tempfile::Builder::new()
        .prefix("sluice-test-")
        .tempdir()
        .expect("temp dir");
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let has_addr = args.contains(&"--addr");
    cmd.args(args);
    if !has_addr && !env.iter().any(|(k, _)| *k == "SLUICE_ADDR") {
        cmd.args(["--addr", "127.0.0.1:0"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sluice");
    let logs = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening on http://") {
                    if let Ok(a) = rest.trim().parse() {
                        let _ = tx.send(a);
                    }
                }
                let mut l = logs.lock().expect("logs");
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = logs.lock().expect("logs");
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "sluice did not print its listening line; logs:\n{}",
                logs.lock().expect("logs")
            );
        }
    };
    Sluice {
        addr,
        child,
        logs,
        _dir: dir,
        config: None,
    }
}

/// The value of the sample `series` (a name, with its `{labels}` if it has any) in Prometheus
/// text `metrics`; panics if there is none.
pub fn metric(metrics: &str, series: &str) -> u64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

/// The value of the sample `series` in Prometheus text `metrics`, if there is one.
pub fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One sample line of the text format: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample in Prometheus or OpenMetrics text (`#` lines skipped; label values unescaped).
pub fn samples(metrics: &str) -> Vec<Sample> {
    metrics.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        // label="value" pairs, values escaped with \\, \" and \n.
        let mut chars = inner.char_indices().peekable();
        loop {
            match chars.peek() {
                Some((i, '}')) => {
                    rest = &inner[i + 1..];
                    break;
                }
                Some((_, ',')) => {
                    chars.next();
                    continue;
                }
                None => return None,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let value = match rest.split_ascii_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples named `name` whose labels include every pair of `labels` (0 when none
/// does: a labelled series appears only once something was counted in it). For a histogram,
/// `name` is e.g. `..._seconds_count`.
pub fn metric_with(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    samples(metrics)
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum::<f64>() as u64
}

/// The observation count of histogram `name` (without `_count`), summed over the series that
/// match `labels`.
pub fn histogram_count(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metric_with(metrics, &format!("{name}_count"), labels)
}

/// Starts `sluice mock-upstream` (the demo upstream on its own) on port 0.
pub fn start_mock_upstream(env: &[(&str, &str)]) -> Sluice {
    start_sluice(&["mock-upstream", "--addr", "127.0.0.1:0"], env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_samples_and_sums_matches() {
        let text = "# TYPE sluice_http_requests counter\n\
                    sluice_http_requests_total{route=\"/v1/chat/completions\",status=\"200\",team=\"a\"} 3\n\
                    sluice_http_requests_total{route=\"/v1/chat/completions\",status=\"429\",team=\"a\"} 2\n\
                    sluice_http_requests_total{route=\"/v1/models\",status=\"200\",team=\"b,\\\"x\\\"}\"} 1\n\
                    sluice_ttft_seconds_count{model=\"m\"} 7\n\
                    sluice_ttft_seconds_sum{model=\"m\"} 0.25\n\
                    sluice_relay_bytes 12\n\
                    # EOF\n";
        let route = ("route", "/v1/chat/completions");
        assert_eq!(metric_with(text, "sluice_http_requests_total", &[route]), 5);
        assert_eq!(
            metric_with(
                text,
                "sluice_http_requests_total",
                &[route, ("status", "429")]
            ),
            2
        );
        assert_eq!(
            metric_with(text, "sluice_http_requests_total", &[("team", "b,\"x\"}")]),
            1
        );
        assert_eq!(
            metric_with(text, "sluice_http_requests_total", &[("team", "c")]),
            0
        );
        assert_eq!(
            histogram_count(text, "sluice_ttft_seconds", &[("model", "m")]),
            7
        );
        assert_eq!(metric_with(text, "sluice_relay_bytes", &[]), 12);
        assert_eq!(metric(text, "sluice_relay_bytes"), 12);
    }
}
