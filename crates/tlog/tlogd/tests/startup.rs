//! `tlogd`'s start as an operator meets it: clear refusals of bad settings,
//! busy ports named by their setting, keys made once with mode 0600 and
//! kept across restarts, an empty key file named.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn tlogd(dir: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tlogd"))
        .args(["--data-dir", dir.to_str().expect("utf8")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tlogd")
}

fn fails_with(dir: &std::path::Path, args: &[&str], why: &str) {
    let out = tlogd(dir, args).wait_with_output().expect("run");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(why), "{why:?} not in {text}");
}

#[test]
fn bad_settings_and_busy_ports_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    fails_with(dir.path(), &["--origin", "Not An Origin"], "--origin");
    fails_with(
        dir.path(),
        &["--checkpoint-interval-ms", "5"],
        "checkpoint-interval-ms",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let addr = format!("127.0.0.1:{port}");
    fails_with(
        dir.path(),
        &["--listen", &addr, "--sync-listen", "127.0.0.1:0"],
        "--listen",
    );
    fails_with(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--sync-listen", &addr],
        "--sync-listen",
    );
    fails_with(
        dir.path(),
        &[
            "--mirror",
            "nonsense",
            "--listen",
            "127.0.0.1:0",
            "--sync-listen",
            "127.0.0.1:0",
        ],
        "--mirror",
    );
}

#[test]
fn keys_are_made_once_private_and_bound_to_their_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--listen", "127.0.0.1:0", "--sync-listen", "127.0.0.1:0"];
    // A start that fails after making the key (a busy port) still leaves a
    // whole, private key behind.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    fails_with(
        dir.path(),
        &["--listen", &addr, "--sync-listen", "127.0.0.1:0"],
        "--listen",
    );
    let key = dir.path().join("log-key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&key).expect("read");
    assert!(first.starts_with("PRIVATE+KEY+localhost/tlogd/log+"));
    fails_with(
        dir.path(),
        &["--listen", &addr, "--sync-listen", "127.0.0.1:0"],
        "--listen",
    );
    assert_eq!(
        std::fs::read_to_string(&key).expect("read"),
        first,
        "never replaced"
    );
    // Another origin with this key: refused, naming both.
    fails_with(
        dir.path(),
        &["--origin", "other.example/log", "--listen", &addr],
        "a key's name never changes",
    );
    // An empty key file (an interrupted write of another tool): named.
    std::fs::write(&key, "").expect("empty");
    fails_with(dir.path(), &args, "is empty");
}
