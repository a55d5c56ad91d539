//! keyserver.md §3.8 and §10 "across a key rotation": `keyserverd
//! rotate-key` replaces the server's own key by an update of its identity,
//! signed by the old key or by the escrow key from paper; clients that
//! pinned the genesis follow the new key from the chain alone (sync,
//! Capabilities, receipts, lookups, fresh clients from zero), and a
//! rotation interrupted before its key was installed is finished at the
//! next start, while a key the chain never scheduled is refused.

mod support;

use ks_client::Client;
use support::Keyserverd;

const ARGS: &[&str] = &["--no-rate-limits", "--tokens", "disabled"];

fn keyserverd(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keyserverd"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run keyserverd")
}

/// Syncs until the chain reaches `size` (checkpoints every 100 ms).
fn sync_to(client: &mut Client, size: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        client.sync().expect("sync");
        if client.size() >= size {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "size {size} never published"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_server_key_rotates_and_clients_follow_it_from_the_chain() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("server");
    let server = Keyserverd::start(&dir, 0, ARGS);
    let paper = root.path().join("escrow.txt");
    std::fs::write(&paper, server.escrow.clone().expect("the escrow key")).expect("paper");
    let (url, pin) = (server.url.clone(), server.pin.clone());
    let port = server.port();

    let mut alice_client = Client::new(&url, pin.clone());
    alice_client.sync().expect("sync");
    let mut alice = alice_client
        .register("alice@localhost", "strict")
        .expect("alice");
    alice_client
        .publish_key_inits(&mut alice, 3, 1, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("publish");
    sync_to(&mut alice_client, alice.reply.entry.hashchain_pos + 1);
    assert_eq!(
        alice_client
            .capabilities()
            .expect("caps")
            .capabilities
            .signing_pos,
        0
    );
    let genesis_key = alice_client.signer(0).expect("genesis key");
    server.kill();

    // Rotation by the current key, with the server stopped.
    let out = keyserverd(&dir, &["rotate-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("log key: localhost/kt/v1+"), "{said}");
    let server = Keyserverd::start(&dir, port, ARGS);
    assert_eq!(server.pin, pin, "the pin is the genesis: it never changes");
    let before = alice_client.size();
    let synced = alice_client
        .sync()
        .expect("incremental sync across the rotation");
    assert_eq!(synced.from, before);
    let rotated_at = before; // the rotation UID is the next entry
    let new_key = alice_client.signer(rotated_at).expect("the new key");
    assert_ne!(new_key, genesis_key);
    assert_eq!(alice_client.signer(rotated_at - 1), Some(genesis_key));
    let caps = alice_client
        .capabilities()
        .expect("Capabilities under the new key");
    assert_eq!(caps.capabilities.signing_pos, rotated_at);
    assert_eq!(
        caps.capabilities.sig_pub_keys,
        vec![ks_core::b64::encode(new_key.as_bytes())]
    );
    // Receipts and replies now come from the new key, and verify.
    let mut bob = Client::new(&url, pin.clone());
    bob.sync().expect("a fresh client from zero");
    let start = bob.session_start("alice@localhost").expect("session start");
    assert!(start.receipt.one_time);
    let carol = bob.register("carol@localhost", "strict").expect("carol");
    assert!(carol.reply.signed_by(&new_key));
    assert!(!carol.reply.signed_by(&genesis_key));
    alice_client
        .update(&mut alice, None)
        .expect("alice rotates her own key");
    server.kill();

    // Rotation by the escrow key (the current key lost); a wrong paper key
    // is refused and changes nothing.
    let wrong = root.path().join("wrong.txt");
    std::fs::write(&wrong, ks_core::paper::encode(&[7; 32])).expect("wrong paper");
    let out = keyserverd(
        &dir,
        &[
            "rotate-key",
            "--escrow-file",
            wrong.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success(), "a wrong escrow key rotates nothing");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = keyserverd(
        &dir,
        &[
            "rotate-key",
            "--escrow-file",
            paper.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Keyserverd::start(&dir, port, ARGS);
    let mut fresh = Client::new(&url, pin.clone());
    fresh.sync().expect("a fresh client follows both rotations");
    let found = fresh
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice");
    assert_eq!(found.message, alice.uid);
    let third = fresh.signer(fresh.size() - 1).expect("key");
    assert!(
        third != new_key && third != genesis_key,
        "three keys in the schedule"
    );
    fresh
        .capabilities()
        .expect("Capabilities under the third key");
    server.kill();

    // A crash after the rotation committed but before its key was
    // installed: the next start finishes it.
    let key_file = dir.join("server_sigkey");
    let old = std::fs::read(&key_file).expect("key");
    let out = keyserverd(&dir, &["rotate-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&key_file, dir.join("server_sigkey.next")).expect("as if not installed");
    std::fs::write(&key_file, &old).expect("the old key back");
    let server = Keyserverd::start(&dir, port, ARGS);
    assert!(
        server
            .log()
            .contains("finished an interrupted key rotation"),
        "{}",
        server.log()
    );
    let mut fresh = Client::new(&url, pin.clone());
    fresh.sync().expect("sync after the finished rotation");
    fresh
        .capabilities()
        .expect("Capabilities under the fourth key");
    server.kill();

    // A key the chain never scheduled: refused at start, with the reason.
    std::fs::write(&key_file, &old).expect("a stale key");
    let out = keyserverd(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--sync-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("names another key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("server_sigkey.next").exists(),
        "no stray key file is made"
    );
}

/// keyserver.md §3.8, tlog.md §3.5: after a rotation by key, checkpoints
/// carry the old key's signature too for ROTATION_OVERLAP, so a plain
/// witness that knows only the old key keeps cosigning and publication
/// goes on (before, it refused every checkpoint after the rotation and
/// nothing new was published). An escrow rotation has no overlap.
#[test]
fn a_plain_witness_keeps_cosigning_through_the_overlap() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("server");
    let witness = lk_testkit::keyserverd::witness(
        std::path::Path::new(env!("CARGO_BIN_EXE_keyserverd")),
        &dir,
        &root.path().join("witness"),
    );
    let submit = witness.submit_to.clone();
    let mut args = ARGS.to_vec();
    args.extend(["--submit-to", &submit, "--publish-quorum", "1"]);
    let server = Keyserverd::start(&dir, 0, &args);
    let paper = root.path().join("escrow.txt");
    std::fs::write(&paper, server.escrow.clone().expect("the escrow key")).expect("paper");
    let (url, pin, port) = (server.url.clone(), server.pin.clone(), server.port());
    let mut client = Client::new(&url, pin);
    sync_to(&mut client, 1);
    server.kill();

    let out = keyserverd(&dir, &["rotate-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Keyserverd::start(&dir, port, &args);
    assert!(
        server.log().contains("previous key's signature"),
        "{}",
        server.log()
    );
    // The rotation and an entry after it are published: the witness
    // cosigned checkpoints the new key signed.
    sync_to(&mut client, 2);
    let alice = client.register("alice@localhost", "strict").expect("alice");
    sync_to(&mut client, alice.reply.entry.hashchain_pos + 1);
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let note = agent
        .get(format!("{url}kt/v1/checkpoint"))
        .call()
        .expect("checkpoint")
        .body_mut()
        .read_to_string()
        .expect("text");
    let log_lines = note
        .lines()
        .filter(|l| l.starts_with("— localhost/kt/v1 "))
        .count();
    assert_eq!(log_lines, 2, "signed by the new and the old key:\n{note}");
    assert!(
        note.lines()
            .any(|l| l.starts_with("— localhost/tlogd/witness ")),
        "cosigned by the witness that knows only the old key:\n{note}"
    );
    server.kill();

    // The escrow rotation: the key it replaces signs nothing more.
    let out = keyserverd(
        &dir,
        &[
            "rotate-key",
            "--escrow-file",
            paper.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("server_sigkey.previous").exists(),
        "no overlap after an escrow rotation"
    );
}

/// A previous-key file that does not parse stops the start with a clear
/// error naming it (never a panic, never a silent start without the
/// overlap); removing it lets the server start.
#[test]
fn an_unreadable_previous_key_file_is_refused_with_its_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("server");
    let server = Keyserverd::start(&dir, 0, ARGS);
    let port = server.port();
    server.kill();
    let previous = dir.join("server_sigkey.previous");
    for garbage in [
        &b"not a key\noverlap-until 1\n"[..],
        &b"\xff\xfe\n"[..],
        &std::fs::read(dir.join("server_sigkey")).expect("key")[..],
    ] {
        std::fs::write(&previous, garbage).expect("garbage");
        let out = keyserverd(
            &dir,
            &[
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--sync-listen",
                "127.0.0.1:0",
            ],
        );
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("server_sigkey.previous"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
    }
    // A well-formed file whose overlap is over is deleted at start.
    let key = std::fs::read_to_string(dir.join("server_sigkey")).expect("key");
    std::fs::write(&previous, format!("{}\noverlap-until 1\n", key.trim())).expect("write");
    let server = Keyserverd::start(&dir, port, ARGS);
    assert!(server.log().contains("overlap is over"), "{}", server.log());
    assert!(!previous.exists(), "deleted");
    server.kill();
}

/// keyserver.md §3.8: when fewer than 30 days of its UID's NOTAFTER
/// remain, the server updates its UID, keeping SIGKEY, so its identity
/// never lapses; clients follow the renewal from the chain, and a renewed
/// UID is not renewed again at the next start.
#[test]
fn the_server_renews_its_uid_before_it_lapses() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("server");
    let ten_days = (10 * 86_400).to_string();
    let mut args = ARGS.to_vec();
    args.extend(["--test-genesis-lifetime-secs", ten_days.as_str()]);
    let server = Keyserverd::start(&dir, 0, &args);
    let (url, pin, port) = (server.url.clone(), server.pin.clone(), server.port());
    let mut client = Client::new(&url, pin);
    // The genesis, then the renewal.
    sync_to(&mut client, 2);
    let own = client
        .lookup("keyserver@localhost")
        .expect("lookup")
        .expect("the server's identity");
    assert_eq!(own.message.content.msg_count, 1, "renewed once");
    assert!(
        own.message.content.not_after > support::now() + 300 * 86_400,
        "valid for about a year again"
    );
    assert_eq!(client.signer(1), client.signer(0), "SIGKEY kept");
    assert!(
        server.log().contains("renewed the server's UID"),
        "{}",
        server.log()
    );
    server.kill();

    let server = Keyserverd::start(&dir, port, ARGS);
    let alice = client.register("alice@localhost", "strict").expect("alice");
    assert_eq!(
        alice.reply.entry.hashchain_pos, 2,
        "nothing renewed again before Alice's entry"
    );
    client
        .capabilities()
        .expect("Capabilities under the same key");
    server.kill();
}
