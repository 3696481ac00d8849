//! The command line: `sluice [--config FILE] [--addr ADDR]`, and the `mock-upstream`,
//! `check-config` and `gen-key` subcommands.

use std::io::Write;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::bootstrap::Gateway;
use crate::config::{self, Flags, Settings};
use crate::signals;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "An LLM token streaming gateway")]
pub struct Cli {
    /// TOML config file (also SLUICE_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<String>,
    /// Listen address HOST:PORT; port 0 picks a free port (also SLUICE_ADDR).
    #[arg(long, global = true, value_name = "ADDR")]
    pub addr: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the built-in demo upstream alone (an OpenAI-compatible server).
    MockUpstream {
        /// Tokens per second of the demo model (0: as fast as possible).
        #[arg(long)]
        tokens_per_sec: Option<f64>,
    },
    /// Validate a config file; exits non-zero with a message naming the bad key.
    CheckConfig,
    /// Print a new random API key and, on a second line, its SHA-256 in hex.
    GenKey,
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let flags = Flags {
        config: cli.config.clone(),
        addr: cli.addr.clone(),
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let vars = match config::read_vars(&cwd) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sluice: {e}");
            return 2;
        }
    };
    match cli.command {
        Some(Command::GenKey) => {
            let (key, hash) = crate::keys::generate();
            println!("{key}\n{hash}");
            0
        }
        Some(Command::CheckConfig) => {
            if flags.config.is_none() && !vars.contains_key(config::ENV_CONFIG) {
                eprintln!("sluice: check-config needs --config FILE");
                return 2;
            }
            match Settings::load(&flags, &vars) {
                Ok(s) => {
                    println!(
                        "config ok: {} provider(s), {} team(s), listening on {}",
                        s.providers.len(),
                        s.teams.len(),
                        s.addr
                    );
                    0
                }
                Err(e) => {
                    eprintln!("sluice: {e}");
                    1
                }
            }
        }
        Some(Command::MockUpstream { tokens_per_sec }) => {
            crate::init_tracing(&vars);
            let addr = flags
                .addr
                .clone()
                .or_else(|| vars.get(config::ENV_ADDR).cloned())
                .unwrap_or_else(|| "127.0.0.1:8081".into());
            let tps = tokens_per_sec
                .or_else(|| {
                    vars.get(config::ENV_DEMO_TOKENS_PER_SEC)
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(mock_upstream::DEFAULT_TOKENS_PER_SEC);
            let listener = match TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("sluice: cannot listen on {addr}: {e}");
                    return 1;
                }
            };
            if let Ok(a) = listener.local_addr() {
                announce(a);
            }
            // A test upstream, run on purpose (sluice-bench drives it): the knobs are its point.
            let cfg = mock_upstream::MockConfig {
                tokens_per_sec: tps,
                knobs: true,
            };
            match mock_upstream::serve(listener, cfg, signals::shutdown_signal()).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    1
                }
            }
        }
        None => serve(flags, vars).await,
    }
}

fn announce(addr: std::net::SocketAddr) {
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
}

async fn serve(flags: Flags, vars: config::Vars) -> i32 {
    let settings = match Settings::load(&flags, &vars) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return 2;
        }
    };
    crate::init_tracing(&vars);
    crate::bootstrap::log_host_limits(&settings);
    let gateway = match Gateway::bind(settings).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sluice: {e}");
            return 1;
        }
    };
    #[cfg(unix)]
    signals::reload_on_hangup(gateway.state().clone(), flags.clone(), vars.clone());
    if let Ok(a) = gateway.local_addr() {
        announce(a);
    }
    gateway.log_started();
    match gateway.serve(signals::shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice: {e}");
            1
        }
    }
}
