//! API keys: generation, and the SHA-256 form in which teams store them.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new random key (256 bits) and its SHA-256 in hex.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!(
        "sk-sluice-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = sha256_hex(&key);
    (key, hash)
}

pub fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn sha256_hex(key: &str) -> String {
    hex::encode(sha256(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_matches_its_hash() {
        let (k, h) = generate();
        assert!(k.starts_with("sk-sluice-"));
        assert_eq!(h.len(), 64);
        assert_eq!(sha256_hex(&k), h);
        assert_ne!(generate().0, k);
    }
}
