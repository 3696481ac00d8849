//! Stream IDs: 128 random bits, URL-safe base64 (22 characters). Holding the ID is what
//! authorises reading a stream, because a browser's EventSource cannot send headers.
//!
//! Held inline (22 bytes, no heap): the registry keeps one in its map and one in its expiry
//! queue for every retained stream, and tens of thousands of small strings would cost more than
//! the answers' own text.

use base64::Engine;
use rand::RngCore;

const LEN: usize = 22;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId([u8; LEN]);

impl StreamId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = [0u8; LEN];
        // 16 bytes are exactly 22 base64 characters without padding.
        let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(bytes, &mut id);
        Self(id)
    }

    /// Accepts only strings that could be an ID Sluice made (cheap rejection of junk paths).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        (b.len() == LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_'))
        .then(|| {
            let mut id = [0u8; LEN];
            id.copy_from_slice(b);
            Self(id)
        })
    }

    /// The first characters only, for log lines: the whole ID is a read capability, and a log
    /// reader should not gain one. Six characters are enough to tell streams apart in a log.
    pub fn log_tag(&self) -> &str {
        self.as_str().get(..6).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (base64 alphabet, or checked by `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug output ends up in logs: never the whole ID.
        write!(f, "StreamId({}…)", self.log_tag())
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_parse() {
        let a = StreamId::random();
        let b = StreamId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(StreamId::parse(a.as_str()), Some(a));
        assert_eq!(StreamId::parse("../etc/passwd"), None);
        assert_eq!(StreamId::parse(""), None);
        assert_eq!(StreamId::parse("é123456789012345678901"), None);
    }

    #[test]
    fn logs_get_a_prefix_never_the_whole_id() {
        let a = StreamId::random();
        assert_eq!(a.log_tag(), &a.as_str()[..6]);
        let debug = format!("{a:?}");
        assert!(debug.contains(a.log_tag()));
        assert!(!debug.contains(a.as_str()), "{debug}");
    }
}
