//! Turning measured runs into figures: one [`Row`] per target and concurrency (rounds merged),
//! the printed tables and lines, and the JSON summary's shapes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::RunResult;
use crate::procfs::RssStats;
use crate::prom::Metrics;
use crate::stats::Summary;

/// What one process cost during one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cost {
    pub cpu_ms: Option<f64>,
    pub rss: RssStats,
}

/// A reading taken partway through a run (the open-streams plateau).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub at_s: f64,
    pub rss_kib: BTreeMap<String, u64>,
    pub metrics: Metrics,
}

/// One run against one target, with what the watched processes cost.
#[derive(Debug, Clone)]
pub struct Measured {
    pub target: String,
    pub concurrency: usize,
    pub result: RunResult,
    /// By process name: the gateway under its target name, `mock`, and `bench` (this process).
    pub costs: BTreeMap<String, Cost>,
    pub metrics_before: Option<Metrics>,
    pub metrics_after: Option<Metrics>,
    pub plateau: Option<Snapshot>,
}

/// A process's cost over a row's runs, normalised.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcRow {
    pub cpu_ms: Option<f64>,
    pub cpu_ms_per_stream: Option<f64>,
    pub cpu_us_per_token: Option<f64>,
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_last_mib: f64,
}

/// The figures for one target at one concurrency, over all its rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub target: String,
    pub concurrency: usize,
    pub rounds: usize,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub tokens: u64,
    pub elapsed_s: f64,
    pub req_per_s: f64,
    pub tokens_per_s: f64,
    pub ttft_ms: Summary,
    pub gap_ms: Summary,
    pub total_ms: Summary,
    /// Each successful stream's longest gap between content reads.
    pub max_gap_ms: Summary,
    /// Successful streams with a gap over [`crate::lane::STALL`].
    pub stalled: u64,
    pub procs: BTreeMap<String, ProcRow>,
    /// The gateway's metrics before the first round and after the last (Sluice only).
    pub metrics_before: Metrics,
    pub metrics_after: Metrics,
    pub plateau: Option<Snapshot>,
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Row {
    /// Merges the rounds of one target at one concurrency.
    pub fn from_runs(runs: &[Measured]) -> Self {
        let mut merged = RunResult::default();
        let mut cpu: BTreeMap<String, Option<f64>> = BTreeMap::new();
        let mut rss: BTreeMap<String, RssStats> = BTreeMap::new();
        for m in runs {
            merged.merge(m.result.clone());
            for (name, c) in &m.costs {
                let e = cpu.entry(name.clone()).or_insert(Some(0.0));
                *e = match (*e, c.cpu_ms) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
                let r = rss.entry(name.clone()).or_insert(c.rss);
                r.peak_kib = r.peak_kib.max(c.rss.peak_kib);
                r.last_kib = c.rss.last_kib;
            }
        }
        let secs = merged.elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let procs = cpu
            .into_iter()
            .map(|(name, cpu_ms)| {
                let r = rss.get(&name).copied().unwrap_or_default();
                let row = ProcRow {
                    cpu_ms,
                    cpu_ms_per_stream: cpu_ms
                        .filter(|_| merged.ok > 0)
                        .map(|c| c / merged.ok as f64),
                    cpu_us_per_token: cpu_ms
                        .filter(|_| merged.tokens > 0)
                        .map(|c| c * 1000.0 / merged.tokens as f64),
                    rss_idle_mib: mib(r.first_kib),
                    rss_peak_mib: mib(r.peak_kib),
                    rss_last_mib: mib(r.last_kib),
                };
                (name, row)
            })
            .collect();
        let first = runs.first();
        Self {
            target: first.map(|m| m.target.clone()).unwrap_or_default(),
            concurrency: first.map_or(0, |m| m.concurrency),
            rounds: runs.len(),
            ok: merged.ok,
            errors: merged.error_count(),
            error_kinds: merged.errors.clone(),
            tokens: merged.tokens,
            elapsed_s: secs,
            req_per_s: per_sec(merged.ok),
            tokens_per_s: per_sec(merged.tokens),
            ttft_ms: Summary::of(&mut merged.ttft_us),
            gap_ms: Summary::of(&mut merged.gaps_us),
            total_ms: Summary::of(&mut merged.total_us),
            stalled: crate::lane::stalled(&merged.max_gap_us, crate::lane::STALL),
            max_gap_ms: Summary::of(&mut merged.max_gap_us),
            procs,
            metrics_before: runs
                .first()
                .and_then(|m| m.metrics_before.clone())
                .unwrap_or_default(),
            metrics_after: runs
                .last()
                .and_then(|m| m.metrics_after.clone())
                .unwrap_or_default(),
            plateau: runs.iter().rev().find_map(|m| m.plateau.clone()),
        }
    }

    /// The gateway process's figures (the process named like the target), if watched.
    pub fn gateway(&self) -> Option<&ProcRow> {
        self.procs.get(&self.target)
    }
}

/// One scenario's outcome, as printed and as written to the JSON summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub rows: Vec<Row>,
    /// The `ratio ...` and other headline lines, as printed.
    pub lines: Vec<String>,
    /// Scenario-specific numbers (bytes per retained stream, soak samples, ...).
    pub extra: serde_json::Value,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.prec$}"),
        _ => "-".into(),
    }
}

/// A signed difference in ms, e.g. `+0.21`.
pub fn signed_ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.2}")
    } else {
        "-".into()
    }
}

/// The line printed after each run.
pub fn run_line(label: &str, m: &Measured) -> String {
    let r = Row::from_runs(std::slice::from_ref(m));
    let mut s = format!(
        "  [{label}] {:<12} C={:<5} ok {:<6} err {:<4} {:>8.1} req/s {:>9.0} tok/s | TTFT p50 {:.2} p99 {:.2} ms | gap p99 {:.2} ms",
        r.target,
        r.concurrency,
        r.ok,
        r.errors,
        r.req_per_s,
        r.tokens_per_s,
        r.ttft_ms.p50,
        r.ttft_ms.p99,
        r.gap_ms.p99
    );
    for (name, p) in &r.procs {
        let _ = write!(
            s,
            " | {name} {} ms/stream {:.1}→{:.1} MiB",
            opt(p.cpu_ms_per_stream, 3),
            p.rss_idle_mib,
            p.rss_peak_mib
        );
    }
    if !r.error_kinds.is_empty() {
        let _ = write!(s, " | errors {:?}", r.error_kinds);
    }
    if m.result.aborted {
        s.push_str(" | ABORTED at the hard time limit");
    }
    s
}

/// A table of rows: latencies, rates, and the gateway's and the load generator's cost.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>5} {:>7} {:>5} {:>9} {:>10} | {:>7} {:>7} {:>7} {:>8} | {:>6} {:>6} {:>7} | {:>8} {:>8} | {:>9} {:>9} {:>17} | {:>9}",
        "target", "C", "streams", "err", "req/s", "tok/s",
        "TTFT50", "TTFT90", "TTFT99", "TTFTmax",
        "gap50", "gap99", "gapmax",
        "total50", "total99",
        "gw ms/str", "gw µs/tok", "gw RSS MiB",
        "bench µs/tok"
    );
    for r in rows {
        let gw = r.gateway();
        let bench = r.procs.get("bench");
        let _ = writeln!(
            s,
            "{:<12} {:>5} {:>7} {:>5} {:>9.1} {:>10.0} | {:>7.2} {:>7.2} {:>7.2} {:>8.2} | {:>6.2} {:>6.2} {:>7.2} | {:>8.1} {:>8.1} | {:>9} {:>9} {:>17} | {:>9}",
            r.target,
            r.concurrency,
            r.ok,
            r.errors,
            r.req_per_s,
            r.tokens_per_s,
            r.ttft_ms.p50,
            r.ttft_ms.p90,
            r.ttft_ms.p99,
            r.ttft_ms.max,
            r.gap_ms.p50,
            r.gap_ms.p99,
            r.gap_ms.max,
            r.total_ms.p50,
            r.total_ms.p99,
            opt(gw.and_then(|g| g.cpu_ms_per_stream), 3),
            opt(gw.and_then(|g| g.cpu_us_per_token), 2),
            gw.map_or("-".into(), |g| format!(
                "{:.1}→{:.1}",
                g.rss_idle_mib, g.rss_peak_mib
            )),
            opt(bench.and_then(|b| b.cpu_us_per_token), 2),
        );
    }
    s
}

/// A duration in seconds for headings.
pub fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(target: &str, ok: u64, tokens: u64, cpu: f64, ttft: Vec<u32>) -> Measured {
        let mut costs = BTreeMap::new();
        costs.insert(
            target.to_owned(),
            Cost {
                cpu_ms: Some(cpu),
                rss: RssStats {
                    first_kib: 1024,
                    peak_kib: 4096,
                    last_kib: 2048,
                    samples: 3,
                },
            },
        );
        Measured {
            target: target.to_owned(),
            concurrency: 10,
            result: RunResult {
                elapsed: Duration::from_secs(2),
                ok,
                tokens,
                ttft_us: ttft,
                ..RunResult::default()
            },
            costs,
            metrics_before: None,
            metrics_after: None,
            plateau: None,
        }
    }

    #[test]
    fn rounds_merge_into_rates_and_costs() {
        let a = measured("sluice", 10, 500, 5.0, vec![1000, 2000]);
        let b = measured("sluice", 30, 1500, 15.0, vec![3000]);
        let r = Row::from_runs(&[a, b]);
        assert_eq!(r.rounds, 2);
        assert_eq!(r.ok, 40);
        assert_eq!(r.tokens_per_s, 500.0);
        assert_eq!(r.req_per_s, 10.0);
        assert_eq!(r.ttft_ms.p50, 2.0);
        let g = r.gateway().expect("gateway row");
        assert_eq!(g.cpu_ms_per_stream, Some(0.5));
        assert_eq!(g.cpu_us_per_token, Some(10.0));
        assert_eq!(g.rss_idle_mib, 1.0);
        assert_eq!(g.rss_peak_mib, 4.0);
        let t = table(&[r]);
        assert!(t.contains("sluice"));
        assert!(t.contains("0.500"));
    }

    #[test]
    fn signed() {
        assert_eq!(signed_ms(0.213), "+0.21");
        assert_eq!(signed_ms(-1.0), "-1.00");
        assert_eq!(signed_ms(f64::NAN), "-");
    }
}
