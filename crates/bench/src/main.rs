//! The `sluice-bench` binary: parse the command line, build a lean runtime, run.

use std::process::ExitCode;

use clap::Parser;
use sluice_bench::cli::{Cli, Command};

/// The allocator the `sluice` binary uses: for `sluice-bench mock-upstream`, so that it costs
/// what `sluice mock-upstream` costs, and it keeps the load generator lean as well.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The load generator shares the machine with what it measures: by default it runs on the
    // current thread, so it takes at most one core.
    // The mock server runs as `sluice mock-upstream` does: one worker per core.
    let runtime = if matches!(cli.command, Command::MockUpstream { .. }) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else if cli.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.client_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C or SIGTERM the run is dropped, and with it the children (kill_on_drop).
    let result = runtime.block_on(async {
        tokio::select! {
            r = sluice_bench::cli::run(cli) => r,
            s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
