//! The lss-protocol.md §7 session, run with the real `lss-cli` binary against lssd.

use std::process::Command;

use lss_core::Limits;

struct Session {
    server: lk_testkit::Lssd,
    dir: tempfile::TempDir,
}

async fn start(server_key: u8) -> Session {
    Session {
        server: lk_testkit::Lssd::start(server_key, Limits::default()).await,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl Session {
    /// Runs `lss-cli ARGS` (off the async executor) and returns (exit code, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lss-cli"));
        command
            .args(args)
            .env("LSS_CLI_SERVER", &self.server.url)
            .env("LSS_CLI_DIR", self.dir.path());
        let output = tokio::task::spawn_blocking(move || command.output().expect("run lss-cli"))
            .await
            .expect("join");
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
        (
            output.status.code().expect("exit code"),
            text(output.stdout),
            text(output.stderr),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args).await;
        assert_eq!(code, 0, "lss-cli {args:?} failed: {err}");
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_session() {
    let s = start(0x22).await;
    let out = s.ok(&["init"]).await;
    assert!(
        out.contains(
            "server id 02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27"
        ),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.path().join("client-key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        s.ok(&["put", "xx1", "0", "11"]).await,
        "stored xx1 at version 0\n"
    );
    let (code, out, _) = s.cli(&["put", "xx1", "0", "11"]).await;
    assert_eq!(code, 3, "a conflict exits with 3");
    assert_eq!(
        out,
        "conflict: xx1 is at version 0 with value 11 (write version 1)\n"
    );
    s.ok(&["put", "xy1", "0", "11"]).await;
    s.ok(&["put", "xy2", "0", "22"]).await;
    assert_eq!(s.ok(&["get", "xx"]).await, "xx1 0 11\n");
    assert_eq!(s.ok(&["get", "xy"]).await, "xy1 0 11\nxy2 0 22\n");
    assert_eq!(s.ok(&["get", "xy1"]).await, "xy1 0 11\n");

    // Missing-key conflict, JSON output, empty value, info and ping.
    let (code, out, _) = s.cli(&["put", "nope", "4", "00"]).await;
    assert_eq!(
        (code, out.as_str()),
        (3, "conflict: nope does not exist (write version 0)\n")
    );
    let (code, out, _) = s.cli(&["--json", "put", "xx1", "0", "ff"]).await;
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"ok": false, "conflicts": [{"key": "xx1", "version": 0, "value": "11"}]})
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "put", "xx1", "1", ""]).await).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "key": "xx1", "version": 1})
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "x", "--json"]).await).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"kvs": [
            {"key": "xx1", "version": 1, "value": ""},
            {"key": "xy1", "version": 0, "value": "11"},
            {"key": "xy2", "version": 0, "value": "22"},
        ]})
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "info"]).await).expect("json");
    assert_eq!(v["pin_matches"], true);
    assert_eq!(s.ok(&["ping", "are you there"]).await, "are you there\n");
    // init again keeps the key and the pin.
    assert!(s.ok(&["init"]).await.contains("client id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear() {
    let s = start(0x22).await;
    let (code, _, err) = s.cli(&["get", ""]).await;
    assert_eq!(code, 1);
    assert!(err.contains("run `lss-cli init` first"), "{err}");
    s.ok(&["init"]).await;
    let (code, _, err) = s.cli(&["put", "k", "0", "xyz"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not hex"), "{err}");
    let (code, _, err) = s.cli(&["put", "k", "zero", "00"]).await;
    assert_eq!(code, 2, "usage error: {err}");

    // A different server key at the same address is refused, not silently trusted.
    let other = start(0x23).await;
    let (code, _, err) = s.cli(&["--server", &other.server.url, "get", ""]).await;
    assert_eq!(code, 1);
    assert!(err.contains("server key mismatch"), "{err}");
    let (code, _, err) = s.cli(&["--server", &other.server.url, "init"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("delete the file to trust the new key"),
        "{err}"
    );

    // A server that is not there.
    let (code, _, err) = s.cli(&["--server", "http://127.0.0.1:1", "ping"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
    // A corrupt key file.
    std::fs::write(s.dir.path().join("client-key"), "not a key").expect("write");
    let (code, _, err) = s.cli(&["get", ""]).await;
    assert_eq!(code, 1);
    assert!(err.contains("client-key is not hex"), "{err}");
}
