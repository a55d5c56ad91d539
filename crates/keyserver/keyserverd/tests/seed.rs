//! keyserver.md §10 "the seed" end to end with a real `keyserverd`
//! process: Capabilities, a chunked verified sync, concurrent filler users,
//! Alice registers (SIGKEY + SIGESCROW) and publishes 20 one-time and 2
//! fallback KeyInits, confirms against the published chain, which a
//! `tlogd` witness process cosigned (both clients require it); Bob syncs,
//! looks her up and starts sessions until only fallbacks are left (which
//! `strict` refuses); after a Flush nothing is served. Then Alice rotates
//! her key and recovers with her escrow key, the server is SIGKILLed and
//! restarted, and everything still verifies incrementally. Every paid call
//! is paid with tokens: Alice's bought blindly through the operator's
//! offline `keyserverd tokens sign`, the fillers' minted.

mod support;

use std::time::{Duration, Instant};

use ks_client::{Client, ClientError, OwnIdentity};
use ks_core::lcj::Lcj;
use support::Keyserverd;

/// The seed plays 50 registrations and 23 KeyInit fetches from one address
/// within seconds, which §4.6's limits would (rightly) stop; they are
/// tested on their own in `refusals.rs`.
const NO_LIMITS: &[&str] = &["--no-rate-limits"];

/// Concurrent filler users (keyserver.md §10).
const FILLERS: usize = 50;

/// Syncs until the chain covers `pos` (the checkpointer publishes every
/// 100 ms); the event awaited is the published checkpoint.
fn sync_past(client: &mut Client, pos: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client.sync().expect("sync");
        if client.size() > pos {
            return;
        }
        assert!(Instant::now() < deadline, "position {pos} never published");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn register(url: &str, pin: &ks_client::Pin, name: &str, token: String) -> (Client, OwnIdentity) {
    let mut c = Client::new(url, pin.clone());
    c.sync().expect("sync");
    let added = c
        .finalize_tokens(&serde_json::json!({ "Tokens": [token] }))
        .expect("a minted token verifies");
    assert_eq!(added, 1);
    let own = c.register(name, "strict").expect("register");
    assert_eq!(c.token_balance(), 0, "the registration spent the token");
    (c, own)
}

#[test]
fn alice_and_bob_the_whole_seed_use_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A tlog.md witness process for the log's key, which the keyserver
    // submits every checkpoint to and publishes only once it cosigned.
    let witness_dir = tempfile::tempdir().expect("tempdir");
    let witness = lk_testkit::keyserverd::witness(
        std::path::Path::new(env!("CARGO_BIN_EXE_keyserverd")),
        dir.path(),
        &witness_dir.path().join("witness"),
    );
    let (submit, witness_vkey) = (witness.submit_to.clone(), witness.vkey.clone());
    let mut args = NO_LIMITS.to_vec();
    args.extend(["--submit-to", submit.as_str()]);
    let server = Keyserverd::start(dir.path(), 0, &args);
    assert!(server.escrow.is_some(), "first start prints the escrow key");
    let url = server.url.clone();
    let pin = server.pin.clone();

    // Capabilities verify under the genesis key, after a sync from the pin
    // (Alice accepts only checkpoints the witness cosigned).
    let mut alice_client = Client::new(&url, pin.clone());
    alice_client
        .require_witnesses(std::slice::from_ref(&witness_vkey), 1)
        .expect("witness policy");
    alice_client.sync().expect("first sync");
    let caps = alice_client.capabilities().expect("capabilities");
    assert_eq!(caps.capabilities.tokens, "required");
    assert_eq!(caps.capabilities.prices.create_uid, 1);
    // Without tokens a paid call is refused before anything is sent.
    match alice_client.register("alice@localhost", "strict") {
        Err(ClientError::PaymentRequired { needed: 1, have: 0 }) => {}
        other => panic!("no tokens: {:?}", other.map(|o| o.identity)),
    }
    // Register (1), 22 KeyInits, two updates (2) and one spare.
    support::buy_tokens(dir.path(), &mut alice_client, 26);
    assert_eq!(caps.capabilities.keyserver_identity, pin.identity);

    // 50 filler users, concurrently (keyserver.md §10; group commit; each
    // reply verified).
    let tokens = support::mint_tokens(dir.path(), FILLERS);
    let fillers: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let (url, pin) = (url.clone(), pin.clone());
            std::thread::spawn(move || {
                let own = register(
                    &url,
                    &pin,
                    &format!("filler{i:02}@localhost"),
                    token.clone(),
                )
                .1;
                (own, token)
            })
        })
        .collect();
    let fillers: Vec<(OwnIdentity, String)> = fillers
        .into_iter()
        .map(|t| t.join().expect("filler"))
        .collect();
    assert_eq!(fillers.len(), FILLERS);

    // Alice registers, publishes KeyInits and confirms.
    let mut alice = alice_client
        .register("Alice@localhost", "strict")
        .unwrap_or_else(|e| panic!("register alice: {e}\n{}", server.log()));
    assert!(alice.escrow.is_some());
    let receipts = alice_client
        .publish_key_inits(&mut alice, 20, 2, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("publish");
    assert_eq!(receipts.len(), 22);
    sync_past(&mut alice_client, alice.reply.entry.hashchain_pos);
    let pos = alice_client.confirm(&alice).expect("confirm");
    assert_eq!(pos, alice.reply.entry.hashchain_pos);
    // Registering a taken name, or one that maps to it, is refused.
    let balance = alice_client.token_balance();
    match alice_client.register("alice@localhost", "strict") {
        Err(ClientError::Taken(_)) => {}
        other => panic!("taken: {:?}", other.map(|o| o.identity)),
    }
    assert_eq!(alice_client.token_balance(), balance, "nothing spent on it");

    // Bob: a fresh client, a full verified sync, lookup, session start.
    let mut bob = Client::new(&url, pin.clone());
    bob.require_witnesses(std::slice::from_ref(&witness_vkey), 1)
        .expect("witness policy");
    let synced = bob.sync().expect("bob syncs");
    assert_eq!(synced.from, 0);
    assert!(synced.to > FILLERS as u64 + 1);
    bob.capabilities().expect("bob verifies the capabilities");
    let found = bob
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice exists");
    assert_eq!(
        found.static_key,
        x25519_dalek::PublicKey::from(&alice.static_secret).to_bytes()
    );
    let start = bob.session_start("alice@localhost").expect("session start");
    assert!(!start.fallback && start.receipt.one_time);
    // Bob's ephemeral key agrees with Alice's PF secret, which she finds by
    // KEYINITHASH.
    let bob_eph = x25519_dalek::StaticSecret::from([0x42; 32]);
    let bob_pub = x25519_dalek::PublicKey::from(&bob_eph);
    let bob_side = bob_eph.diffie_hellman(&x25519_dalek::PublicKey::from(start.pf_key));
    let alice_pf = alice
        .pf_secrets
        .get(&start.key_init_hash)
        .expect("alice holds the PF key of the served KeyInit");
    assert_eq!(
        alice_pf.diffie_hellman(&bob_pub).as_bytes(),
        bob_side.as_bytes()
    );
    // 19 more one-time KeyInits, each new; then only fallbacks, which
    // FORWARDSEC strict refuses.
    let mut seen = std::collections::BTreeSet::from([start.key_init_hash.clone()]);
    for _ in 0..19 {
        let s = bob.session_start("alice@localhost").expect("one-time");
        assert!(s.receipt.one_time && !s.fallback);
        assert!(seen.insert(s.key_init_hash));
    }
    for _ in 0..2 {
        match bob.session_start("alice@localhost") {
            Err(ClientError::NoOneTimeKeyInit) => {}
            other => panic!("strict refuses fallbacks: {other:?}"),
        }
    }
    // After a Flush nothing is served.
    let flushed = alice_client.flush(&alice).expect("flush");
    assert!(flushed.flushed >= 1, "the fallbacks were still there");
    match bob.session_start("alice@localhost") {
        Err(ClientError::Rpc { code: -32020, .. }) => {}
        other => panic!("no KeyInit after a flush: {other:?}"),
    }

    // Alice rotates her SIGKEY; then loses it and recovers with escrow.
    alice_client.update(&mut alice, None).expect("rotate");
    let escrow = alice.escrow.take().expect("escrow");
    alice_client
        .update(&mut alice, Some(&escrow))
        .expect("escrow recovery");
    sync_past(&mut bob, alice.reply.entry.hashchain_pos);
    let now = bob
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice");
    assert_eq!(now.message, alice.uid, "Bob sees Alice's newest UID");
    assert_eq!(now.message.content.msg_count, 2);

    // SIGKILL and restart: the state is whole, syncs are incremental, and
    // a retried Create returns the stored reply (idempotent).
    let before = bob.size();
    let port = server.port();
    server.kill();
    let server = Keyserverd::start(dir.path(), port, &args);
    assert!(server.escrow.is_none(), "no new genesis on restart");
    assert_eq!(server.pin, pin, "same pin");
    let again = bob.sync().expect("incremental sync after the crash");
    assert_eq!(again.from, before);
    let last = bob
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice");
    assert_eq!(last.message, alice.uid);
    let (filler, token) = &fillers[0];
    let retried: serde_json::Value = {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "KeyRepository.CreateUID",
            "params": {"UIDMessage": serde_json::from_slice::<serde_json::Value>(
                &filler.uid.to_lcj()).expect("json"), "Token": token}
        });
        support::post_raw(&url, "application/json", body.to_string().as_bytes()).1
    };
    assert_eq!(
        retried["result"]["UIDMessageReply"]["ENTRY"]["HASHCHAINPOS"],
        serde_json::Value::from(filler.reply.entry.hashchain_pos),
        "a retry with its token gets the original reply, not token_spent: {retried}"
    );
    drop(server);
}
