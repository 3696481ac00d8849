//! Finding the team a key belongs to. Keys are read from `Authorization: Bearer KEY` or
//! `x-api-key: KEY`, hashed with SHA-256 and compared with every configured hash in constant
//! time: the loop visits every hash whatever matches, so its timing says nothing about which
//! hash or byte matched. A key is never logged, stored or echoed; errors say only what kind of
//! problem the credentials had.

use axum::http::{header, HeaderMap};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Longer keys are refused unhashed (generated keys have 53 characters).
pub const MAX_KEY_BYTES: usize = 512;

/// Why a request could not be authenticated. Messages never contain the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProblem {
    Missing,
    Malformed,
    Unknown,
}

impl AuthProblem {
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "You didn't provide an API key. Send it as `Authorization: Bearer KEY` or `x-api-key: KEY`."
            }
            Self::Malformed => {
                "The API key header is malformed. Send it as `Authorization: Bearer KEY` or `x-api-key: KEY`."
            }
            Self::Unknown => "Incorrect API key provided.",
        }
    }
}

/// The key the request presents: `Authorization: Bearer KEY` first, else `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Result<&str, AuthProblem> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| AuthProblem::Malformed)?.trim();
        let (scheme, key) = v.split_once(' ').ok_or(AuthProblem::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthProblem::Malformed);
        }
        return check_shape(key.trim());
    }
    if let Some(v) = headers.get("x-api-key") {
        return check_shape(v.to_str().map_err(|_| AuthProblem::Malformed)?.trim());
    }
    Err(AuthProblem::Missing)
}

fn check_shape(key: &str) -> Result<&str, AuthProblem> {
    if key.is_empty() {
        return Err(AuthProblem::Missing);
    }
    if key.len() > MAX_KEY_BYTES || key.contains(char::is_whitespace) {
        return Err(AuthProblem::Unknown);
    }
    Ok(key)
}

/// Every configured key hash with the index of its team.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    hashes: Vec<([u8; 32], u32)>,
}

impl KeyTable {
    /// Adds a hash given as 64 hex characters (validated by the config); false if it is not.
    pub fn add(&mut self, hex_hash: &str, team: u32) -> bool {
        let mut h = [0u8; 32];
        if hex::decode_to_slice(hex_hash, &mut h).is_err() {
            return false;
        }
        self.hashes.push((h, team));
        true
    }

    /// The team index of `key`, comparing its hash with every hash in constant time.
    pub fn lookup(&self, key: &str) -> Option<u32> {
        let digest = crate::keys::sha256(key);
        let mut found = subtle::Choice::from(0);
        let mut team = 0u32;
        for (h, t) in &self.hashes {
            let eq = h[..].ct_eq(&digest[..]);
            team.conditional_assign(t, eq);
            found |= eq;
        }
        bool::from(found).then_some(team)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(kv: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in kv {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_bearer_or_x_api_key() {
        assert_eq!(
            presented_key(&headers(&[("authorization", b"Bearer sk-1")])),
            Ok("sk-1")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", b"bearer   sk-1 ")])),
            Ok("sk-1")
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", b"sk-2")])),
            Ok("sk-2")
        );
        // Authorization wins.
        assert_eq!(
            presented_key(&headers(&[
                ("x-api-key", b"sk-2"),
                ("authorization", b"Bearer sk-1")
            ])),
            Ok("sk-1")
        );
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        use AuthProblem::*;
        type Case<'a> = (&'a [(&'a str, &'a [u8])], AuthProblem);
        let cases: &[Case] = &[
            (&[], Missing),
            (&[("authorization", b"Bearer ")], Malformed),
            (&[("authorization", b"Bearer")], Malformed),
            (&[("authorization", b"Basic dXNlcjpwYXNz")], Malformed),
            (&[("authorization", b"sk-1")], Malformed),
            (&[("authorization", b"Bearer \xff\xfe")], Malformed),
            (&[("authorization", b"Bearer a b")], Unknown),
            (&[("x-api-key", b"")], Missing),
            (&[("x-api-key", b"\xff")], Malformed),
        ];
        for (h, want) in cases {
            assert_eq!(presented_key(&headers(h)), Err(*want), "{h:?}");
        }
        let long = format!("Bearer {}", "k".repeat(10_000));
        assert_eq!(
            presented_key(&headers(&[("authorization", long.as_bytes())])),
            Err(Unknown)
        );
    }

    #[test]
    fn messages_do_not_echo() {
        for p in [
            AuthProblem::Missing,
            AuthProblem::Malformed,
            AuthProblem::Unknown,
        ] {
            assert!(!p.message().contains("sk-"));
        }
    }

    #[test]
    fn lookup_finds_the_team() {
        let (k1, h1) = crate::keys::generate();
        let (k2, h2) = crate::keys::generate();
        let (k3, h3) = crate::keys::generate();
        let mut t = KeyTable::default();
        assert!(t.add(&h1, 0));
        assert!(t.add(&h2, 1));
        assert!(t.add(&h3.to_uppercase(), 1));
        assert!(!t.add("xyz", 2));
        assert_eq!(t.lookup(&k1), Some(0));
        assert_eq!(t.lookup(&k2), Some(1));
        assert_eq!(t.lookup(&k3), Some(1));
        assert_eq!(t.lookup("sk-sluice-nope"), None);
        assert_eq!(t.lookup(&h1), None, "the hash itself is not a key");
        assert_eq!(KeyTable::default().lookup(&k1), None);
    }
}
