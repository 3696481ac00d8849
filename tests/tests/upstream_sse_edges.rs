//! SSE edge cases from the upstream, end to end: a scripted raw-bytes upstream writes its body
//! in pieces (down to one byte per write), with every line ending, comments, keep-alives, a BOM,
//! multi-line data, foreign `event:`/`id:`/`retry:` lines and a missing final blank line. The
//! client must get exactly the upstream's text, in Sluice's own well-formed stream.

use std::sync::LazyLock;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use sluice_tests::e2e::{
    chat, check_openai_wire, content_of, data, error_events, finish_reasons, post_chat, sse_steps,
    up_chunk, up_role, up_text, up_usage,
};
use sluice_tests::scripted::serve;
use sluice_tests::Gateway;

const LIMIT: Duration = Duration::from_secs(10);

/// The text the upstream streams: multi-byte characters (2, 3 and 4 bytes), escapes, newlines.
const PIECES: [&str; 7] = [
    "Hé",
    "llo ",
    "🦀 wörld",
    "\n",
    "“quoted” \"x\"",
    "\t€",
    " end",
];

fn text() -> String {
    PIECES.concat()
}

/// A complete upstream body with LF endings, one string per event.
fn events_lf(with_done: bool) -> Vec<String> {
    let mut v = vec![data(&up_role())];
    v.extend(PIECES.iter().map(|p| data(&up_text(p))));
    v.push(data(&up_chunk(0, json!({}), Some("stop"))));
    v.push(data(&up_usage(4, PIECES.len() as u64)));
    if with_done {
        v.push("data: [DONE]\n\n".to_owned());
    }
    v
}

fn with_ending(events: &[String], eol: &str) -> Vec<String> {
    events.iter().map(|e| e.replace('\n', eol)).collect()
}

/// Runs one request through Sluice against an upstream writing `pieces` (one write each) and
/// checks the client got exactly `text()` in a successful, well-formed stream.
async fn assert_relays_exactly<I, B>(pieces: I, what: &str)
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let up = serve(sse_steps(pieces)).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let a = post_chat(
        &sluice,
        &chat(
            "m",
            true,
            json!({"stream_options": {"include_usage": true}}),
        ),
        LIMIT,
    )
    .await;
    assert_eq!(a.status, 200, "{what}: {}", a.body);
    assert!(
        a.transport_error.is_none(),
        "{what}: {:?}",
        a.transport_error
    );
    let events = check_openai_wire(&a.body);
    assert!(
        error_events(&events).is_empty(),
        "{what}: the stream failed: {}\nlogs:\n{}",
        a.body,
        sluice.logs()
    );
    assert_eq!(content_of(&events, 0), text(), "{what}");
    assert_eq!(
        finish_reasons(&events),
        vec![(0, "stop".to_owned())],
        "{what}"
    );
    assert!(events.last().expect("events").is_done(), "{what}");
    assert!(a.body.ends_with("data: [DONE]\n\n"), "{what}");
    let usage = events[events.len() - 2].json();
    assert_eq!(usage["usage"]["completion_tokens"], PIECES.len(), "{what}");
}

fn bytes_one_by_one(events: &[String]) -> Vec<Vec<u8>> {
    events.concat().bytes().map(|b| vec![b]).collect()
}

#[tokio::test]
async fn lf_crlf_and_cr_line_endings_one_event_per_write() {
    for eol in ["\n", "\r\n", "\r"] {
        let evs = with_ending(&events_lf(true), eol);
        assert_relays_exactly(&evs, &format!("eol {eol:?}")).await;
    }
}

#[tokio::test]
async fn lf_crlf_and_cr_line_endings_one_byte_per_write() {
    for eol in ["\n", "\r\n", "\r"] {
        let evs = with_ending(&events_lf(true), eol);
        assert_relays_exactly(bytes_one_by_one(&evs), &format!("bytewise eol {eol:?}")).await;
    }
}

#[tokio::test]
async fn mixed_line_endings_in_one_stream() {
    let evs = events_lf(true);
    let endings = ["\n", "\r\n", "\r"];
    let mixed: Vec<String> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| e.replace('\n', endings[i % 3]))
        .collect();
    assert_relays_exactly(&mixed, "mixed").await;
    assert_relays_exactly(bytes_one_by_one(&mixed), "mixed bytewise").await;
}

#[tokio::test]
async fn crlf_split_between_writes_and_utf8_split_inside_characters() {
    // Every event cut right between its CR and LF, and the text cut inside each character.
    let evs = with_ending(&events_lf(true), "\r\n");
    let body = evs.concat();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let bytes = body.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        cur.push(*b);
        let next = bytes.get(i + 1).copied();
        let cut_crlf = *b == b'\r' && next == Some(b'\n');
        // Inside a multi-byte UTF-8 character: this byte starts or continues one and the next
        // is a continuation byte.
        let cut_utf8 = *b >= 0x80 && next.is_some_and(|n| (0x80..0xc0).contains(&n));
        if cut_crlf || cut_utf8 {
            pieces.push(std::mem::take(&mut cur));
        }
    }
    pieces.push(cur);
    assert!(pieces.len() > 20);
    assert_relays_exactly(pieces, "crlf and utf-8 splits").await;
}

#[tokio::test]
async fn comments_and_blank_keep_alives_are_skipped() {
    let mut evs = vec![
        ": ping\n\n".to_owned(),
        "\n\n\n".to_owned(),
        ":\n".to_owned(),
    ];
    for (i, e) in events_lf(true).into_iter().enumerate() {
        evs.push(e);
        evs.push(match i % 4 {
            0 => ": ping\n\n".to_owned(),
            1 => "\n".to_owned(),
            2 => ": OPENROUTER PROCESSING\n\n".to_owned(),
            _ => ":\n\n\n".to_owned(),
        });
    }
    // A comment line inside an event, between its data line and its end.
    evs.insert(
        4,
        format!(
            "data: {}\n: in the middle\n\n",
            up_chunk(0, json!({"content": ""}), None)
        ),
    );
    assert_relays_exactly(&evs, "comments").await;
    assert_relays_exactly(bytes_one_by_one(&evs), "comments bytewise").await;
}

#[tokio::test]
async fn a_leading_bom_is_ignored() {
    let mut evs = events_lf(true);
    evs[0] = format!("\u{feff}{}", evs[0]);
    assert_relays_exactly(&evs, "bom").await;
    assert_relays_exactly(bytes_one_by_one(&evs), "bom bytewise").await;
    let crlf = with_ending(&evs, "\r\n");
    assert_relays_exactly(&crlf, "bom crlf").await;
}

#[tokio::test]
async fn multi_line_data_is_joined_with_a_newline() {
    let evs: Vec<String> = events_lf(true)
        .into_iter()
        .map(|e| {
            if e.starts_with("data: {") {
                // Break the JSON after its first comma into two data lines (`data:` with and
                // without the optional space); the joining LF is JSON whitespace.
                let json = e.trim_start_matches("data: ").trim_end();
                let cut = json.find(',').expect("comma") + 1;
                format!("data: {}\ndata:{}\n\n", &json[..cut], &json[cut..])
            } else {
                e
            }
        })
        .collect();
    assert!(evs[1].matches("data:").count() == 2, "{}", evs[1]);
    assert_relays_exactly(&evs, "multi-line").await;
    assert_relays_exactly(with_ending(&evs, "\r\n"), "multi-line crlf").await;
}

#[tokio::test]
async fn upstream_event_id_retry_and_unknown_fields_are_not_passed_through() {
    let evs: Vec<String> = events_lf(true)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "event: message\nid: up-{}\nretry: 5000\nx-custom: 1\n{e}",
                100 + i
            )
        })
        .collect();
    let up = serve(sse_steps(&evs)).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let a = post_chat(&sluice, &chat("m", true, json!({})), LIMIT).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Sluice's own ids 1, 2, 3, ..., and only `id:` and `data:` fields.
    let events = check_openai_wire(&a.body);
    assert_eq!(content_of(&events, 0), text());
    for bad in ["event:", "retry:", "x-custom", "up-10"] {
        assert!(!a.body.contains(bad), "{bad} leaked: {}", a.body);
    }
    assert_eq!(events[0].id, Some(1));
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
}

#[tokio::test]
async fn a_last_event_without_its_final_blank_line_is_delivered() {
    // Ends with `data: [DONE]` and no line end at all.
    let mut evs = events_lf(true);
    let last = evs.len() - 1;
    evs[last] = "data: [DONE]".to_owned();
    assert_relays_exactly(&evs, "[DONE] without line end").await;
    // No [DONE]: the usage chunk is last, with one line end and no blank line, in each ending.
    for eol in ["\n", "\r\n", "\r"] {
        let mut evs = with_ending(&events_lf(false), eol);
        let last = evs.len() - 1;
        evs[last] = format!("data: {}{eol}", up_usage(4, PIECES.len() as u64));
        assert_relays_exactly(&evs, &format!("no blank line, eol {eol:?}")).await;
        let mut bare = evs.clone();
        bare[last] = format!("data: {}", up_usage(4, PIECES.len() as u64));
        assert_relays_exactly(&bare, &format!("no line end, eol {eol:?}")).await;
    }
}

#[tokio::test]
async fn a_stream_without_done_ending_on_a_blank_line_is_complete_in_every_ending() {
    // The upstream ends cleanly after its last event (with its blank line) but sends no [DONE].
    for eol in ["\n", "\r\n", "\r"] {
        let evs = with_ending(&events_lf(false), eol);
        assert_relays_exactly(&evs, &format!("no [DONE], eol {eol:?}")).await;
    }
}

/// One tokio runtime for the property test's cases (the scripted upstream runs on it).
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
});

/// The body the property test splits: CRLF and LF endings, a BOM, comments, multi-byte text.
fn hostile_body() -> Vec<u8> {
    let evs = events_lf(true);
    let mut s = String::from("\u{feff}: hello\n\n");
    for (i, e) in evs.iter().enumerate() {
        s.push_str(&if i % 2 == 0 {
            e.replace('\n', "\r\n")
        } else {
            e.clone()
        });
        if i % 3 == 0 {
            s.push_str(": ping\r\n\r\n");
        }
    }
    s.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_split_of_the_upstream_body_gives_the_same_text(
        mut cuts in proptest::collection::vec(1usize..hostile_body().len(), 0..48)
    ) {
        let body = hostile_body();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in cuts {
            pieces.push(body[start..c].to_vec());
            start = c;
        }
        pieces.push(body[start..].to_vec());
        RT.block_on(assert_relays_exactly(pieces, "random split"));
    }
}

#[tokio::test]
async fn usage_chunks_from_other_servers_are_accepted() {
    // Usage objects as various OpenAI-compatible servers write them: without `total_tokens`,
    // with `null` details, with extra detail fields.
    for usage in [
        json!({"prompt_tokens": 4, "completion_tokens": 7}),
        json!({"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11,
               "prompt_tokens_details": null, "completion_tokens_details": null}),
        json!({"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11,
               "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0,
                   "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
    ] {
        let mut evs = events_lf(true);
        let n = evs.len();
        evs[n - 2] = data(
            &json!({"id": "chatcmpl-up", "object": "chat.completion.chunk",
                                  "created": 1, "model": "m", "choices": [], "usage": usage}),
        );
        let up = serve(sse_steps(&evs)).await;
        let sluice = Gateway::builder().upstream(&up).start();
        let a = post_chat(
            &sluice,
            &chat(
                "m",
                true,
                json!({"stream_options": {"include_usage": true}}),
            ),
            LIMIT,
        )
        .await;
        let events = check_openai_wire(&a.body);
        assert!(error_events(&events).is_empty(), "{usage}: {}", a.body);
        assert_eq!(content_of(&events, 0), text());
        let got = &events[events.len() - 2].json()["usage"];
        assert_eq!(got["prompt_tokens"], 4, "{got}");
        assert_eq!(got["completion_tokens"], 7, "{got}");
        assert_eq!(got["total_tokens"], 11, "{got}");
    }
}

#[tokio::test]
async fn a_one_mebibyte_event_split_across_many_writes_arrives_whole() {
    let big: String = "ab€🦀\n".repeat(1 << 17);
    let mut body = events_lf(true).concat();
    let at = body.find("data: [DONE]").expect("done");
    // A big delta before the finish chunk would break `text()`; put it in choice 1 instead.
    let extra = format!(
        "{}{}",
        data(&up_chunk(1, json!({"content": big}), None)),
        data(&up_chunk(1, json!({}), Some("stop")))
    );
    body.insert_str(at, &extra);
    let pieces: Vec<Vec<u8>> = body.as_bytes().chunks(65_531).map(<[u8]>::to_vec).collect();
    let up = serve(sse_steps(pieces)).await;
    let sluice = Gateway::builder().upstream(&up).start();
    let a = post_chat(&sluice, &chat("m", true, json!({"n": 2})), LIMIT).await;
    let events = check_openai_wire(&a.body);
    assert!(error_events(&events).is_empty());
    assert_eq!(content_of(&events, 0), text());
    assert_eq!(content_of(&events, 1), big);
    assert!(events.last().expect("events").is_done());
}
