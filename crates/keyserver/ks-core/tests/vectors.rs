//! keyserver.md §10 known-answer vectors for the hash chain. They were
//! computed from §3.4 with Python's hashlib and `cryptography`
//! (`tools/ks-vectors.py` recomputes them), so none comes only from the
//! code under test; CKDF(0x00×8) also equals Mute's `cipher/ckdf_test.go`.
//! The two-leaf root is checked against `ct-merkle` too.

use ks_core::entry::{Ckdf, Entry, EntryError, GENESIS_PREV, LEAF_LEN};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

const K1: &str = "c636aaedf55022224b6785e329453a561c66e52add44fb36a0327c67ecb33ac8cf552223d041f964795d7987fe8beb09bb2aa103d148ad98b7eb0c9f87d49b8c";
const K2: &str = "9f6d3daa0612e82585ea90080355ef083cc16809abe0d0303882cac55c587dcb8088a422c6daf4037225c400c3261ea914526a0f679a6fd7997241691eef2bfc";

#[test]
fn ckdf_of_zero_nonce() {
    let c = Ckdf::derive(&[0; 8]);
    assert_eq!(c.k1.to_vec(), h(K1));
    assert_eq!(c.k2.to_vec(), h(K2));
}

fn entry0() -> Entry {
    Entry::build(
        "alice@example.org",
        &[0x11; 32],
        &[0, 1, 2, 3, 4, 5, 6, 7],
        &[0x22; 16],
        &GENESIS_PREV,
    )
}

fn entry1(prev: &[u8; 32]) -> Entry {
    Entry::build(
        "bob@example.org",
        &[0x33; 32],
        &[0xff; 8],
        &[0x44; 16],
        prev,
    )
}

#[test]
fn entry_zero_fields() {
    let e = entry0();
    let c = Ckdf::derive(e.nonce());
    assert_eq!(
        e.hash_id().to_vec(),
        h("661436ed01ba66be5b4a0898a2e3c011d56e3810aaa28acb5e6e09d4fc8e457b")
    );
    assert_eq!(
        c.id_key("alice@example.org").to_vec(),
        h("88c4cc993870e2a9332ea60ec091c8c787c8a8c829f38ea7e8841152b317f41e")
    );
    assert_eq!(e.cr_uid()[..16], [0x22; 16]);
    assert_eq!(
        e.cr_uid()[16..].to_vec(),
        h("7d15a047442ad88f2e9cc37f0f90891092f71199344a1dd95a4b3edc22a04d1c")
    );
    assert_eq!(
        e.uid_index().to_vec(),
        h("02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc")
    );
    assert_eq!(
        e.hash().to_vec(),
        h("08f40fa4dacb8777633ebef556f412de38959edc3ba6dd1154d2c4e32dc55c3e")
    );
    assert_eq!(
        e.leaf_hash().to_vec(),
        h("66bda32aa465c5b27126fe1f8baed260de7189e6cc2a3a9aa9d5dfdbcdcc3c0c")
    );
    assert_eq!(e.unlock("alice@example.org"), Ok([0x11; 32]));
    assert_eq!(e.unlock("bob@example.org"), Err(EntryError::Unlock));
    assert!(e.is_for("alice@example.org") && !e.is_for("a1ice@example.org"));
    e.check_link(&GENESIS_PREV).expect("links to H_-1");
}

#[test]
fn entry_one_and_the_two_leaf_root() {
    let e0 = entry0();
    let e1 = entry1(e0.hash());
    assert_eq!(
        e1.hash().to_vec(),
        h("fdb143147725277f7f5ac747393ca109498699dc058ff18d99bce8419b8e84dd")
    );
    e1.check_link(e0.hash()).expect("links");
    assert_eq!(e1.check_link(&GENESIS_PREV), Err(EntryError::Link));
    let want = h("b5b65a6b9ad9e8c347aa0860287e57af6e7801776101ae5e4963a99afe08eb43");
    let mut tree = tlog_core::merkle::MemoryTree::new();
    tree.push(&e0.leaf());
    tree.push(&e1.leaf());
    assert_eq!(tree.root().to_vec(), want);
    // The independent oracle.
    let mut oracle =
        ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_011::Sha256, Vec<u8>>::new();
    oracle.push(e0.leaf().to_vec());
    oracle.push(e1.leaf().to_vec());
    assert_eq!(oracle.root().as_bytes().to_vec(), want);
}

#[test]
fn leaves_are_checked() {
    let e = entry0();
    let leaf = e.leaf();
    assert_eq!(Entry::from_leaf(&leaf), Ok(e));
    assert_eq!(
        Entry::from_leaf(&leaf[..LEAF_LEN - 1]),
        Err(EntryError::Length(157))
    );
    let mut bad = leaf;
    bad[0] = b'X';
    assert_eq!(Entry::from_leaf(&bad), Err(EntryError::Tag));
    let mut bad = leaf;
    bad[4] = 2;
    assert_eq!(Entry::from_leaf(&bad), Err(EntryError::Tag));
    let mut bad = leaf;
    bad[5 + 32] = 2;
    assert_eq!(Entry::from_leaf(&bad), Err(EntryError::Type(2)));
    // Any flipped byte breaks the link.
    for i in 0..153 {
        let mut f = e;
        f.0[i] ^= 1;
        if i == 32 {
            continue;
        }
        assert_eq!(
            f.check_link(&GENESIS_PREV),
            Err(EntryError::Link),
            "byte {i}"
        );
    }
}

/// Runs `tools/ks-vectors.py` (Python's hashlib and `cryptography`) and
/// compares every value it derives with ours.
#[test]
fn an_independent_python_implementation_agrees() {
    let python = lk_testkit::python::venv(&["cryptography"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../tools/ks-vectors.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).expect("json");
    let e0 = entry0();
    let e1 = entry1(e0.hash());
    let c = Ckdf::derive(&[0; 8]);
    let mut tree = tlog_core::merkle::MemoryTree::new();
    tree.push(&e0.leaf());
    tree.push(&e1.leaf());
    let ours = [
        ("ckdf_k1", hex::encode(c.k1)),
        ("ckdf_k2", hex::encode(c.k2)),
        ("hash_id", hex::encode(e0.hash_id())),
        (
            "id_key",
            hex::encode(Ckdf::derive(e0.nonce()).id_key("alice@example.org")),
        ),
        ("cr_uid", hex::encode(e0.cr_uid())),
        ("uid_index", hex::encode(e0.uid_index())),
        ("h0", hex::encode(e0.hash())),
        ("leaf_hash0", hex::encode(e0.leaf_hash())),
        ("h1", hex::encode(e1.hash())),
        ("root2", hex::encode(tree.root())),
    ];
    assert_eq!(theirs.len(), ours.len());
    for (k, v) in ours {
        assert_eq!(theirs[k], v, "{k}");
    }
}
