//! Process signals: SIGHUP reloads the teams, SIGINT and SIGTERM start the shutdown.

use crate::config::{Flags, Settings, Vars};
use crate::state::AppState;

/// Re-reads the config file the server started with and applies its `[[teams]]` and limit
/// window (other settings need a restart). Limiters of unchanged teams are kept. A file that
/// does not validate changes nothing.
pub fn reload_teams(state: &AppState, flags: &Flags, vars: &Vars) -> Result<String, String> {
    if state.settings.config_path.is_none() {
        return Err("the server was started without a config file: nothing to reload".into());
    }
    let s = Settings::load(flags, vars).map_err(|e| e.to_string())?;
    state.access.reload(s.teams, s.rate_limit_window)
}

/// From now on, reloads the teams on every SIGHUP, logging the outcome. The handler is in
/// place when this returns (before the server announces itself, so an early SIGHUP does not
/// take the default action and end the process).
#[cfg(unix)]
pub fn reload_on_hangup(state: AppState, flags: Flags, vars: Vars) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: config reload is off");
            return;
        }
    };
    state.lifecycle.clone().spawn(async move {
        while hup.recv().await.is_some() {
            match reload_teams(&state, &flags, &vars) {
                Ok(summary) => tracing::info!("SIGHUP: teams reloaded: {summary}"),
                Err(e) => {
                    tracing::warn!("SIGHUP: config not reloaded, keeping the current teams: {e}")
                }
            }
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
