//! The processes a suite runs against: the mock upstream (`sluice mock-upstream`), Sluice in
//! front of it (with a generated team key, so auth and limits stay on), and other gateways
//! started from a command template. Each child is killed when its [`Peer`] is dropped.
//!
//! Children get a fresh temporary working directory (so a developer's `.env` is not read) and
//! an environment without the provider shortcuts (`OPENAI_API_KEY`, ...), which would add
//! providers the benchmark did not ask for. Their stderr (logs) goes to a file under
//! `OUT/logs/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::Endpoint;
use crate::load::Target;

/// How long a peer may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables removed from the children's environment.
const SCRUBBED_ENV: [&str; 6] = [
    "SLUICE_CONFIG",
    "SLUICE_ADDR",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
];

/// The vllm-router command used by `--vllm-router`: `{port}` and `{mock}` are filled in. The
/// mock serves `/healthz`, not vllm's `/health`, hence the endpoint flag.
pub const VLLM_ROUTER_TEMPLATE: &str = "vllm-router --host 127.0.0.1 --port {port} \
     --worker-urls {mock} --policy round_robin --health-check-endpoint /healthz \
     --worker-startup-check-interval 1";

/// A running process the benchmark sends requests to (or, for the mock, through).
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub pid: u32,
    /// The key to send (Sluice's team key).
    pub key: Option<String>,
    /// `None` for a gateway given by URL, which the suite did not start. Killed on drop.
    child: Option<Child>,
}

impl Peer {
    /// A gateway someone else started.
    pub fn external(name: &str, url: &str, pid: Option<u32>) -> Self {
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            pid: pid.unwrap_or(0),
            key: None,
            child: None,
        }
    }

    /// Kills the process (if this benchmark started it) and waits for it to exit, so that
    /// the next scenario starts on a quiet machine and can reuse the port.
    pub async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        (self.pid != 0).then_some(self.pid)
    }

    pub fn target(&self) -> anyhow::Result<Target> {
        Ok(Target {
            name: self.name.clone(),
            endpoint: Endpoint::parse(&self.url)?,
            key: self.key.clone(),
        })
    }
}

/// Raises this process's open-file limit (children inherit it): the soft limit to the hard
/// one, and as root the hard one to at least `want`. Returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum;
    if hard.is_some_and(|h| h < want) {
        // Only root may raise the hard limit; if this fails, keep the old hard limit.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: Some(want),
            },
        );
    }
    let now = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A random API key and the SHA-256 hex of it (what the config holds).
pub fn gen_key() -> (String, String) {
    let bytes: [u8; 24] = rand::random();
    let key = format!("sk-bench-{}", hex::encode(bytes));
    let sha = hex::encode(Sha256::digest(key.as_bytes()));
    (key, sha)
}

/// Sluice's config: the mock as the only provider, one team whose limits never bite.
pub fn sluice_config(mock_url: &str, key_sha256: &str) -> String {
    format!(
        r#"[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock_url}/v1"
models = ["*"]

[[teams]]
name = "bench"
api_keys_sha256 = ["{key_sha256}"]
requests_per_minute = 100000000
tokens_per_minute = 100000000000
max_concurrent_streams = 100000
models = ["*"]
"#
    )
}

/// The URL in a `listening on http://HOST:PORT` line.
pub fn parse_listening(line: &str) -> Option<&str> {
    let url = line.trim().strip_prefix("listening on ")?.trim();
    url.starts_with("http://").then_some(url)
}

/// Starts peers: knows the sluice binary, a scratch directory and where logs go.
pub struct Spawner {
    sluice: PathBuf,
    mock_program: Option<PathBuf>,
    mock_port: Option<u16>,
    dir: tempfile::TempDir,
    logs: PathBuf,
    sluice_env: Vec<(String, String)>,
    seq: u32,
}

impl Spawner {
    pub fn new(
        sluice: PathBuf,
        mock_program: Option<PathBuf>,
        mock_port: Option<u16>,
        logs: PathBuf,
        sluice_env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        if !sluice.is_file() {
            bail!(
                "no sluice binary at {} (build it: cargo build --release -p sluice-gateway)",
                sluice.display()
            );
        }
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-bench-")
            .tempdir()
            .context("temp dir")?;
        // The target directory is shared: someone's `cargo build` during the suite would
        // otherwise change the binary between scenarios. Every scenario runs these copies.
        let sluice = snapshot(&sluice, &dir.path().join("sluice"))?;
        let mock_program = match mock_program {
            Some(p) => Some(snapshot(&p, &dir.path().join("mock-program"))?),
            None => None,
        };
        Ok(Self {
            sluice,
            mock_program,
            mock_port,
            dir,
            logs,
            sluice_env,
            seq: 0,
        })
    }

    fn log_file(&mut self, name: &str, tag: &str) -> anyhow::Result<std::fs::File> {
        self.seq += 1;
        let path = self.logs.join(format!("{:02}-{tag}-{name}.log", self.seq));
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd
    }

    /// `sluice mock-upstream --addr 127.0.0.1:PORT` (port 0 unless `--mock-port`), or the
    /// same subcommand of the `mock_program` given.
    pub async fn mock(&mut self, tag: &str) -> anyhow::Result<Peer> {
        let program = self.mock_program.clone().unwrap_or(self.sluice.clone());
        let mut cmd = self.command(&program);
        let addr = format!("127.0.0.1:{}", self.mock_port.unwrap_or(0));
        cmd.args(["mock-upstream", "--addr", &addr])
            .stderr(self.log_file("mock", tag)?);
        start_listening("mock", cmd).await
    }

    /// Sluice in front of `mock_url`, team mode, demo off.
    pub async fn sluice(&mut self, mock_url: &str, tag: &str) -> anyhow::Result<Peer> {
        let (key, sha) = gen_key();
        let config = self.dir.path().join("sluice.toml");
        std::fs::write(&config, sluice_config(mock_url, &sha))
            .with_context(|| format!("write {}", config.display()))?;
        let mut cmd = self.command(&self.sluice.clone());
        cmd.arg("--config")
            .arg(&config)
            .args(["--addr", "127.0.0.1:0"])
            .env("SLUICE_DEMO", "off")
            .envs(self.sluice_env.iter().map(|(k, v)| (k, v)))
            .stderr(self.log_file("sluice", tag)?);
        let mut peer = start_listening("sluice", cmd).await?;
        peer.key = Some(key);
        Ok(peer)
    }

    /// Another gateway from a shell command template with `{port}` and `{mock}` (the mock's
    /// URL) filled in; ready once its port accepts connections.
    pub async fn templated(
        &mut self,
        name: &str,
        template: &str,
        mock_url: &str,
        tag: &str,
    ) -> anyhow::Result<Peer> {
        let port = free_port()?;
        let line = template
            .replace("{port}", &port.to_string())
            .replace("{mock}", mock_url);
        let mut cmd = self.command(Path::new("sh"));
        // `exec` so that the pid we sample is the gateway's, not the shell's.
        cmd.arg("-c")
            .arg(format!("exec {line}"))
            .stdout(self.log_file(&format!("{name}-stdout"), tag)?)
            .stderr(self.log_file(name, tag)?);
        let mut child = cmd.spawn().with_context(|| format!("spawn {line}"))?;
        let pid = child.id().context("child pid")?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                bail!("{name} exited at start ({st}); see its log under OUT/logs/");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on port {port} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Peer {
            name: name.to_owned(),
            url,
            pid,
            key: None,
            child: Some(child),
        })
    }
}

/// Copies an executable (permissions included) and returns the copy's path.
fn snapshot(from: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(to.to_owned())
}

/// Whether `program` is an executable on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            p.is_file()
        })
    })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind for a free port")?;
    Ok(l.local_addr().context("local addr")?.port())
}

/// Spawns `cmd` and waits for its `listening on` line; then keeps draining its stdout so it
/// never blocks on a full pipe.
async fn start_listening(name: &str, mut cmd: Command) -> anyhow::Result<Peer> {
    let mut child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
    let pid = child.id().context("child pid")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = parse_listening(&line) {
                return Some(url.to_owned());
            }
        }
        None
    })
    .await
    .with_context(|| format!("{name} printed no 'listening on' line within {START_TIMEOUT:?}"))?
    .with_context(|| format!("{name} exited before listening; see its log under OUT/logs/"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Peer {
        name: name.to_owned(),
        url,
        pid,
        key: None,
        child: Some(child),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line() {
        assert_eq!(
            parse_listening("listening on http://127.0.0.1:4321\n"),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(parse_listening("starting"), None);
        assert_eq!(parse_listening("listening on 127.0.0.1:1"), None);
    }

    #[test]
    fn key_and_config() {
        let (key, sha) = gen_key();
        assert!(key.starts_with("sk-bench-"));
        assert_eq!(sha.len(), 64);
        assert_eq!(sha, hex::encode(Sha256::digest(key.as_bytes())));
        let cfg = sluice_config("http://127.0.0.1:9", &sha);
        assert!(cfg.contains("base_url = \"http://127.0.0.1:9/v1\""));
        assert!(cfg.contains(&sha));
        assert!(!cfg.contains(&key));
    }

    #[test]
    fn fd_limit_is_at_least_what_it_was() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!(raise_fd_limit(1024) >= before);
    }
}
