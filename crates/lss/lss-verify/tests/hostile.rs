//! Hostile bytes against every decoder and check of the verifiable log:
//! random input and single-byte corruptions of valid replies are refused
//! with an error (never a panic), and a corrupted reply is never accepted.

use lss_core::{KeyValue, ServerKey};
use lss_verify::bundle::Bundle;
use lss_verify::ledger::NamespaceLog;
use lss_verify::{check, Evidence, Expect, StateLeaf, Statement, Trusted};
use proptest::prelude::*;

fn key() -> ServerKey {
    ServerKey::from_hex(&"22".repeat(32)).expect("key")
}

/// A namespace log with a few puts, a reply to a read of `k`, and the
/// client's trusted state before it.
fn reply() -> (Vec<u8>, Vec<u8>, Trusted, Vec<StateLeaf>) {
    let key = key();
    let id = key.server_id();
    let client = [2u8; 33];
    let mut log = NamespaceLog::load(&[]).expect("empty");
    let mut store: Vec<KeyValue> = Vec::new();
    let mut trusted = None;
    for i in 0..5i64 {
        let kv = KeyValue::new(format!("k{i}"), 0, vec![i as u8; 3]);
        let prepared = log.prepare(std::slice::from_ref(&kv), None);
        store.push(kv.clone());
        log.commit(prepared);
        let seen = trusted.as_ref().map(Trusted::seen);
        let (note, bundle) = log
            .attest(&key, &client, seen, None, None, None)
            .expect("attest");
        let leaves = [StateLeaf::of(&kv.key, kv.version, &kv.value)];
        trusted = Some(
            check(
                &id,
                &client,
                trusted.as_ref(),
                &note,
                &bundle,
                Expect::Put {
                    written: &leaves,
                    client_sig: None,
                },
            )
            .expect("valid receipt"),
        );
    }
    let trusted = trusted.expect("trusted");
    let (note, bundle) = log
        .attest(
            &key,
            &client,
            Some(trusted.seen()),
            Some(b"nonce".to_vec()),
            Some(("k", &store)),
            None,
        )
        .expect("attest");
    let answer = store
        .iter()
        .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
        .collect();
    (note, bundle, trusted, answer)
}

fn read(note: &[u8], bundle: &[u8], trusted: &Trusted, answer: &[StateLeaf]) -> bool {
    check(
        &key().server_id(),
        &[2; 33],
        Some(trusted),
        note,
        bundle,
        Expect::Read {
            prefix: "k",
            nonce: b"nonce",
            answer,
        },
    )
    .is_ok()
}

#[test]
fn the_valid_reply_verifies() {
    let (note, bundle, trusted, answer) = reply();
    assert!(read(&note, &bundle, &trusted, &answer));
    // Oversized inputs are refused by length before any work.
    assert!(Bundle::decode(&vec![0u8; 8 << 20]).is_err());
    assert!(Evidence::verify(&vec![b' '; 5 << 20]).is_err());
    assert!(Statement::verify(&vec![b'a'; 100 << 10], &key().server_id()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let id = key().server_id();
        let _ = Bundle::decode(&bytes);
        prop_assert!(Statement::verify(&bytes, &id).is_err());
        prop_assert!(Trusted::decode(&bytes, &id).is_err());
        prop_assert!(Evidence::verify(&bytes).is_err());
    }

    #[test]
    fn a_corrupted_reply_is_never_accepted(
        in_note in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (mut note, mut bundle, trusted, answer) = reply();
        let target = if in_note { &mut note } else { &mut bundle };
        let i = at.index(target.len());
        target[i] ^= flip;
        prop_assert!(!read(&note, &bundle, &trusted, &answer));
    }

    #[test]
    fn a_changed_answer_is_never_accepted(at in any::<prop::sample::Index>(), drop in any::<bool>()) {
        let (note, bundle, trusted, mut answer) = reply();
        let i = at.index(answer.len());
        if drop {
            answer.remove(i);
        } else {
            answer[i].version += 1;
        }
        prop_assert!(!read(&note, &bundle, &trusted, &answer));
    }
}

/// A server that logs a write the client did not sign (it holds the MAC
/// secret, so it can make the client MAC): the forged or reused client
/// signature in its signed log is a violation, provable with evidence; a
/// receipt whose entry dropped the signature the client sent is refused.
#[test]
fn client_signatures_in_the_log_cannot_be_forged_or_dropped() {
    use lss_core::secp256k1::{SecretKey, SECP256K1};
    use lss_verify::entry::{sign_put, verify_put, writes_digest};
    use lss_verify::{Rejected, Violation};
    let key = key();
    let id = key.server_id();
    let secret = SecretKey::from_slice(&[0x33; 32]).expect("secret");
    let client = secret.public_key(SECP256K1).serialize();
    let kv = |v: i64, value: &[u8]| KeyValue::new("k", v, value.to_vec());
    let leaves = |kv: &KeyValue| vec![StateLeaf::of(&kv.key, kv.version, &kv.value)];

    let first = kv(0, b"a");
    let sig = sign_put(&secret, &leaves(&first));
    assert!(verify_put(&client, &writes_digest(&leaves(&first)), &sig));
    let other = SecretKey::from_slice(&[0x34; 32]).expect("secret");
    let other_id = other.public_key(SECP256K1).serialize();
    assert!(!verify_put(
        &other_id,
        &writes_digest(&leaves(&first)),
        &sig
    ));
    assert!(!verify_put(
        &client,
        &writes_digest(&leaves(&kv(0, b"b"))),
        &sig
    ));

    let mut log = NamespaceLog::load(&[]).expect("empty");
    let prepared = log.prepare(std::slice::from_ref(&first), Some(sig));
    log.commit(prepared);
    let (note, bundle) = log
        .attest(&key, &client, None, None, None, None)
        .expect("attest");
    let trusted = check(
        &id,
        &client,
        None,
        &note,
        &bundle,
        Expect::Put {
            written: &leaves(&first),
            client_sig: Some(&sig),
        },
    )
    .expect("a signed put verifies");

    // The server replays the first signature on a write of its own.
    let forged = kv(1, b"evil");
    let prepared = log.prepare(std::slice::from_ref(&forged), Some(sig));
    log.commit(prepared);
    let (note, bundle) = log
        .attest(&key, &client, Some(trusted.seen()), None, None, None)
        .expect("attest");
    let err = check(
        &id,
        &client,
        Some(&trusted),
        &note,
        &bundle,
        Expect::Put {
            written: &leaves(&forged),
            client_sig: None,
        },
    )
    .expect_err("a forged client signature");
    let Rejected::Violation(violation) = err else {
        panic!("not a violation: {err}");
    };
    assert!(matches!(violation, Violation::BrokenLog(_)), "{violation}");
    let evidence = Evidence::new(&id, &violation, Some(&trusted), &note, &bundle, None);
    let (_, proven) = Evidence::verify(evidence.to_json().as_bytes()).expect("evidence verifies");
    assert_eq!(proven, violation);

    // The client signed its put; the server logged it unsigned.
    let mut log = NamespaceLog::load(&[]).expect("empty");
    let prepared = log.prepare(std::slice::from_ref(&first), None);
    log.commit(prepared);
    let (note, bundle) = log
        .attest(&key, &client, None, None, None, None)
        .expect("attest");
    let err = check(
        &id,
        &client,
        None,
        &note,
        &bundle,
        Expect::Put {
            written: &leaves(&first),
            client_sig: Some(&sig),
        },
    )
    .expect_err("signature dropped");
    assert!(matches!(err, Rejected::Unverifiable(_)), "{err}");
}
