//! Golden encodings (statechain.md §9.1): every leaf kind, the transfer
//! statement, an HPKE message with fixed randomness and an address, made
//! from fixed inputs and compared byte for byte with the committed
//! `data/golden.txt`, so any change to a wire or log format is a visible
//! diff. `UPDATE_GOLDEN=1 cargo test -p statechain-core --test golden`
//! rewrites the file (review the diff before committing it).

use std::fmt::Write as _;

use bitcoin::hashes::Hash;
use bitcoin::OutPoint;
use statechain_core::address::{Address, Net};
use statechain_core::bip340;
use statechain_core::leaf::{Body, Final, Leaf, Open, Signature, Transfer, Updated};
use statechain_core::message;
use statechain_core::scalar::Scalar;

fn rep(b: u8) -> Scalar {
    Scalar::from_bytes(&[b; 32]).expect("scalar")
}

const SE_ID: [u8; 32] = [0xaa; 32];

/// Signs the leaf's auth digest with `a` (zero aux) in place.
fn signed(mut leaf: Leaf, a: &Scalar) -> Leaf {
    let sig = bip340::sign(a, &leaf.auth_digest(&SE_ID), &[0; 32]);
    match &mut leaf.body {
        Body::Open(b) => b.auth_sig = sig,
        Body::Signature(b) => b.auth_sig = sig,
        Body::Transfer(b) => b.auth_sig = sig,
        Body::Updated(b) => b.auth_sig = sig,
        Body::Final(b) => b.auth_sig = sig,
    }
    leaf
}

fn golden() -> String {
    let (a, a2) = (rep(0x9a), rep(0x9b));
    let id = [0xbb; 16];
    let s = signed(
        Leaf {
            statechain_id: id,
            seq: 0,
            prev: [0; 32],
            body: Body::Open(Open {
                server_key: rep(0x23).public(),
                auth_key: bip340::xonly_of(&a),
                token_hash: [0x01; 32],
                h_init: 2000,
                interval: 10,
                policy: 1,
                auth_sig: [0; 64],
            }),
        },
        &a,
    );
    let g = signed(
        Leaf {
            statechain_id: id,
            seq: 1,
            prev: s.hash(),
            body: Body::Signature(Signature {
                n: 1,
                server_nonce: rep(0x35).public(),
                commitment: [0x02; 32],
                challenge: rep(0x42),
                auth_sig: [0; 64],
            }),
        },
        &a,
    );
    let x = signed(
        Leaf {
            statechain_id: id,
            seq: 2,
            prev: g.hash(),
            body: Body::Transfer(Transfer {
                x1_pub: rep(0x7d).public(),
                next_auth_key: bip340::xonly_of(&a2),
                auth_sig: [0; 64],
            }),
        },
        &a,
    );
    let t = signed(
        Leaf {
            statechain_id: id,
            seq: 3,
            prev: x.hash(),
            body: Body::Updated(Updated {
                new_server_key: rep(0x24).public(),
                new_auth_key: bip340::xonly_of(&a2),
                count: 1,
                auth_sig: [0; 64],
            }),
        },
        &a2,
    );
    let f = signed(
        Leaf {
            statechain_id: id,
            seq: 4,
            prev: t.hash(),
            body: Body::Final(Final {
                count: 1,
                auth_sig: [0; 64],
            }),
        },
        &a2,
    );
    let mut out = String::new();
    for (name, leaf) in [
        ("leaf_s", &s),
        ("leaf_g", &g),
        ("leaf_x", &x),
        ("leaf_t", &t),
        ("leaf_f", &f),
    ] {
        writeln!(out, "{name} {}", hex::encode(leaf.encode())).expect("write");
        writeln!(out, "{name}_hash {}", hex::encode(leaf.hash())).expect("write");
    }
    let outpoint = OutPoint {
        txid: bitcoin::Txid::from_byte_array([0x0c; 32]),
        vout: 1,
    };
    let stmt = message::transfer_statement(
        &SE_ID,
        &id,
        &outpoint,
        &rep(0x8f).public(),
        &bip340::xonly_of(&a2),
        2,
        &rep(0x7d).public(),
    );
    writeln!(out, "transfer_statement {}", hex::encode(stmt)).expect("write");
    let sealed = message::seal(
        b"{\"golden\":true}",
        &bip340::xonly_of(&a2),
        &SE_ID,
        &id,
        [0x5a; 32],
    )
    .expect("seal");
    writeln!(out, "hpke_message {}", hex::encode(&sealed)).expect("write");
    let address = Address {
        owner: rep(0x8f).public(),
        auth: bip340::xonly_of(&a2),
    };
    writeln!(out, "address_test {}", address.encode(Net::Test)).expect("write");
    writeln!(out, "address_bitcoin {}", address.encode(Net::Bitcoin)).expect("write");
    out
}

#[test]
fn encodings_match_the_committed_golden_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.txt");
    let now = golden();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &now).expect("write golden");
        return;
    }
    let committed =
        std::fs::read_to_string(path).expect("tests/data/golden.txt (UPDATE_GOLDEN=1 makes it)");
    for (a, b) in committed.lines().zip(now.lines()) {
        assert_eq!(a, b, "an encoding changed");
    }
    assert_eq!(committed.lines().count(), now.lines().count());
}

#[test]
fn golden_values_decode_and_open() {
    // The committed bytes are not only stable but valid: leaves decode and
    // re-encode, the message opens for its receiver, addresses parse.
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/golden.txt"
    ))
    .expect("golden");
    let value = |name: &str| {
        committed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .expect(name)
            .to_string()
    };
    for kind in ["s", "g", "x", "t", "f"] {
        let bytes = hex::decode(value(&format!("leaf_{kind}"))).expect("hex");
        let leaf = Leaf::decode(&bytes).expect("decodes");
        assert_eq!(leaf.encode(), bytes);
        assert_eq!(
            hex::encode(leaf.hash()),
            value(&format!("leaf_{kind}_hash"))
        );
    }
    let sealed = hex::decode(value("hpke_message")).expect("hex");
    let plain = message::open(&sealed, &rep(0x9b), &SE_ID, &[0xbb; 16]).expect("opens");
    assert_eq!(plain, b"{\"golden\":true}");
    let addr = Address::decode(&value("address_test"), Net::Test).expect("address");
    assert_eq!(addr.owner, rep(0x8f).public());
}
