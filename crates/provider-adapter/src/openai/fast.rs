//! A hand-written reader for the common shapes of a stream chunk, one pass over the bytes.
//!
//! serde's derived reader costs more per chunk than anything else Sluice does per token. Almost
//! every chunk is the same few fields with strings, small integers and `null`s, so this reads
//! those by hand and gives the very [`Chunk`] serde would; for anything else (a tool call, a
//! usage report, an error, a float, an escaped key, a duplicate field, anything malformed) it
//! gives `None` and the caller parses with serde as before. It never accepts what serde
//! rejects: the grammar is serde_json's (whitespace, numbers, strings, no trailing characters),
//! and an escaped string is unescaped by serde_json itself.

use std::borrow::Cow;

use super::{Chunk, ChunkChoice, Delta};
use crate::lenient::{Content, Num, Text};

/// How deep an unknown field's value may nest before the reader leaves the chunk to serde.
const MAX_SKIP_DEPTH: u32 = 16;

/// `data` as serde_json would read it into a [`Chunk`], or `None` if it is not one of the
/// shapes read here (or not JSON).
pub(super) fn chunk(data: &str) -> Option<Chunk<'_>> {
    let mut p = Reader {
        s: data,
        b: data.as_bytes(),
        i: 0,
    };
    p.ws();
    // Filled in place: the structs are large, and each move is a copy.
    let mut c = Chunk::default();
    p.chunk(&mut c)?;
    p.ws();
    (p.i == p.b.len()).then_some(c)
}

/// Marks field number `field` as seen; `None` if it was already (serde rejects duplicate
/// fields).
fn once(seen: &mut u16, field: u8) -> Option<()> {
    let bit = 1 << field;
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        let end = self.i + w.len();
        (self.b.get(self.i..end)? == w).then(|| self.i = end)
    }

    /// `null`: `Some(true)`; another value: `Some(false)` and nothing read.
    fn null(&mut self) -> Option<bool> {
        if self.peek()? == b'n' {
            self.word(b"null")?;
            return Some(true);
        }
        Some(false)
    }

    /// An object, with `field` called for each key with the reader at its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            if self.next_or_end(b'}')? {
                return Some(());
            }
        }
    }

    /// After a member or an element: `true` at the `close` that ends the object or list,
    /// `false` after a comma (and the whitespace after it).
    fn next_or_end(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.ws();
                Some(false)
            }
            c if c == close => {
                self.i += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// Moves to the next byte that ends or escapes a string or may not be in one (`"`, `\\`, a
    /// control character), or to the end: eight bytes at a time, as serde_json does.
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([1; 8]);
        const HIGH: u64 = ONES << 7;
        while let Some(w) = self.b.get(self.i..self.i + 8) {
            let Ok(w) = <[u8; 8]>::try_from(w) else {
                break;
            };
            let w = u64::from_le_bytes(w);
            let quote = w ^ (ONES * u64::from(b'"'));
            let backslash = w ^ (ONES * u64::from(b'\\'));
            // A byte's high bit is set where it is under 0x20 or zero after the xor (and maybe
            // in bytes above such a byte, which do not matter: the lowest is the one taken).
            let found = ((w.wrapping_sub(ONES * 0x20) & !w)
                | (quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash))
                & HIGH;
            if found != 0 {
                self.i += (found.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// A key without escapes (an escaped key may spell a known field: left to serde), as
    /// bytes: only compared with the known names.
    #[inline]
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.skip_plain();
        self.eat(b'"')?;
        self.b.get(start..self.i - 1)
    }

    /// A string: borrowed if it has no escapes, else unescaped by serde_json (as serde would,
    /// into an owned string).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.i;
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                _ => return None,
            }
        }
        self.i += 1;
        if escaped {
            let literal = self.s.get(start..self.i)?;
            serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
        } else {
            self.s.get(start + 1..self.i - 1).map(Cow::Borrowed)
        }
    }

    /// A string skipped over, checked as serde_json checks an ignored one.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.skip_plain();
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    self.i += 1;
                    match *self.b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        self.i += 1;
        Some(())
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A number in JSON's grammar; with its value if it is an integer that is not negative
    /// and fits a `u64` (what serde_json hands a visitor as `u64`).
    fn number(&mut self) -> Option<Option<u64>> {
        let negative = self.eat(b'-').is_some();
        let mut value = Some(0u64);
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    value = value.and_then(|v| v.checked_mul(10)?.checked_add(u64::from(d - b'0')));
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut plain = !negative;
        if self.eat(b'.').is_some() {
            self.digits()?;
            plain = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
            plain = false;
        }
        Some(value.filter(|_| plain))
    }

    /// Any value, checked and skipped as serde_json skips an unknown field's.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            b'n' => self.word(b"null"),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'[' if depth < MAX_SKIP_DEPTH => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if self.next_or_end(b']')? {
                        return Some(());
                    }
                }
            }
            b'{' if depth < MAX_SKIP_DEPTH => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip(depth + 1)?;
                    if self.next_or_end(b'}')? {
                        return Some(());
                    }
                }
            }
            _ => None,
        }
    }

    /// A [`Text`] field: a string (`""` is none) or `null`.
    fn text(&mut self) -> Option<Text<'a>> {
        if self.null()? {
            return Some(Text(None));
        }
        let s = self.string()?;
        Some(Text((!s.is_empty()).then_some(s)))
    }

    /// A [`Num`] field: an integer that fits a `u64`, or `null`.
    fn num(&mut self) -> Option<Num> {
        if self.null()? {
            return Some(Num(None));
        }
        Some(Num(Some(self.number()??)))
    }

    /// An `Option<&RawValue>` field: only `null` (which serde reads as `None`) is read here.
    fn raw_null(&mut self) -> Option<()> {
        self.null()?.then_some(())
    }

    fn chunk(&mut self, c: &mut Chunk<'a>) -> Option<()> {
        let mut seen = 0;
        self.object(|p, key| {
            let field = match key {
                b"id" => 0,
                b"model" => 1,
                b"created" => 2,
                b"system_fingerprint" => 3,
                b"choices" => 4,
                b"object" => 5,
                b"usage" => 6,
                b"x_groq" => 7,
                b"error" => 8,
                b"message" => 9,
                b"detail" => 10,
                _ => return p.skip(0),
            };
            once(&mut seen, field)?;
            match field {
                0 => c.id = p.text()?,
                1 => c.model = p.text()?,
                2 => c.created = p.num()?,
                3 => c.system_fingerprint = p.text()?,
                4 => c.choices = p.choices()?,
                5 => c.object = p.text()?,
                // usage, x_groq, error, message, detail
                _ => p.raw_null()?,
            }
            Some(())
        })
    }

    fn choices(&mut self) -> Option<Option<Vec<ChunkChoice<'a>>>> {
        if self.null()? {
            return Some(None);
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(Some(Vec::new()));
        }
        // Nearly always one choice: allocated at once rather than grown into.
        let mut v = Vec::with_capacity(1);
        loop {
            v.push(ChunkChoice::default());
            self.choice(v.last_mut()?)?;
            if self.next_or_end(b']')? {
                return Some(Some(v));
            }
        }
    }

    fn choice(&mut self, c: &mut ChunkChoice<'a>) -> Option<()> {
        let mut seen = 0;
        self.object(|p, key| {
            let field = match key {
                b"index" => 0,
                b"delta" => 1,
                b"logprobs" => 2,
                b"finish_reason" => 3,
                _ => return p.skip(0),
            };
            once(&mut seen, field)?;
            match field {
                0 => c.index = p.num()?,
                1 => {
                    if !p.null()? {
                        p.delta(c.delta.insert(Delta::default()))?;
                    }
                }
                2 => p.raw_null()?,
                _ => c.finish_reason = p.text()?,
            }
            Some(())
        })
    }

    fn delta(&mut self, d: &mut Delta<'a>) -> Option<()> {
        let mut seen = 0;
        self.object(|p, key| {
            let field = match key {
                b"content" => 0,
                b"reasoning_content" => 1,
                b"reasoning" => 2,
                b"refusal" => 3,
                b"tool_calls" => 4,
                _ => return p.skip(0),
            };
            once(&mut seen, field)?;
            match field {
                0 => {
                    // `Content` keeps `""` (unlike `Text`).
                    if !p.null()? {
                        d.content = Content {
                            text: Some(p.string()?),
                            thinking: None,
                        };
                    }
                }
                1 => d.reasoning_content = p.text()?,
                2 => d.reasoning = p.text()?,
                3 => d.refusal = p.text()?,
                // tool_calls: `null`, or an empty list.
                _ => {
                    if !p.null()? {
                        p.eat(b'[')?;
                        p.ws();
                        p.eat(b']')?;
                        d.tool_calls = Some(Vec::new());
                    }
                }
            }
            Some(())
        })
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
