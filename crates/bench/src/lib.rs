//! sluice-bench: what a gateway adds on top of a direct connection to an OpenAI-compatible
//! upstream, measured as ratios in one run with the targets interleaved (never as timed tests).
//!
//! ```text
//! cargo build --release -p sluice-gateway -p sluice-bench
//! target/release/sluice-bench suite                      # ttft, throughput, open, retention
//! target/release/sluice-bench suite --quick --vllm-router
//! target/release/sluice-bench suite --scenarios soak --minutes 10 --concurrency 200 --after-secs 360
//! target/release/sluice-bench load --url http://127.0.0.1:8080 --key KEY --concurrency 100 \
//!     --tokens 200 --delay-ms 10 --duration 10 --pid sluice=PID --metrics
//! ```
//!
//! Figures go to stdout; `target/bench/` gets `summary.json`, `ttft.svg`, `soak.svg` and the
//! peers' logs.

/// SVG charts: added TTFT against concurrency, soak curves.
pub mod chart;
/// The command line: `suite` and `load`.
pub mod cli;
/// hyper client connections and one timed streaming request.
pub mod client;
/// The stream lane's stall and hold rules.
pub mod lane;
/// One load run: workers, stop conditions, merged samples.
pub mod load;
/// One measured run: CPU, RSS and metrics around a load run.
pub mod measure;
/// The mock upstream plus `/health`, for gateways that poll it (vllm-router).
pub mod mockserver;
/// Spawning the mock upstream, Sluice and other gateways.
pub mod peers;
/// CPU time and RSS from /proc.
pub mod procfs;
/// Prometheus text format into a name -> value map.
pub mod prom;
/// Rows, tables and ratio lines.
pub mod report;
/// The suite's scenarios.
pub mod scenarios;
/// The soak: Sluice under load for minutes, sampled.
pub mod soak;
/// The cheap SSE scan that counts content tokens.
pub mod sse;
/// Percentiles.
pub mod stats;
