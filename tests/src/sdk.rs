//! Runs the client scripts under `tests/sdk/` (official OpenAI SDKs for Python and Node, the npm
//! `eventsource` client) against a running `sluice`.
//!
//! A missing interpreter, package or browser skips the test through [`require`]: it writes a
//! `SKIPPED <test>: ...` line straight to stderr, so that plain `cargo test` shows it even for
//! a test that passes, except under `CI=true`, where `.ci/run` has installed everything and a
//! missing piece is a failure. [`run_checks`] runs a script and checks its closing PASS line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Sluice;

/// `tests/sdk/`: the scripts, `package.json` and (after `npm ci`) `node_modules/`.
pub fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// True when running under CI (`CI=true`), where a missing SDK fails the test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports a missing prerequisite: panics under CI, otherwise writes `SKIPPED <test>: {why}`
/// to stderr. Returns normally only when the caller should skip the test.
pub fn skip_or_fail(why: &str) {
    if in_ci() {
        panic!("{why} (CI=true: a missing prerequisite is a failure, not a skip)");
    }
    // libtest captures the `print!`/`eprint!` macros and shows them only for a failing test;
    // a skip passes, so the line goes to the process's stderr by hand to be seen.
    let test = std::thread::current()
        .name()
        .map_or(String::new(), |n| format!(" {n}"));
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED{test}: {why}");
}

/// The value of a prerequisite `check`; when it failed, [`skip_or_fail`] and `None`: the
/// caller returns at once. `let Some(x) = require(check()) else { return };`
pub fn require<T>(check: Result<T, String>) -> Option<T> {
    match check {
        Ok(v) => Some(v),
        Err(why) => {
            skip_or_fail(&why);
            None
        }
    }
}

/// `Err(why)` unless `python3` can import the `openai` package.
pub fn python_openai() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import openai"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(_) => Err(
            "the openai Python package is not installed (pip install openai); .ci/run installs it"
                .into(),
        ),
        Err(e) => Err(format!(
            "python3 is not available ({e}); the Python SDK test needs python3 with the openai package"
        )),
    }
}

/// `Err(why)` unless `node` runs and `tests/sdk/node_modules/{package}` exists.
pub fn node_package(package: &str) -> Result<(), String> {
    if !sdk_dir().join("node_modules").join(package).is_dir() {
        return Err(format!(
            "the npm package {package} is not installed in tests/sdk/node_modules \
             (cd tests/sdk && npm ci); .ci/run installs it"
        ));
    }
    match Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("node is not available; the Node client tests need Node.js 20 or later".into()),
    }
}

/// Runs `program args...` in `tests/sdk/`, with proxy variables removed so that loopback
/// traffic goes straight to sluice. Prints and returns its output; panics if it does not exit
/// 0 within `timeout`.
pub fn run_script(program: &str, args: &[&str], timeout: Duration) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(sdk_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
    ] {
        cmd.env_remove(var);
    }
    let shown = format!("{program} {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    // Each pipe is read to its end on its own thread; both end when the script exits.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send((false, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx_err.send((true, s));
    });
    let deadline = Instant::now() + timeout;
    let (mut out, mut err) = (String::new(), String::new());
    let mut timed_out = false;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, s)) => err = s,
            Ok((false, s)) => out = s,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for script");
    // After a kill the pipes close: collect what the script printed before it.
    while let Ok((is_err, s)) = rx.recv_timeout(Duration::from_secs(5)) {
        if is_err {
            err = s;
        } else {
            out = s;
        }
    }
    let mut all = out;
    if !err.is_empty() {
        all.push_str("--- stderr ---\n");
        all.push_str(&err);
    }
    println!("--- `{shown}` ---\n{all}");
    if timed_out {
        panic!("`{shown}` did not finish within {timeout:?}; output:\n{all}");
    }
    if !status.success() {
        panic!("`{shown}` failed ({status}); output:\n{all}");
    }
    all
}

/// Runs `program args...` like [`run_script`] against `sluice` and checks that its output holds
/// the script's closing `pass` line; on any failure the sluice logs are shown too. Returns the
/// output.
pub fn run_checks(
    sluice: &Sluice,
    program: &str,
    args: &[&str],
    timeout: Duration,
    pass: &str,
) -> String {
    let run = std::panic::catch_unwind(|| run_script(program, args, timeout));
    let out = match run {
        Ok(out) => out,
        Err(panic) => {
            println!("--- sluice logs ---\n{}", sluice.logs());
            std::panic::resume_unwind(panic);
        }
    };
    assert!(
        out.contains(pass),
        "script exited 0 without its closing line {pass:?}:\n{out}\nsluice logs:\n{}",
        sluice.logs()
    );
    out
}

const BROWSER_SKIP: &str = "headless Chromium tests need Debian's chromium and tests/sdk \
                            node_modules (bash .ci/run installs both)";

/// `$SLUICE_TEST_CHROMIUM` when set (only that one), else `/usr/bin/chromium`, else
/// `chromium` found on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(set) = std::env::var_os("SLUICE_TEST_CHROMIUM") {
        let set = PathBuf::from(set);
        return set.is_file().then_some(set);
    }
    let debian = std::path::Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// The browser for the headless Chromium tests, when it and `playwright-core` are installed.
pub fn browser() -> Result<PathBuf, String> {
    let missing = match (chromium(), node_package("playwright-core")) {
        (Some(b), Ok(())) => return Ok(b),
        (None, Ok(())) => {
            "chromium not found ($SLUICE_TEST_CHROMIUM, /usr/bin/chromium, PATH)".to_owned()
        }
        (Some(_), Err(why)) => why,
        (None, Err(why)) => format!("chromium not found; {why}"),
    };
    Err(format!("{BROWSER_SKIP}; missing: {missing}"))
}

/// [`require`] of [`browser`]: the browser, or `None` after the skip is reported.
pub fn browser_or_skip() -> Option<PathBuf> {
    require(browser())
}

/// `Err(why)` unless `python3` can import `module` (an SDK that `.ci/run` installs from PyPI).
pub fn python_package(module: &str) -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(_) => Err(format!(
            "the {module} Python package is not installed (pip install {module}); .ci/run installs it"
        )),
        Err(e) => Err(format!(
            "python3 is not available ({e}); the test needs python3 with the {module} package"
        )),
    }
}

/// A platform binary an npm package in `tests/sdk` ships (Claude Code, Codex: npm may not run
/// their postinstall, so they are called directly), or why it is missing.
pub fn npm_binary(package: &str, rel: &str) -> Result<PathBuf, String> {
    let path = sdk_dir().join("node_modules").join(package).join(rel);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not installed (cd tests/sdk && npm ci); .ci/run installs it",
            path.display()
        ))
    }
}

/// Claude Code's binary (`@anthropic-ai/claude-code`'s linux-x64 package).
pub fn claude_code() -> Result<PathBuf, String> {
    npm_binary("@anthropic-ai/claude-code-linux-x64", "claude")
}

/// Codex's binary (`@openai/codex`'s linux-x64 package).
pub fn codex() -> Result<PathBuf, String> {
    npm_binary(
        "@openai/codex-linux-x64",
        "vendor/x86_64-unknown-linux-musl/bin/codex",
    )
}
