//! The Responses API as its real clients use it, against the real gateway: the official
//! OpenAI Python SDK (`tests/sdk/responses_python.py`), the AI SDK's default OpenAI model
//! (`tests/sdk/responses_ai_sdk.mjs`) and Codex (`codex exec`, printing an answer an
//! OpenAI-compatible upstream gave through Sluice).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use serde_json::Value;
use sluice_tests::e2e::{data, openai_provider, sse_steps, up_chunk, up_role, up_stream, up_text};
use sluice_tests::scripted::{chunk, serve, sse_head, ScriptedUpstream, Step};
use sluice_tests::sdk::{codex, node_package, python_package, require, run_checks};
use sluice_tests::{Gateway, Sluice};

use crate::responses_api::{slow_steps, text_steps, tool_steps_with};

/// The upstreams the client scripts name: `tools-model`, `slow-model`, `broken-model`,
/// `thinking-model`, `sleepy-model` (silences longer than the keep-alive interval), with
/// the demo model on too.
struct Upstreams {
    _ups: Vec<ScriptedUpstream>,
    toml: String,
}

async fn upstreams() -> Upstreams {
    let tools = serve(tool_steps_with(false)).await;
    let slow = serve(slow_steps(12, Duration::from_millis(100))).await;
    let broken = serve(vec![
        sse_head(),
        chunk(data(&up_role()).as_bytes()),
        chunk(data(&up_text("partial ")).as_bytes()),
        Step::Sleep(Duration::from_millis(100)),
        Step::Reset,
    ])
    .await;
    let mut thinking_body = data(&up_role());
    for t in ["Let me ", "think."] {
        thinking_body.push_str(&data(&up_chunk(0, json!({ "reasoning_content": t }), None)));
    }
    thinking_body.push_str(&up_stream(&["4", "2"]).replacen(&data(&up_role()), "", 1));
    let thinking = serve(sse_steps([thinking_body])).await;
    let sleepy = serve(slow_steps(2, Duration::from_millis(2500))).await;
    let toml = [
        openai_provider("sleepy", &sleepy.base_url(), &["sleepy-model"]),
        openai_provider("tools", &tools.base_url(), &["tools-model"]),
        openai_provider("thinking", &thinking.base_url(), &["thinking-model"]),
        openai_provider("slow", &slow.base_url(), &["slow-model"]),
        openai_provider("broken", &broken.base_url(), &["broken-model"]),
    ]
    .concat();
    Upstreams {
        _ups: vec![tools, slow, broken, thinking, sleepy],
        toml,
    }
}

fn gateway(toml: &str) -> Sluice {
    Gateway::builder()
        .config(toml)
        .env(&[
            ("SLUICE_DEMO_TOKENS_PER_SEC", "0"),
            ("SLUICE_KEEPALIVE_SECS", "1"),
        ])
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_responses() {
    let Some(()) = require(python_package("openai")) else {
        return;
    };
    let ups = upstreams().await;
    let sluice = gateway(&ups.toml);
    let base = sluice.url("/v1");
    tokio::task::block_in_place(|| {
        run_checks(
            &sluice,
            "python3",
            &["responses_python.py", &base],
            Duration::from_secs(180),
            "PASS responses-python: every check passed",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_sdk_stream_text_with_the_responses_api() {
    let Some(()) = require(node_package("ai").and_then(|()| node_package("@ai-sdk/openai"))) else {
        return;
    };
    let ups = upstreams().await;
    let sluice = gateway(&ups.toml);
    let base = sluice.url("/v1");
    tokio::task::block_in_place(|| {
        run_checks(
            &sluice,
            "node",
            &["responses_ai_sdk.mjs", &base],
            Duration::from_secs(180),
            "PASS responses-ai-sdk: every check passed",
        )
    });
}

/// Runs `cmd` to its end or `limit`, returning (exit success, stdout, stderr).
fn run_with_limit(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("codex starts");
    // Each pipe is read to its end on its own thread; both end when the process exits.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send((false, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx_err.send((true, s));
    });
    let deadline = Instant::now() + limit;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut timed_out = false;
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((true, s)) => stderr = s,
            Ok((false, s)) => stdout = s,
            Err(_) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().expect("wait");
    (!timed_out && status.success(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_prints_an_answer_served_through_sluice() {
    let Some(codex) = require(codex()) else {
        return;
    };
    let up = serve(text_steps(&["Hello ", "from ", "the ", "upstream!"])).await;
    let toml = openai_provider("up", &up.base_url(), &["codex-model"]);
    let sluice = gateway(&toml);
    let home = tempfile::tempdir().expect("temp dir");
    let codex_home = home.path().join("codex");
    std::fs::create_dir_all(&codex_home).expect("codex home");
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"codex-model\"\nmodel_provider = \"sluice\"\n\n\
             [model_providers.sluice]\nname = \"Sluice\"\nbase_url = \"{}\"\n\
             env_key = \"SLUICE_TEST_KEY\"\nwire_api = \"responses\"\n",
            sluice.url("/v1")
        ),
    )
    .expect("config.toml");
    let mut cmd = Command::new(&codex);
    cmd.args(["exec", "--skip-git-repo-check", "Say hello."])
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("CODEX_HOME", &codex_home)
        .env("SLUICE_TEST_KEY", "sk-sluice-test")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    let (ok, stdout, stderr) =
        tokio::task::block_in_place(|| run_with_limit(cmd, Duration::from_secs(120)));
    let shown = format!(
        "codex stdout:\n{stdout}\ncodex stderr:\n{stderr}\nsluice logs:\n{}",
        sluice.logs()
    );
    assert!(ok, "codex exec failed\n{shown}");
    assert!(
        stdout.contains("Hello from the upstream!"),
        "codex did not print the answer\n{shown}"
    );
    // One request reached the upstream, as chat completions, with Codex's built-ins left out.
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{shown}");
    let sent: Value = serde_json::from_slice(&reqs[0].1).expect("json");
    assert!(sent["messages"].as_array().is_some_and(|m| m.len() >= 2));
    let tools = sent["tools"].as_array().cloned().unwrap_or_default();
    assert!(tools.iter().all(|t| t["type"] == "function"), "{sent}");
}
