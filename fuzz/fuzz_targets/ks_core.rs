//! Every ks-core decoder on arbitrary bytes: LCJ (canonical and relaxed)
//! and the typed records (UIDMessage, reply, KeyInit, Capabilities,
//! receipts, evidence files with `verify-evidence`'s check), hash-chain
//! entries and leaves, sealed UIDs and the identity mapping. No panic;
//! canonical input re-encodes to itself; a profile or KeyInit check on
//! whatever decodes never panics either.
#![no_main]

use ks_core::capabilities::SignedCapabilities;
use ks_core::entry::Entry;
use ks_core::keyinit::{check_keyinit, FlushRequest, KeyInit, LookupReply, Window};
use ks_core::lcj::{encode, parse_canonical, parse_relaxed, Lcj};
use ks_core::uid::{UidMessage, UidMessageReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_canonical(data) {
        assert_eq!(encode(&v), data);
    }
    if let Ok(v) = parse_relaxed(data) {
        // Whatever parses has one canonical form, which parses back.
        let bytes = encode(&v);
        assert_eq!(parse_canonical(&bytes).as_ref(), Ok(&v));
        if let Ok(m) = UidMessage::from_value(v.clone()) {
            let _ = m.check_profile();
        }
        if let Ok(r) = UidMessageReply::from_value(v.clone()) {
            let _ = r.open_for("alice@example.org");
        }
        if let Ok(k) = KeyInit::from_value(v.clone()) {
            let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
            let _ = check_keyinit(
                &k,
                &key,
                &["example.org".into()],
                Window::Fetch,
                1_800_000_000,
            );
        }
        let _ = SignedCapabilities::from_value(v.clone());
        let _ = FlushRequest::from_value(v.clone());
        let _ = LookupReply::from_value(v.clone());
        // `ks-cli verify-evidence` on whatever decodes as an evidence file:
        // it never panics, and nothing random proves misbehaviour.
        if let Ok(e) = ks_core::evidence::Evidence::from_value(v) {
            let _ = ks_core::evidence::verify(&e);
        }
    }
    if let Ok(e) = Entry::from_leaf(data) {
        assert_eq!(&e.leaf()[..], data);
        let _ = e.unlock("alice@example.org");
    }
    let _ = Entry::from_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(m) = ks_core::identity::map(s) {
            assert_eq!(ks_core::identity::map(&m), Ok(m.clone()));
        }
        let _ = ks_core::uid::open(s, &[7; 32]);
    }
});
