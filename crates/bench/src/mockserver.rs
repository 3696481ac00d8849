//! `sluice-bench mock-upstream`: the same mock upstream as `sluice mock-upstream` (the
//! `mock-upstream` crate's router), plus `GET /health`, which vllm-router polls on every
//! worker before it starts (it ignores `--health-check-endpoint` for that first check) and
//! which the demo upstream does not serve. The suite uses it for every target of a run that
//! includes vllm-router, so that all targets share one upstream.

use std::io::Write as _;

use anyhow::Context;
use axum::routing::get;

/// Serves on `addr` until the process is killed; prints `listening on http://HOST:PORT`.
pub async fn serve(addr: &str) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    println!("listening on http://{local}");
    std::io::stdout().flush().context("stdout")?;
    // The loads shape every answer through the `mock` knobs.
    let app = mock_upstream::app(mock_upstream::MockConfig {
        knobs: true,
        ..mock_upstream::MockConfig::default()
    })
    .route("/health", get(|| async { "ok" }));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.context("serve")
}
