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
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
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
