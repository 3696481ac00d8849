//! The one way the tests start a gateway: [`Gateway::builder`].
//!
//! By default the gateway runs **in this process**, on a multi-thread runtime of its own on a
//! thread of its own, so that it behaves like a separate process whatever the test's runtime
//! (current-thread, multi-thread, blocked): it loads its settings from the test's variables
//! only (never the process environment, never a `.env`), logs the binary's start-up lines
//! through the binary's subscriber into its own buffer ([`Sluice::logs`]), and serves on
//! 127.0.0.1:0. Dropping the handle stops it the way killing the binary did: every task is
//! dropped, nothing drains.
//!
//! [`Builder::binary`] starts the `sluice` executable instead, for the tests whose point is the
//! process: subcommands, signals and exit codes, the open-file limit ([`Builder::open_files`]),
//! its memory. Those tests live in `crates/gateway/tests`, where cargo builds the binary
//! (`env!("CARGO_BIN_EXE_sluice")`) in the same build as the test.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use crate::config::ConfigFile;

/// How long a gateway may take to listen.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Starts gateways: see [`Gateway::builder`].
pub struct Gateway;

impl Gateway {
    /// A gateway with no config file, the demo model on (the binary's default), `RUST_LOG=info`
    /// and nothing else in its environment, on 127.0.0.1:0, in this process.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// What to start; [`Builder::start`] starts it.
#[derive(Default)]
#[must_use = "nothing starts until .start()"]
pub struct Builder {
    config: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    demo: Option<bool>,
    binary: Option<PathBuf>,
    open_files: Option<u64>,
}

/// A `(name, value)` pair for [`Builder::env`], owned or borrowed.
pub trait EnvPair {
    fn pair(self) -> (String, String);
}

impl<K: AsRef<str>, V: AsRef<str>> EnvPair for (K, V) {
    fn pair(self) -> (String, String) {
        (self.0.as_ref().to_owned(), self.1.as_ref().to_owned())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> EnvPair for &(K, V) {
    fn pair(self) -> (String, String) {
        (self.0.as_ref().to_owned(), self.1.as_ref().to_owned())
    }
}

impl Builder {
    /// `toml` as its config file (`--config`); the handle keeps the file ([`Sluice::config`]).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Adds environment variables (later ones win).
    pub fn env<I>(mut self, vars: I) -> Self
    where
        I: IntoIterator,
        I::Item: EnvPair,
    {
        self.env.extend(vars.into_iter().map(EnvPair::pair));
        self
    }

    /// Command-line arguments after `--config`. In process, only `--addr ADDR` is understood
    /// (the serve command's one other flag); a subcommand needs [`Builder::binary`].
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The built-in demo model on or off (`SLUICE_DEMO`), unless [`Builder::env`] sets
    /// `SLUICE_DEMO` itself, which wins.
    pub fn demo(mut self, on: bool) -> Self {
        self.demo = Some(on);
        self
    }

    /// One OpenAI-kind provider, `up`, serving every model from the scripted upstream, and the
    /// demo off: the usual set-up of a proxy-path test.
    pub fn upstream(self, up: &crate::scripted::ScriptedUpstream) -> Self {
        self.config(&crate::e2e::openai_provider("up", &up.base_url(), &["*"]))
            .demo(false)
    }

    /// Runs the `sluice` executable at `path` instead of serving in this process.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The process's open-file limit, soft and hard, set by `prlimit` (util-linux). Needs
    /// [`Builder::binary`]: a limit is the process's own.
    pub fn open_files(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Starts it and returns once it listens; panics (with its logs) if it does not.
    pub fn start(self) -> Sluice {
        let config = self.config.as_deref().map(ConfigFile::new);
        let mut args = Vec::new();
        if let Some(c) = &config {
            args.extend(["--config".to_owned(), c.arg().to_owned()]);
        }
        args.extend(self.args);
        let mut env = vec![("RUST_LOG".to_owned(), "info".to_owned())];
        if let Some(on) = self.demo {
            if !self.env.iter().any(|(k, _)| k == "SLUICE_DEMO") {
                env.push(("SLUICE_DEMO".into(), if on { "on" } else { "off" }.into()));
            }
        }
        env.extend(self.env);
        if !args.iter().any(|a| a == "--addr") && !env.iter().any(|(k, _)| k == "SLUICE_ADDR") {
            args.extend(["--addr".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let mut sluice = match self.binary {
            Some(bin) => launch(bin, self.open_files, &args, &env),
            None => {
                assert!(
                    self.open_files.is_none(),
                    "an open-file limit needs the binary (Builder::binary)"
                );
                in_process(&args, env.into_iter().collect())
            }
        };
        sluice.config = config;
        sluice
    }
}

/// A running gateway; stopped on drop (as abruptly as a killed process).
pub struct Sluice {
    pub addr: SocketAddr,
    run: Run,
    logs: Logs,
    /// The config file it was started with, if any: it lives as long as the gateway.
    config: Option<ConfigFile>,
}

enum Run {
    InProcess(InProcess),
    Process {
        child: Mutex<Child>,
        /// The working directory it runs in (so no stray `.env` is read), removed on drop.
        _dir: TempDir,
    },
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

    /// Everything it logged so far, after its `listening on` line (the binary's stdout and
    /// stderr; in process, the same lines).
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// The config file given by [`Builder::config`]; rewrite it, then `signal("HUP")` (a
    /// binary), to test a reload.
    pub fn config(&self) -> &ConfigFile {
        self.config
            .as_ref()
            .expect("this sluice was started without a config file")
    }

    /// The process id of a [`Builder::binary`] gateway.
    pub fn pid(&self) -> u32 {
        match &self.run {
            Run::Process { child, .. } => child.lock().expect("child").id(),
            Run::InProcess(_) => panic!("an in-process gateway has no process of its own"),
        }
    }

    /// Sends the signal `name` (`HUP`, `TERM`, ...) to a [`Builder::binary`] gateway.
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Starts a clean shutdown, as SIGTERM does: drains (running streams get the grace
    /// period), then stops. In process, the same shutdown the binary runs on SIGTERM.
    pub fn terminate(&self) {
        match &self.run {
            Run::Process { .. } => self.signal("TERM"),
            Run::InProcess(p) => p.stop(Stop::Drain),
        }
    }

    /// Ends it at once, as SIGKILL does: nothing drains, no lease is given back. In process,
    /// its runtime is shut down with every task in it; their sockets close as a dead process's
    /// would, and no further Redis command is sent.
    pub fn kill(&self) {
        match &self.run {
            Run::Process { child, .. } => {
                let mut child = child.lock().expect("child");
                let _ = child.kill();
                let _ = child.wait();
            }
            Run::InProcess(p) => p.kill(),
        }
    }

    /// Waits for a [`Builder::binary`] gateway to exit (after a signal), returning its exit
    /// code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let Run::Process { child, .. } = &mut self.run else {
            panic!("wait_exit is for a binary gateway");
        };
        let child = child.get_mut().expect("child");
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
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
        // Gone before its working directory and config file (the fields, dropped next).
        self.kill();
    }
}

/// A gateway's log: every line, appended whole.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }

    fn line(&self, line: &str) {
        let mut l = self.0.lock().expect("logs");
        l.extend_from_slice(line.as_bytes());
        l.push(b'\n');
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

// --- in process --------------------------------------------------------------------------------

enum Stop {
    /// Drain, then stop: SIGTERM.
    Drain,
    /// Drop everything now: SIGKILL (also when the handle is dropped).
    Kill,
}

struct InProcess {
    stop: Mutex<Option<tokio::sync::oneshot::Sender<Stop>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl InProcess {
    fn stop(&self, how: Stop) {
        if let Some(tx) = self.stop.lock().expect("stop").take() {
            let _ = tx.send(how);
        }
    }

    fn kill(&self) {
        self.stop(Stop::Kill);
        let thread = self.thread.lock().expect("thread").take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

thread_local! {
    /// The gateway's subscriber, the default on each thread of its runtime for the thread's life.
    static LOG_GUARD: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// Serves in this process: `args` are the serve command's flags (`--config`, `--addr`), `vars`
/// its whole environment.
fn in_process(args: &[String], vars: HashMap<String, String>) -> Sluice {
    let mut flags = sluice_gateway::config::Flags::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().expect("a value after the flag");
        match a.as_str() {
            "--config" => flags.config = Some(value()),
            "--addr" => flags.addr = Some(value()),
            other => panic!(
                "an in-process gateway takes --config and --addr only, not {other:?}: \
                 start the binary (Builder::binary) for the command line"
            ),
        }
    }
    let logs = Logs::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
    let thread = {
        let logs = logs.clone();
        std::thread::Builder::new()
            .name("sluice-gateway".into())
            .spawn(move || run_gateway(flags, vars, logs, ready_tx, stop_rx))
            .expect("gateway thread")
    };
    let gateway = InProcess {
        stop: Mutex::new(Some(stop_tx)),
        thread: Mutex::new(Some(thread)),
    };
    match ready_rx.recv_timeout(START_LIMIT) {
        Ok(Ok(addr)) => Sluice {
            addr,
            run: Run::InProcess(gateway),
            logs,
            config: None,
        },
        Ok(Err(e)) => {
            gateway.kill();
            panic!("sluice did not start: {e}\nlogs:\n{}", logs.text())
        }
        Err(_) => {
            gateway.kill();
            panic!("sluice did not listen; logs:\n{}", logs.text())
        }
    }
}

/// The gateway thread: what `sluice` (the serve command) does, with the variables given and
/// the log into `logs`, until told to stop.
fn run_gateway(
    flags: sluice_gateway::config::Flags,
    vars: HashMap<String, String>,
    logs: Logs,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
    stop: tokio::sync::oneshot::Receiver<Stop>,
) {
    use sluice_gateway::bootstrap;
    // As in the binary, the settings are read before the subscriber exists.
    let settings = match sluice_gateway::config::Settings::load(&flags, &vars) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("sluice: {e}")));
            return;
        }
    };
    let dispatch = sluice_gateway::tracing_dispatch(&vars, logs.clone());
    let _here = tracing::dispatcher::set_default(&dispatch);
    let runtime = {
        let dispatch = dispatch.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-gateway-worker")
            .enable_all()
            .on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&dispatch);
                LOG_GUARD.with(|g| *g.borrow_mut() = Some(guard));
            })
            .on_thread_stop(|| LOG_GUARD.with(|g| drop(g.borrow_mut().take())))
            .build()
            .expect("gateway runtime")
    };
    runtime.block_on(async move {
        bootstrap::log_host_limits(&settings);
        let gateway = match bootstrap::Gateway::bind(settings).await {
            Ok(g) => g,
            Err(e) => {
                let _ = ready.send(Err(format!("sluice: {e}")));
                return;
            }
        };
        let addr = gateway.local_addr().expect("local addr");
        // The binary prints this line on stdout, which its logs included.
        logs.line(&format!("listening on http://{addr}"));
        gateway.log_started();
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = gateway.serve(async move {
            let _ = drain_rx.await;
        });
        tokio::pin!(serve);
        if ready.send(Ok(addr)).is_err() {
            return;
        }
        tokio::select! {
            r = &mut serve => {
                if let Err(e) = r {
                    logs.line(&format!("sluice: {e}"));
                }
            }
            how = stop => match how {
                Ok(Stop::Drain) => {
                    let _ = drain_tx.send(());
                    if let Err(e) = serve.await {
                        logs.line(&format!("sluice: {e}"));
                    }
                }
                // Killed, or the handle is gone.
                Ok(Stop::Kill) | Err(_) => {}
            },
        }
    });
    // Whatever is still running (everything, when killed) is dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

// --- the binary --------------------------------------------------------------------------------

/// Starts the `sluice` executable `bin` with `args` and exactly `env` (plus `PATH`), in a fresh
/// temp directory, reading its `listening on` line.
fn launch(
    bin: PathBuf,
    open_files: Option<u64>,
    args: &[String],
    env: &[(String, String)],
) -> Sluice {
    let mut cmd = match open_files {
        None => Command::new(&bin),
        Some(limit) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={limit}:{limit}"))
                .arg("--")
                .arg(&bin);
            c
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("sluice-test-")
        .tempdir()
        .expect("temp dir");
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let logs = Logs::default();
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
                logs.line(&line);
            }
        });
    }
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                logs.line(&line);
            }
        });
    }
    let Ok(addr) = rx.recv_timeout(START_LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "sluice did not print its listening line; logs:\n{}",
            logs.text()
        );
    };
    Sluice {
        addr,
        run: Run::Process {
            child: Mutex::new(child),
            _dir: dir,
        },
        logs,
        config: None,
    }
}
