//! The binary's offline subcommands. (Being an integration test of this package also makes
//! `cargo test` build the `sluice` binary that the end-to-end tests in `tests/` start.)

use std::process::Command;

fn sluice(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run sluice")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn gen_key_prints_a_key_and_its_sha256() {
    let dir = temp_dir("genkey");
    let out = sluice(&["gen-key"], &dir);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(sluice_gateway::keys::sha256_hex(lines[0]), lines[1]);
    assert_eq!(lines[1].len(), 64);
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_key() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[providers]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"llama-*\"]\n",
    )
    .expect("write");
    let out = sluice(
        &["check-config", "--config", good.to_str().expect("path")],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (body, key) in [
        ("bogus_key = 1\n", "bogus_key"),
        (
            "[[providers]]\nname = \"x\"\nkind = \"grpc\"\nmodels = [\"a\"]\n",
            "providers[0].kind",
        ),
        (
            "[[teams]]\nname = \"t\"\napi_keys_sha256 = [\"abc\"]\n",
            "teams[0].api_keys_sha256[0]",
        ),
    ] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, body).expect("write");
        let out = sluice(
            &["check-config", "--config", bad.to_str().expect("path")],
            &dir,
        );
        assert!(!out.status.success(), "{body}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "expected '{key}' in: {err}");
    }
}
