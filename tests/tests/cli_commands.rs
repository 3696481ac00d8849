//! The `check-config` and `gen-key` subcommands of the real binary.

use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use sluice_tests::{sluice_bin, ConfigFile};

/// Runs `sluice ARGS` with a clean environment in a fresh temp directory.
fn run(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    Command::new(sluice_bin())
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run sluice")
}

fn check(toml: &str) -> (bool, String) {
    let config = ConfigFile::new(toml);
    let out = run(&["check-config", "--config", config.arg()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const GOOD_PROVIDER: &str =
    "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"*\"]\n";

#[test]
fn check_config_accepts_a_valid_file() {
    let hash = "a".repeat(64);
    let (ok, text) = check(&format!(
        "{GOOD_PROVIDER}\n[[teams]]\nname = \"t\"\napi_keys_sha256 = [\"{hash}\"]\nmodels = [\"*\"]\n"
    ));
    assert!(ok, "{text}");
}

#[test]
fn check_config_rejects_an_unknown_key_and_names_it() {
    let (ok, text) = check(&format!("{GOOD_PROVIDER}listen_port = 8080\n"));
    assert!(!ok, "{text}");
    assert!(text.contains("listen_port"), "{text}");
    let (ok, text) = check(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\nmodels = [\"*\"]\napi_key = \"sk-inline\"\n",
    );
    assert!(!ok, "{text}");
    assert!(text.contains("api_key"), "{text}");
}

#[test]
fn check_config_rejects_a_bad_kind_and_names_it() {
    let (ok, text) = check(&GOOD_PROVIDER.replace("\"openai\"", "\"grpc\""));
    assert!(!ok, "{text}");
    assert!(text.contains("kind"), "{text}");
    assert!(text.contains("grpc"), "{text}");
}

#[test]
fn check_config_rejects_a_bad_hash_length_and_names_it() {
    for bad in ["abc", &"a".repeat(63), &"g".repeat(64)] {
        let (ok, text) = check(&format!(
            "[[teams]]\nname = \"t\"\napi_keys_sha256 = [\"{bad}\"]\n"
        ));
        assert!(!ok, "{bad}: {text}");
        assert!(text.contains("api_keys_sha256"), "{text}");
    }
}

#[test]
fn check_config_on_a_missing_file_fails() {
    let out = run(&["check-config", "--config", "/nonexistent/sluice.toml"]);
    assert!(!out.status.success());
}

#[test]
fn gen_key_prints_a_key_and_its_sha256() {
    let out = run(&["gen-key"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    let (key, hash) = (lines[0], lines[1]);
    assert!(key.len() >= 32, "a long random key: {key}");
    assert_eq!(hash, hex::encode(Sha256::digest(key.as_bytes())));
    assert_eq!(hash.len(), 64);
    // Every call gives a new key.
    let again = String::from_utf8(run(&["gen-key"]).stdout).expect("utf-8");
    assert_ne!(again.lines().next(), Some(key));
}
