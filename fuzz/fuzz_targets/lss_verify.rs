//! Every decoder of the verifiable log takes bytes from a possibly lying
//! server (bundles, checkpoint notes), from disk (the trusted state, the
//! log's head and ring chunks as lssd stored them) or from anyone (evidence
//! files): none may panic, and what the bundle decoder accepts must
//! re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lss_core::KeyValue;
use lss_verify::bundle::Bundle;
use lss_verify::ledger::{NamespaceLog, HEAD_KEY, RING_PREFIX};
use lss_verify::{Evidence, Expect, Statement, Trusted};

const SERVER: [u8; 33] = [
    0x02, 0x46, 0x6d, 0x7f, 0xca, 0xe5, 0x63, 0xe5, 0xcb, 0x09, 0xa0, 0xd1, 0x87, 0x0b, 0xb5, 0x80,
    0x34, 0x48, 0x04, 0x61, 0x78, 0x79, 0xa1, 0x49, 0x49, 0xcf, 0x22, 0x28, 0x5f, 0x1b, 0xae, 0x3f,
    0x27,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = Bundle::decode(data) {
        assert_eq!(bundle.encode(), data, "an accepted bundle must be canonical");
    }
    let _ = Statement::verify(data, &SERVER);
    let _ = Trusted::decode(data, &SERVER);
    let _ = Evidence::verify(data);
    // Stored log keys: the bytes as the head, and as a ring chunk beside a
    // head that needs it (version from the first byte).
    let version = i64::from(data.first().copied().unwrap_or(0));
    let head = KeyValue::new(HEAD_KEY, version, data.to_vec());
    let chunk = KeyValue::new(format!("{RING_PREFIX}0000"), 0, data.to_vec());
    if let Ok(log) = NamespaceLog::load(&[head.clone()]) {
        let _ = log.needs_ring(0);
    }
    let _ = NamespaceLog::load(&[head, chunk]);
    // A reply split in two at the first byte's position.
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (note, bundle) = data.split_at(cut);
    let _ = lss_verify::check(
        &SERVER,
        &[2; 33],
        None,
        note,
        bundle,
        Expect::Read {
            prefix: "",
            nonce: b"n",
            answer: &[],
        },
    );
});
