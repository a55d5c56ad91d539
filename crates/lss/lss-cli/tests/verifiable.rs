//! Issue 17 as an attacker runs it: real `lssd` processes (redb and
//! PostgreSQL) whose operator rolls a namespace back to an old backup,
//! deletes a row under the running server, forks the history two devices
//! of one node see, or loses the data. Each time the real `lss-cli --verify`
//! refuses the reply, exits 4 and writes an evidence file that
//! `lss-cli verify-evidence` accepts with no keys and no server, while the
//! same read without `--verify` (what the LSS protocol's MACs alone allow)
//! is accepted. The lying provider is a real lssd over a store changed
//! behind its back, not a mock of the protocol.

use std::path::{Path, PathBuf};
use std::process::Command;

use lk_testkit::process::{workspace_binary, LssdProcess};

/// One `lss-cli` state directory (a device).
struct Device {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Device {
    fn new() -> Self {
        Device {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A second device of the same node: same client key and pinned server.
    fn twin(&self) -> Self {
        let twin = Device::new();
        for file in ["client-key", "server-pubkey"] {
            std::fs::copy(self.dir.path().join(file), twin.dir.path().join(file)).expect("copy");
        }
        twin
    }

    fn trusted_file(&self) -> PathBuf {
        let pin = std::fs::read_to_string(self.dir.path().join("server-pubkey")).expect("pin");
        self.dir.path().join(format!("trusted-{}", pin.trim()))
    }

    fn cli(&self, server: &str, args: &[&str]) -> Out {
        let output = Command::new(env!("CARGO_BIN_EXE_lss-cli"))
            .args(args)
            .env("LSS_CLI_SERVER", server)
            .env("LSS_CLI_DIR", self.dir.path())
            .output()
            .expect("run lss-cli");
        Out {
            code: output.status.code().expect("exit code"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn ok(&self, server: &str, args: &[&str]) -> String {
        let out = self.cli(server, args);
        assert_eq!(
            out.code, 0,
            "lss-cli {args:?}: {}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Runs a verified command that must be refused as a lie; returns the
    /// evidence file it wrote, checked by `verify-evidence`, and its claim.
    fn caught(&self, server: &str, args: &[&str], claim: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evidence = self.dir.path().join(format!("evidence-{n}.json"));
        let evidence_arg = evidence.to_str().expect("utf-8");
        let mut all = vec!["--verify", "--evidence-out", evidence_arg];
        all.extend_from_slice(args);
        let out = self.cli(server, &all);
        assert_eq!(
            out.code, 4,
            "lss-cli {all:?} must exit 4: {}{}",
            out.stdout, out.stderr
        );
        assert!(out.stderr.contains("the server lied"), "{}", out.stderr);
        assert!(
            out.stdout.is_empty(),
            "nothing printed from a lying reply: {}",
            out.stdout
        );
        // Anyone can check it: a fresh directory, no keys, no server.
        let stranger = Device::new();
        let out = stranger.cli("http://127.0.0.1:9", &["verify-evidence", evidence_arg]);
        assert_eq!(
            out.code, 0,
            "evidence must verify: {}{}",
            out.stdout, out.stderr
        );
        assert!(out.stdout.contains(claim), "{claim:?} in {}", out.stdout);
        evidence
    }
}

fn lssd() -> PathBuf {
    workspace_binary("lssd")
}

fn spawn(args: &[&str]) -> LssdProcess {
    LssdProcess::spawn(&lssd(), args).expect("start lssd")
}

/// Evidence with one byte of its signed bundle changed proves nothing.
fn tampered_evidence_is_refused(evidence: &Path) {
    let text = std::fs::read_to_string(evidence).expect("evidence");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let bundle = json["later_bundle"].as_str().expect("bundle").to_owned();
    let mut bytes = tlog_b64(&bundle);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    json["later_bundle"] = serde_json::Value::String(b64(&bytes));
    let forged = evidence.with_extension("forged.json");
    std::fs::write(&forged, json.to_string()).expect("write");
    let out = Device::new().cli(
        "http://127.0.0.1:9",
        &["verify-evidence", forged.to_str().expect("utf-8")],
    );
    assert_eq!(
        out.code, 1,
        "forged evidence must not verify: {}",
        out.stdout
    );
    assert!(out.stderr.contains("not proven"), "{}", out.stderr);
}

fn tlog_b64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// (a) and (d): the provider restores an old backup of its embedded store,
/// then loses everything.
#[test]
fn a_rolled_back_or_wiped_provider_is_caught_with_evidence() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf-8");
    let db = data.path().join("lightkeeper.redb");
    let server = spawn(&["--data-dir", dir]);
    let alice = Device::new();
    alice.ok(&server.url, &["init"]);
    alice.ok(&server.url, &["--verify", "put", "channel/1", "0", "aa"]);
    alice.ok(&server.url, &["--verify", "put", "channel/2", "0", "bb"]);
    assert!(server.terminate().0.success());
    let backup = data.path().join("backup.redb");
    std::fs::copy(&db, &backup).expect("backup");

    let server = spawn(&["--data-dir", dir]);
    alice.ok(&server.url, &["--verify", "put", "channel/1", "1", "a1"]);
    assert_eq!(
        alice.ok(&server.url, &["--verify", "get", "channel/"]),
        "channel/1 1 a1\nchannel/2 0 bb\n"
    );
    assert!(server.terminate().0.success());

    // The operator restores yesterday's backup.
    std::fs::copy(&backup, &db).expect("restore");
    let server = spawn(&["--data-dir", dir]);
    // The LSS MACs alone cannot tell: the stale state is served and accepted.
    assert_eq!(
        alice.ok(&server.url, &["get", "channel/"]),
        "channel/1 0 aa\nchannel/2 0 bb\n"
    );
    let trusted_before = std::fs::read(alice.trusted_file()).expect("trusted");
    let evidence = alice.caught(&server.url, &["get", "channel/"], "rollback");
    tampered_evidence_is_refused(&evidence);
    // A refused reply does not move the client's trusted checkpoint.
    assert_eq!(
        std::fs::read(alice.trusted_file()).expect("trusted"),
        trusted_before
    );
    // A put is refused too, though it was written: it makes the restored
    // log as long as the one the client saw, with another root.
    alice.caught(&server.url, &["put", "channel/3", "0", "cc"], "fork");
    assert!(server.terminate().0.success());

    // (d) The provider loses the data entirely (same server key).
    std::fs::remove_file(&db).expect("wipe");
    let server = spawn(&["--data-dir", dir]);
    assert_eq!(alice.ok(&server.url, &["get", "channel/"]), "");
    alice.caught(&server.url, &["get", "channel/"], "rollback");
    assert!(server.terminate().0.success());
}

/// (b): a row deleted from PostgreSQL under the running server is a key
/// left out of a prefix read; after a restart the server's own log gives
/// it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_out_of_a_prefix_read_is_caught_on_postgres() {
    let schema = lk_testkit::postgres::Schema::fresh().await;
    let data = tempfile::tempdir().expect("tempdir");
    let args = [
        "--data-dir",
        data.path().to_str().expect("utf-8"),
        "--database",
        "postgres",
        "--postgres-url",
        &schema.url,
        "--postgres-schema",
        &schema.name,
    ];
    let server = spawn(&args);
    let url = server.url.clone();
    let alice = tokio::task::spawn_blocking(move || {
        let alice = Device::new();
        alice.ok(&url, &["init"]);
        for (key, value) in [("x/1", "11"), ("x/2", "22"), ("x/3", "33"), ("y", "44")] {
            alice.ok(&url, &["--verify", "put", key, "0", value]);
        }
        assert_eq!(
            alice.ok(&url, &["--verify", "get", "x/"]),
            "x/1 0 11\nx/2 0 22\nx/3 0 33\n"
        );
        alice
    })
    .await
    .expect("join");
    let deleted = schema
        .client()
        .await
        .execute(
            &format!("DELETE FROM \"{}\".kv WHERE key = $1", schema.name),
            &[&b"x/2".as_slice()],
        )
        .await
        .expect("delete");
    assert_eq!(deleted, 1);
    let url = server.url.clone();
    let alice = tokio::task::spawn_blocking(move || {
        // Without verification the shortened read passes.
        assert_eq!(alice.ok(&url, &["get", "x/"]), "x/1 0 11\nx/3 0 33\n");
        let evidence = alice.caught(&url, &["get", "x/"], "false answer");
        tampered_evidence_is_refused(&evidence);
        alice
    })
    .await
    .expect("join");
    assert!(server.terminate().0.success());
    // Restarted, the server loads a state its log does not record: it signs
    // what it has, and the contradiction is in its own words.
    let server = spawn(&args);
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        alice.caught(&url, &["get", "x/"], "the signed state is not the state");
    })
    .await
    .expect("join");
    assert!(
        server.log().contains("not what its log records"),
        "{}",
        server.log()
    );
}

/// (c): two devices of one node, each shown its own history after the
/// operator forks the namespace; comparing checkpoints exposes the fork.
#[test]
fn two_devices_shown_different_histories_expose_the_fork() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf-8");
    let db = data.path().join("lightkeeper.redb");
    let server = spawn(&["--data-dir", dir]);
    let phone = Device::new();
    phone.ok(&server.url, &["init"]);
    phone.ok(&server.url, &["--verify", "put", "k", "0", "00"]);
    let laptop = phone.twin();
    laptop.ok(&server.url, &["--verify", "get", ""]);
    assert!(server.terminate().0.success());
    let fork_point = data.path().join("fork.redb");
    std::fs::copy(&db, &fork_point).expect("copy");

    // History 1, seen by the phone.
    let server = spawn(&["--data-dir", dir]);
    phone.ok(&server.url, &["--verify", "put", "phone", "0", "01"]);
    assert!(server.terminate().0.success());
    // History 2, from the fork point, seen by the laptop.
    std::fs::copy(&fork_point, &db).expect("fork");
    let server = spawn(&["--data-dir", dir]);
    laptop.ok(&server.url, &["--verify", "put", "laptop", "0", "02"]);
    // Each device alone is content. The laptop checks the server against
    // the phone's checkpoint (handed over out of band): a fork at size 2.
    let phone_state = phone.trusted_file();
    let evidence = laptop.dir.path().join("fork.json");
    let out = laptop.cli(
        &server.url,
        &[
            "--verify",
            "--trusted-state",
            phone_state.to_str().expect("utf-8"),
            "--evidence-out",
            evidence.to_str().expect("utf-8"),
            "get",
            "",
        ],
    );
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    let out = Device::new().cli(
        "http://127.0.0.1:9",
        &["verify-evidence", evidence.to_str().expect("utf-8")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("fork"), "{}", out.stdout);
    assert!(server.terminate().0.success());
}

/// A verifying client refuses a server that does not sign (the log off):
/// a downgrade is an error, never a silent fallback.
#[test]
fn a_server_without_the_log_is_refused_by_a_verifying_client() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = spawn(&[
        "--data-dir",
        data.path().to_str().expect("utf-8"),
        "--verifiable-log",
        "false",
    ]);
    let alice = Device::new();
    alice.ok(&server.url, &["init"]);
    alice.ok(&server.url, &["put", "k", "0", "00"]);
    let out = alice.cli(&server.url, &["--verify", "get", ""]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("no attestation"), "{}", out.stderr);
}

/// The log's keys are the server's: a client can neither write nor see them.
#[tokio::test]
async fn reserved_keys_are_neither_writable_nor_visible() {
    use lk_testkit::{kv, Lssd, Signer};
    let server = Lssd::start(0x22, lss_core::Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let status = grpc
        .put(signer.put(&[kv("\u{0}lightkeeper/head", 0, b"forged")]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("reserved"),
        "{}",
        status.message()
    );
    assert!(
        grpc.put(signer.put(&[kv("k", 0, b"v")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    // The store holds the log; reads (MAC checked) show the client's key only.
    assert_eq!(signer.dump(&mut grpc).await, vec![kv("k", 0, b"v")]);
}

/// Many verifying clients writing at once: lssd signs their receipts
/// together (one BIP340 signature over a batch, each receipt with its
/// inclusion proof), and each client's own check accepts its receipt and
/// keeps it as its trusted checkpoint; a reply whose batch proof is altered
/// is refused by the same check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_signed_together_verify_for_each_client() {
    use lss_client::{ConnectOptions, PrivClient};
    use lss_core::secp256k1::SecretKey;
    let server = lk_testkit::Lssd::start(0x22, lss_core::Limits::default()).await;
    let mut clients = Vec::new();
    for n in 1..=24u8 {
        let secret = SecretKey::from_slice(&[n; 32]).expect("key");
        let client = PrivClient::connect(&ConnectOptions::new(&server.url), &secret, None, [n; 32])
            .await
            .expect("connect")
            .verifying(None);
        clients.push(client);
    }
    for version in 0..4 {
        let puts = clients.iter_mut().map(|c| {
            c.put(vec![lk_testkit::kv(
                "state/a",
                version,
                &[version as u8; 512],
            )])
        });
        for result in futures_util::future::join_all(puts).await {
            result.expect("a verified put");
        }
    }
    let server_id = server.key.server_id();
    let mut batched = 0;
    for client in &mut clients {
        let note = client
            .client()
            .trusted()
            .expect("a trusted checkpoint")
            .note()
            .to_vec();
        let statement = lss_verify::Statement::verify(&note, &server_id).expect("signed");
        assert_eq!(statement.size, 4);
        let signature = signature_of(&note);
        if signature.len() > 64 {
            batched += 1;
            // The same receipt with its proof altered is not the server's.
            let mut altered = signature.clone();
            let last = altered.len() - 1;
            altered[last] ^= 1;
            assert!(
                lss_verify::Statement::verify(&with_signature(&note, &altered), &server_id)
                    .is_err()
            );
        }
    }
    assert!(
        batched > 0,
        "24 clients at once: some receipts share a signature"
    );
}

/// The signature bytes (after the key ID) of a checkpoint's only line.
fn signature_of(note: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(note).expect("utf-8");
    let line = text.trim_end().rsplit('\n').next().expect("signature line");
    tlog_b64(line.rsplit(' ').next().expect("base64"))[4..].to_vec()
}

/// `note` with its signature bytes replaced.
fn with_signature(note: &[u8], signature: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(note).expect("utf-8");
    let (head, line) = text.trim_end().rsplit_once('\n').expect("signature line");
    let (name, encoded) = line.rsplit_once(' ').expect("base64");
    let mut raw = tlog_b64(encoded)[..4].to_vec();
    raw.extend_from_slice(signature);
    format!("{head}\n{name} {}\n", b64(&raw)).into_bytes()
}
