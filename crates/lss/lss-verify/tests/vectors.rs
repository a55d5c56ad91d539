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
    let client = key.server_id(); // any 33 bytes name a namespace
    let mut log = NamespaceLog::load(&[]).expect("empty");
    let put = [KeyValue::new("k", 0, b"v".to_vec())];
    let prepared = log.prepare(&put);
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
        "leaf {}\nentry {}\nbundle {}\nnote:\n{note}",
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
