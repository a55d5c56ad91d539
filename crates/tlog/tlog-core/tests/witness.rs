//! Every branch of tlog.md §5.1, in the spec's order, with its status.

use tlog_core::merkle::{self, MemoryTree};
use tlog_core::note::{KeyType, Note, SignerKey, VerifierKey};
use tlog_core::witness::AddCheckpoint;
use tlog_core::Checkpoint;

const ORIGIN: &str = "log.example/lk-test";

fn key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[0x11; 32]).expect("key")
}

fn tree(n: u64, salt: u8) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push(&[i.to_be_bytes().as_slice(), &[salt]].concat());
    }
    t
}

fn note(t: &MemoryTree, signer: &SignerKey) -> String {
    let mut note = Note::new(&Checkpoint::new(ORIGIN, t.size(), t.root()).to_text()).expect("text");
    note.add(signer.sign(note.text(), 0));
    String::from_utf8(note.to_bytes()).expect("utf8")
}

fn body(old: u64, proof: &[[u8; 32]], note: &str) -> Vec<u8> {
    let mut b = format!("old {old}\n");
    for h in proof {
        b.push_str(&base64_line(h));
    }
    b.push('\n');
    b.push_str(note);
    b.into_bytes()
}

fn base64_line(h: &[u8; 32]) -> String {
    // The standard alphabet with padding, as the spec's base64.
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in h.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.push('\n');
    out
}

fn keys(origin: &str) -> Option<Vec<VerifierKey>> {
    (origin == ORIGIN).then(|| vec![key().verifier()])
}

fn status(body: &[u8], latest: Option<(u64, [u8; 32])>) -> u16 {
    match AddCheckpoint::parse(body).and_then(|r| r.decide(keys, latest)) {
        Ok(_) => 200,
        Err(r) => r.status,
    }
}

#[test]
fn add_checkpoint_answers_as_the_spec_orders() {
    let t8 = tree(8, 0);
    let t12 = tree(12, 0);
    let proof = merkle::consistency_proof(&t12, 8, 12)
        .expect("ok")
        .expect("ok");
    let good = note(&t12, &key());
    // 200: first cosignature, and an extension of the cosigned tree.
    assert_eq!(status(&body(0, &[], &good), None), 200);
    assert_eq!(status(&body(8, &proof, &good), Some((8, t8.root()))), 200);
    // 1. Malformed, oversize, too many proof lines → 400.
    assert_eq!(status(b"garbage", None), 400);
    assert_eq!(status(b"old 01\n\nx", None), 400);
    assert_eq!(status(&vec![b'a'; 73 * 1024], None), 400);
    assert_eq!(
        status(&body(8, &[[1; 32]; 64], &good), Some((8, t8.root()))),
        400
    );
    // 2. Unknown origin → 404.
    let other = SignerKey::from_seed("other.example/x", KeyType::Ed25519, &[1; 32]).expect("key");
    let mut foreign =
        Note::new("other.example/x\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
            .expect("text");
    foreign.add(other.sign(foreign.text(), 0));
    assert_eq!(
        status(
            &body(
                0,
                &[],
                &String::from_utf8(foreign.to_bytes()).expect("utf8")
            ),
            None
        ),
        404
    );
    // 3. Not signed by a configured key, or its line fails → 403.
    let stranger = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[0x99; 32]).expect("key");
    assert_eq!(status(&body(0, &[], &note(&t12, &stranger)), None), 403);
    let tampered = good.replacen("12\n", "13\n", 1);
    assert_eq!(status(&body(0, &[], &tampered), None), 403);
    // 4. old > size → 400.
    assert_eq!(status(&body(20, &[], &good), Some((20, t8.root()))), 400);
    // 5. old is not the latest cosigned size → 409 with that size.
    let refused = AddCheckpoint::parse(&body(4, &[], &good))
        .and_then(|r| r.decide(keys, Some((8, t8.root()))))
        .expect_err("409");
    assert_eq!((refused.status, refused.body.as_str()), (409, "8\n"));
    assert_eq!(status(&body(8, &proof, &good), None), 409);
    // 6. Inconsistent → 422: a bad proof, a proof from 0, same size with
    // another root (a fork), an empty tree with a root.
    let mut bad = proof.clone();
    bad[0][0] ^= 1;
    assert_eq!(status(&body(8, &bad, &good), Some((8, t8.root()))), 422);
    assert_eq!(status(&body(0, &proof, &good), None), 422);
    let fork = note(&tree(12, 1), &key());
    assert_eq!(status(&body(12, &[], &fork), Some((12, t12.root()))), 422);
    assert_eq!(
        status(&body(12, &[], &good), Some((12, t12.root()))),
        200,
        "same tree again"
    );
    let forked_history = note(&tree(12, 1), &key());
    let p = merkle::consistency_proof(&tree(12, 1), 8, 12)
        .expect("ok")
        .expect("ok");
    assert_eq!(
        status(&body(8, &p, &forked_history), Some((8, t8.root()))),
        422
    );
}
