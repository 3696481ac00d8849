//! The command line: `suite` (spawn the peers, run scenarios, write reports) and `load` (one
//! run against one URL, for ad hoc use and profiling).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::client::Endpoint;
use crate::load::{LoadSpec, Stop, Target};
use crate::measure::{measure, Watch};
use crate::prom::RELAY_METRICS;
use crate::report::{self, Row};
use crate::scenarios::{self, Other, OtherSpec, Scenario, SoakOpts, StreamOpts, SuiteOpts};
use crate::sse::ScanMode;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    about = "What a gateway adds on top of a direct connection to an OpenAI-compatible upstream"
)]
pub struct Cli {
    /// Load generator threads: 1 runs it on the current thread (at most one core).
    #[arg(long, global = true, default_value_t = 1)]
    pub client_threads: usize,
    /// How a data line is judged to carry content.
    #[arg(long, global = true, value_enum, default_value_t = ScanMode::Fast)]
    pub scan: ScanMode,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Spawn the mock upstream and Sluice (and others), run the scenarios, write the reports.
    Suite(SuiteArgs),
    /// One run against one URL.
    Load(LoadArgs),
    /// Serve the mock upstream (as `sluice mock-upstream`) with `GET /health` added.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
    },
}

/// Which mock upstream process a suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MockKind {
    /// `sluice mock-upstream`, unless vllm-router is compared (then `bench`).
    Auto,
    /// `sluice mock-upstream`.
    Sluice,
    /// `sluice-bench mock-upstream`: the same mock plus `GET /health`.
    Bench,
}

#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// The sluice binary (default: `sluice` next to this executable, else target/release/sluice).
    #[arg(long)]
    pub sluice: Option<PathBuf>,
    /// Shrink every scenario so the suite runs in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Where summary.json, the SVG charts and the peers' logs go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Comma-separated: ttft, throughput, open, retention, stream, soak (default: all but stream
    /// and soak, the two long ones).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// Also compare vllm-router (when the `vllm-router` executable is on PATH).
    #[arg(long)]
    pub vllm_router: bool,
    /// Another gateway: NAME=COMMAND, a shell command with `{port}` and `{mock}` (the mock's
    /// URL) placeholders, started per scenario; or NAME=URL, already running and pointed at
    /// the mock on --mock-port.
    #[arg(long, value_name = "NAME=COMMAND|URL")]
    pub other: Vec<String>,
    /// Run the mock on this port (for gateways given by URL); default: any free port.
    #[arg(long)]
    pub mock_port: Option<u16>,
    /// Which mock upstream to run: vllm-router needs `bench` (it polls `GET /health`).
    #[arg(long, value_enum, default_value_t = MockKind::Auto)]
    pub mock: MockKind,
    /// The process id of a gateway given by URL, to sample its CPU and memory.
    #[arg(long, value_name = "NAME=PID")]
    pub other_pid: Vec<String>,
    /// An environment variable for the Sluice process (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub sluice_env: Vec<String>,
    /// Rounds per target for ttft and throughput (default 2; quick 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds per round for ttft and throughput (default 5 and 10; quick 1.5).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Soak: minutes of load.
    #[arg(long, default_value_t = 1.0)]
    pub minutes: f64,
    /// Soak: concurrent streams.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Soak: seconds to keep sampling after the load stops.
    #[arg(long, default_value_t = 0.0)]
    pub after_secs: f64,
    /// Soak: seconds between samples.
    #[arg(long, default_value_t = 2.0)]
    pub sample_secs: f64,
    /// Stream lane: the concurrency steps, comma-separated (default 64,128,256,512,1024,2048).
    #[arg(long, value_delimiter = ',')]
    pub stream_steps: Vec<usize>,
    /// Stream lane: requests per target at C=1 for the added TTFT.
    #[arg(long, default_value_t = 40)]
    pub stream_c1_requests: u64,
    /// Stream lane: seconds each target keeps starting streams at each step.
    #[arg(long, default_value_t = 5.0)]
    pub stream_step_secs: f64,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The gateway or upstream, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "SLUICE_BENCH_KEY")]
    pub key: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Content tokens per answer (the mock's `mock.tokens`).
    #[arg(long, default_value_t = 50)]
    pub tokens: u32,
    /// Milliseconds between tokens (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u32,
    #[arg(long, default_value_t = 0)]
    pub first_token_delay_ms: u32,
    /// Seconds to keep starting requests.
    #[arg(long, conflicts_with = "requests")]
    pub duration: Option<f64>,
    /// Requests to send in all.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Spread the workers' start over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    pub ramp_secs: f64,
    /// A process to sample (CPU, RSS), e.g. sluice=1234 (repeatable).
    #[arg(long, value_name = "NAME=PID")]
    pub pid: Vec<String>,
    /// Scrape URL/metrics before and after (Sluice's relay gauges).
    #[arg(long)]
    pub metrics: bool,
    /// Name of the target in the output.
    #[arg(long, default_value = "target")]
    pub name: String,
}

fn key_value(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("'{s}' is not NAME=VALUE"))?;
    if k.is_empty() {
        bail!("'{s}' has an empty name");
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn pid_pairs(items: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = key_value(s)?;
            let pid = v.parse().with_context(|| format!("'{v}' is not a pid"))?;
            Ok((k, pid))
        })
        .collect()
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{what}: '{s}' is not a duration"))
}

/// The default sluice binary: next to this executable (cargo puts both in target/<profile>/).
fn default_sluice() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sluice")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("target/release/sluice"))
}

impl SuiteArgs {
    pub fn into_opts(self, scan: ScanMode) -> anyhow::Result<SuiteOpts> {
        let pids = pid_pairs(&self.other_pid)?;
        let mut others = Vec::new();
        if self.vllm_router {
            if crate::peers::on_path("vllm-router") {
                others.push(Other {
                    name: "vllm-router".into(),
                    spec: OtherSpec::Command(crate::peers::VLLM_ROUTER_TEMPLATE.into()),
                });
            } else {
                println!(
                    "note: --vllm-router: no `vllm-router` on PATH (pip install vllm-router), skipped"
                );
            }
        }
        for o in &self.other {
            let (name, v) = key_value(o)?;
            let spec = if v.starts_with("http://") {
                Endpoint::parse(&v)?;
                OtherSpec::Url {
                    url: v,
                    pid: pids.iter().find(|(n, _)| *n == name).map(|(_, p)| *p),
                }
            } else {
                OtherSpec::Command(v)
            };
            if matches!(name.as_str(), "direct" | "sluice" | "mock" | "bench") {
                bail!("--other {name}: that name is taken");
            }
            others.push(Other { name, spec });
        }
        // The stream lane shapes answers with the `mock` knobs, which a release `sluice
        // mock-upstream` ignores: it needs the bench's mock.
        let wants_knobs = self.scenarios.contains(&Scenario::Stream);
        if wants_knobs && self.mock == MockKind::Sluice {
            bail!(
                "--scenarios stream needs --mock bench (the release sluice mock ignores the knobs)"
            );
        }
        let bench_mock = match self.mock {
            MockKind::Sluice => false,
            MockKind::Bench => true,
            MockKind::Auto => wants_knobs || others.iter().any(|o| o.name == "vllm-router"),
        };
        let mock_program = if bench_mock {
            let exe = std::env::current_exe().context("this executable's path")?;
            println!(
                "note: mock upstream: {} mock-upstream (the same mock, plus the GET /health that vllm-router needs), for every target",
                exe.display()
            );
            Some(exe)
        } else {
            None
        };
        Ok(SuiteOpts {
            sluice: self.sluice.unwrap_or_else(default_sluice),
            mock_program,
            mock_port: self.mock_port,
            quick: self.quick,
            out: self.out,
            scenarios: if self.scenarios.is_empty() {
                scenarios::DEFAULT_SCENARIOS.to_vec()
            } else {
                self.scenarios
            },
            others,
            sluice_env: self
                .sluice_env
                .iter()
                .map(|s| key_value(s))
                .collect::<anyhow::Result<_>>()?,
            scan,
            rounds: self.rounds,
            duration: self.duration.map(|d| secs(d, "--duration")).transpose()?,
            soak: SoakOpts {
                duration: secs(self.minutes * 60.0, "--minutes")?,
                concurrency: self.concurrency,
                after: secs(self.after_secs, "--after-secs")?,
                sample_every: secs(self.sample_secs, "--sample-secs")?,
            },
            stream: StreamOpts {
                steps: if self.stream_steps.is_empty() {
                    crate::lane::DEFAULT_STEPS.to_vec()
                } else {
                    self.stream_steps
                },
                c1_requests: self.stream_c1_requests.max(1),
                step_secs: self.stream_step_secs,
            },
        })
    }
}

/// `sluice-bench load`: one measured run, printed.
pub async fn load(args: LoadArgs, scan: ScanMode) -> anyhow::Result<()> {
    let endpoint = Endpoint::parse(&args.url)?;
    let stop = match (args.duration, args.requests) {
        (_, Some(r)) => Stop::Requests(r),
        (Some(d), None) => Stop::After(secs(d, "--duration")?),
        (None, None) => bail!("give --duration SECS or --requests N"),
    };
    let fd_limit = crate::peers::raise_fd_limit(65536);
    if args.concurrency as u64 + 64 > fd_limit {
        println!("note: open-file limit {fd_limit} is below the concurrency");
    }
    let spec = LoadSpec {
        concurrency: args.concurrency.max(1),
        tokens: args.tokens,
        delay_ms: args.delay_ms,
        first_token_delay_ms: args.first_token_delay_ms,
        stop,
        ramp: secs(args.ramp_secs, "--ramp-secs")?,
        scan,
        record_gaps: true,
    };
    let watch = Watch {
        pids: pid_pairs(&args.pid)?,
        metrics: args.metrics.then(|| endpoint.clone()),
        snapshot_at: None,
    };
    let target = Target {
        name: args.name,
        endpoint,
        key: args.key,
    };
    let m = measure(&target, &spec, &watch).await;
    println!("{}", report::run_line("load", &m));
    let rows = [Row::from_runs(std::slice::from_ref(&m))];
    print!("{}", report::table(&rows));
    for (name, p) in &rows[0].procs {
        println!(
            "{name}: CPU {} ms = {} ms/stream, {} µs/token; RSS {:.1} MiB first, {:.1} peak, {:.1} last",
            p.cpu_ms.map_or("-".into(), |v| format!("{v:.1}")),
            p.cpu_ms_per_stream
                .map_or("-".into(), |v| format!("{v:.3}")),
            p.cpu_us_per_token.map_or("-".into(), |v| format!("{v:.2}")),
            p.rss_idle_mib,
            p.rss_peak_mib,
            p.rss_last_mib
        );
    }
    if let Some(after) = &m.metrics_after {
        for k in RELAY_METRICS {
            if let Some(v) = after.get(k) {
                println!("{k} {v}");
            }
        }
    }
    if m.result.ok == 0 {
        bail!("no request succeeded: {:?}", m.result.errors);
    }
    Ok(())
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Suite(args) => scenarios::run(args.into_opts(cli.scan)?).await,
        Command::Load(args) => load(args, cli.scan).await,
        Command::MockUpstream { addr } => crate::mockserver::serve(&addr).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suite_flags() {
        let cli = Cli::try_parse_from([
            "sluice-bench",
            "suite",
            "--quick",
            "--scenarios",
            "throughput,retention",
            "--other",
            "x=http://127.0.0.1:9",
            "--other-pid",
            "x=42",
        ])
        .expect("parse");
        let Command::Suite(a) = cli.command else {
            panic!("not suite")
        };
        let o = a.into_opts(ScanMode::Fast).expect("opts");
        assert_eq!(o.scenarios, vec![Scenario::Throughput, Scenario::Retention]);
        assert!(matches!(
            &o.others[0].spec,
            OtherSpec::Url { pid: Some(42), .. }
        ));
        assert_eq!(o.soak.duration, Duration::from_secs(60));
    }

    #[test]
    fn the_stream_lane_takes_its_steps_and_needs_the_bench_mock() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["sluice-bench", "suite", "--scenarios", "stream"];
            args.extend_from_slice(extra);
            let cli = Cli::try_parse_from(args).expect("parse");
            let Command::Suite(a) = cli.command else {
                panic!("not suite")
            };
            a.into_opts(ScanMode::Fast)
        };
        let o = parse(&[]).expect("opts");
        assert_eq!(o.stream.steps, crate::lane::DEFAULT_STEPS.to_vec());
        assert_eq!(o.stream.c1_requests, 40);
        // The knobs need the bench mock: chosen by default, refused to be replaced.
        assert!(o.mock_program.is_some());
        let o = parse(&["--stream-steps", "8,16", "--stream-c1-requests", "0"]).expect("opts");
        assert_eq!(o.stream.steps, vec![8, 16]);
        assert_eq!(o.stream.c1_requests, 1);
        assert!(parse(&["--mock", "sluice"]).is_err());
    }

    #[test]
    fn rejects_bad_pairs() {
        assert!(pid_pairs(&["x".into()]).is_err());
        assert!(pid_pairs(&["x=y".into()]).is_err());
        assert_eq!(
            pid_pairs(&["a=1".into()]).expect("pair"),
            vec![("a".into(), 1)]
        );
    }
}
