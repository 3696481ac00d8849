//! The suite's `stream` scenario, Busbar's "On the Bench" stream lane: every answer is a role
//! chunk, 64 content deltas 20 ms apart, finish and `[DONE]` (the bench mock's knobs). First
//! the added TTFT at C=1, a few requests per target at a time, interleaved; then a sweep of
//! concurrency steps, each run against every target in turn, where a step holds by
//! [`lane::verdict`]. The rules are in `lane.rs`; this file only runs and prints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::{fmt, versus_direct, Suite};
use crate::chart;
use crate::lane::{self, StepCounts};
use crate::load::Stop;
use crate::report::{self, Row, ScenarioReport};
use crate::stats::ratio;

/// CPU per stream of the process that served the row: the gateway, or for direct the mock.
fn serving_cpu_ms(r: &Row) -> Option<f64> {
    let name = if r.target == "direct" {
        "mock"
    } else {
        r.target.as_str()
    };
    r.procs.get(name).and_then(|p| p.cpu_ms_per_stream)
}

fn counts(r: &Row) -> StepCounts {
    StepCounts {
        ok: r.ok,
        failed: r.errors,
        frames: r.tokens,
        stalled: r.stalled,
    }
}

impl Suite {
    pub(super) async fn stream(&mut self) -> anyhow::Result<ScenarioReport> {
        let o = self.opts.stream.clone();
        let quick = self.opts.quick;
        let c1_requests = if quick {
            o.c1_requests.min(10)
        } else {
            o.c1_requests
        };
        let step_secs = if quick {
            o.step_secs.min(2.0)
        } else {
            o.step_secs
        };
        let steps: Vec<usize> = if quick {
            o.steps.iter().copied().take(2).collect()
        } else {
            o.steps.clone()
        };
        let stream_len =
            Duration::from_millis(u64::from(lane::FRAMES) * u64::from(lane::FRAME_DELAY_MS));
        let per_round = c1_requests.min(5);
        let c1_rounds = usize::try_from(c1_requests.div_ceil(per_round)).unwrap_or(1);
        let description = format!(
            "{} deltas {} ms apart per stream; C=1: {} requests per target, {per_round} at a time, interleaved; sweep C={steps:?}: {} s of starts per target and step (ramped over one stream, {} s), a step holds when every frame arrives, no gap > {} ms and < {} % of streams fail",
            lane::FRAMES,
            lane::FRAME_DELAY_MS,
            c1_rounds as u64 * per_round,
            report::secs(Duration::from_secs_f64(step_secs)),
            report::secs(stream_len),
            lane::STALL.as_millis(),
            lane::MAX_FAILED_SHARE * 100.0,
        );
        self.heading("stream", &description);
        let lineup = self.lineup("stream", true).await?;
        let targets = lineup.targets(true)?;
        self.warm_up(&targets).await;

        let c1_spec = self.spec(
            1,
            lane::FRAMES,
            lane::FRAME_DELAY_MS,
            Stop::Requests(per_round),
        );
        let c1_rows = self
            .interleaved("stream C=1", &targets, &[c1_spec], c1_rounds)
            .await;
        let sweep_specs: Vec<_> = steps
            .iter()
            .map(|&c| {
                let mut s = self.spec(
                    c,
                    lane::FRAMES,
                    lane::FRAME_DELAY_MS,
                    Stop::After(Duration::from_secs_f64(step_secs)),
                );
                s.ramp = stream_len;
                s
            })
            .collect();
        let sweep_rows = self.interleaved("stream", &targets, &sweep_specs, 1).await;
        lineup.stop().await;

        print!("{}", report::table(&c1_rows));
        print!("{}", report::table(&sweep_rows));
        let mut lines = Vec::new();
        if let Some((direct, others)) = versus_direct(&c1_rows, 1) {
            for r in others {
                lines.push(format!(
                    "ratio {}/direct stream C=1: added TTFT p50 {} ms, p99 {} ms (n {} vs {}); gap p50 {:.2} / p99 {:.2} ms (direct {:.2} / {:.2}); longest gap p99 {:.1} ms; {} CPU {} ms/stream; errors {} vs {}",
                    r.target,
                    report::signed_ms(r.ttft_ms.p50 - direct.ttft_ms.p50),
                    report::signed_ms(r.ttft_ms.p99 - direct.ttft_ms.p99),
                    r.ttft_ms.n,
                    direct.ttft_ms.n,
                    r.gap_ms.p50,
                    r.gap_ms.p99,
                    direct.gap_ms.p50,
                    direct.gap_ms.p99,
                    r.max_gap_ms.p99,
                    r.target,
                    fmt(serving_cpu_ms(r), 3),
                    r.errors,
                    direct.errors,
                ));
            }
        }
        let mut held: BTreeMap<String, Vec<(usize, bool)>> = BTreeMap::new();
        let mut extra_steps = Vec::new();
        let mut chart_steps = Vec::new();
        for r in &sweep_rows {
            let v = lane::verdict(&counts(r), lane::FRAMES);
            held.entry(r.target.clone())
                .or_default()
                .push((r.concurrency, v.holds));
            let direct = versus_direct(&sweep_rows, r.concurrency).map(|(d, _)| d);
            let vs =
                |a: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("x{:.3}", ratio(a, b)));
            let cpu = serving_cpu_ms(r);
            let direct_cpu = direct.and_then(serving_cpu_ms);
            lines.push(format!(
                "stream C={} {}: {}; {:.0} frames/s{}; gap p50 {:.2} / p99 {:.2} ms; {} stalled (> {} ms) of {} ok, {} failed{}; TTFT p50 {:.2} ms{}; CPU {} ms per {}-frame stream{}",
                r.concurrency,
                r.target,
                if v.holds {
                    "holds".to_owned()
                } else {
                    format!("BREAKS ({})", v.reasons.join("; "))
                },
                r.tokens_per_s,
                if r.target == "direct" {
                    String::new()
                } else {
                    format!(" ({})", vs(r.tokens_per_s, direct.map(|d| d.tokens_per_s)))
                },
                r.gap_ms.p50,
                r.gap_ms.p99,
                r.stalled,
                lane::STALL.as_millis(),
                r.ok,
                r.errors,
                if r.error_kinds.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", r.error_kinds)
                },
                r.ttft_ms.p50,
                if r.target == "direct" {
                    String::new()
                } else {
                    format!(" ({})", vs(r.ttft_ms.p50, direct.map(|d| d.ttft_ms.p50)))
                },
                fmt(cpu, 3),
                lane::FRAMES,
                match (r.target.as_str(), cpu) {
                    ("direct", _) => " (the mock)".to_owned(),
                    (_, Some(c)) => format!(" ({} of the mock's direct)", vs(c, direct_cpu)),
                    _ => String::new(),
                },
            ));
            chart_steps.push(chart::StreamStep {
                target: r.target.clone(),
                concurrency: r.concurrency,
                cpu_ms_per_stream: cpu,
                stalled_pct: if r.ok > 0 {
                    100.0 * r.stalled as f64 / r.ok as f64
                } else {
                    0.0
                },
            });
            extra_steps.push(json!({
                "target": r.target, "concurrency": r.concurrency, "verdict": v,
                "frames_per_s": r.tokens_per_s, "gap_p50_ms": r.gap_ms.p50,
                "gap_p99_ms": r.gap_ms.p99, "stalled": r.stalled, "ok": r.ok,
                "failed": r.errors, "ttft_p50_ms": r.ttft_ms.p50,
                "cpu_ms_per_stream": cpu, "longest_gap_p99_ms": r.max_gap_ms.p99,
            }));
        }
        let sustained: BTreeMap<String, usize> = held
            .iter()
            .map(|(t, s)| (t.clone(), lane::sustained(s)))
            .collect();
        lines.push(format!(
            "stream sustained (highest step held with every step below it): {}",
            sustained
                .iter()
                .map(|(t, c)| format!("{t} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for l in &lines {
            println!("{l}");
        }
        let svg = self.opts.out.join("stream.svg");
        match chart::stream_lane(&svg, &chart_steps) {
            Ok(()) => println!("wrote {}", svg.display()),
            Err(e) => println!("note: no chart: {e:#}"),
        }
        let mut rows = c1_rows;
        rows.extend(sweep_rows);
        Ok(ScenarioReport {
            name: "stream".into(),
            description,
            rows,
            lines,
            extra: json!({ "steps": extra_steps, "sustained": sustained }),
        })
    }
}
