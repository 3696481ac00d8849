//! `sluice gen-key`.

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
