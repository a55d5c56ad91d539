//! keyserver.md §10 property tests of the formats: LCJ round trips and
//! refuses every non-canonical variant; the identity mapping is idempotent
//! and never outputs a folded look-alike.

use ks_core::identity::map;
use ks_core::keyinit::LookupReply;
use ks_core::lcj::{encode, parse_canonical, parse_relaxed, Lcj};
use ks_core::uid::{KeyEntry, Preferences, UidContent, UidMessage};
use proptest::prelude::*;

fn printable() -> impl Strategy<Value = String> {
    "[ !#-\\[\\]-~]{0,40}"
}

fn key_entry() -> impl Strategy<Value = KeyEntry> {
    (printable(), printable(), printable(), printable()).prop_map(|(a, b, c, d)| KeyEntry {
        cipher_suite: a,
        function: b,
        hash: c,
        pubkey: d,
    })
}

fn message() -> impl Strategy<Value = UidMessage> {
    (
        (printable(), printable(), printable(), printable()),
        (0u64..(1 << 53), 0u64..(1 << 53), 0u64..(1 << 53)),
        (
            key_entry(),
            key_entry(),
            prop::collection::vec(key_entry(), 0..3),
        ),
        (
            prop::collection::vec(printable(), 0..3),
            printable(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((a, b, c, d), (m, na, nb), (k1, k2, ks), (uris, fs, auth))| {
                let mut content = UidContent {
                    identity: a,
                    last_entry: b,
                    msg_count: m,
                    not_after: na,
                    not_before: nb,
                    sig_key: k1,
                    sig_escrow: k2,
                    pubkeys: ks,
                    repo_uris: uris.clone(),
                    preferences: Preferences {
                        cipher_suites: uris,
                        forward_sec: fs,
                    },
                    version: d.clone(),
                    ..UidContent::default()
                };
                content.chain_link.authoritative = auth;
                UidMessage {
                    self_signature: c,
                    user_signature: d,
                    content,
                    ..UidMessage::default()
                }
            },
        )
}

proptest! {
    #[test]
    fn lcj_round_trips(m in message()) {
        let bytes = m.to_lcj();
        prop_assert_eq!(UidMessage::from_lcj(&bytes).expect("decodes"), m.clone());
        // Whitespace anywhere between tokens: relaxed parsing gives the
        // same value, canonical parsing refuses it.
        let mut in_string = false;
        let spaced: Vec<u8> = bytes.iter().flat_map(|&b| {
            if b == b'"' { in_string = !in_string; }
            if !in_string && matches!(b, b'{' | b'[' | b',' | b':') { vec![b, b' ', b'\n'] } else { vec![b] }
        }).collect();
        let v = parse_relaxed(&spaced).expect("relaxed");
        prop_assert_eq!(encode(&v), bytes.clone());
        prop_assert!(parse_canonical(&spaced).is_err());
    }

    #[test]
    fn member_order_does_not_matter_to_the_encoding(m in message()) {
        // Reverse the top-level members: same value, same LCJ.
        let v = m.to_value();
        let ks_core::lcj::Value::Object(members) = v else { unreachable!() };
        let mut text = String::from("{");
        for (i, (k, v)) in members.iter().rev().enumerate() {
            if i > 0 { text.push(','); }
            text.push_str(&format!("\"{k}\":{}", String::from_utf8(encode(v)).expect("ascii")));
        }
        text.push('}');
        let parsed = UidMessage::from_value(parse_relaxed(text.as_bytes()).expect("json")).expect("typed");
        prop_assert_eq!(parsed.to_lcj(), m.to_lcj());
    }

    #[test]
    fn the_mapping_is_idempotent_and_folds(s in "[ a-zA-Z0-9.\\-_]{0,20}@[a-z0-9.\\-]{1,20}") {
        if let Ok(m) = map(&s) {
            prop_assert_eq!(map(&m), Ok(m.clone()));
            let local = m.split('@').next().expect("local");
            prop_assert!(!local.contains(['0', '1', 'j']));
        }
    }
}

#[test]
fn schemas_refuse_unknown_missing_and_mistyped_members() {
    let r = LookupReply {
        hc_positions: vec![1, 5],
        identity: "alice@example.org".into(),
        origin: "o".into(),
        tree_size: 9,
    };
    let good = r.to_lcj();
    assert_eq!(
        good,
        br#"{"HCPOSITIONS":[1,5],"IDENTITY":"alice@example.org","ORIGIN":"o","TREESIZE":9}"#
    );
    for bad in [
        &br#"{"HCPOSITIONS":[1,5],"IDENTITY":"alice@example.org","ORIGIN":"o","TREESIZE":9,"X":1}"#
            [..],
        br#"{"HCPOSITIONS":[1,5],"IDENTITY":"alice@example.org","ORIGIN":"o"}"#,
        br#"{"HCPOSITIONS":[1,"5"],"IDENTITY":"alice@example.org","ORIGIN":"o","TREESIZE":9}"#,
        br#"{"HCPOSITIONS":[1,5],"IDENTITY":"alice@example.org","ORIGIN":"o","TREESIZE":"9"}"#,
        br#"{"HCPOSITIONS":[1,5],"IDENTITY":true,"ORIGIN":"o","TREESIZE":9}"#,
        br#"[]"#,
    ] {
        assert!(
            LookupReply::from_lcj(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

proptest! {
    /// The midstate shortcut gives exactly CKDF's HashID, for names of any
    /// length up to the 254-byte maximum (one to five blocks).
    #[test]
    fn midstate_hash_ids_equal_the_definition(nonce in any::<[u8; 8]>(), name in "[a-z.-]{0,254}") {
        let m = ks_core::entry::Midstate::of(&nonce);
        prop_assert_eq!(m.hash_id(&name), ks_core::entry::Ckdf::derive(&nonce).hash_id(&name));
    }
}
