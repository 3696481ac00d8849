//! The suite: each scenario starts a fresh mock and Sluice (and other gateways), checks every
//! target answers, then runs its load against all targets interleaved (direct, sluice, other,
//! direct, sluice, other, ...) so that the machine's drift hits them alike, and turns the runs
//! into rows and `ratio` lines. Fresh processes per scenario keep one scenario's retained
//! streams (Sluice keeps finished streams for 5 minutes) out of the next one's memory figures.
//!
//! Longer than most files (~700 lines) on purpose: each scenario is a short function next to
//! the others, and reading them side by side is how one checks they load every target alike.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::json;

use crate::load::{self, LoadSpec, Progress, Stop, Target};
use crate::measure::{measure, Watch};
use crate::peers::{self, Peer, Spawner};
use crate::report::{self, mib, Row, ScenarioReport};
use crate::sse::ScanMode;
use crate::stats::ratio;
use crate::{chart, procfs, soak};

#[path = "stream_lane.rs"]
mod stream_lane;

/// A scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Scenario {
    /// Added time to first token and inter-token gaps at C = 1, 100, 1000 (10 ms tokens).
    Ttft,
    /// Tokens per second through the gateway vs direct, zero delay, C = 50 and 500.
    Throughput,
    /// Many concurrent slow streams: errors and memory per open stream.
    Open,
    /// Bytes Sluice's relay keeps per finished (resumable) stream.
    Retention,
    /// Sluice under steady load for minutes: RSS, relay bytes, errors over time.
    Soak,
    /// Busbar's stream lane: 64 deltas 20 ms apart; added TTFT at C=1, then a concurrency
    /// sweep with the stall and hold rules.
    Stream,
}

/// The open-file limit the suite asks for (10,000 open streams through a gateway need 20,000
/// descriptors in the gateway alone).
const WANT_FDS: u64 = 65536;

/// The scenarios run when none are named.
pub const DEFAULT_SCENARIOS: [Scenario; 4] = [
    Scenario::Ttft,
    Scenario::Throughput,
    Scenario::Open,
    Scenario::Retention,
];

/// Another gateway to compare: started from a command template, or already running.
#[derive(Debug, Clone)]
pub enum OtherSpec {
    /// A shell command with `{port}` and `{mock}` placeholders, started per scenario.
    Command(String),
    /// A URL; such a gateway must already point at the mock (see `--mock-port`).
    Url { url: String, pid: Option<u32> },
}

#[derive(Debug, Clone)]
pub struct Other {
    pub name: String,
    pub spec: OtherSpec,
}

/// Soak settings.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    pub duration: Duration,
    pub concurrency: usize,
    pub after: Duration,
    pub sample_every: Duration,
}

/// Everything `sluice-bench suite` was asked.
#[derive(Debug, Clone)]
pub struct SuiteOpts {
    pub sluice: PathBuf,
    /// Run the mock as `PROGRAM mock-upstream` instead of `sluice mock-upstream`.
    pub mock_program: Option<PathBuf>,
    pub mock_port: Option<u16>,
    pub quick: bool,
    pub out: PathBuf,
    pub scenarios: Vec<Scenario>,
    pub others: Vec<Other>,
    pub sluice_env: Vec<(String, String)>,
    pub scan: ScanMode,
    /// Overrides of the rounds and duration of the fixed-duration scenarios.
    pub rounds: Option<usize>,
    pub duration: Option<Duration>,
    pub soak: SoakOpts,
    pub stream: StreamOpts,
}

/// Stream lane settings.
#[derive(Debug, Clone)]
pub struct StreamOpts {
    /// The concurrency sweep's steps.
    pub steps: Vec<usize>,
    /// Requests per target at C=1 (interleaved with the other targets, a few at a time).
    pub c1_requests: u64,
    /// Seconds each target keeps starting streams at each step (after a one-stream ramp).
    pub step_secs: f64,
}

/// The running processes of one scenario.
struct Lineup {
    mock: Peer,
    /// Sluice first, then the others.
    gateways: Vec<Peer>,
    /// Each process's RSS (MiB) right after it started, before any request.
    idle_mib: BTreeMap<String, f64>,
}

impl Lineup {
    /// Stops every process this lineup started and waits for them to exit.
    async fn stop(self) {
        for g in self.gateways {
            g.stop().await;
        }
        self.mock.stop().await;
    }

    /// Each target with what to watch while it is measured. `direct` goes to the mock.
    fn targets(&self, with_direct: bool) -> anyhow::Result<Vec<(Target, Watch)>> {
        let mut out = Vec::new();
        if with_direct {
            let mut t = self.mock.target()?;
            t.name = "direct".into();
            out.push((
                t,
                Watch {
                    pids: vec![("mock".into(), self.mock.pid)],
                    ..Watch::default()
                },
            ));
        }
        for g in &self.gateways {
            let t = g.target()?;
            let mut pids = Vec::new();
            if let Some(pid) = g.pid() {
                pids.push((g.name.clone(), pid));
            }
            pids.push(("mock".into(), self.mock.pid));
            let metrics = (g.name == "sluice").then(|| t.endpoint.clone());
            out.push((
                t,
                Watch {
                    pids,
                    metrics,
                    snapshot_at: None,
                },
            ));
        }
        Ok(out)
    }
}

/// Runs the suite; prints as it goes and writes the JSON summary and charts to `opts.out`.
pub async fn run(opts: SuiteOpts) -> anyhow::Result<()> {
    let fd_limit = peers::raise_fd_limit(WANT_FDS);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let spawner = Spawner::new(
        opts.sluice.clone(),
        opts.mock_program.clone(),
        opts.mock_port,
        opts.out.join("logs"),
        opts.sluice_env.clone(),
    )?;
    println!(
        "sluice-bench suite: sluice {}, {} CPUs, open-file limit {fd_limit}{}, scan {:?}{}",
        opts.sluice.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if fd_limit < WANT_FDS {
            " (the hard limit could not be raised)"
        } else {
            ""
        },
        opts.scan,
        if opts.quick { ", quick" } else { "" }
    );
    let mut suite = Suite {
        opts,
        spawner,
        fd_limit,
    };
    let mut reports = Vec::new();
    for sc in suite.opts.scenarios.clone() {
        let report = match sc {
            Scenario::Ttft => suite.ttft().await?,
            Scenario::Throughput => suite.throughput().await?,
            Scenario::Open => suite.open().await?,
            Scenario::Retention => suite.retention().await?,
            Scenario::Soak => suite.soak().await?,
            Scenario::Stream => suite.stream().await?,
        };
        reports.push(report);
    }
    let summary = json!({
        "tool": "sluice-bench",
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "sluice": suite.opts.sluice.display().to_string(),
        "quick": suite.opts.quick,
        "scan": suite.opts.scan,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "open_file_limit": fd_limit,
        "scenarios": reports,
    });
    let path = suite.opts.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("write {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

struct Suite {
    opts: SuiteOpts,
    spawner: Spawner,
    fd_limit: u64,
}

impl Suite {
    fn rounds(&self, full: usize) -> usize {
        self.opts
            .rounds
            .unwrap_or(if self.opts.quick { 1 } else { full })
            .max(1)
    }

    fn duration(&self, full: f64, quick: f64) -> Duration {
        self.opts
            .duration
            .unwrap_or(Duration::from_secs_f64(if self.opts.quick {
                quick
            } else {
                full
            }))
    }

    fn spec(&self, concurrency: usize, tokens: u32, delay_ms: u32, stop: Stop) -> LoadSpec {
        LoadSpec {
            concurrency,
            tokens,
            delay_ms,
            first_token_delay_ms: 0,
            stop,
            ramp: Duration::ZERO,
            scan: self.opts.scan,
            record_gaps: true,
        }
    }

    /// Starts a mock, Sluice and (when `with_others`) the other gateways, and checks that
    /// each answers one request.
    async fn lineup(&mut self, tag: &str, with_others: bool) -> anyhow::Result<Lineup> {
        let mock = self.spawner.mock(tag).await?;
        let sluice = self.spawner.sluice(&mock.url, tag).await?;
        let mut lineup = Lineup {
            gateways: vec![sluice],
            mock,
            idle_mib: BTreeMap::new(),
        };
        if with_others {
            for o in self.opts.others.clone() {
                let peer = match &o.spec {
                    OtherSpec::Command(cmd) => {
                        match self
                            .spawner
                            .templated(&o.name, cmd, &lineup.mock.url, tag)
                            .await
                        {
                            Ok(p) => p,
                            Err(e) => {
                                println!("note: {} left out: {e:#}", o.name);
                                continue;
                            }
                        }
                    }
                    OtherSpec::Url { url, pid } => Peer::external(&o.name, url, *pid),
                };
                lineup.gateways.push(peer);
            }
        }
        Self::record_idle(&mut lineup);
        let mut failed = Vec::new();
        for (t, _) in lineup.targets(true)? {
            if let Err(e) = probe(&t, self.opts.scan).await {
                if t.name == "direct" || t.name == "sluice" {
                    bail!("{} does not answer: {e:#}", t.name);
                }
                println!("note: {} left out: {e:#}", t.name);
                failed.push(t.name);
            }
        }
        lineup.gateways.retain(|g| !failed.contains(&g.name));
        Ok(lineup)
    }

    /// Reads each started process's RSS; call before any request.
    fn record_idle(lineup: &mut Lineup) {
        let procs = std::iter::once(&lineup.mock).chain(&lineup.gateways);
        lineup.idle_mib = procs
            .filter_map(|p| Some((p.name.clone(), mib(procfs::rss_kib(p.pid()?)?))))
            .collect();
    }

    /// A short unmeasured run per target, so no target pays for first-use costs.
    async fn warm_up(&self, targets: &[(Target, Watch)]) {
        let d = self.duration(1.0, 0.3).min(Duration::from_secs(1));
        for (t, _) in targets {
            let spec = self.spec(20, 20, 0, Stop::After(d));
            let _ = load::run(t, &spec, Arc::new(Progress::default())).await;
        }
    }

    /// Runs every spec against every target, rounds interleaved; one row per target per spec.
    async fn interleaved(
        &self,
        name: &str,
        targets: &[(Target, Watch)],
        specs: &[LoadSpec],
        rounds: usize,
    ) -> Vec<Row> {
        let mut rows = Vec::new();
        for spec in specs {
            let mut runs: Vec<Vec<report::Measured>> = vec![Vec::new(); targets.len()];
            for round in 0..rounds {
                for (i, (t, w)) in targets.iter().enumerate() {
                    let m = measure(t, spec, w).await;
                    println!(
                        "{}",
                        report::run_line(&format!("{name} r{}", round + 1), &m)
                    );
                    runs[i].push(m);
                }
            }
            rows.extend(runs.iter().map(|r| Row::from_runs(r)));
        }
        rows
    }

    fn heading(&self, name: &str, description: &str) {
        println!("\n== {name}: {description} ==");
    }

    async fn ttft(&mut self) -> anyhow::Result<ScenarioReport> {
        let rounds = self.rounds(2);
        let d = self.duration(5.0, 1.5);
        let long = if self.opts.quick { 50 } else { 200 };
        let mut specs = vec![
            self.spec(1, long, 10, Stop::After(d)),
            self.spec(100, long, 10, Stop::After(d)),
            self.spec(1000, 50, 10, Stop::After(d)),
        ];
        specs[2].ramp = self.duration(1.0, 0.3).min(Duration::from_secs(1));
        let description = format!(
            "10 ms token delay; C=1 and 100 with {long} tokens, C=1000 with 50; {rounds} round(s) × {} s per target, interleaved",
            report::secs(d)
        );
        self.heading("ttft", &description);
        let lineup = self.lineup("ttft", true).await?;
        let targets = lineup.targets(true)?;
        self.warm_up(&targets).await;
        let rows = self.interleaved("ttft", &targets, &specs, rounds).await;
        lineup.stop().await;
        print!("{}", report::table(&rows));
        let mut lines = Vec::new();
        let mut added = Vec::new();
        for spec in &specs {
            let Some((direct, others)) = versus_direct(&rows, spec.concurrency) else {
                continue;
            };
            for r in others {
                let (p50, p99) = (
                    r.ttft_ms.p50 - direct.ttft_ms.p50,
                    r.ttft_ms.p99 - direct.ttft_ms.p99,
                );
                let gap99 = r.gap_ms.p99 - direct.gap_ms.p99;
                let gw = r.gateway();
                lines.push(format!(
                    "ratio {}/direct ttft C={}: added TTFT p50 {} ms, p99 {} ms; added gap p99 {} ms; TTFT p50 x{:.3}; {} CPU {} ms/stream, {} µs/token; errors {} vs {}",
                    r.target,
                    r.concurrency,
                    report::signed_ms(p50),
                    report::signed_ms(p99),
                    report::signed_ms(gap99),
                    ratio(r.ttft_ms.p50, direct.ttft_ms.p50),
                    r.target,
                    fmt(gw.and_then(|g| g.cpu_ms_per_stream), 3),
                    fmt(gw.and_then(|g| g.cpu_us_per_token), 2),
                    r.errors,
                    direct.errors,
                ));
                added.push(chart::AddedTtft {
                    target: r.target.clone(),
                    concurrency: r.concurrency,
                    p50_ms: p50,
                    p99_ms: p99,
                    gap_p99_ms: gap99,
                });
            }
        }
        for l in &lines {
            println!("{l}");
        }
        let svg = self.opts.out.join("ttft.svg");
        match chart::added_ttft(&svg, &added) {
            Ok(()) => println!("wrote {}", svg.display()),
            Err(e) => println!("note: no chart: {e:#}"),
        }
        Ok(ScenarioReport {
            name: "ttft".into(),
            description,
            rows,
            lines,
            extra: json!({ "added": added }),
        })
    }

    async fn throughput(&mut self) -> anyhow::Result<ScenarioReport> {
        let rounds = self.rounds(2);
        let d = self.duration(10.0, 1.5);
        let specs = [
            self.spec(50, 50, 0, Stop::After(d)),
            self.spec(500, 50, 0, Stop::After(d)),
        ];
        let description = format!(
            "zero delay, 50-token streams, C=50 and 500; {rounds} round(s) × {} s per target, interleaved",
            report::secs(d)
        );
        self.heading("throughput", &description);
        let lineup = self.lineup("throughput", true).await?;
        let targets = lineup.targets(true)?;
        self.warm_up(&targets).await;
        let rows = self
            .interleaved("throughput", &targets, &specs, rounds)
            .await;
        let idle = lineup.idle_mib.clone();
        lineup.stop().await;
        print!("{}", report::table(&rows));
        let mut lines = Vec::new();
        for spec in &specs {
            let Some((direct, others)) = versus_direct(&rows, spec.concurrency) else {
                continue;
            };
            for r in others {
                let gw = r.gateway();
                lines.push(format!(
                    "ratio {}/direct throughput C={}: tokens/s x{:.3} ({} {:.0}/s, direct {:.0}/s); {} CPU {} ms/stream, {} µs/token; {} RSS {} MiB (idle→peak); errors {} vs {}",
                    r.target,
                    r.concurrency,
                    ratio(r.tokens_per_s, direct.tokens_per_s),
                    r.target,
                    r.tokens_per_s,
                    direct.tokens_per_s,
                    r.target,
                    fmt(gw.and_then(|g| g.cpu_ms_per_stream), 3),
                    fmt(gw.and_then(|g| g.cpu_us_per_token), 2),
                    r.target,
                    gw.map_or("-".into(), |g| format!(
                        "{}→{:.1}",
                        idle.get(&r.target)
                            .map_or("-".into(), |i| format!("{i:.1}")),
                        g.rss_peak_mib
                    )),
                    r.errors,
                    direct.errors,
                ));
            }
        }
        for l in &lines {
            println!("{l}");
        }
        Ok(ScenarioReport {
            name: "throughput".into(),
            description,
            rows,
            lines,
            extra: serde_json::Value::Null,
        })
    }

    async fn open(&mut self) -> anyhow::Result<ScenarioReport> {
        let (want, tokens, delay, ramp) = if self.opts.quick {
            (500, 4, 500, Duration::from_millis(500))
        } else {
            (10_000, 20, 1000, Duration::from_secs(5))
        };
        // A gateway holds two descriptors per stream (client and upstream side).
        let fd_cap = usize::try_from(self.fd_limit.saturating_sub(256) / 2).unwrap_or(usize::MAX);
        let c = want.min(fd_cap).max(1);
        if c < want {
            println!(
                "note: open: {c} streams instead of {want}: a gateway needs two file descriptors per stream and the open-file limit is {}",
                self.fd_limit
            );
        }
        let mut spec = self.spec(c, tokens, delay, Stop::Requests(c as u64));
        spec.ramp = ramp;
        spec.record_gaps = true;
        // Halfway through the streams that started last: every stream is open.
        let plateau = ramp + Duration::from_millis(u64::from(tokens * delay) / 2);
        let description = format!(
            "{c} concurrent streams of {tokens} tokens {delay} ms apart, ramped up over {} s; memory read at {} s",
            report::secs(ramp),
            report::secs(plateau)
        );
        self.heading("open", &description);
        let lineup = self.lineup("open", true).await?;
        let mut targets = lineup.targets(true)?;
        for (_, w) in &mut targets {
            w.snapshot_at = Some(plateau);
        }
        let rows = self
            .interleaved("open", &targets, std::slice::from_ref(&spec), 1)
            .await;
        print!("{}", report::table(&rows));
        let mut lines = Vec::new();
        let mut extra = Vec::new();
        let direct = rows.iter().find(|r| r.target == "direct");
        for r in &rows {
            // The process holding the streams' memory: the gateway, or for direct the mock.
            let proc = if r.target == "direct" {
                "mock"
            } else {
                r.target.as_str()
            };
            let idle = r.procs.get(proc).map_or(0.0, |p| p.rss_idle_mib);
            let peak = r.procs.get(proc).map_or(0.0, |p| p.rss_peak_mib);
            let snap = r.plateau.as_ref();
            let at_plateau = snap
                .and_then(|s| s.rss_kib.get(proc))
                .map_or(peak, |&k| mib(k));
            let live = snap.and_then(|s| s.metrics.get("sluice_relay_live_streams").copied());
            let per_stream_kib = (at_plateau - idle) * 1024.0 / c as f64;
            lines.push(format!(
                "open C={c} {}: errors {} {:?}; {proc} RSS {idle:.1} MiB before, {at_plateau:.1} MiB at plateau{} (peak {peak:.1}) = {per_stream_kib:.1} KiB per open stream",
                r.target,
                r.errors,
                r.error_kinds,
                live.map_or(String::new(), |l| format!(" with {l} live streams")),
            ));
            extra.push(json!({
                "target": r.target, "process": proc, "errors": r.errors,
                "rss_before_mib": idle, "rss_plateau_mib": at_plateau, "rss_peak_mib": peak,
                "kib_per_open_stream": per_stream_kib, "live_streams_at_plateau": live,
            }));
            if let (Some(d), true) = (direct, r.target != "direct") {
                lines.push(format!(
                    "ratio {}/direct open C={c}: TTFT p50 x{:.3}, p99 x{:.3}; errors {} vs {}",
                    r.target,
                    ratio(r.ttft_ms.p50, d.ttft_ms.p50),
                    ratio(r.ttft_ms.p99, d.ttft_ms.p99),
                    r.errors,
                    d.errors
                ));
            }
        }
        for l in &lines {
            println!("{l}");
        }
        lineup.stop().await;
        Ok(ScenarioReport {
            name: "open".into(),
            description,
            rows,
            lines,
            extra: json!(extra),
        })
    }

    async fn retention(&mut self) -> anyhow::Result<ScenarioReport> {
        let (n, c) = if self.opts.quick {
            (200, 50)
        } else {
            (6000, 500)
        };
        let tokens = 100;
        let spec = self.spec(c, tokens, 0, Stop::Requests(n));
        let description =
            format!("{n} streams of {tokens} tokens through Sluice at C={c}, then the relay's bytes per finished stream");
        self.heading("retention", &description);
        let lineup = self.lineup("retention", false).await?;
        let targets = lineup.targets(false)?;
        let rows = self.interleaved("retention", &targets, &[spec], 1).await;
        lineup.stop().await;
        print!("{}", report::table(&rows));
        let Some(r) = rows.first() else {
            bail!("retention: no run");
        };
        // Differences across the run, so the probe's stream does not count.
        let m = r.metrics_after.clone();
        let delta = |k: &str| {
            m.get(k).copied().unwrap_or(0.0) - r.metrics_before.get(k).copied().unwrap_or(0.0)
        };
        let bytes = delta("sluice_relay_bytes");
        let finished = delta("sluice_relay_finished_streams");
        let evicted = delta("sluice_relay_evicted_streams_total");
        let per_stream = if finished > 0.0 {
            bytes / finished
        } else {
            0.0
        };
        let gw = r.gateway().copied().unwrap_or_default();
        let rss_per_stream_kib = if finished > 0.0 {
            (gw.rss_last_mib - gw.rss_idle_mib) * 1024.0 / finished
        } else {
            0.0
        };
        let mut lines = vec![format!(
            "retention: sluice_relay_bytes +{bytes:.0} / sluice_relay_finished_streams +{finished:.0} = bytes per retained stream: {per_stream:.0} ({:.1} bytes per token); evicted {evicted:.0}; errors {}",
            per_stream / f64::from(tokens),
            r.errors
        )];
        lines.push(format!(
            "retention: sluice RSS {:.1} MiB idle, peak {:.1} MiB, {:.1} MiB after = {rss_per_stream_kib:.1} KiB RSS per retained stream",
            gw.rss_idle_mib, gw.rss_peak_mib, gw.rss_last_mib
        ));
        for l in &lines {
            println!("{l}");
        }
        Ok(ScenarioReport {
            name: "retention".into(),
            description,
            rows,
            lines,
            extra: json!({
                "relay_bytes": bytes, "finished_streams": finished, "evicted": evicted,
                "bytes_per_retained_stream": per_stream, "rss_kib_per_retained_stream": rss_per_stream_kib,
                "metrics_after": m,
            }),
        })
    }

    async fn soak(&mut self) -> anyhow::Result<ScenarioReport> {
        let o = self.opts.soak.clone();
        let description = format!(
            "{} s at C={} (50 tokens, zero delay) through Sluice, sampled every {} s, then {} s idle",
            report::secs(o.duration),
            o.concurrency,
            report::secs(o.sample_every),
            report::secs(o.after)
        );
        self.heading("soak", &description);
        let lineup = self.lineup("soak", false).await?;
        let Some((target, watch)) = lineup.targets(false)?.into_iter().next() else {
            bail!("soak: no sluice");
        };
        let mut spec = self.spec(o.concurrency, 50, 0, Stop::After(o.duration));
        spec.record_gaps = false;
        let pid = lineup.gateways[0].pid;
        let soaked = soak::run(&target, &watch, pid, &spec, &o, &self.opts.out).await;
        lineup.stop().await;
        let (lines, extra) = soaked?;
        Ok(ScenarioReport {
            name: "soak".into(),
            description,
            rows: Vec::new(),
            lines,
            extra,
        })
    }
}

/// The direct row at concurrency `c`, and every other target's row there.
fn versus_direct(rows: &[Row], c: usize) -> Option<(&Row, impl Iterator<Item = &Row>)> {
    let at_c = move || rows.iter().filter(move |r| r.concurrency == c);
    let direct = at_c().find(|r| r.target == "direct")?;
    Some((direct, at_c().filter(|r| r.target != "direct")))
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.prec$}"),
        _ => "-".into(),
    }
}

/// One tiny request, to learn early that a target does not work.
async fn probe(t: &Target, scan: ScanMode) -> anyhow::Result<()> {
    let spec = LoadSpec {
        concurrency: 1,
        tokens: 2,
        delay_ms: 0,
        first_token_delay_ms: 0,
        stop: Stop::Requests(1),
        ramp: Duration::ZERO,
        scan,
        record_gaps: false,
    };
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        load::run(t, &spec, Arc::new(Progress::default())),
    )
    .await
    .context("no answer within 15 s")?;
    if r.ok != 1 {
        bail!("probe request failed: {:?}", r.errors);
    }
    Ok(())
}
