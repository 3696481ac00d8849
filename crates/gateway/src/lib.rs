//! The `sluice` gateway: configuration, access control, routes, and the glue between the
//! provider-adapter (upstreams in) and the relay (numbered, resumable streams out).

pub mod access;
pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod glob;
pub mod keys;
pub mod metrics;
pub mod pump;
pub mod routes;
pub mod routing;
pub mod server;
pub mod state;

pub use app::app;
pub use server::{build_state, serve};

/// Logs go to stderr (stdout carries the `listening on` line), filtered by `SLUICE_LOG` or
/// `RUST_LOG` (default `info`).
pub fn init_tracing(vars: &config::Vars) {
    let filter = vars
        .get("SLUICE_LOG")
        .or_else(|| vars.get("RUST_LOG"))
        .cloned()
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
