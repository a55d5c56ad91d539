//! The seed's use case as README tells a newcomer to play it: `keyserverd`
//! and two `ks-cli` processes (Alice and Bob, separate directories). Every
//! step verifies; exit codes follow keyserver.md §6.6.

use std::path::Path;

use lk_testkit::keyserverd::{CliOut, Keyserverd};
use lk_testkit::process::workspace_binary;

fn ks_cli(dir: &Path, args: &[&str]) -> CliOut {
    lk_testkit::keyserverd::ks_cli(Path::new(env!("CARGO_BIN_EXE_ks-cli")), dir, args)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ks_cli(dir, args);
    assert_eq!(o.code, 0, "ks-cli {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// `confirm` with the escrow key on paper, waiting up to 30 s.
fn confirm(dir: &Path, identity: &str) -> serde_json::Value {
    json(
        dir,
        &["confirm", identity, "--escrow-printed", "--max-wait", "30"],
    )
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(dir, &all)).expect("json output")
}

#[test]
fn alice_and_bob_with_the_command_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(
        &workspace_binary("keyserverd"),
        &root.path().join("server"),
        0,
        // Two users playing quickly from one address: §4.6's limits are
        // tested in keyserverd's refusals.rs.
        &["--no-rate-limits"],
    );
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let url = server.url.as_str();
    let pin = server.pin.as_str();

    ok(&alice, &["init", "--server", url, "--pin", pin]);
    // Registration costs a token: without one, exit 5 and nothing stored.
    let o = ks_cli(&alice, &["register", "alice@localhost"]);
    assert_eq!(o.code, 5, "{}{}", o.stdout, o.stderr);
    // Alice buys 8 tokens blindly: her wallet blinds the requests, the
    // operator signs them offline, her wallet unblinds and verifies them.
    let (req, resp) = (root.path().join("req.json"), root.path().join("resp.json"));
    let (req_s, resp_s) = (req.to_str().expect("utf-8"), resp.to_str().expect("utf-8"));
    ok(
        &alice,
        &["tokens", "request", "--count", "8", "--out", req_s],
    );
    assert_eq!(json(&alice, &["tokens", "balance"])["pending"], 8);
    let signed = std::process::Command::new(workspace_binary("keyserverd"))
        .args([
            "--data-dir",
            root.path().join("server").to_str().expect("utf-8"),
        ])
        .args(["tokens", "sign", "--in", req_s, "--out", resp_s])
        .output()
        .expect("keyserverd tokens sign");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let fin = json(&alice, &["tokens", "finalize", "--in", resp_s]);
    assert_eq!(fin["added"], 8, "{fin}");
    // The same response again adds nothing (its request is answered).
    assert_eq!(
        ks_cli(&alice, &["tokens", "finalize", "--in", resp_s]).code,
        3
    );
    let reg = json(&alice, &["register", "alice@localhost"]);
    let escrow = reg["escrow"].as_str().expect("escrow").to_string();
    let paper = root.path().join("escrow.txt");
    std::fs::write(&paper, &escrow).expect("paper");
    let published = json(
        &alice,
        &[
            "keyinit",
            "publish",
            "alice@localhost",
            "--count",
            "2",
            "--fallback",
            "1",
            "--mixaddress",
            "mix.localhost",
            "--nymaddress",
            "bnltYWRkcmVzcw==",
        ],
    );
    assert_eq!(published["published"], 3);
    let confirmed = confirm(&alice, "alice@localhost");
    assert_eq!(confirmed["position"], reg["position"]);

    // Bob: a wrong pin is refused with "misbehaviour" (4), the right one works.
    let wrong = format!("keyserver@localhost:{}", "00".repeat(32));
    let o = ks_cli(&bob, &["init", "--server", url, "--pin", &wrong]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    // Nothing of the refused pin stays: the right one is taken next.
    ok(&bob, &["init", "--server", url, "--pin", pin]);
    let found = json(&bob, &["lookup", "alice@localhost"]);
    assert_eq!(found["position"], reg["position"]);
    let start = json(&bob, &["session-start", "alice@localhost"]);
    assert_eq!(start["FALLBACK"], false);
    assert_eq!(start["IDENTITY"], "alice@localhost");
    let second = json(&bob, &["session-start", "alice@localhost"]);
    assert_ne!(second["KEYINITHASH"], start["KEYINITHASH"]);
    // Only the fallback is left: strict refuses it (exit 3).
    let o = ks_cli(&bob, &["session-start", "alice@localhost"]);
    assert_eq!(o.code, 3, "{}{}", o.stdout, o.stderr);
    // Unknown and taken names: exit 3.
    assert_eq!(ks_cli(&bob, &["lookup", "carol@localhost"]).code, 3);
    assert_eq!(ks_cli(&bob, &["register", "a1ice@localhost"]).code, 3);
    // Alice rotates, then recovers with the paper escrow key; Bob sees it.
    let upd = json(&alice, &["update", "alice@localhost"]);
    assert_eq!(upd["msgcount"], 1);
    let rec = json(
        &alice,
        &[
            "update",
            "alice@localhost",
            "--escrow",
            paper.to_str().expect("utf8"),
        ],
    );
    assert_eq!(rec["msgcount"], 2);
    // A mistyped paper key is caught by its checksum.
    let typo = root.path().join("typo.txt");
    let mut chars: Vec<char> = escrow.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    std::fs::write(&typo, chars.into_iter().collect::<String>()).expect("typo");
    let o = ks_cli(
        &alice,
        &[
            "update",
            "alice@localhost",
            "--escrow",
            typo.to_str().expect("utf8"),
        ],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("checksum"), "{}", o.stderr);
    // Bob syncs incrementally and sees MSGCOUNT 2 (wait for publication).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found = json(&bob, &["lookup", "alice@localhost"]);
        if found["msgcount"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the update was never published"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A peer's LASTENTRY check and the checkpoint.
    let cp = ok(&bob, &["checkpoint"]);
    assert!(cp.starts_with("localhost/kt/v1\n"), "{cp}");
    assert_eq!(ks_cli(&bob, &["check-entry", &"A".repeat(204)]).code, 3);
    // Flush: afterwards no KeyInit (exit 3).
    ok(
        &alice,
        &[
            "keyinit",
            "publish",
            "alice@localhost",
            "--count",
            "1",
            "--fallback",
            "0",
            "--mixaddress",
            "mix.localhost",
            "--nymaddress",
            "bnltYWRkcmVzcw==",
        ],
    );
    let flushed = json(&alice, &["keyinit", "flush", "alice@localhost"]);
    assert_eq!(flushed["flushed"], 1);
    assert_eq!(ks_cli(&bob, &["session-start", "alice@localhost"]).code, 3);
    // Register, 3 + 1 KeyInits and two updates spent 7 of the 8 tokens.
    assert_eq!(json(&alice, &["tokens", "balance"])["balance"], 1);
    // Usage errors: exit 2.
    assert_eq!(ks_cli(&bob, &["frobnicate"]).code, 2);
    drop(server);
}

/// keyserver.md §2.1: TLS with lssd's flags. `ks-cli` reaches a keyserver
/// over HTTPS only when it trusts its certificate (`--ca-cert`), and one
/// with mutual TLS only with a certificate of its client CA; a public
/// listener without TLS, or TLS settings that cannot work, stop keyserverd
/// at start with the reason.
#[test]
fn the_keyserver_over_tls_and_mutual_tls() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = lk_testkit::pki::TlsFixture::write(root.path());
    let (cert, key, ca_file) = (&pki.server_cert, &pki.server_key, &pki.server_ca);
    fn with<'a>(ca: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--ca-cert", ca];
        all.extend_from_slice(args);
        all
    }

    let server = Keyserverd::start(
        &workspace_binary("keyserverd"),
        &root.path().join("server"),
        0,
        &[
            "--no-rate-limits",
            "--tokens",
            "disabled",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let url = server.url.replace("127.0.0.1", "localhost");
    let pin = server.pin.as_str();
    let alice = root.path().join("alice");
    let untrusted = ks_cli(&alice, &["init", "--server", &url, "--pin", pin]);
    assert_eq!(untrusted.code, 1, "{}", untrusted.stdout);
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    let plain = ks_cli(
        &alice,
        &[
            "init",
            "--server",
            &url.replace("https://", "http://"),
            "--pin",
            pin,
        ],
    );
    assert_ne!(plain.code, 0, "plain HTTP to the TLS port");
    ok(
        &alice,
        &with(ca_file, &["init", "--server", &url, "--pin", pin]),
    );
    let reg = json(&alice, &with(ca_file, &["register", "alice@localhost"]));
    assert!(reg["position"].as_u64().is_some(), "{reg}");
    drop(server);

    let server = Keyserverd::start(
        &workspace_binary("keyserverd"),
        &root.path().join("server-mtls"),
        0,
        &[
            "--no-rate-limits",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-client-ca",
            &pki.client_ca,
        ],
    );
    let url = server.url.replace("127.0.0.1", "localhost");
    let pin = server.pin.as_str();
    let bob = root.path().join("bob");
    let refused = ks_cli(
        &bob,
        &with(ca_file, &["init", "--server", &url, "--pin", pin]),
    );
    assert_eq!(refused.code, 1, "no client certificate: {}", refused.stdout);
    for (client_cert, client_key, admitted) in [
        (&pki.forged_cert, &pki.forged_key, false),
        (&pki.client_cert, &pki.client_key, true),
    ] {
        let out = ks_cli(
            &bob,
            &with(
                ca_file,
                &[
                    "--client-cert",
                    client_cert,
                    "--client-key",
                    client_key,
                    "init",
                    "--server",
                    &url,
                    "--pin",
                    pin,
                ],
            ),
        );
        let code = if admitted { 0 } else { 1 };
        assert_eq!(
            out.code, code,
            "{client_cert}: {}{}",
            out.stdout, out.stderr
        );
    }
    drop(server);

    let start = |extra: &[&str]| {
        std::process::Command::new(workspace_binary("keyserverd"))
            .args([
                "--data-dir",
                root.path().join("refused").to_str().expect("utf-8"),
            ])
            .args(extra)
            .output()
            .expect("run keyserverd")
    };
    for (extra, reason) in [
        (vec!["--listen", "0.0.0.0:0"], "--tls-cert"),
        (
            vec!["--listen", "127.0.0.1:0", "--tls-key", key],
            "--tls-key needs --tls-cert",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                cert,
            ],
            "no private key",
        ),
    ] {
        let out = start(&extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} must not start");
        assert!(stderr.contains(reason), "{extra:?}: {stderr}");
    }
}

/// keyserver.md §6.2 step 4 and §10: `keyserverd --submit-to` a real
/// `tlogd` witness publishes only cosigned checkpoints, and `ks-cli init
/// --witness` accepts only those. A client requiring a witness that never
/// cosigned this log refuses the keyserver (and keeps nothing), as it
/// would a split view shown to it alone.
#[test]
fn a_witnessed_keyserver_and_clients_that_require_the_witness() {
    let root = tempfile::tempdir().expect("tempdir");
    let server_dir = root.path().join("server");
    let witness = lk_testkit::keyserverd::witness(
        &workspace_binary("keyserverd"),
        &server_dir,
        &root.path().join("witness"),
    );
    let (log_vkey, witness_vkey) = (witness.log_vkey.clone(), witness.vkey.clone());
    let submit = witness.submit_to.clone();
    let server = Keyserverd::start(
        &workspace_binary("keyserverd"),
        &server_dir,
        0,
        &[
            "--no-rate-limits",
            "--tokens",
            "disabled",
            "--submit-to",
            &submit,
        ],
    );
    assert!(server.log().contains(&log_vkey), "the log key is printed");
    let (url, pin) = (server.url.as_str(), server.pin.as_str());

    let alice = root.path().join("alice");
    ok(
        &alice,
        &[
            "init",
            "--server",
            url,
            "--pin",
            pin,
            "--witness",
            &witness_vkey,
        ],
    );
    let reg = json(&alice, &["register", "alice@localhost"]);
    let confirmed = confirm(&alice, "alice@localhost");
    assert_eq!(confirmed["position"], reg["position"]);
    let cp = ok(&alice, &["checkpoint"]);
    assert!(
        cp.lines()
            .any(|l| l.starts_with("— localhost/tlogd/witness ")),
        "the kept checkpoint carries the witness's cosignature:\n{cp}"
    );
    let caps = json(&alice, &["capabilities"]);
    assert_eq!(
        caps["CAPABILITIES"]["WITNESSES"][0],
        witness_vkey.as_str(),
        "{caps}"
    );

    // A witness that never cosigned this log: refused, nothing kept.
    let stranger = tlog_core::note::SignerKey::from_seed(
        "elsewhere/witness",
        tlog_core::note::KeyType::Cosignature,
        &[9; 32],
    )
    .expect("key")
    .verifier()
    .to_string();
    let bob = root.path().join("bob");
    let o = ks_cli(
        &bob,
        &[
            "init",
            "--server",
            url,
            "--pin",
            pin,
            "--witness",
            &stranger,
        ],
    );
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("not witnessed"), "{}", o.stderr);
    let both = [
        "init",
        "--server",
        url,
        "--pin",
        pin,
        "--witness",
        &witness_vkey,
        "--witness",
        &stranger,
    ];
    let mut all = both.to_vec();
    all.extend(["--witness-quorum", "2"]);
    assert_eq!(
        ks_cli(&bob, &all).code,
        1,
        "two of two: the stranger never signs"
    );
    let mut one = both.to_vec();
    one.extend(["--witness-quorum", "1"]);
    ok(&bob, &one);
    let found = json(&bob, &["lookup", "alice@localhost"]);
    assert_eq!(found["position"], reg["position"]);
    // Not a witness key, or a quorum beyond the list: usage errors.
    assert_eq!(
        ks_cli(
            &root.path().join("carol"),
            &[
                "init",
                "--server",
                url,
                "--pin",
                pin,
                "--witness",
                &log_vkey
            ]
        )
        .code,
        2
    );
    drop(server);
}
