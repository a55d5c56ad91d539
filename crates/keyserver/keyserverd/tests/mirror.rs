//! keyserver.md §8 and §10 "with Bob syncing from a mirror": a real
//! `keyserverd mirror` process follows a real primary over LKTL/1, checks
//! every leaf and UID before storing it, and serves the chain; Bob (who
//! requires the witness's cosignature) syncs, looks Alice up and starts a
//! session through it, a mirror without `--proxy-writes` refuses writes
//! with -32060 naming the primary, a restarted mirror resumes from what it
//! holds, and a mirror of a keyserver that forges a UID refuses the entry,
//! stays at the last valid size and keeps the signed note and the entry.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ks_client::{Client, ClientError};
use lk_testkit::keyserverd::Mirror;
use support::Keyserverd;

const ARGS: &[&str] = &["--no-rate-limits", "--tokens", "disabled"];

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keyserverd"))
}

/// Syncs from `client`'s server until its chain covers `pos` (the event
/// awaited is the mirror's next published checkpoint).
fn sync_past(client: &mut Client, pos: u64, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.sync() {
            Ok(_) if client.size() > pos => return,
            Ok(_) | Err(ClientError::Transport(_)) | Err(ClientError::Rpc { .. }) => {}
            Err(e) => panic!("sync: {e}\n{}", log()),
        }
        assert!(
            Instant::now() < deadline,
            "position {pos} never reached: {}\n{}",
            client.size(),
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alice's newest UID as `client` finds it on its verified chain.
fn alice_of(client: &mut Client) -> ks_core::uid::UidMessage {
    client
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice exists")
        .message
}

#[test]
fn bob_syncs_looks_up_and_starts_a_session_through_a_mirror() {
    let dir = tempfile::tempdir().expect("tempdir");
    let witness_dir = tempfile::tempdir().expect("tempdir");
    let witness = lk_testkit::keyserverd::witness(
        bin(),
        &dir.path().join("primary"),
        &witness_dir.path().join("witness"),
    );
    let mut args = ARGS.to_vec();
    args.extend(["--submit-to", witness.submit_to.as_str()]);
    let primary = Keyserverd::start(&dir.path().join("primary"), 0, &args);
    let pin = primary.pin.clone();

    // Alice registers at the primary, publishes KeyInits and confirms.
    let mut alice_client = Client::new(&primary.url, pin.clone());
    alice_client.sync().expect("alice syncs");
    let mut alice = alice_client
        .register("alice@localhost", "strict")
        .expect("register");
    alice_client
        .publish_key_inits(&mut alice, 3, 1, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("publish");
    let alice_pos = alice.reply.entry.hashchain_pos;

    // A mirror that relays writes, keeping the witness's cosignatures.
    let relaying = Mirror::start(
        bin(),
        &dir.path().join("mirror"),
        &primary.process,
        &["--proxy-writes", "--witness", witness.vkey.as_str()],
    );
    // Bob talks only to the mirror and accepts only witnessed checkpoints.
    let mut bob = Client::new(&relaying.url, pin.clone());
    bob.require_witnesses(std::slice::from_ref(&witness.vkey), 1)
        .expect("policy");
    sync_past(&mut bob, alice_pos, || relaying.log());
    // Capabilities are the primary's, relayed unchanged (they verify).
    let caps = bob.capabilities().expect("relayed capabilities verify");
    assert_eq!(caps.capabilities.keyserver_identity, pin.identity);
    let found = bob
        .lookup("alice@localhost")
        .expect("lookup on the mirror's chain and UIDs")
        .expect("alice exists");
    assert_eq!(found.message, alice.uid);
    // SessionStart: the KeyInit repository is the primary's, relayed.
    let start = bob.session_start("alice@localhost").expect("session start");
    assert!(start.receipt.one_time);
    let bob_eph = x25519_dalek::StaticSecret::from([0x42; 32]);
    let bob_side = bob_eph.diffie_hellman(&x25519_dalek::PublicKey::from(start.pf_key));
    let alice_pf = alice
        .pf_secrets
        .get(&start.key_init_hash)
        .expect("alice's PF key");
    assert_eq!(
        alice_pf
            .diffie_hellman(&x25519_dalek::PublicKey::from(&bob_eph))
            .as_bytes(),
        bob_side.as_bytes()
    );
    // The mirror serves the log's tiles too.
    let checkpoint = ureq::get(&format!("{}kt/v1/checkpoint", relaying.url))
        .call()
        .expect("checkpoint")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(checkpoint.starts_with("localhost/kt/v1\n"), "{checkpoint}");

    // A mirror without --proxy-writes: reads yes, writes -32060 naming the
    // primary; unknown methods stay unknown.
    let plain = Mirror::start(bin(), &dir.path().join("plain"), &primary.process, &[]);
    let msg = support::msg_json(&alice.uid);
    for (method, params) in [
        (
            "KeyRepository.UpdateUID",
            serde_json::json!({ "UIDMessage": msg }),
        ),
        (
            "KeyInitRepository.FetchKeyInit",
            serde_json::json!({ "SigKeyHash": "AA" }),
        ),
    ] {
        let v = support::call(&plain.url, method, params);
        assert_eq!(support::code(&v), -32060, "{method}: {v}");
        assert_eq!(
            v["error"]["data"]["primary"].as_str(),
            Some(primary.url.as_str())
        );
    }
    let v = support::call(&plain.url, "Nope.Nothing", serde_json::json!({}));
    assert_eq!(support::code(&v), -32601, "{v}");
    let mut carol = Client::new(&plain.url, pin.clone());
    sync_past(&mut carol, alice_pos, || plain.log());
    assert!(carol.lookup("alice@localhost").expect("lookup").is_some());

    // Alice updates at the primary; Bob sees it incrementally through the
    // mirror, also after the mirror is killed and restarted on its data.
    alice_client.update(&mut alice, None).expect("update");
    let update_pos = alice.reply.entry.hashchain_pos;
    let before = bob.size();
    sync_past(&mut bob, update_pos, || relaying.log());
    assert!(bob.size() > before);
    assert_eq!(alice_of(&mut bob), alice.uid);
    drop(relaying);
    let restarted = Mirror::start(
        bin(),
        &dir.path().join("mirror"),
        &primary.process,
        &["--proxy-writes", "--witness", witness.vkey.as_str()],
    );
    let held = restarted.log();
    assert!(
        !held.contains("(0 entries held)"),
        "the restarted mirror resumes from its data: {held}"
    );
    let mut dave = Client::new(&restarted.url, pin);
    dave.require_witnesses(std::slice::from_ref(&witness.vkey), 1)
        .expect("policy");
    sync_past(&mut dave, update_pos, || restarted.log());
    assert_eq!(alice_of(&mut dave), alice.uid);
}

#[test]
fn a_mirror_refuses_a_forged_uid_and_keeps_what_proves_it() {
    // A blob of another UID (its UIDIndex prefix is not the entry's).
    refused_with_evidence("Test.CorruptUIDs", "bad-uid", "UIDIndex", "UIDIndex");
}

#[test]
fn a_mirror_refuses_a_reply_for_another_entry_and_keeps_what_proves_it() {
    // A reply naming the previous position's entry: the log's signed note
    // has another entry there.
    refused_with_evidence(
        "Test.MisplaceUIDs",
        "reply-not-in-log",
        "names another entry",
        "another entry there",
    );
}

/// The primary starts forging FetchUID replies with `fault` after the
/// mirror caught up; the mirror refuses the next entry with `reason`,
/// keeps `invalid.json` and a `kind` evidence file that `ks-cli
/// verify-evidence` accepts (saying `proven`) and refuses once altered,
/// and its clients never get past the last valid entry.
fn refused_with_evidence(fault: &str, kind: &str, reason: &str, proven: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = Keyserverd::start(&dir.path().join("primary"), 0, ARGS);
    let pin = primary.pin.clone();
    let mut alice_client = Client::new(&primary.url, pin.clone());
    alice_client.sync().expect("sync");
    let alice = alice_client
        .register("alice@localhost", "strict")
        .expect("register");
    let mirror_dir = dir.path().join("mirror");
    let mirror = Mirror::start(bin(), &mirror_dir, &primary.process, &[]);
    let mut bob = Client::new(&mirror.url, pin.clone());
    sync_past(&mut bob, alice.reply.entry.hashchain_pos, || mirror.log());

    // From now on the primary's FetchUID forges its replies (`fault`),
    // signed by its key.
    let v = support::call(&primary.url, fault, serde_json::json!({}));
    assert!(v.get("error").is_none(), "{v}");
    let (mallet, _) = {
        let mut c = Client::new(&primary.url, pin.clone());
        c.sync().expect("sync");
        let own = c.register("mallet@localhost", "strict").expect("register");
        (own, c)
    };
    let forged = mallet.reply.entry.hashchain_pos;

    // The mirror refuses that entry and keeps the signed note with it.
    let invalid = mirror_dir.join("invalid.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !invalid.exists() {
        assert!(
            Instant::now() < deadline,
            "the mirror never refused the forged UID:\n{}",
            mirror.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&invalid).expect("read")).expect("json");
    assert!(
        kept["reason"].as_str().is_some_and(|r| r.contains(reason)),
        "{kept}"
    );
    let refused = kept["entries"]
        .as_array()
        .and_then(|e| e.last())
        .expect("the refused entry");
    assert_eq!(refused["index"].as_u64(), Some(forged));
    assert!(kept["checkpoint"]
        .as_str()
        .is_some_and(|c| c.starts_with("localhost/kt/v1\n")));
    // An evidence file anyone checks with the pin; altered, it proves
    // nothing.
    let evidence = mirror_dir.join(format!("evidence-{kind}-{forged}.json"));
    let cli = lk_testkit::process::workspace_binary("ks-cli");
    let stranger = dir.path().join("stranger");
    let verify = |file: &Path| {
        lk_testkit::keyserverd::ks_cli(
            &cli,
            &stranger,
            &["verify-evidence", file.to_str().expect("utf8")],
        )
    };
    let out = verify(&evidence);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(proven), "{}", out.stdout);
    let mut altered: ks_core::evidence::Evidence =
        ks_core::lcj::Lcj::from_lcj(&std::fs::read(&evidence).expect("read")).expect("parses");
    altered.replies[0].entry.timestamp += 1;
    let altered_file = dir.path().join("altered.json");
    std::fs::write(&altered_file, altered.to_file()).expect("write");
    assert_eq!(
        verify(&altered_file).code,
        1,
        "an altered reply is unsigned"
    );
    // Clients of the mirror never get past the last valid entry.
    bob.sync().expect("the mirror's chain still verifies");
    assert!(bob.size() <= forged, "{} > {forged}", bob.size());
    assert!(mirror.log().contains("Invalid"), "{}", mirror.log());
}

#[test]
fn a_running_mirror_follows_a_rotation_of_the_server_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("primary");
    let primary = Keyserverd::start(&server_dir, 0, ARGS);
    let pin = primary.pin.clone();
    let mirror = Mirror::start(bin(), &dir.path().join("mirror"), &primary.process, &[]);
    let mut bob = Client::new(&mirror.url, pin.clone());
    sync_past(&mut bob, 0, || mirror.log());
    let genesis_key = bob.signer(0).expect("the genesis key");

    // Rotation by the current key with the primary stopped; it comes back
    // on the same addresses, signing with both keys for the overlap.
    let (port, sync) = (
        primary.port(),
        primary.process.sync.clone().expect("sync address"),
    );
    primary.kill();
    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(&server_dir)
        .arg("rotate-key")
        .output()
        .expect("rotate-key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = ARGS.to_vec();
    args.extend(["--sync-listen", sync.as_str()]);
    let primary = Keyserverd::start(&server_dir, port, &args);
    let mut alice_client = Client::new(&primary.url, pin.clone());
    alice_client.sync().expect("sync");
    let rotated_at = alice_client.size() - 1;
    let alice = alice_client
        .register("alice@localhost", "strict")
        .expect("register under the new key");

    // The mirror took the rotation from the chain (its own chain verified)
    // and checks notes with the new key; Bob follows through it.
    sync_past(&mut bob, alice.reply.entry.hashchain_pos, || {
        format!("{}\nthe primary:\n{}", mirror.log(), primary.log())
    });
    let new_key = bob.signer(rotated_at).expect("the new key");
    assert_ne!(new_key, genesis_key);
    assert!(
        mirror.log().contains("the log's key changed"),
        "{}",
        mirror.log()
    );
    assert_eq!(alice_of(&mut bob), alice.uid);
}

#[test]
fn a_mirror_cosigns_what_it_checked_and_clients_can_require_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("primary");
    let primary = Keyserverd::start(&server_dir, 0, ARGS);
    let pin = primary.pin.clone();
    let mirror = Mirror::start(bin(), &dir.path().join("mirror"), &primary.process, &[]);
    assert!(mirror.validating_vkey.contains("/validator+"));
    // The operator adds the mirror's cosigner to the primary (a restart on
    // the same addresses; the mirror reconnects).
    let (port, sync) = (
        primary.port(),
        primary.process.sync.clone().expect("sync address"),
    );
    primary.kill();
    let mut args = ARGS.to_vec();
    args.extend([
        "--sync-listen",
        sync.as_str(),
        "--mirror-cosigner",
        mirror.validating_vkey.as_str(),
    ]);
    let primary = Keyserverd::start(&server_dir, port, &args);
    let mut alice_client = Client::new(&primary.url, pin.clone());
    alice_client.sync().expect("sync");
    let alice = alice_client
        .register("alice@localhost", "strict")
        .expect("register");

    // Bob, at the primary, accepts only checkpoints the mirror cosigned:
    // it does so only for sizes whose entries and UIDs it checked and
    // stored, and the primary keeps its line on what it serves.
    let mut bob = Client::new(&primary.url, pin);
    bob.require_witnesses(std::slice::from_ref(&mirror.validating_vkey), 1)
        .expect("policy");
    let pos = alice.reply.entry.hashchain_pos;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bob.size() <= pos {
        match bob.sync() {
            Ok(_) | Err(ClientError::Unwitnessed(_)) => {}
            Err(e) => panic!("sync: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "never cosigned by the mirror:\n{}\nthe primary:\n{}",
            mirror.log(),
            primary.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(alice_of(&mut bob), alice.uid);
    // A cosigner key that is not one is refused at start.
    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path().join("misconfigured"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--sync-listen", "127.0.0.1:0"])
        .args(["--mirror-cosigner", "not-a-key"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--mirror-cosigner"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_mirror_refuses_to_start_on_a_bad_pin_or_without_a_verified_primary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = Keyserverd::start(&dir.path().join("primary"), 0, ARGS);
    let sync = primary.process.sync.clone().expect("sync address");
    let other_h0 = format!("keyserver@localhost:{}", "ab".repeat(32));
    for (from, pin, said) in [
        (primary.url.as_str(), "keyserver@localhost", "--pin"),
        (primary.url.as_str(), "not a pin at all", "--pin"),
        // The pin of another log: the primary's genesis does not match.
        (
            primary.url.as_str(),
            other_h0.as_str(),
            "verifying the primary's chain",
        ),
        // Nobody there.
        (
            "http://127.0.0.1:9/",
            primary.process.pin.as_str(),
            "verifying the primary's chain",
        ),
    ] {
        let out = std::process::Command::new(bin())
            .arg("--data-dir")
            .arg(dir.path().join("mirror"))
            .args([
                "mirror",
                "--from",
                from,
                "--sync",
                sync.as_str(),
                "--pin",
                pin,
            ])
            .args(["--listen", "127.0.0.1:0", "--sync-listen", "127.0.0.1:0"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{pin}: {stderr}");
        assert!(stderr.contains(said), "{pin}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
