//! tlog.md Appendix A, and the mutations every known answer must fail.

use tlog_core::merkle::{self, MemoryTree};
use tlog_core::note::{KeyType, Note, SignerKey, VerifierKey};
use tlog_core::tile::{self, TileId};
use tlog_core::{log_id, Checkpoint, Hash};

fn h(hex: &str) -> Hash {
    hex::decode(hex).expect("hex").try_into().expect("32 bytes")
}

/// The RFC 6962 reference leaves.
fn leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| hex::decode(x).expect("hex"))
    .collect()
}

fn tree(n: usize) -> MemoryTree {
    let mut t = MemoryTree::new();
    for leaf in &leaves()[..n] {
        t.push(leaf);
    }
    t
}

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn roots_by_size() {
    for (n, root) in ROOTS.iter().enumerate() {
        assert_eq!(hex::encode(tree(n).root()), *root, "size {n}");
        assert_eq!(hex::encode(tree(8).root_at(n as u64)), *root, "root_at {n}");
    }
}

#[test]
fn inclusion_and_consistency_known_answers() {
    let t = tree(8);
    let leaf = merkle::leaf_hash(&leaves()[2]);
    assert_eq!(
        hex::encode(leaf),
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"
    );
    let path = [
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e"),
    ];
    let generated = merkle::inclusion_proof(&t, 2, 7)
        .expect("infallible")
        .expect("in range");
    assert_eq!(generated, path);
    let root7 = h(ROOTS[7]);
    merkle::verify_inclusion(2, 7, &leaf, &path, &root7).expect("verifies");

    let proof_3_7: Vec<Hash> = std::iter::once(leaf).chain(path).collect();
    let generated = merkle::consistency_proof(&t, 3, 7)
        .expect("infallible")
        .expect("in order");
    assert_eq!(generated, proof_3_7);
    merkle::verify_consistency(3, 7, &h(ROOTS[3]), &root7, &proof_3_7).expect("3 → 7");
    let proof_4_8 = [h(
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    )];
    assert_eq!(
        merkle::consistency_proof(&t, 4, 8)
            .expect("ok")
            .expect("ok"),
        proof_4_8
    );
    merkle::verify_consistency(4, 8, &h(ROOTS[4]), &h(ROOTS[8]), &proof_4_8).expect("4 → 8");

    // Every mutation of a known answer fails (transparency-dev/merkle style).
    for i in 0..path.len() {
        let mut bad = path;
        bad[i][0] ^= 1;
        assert!(merkle::verify_inclusion(2, 7, &leaf, &bad, &root7).is_err());
    }
    for (index, size) in [(3, 7), (0, 7), (2 ^ 2, 7), (2, 14), (2, 3), (7, 7)] {
        assert!(
            merkle::verify_inclusion(index, size, &leaf, &path, &root7).is_err(),
            "{index}/{size}"
        );
    }
    assert!(merkle::verify_inclusion(2, 7, &leaf, &path[..2], &root7).is_err());
    let longer: Vec<Hash> = path.iter().copied().chain([leaf]).collect();
    assert!(merkle::verify_inclusion(2, 7, &leaf, &longer, &root7).is_err());
    for i in 0..proof_3_7.len() {
        let mut bad = proof_3_7.clone();
        bad[i][31] ^= 0x80;
        assert!(merkle::verify_consistency(3, 7, &h(ROOTS[3]), &root7, &bad).is_err());
    }
    assert!(merkle::verify_consistency(3, 7, &root7, &h(ROOTS[3]), &proof_3_7).is_err());
    assert!(merkle::verify_consistency(7, 3, &h(ROOTS[3]), &root7, &proof_3_7).is_err());
    assert!(merkle::verify_consistency(3, 7, &h(ROOTS[3]), &root7, &[]).is_err());
    assert!(merkle::verify_consistency(4, 8, &h(ROOTS[4]), &h(ROOTS[8]), &[]).is_err());
    // The trivial cases.
    merkle::verify_consistency(0, 8, &h(ROOTS[0]), &h(ROOTS[8]), &[]).expect("empty prefix");
    merkle::verify_consistency(8, 8, &h(ROOTS[8]), &h(ROOTS[8]), &[]).expect("same tree");
    assert!(merkle::verify_consistency(8, 8, &h(ROOTS[7]), &h(ROOTS[8]), &[]).is_err());
    assert!(merkle::verify_consistency(0, 8, &h(ROOTS[0]), &h(ROOTS[8]), &proof_4_8).is_err());
}

const LOG_NAME: &str = "log.example/lk-test";
const CHECKPOINT: &str = "log.example/lk-test\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} log.example/lk-test +pUm1J3vd/jakz8B44/sSlhPqdrnBTDFJU+YCdqwoWVe+v1WMynDboCdsLkPQh/amrWeq+LxrsokyzgNt0/ZECts2QI=\n";
const COSIGNATURE: &str = "\u{2014} witness.example/w1 4M0oZAAAAABpVbkAW1tZ+I6ScHrRsL9BNSmMXRPisXZ7mR6ELjbp+1F1oMvXo9sGSbZ82GCUnuQHe69+SbnS+JBO2kwBoKh9lyxICw==\n";

#[test]
fn keys_checkpoint_and_cosignature() {
    let log = SignerKey::from_seed(LOG_NAME, KeyType::Ed25519, &[0x11; 32]).expect("key");
    let vkey = log.verifier();
    assert_eq!(
        hex::encode(vkey.key().as_bytes()),
        "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737"
    );
    assert_eq!(format!("{:08x}", vkey.id()), "fa9526d4");
    assert_eq!(
        vkey.to_string(),
        "log.example/lk-test+fa9526d4+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3"
    );
    assert_eq!(VerifierKey::parse(&vkey.to_string()).expect("parse"), vkey);
    assert_eq!(
        hex::encode(log_id(LOG_NAME)),
        "cab26fc56b3942702144c6bb172331cdc9938ca0cb8e84c5444abfee7e899121"
    );
    let checkpoint = Checkpoint::new(LOG_NAME, 8, tree(8).root());
    let mut note = Note::new(&checkpoint.to_text()).expect("text");
    note.add(log.sign(note.text(), 0));
    assert_eq!(
        String::from_utf8(note.to_bytes()).expect("utf8"),
        CHECKPOINT
    );
    let parsed = Note::parse(CHECKPOINT.as_bytes()).expect("parse");
    assert_eq!(Checkpoint::parse(parsed.text()).expect("body"), checkpoint);
    parsed
        .verify(std::slice::from_ref(&vkey))
        .expect("verifies");

    let witness =
        SignerKey::from_seed("witness.example/w1", KeyType::Cosignature, &[0x22; 32]).expect("key");
    let wkey = witness.verifier();
    assert_eq!(format!("{:08x}", wkey.id()), "e0cd2864");
    assert_eq!(
        wkey.to_string(),
        "witness.example/w1+e0cd2864+BKCapfR6Z1mAL/lV+NwtKhSlyZ0jvpf4ZBJ/+Tg0VaTw"
    );
    let line = witness.sign(note.text(), 1_767_225_600);
    assert_eq!(line.to_line(), COSIGNATURE);
    let cosigned = format!("{CHECKPOINT}{COSIGNATURE}");
    let verified = Note::parse(cosigned.as_bytes())
        .expect("parse")
        .verify(&[vkey.clone(), wkey.clone()])
        .expect("both verify");
    assert_eq!(verified.signatures().len(), 2);
    assert_eq!(verified.signatures()[0].name, LOG_NAME, "log first");
    // A key not configured is dropped, not an error.
    let only_log = Note::parse(cosigned.as_bytes())
        .expect("parse")
        .verify(std::slice::from_ref(&vkey))
        .expect("log verifies");
    assert_eq!(only_log.signatures().len(), 1);
    // Any byte changed: the note fails, or (a renamed key's line is an
    // unknown key's, dropped) it no longer carries both signatures.
    let bytes = cosigned.as_bytes();
    for i in 0..bytes.len() {
        let mut bad = bytes.to_vec();
        bad[i] ^= 1;
        if let Ok(verified) =
            Note::parse(&bad).and_then(|n| n.verify(&[vkey.clone(), wkey.clone()]))
        {
            assert!(
                verified.signatures().len() < 2,
                "byte {i} changed and both signatures still verify"
            );
        }
    }
}

#[test]
fn hostile_notes_are_refused() {
    let vkey = VerifierKey::parse(
        "log.example/lk-test+fa9526d4+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3",
    )
    .expect("vkey");
    let good = CHECKPOINT.as_bytes();
    let sig_line = &CHECKPOINT[CHECKPOINT.find('\u{2014}').expect("dash")..];
    let cases: Vec<Vec<u8>> = vec![
        CHECKPOINT.replace('\n', "\r\n").into_bytes(),
        CHECKPOINT.replacen("8\n", "8\u{1}\n", 1).into_bytes(),
        format!("{CHECKPOINT}{sig_line}").into_bytes(), // the log key twice
        format!("{}{}", CHECKPOINT, sig_line.repeat(64)).into_bytes(),
        CHECKPOINT.replace("QI=", "QJ=").into_bytes(), // non-canonical base64
        CHECKPOINT.trim_end().as_bytes().to_vec(),
        CHECKPOINT.replace("\n\n", "\n").into_bytes(),
        vec![0xff; 10],
        Vec::new(),
        vec![b'a'; 65 * 1024],
    ];
    for (i, case) in cases.iter().enumerate() {
        let verdict = Note::parse(case).and_then(|n| n.verify(std::slice::from_ref(&vkey)));
        assert!(verdict.is_err(), "case {i} accepted");
    }
    Note::parse(good)
        .and_then(|n| n.verify(std::slice::from_ref(&vkey)))
        .expect("the good one");
    for bad in [
        "log.example/lk-test+fa9526d5+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3",
        "log.example/lk-test+FA9526D4+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3x",
        "log.example/lk-test+fa9526d4+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3+",
        "log.example/lk-test+fa9526d4+",
        "log.example/lk-test+fa9526d+4AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3",
        "lk test+fa9526d4+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3",
        "+fa9526d4+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3",
        "nonsense",
    ] {
        assert!(VerifierKey::parse(bad).is_err(), "{bad}");
    }
    for bad in [
        "log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "log\n01\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n0\n",
        "log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
        "log\n18446744073709551616\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
    ] {
        assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
    }
    Checkpoint::parse("log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").expect("empty");
}

#[test]
fn tile_paths() {
    for (n, path) in [
        (0, "000"),
        (999, "999"),
        (1000, "x001/000"),
        (1_234_067, "x001/x234/067"),
    ] {
        assert_eq!(tile::index_path(n), path);
    }
    let size = 70_000;
    let expected = [
        ("tile/0/272", true),
        ("tile/0/273.p/112", true),
        ("tile/0/273.p/113", false),
        ("tile/0/273", false),
        ("tile/1/000", true),
        ("tile/1/001.p/17", true),
        ("tile/2/000.p/1", true),
        ("tile/entries/273.p/112", true),
        ("tile/0/272.p/5", true),
    ];
    for (path, exists) in expected {
        let id = TileId::parse(path).unwrap_or_else(|| panic!("{path} parses"));
        assert_eq!(id.path(), path);
        assert_eq!(tile::exists(&id, size), exists, "{path}");
    }
    for bad in [
        "tile/00/000",
        "tile/0/0",
        "tile/0/x000/001",
        "tile/0/001/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/07",
        "tile/64/000",
        "tile/0/x1/000",
        "tile/entries/",
        "tiles/0/000",
    ] {
        assert!(TileId::parse(bad).is_none(), "{bad}");
    }
}
