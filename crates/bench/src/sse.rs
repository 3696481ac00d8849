//! A cheap incremental scan of an OpenAI chat-completion event stream: counts the data lines
//! that carry content, notices `data: [DONE]` and in-band errors, and nothing else.
//!
//! The load generator shares two cores with the gateway it measures, so it must not parse
//! what it does not need. Only complete lines are looked at; a line split across network reads
//! is carried over in a small buffer, so the result is the same whatever the chunk boundaries.
//! Line ends are `\n` or `\r\n` (what every OpenAI-compatible server sends); a lone `\r`, which
//! the WHATWG grammar also allows, is not treated as a line end.

use std::borrow::Cow;

use memchr::memmem;
use serde::Deserialize;

/// A line longer than this is an error (the servers under test send lines of a few hundred
/// bytes); it keeps a broken peer from growing the buffer without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How a data line is judged to carry content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum ScanMode {
    /// Look for `"content":"` followed by anything but `"` (serde_json's compact form, which
    /// every server under test writes). No allocation, no parsing.
    #[default]
    Fast,
    /// Parse each data line's JSON (borrowing, no allocation for unescaped text).
    Json,
}

/// What one data line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Content,
    Other,
    Done,
    Error,
}

/// Incremental scanner for one response body.
#[derive(Debug, Default)]
pub struct Scanner {
    mode: ScanMode,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    done: bool,
    error: bool,
    overflow: bool,
}

impl Scanner {
    pub fn new(mode: ScanMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// `data: [DONE]` was seen.
    pub fn done(&self) -> bool {
        self.done
    }

    /// An in-band error (`data: {"error":...}`) was seen, or a line exceeded [`MAX_LINE_BYTES`].
    pub fn error(&self) -> bool {
        self.error || self.overflow
    }

    /// Scans the next piece of the body; returns how many content events it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> u32 {
        let mut n = 0;
        if !self.partial.is_empty() {
            let Some(i) = memchr::memchr(b'\n', chunk) else {
                self.push_partial(chunk);
                return 0;
            };
            self.push_partial(&chunk[..i]);
            let line = std::mem::take(&mut self.partial);
            n += self.line(&line);
            // Keep the allocation for the next split line.
            self.partial = line;
            self.partial.clear();
            chunk = &chunk[i + 1..];
        }
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            n += self.line(&chunk[..i]);
            chunk = &chunk[i + 1..];
        }
        self.push_partial(chunk);
        n
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            self.overflow = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn line(&mut self, line: &[u8]) -> u32 {
        match classify(line, self.mode) {
            Line::Content => 1,
            Line::Other => 0,
            Line::Done => {
                self.done = true;
                0
            }
            Line::Error => {
                self.error = true;
                0
            }
        }
    }
}

fn classify(line: &[u8], mode: ScanMode) -> Line {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // "If the line starts with "data:" ... If value starts with a U+0020 SPACE character,
    // remove it from value." (WHATWG, interpreting an event stream)
    let Some(data) = line.strip_prefix(b"data:") else {
        return Line::Other;
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    if data == b"[DONE]" {
        return Line::Done;
    }
    match mode {
        ScanMode::Fast => fast(data),
        ScanMode::Json => json(data),
    }
}

const CONTENT_KEY: &[u8] = b"\"content\":\"";

fn fast(data: &[u8]) -> Line {
    if data.starts_with(b"{\"error\"") {
        return Line::Error;
    }
    // Inside a JSON string a quote is always escaped, so an unescaped `"content":"` is a key.
    // `"reasoning_content":"` does not match: the byte before `content` is `_`, not `"`.
    let content = memmem::find_iter(data, CONTENT_KEY)
        .any(|i| data.get(i + CONTENT_KEY.len()).is_some_and(|&b| b != b'"'));
    if content {
        Line::Content
    } else {
        Line::Other
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

fn json(data: &[u8]) -> Line {
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return Line::Error;
    };
    if chunk.error.is_some() {
        return Line::Error;
    }
    let content = chunk.choices.iter().any(|c| {
        c.delta
            .as_ref()
            .and_then(|d| d.content.as_ref())
            .is_some_and(|s| !s.is_empty())
    });
    if content {
        Line::Content
    } else {
        Line::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
        let v = json!({"id":"x","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]});
        format!("data: {v}\n\n")
    }

    /// A stream the way the mock and Sluice write it (Sluice adds `id:` lines).
    fn stream(tokens: &[String], with_ids: bool) -> String {
        let mut events = vec![chunk(json!({"role":"assistant","content":""}), None)];
        events.extend(tokens.iter().map(|t| chunk(json!({ "content": t }), None)));
        events.push(chunk(json!({}), Some("stop")));
        events.push("data: [DONE]\n\n".to_owned());
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if with_ids {
                    format!("id: {}\n{e}", i + 1)
                } else {
                    e.clone()
                }
            })
            .collect()
    }

    fn scan(body: &[u8], cuts: &[usize], mode: ScanMode) -> (u32, bool, bool) {
        let mut s = Scanner::new(mode);
        let mut n = 0;
        let mut at = 0;
        for &c in cuts {
            let c = c.clamp(at, body.len());
            n += s.feed(&body[at..c]);
            at = c;
        }
        n += s.feed(&body[at..]);
        (n, s.done(), s.error())
    }

    #[test]
    fn counts_content_events_not_role_or_finish() {
        let toks: Vec<String> = ["Hel", "lo", " \"q\"", "content"]
            .map(str::to_owned)
            .to_vec();
        for mode in [ScanMode::Fast, ScanMode::Json] {
            assert_eq!(
                scan(stream(&toks, true).as_bytes(), &[], mode),
                (4, true, false)
            );
        }
    }

    #[test]
    fn reasoning_content_and_null_content_are_not_content() {
        for mode in [ScanMode::Fast, ScanMode::Json] {
            let body = "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\n\n\
                        data: {\"choices\":[{\"delta\":{\"content\":null}}]}\n\n";
            assert_eq!(scan(body.as_bytes(), &[], mode), (0, false, false));
        }
    }

    #[test]
    fn in_band_error_and_missing_done() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n\
                    data: {\"error\":{\"message\":\"boom\",\"type\":\"upstream_truncated\"}}\n\n";
        for mode in [ScanMode::Fast, ScanMode::Json] {
            assert_eq!(scan(body.as_bytes(), &[], mode), (1, false, true));
        }
    }

    #[test]
    fn data_without_space_and_comments() {
        let body =
            ": keep-alive\ndata:{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata:[DONE]\n\n";
        assert_eq!(scan(body.as_bytes(), &[], ScanMode::Fast), (1, true, false));
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_growing_buffer() {
        let mut s = Scanner::new(ScanMode::Fast);
        let big = vec![b'a'; 64 * 1024];
        for _ in 0..(MAX_LINE_BYTES / big.len() + 2) {
            s.feed(&big);
        }
        assert!(s.error());
        assert!(s.partial.len() <= MAX_LINE_BYTES);
    }

    proptest! {
        /// Any split of the body into reads gives the same count, `[DONE]` and no error.
        #[test]
        fn same_result_across_arbitrary_chunk_boundaries(
            toks in proptest::collection::vec("[a-z \"\\\\\n\u{e9}:{}]{1,12}", 0..40),
            cuts in proptest::collection::vec(0usize..4000, 0..30),
            ids in any::<bool>(),
        ) {
            let body = stream(&toks, ids);
            let mut cuts = cuts;
            cuts.sort_unstable();
            for mode in [ScanMode::Fast, ScanMode::Json] {
                prop_assert_eq!(
                    scan(body.as_bytes(), &cuts, mode),
                    (toks.len() as u32, true, false)
                );
            }
        }
    }
}
