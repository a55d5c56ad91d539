//! statechain-core's decoders on arbitrary bytes: log leaves (strict,
//! re-encoding to themselves, rules applied without panicking), transfer
//! message JSON, HPKE wire messages, addresses, and members' alerts
//! (parsed, re-encoded, verified against a fixed key without panicking).
#![no_main]

use libfuzzer_sys::fuzz_target;
use statechain_core::address::{Address, Net};
use statechain_core::alert::Alert;
use statechain_core::leaf::Leaf;
use statechain_core::message::{open, TransferMessage};
use statechain_core::rules::Ledger;
use statechain_core::scalar::Scalar;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = Leaf::decode(data) {
        assert_eq!(leaf.encode(), data);
        let _ = Ledger::new().apply(&leaf, &[0; 32]);
    }
    if let Ok(m) = TransferMessage::from_json(data) {
        // What parses re-encodes to something that parses to the same.
        assert_eq!(TransferMessage::from_json(&m.to_json()).as_ref(), Ok(&m));
    }
    if let Ok(alert) = Alert::from_json(data) {
        let again = serde_json::to_vec(&alert.to_json()).expect("json");
        assert_eq!(Alert::from_json(&again).as_ref(), Ok(&alert));
        let key = tlog_core::note::SignerKey::from_seed(
            "localhost/statechain/se1",
            tlog_core::note::KeyType::Ed25519,
            &[1; 32],
        )
        .expect("constant key")
        .verifier();
        let _ = alert.verify(&key);
    }
    let a = Scalar::from_bytes(&[0x42; 32]).expect("constant scalar");
    let _ = open(data, &a, &[0; 32], &[0; 16]);
    if let Ok(s) = std::str::from_utf8(data) {
        for net in [Net::Bitcoin, Net::Test] {
            if let Ok(addr) = Address::decode(s, net) {
                assert_eq!(Address::decode(&addr.encode(net), net), Ok(addr));
            }
        }
    }
});
