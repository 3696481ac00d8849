//! Teams for the tests: a fresh API key with its SHA-256 ([`Key`], [`new_key`]) and the
//! `[[teams]]` TOML entry that admits it ([`team`]).

/// An API key and the SHA-256 hex of it that a team's config holds.
#[derive(Debug, Clone)]
pub struct Key {
    pub key: String,
    pub hash: String,
}

/// A new random key, as `sluice gen-key` makes one.
pub fn new_key() -> Key {
    let (key, hash) = sluice_gateway::keys::generate();
    Key { key, hash }
}

/// One `[[teams]]` entry admitting `keys`; `extra` holds more `key = value` lines.
pub fn team(name: &str, keys: &[&Key], extra: &str) -> String {
    let hashes: Vec<String> = keys.iter().map(|k| format!("{:?}", k.hash)).collect();
    format!(
        "[[teams]]\nname = {name:?}\napi_keys_sha256 = [{}]\n{extra}\n\n",
        hashes.join(", ")
    )
}

/// `POST /v1/chat/completions` to `sluice` with `key` (30 s deadline).
pub async fn chat_as(
    sluice: &crate::Sluice,
    key: &Key,
    body: &serde_json::Value,
) -> reqwest::Response {
    crate::e2e::client_with_timeout(std::time::Duration::from_secs(30))
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(&key.key)
        .json(body)
        .send()
        .await
        .expect("request")
}
