//! The tests whose point is the `sluice` process itself, so they run the binary: SIGHUP reloads
//! the teams from the config file, SIGTERM drains and exits 0, open mode on a public address
//! refuses to start (exit status, nothing on stdout), and the parser's memory is the process's
//! peak RSS.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::e2e::{
    assert_failed_stream, chat as chat_request, check_openai_wire, content_events, content_of,
    data, post_collect, up_chunk, up_text, wait_for, wait_until, StreamReader,
};
use sluice_tests::scripted::{chunk, serve, sse_head};
use sluice_tests::teams::{
    self, chat, chat_body, client, expect_429, expect_429_shape, header, new_key, team, usage,
    usage_when, DEMO,
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_teams_and_keeps_unchanged_limiters() {
    let (a, b, b2, c) = (new_key(), new_key(), new_key(), new_key());
    let limited = "requests_per_minute = 60\nrequest_burst = 2";
    let s = teams::demo_gateway(
        &(team("alpha", &[&a], limited) + &team("beta", &[&b], limited)),
        &[],
    )
    .binary(crate::sluice_bin())
    .start();
    let body = chat_body(false, json!({}));
    for key in [&a.key, &b.key] {
        for _ in 0..2 {
            assert_eq!(chat(&s, key, &body).await.status(), 200);
        }
        expect_429(chat(&s, key, &body).await, "requests").await;
    }
    // Beta gets a bigger burst and a second key; alpha is unchanged; gamma is new.
    let new = team("alpha", &[&a], limited)
        + &team(
            "beta",
            &[&b, &b2],
            "requests_per_minute = 60\nrequest_burst = 5",
        )
        + &team("gamma", &[&c], "models = [\"sluice-*\"]");
    s.config().write(&new);
    s.signal("HUP");
    let (sr, gamma_key, body_ref) = (&s, &c.key, &body);
    let applied = wait_for(Duration::from_secs(10), || async move {
        (chat(sr, gamma_key, body_ref).await.status() == 200).then_some(())
    })
    .await;
    assert!(applied.is_some(), "reload not applied:\n{}", s.logs());
    expect_429(chat(&s, &a.key, &body).await, "requests").await;
    assert_eq!(
        chat(&s, &b2.key, &body).await.status(),
        200,
        "beta's new burst and key"
    );
    let r = chat(&s, &b.key, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), Some("60"));
    let u = usage(&s, &a.key).await;
    assert_eq!(u["requests"], 2, "counters survive a reload: {u}");
    assert_eq!(u["rejected"]["requests"], 2);

    // A broken file is logged and ignored.
    s.config()
        .write("[[teams]]\nname = \"alpha\"\napi_keys_sha256 = [\"not-a-hash\"]\n");
    s.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || s
            .logs()
            .contains("not reloaded"))
        .await,
        "no log line:\n{}",
        s.logs()
    );
    assert!(
        s.logs().contains("teams[0].api_keys_sha256[0]"),
        "{}",
        s.logs()
    );
    assert_eq!(
        chat(&s, &c.key, &body).await.status(),
        200,
        "old teams still in force"
    );
    // So is a file that would switch to open mode.
    s.config().write("");
    s.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client().get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401, "still needs a key");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_mode_refuses_a_public_address_unless_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(crate::sluice_bin())
        .args(["--addr", "0.0.0.0:0"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let exited = wait_for(Duration::from_secs(10), || {
        std::future::ready(child.try_wait().unwrap())
    })
    .await;
    let Some(status) = exited else {
        let _ = child.kill();
        panic!("open mode on 0.0.0.0 did not exit");
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(stderr.contains("SLUICE_ALLOW_OPEN"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));

    let s = crate::binary()
        .args(["--addr", "0.0.0.0:0"])
        .env([("SLUICE_ALLOW_OPEN", "1")])
        .start();
    let url = format!("http://127.0.0.1:{}/v1/models", s.addr.port());
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "open mode needs no key");
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());
    // Open mode's usage: the gateway's totals.
    let u: Value = client()
        .get(format!("http://127.0.0.1:{}/v1/usage", s.addr.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["team"], Value::Null);
    assert_eq!(u["requests"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_carry_the_request_limit_over_instead_of_refilling_it() {
    let k = new_key();
    // 6 a minute: one every 10 s, so nothing comes back during the test.
    let limits = |burst: u32| format!("requests_per_minute = 6\nrequest_burst = {burst}");
    let s = crate::binary()
        .config(&team("reloaded", &[&k], &limits(2)))
        .env([("SLUICE_DEMO", "1"), ("SLUICE_DEMO_TOKENS_PER_SEC", "0")])
        .start();
    let body = json!({"model": DEMO, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 2});
    let t0 = Instant::now();
    let mut served = Vec::new();
    for (i, burst) in [2, 3, 2].into_iter().enumerate() {
        if i > 0 {
            s.config().write(&team("reloaded", &[&k], &limits(burst)));
            s.signal("HUP");
            usage_when(&s, &k.key, "reload applied", |u| {
                u["limits"]["request_burst"] == burst
            })
            .await;
        }
        let mut n = 0;
        loop {
            let r = chat(&s, &k.key, &body).await;
            if r.status() == 429 {
                expect_429_shape(r, "requests").await;
                break;
            }
            assert_eq!(r.status(), 200);
            n += 1;
            assert!(n <= 10, "no request limit at all");
        }
        served.push(n);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(9),
        "the test ran too long to be exact"
    );
    // 2 of the first burst; the bigger burst adds one; shrinking it back adds none.
    assert_eq!(served, vec![2, 1, 0], "requests served per config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_on_shutdown_while_running_streams_finish() {
    let mut s = crate::binary()
        .env([
            ("SLUICE_SHUTDOWN_GRACE_SECS", "10"),
            ("SLUICE_DEMO_TOKENS_PER_SEC", "10"),
        ])
        .start();
    let r = sluice_tests::e2e::client()
        .get(s.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let mut running = StreamReader::post(
        &s.url("/v1/chat/completions"),
        &chat_request("sluice-demo", true, json!({"max_tokens": 20})),
    )
    .await;
    running
        .read_until(LIMIT, |b| sluice_tests::e2e::content_events(b) >= 1)
        .await;
    s.signal("TERM");
    let draining = wait_for(LIMIT, || async {
        let r = sluice_tests::e2e::client()
            .get(s.url("/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(draining.is_some(), "/readyz never said 503: {}", s.logs());
    // Alive, but taking no new generations.
    let r = sluice_tests::e2e::client()
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = sluice_tests::e2e::client()
        .post(s.url("/v1/chat/completions"))
        .json(&chat_request("sluice-demo", true, json!({})))
        .send()
        .await
        .expect("refused");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    // The running stream is not cut: it ends normally, then the process exits cleanly.
    running.read_to_end(LIMIT).await;
    let events = check_openai_wire(&running.body);
    assert!(events.last().expect("events").is_done(), "{}", running.body);
    assert_eq!(content_of(&events, 0).split_whitespace().count(), 20);
    let code = tokio::task::block_in_place(|| s.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0), "{}", s.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_long_stream_with_an_error_event_and_exits_zero() {
    let mut sluice = crate::binary()
        .env([("SLUICE_SHUTDOWN_GRACE_SECS", "1")])
        .start();
    let url = sluice.url("/v1/chat/completions");
    // 100 tokens 100 ms apart: far longer than the grace period.
    let mut long = StreamReader::post(
        &url,
        &chat_request(
            "sluice-demo",
            true,
            json!({"mock": {"delay_ms": 100, "tokens": 100}}),
        ),
    )
    .await;
    long.read_until(LIMIT, |b| content_events(b) >= 1).await;
    // A short stream, started just before the signal, finishes within the grace period.
    let mut short = StreamReader::post(
        &url,
        &chat_request(
            "sluice-demo",
            true,
            json!({"mock": {"delay_ms": 50, "tokens": 6}}),
        ),
    )
    .await;
    short.read_until(LIMIT, |b| content_events(b) >= 1).await;
    let signalled = Instant::now();
    sluice.signal("TERM");

    short.read_to_end(LIMIT).await;
    let events = check_openai_wire(&short.body);
    assert!(events.last().expect("events").is_done(), "{:?}", short.body);
    assert_eq!(content_of(&events, 0).split_whitespace().count(), 6);

    long.read_to_end(LIMIT).await;
    let ended = signalled.elapsed();
    let events = check_openai_wire(&long.body);
    assert!(!content_of(&events, 0).is_empty());
    let err = assert_failed_stream(&events, "server_shutdown");
    assert!(!err["message"].as_str().expect("message").is_empty());
    assert!(
        ended >= Duration::from_millis(800) && ended < Duration::from_secs(5),
        "the long stream ends after the 1 s grace: {ended:?}"
    );

    let code = tokio::task::block_in_place(|| sluice.wait_exit(Duration::from_secs(8)));
    assert_eq!(code, Some(0), "logs:\n{}", sluice.logs());
}

/// The peak resident memory (`VmHWM`) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test]
async fn an_event_of_many_long_data_lines_fails_at_the_cap_without_buffering_it_all() {
    // The reviewer's reproduction: one event of 48 `data:` lines of 1 MiB each (each under the
    // 16 MiB line cap), no blank line.
    let line = format!("data: {}\n", "x".repeat(1 << 20));
    let mut steps = vec![sse_head(), chunk(data(&up_text("Hel")).as_bytes())];
    for _ in 0..48 {
        steps.push(chunk(line.as_bytes()));
    }
    steps.push(chunk(b"\n"));
    steps.push(chunk(
        data(&up_chunk(0, json!({}), Some("stop"))).as_bytes(),
    ));
    steps.push(sluice_tests::scripted::end_chunks());
    let up = serve(steps).await;
    let sluice = crate::binary().upstream(&up).start();
    let before = peak_rss(sluice.pid());
    let a = post_collect(
        &sluice.url("/v1/chat/completions"),
        &chat_request("m", true, json!({})),
        LIMIT,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hel");
    let err = assert_failed_stream(&events, "upstream_protocol_error");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("SSE event larger than")),
        "{err}"
    );
    // Without the event cap the parser held all 48 MiB (plus its growth slack) before failing.
    // With it, the event buffer stops at 16 MiB; allow for its doubling growth and the rest.
    let grew = peak_rss(sluice.pid()).saturating_sub(before);
    assert!(grew < 44 << 20, "peak RSS grew by {} MiB", grew >> 20);
}
