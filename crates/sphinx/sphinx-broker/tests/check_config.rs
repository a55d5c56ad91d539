//! `sphinx-broker --check-config` (issue 13): the effective settings from
//! flags, environment and `broker.toml`, without starting (no fd 3 needed),
//! secrets redacted; a contradiction names itself and exits 1.

use std::process::Command;

fn broker(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx-broker"))
        .current_dir(dir)
        .args(args)
        .env("BROKER_REQUEST_TIMEOUT_SECS", "45")
        .output()
        .expect("run sphinx-broker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_settings_or_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("broker.toml"),
        "lss_url = \"http://127.0.0.1:55551\"\nlog_format = \"json\"\nlogin_window_secs = 90\n",
    )
    .expect("broker.toml");
    let (code, out, err) = broker(dir.path(), &["--check-config"]);
    assert_eq!(code, Some(0), "{err}");
    for expected in [
        "window_secs: 90",        // from the file
        "request_timeout: 45s",   // from the environment
        "log_format: Json",       // from the file
        "http://127.0.0.1:55551", // the LSS server
        "registration_token: None",
    ] {
        assert!(out.contains(expected), "{expected} in:\n{out}");
    }
    let (code, _, err) = broker(dir.path(), &["--check-config", "--no-lss", "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("contradict"), "{err}");
}
