//! The known-answer vectors of docs/protocol.md "Verifiable log": they pin
//! the encodings (leaf, entry, checkpoint text and BIP340 signature), so a
//! change of format cannot pass unnoticed and another implementation can
//! check itself against them.

use lss_core::{KeyValue, ServerKey};
use lss_verify::ledger::NamespaceLog;
use lss_verify::StateLeaf;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The documented namespace: server key `0x22`×32; the client's secret key
/// `0x33`×32, whose public key names the namespace; one put of `k` = `v`
/// at version 0, signed by the client. Returns (key, client, log, put).
fn documented_log() -> (ServerKey, [u8; 33], NamespaceLog, [KeyValue; 1]) {
    let key = ServerKey::from_hex(&"22".repeat(32)).expect("key");
    let secret = lss_core::secp256k1::SecretKey::from_slice(&[0x33; 32]).expect("secret");
    let client = secret
        .public_key(lss_core::secp256k1::SECP256K1)
        .serialize();
    let mut log = NamespaceLog::load(&[]).expect("empty");
    let put = [KeyValue::new("k", 0, b"v".to_vec())];
    let leaf = StateLeaf::of("k", 0, b"v");
    let sig = lss_verify::entry::sign_put(&secret, std::slice::from_ref(&leaf));
    let prepared = log.prepare(&put, Some(sig));
    log.commit(prepared);
    (key, client, log, put)
}

#[test]
fn documented_vectors() {
    let leaf = StateLeaf::of("k", 0, b"v");
    let (key, client, log, put) = documented_log();
    let (note, bundle) = log
        .attest(
            &key,
            &client,
            None,
            Some(vec![0; 4]),
            Some(("", &put)),
            None,
        )
        .expect("attest");
    let note = String::from_utf8(note).expect("utf-8");
    let got = format!(
        "client {}\nleaf {}\nentry {}\nbundle {}\nnote:\n{note}",
        hex(&client),
        hex(&leaf.hash()),
        hex(&lss_verify::bundle::Bundle::decode(&bundle)
            .expect("bundle")
            .entries[0]
            .encode()),
        hex(&bundle),
    );
    let expected = include_str!("vectors.txt");
    assert_eq!(got, expected, "vectors changed:\n{got}");
}

/// The batch signature of docs/protocol.md: the read's checkpoint above and
/// the same with nonce `0x01`×4, signed together by server key `0x22`×32.
/// Each note verifies alone; the expected notes are in
/// `vectors-batch.txt` and in docs/protocol.md.
#[test]
fn documented_batch_vectors() {
    let (key, client, log, put) = documented_log();
    let statements: Vec<lss_verify::Statement> = [0u8, 1]
        .iter()
        .map(|n| {
            log.unsigned(&client, None, Some(vec![*n; 4]), Some(("", &put)), None)
                .expect("unsigned")
                .statement
        })
        .collect();
    let digests: Vec<[u8; 32]> = statements.iter().map(|s| s.digest()).collect();
    let mut got = String::new();
    for (s, signature) in statements
        .iter()
        .zip(lss_verify::statement::sign_batch(&key, &digests))
    {
        let note = s.note(&key.server_id(), signature);
        assert_eq!(
            &lss_verify::Statement::verify(&note, &key.server_id()).expect("verifies"),
            s
        );
        got.push_str(&String::from_utf8(note).expect("utf-8"));
        got.push_str("--\n");
    }
    let expected = include_str!("vectors-batch.txt");
    assert_eq!(got, expected, "batch vectors changed:\n{got}");
}
