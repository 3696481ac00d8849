//! The `sluice` binary: parse the command line and hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = sluice_gateway::cli::Cli::parse();
    let code = sluice_gateway::cli::run(cli).await;
    std::process::exit(code);
}
