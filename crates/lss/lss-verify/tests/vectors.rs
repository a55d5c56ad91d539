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

#[test]
fn documented_vectors() {
    let leaf = StateLeaf::of("k", 0, b"v");
    let key = ServerKey::from_hex(&"22".repeat(32)).expect("key");
    // The client: secret key 0x33…, its public key names the namespace; it
    // signs its put.
    let secret = lss_core::secp256k1::SecretKey::from_slice(&[0x33; 32]).expect("secret");
    let client = secret
        .public_key(lss_core::secp256k1::SECP256K1)
        .serialize();
    let mut log = NamespaceLog::load(&[]).expect("empty");
    let put = [KeyValue::new("k", 0, b"v".to_vec())];
    let sig = lss_verify::entry::sign_put(&secret, std::slice::from_ref(&leaf));
    let prepared = log.prepare(&put, Some(sig));
    log.commit(prepared);
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
