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

/// Starts `sluice mock-upstream` (the demo upstream on its own) on port 0.
pub fn start_mock_upstream(env: &[(&str, &str)]) -> Sluice {
    start_sluice(&["mock-upstream", "--addr", "127.0.0.1:0"], env)
}
