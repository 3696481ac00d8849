//! Stream IDs: 128 random bits, URL-safe base64 (22 characters). Holding the ID is what
//! authorises reading a stream, because a browser's EventSource cannot send headers.

use base64::Engine;
use rand::RngCore;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts only strings that could be an ID Sluice made (cheap rejection of junk paths).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 22
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets the registry look a stream up by the path's `&str` without allocating.
impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
        assert_eq!(StreamId::parse(a.as_str()), Some(a));
        assert_eq!(StreamId::parse("../etc/passwd"), None);
        assert_eq!(StreamId::parse(""), None);
    }
}
