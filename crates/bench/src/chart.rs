//! SVG charts (plotters, SVG backend only): added TTFT against concurrency, the stream lane's
//! CPU and stalls against concurrency, and the soak's curves over time.

use std::path::Path;

use anyhow::{bail, Context};
use plotters::prelude::*;
use serde::Serialize;

/// What a gateway added to the direct figures at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct AddedTtft {
    pub target: String,
    pub concurrency: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub gap_p99_ms: f64,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The (min, max) of `values` widened to include 0 and padded by 10 %.
fn y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.1).max(0.1);
    (lo - pad, hi + pad)
}

/// Added TTFT p50 and p99 (target minus direct) against concurrency, one pair of lines per
/// gateway, x on a log scale.
pub fn added_ttft(path: &Path, data: &[AddedTtft]) -> anyhow::Result<()> {
    if data.is_empty() {
        bail!("no gateway rows to chart");
    }
    let max_c = data.iter().map(|d| d.concurrency).max().unwrap_or(1) as f64;
    let (lo, hi) = y_range(data.iter().flat_map(|d| [d.p50_ms, d.p99_ms]));
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Added time to first token (gateway minus direct)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8f64..max_c * 1.5).log_scale(), lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("concurrent streams")
        .y_desc("added TTFT (ms)")
        .draw()?;
    // Gateways in order of first appearance (the rows come level by level).
    let mut targets: Vec<&str> = Vec::new();
    for d in data {
        if !targets.contains(&d.target.as_str()) {
            targets.push(&d.target);
        }
    }
    for (i, t) in targets.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<&AddedTtft> = data.iter().filter(|d| d.target == *t).collect();
        pts.sort_by_key(|d| d.concurrency);
        for (label, p99) in [("p50", false), ("p99", true)] {
            let series = pts
                .iter()
                .map(|d| (d.concurrency as f64, if p99 { d.p99_ms } else { d.p50_ms }));
            // p99 in a paler shade of the gateway's colour.
            let style = if p99 {
                color.mix(0.45).stroke_width(2)
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(series, style).point_size(4))?
                .label(format!("{t} {label}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present().context("write SVG")?;
    Ok(())
}

/// One target at one step of the stream lane's sweep.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStep {
    pub target: String,
    pub concurrency: usize,
    /// CPU of the serving process per 64-frame stream (the mock's for direct).
    pub cpu_ms_per_stream: Option<f64>,
    /// Share of the step's successful streams with a gap over the stall limit, in percent.
    pub stalled_pct: f64,
}

/// The stream lane: CPU per stream (top) and stalled streams (bottom) against concurrency, one
/// line per target, x on a log scale.
pub fn stream_lane(path: &Path, data: &[StreamStep]) -> anyhow::Result<()> {
    if data.is_empty() {
        bail!("no steps to chart");
    }
    let min_c = data.iter().map(|d| d.concurrency).min().unwrap_or(1) as f64;
    let max_c = data.iter().map(|d| d.concurrency).max().unwrap_or(1) as f64;
    let mut targets: Vec<&str> = Vec::new();
    for d in data {
        if !targets.contains(&d.target.as_str()) {
            targets.push(&d.target);
        }
    }
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(380);
    type Pick = fn(&StreamStep) -> Option<f64>;
    let panels: [(
        &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        &str,
        &str,
        Pick,
    ); 2] = [
        (
            &upper,
            "Stream lane: CPU per 64-frame stream (direct: the mock itself)",
            "CPU ms per stream",
            |d| d.cpu_ms_per_stream,
        ),
        (
            &lower,
            "Streams stalled (a gap over 200 ms)",
            "% of streams",
            |d| Some(d.stalled_pct),
        ),
    ];
    for (n, (area, title, y_desc, pick)) in panels.into_iter().enumerate() {
        let top = n == 0;
        let (lo, hi) = y_range(data.iter().filter_map(pick));
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((min_c * 0.8..max_c * 1.25).log_scale(), lo.max(0.0)..hi)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("concurrent streams")
            .y_desc(y_desc)
            .draw()?;
        for (i, t) in targets.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut pts: Vec<(f64, f64)> = data
                .iter()
                .filter(|d| d.target == *t)
                .filter_map(|d| pick(d).map(|v| (d.concurrency as f64, v)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)).point_size(4))?
                .label(*t)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            // Out of the lines' way: CPU falls to the right, stalls rise there.
            .position(if top {
                SeriesLabelPosition::LowerLeft
            } else {
                SeriesLabelPosition::UpperLeft
            })
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present().context("write SVG")?;
    Ok(())
}

/// A named curve over the soak's sample times.
pub struct Curve<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

/// Two panels over time: `top` (memory, MiB) and `bottom` (counts).
pub fn soak(path: &Path, t: &[f64], top: &[Curve<'_>], bottom: &[Curve<'_>]) -> anyhow::Result<()> {
    if t.is_empty() {
        bail!("no samples to chart");
    }
    let t_max = t.iter().copied().fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(420);
    for (area, curves, title, y_desc) in [
        (&upper, top, "Sluice soak: memory", "MiB"),
        (
            &lower,
            bottom,
            "errors, evictions, refusals (cumulative)",
            "count",
        ),
    ] {
        let (lo, hi) = y_range(curves.iter().flat_map(|c| c.values.iter().copied()));
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, lo.max(0.0)..hi)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .draw()?;
        for (i, c) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    t.iter().copied().zip(c.values.iter().copied()),
                    color.stroke_width(2),
                ))?
                .label(c.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present().context("write SVG")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svgs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("ttft.svg");
        // Level by level, two gateways interleaved, as the suite produces them.
        let data: Vec<AddedTtft> = [(1, 0.1, 0.3), (100, 0.2, 1.5), (1000, -0.1, 4.0)]
            .iter()
            .flat_map(|&v| [("sluice", v), ("other", v)])
            .map(|(t, (c, p50, p99))| AddedTtft {
                target: t.into(),
                concurrency: c,
                p50_ms: p50,
                p99_ms: p99,
                gap_p99_ms: 0.0,
            })
            .collect();
        added_ttft(&p, &data).expect("ttft chart");
        let svg = std::fs::read_to_string(&p).expect("svg written");
        assert!(svg.starts_with("<svg"));
        // One legend entry per gateway and percentile (the SVG puts each label on a line).
        let legend = |label: &str| svg.lines().filter(|l| l.trim() == label).count();
        assert_eq!(legend("sluice p99"), 1);
        assert_eq!(legend("other p50"), 1);
        assert!(added_ttft(&p, &[]).is_err());

        let p = dir.path().join("soak.svg");
        let t = [0.0, 2.0, 4.0];
        let top = [Curve {
            name: "RSS",
            values: vec![10.0, 20.0, 15.0],
        }];
        let bottom = [Curve {
            name: "errors",
            values: vec![0.0, 0.0, 1.0],
        }];
        soak(&p, &t, &top, &bottom).expect("soak chart");
        assert!(std::fs::read_to_string(&p)
            .expect("svg written")
            .contains("errors"));
    }

    #[test]
    fn writes_the_stream_lane_chart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("stream.svg");
        let data: Vec<StreamStep> = [(64, 1.6, 0.0), (1024, 0.8, 0.0), (2048, 0.7, 12.5)]
            .iter()
            .flat_map(|&v| [("direct", v), ("sluice", v)])
            .map(|(t, (c, cpu, stalled))| StreamStep {
                target: t.into(),
                concurrency: c,
                cpu_ms_per_stream: Some(cpu),
                stalled_pct: stalled,
            })
            .collect();
        stream_lane(&p, &data).expect("stream chart");
        let svg = std::fs::read_to_string(&p).expect("svg written");
        // Each target in the legend of both panels.
        assert_eq!(svg.lines().filter(|l| l.trim() == "sluice").count(), 2);
        assert!(stream_lane(&p, &[]).is_err());
    }

    #[test]
    fn y_range_includes_zero_and_pads() {
        assert_eq!(y_range([1.0, 2.0].into_iter()), (-0.2, 2.2));
        let (lo, hi) = y_range([f64::NAN].into_iter());
        assert!(lo < 0.0 && hi > 0.0);
    }
}
