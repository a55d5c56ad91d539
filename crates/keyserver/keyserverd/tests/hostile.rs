//! keyserver.md §10's hostile keyserver, first attacks: a real `keyserverd`
//! built with `test-faults` forges UIDs for Alice (a self-signed update by
//! a key of its own; a MSGCOUNT-0 re-registration while she is live). Bob's
//! `ks-cli lookup` and Alice's `ks-cli monitor` catch it with exit 4 and an
//! evidence file that `ks-cli verify-evidence` accepts offline; altered or
//! innocent "evidence" is refused.

mod support;

use std::path::Path;

use ed25519_dalek::SigningKey;
use ks_core::author::{self, Authority, UidKeys};
use ks_core::evidence::Evidence;
use ks_core::lcj::Lcj;
use lk_testkit::keyserverd::CliOut;
use serde_json::json;
use support::{now, post_raw, Keyserverd};

fn ks_cli(dir: &Path, args: &[&str]) -> CliOut {
    lk_testkit::keyserverd::ks_cli(&lk_testkit::process::workspace_binary("ks-cli"), dir, args)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ks_cli(dir, args);
    assert_eq!(o.code, 0, "ks-cli {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// The evidence path from ks-cli's message.
fn evidence_path(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("evidence written to "))
        .unwrap_or_else(|| panic!("no evidence file: {stderr}"))
        .to_string()
}

/// A keyserverd built with `test-faults`, tokens disabled and no rate
/// limits (the attacks, not payment, are under test), plus `extra` flags.
fn hostile_server(extra: &[&str]) -> (tempfile::TempDir, Keyserverd) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--no-rate-limits", "--tokens", "disabled"];
    args.extend_from_slice(extra);
    let server = Keyserverd::start(&root.path().join("server"), 0, &args);
    (root, server)
}

/// Turns on a `test-faults` misbehaviour; its result.
fn fault(url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (_, v) = post_raw(url, "application/json", body.to_string().as_bytes());
    assert!(v["result"].is_object(), "{method}: {v}");
    v["result"].clone()
}

/// `ks-cli keyinit publish` of `count` one-time KeyInits for Alice.
fn publish(alice: &Path, count: u32) {
    ok(
        alice,
        &[
            "keyinit",
            "publish",
            "alice@localhost",
            "--count",
            &count.to_string(),
            "--fallback",
            "0",
            "--mixaddress",
            "mix.localhost",
            "--nymaddress",
            "bnltYWRkcmVzcw==",
        ],
    );
}

/// Alice (`root/alice`) registers and publishes `keyinits` one-time
/// KeyInits; Bob (`root/bob`) pins the server and sees her published.
fn alice_publishes_bob_looks(
    root: &Path,
    server: &Keyserverd,
    keyinits: u32,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (alice, bob) = (root.join("alice"), root.join("bob"));
    let (url, pin) = (server.url.as_str(), server.process.pin.as_str());
    ok(&alice, &["init", "--server", url, "--pin", pin]);
    ok(&alice, &["register", "alice@localhost"]);
    publish(&alice, keyinits);
    ok(&bob, &["init", "--server", url, "--pin", pin]);
    assert_eq!(wait_published(&bob, "alice@localhost", 0).code, 0);
    (alice, bob)
}

/// An update of Alice's UID (MSGCOUNT 1, her escrow and static keys kept)
/// signed by `forger`, a key that is not hers: what a compromised server
/// appends. `client` syncs first.
fn forged_update(client: &mut ks_client::Client, forger: &SigningKey) -> ks_core::uid::UidMessage {
    client.sync().expect("sync");
    let honest = client
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice");
    let keys = UidKeys {
        sig_key: forger,
        escrow: None,
        static_key: [9; 32],
    };
    let mut content = author::content(
        "alice@localhost",
        &keys,
        1,
        client.entry(client.size() - 1),
        "strict",
        now(),
    );
    content.sig_escrow = honest.message.content.sig_escrow.clone();
    content.pubkeys = honest.message.content.pubkeys.clone();
    author::sign_update(content, forger, Authority::User(forger))
}

/// An altered evidence file proves nothing: `verify-evidence` exits 1.
fn refused(root: &Path, e: &Evidence, name: &str) {
    let f = root.join(name);
    std::fs::write(&f, e.to_file()).expect("write");
    let o = ks_cli(
        &root.join("stranger"),
        &["verify-evidence", f.to_str().expect("utf8")],
    );
    assert_eq!(o.code, 1, "{name}: {}{}", o.stdout, o.stderr);
}

fn wait_published(dir: &Path, identity: &str, msgcount: u64) -> CliOut {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = ks_cli(dir, &["--json", "lookup", identity]);
        if o.code == 3 && std::time::Instant::now() < deadline {
            // Not in a published checkpoint yet.
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        if o.code != 0 {
            return o;
        }
        let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
        if v["msgcount"] != msgcount {
            assert!(std::time::Instant::now() < deadline, "never published");
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        return o;
    }
}

#[test]
fn a_forged_update_is_caught_with_evidence_anyone_can_check() {
    let (root, server) = hostile_server(&[]);
    assert!(
        server.log().contains("test-faults"),
        "the forging build runs: {}",
        server.log()
    );
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let pin = format!(
        "{}:{}",
        server.pin.identity,
        server
            .pin
            .h0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    ok(&alice, &["init", "--server", &server.url, "--pin", &pin]);
    ok(&alice, &["register", "alice@localhost"]);
    ok(&alice, &["confirm", "alice@localhost", "--max-wait", "30"]);
    ok(&alice, &["monitor"]);

    // The server forges an update of Alice's UID with a key of its own.
    let mut client = ks_client::Client::new(&server.url, server.pin.clone());
    let forged = forged_update(&mut client, &SigningKey::from_bytes(&[0x66; 32]));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "Test.ForgeUID",
        "params": {"UIDMessage": serde_json::from_slice::<serde_json::Value>(&forged.to_lcj()).expect("json")}});
    let (status, v) = post_raw(&server.url, "application/json", body.to_string().as_bytes());
    assert_eq!(status, 200);
    assert!(v["result"].is_object(), "the forging server signed it: {v}");

    // Bob looks Alice up: exit 4, evidence written; it verifies offline.
    ok(&bob, &["init", "--server", &server.url, "--pin", &pin]);
    let o = wait_published(&bob, "alice@localhost", 1);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let verified = ok(&bob, &["verify-evidence", &file]);
    assert!(verified.contains("proven"), "{verified}");
    // Anyone can check it: a fresh directory, no server, no state.
    let stranger = root.path().join("stranger");
    drop(server);
    let verified = ok(&stranger, &["verify-evidence", &file]);
    assert!(verified.contains("did not authorise"), "{verified}");

    // Alice's monitor alarms too, after a restart of the server on another
    // port (the chain itself verifies; her identity does not).
    let server = Keyserverd::start(
        &root.path().join("server"),
        0,
        &["--no-rate-limits", "--tokens", "disabled"],
    );
    ok(&alice, &["init", "--server", &server.url, "--pin", &pin]);
    let o = ks_cli(&alice, &["monitor"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    ok(&stranger, &["verify-evidence", &evidence_path(&o.stderr)]);

    // Altered evidence proves nothing: another identity, a flipped
    // signature, or two honest replies.
    let evidence = Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("evidence");
    let write = |name: &str, e: &Evidence| {
        let p = root.path().join(name);
        std::fs::write(&p, e.to_file()).expect("write");
        p.to_str().expect("utf8").to_string()
    };
    let mut other = evidence.clone();
    other.identity = "bob@localhost".into();
    assert_eq!(
        ks_cli(
            &stranger,
            &["verify-evidence", &write("other.json", &other)]
        )
        .code,
        1
    );
    let mut flipped = evidence.clone();
    let sig = &mut flipped.replies[1].server_signature;
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, first);
    assert_eq!(
        ks_cli(
            &stranger,
            &["verify-evidence", &write("flipped.json", &flipped)]
        )
        .code,
        1
    );
    let mut pin_swapped = evidence.clone();
    pin_swapped.pin = format!("keyserver@localhost:{}", "11".repeat(32));
    assert_eq!(
        ks_cli(
            &stranger,
            &["verify-evidence", &write("pin.json", &pin_swapped)]
        )
        .code,
        1
    );
    let mut same = evidence.clone();
    same.replies = vec![evidence.replies[0].clone(), evidence.replies[0].clone()];
    assert_eq!(
        ks_cli(&stranger, &["verify-evidence", &write("same.json", &same)]).code,
        1
    );
    drop(server);
}

/// A signed reply for a position the server then fills with another entry:
/// Alice's confirm catches it with `reply-not-in-log` evidence (the
/// checkpoint, the entry there and its inclusion proof), which verifies
/// offline; the same file with the honest entry proves nothing.
#[test]
fn a_reply_the_log_does_not_hold_is_caught_at_confirm() {
    let (root, server) = hostile_server(&[]);
    let mut client = ks_client::Client::new(&server.url, server.pin.clone());
    client.sync().expect("sync");
    // Alice registers; the server answers with a forged reply instead.
    let mut alice = client.register("alice@localhost", "strict").expect("alice");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "Test.ForgeReply",
        "params": {"UIDMessage": serde_json::from_slice::<serde_json::Value>(&alice.uid.to_lcj()).expect("json")}});
    let (_, v) = post_raw(&server.url, "application/json", body.to_string().as_bytes());
    let raw = serde_json::to_vec(&v["result"]["UIDMessageReply"]).expect("json");
    let forged =
        ks_core::uid::UidMessageReply::from_value(ks_core::lcj::parse_relaxed(&raw).expect("lcj"))
            .expect("a reply");
    // Someone else's registration takes that position.
    let mut bob_client = ks_client::Client::new(&server.url, server.pin.clone());
    let bob = bob_client.register("bob@localhost", "strict").expect("bob");
    assert_eq!(bob.reply.entry.hashchain_pos, forged.entry.hashchain_pos);
    alice.reply = forged;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let evidence = loop {
        match client.confirm(&alice) {
            Err(ks_client::ClientError::NotFound(_)) => {
                assert!(std::time::Instant::now() < deadline, "never published");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(ks_client::ClientError::Evidence {
                evidence, proves, ..
            }) => {
                assert!(proves.contains("another entry"), "{proves}");
                break evidence;
            }
            other => panic!("confirm must catch it: {other:?}"),
        }
    };
    let file = root.path().join("rnil.json");
    std::fs::write(&file, evidence.to_file()).expect("write");
    let stranger = root.path().join("stranger");
    let out = ok(
        &stranger,
        &["verify-evidence", file.to_str().expect("utf8")],
    );
    assert!(out.contains("proven"), "{out}");
    // With the honest reply at that position the same file proves nothing.
    let mut innocent = (*evidence).clone();
    innocent.replies = vec![bob.reply.clone()];
    let file = root.path().join("innocent.json");
    std::fs::write(&file, innocent.to_file()).expect("write");
    assert_eq!(
        ks_cli(
            &stranger,
            &["verify-evidence", file.to_str().expect("utf8")]
        )
        .code,
        1
    );
    // A proof that does not lead to the checkpoint's root proves nothing.
    let mut broken = (*evidence).clone();
    if let Some(h) = broken.proof.first_mut() {
        *h = ks_core::b64::encode(&[0u8; 32]);
    } else {
        broken.entry = bob.reply.entry.hashchain_entry.clone();
    }
    let file = root.path().join("broken.json");
    std::fs::write(&file, broken.to_file()).expect("write");
    assert_eq!(
        ks_cli(
            &stranger,
            &["verify-evidence", file.to_str().expect("utf8")]
        )
        .code,
        1
    );
}

/// Split view: the server signs a second tree of a size Bob holds. Given
/// that checkpoint (gossip), `ks-cli check-checkpoint` exits 4 with `fork`
/// evidence (the LKEV blob of tlog.md §7.8) that verifies offline; the
/// honest checkpoint checks out.
#[test]
fn a_second_tree_of_one_size_is_a_fork_with_evidence() {
    let (root, server) = hostile_server(&[]);
    let pin = format!(
        "{}:{}",
        server.pin.identity,
        server
            .pin
            .h0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let bob = root.path().join("bob");
    let alice = root.path().join("alice");
    ok(&alice, &["init", "--server", &server.url, "--pin", &pin]);
    ok(&alice, &["register", "alice@localhost"]);
    ok(&alice, &["confirm", "alice@localhost", "--max-wait", "30"]);
    ok(&bob, &["init", "--server", &server.url, "--pin", &pin]);
    // Bob's own checkpoint is consistent with itself.
    let honest = root.path().join("honest.note");
    std::fs::write(&honest, ok(&bob, &["checkpoint"])).expect("write");
    ok(&bob, &["check-checkpoint", honest.to_str().expect("utf8")]);
    // The server signs another tree of size 2 (Bob holds 2 entries).
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "Test.SignCheckpoint",
        "params": {"Size": 2, "Root": ks_core::b64::encode(&[7; 32])}});
    let (_, v) = post_raw(&server.url, "application/json", body.to_string().as_bytes());
    let note = ks_core::b64::decode(v["result"]["Note"].as_str().expect("note")).expect("b64");
    let forked = root.path().join("forked.note");
    std::fs::write(&forked, &note).expect("write");
    let o = ks_cli(&bob, &["check-checkpoint", forked.to_str().expect("utf8")]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let stranger = root.path().join("stranger");
    let out = ok(&stranger, &["verify-evidence", &file]);
    assert!(out.contains("conflicting trees"), "{out}");
    // The same LKEV claimed for another keyserver's pin proves nothing.
    let mut e = Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("evidence");
    e.pin = format!("keyserver@localhost:{}", "22".repeat(32));
    let other = root.path().join("other.json");
    std::fs::write(&other, e.to_file()).expect("write");
    assert_eq!(
        ks_cli(
            &stranger,
            &["verify-evidence", other.to_str().expect("utf8")]
        )
        .code,
        1
    );
    // A note the server never signed is not a fork: refused as bad data.
    let mut tampered = note.clone();
    let at = tampered.iter().position(|&b| b == b'\n').expect("line") + 1;
    tampered[at] = if tampered[at] == b'1' { b'3' } else { b'1' };
    let bad = root.path().join("bad.note");
    std::fs::write(&bad, &tampered).expect("write");
    assert_eq!(
        ks_cli(&bob, &["check-checkpoint", bad.to_str().expect("utf8")]).code,
        4
    );
    // A conflicting tree signed by a key the chain never scheduled (a
    // stolen-looking key of the same name): refused, and no evidence file,
    // since it proves nothing about the keyserver.
    let stranger_key = tlog_core::note::SignerKey::from_seed(
        "localhost/kt/v1",
        tlog_core::note::KeyType::Ed25519,
        &[5; 32],
    )
    .expect("key");
    let text = tlog_core::Checkpoint::new("localhost/kt/v1", 2, [7; 32]).to_text();
    let mut unscheduled = tlog_core::note::Note::new(&text).expect("note");
    unscheduled.add(stranger_key.sign(&text, now()));
    let file = root.path().join("unscheduled.note");
    std::fs::write(&file, unscheduled.to_bytes()).expect("write");
    let o = ks_cli(&bob, &["check-checkpoint", file.to_str().expect("utf8")]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    assert!(!o.stderr.contains("evidence written"), "{}", o.stderr);
}

/// keyserver.md §4.6, §10: a server serving LookupUID that leaves one of
/// Alice's entries out of its signed answer. `ks-cli lookup --at-server`
/// checks the answer against the chain and exits 4 with `omitted-lookup`
/// evidence that verifies offline; the honest answer checks out, and the
/// file with the position listed (or an entry of another identity) proves
/// nothing.
#[test]
fn a_lookup_answer_that_leaves_an_entry_out_is_caught() {
    let (root, server) = hostile_server(&["--enable-lookup"]);
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let url = server.url.as_str();
    let pin = server.process.pin.clone();
    ok(&alice, &["init", "--server", url, "--pin", &pin]);
    ok(&alice, &["register", "alice@localhost"]);
    ok(&alice, &["update", "alice@localhost"]);
    ok(&bob, &["init", "--server", url, "--pin", &pin]);
    ok(&bob, &["register", "bob@localhost"]);
    // Honest: both of Alice's positions, signed, agreeing with the chain.
    let honest = wait_published(&bob, "alice@localhost", 1);
    assert_eq!(honest.code, 0, "{}", honest.stderr);
    let o = ks_cli(
        &bob,
        &["--json", "lookup", "alice@localhost", "--at-server"],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(
        v["server_positions"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );

    // The server starts hiding Alice's newest entry.
    assert_eq!(fault(url, "Test.OmitLookups", json!({}))["Omitting"], true);
    let o = ks_cli(&bob, &["lookup", "alice@localhost", "--at-server"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("omitted-lookup"), "{}", o.stderr);
    let file = evidence_path(&o.stderr);
    let stranger = root.path().join("stranger");
    let out = ok(&stranger, &["verify-evidence", &file]);
    assert!(out.contains("leaves out"), "{out}");

    // Altered files prove nothing.
    let evidence =
        Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("an evidence file");
    let refused = |e: &Evidence, name: &str| refused(root.path(), e, name);
    let mut listed = evidence.clone();
    listed.lookup[0].hc_positions.push(evidence.position);
    refused(&listed, "listed.json");
    let mut other = evidence.clone();
    other.identity = "bob@localhost".into();
    other.lookup[0].identity = "bob@localhost".into();
    refused(&other, "other.json");
    let mut moved = evidence.clone();
    moved.position = evidence.lookup[0].tree_size;
    refused(&moved, "beyond.json");
}

/// keyserver.md §6.5, §10: a repository that serves a one-time KeyInit
/// again after signing that serving it deleted it. Bob's second
/// `session-start` that gets it exits 4 with `keyinit-reuse` evidence (the
/// two signed receipts) that verifies offline; reordered or altered
/// receipts prove nothing.
#[test]
fn a_one_time_keyinit_served_twice_is_caught() {
    let (root, server) = hostile_server(&[]);
    let (_alice, bob) = alice_publishes_bob_looks(root.path(), &server, 2);
    let url = server.url.as_str();
    ok(&bob, &["session-start", "alice@localhost"]);

    assert_eq!(fault(url, "Test.KeepOneTime", json!({}))["Keeping"], true);
    // The second one-time KeyInit, "deleted" but kept; then it again.
    ok(&bob, &["session-start", "alice@localhost"]);
    let o = ks_cli(&bob, &["session-start", "alice@localhost"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("keyinit-reuse"), "{}", o.stderr);
    let file = evidence_path(&o.stderr);
    let stranger = root.path().join("stranger");
    let out = ok(&stranger, &["verify-evidence", &file]);
    assert!(out.contains("served it again"), "{out}");

    let evidence =
        Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("an evidence file");
    let refused = |e: &Evidence, name: &str| refused(root.path(), e, name);
    let mut swapped = evidence.clone();
    swapped.dispersals.reverse();
    if swapped.dispersals[0].receipt.timestamp == swapped.dispersals[1].receipt.timestamp {
        // Same second: the order alone proves nothing either way; make the
        // first say it was not deleted instead.
        swapped.dispersals[0].receipt.one_time = false;
    }
    refused(&swapped, "swapped.json");
    let mut unsigned = evidence.clone();
    unsigned.dispersals[1].receipt.timestamp += 1;
    refused(&unsigned, "unsigned.json");
    let mut one = evidence.clone();
    one.dispersals.pop();
    refused(&one, "one.json");
}

/// keyserver.md §6.5, §10: a repository that hands Bob a KeyInit with a
/// PF key of its own (which it cannot sign as Alice). `session-start`
/// refuses it with exit 4 and `bad-keyinit` evidence (the signed receipt,
/// the KeyInit, Alice's UID reply) that verifies offline; the file with
/// Alice's genuine KeyInit, or another owner's UID, proves nothing.
#[test]
fn a_substituted_keyinit_is_caught() {
    let (root, server) = hostile_server(&[]);
    let (_alice, bob) = alice_publishes_bob_looks(root.path(), &server, 3);
    ok(&bob, &["register", "bob@localhost"]);
    let url = server.url.as_str();
    let genuine = ks_cli(&bob, &["--json", "session-start", "alice@localhost"]);
    assert_eq!(genuine.code, 0, "{}", genuine.stderr);

    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "Test.SubstituteKeyInits", "params": {}});
    let (_, v) = post_raw(url, "application/json", body.to_string().as_bytes());
    assert_eq!(v["result"]["Substituting"], true, "{v}");
    let o = ks_cli(&bob, &["session-start", "alice@localhost"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("bad-keyinit") || o.stderr.contains("fails the owner"),
        "{}",
        o.stderr
    );
    let file = evidence_path(&o.stderr);
    let stranger = root.path().join("stranger");
    let out = ok(&stranger, &["verify-evidence", &file]);
    assert!(out.contains("fails the owner's checks"), "{out}");

    let evidence =
        Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("an evidence file");
    let refused = |e: &Evidence, name: &str| refused(root.path(), e, name);
    // The receipt does not bind another KeyInit in its place.
    let mut other_ki = evidence.clone();
    other_ki.key_inits[0].contents.msg_count += 1;
    refused(&other_ki, "other-keyinit.json");
    // Bob's own UID is not the receipt's owner.
    let mut bob_client =
        ks_client::Client::open(&bob.join("state.redb"), None, None).expect("open");
    let bob_uid = bob_client
        .lookup("bob@localhost")
        .expect("lookup")
        .expect("bob");
    let mut other_owner = evidence.clone();
    other_owner.identity = "bob@localhost".into();
    other_owner.replies = vec![bob_uid.reply];
    refused(&other_owner, "other-owner.json");
}

/// keyserver.md §10: a UID blob whose plaintext hashes to the entry's U
/// but is not canonical LCJ (a forger's encoding, a space after the first
/// brace) is `bad-uid`: Bob's lookup exits 4 with evidence a stranger
/// verifies, naming the non-canonical plaintext.
#[test]
fn a_non_canonical_uid_plaintext_is_caught() {
    let (root, server) = hostile_server(&[]);
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let (url, pin) = (server.url.as_str(), server.process.pin.as_str());
    ok(&alice, &["init", "--server", url, "--pin", pin]);
    ok(&alice, &["register", "alice@localhost"]);
    ok(&bob, &["init", "--server", url, "--pin", pin]);
    assert_eq!(wait_published(&bob, "alice@localhost", 0).code, 0);

    let mut client = ks_client::Client::new(url, server.pin.clone());
    let forged = forged_update(&mut client, &SigningKey::from_bytes(&[0x67; 32]));
    let uid = serde_json::from_slice::<serde_json::Value>(&forged.to_lcj()).expect("json");
    let v = fault(
        url,
        "Test.ForgeUID",
        json!({"UIDMessage": uid, "NonCanonical": true}),
    );
    assert!(v["UIDMessageReply"].is_object(), "{v}");

    let o = wait_published(&bob, "alice@localhost", 1);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let out = ok(&root.path().join("stranger"), &["verify-evidence", &file]);
    assert!(out.contains("not a canonical UIDMessage"), "{out}");
}

/// keyserver.md §10: a repository that kept Alice's KeyInits when she
/// replaced her SIGKEY serves one of them as her new key's: Bob refuses it
/// (its SIGKEYHASH is not her current key's) with `bad-keyinit` evidence
/// that a stranger verifies offline.
#[test]
fn a_keyinit_under_alices_previous_sigkey_is_caught() {
    let (root, server) = hostile_server(&[]);
    let (alice, bob) = alice_publishes_bob_looks(root.path(), &server, 3);
    let url = server.url.as_str();
    assert_eq!(
        fault(
            url,
            "Test.StaleKeyInits",
            json!({"Kind": "previous-sigkey"})
        )["Stale"],
        true
    );
    ok(&alice, &["update", "alice@localhost"]);
    assert_eq!(wait_published(&bob, "alice@localhost", 1).code, 0);
    let o = ks_cli(&bob, &["session-start", "alice@localhost"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let out = ok(&root.path().join("stranger"), &["verify-evidence", &file]);
    assert!(
        out.contains("fails the owner's checks") && out.contains("SIGKEYHASH"),
        "{out}"
    );
}

/// keyserver.md §10: a repository that serves an expired KeyInit instead
/// of deleting it: Bob refuses it (outside its window at the receipt's
/// own time) with `bad-keyinit` evidence.
#[test]
fn an_expired_keyinit_is_caught() {
    let (root, server) = hostile_server(&[]);
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let (url, pin) = (server.url.as_str(), server.process.pin.as_str());
    ok(&alice, &["init", "--server", url, "--pin", pin]);
    ok(&alice, &["register", "alice@localhost"]);
    let published_at = now();
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
            "--valid-for-secs",
            "2",
        ],
    );
    ok(&bob, &["init", "--server", url, "--pin", pin]);
    assert_eq!(wait_published(&bob, "alice@localhost", 0).code, 0);
    assert_eq!(
        fault(url, "Test.StaleKeyInits", json!({"Kind": "expired"}))["Stale"],
        true
    );
    // Its NOTAFTER is at most published_at + 2: wait until the clock
    // passed it.
    while now() <= published_at + 2 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = ks_cli(&bob, &["session-start", "alice@localhost"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let out = ok(&root.path().join("stranger"), &["verify-evidence", &file]);
    assert!(
        out.contains("fails the owner's checks") && out.contains("time window"),
        "{out}"
    );
}

/// keyserver.md §3.7, §10: Capabilities that are unsigned, signed by a key
/// the chain never scheduled, or altered after signing (TKNPUBKEY) are
/// refused; signed ones naming another entry than the chain's at
/// KEYHASHCHAINPOS are `bad-capabilities` evidence that verifies offline.
#[test]
fn lying_capabilities_are_refused_or_proven() {
    let (root, server) = hostile_server(&[]);
    let alice = root.path().join("alice");
    let url = server.url.as_str();
    let pin = server.process.pin.clone();
    ok(&alice, &["init", "--server", url, "--pin", &pin]);
    ok(&alice, &["register", "alice@localhost"]);
    // Published (confirm waits for it), so the chain has grown past genesis.
    ok(
        &alice,
        &[
            "confirm",
            "alice@localhost",
            "--escrow-printed",
            "--max-wait",
            "30",
        ],
    );
    ok(&alice, &["capabilities"]);
    let fault = |kind: &str| {
        assert_eq!(
            fault(url, "Test.CapabilitiesFault", json!({ "Kind": kind }))["Fault"],
            true
        )
    };
    for kind in ["unsigned", "unscheduled", "tknpubkey"] {
        fault(kind);
        let o = ks_cli(&alice, &["capabilities"]);
        assert_eq!(o.code, 4, "{kind}: {}{}", o.stdout, o.stderr);
        assert!(
            !o.stderr.contains("evidence written"),
            "{kind}: {}",
            o.stderr
        );
    }
    fault("entry");
    let o = ks_cli(&alice, &["capabilities"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let stranger = root.path().join("stranger");
    let out = ok(&stranger, &["verify-evidence", &file]);
    assert!(out.contains("Capabilities name another entry"), "{out}");

    let evidence =
        Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("an evidence file");
    let refused = |e: &Evidence, name: &str| refused(root.path(), e, name);
    // With the chain's true entry named, the same signature fails; with
    // the entry in the file swapped for the named one, the proof fails.
    let mut honest = evidence.clone();
    honest.capabilities[0].capabilities.key_hash_chain_entry = evidence.entry.clone();
    refused(&honest, "honest.json");
    let mut swapped = evidence.clone();
    swapped.entry = evidence.capabilities[0]
        .capabilities
        .key_hash_chain_entry
        .clone();
    refused(&swapped, "swapped.json");
    let mut moved = evidence.clone();
    moved.position = 0;
    refused(&moved, "moved.json");
}

/// keyserver.md §6.3, §10: FetchUID answers for Alice's entry with a UID
/// that is not the one the entry commits to, sealed and signed by the
/// server. Bob's lookup exits 4 with `bad-uid` evidence that verifies
/// offline; named for another identity, it proves nothing.
#[test]
fn a_uid_that_is_not_its_entrys_is_caught() {
    let (root, server) = hostile_server(&[]);
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let url = server.url.as_str();
    let pin = server.process.pin.clone();
    ok(&alice, &["init", "--server", url, "--pin", &pin]);
    ok(&alice, &["register", "alice@localhost"]);
    ok(
        &alice,
        &[
            "confirm",
            "alice@localhost",
            "--escrow-printed",
            "--max-wait",
            "30",
        ],
    );
    ok(&bob, &["init", "--server", url, "--pin", &pin]);

    assert_eq!(
        fault(url, "Test.CorruptUIDs", json!({}))["Corrupting"],
        true
    );
    let o = ks_cli(&bob, &["lookup", "alice@localhost"]);
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    let file = evidence_path(&o.stderr);
    let stranger = root.path().join("stranger");
    let out = ok(&stranger, &["verify-evidence", &file]);
    assert!(out.contains("whose UID is not that entry's"), "{out}");

    let evidence =
        Evidence::from_lcj(&std::fs::read(&file).expect("read")).expect("an evidence file");
    let mut other = evidence.clone();
    other.identity = "bob@localhost".into();
    let f = root.path().join("other.json");
    std::fs::write(&f, other.to_file()).expect("write");
    let o = ks_cli(&stranger, &["verify-evidence", f.to_str().expect("utf8")]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
}

/// keyserver.md §6.2 and §10: chunks with an entry dropped or changed do
/// not reach the checkpoint's root (or do not link), and a rollback to an
/// older state (a restored backup) shows a smaller tree: each is refused
/// and the client keeps exactly what it had verified.
#[test]
fn tampered_chunks_and_a_rollback_are_refused_and_nothing_is_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("server");
    let args = ["--no-rate-limits", "--tokens", "disabled"];
    let server = Keyserverd::start(&dir, 0, &args);
    let (url, pin) = (server.url.clone(), server.pin.clone());
    let port = server.port();
    let mut writer = ks_client::Client::new(&url, pin.clone());
    writer.sync().expect("sync");
    for name in ["alice", "bob", "carol"] {
        writer
            .register(&format!("{name}@localhost"), "strict")
            .expect("register");
    }
    let mut bob = ks_client::Client::new(&url, pin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bob.size() < 4 {
        bob.sync().expect("sync");
        assert!(std::time::Instant::now() < deadline, "never published");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held = bob.size();
    // A backup of this state, taken with the server stopped.
    server.kill();
    let backup = root.path().join("backup");
    std::fs::create_dir_all(&backup).expect("backup dir");
    for f in std::fs::read_dir(&dir).expect("dir") {
        let f = f.expect("entry");
        std::fs::copy(f.path(), backup.join(f.file_name())).expect("copy");
    }
    let server = Keyserverd::start(&dir, port, &args);
    for name in ["dave", "erin"] {
        writer
            .register(&format!("{name}@localhost"), "strict")
            .expect("register");
    }

    for kind in ["drop", "change"] {
        let tampering = fault(&url, "Test.TamperChain", json!({ "Kind": kind }));
        assert_eq!(tampering["Tampering"], true);
        let mut fresh = ks_client::Client::new(&url, pin.clone());
        match fresh.sync() {
            Err(ks_client::ClientError::BadData(_)) => {}
            other => panic!("{kind}: a tampered chunk must be refused: {other:?}"),
        }
        assert_eq!(fresh.size(), 0, "{kind}: nothing kept");
        let before = bob.size();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match bob.sync() {
                Err(ks_client::ClientError::BadData(_)) => break,
                Ok(_) => {
                    // The new entries were not published yet.
                    assert_eq!(bob.size(), before, "{kind}: tampered data was kept");
                    assert!(std::time::Instant::now() < deadline, "never published");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{kind}: {e}"),
            }
        }
        assert_eq!(bob.size(), before, "{kind}: nothing kept");
    }
    drop(server);
    // An honest restart (the faults are gone): Bob verifies the new entries.
    let server = Keyserverd::start(&dir, port, &args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bob.size() < held + 2 {
        bob.sync().expect("honest again");
        assert!(std::time::Instant::now() < deadline, "never published");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held = bob.size();
    drop(server);

    // The operator restores the backup: a smaller tree than Bob verified.
    std::fs::remove_dir_all(&dir).expect("remove");
    std::fs::rename(&backup, &dir).expect("restore");
    let _server = Keyserverd::start(&dir, port, &args);
    match bob.sync() {
        Err(ks_client::ClientError::Rollback { have, .. }) => assert_eq!(have, held),
        other => panic!("a rollback must be refused: {other:?}"),
    }
    assert_eq!(bob.size(), held, "the verified state is kept");
}
