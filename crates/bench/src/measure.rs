//! One measured run: read the watched processes' CPU time and the gateway's metrics before,
//! sample their RSS while the load runs, read everything again after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, Endpoint};
use crate::load::{self, LoadSpec, Progress, Target};
use crate::procfs::{self, CpuReading, RssSampler};
use crate::prom::{self, Metrics};
use crate::report::{Cost, Measured, Snapshot};

/// RSS sampling period.
pub const RSS_EVERY: Duration = Duration::from_millis(200);

/// Name of this process among the watched ones.
pub const SELF_NAME: &str = "bench";

/// What to watch during a run besides the load itself.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Processes by name (the gateway under its target's name, `mock`, ...).
    pub pids: Vec<(String, u32)>,
    /// Where to scrape `GET /metrics` (Sluice).
    pub metrics: Option<Endpoint>,
    /// Take a [`Snapshot`] this long after the start (the open-streams plateau).
    pub snapshot_at: Option<Duration>,
}

/// Scrapes `/metrics`; `None` when it cannot be read (the figure is then left out).
pub async fn scrape(ep: &Endpoint) -> Option<Metrics> {
    client::get_text(ep, "/metrics", Duration::from_secs(5))
        .await
        .ok()
        .map(|t| prom::parse(&t))
}

fn cpu_all(pids: &[(String, u32)]) -> BTreeMap<String, Option<CpuReading>> {
    pids.iter()
        .map(|(n, p)| (n.clone(), procfs::cpu_reading(*p)))
        .collect()
}

/// Runs `spec` against `target` while watching `watch`.
pub async fn measure(target: &Target, spec: &LoadSpec, watch: &Watch) -> Measured {
    let mut pids = watch.pids.clone();
    pids.push((SELF_NAME.to_owned(), std::process::id()));
    let tck = procfs::clock_ticks_per_sec();
    let metrics_before = match &watch.metrics {
        Some(ep) => scrape(ep).await,
        None => None,
    };
    let before = cpu_all(&pids);
    let sampler = RssSampler::start(pids.clone(), RSS_EVERY);
    let start = Instant::now();
    let snapshot = watch.snapshot_at.map(|at| {
        let pids = pids.clone();
        let metrics = watch.metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let rss_kib = pids
                .iter()
                .filter_map(|(n, p)| procfs::rss_kib(*p).map(|k| (n.clone(), k)))
                .collect();
            let metrics = match &metrics {
                Some(ep) => scrape(ep).await.unwrap_or_default(),
                None => Metrics::new(),
            };
            Snapshot {
                at_s: start.elapsed().as_secs_f64(),
                rss_kib,
                metrics,
            }
        })
    });
    let result = load::run(target, spec, Arc::new(Progress::default())).await;
    let rss = sampler.finish().await;
    let after = cpu_all(&pids);
    let metrics_after = match &watch.metrics {
        Some(ep) => scrape(ep).await,
        None => None,
    };
    let plateau = match snapshot {
        Some(h) => {
            if !h.is_finished() {
                h.abort();
            }
            h.await.ok()
        }
        None => None,
    };
    let costs = pids
        .iter()
        .map(|(name, _)| {
            let cpu_ms = match (before.get(name), after.get(name)) {
                (Some(Some(b)), Some(Some(a))) => procfs::cpu_ms_between(*b, *a, tck),
                _ => None,
            };
            let cost = Cost {
                cpu_ms,
                rss: rss.get(name).copied().unwrap_or_default(),
            };
            (name.clone(), cost)
        })
        .collect();
    Measured {
        target: target.name.clone(),
        concurrency: spec.concurrency,
        result,
        costs,
        metrics_before,
        metrics_after,
        plateau,
    }
}
