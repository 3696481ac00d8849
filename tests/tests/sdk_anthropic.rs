//! The Anthropic clients against the real `sluice`, every model served by an OpenAI-compatible
//! upstream: the Anthropic Python SDK (`tests/sdk/anthropic_python.py`), the AI SDK's
//! `createAnthropic` (`tests/sdk/anthropic_aisdk.mjs`) and Claude Code (`claude -p`).

use std::time::Duration;

use sluice_tests::e2e::{openai_provider, sse_steps, up_stream};
use sluice_tests::scripted::{serve, ScriptedUpstream};
use sluice_tests::sdk::{
    claude_code, node_package, python_package, require, run_checks, run_script,
};
use sluice_tests::{Gateway, Sluice};

use crate::messages_api::{broken_steps, tool_stream};

const TEXT: &[&str] = &["Hello", " from", " Sluice"];

/// The upstreams of `claude-text`, `claude-tools` and `claude-broken`, and a gateway serving
/// them (the upstreams must live as long as the gateway).
async fn gateway() -> (Sluice, Vec<ScriptedUpstream>) {
    let text = serve(sse_steps([up_stream(TEXT)])).await;
    let tools = serve(sse_steps([tool_stream()])).await;
    let broken = serve(broken_steps()).await;
    let toml = openai_provider("text", &text.base_url(), &["claude-text"])
        + &openai_provider("tools", &tools.base_url(), &["claude-tools"])
        + &openai_provider("broken", &broken.base_url(), &["claude-broken"]);
    let s = Gateway::builder().config(&toml).demo(false).start();
    (s, vec![text, tools, broken])
}

/// Runs a blocking script off the runtime's threads, which serve the scripted upstreams.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("script thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_against_sluice() {
    let Some(()) = require(python_package("anthropic")) else {
        return;
    };
    let (s, _ups) = gateway().await;
    let base = s.url("");
    let base = base.trim_end_matches('/').to_owned();
    blocking(move || {
        run_checks(
            &s,
            "python3",
            &["anthropic_python.py", &base],
            Duration::from_secs(120),
            "PASS anthropic-python: every check passed",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_create_anthropic_against_sluice() {
    let Some(()) = require(node_package("ai").and(node_package("@ai-sdk/anthropic"))) else {
        return;
    };
    let (s, _ups) = gateway().await;
    let base = s.url("/v1");
    blocking(move || {
        run_checks(
            &s,
            "node",
            &["anthropic_aisdk.mjs", &base],
            Duration::from_secs(120),
            "PASS anthropic-aisdk: every check passed",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_prints_an_answer_served_by_an_openai_compatible_upstream() {
    let Some(claude) = require(claude_code()) else {
        return;
    };
    let up = serve(sse_steps([up_stream(TEXT)])).await;
    // Claude Code asks for its own model names: a route sends them to the upstream.
    let toml = openai_provider("local", &up.base_url(), &[])
        + "[[routes]]\nmodel = \"claude-*\"\ntargets = [\"local:up-model\"]\n";
    let s = Gateway::builder().config(&toml).demo(false).start();
    let root = s.url("");
    let root = root.trim_end_matches('/').to_owned();
    let home = tempfile::tempdir().expect("temp HOME");
    let home_path = home.path().display().to_string();
    // An older model name and a newer one: Claude Code shapes its request by the model
    // (thinking with a budget, or adaptive thinking with system turns among the messages).
    let (outs, s) = blocking(move || {
        let claude = claude.display().to_string();
        let env = [
            format!("HOME={home_path}"),
            format!("ANTHROPIC_BASE_URL={root}"),
            "ANTHROPIC_API_KEY=sk-sluice-test".to_owned(),
            "DISABLE_TELEMETRY=1".to_owned(),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1".to_owned(),
            "DISABLE_AUTOUPDATER=1".to_owned(),
        ];
        let mut outs = Vec::new();
        for model in ["claude-sonnet-4-5", "claude-sonnet-5-5"] {
            let mut args: Vec<&str> = vec!["-u", "ANTHROPIC_AUTH_TOKEN", "-u", "ANTHROPIC_MODEL"];
            args.extend(env.iter().map(String::as_str));
            args.extend([claude.as_str(), "-p", "Say hello", "--model", model]);
            outs.push(run_script("env", &args, Duration::from_secs(120)));
        }
        (outs, s)
    })
    .await;
    for out in &outs {
        let answer = out.split("--- stderr ---").next().unwrap_or_default();
        assert!(
            answer.contains("Hello from Sluice"),
            "Claude Code printed:\n{out}\nsluice logs:\n{}",
            s.logs()
        );
    }
    let reqs = up.requests();
    assert!(!reqs.is_empty(), "nothing reached the upstream");
    assert!(
        reqs[0].0.starts_with("POST /v1/chat/completions"),
        "{}",
        reqs[0].0
    );
}
