//! Timeouts, client disconnects, resuming a dropped stream, end to end,
//! with small timeouts set through the environment.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::e2e::{
    assert_error_shape, assert_failed_stream, chat, check_openai_wire, check_openai_wire_from,
    client, collect, content_events, content_of, data, error_events, openai_provider, post_chat,
    up_chunk, up_role, up_text, wait_for, wait_until, StreamReader,
};
use sluice_tests::metric;
use sluice_tests::scripted::{chunk, end_chunks, serve, sse_head, Step};
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(10);

const FAST_TIMEOUTS: [(&str, &str); 3] = [
    ("SLUICE_UPSTREAM_HEADERS_TIMEOUT_SECS", "1"),
    ("SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS", "2"),
    ("SLUICE_KEEPALIVE_SECS", "1"),
];

#[tokio::test]
async fn an_upstream_that_never_sends_headers_is_504_upstream_timeout() {
    let up = serve(vec![Step::Sleep(Duration::from_secs(30))]).await;
    // A non-streaming request waits for the response timeout instead (its upstream sends the
    // headers with the whole answer): see long_answers.rs.
    let mut env = FAST_TIMEOUTS.to_vec();
    env.push(("SLUICE_UPSTREAM_RESPONSE_TIMEOUT_SECS", "1"));
    let sluice = Gateway::builder().upstream(&up).env(&env).start();
    for stream in [true, false] {
        let start = Instant::now();
        let a = post_chat(&sluice, &chat("m", stream, json!({})), LIMIT).await;
        let took = start.elapsed();
        assert_eq!(a.status, 504, "stream={stream}: {}", a.body);
        let v = a.json();
        let err = assert_error_shape(&v);
        assert_eq!(err["type"], "upstream_timeout", "{v}");
        // Which provider, never where it lives.
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.contains("provider 'up'"), "{v}");
        assert!(!message.contains("127.0.0.1"), "{v}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "the headers (or response) timeout is 1 s; took {took:?}"
        );
    }
}

#[tokio::test]
async fn a_silent_upstream_gets_keep_alives_then_an_in_band_idle_timeout() {
    let up = serve(vec![
        sse_head(),
        chunk(data(&up_role()).as_bytes()),
        chunk(data(&up_text("Hel")).as_bytes()),
        Step::Sleep(Duration::from_secs(30)),
    ])
    .await;
    let sluice = Gateway::builder().upstream(&up).env(&FAST_TIMEOUTS).start();
    let a = post_chat(&sluice, &chat("m", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The wire rules: keep-alives are lone `: keep-alive` lines, no blank line stands alone.
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hel");
    let err = assert_failed_stream(&events, "upstream_timeout");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("provider 'up'")),
        "{err}"
    );
    assert_eq!(events.len(), 2, "{}", a.body);
    let ka = a.body.matches(": keep-alive\n").count();
    assert!(ka >= 1, "keep-alives during the silence: {:?}", a.body);
    let first_event_end = a.body.find("\n\n").expect("first event") + 2;
    let error_start = a.body.rfind("id: 2\n").expect("error event");
    assert!(
        a.body[first_event_end..error_start].contains(": keep-alive\n"),
        "the keep-alive comes between the delta and the error: {:?}",
        a.body
    );
    let ka_at = a
        .arrival_of(a.body.find(": keep-alive").expect("keep-alive"))
        .expect("arrival");
    let err_at = a.arrival_of(error_start).expect("arrival");
    assert!(
        ka_at >= Duration::from_millis(800) && ka_at < err_at,
        "keep-alive after about 1 s of silence, before the error: {ka_at:?} vs {err_at:?}"
    );
    assert!(
        err_at >= Duration::from_millis(1800) && err_at < Duration::from_secs(5),
        "idle timeout is 2 s: {err_at:?}"
    );
    assert!(err["message"]
        .as_str()
        .expect("message")
        .contains("upstream"));
}

#[tokio::test]
async fn a_keep_alive_before_the_first_event_is_a_lone_comment_line() {
    let mut steps = vec![sse_head(), Step::Sleep(Duration::from_millis(1600))];
    steps.push(chunk(
        format!(
            "{}{}{}data: [DONE]\n\n",
            data(&up_text("Hi")),
            data(&up_chunk(0, json!({}), Some("stop"))),
            data(&sluice_tests::e2e::up_usage(1, 1)),
        )
        .as_bytes(),
    ));
    steps.push(end_chunks());
    let up = serve(steps).await;
    let sluice = Gateway::builder().upstream(&up).env(&FAST_TIMEOUTS).start();
    let a = post_chat(&sluice, &chat("m", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.starts_with(": keep-alive\nid: 1\n"),
        "a keep-alive, then the first event, with no blank line between: {:?}",
        a.body
    );
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), "Hi");
    assert!(events.last().expect("events").is_done());
}

#[tokio::test]
async fn a_refused_connection_is_502() {
    // A port that refuses connections (bound, not listening, held for the whole test).
    let refused = sluice_tests::scripted::refused_port();
    let port = refused.addr.port();
    let sluice = Gateway::builder()
        .config(&openai_provider(
            "up",
            &format!("http://127.0.0.1:{port}/v1"),
            &["*"],
        ))
        .demo(false)
        .env(&FAST_TIMEOUTS)
        .start();
    for stream in [true, false] {
        let a = post_chat(&sluice, &chat("m", stream, json!({})), LIMIT).await;
        assert_eq!(a.status, 502, "stream={stream}: {}", a.body);
        let v = a.json();
        let err = assert_error_shape(&v);
        assert!(
            err["message"]
                .as_str()
                .expect("message")
                .contains("upstream"),
            "{v}"
        );
    }
}

/// An upstream streaming `n` tokens `every` apart, then finishing.
fn slow_upstream(n: usize, every: Duration) -> Vec<Step> {
    let mut steps = vec![sse_head(), chunk(data(&up_role()).as_bytes())];
    for i in 0..n {
        steps.push(chunk(data(&up_text(&format!("t{i} "))).as_bytes()));
        steps.push(Step::Sleep(every));
    }
    steps.push(chunk(
        format!(
            "{}data: [DONE]\n\n",
            data(&up_chunk(0, json!({}), Some("stop")))
        )
        .as_bytes(),
    ));
    steps.push(end_chunks());
    steps
}

fn expected_text(n: usize) -> String {
    (0..n).map(|i| format!("t{i} ")).collect()
}

/// Starts a stream, reads two content events, and drops the connection. Returns the upstream,
/// Sluice, and when the client let go.
async fn drop_mid_stream(
    grace: &str,
) -> (
    sluice_tests::scripted::ScriptedUpstream,
    sluice_tests::Sluice,
    Instant,
) {
    let up = serve(slow_upstream(100, Duration::from_millis(100))).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[
            ("SLUICE_STREAM_GRACE_SECS", grace),
            ("SLUICE_KEEPALIVE_SECS", "1"),
        ])
        .start();
    let mut r = StreamReader::post(
        &sluice.url("/v1/chat/completions"),
        &chat("m", true, json!({})),
    )
    .await;
    assert_eq!(r.status, 200);
    r.read_until(LIMIT, |b| content_events(b) >= 2).await;
    assert!(!r.ended);
    assert_eq!(up.client_closed(), 0, "the upstream is still streaming");
    drop(r);
    (up, sluice, Instant::now())
}

#[tokio::test]
async fn with_no_grace_a_client_disconnect_closes_the_upstream_connection() {
    let (up, sluice, dropped) = drop_mid_stream("0").await;
    let closed = wait_until(Duration::from_secs(4), || up.client_closed() > 0).await;
    assert!(
        closed,
        "the upstream never saw its connection closed; logs:\n{}",
        sluice.logs()
    );
    assert!(
        dropped.elapsed() < Duration::from_secs(3),
        "{:?}",
        dropped.elapsed()
    );
}

#[tokio::test]
async fn with_a_grace_period_the_upstream_is_kept_for_it_then_closed() {
    let (up, sluice, dropped) = drop_mid_stream("2").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        up.client_closed(),
        0,
        "closed before the 2 s grace period ended"
    );
    let closed = wait_until(Duration::from_secs(5), || up.client_closed() > 0).await;
    let after = dropped.elapsed();
    assert!(
        closed,
        "the upstream was never closed; logs:\n{}",
        sluice.logs()
    );
    assert!(
        after >= Duration::from_millis(1800) && after < Duration::from_secs(5),
        "closed {after:?} after the client left; grace is 2 s"
    );
}

#[tokio::test]
async fn a_dropped_stream_resumes_by_its_stream_id_within_the_grace_period() {
    let n = 15;
    let up = serve(slow_upstream(n, Duration::from_millis(100))).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[("SLUICE_STREAM_GRACE_SECS", "2")])
        .start();
    let mut r = StreamReader::post(
        &sluice.url("/v1/chat/completions"),
        &chat("m", true, json!({})),
    )
    .await;
    let stream_id = r
        .header("x-sluice-stream-id")
        .expect("stream id")
        .to_owned();
    r.read_until(LIMIT, |b| content_events(b) >= 3).await;
    let seen = r.complete_events();
    drop(r);
    let last_seen = seen.last().and_then(|e| e.id).expect("an id");
    let before = content_of(&seen, 0);
    assert!(!before.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let resp = client()
        .get(sluice.url(&format!("/v1/streams/{stream_id}/events?format=openai")))
        .header("Last-Event-ID", last_seen.to_string())
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), 200);
    let a = collect(resp, Instant::now(), LIMIT).await;
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    let rest = check_openai_wire_from(&a.body, last_seen + 1);
    assert_eq!(rest[0].id, Some(last_seen + 1), "{}", a.body);
    assert!(rest.last().expect("events").is_done(), "{}", a.body);
    assert!(error_events(&rest).is_empty(), "{}", a.body);
    assert_eq!(
        format!("{before}{}", content_of(&rest, 0)),
        expected_text(n),
        "no gap, no duplicate"
    );
    // The upstream was asked once: the resume reads the same generation.
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_before_the_upstream_answers_cancels_it_and_leaves_no_live_stream() {
    // The upstream never answers; the headers timeout is the default 30 s.
    let up = serve(vec![Step::Sleep(Duration::from_secs(30))]).await;
    let sluice = Gateway::builder()
        .upstream(&up)
        .env(&[("SLUICE_STREAM_GRACE_SECS", "0")])
        .start();
    for path in ["/v1/chat/completions", "/v1/streams"] {
        let before = up.client_closed();
        let gave_up = client()
            .post(sluice.url(path))
            .json(&chat("m", true, json!({})))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        assert!(gave_up.is_err(), "{path}: the upstream never answers");
        let closed = wait_until(Duration::from_secs(3), || up.client_closed() > before).await;
        assert!(closed, "{path}: the upstream request was not cancelled");
        // No generation is left behind as "live" forever.
        let live = || async { metric(&sluice.metrics().await, "sluice_relay_live_streams") };
        let none_live = wait_for(Duration::from_secs(1), || async {
            (live().await == 0).then_some(())
        })
        .await;
        assert!(
            none_live.is_some(),
            "{path}: a generation stayed live after its request was dropped ({} live)",
            live().await
        );
    }
}
