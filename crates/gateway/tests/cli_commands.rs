//! The `check-config` and `gen-key` subcommands of the real binary (`check-config` on Azure
//! providers and static headers, CORS origins and the metrics key included).

use std::process::{Command, Output};

use crate::sluice_bin;
use sha2::{Digest, Sha256};
use sluice_tests::ConfigFile;

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

/// The key the Azure provider below reads from `AZ_KEY`.
const AZURE_KEY: &str = "az-secret-key-1";

const AZURE: &str = "[[providers]]\nname = \"az\"\nkind = \"azure\"\nbase_url = \"https://r.openai.azure.com\"\napi_version = \"2024-10-21\"\napi_key_env = \"AZ_KEY\"\nmodels = [\"gpt-4o-prod\"]\n";

#[tokio::test]
async fn a_bad_cors_origin_fails_at_start_naming_the_variable() {
    let check = |toml: &str, env: &[(&str, &str)]| {
        let config = ConfigFile::new(toml);
        let out = std::process::Command::new(sluice_bin())
            .args(["check-config", "--config", config.arg()])
            .envs(env.iter().copied())
            .output()
            .expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check("", &[("SLUICE_CORS_ORIGINS", "app.example")]);
    assert!(err.contains("SLUICE_CORS_ORIGINS"), "{err}");
    let err = check("cors_origins = [\"https://a.example/path\"]", &[]);
    assert!(err.contains("cors_origins"), "{err}");
}

#[tokio::test]
async fn metrics_require_key_without_a_metrics_key_is_a_config_error() {
    let cfg = ConfigFile::new("metrics_require_key = true\n");
    let out = std::process::Command::new(sluice_bin())
        .args(["check-config", "--config", cfg.arg()])
        .output()
        .expect("check-config");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics_require_key"), "{err}");
}

/// Runs `sluice check-config` on `toml` with a clean environment (and the Azure key).
fn check_azure(toml: &str) -> (bool, String) {
    let config = ConfigFile::new(toml);
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(sluice_bin())
        .args(["check-config", "--config", config.arg()])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZ_KEY", AZURE_KEY)
        .output()
        .expect("run sluice");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_azure_and_headers() {
    let (ok, text) = check_azure(AZURE);
    assert!(ok, "{text}");
    // A provider without models is valid: routes reach it.
    let (ok, text) = check_azure(&AZURE.replace("models = [\"gpt-4o-prod\"]\n", ""));
    assert!(ok, "{text}");
    let (ok, text) = check_azure(&format!(
        "{AZURE}headers = {{ \"X-Title\" = \"Team chat\" }}\n"
    ));
    assert!(ok, "{text}");

    let (ok, text) = check_azure(&AZURE.replace("api_version = \"2024-10-21\"\n", ""));
    assert!(!ok, "{text}");
    assert!(text.contains("providers[0].api_version"), "{text}");

    let (ok, text) = check_azure(&AZURE.replace("\"azure\"", "\"openai\""));
    assert!(!ok, "{text}");
    assert!(text.contains("providers[0].api_version"), "{text}");

    for name in ["Authorization", "api-key", "X-Api-Key", "content-type"] {
        let (ok, text) = check_azure(&format!(
            "{AZURE}headers = {{ \"{name}\" = \"sk-inline\" }}\n"
        ));
        assert!(!ok, "{text}");
        assert!(
            text.contains(&format!("providers[0].headers.{name}")),
            "{text}"
        );
        assert!(!text.contains("sk-inline"), "{text}");
    }
    let (ok, text) = check_azure(&format!("{AZURE}headers = {{ \"Bad Name\" = \"x\" }}\n"));
    assert!(!ok, "{text}");
    assert!(text.contains("providers[0].headers.Bad Name"), "{text}");
    let (ok, text) = check_azure(&format!(
        "{AZURE}headers = {{ \"X-Title\" = \"line\\nbreak\" }}\n"
    ));
    assert!(!ok, "{text}");
    assert!(text.contains("providers[0].headers.X-Title"), "{text}");
}
