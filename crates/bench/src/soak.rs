//! The soak: steady load through Sluice for minutes, sampling its memory and relay counters
//! every few seconds (printed as rows, charted to `soak.svg`), then, after the load stops, a
//! while longer to show memory coming back as retained streams expire.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::chart::{self, Curve};
use crate::load::{self, LoadSpec, Progress, Target};
use crate::measure::{scrape, Watch};
use crate::procfs;
use crate::report::mib;
use crate::scenarios::SoakOpts;

/// One soak sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// `load` while the load runs, `after` once it has stopped.
    pub phase: &'static str,
    pub rss_mib: f64,
    pub relay_mib: Option<f64>,
    pub live: Option<f64>,
    pub finished: Option<f64>,
    pub evicted: Option<f64>,
    pub refused: Option<f64>,
    pub oldest_retained_s: Option<f64>,
    pub ok: u64,
    pub errors: u64,
    pub tokens_per_s: f64,
}

fn cell(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

const HEADER: &str = "      t  phase      RSS MiB  relay MiB    live  finished  evicted  refused  oldest s      ok  errors     tok/s";

impl Sample {
    fn row(&self) -> String {
        format!(
            "{:>7.1}  {:<6} {:>10.1} {:>10} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9.0}",
            self.t_s,
            self.phase,
            self.rss_mib,
            cell(self.relay_mib, 1),
            cell(self.live, 0),
            cell(self.finished, 0),
            cell(self.evicted, 0),
            cell(self.refused, 0),
            cell(self.oldest_retained_s, 0),
            self.ok,
            self.errors,
            self.tokens_per_s
        )
    }
}

/// Runs the soak against `target` (Sluice, process `pid`); returns the headline lines and the
/// samples as JSON. Writes `soak.svg` to `out`.
pub async fn run(
    target: &Target,
    watch: &Watch,
    pid: u32,
    spec: &LoadSpec,
    opts: &SoakOpts,
    out: &Path,
) -> anyhow::Result<(Vec<String>, serde_json::Value)> {
    let progress = Arc::new(Progress::default());
    let load = {
        let (t, s, p) = (target.clone(), spec.clone(), Arc::clone(&progress));
        tokio::spawn(async move { load::run(&t, &s, p).await })
    };
    let start = Instant::now();
    // However the load behaves, sampling ends by then.
    let hard_end = start + spec.hard_limit() + opts.after + Duration::from_secs(30);
    let mut tick = tokio::time::interval(opts.sample_every.max(Duration::from_millis(200)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples: Vec<Sample> = Vec::new();
    let mut load_ended: Option<Instant> = None;
    let (mut last_t, mut last_tokens) = (0.0, 0u64);
    println!("{HEADER}");
    loop {
        tick.tick().await;
        let now = Instant::now();
        if load_ended.is_none() && load.is_finished() {
            load_ended = Some(now);
        }
        let metrics = match &watch.metrics {
            Some(ep) => scrape(ep).await.unwrap_or_default(),
            None => Default::default(),
        };
        let t_s = start.elapsed().as_secs_f64();
        let tokens = progress.tokens.load(Ordering::Relaxed);
        let dt = t_s - last_t;
        let m = |k: &str| metrics.get(k).copied();
        let s = Sample {
            t_s,
            phase: if load_ended.is_some() {
                "after"
            } else {
                "load"
            },
            rss_mib: procfs::rss_kib(pid).map_or(0.0, mib),
            relay_mib: m("sluice_relay_bytes").map(|b| b / (1024.0 * 1024.0)),
            live: m("sluice_relay_live_streams"),
            finished: m("sluice_relay_finished_streams"),
            evicted: m("sluice_relay_evicted_streams_total"),
            refused: m("sluice_relay_refused_streams_total"),
            oldest_retained_s: m("sluice_relay_oldest_retained_seconds"),
            ok: progress.ok.load(Ordering::Relaxed),
            errors: progress.errors.load(Ordering::Relaxed),
            tokens_per_s: if dt > 0.0 {
                tokens.saturating_sub(last_tokens) as f64 / dt
            } else {
                0.0
            },
        };
        (last_t, last_tokens) = (t_s, tokens);
        println!("{}", s.row());
        samples.push(s);
        let after_done = load_ended.is_some_and(|e| now.duration_since(e) >= opts.after);
        if after_done || now >= hard_end {
            break;
        }
    }
    if !load.is_finished() {
        load.abort();
    }
    let result = load.await.unwrap_or_default();
    let max = |f: fn(&Sample) -> Option<f64>| {
        samples
            .iter()
            .filter_map(f)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    };
    let first_rss = samples.first().map_or(0.0, |s| s.rss_mib);
    let last = samples.last();
    let lines = vec![format!(
        "soak: {} streams ok, {} errors {:?}, {:.0} tokens/s; sluice RSS {first_rss:.1} MiB at start, peak {:.1}, last {:.1}; relay peak {} MiB; evicted {}, refused {}, oldest retained {} s",
        result.ok,
        result.error_count(),
        result.errors,
        result.tokens as f64 / result.elapsed.as_secs_f64().max(1e-9),
        max(|s| Some(s.rss_mib)).unwrap_or(0.0),
        last.map_or(0.0, |s| s.rss_mib),
        cell(max(|s| s.relay_mib), 1),
        cell(last.and_then(|s| s.evicted), 0),
        cell(last.and_then(|s| s.refused), 0),
        cell(max(|s| s.oldest_retained_s), 0),
    )];
    for l in &lines {
        println!("{l}");
    }
    let t: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let top = [
        Curve {
            name: "sluice RSS",
            values: col(|s| s.rss_mib),
        },
        Curve {
            name: "sluice_relay_bytes",
            values: col(|s| s.relay_mib.unwrap_or(0.0)),
        },
    ];
    let bottom = [
        Curve {
            name: "errors",
            values: col(|s| s.errors as f64),
        },
        Curve {
            name: "evicted",
            values: col(|s| s.evicted.unwrap_or(0.0)),
        },
        Curve {
            name: "refused",
            values: col(|s| s.refused.unwrap_or(0.0)),
        },
    ];
    let svg = out.join("soak.svg");
    match chart::soak(&svg, &t, &top, &bottom) {
        Ok(()) => println!("wrote {}", svg.display()),
        Err(e) => println!("note: no soak chart: {e:#}"),
    }
    Ok((
        lines,
        json!({ "samples": samples, "ok": result.ok, "errors": result.errors }),
    ))
}
