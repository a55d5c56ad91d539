//! Our Merkle tree against `ct-merkle` 0.3.0 (written by others) as an
//! oracle: its known answers (from transparency-dev/merkle), and random
//! trees where roots, PATHs and PROOFs must equal its own and verify with
//! its verifier; mutations of every proof must fail ours (tlog.md §10).

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use proptest::prelude::*;
use sha2_011::Sha256;
use tlog_core::merkle::{self, Hash, MemoryTree};

fn both(entries: &[Vec<u8>]) -> (MemoryTree, MemoryBackedTree<Sha256, Vec<u8>>) {
    let mut ours = MemoryTree::new();
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    for e in entries {
        ours.push(e);
        theirs.push(e.clone());
    }
    (ours, theirs)
}

fn flat(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

fn ours_root(theirs: &RootHash<Sha256>) -> Hash {
    theirs.as_bytes().as_slice().try_into().expect("32 bytes")
}

const LEAVES: &[&str] = &[
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// The known answers `ct-merkle` carries (`tests/known_answer.rs`), run
/// against our generator and verifier.
#[test]
fn ct_merkle_known_answers() {
    let leaves: Vec<Vec<u8>> = LEAVES
        .iter()
        .map(|l| hex::decode(l).expect("hex"))
        .collect();
    let inclusion = [
        (1, 0, ""),
        (2, 0, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        (2, 1, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        (3, 2, "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        (5, 1, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031ebc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        (8, 0, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc75f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        (8, 5, "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6bca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ];
    for (size, index, proof) in inclusion {
        let (ours, _) = both(&leaves[..size]);
        let path = merkle::inclusion_proof(&ours, index as u64, size as u64)
            .expect("infallible")
            .expect("in range");
        assert_eq!(hex::encode(flat(&path)), proof, "PATH({index}, {size})");
        let leaf = merkle::leaf_hash(&leaves[index]);
        merkle::verify_inclusion(index as u64, size as u64, &leaf, &path, &ours.root())
            .expect("verifies");
    }
    let consistency = [
        (1, 1, ""),
        (1, 8, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc75f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        (2, 5, "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031ebc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        (6, 8, "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6aca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ];
    for (old, new, proof) in consistency {
        let (ours, _) = both(&leaves[..new]);
        let generated = merkle::consistency_proof(&ours, old as u64, new as u64)
            .expect("infallible")
            .expect("in order");
        assert_eq!(hex::encode(flat(&generated)), proof, "PROOF({old}, {new})");
        merkle::verify_consistency(
            old as u64,
            new as u64,
            &ours.root_at(old as u64),
            &ours.root(),
            &generated,
        )
        .expect("verifies");
    }
}

fn entries() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..300),
        // Sizes around powers of two.
        (1u32..11, -1i32..=1).prop_map(|(j, d)| {
            let n = ((1i64 << j) + i64::from(d)).max(1) as usize;
            (0..n).map(|i| (i as u32).to_be_bytes().to_vec()).collect()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(0x1c), ..ProptestConfig::default() })]

    #[test]
    fn roots_paths_and_proofs_match_ct_merkle(entries in entries(), pick in any::<u64>(), old_pick in any::<u64>()) {
        let (ours, theirs) = both(&entries);
        let n = entries.len() as u64;
        prop_assert_eq!(ours.root(), ours_root(&theirs.root()));
        prop_assert_eq!(ours.range().root(), ours.root());

        let index = pick % n;
        let path = merkle::inclusion_proof(&ours, index, n).expect("ok").expect("ok");
        let their_path = theirs.prove_inclusion(index as usize);
        prop_assert_eq!(flat(&path), their_path.as_bytes().to_vec());
        theirs.root().verify_inclusion(&entries[index as usize], index, &InclusionProof::<Sha256>::from_bytes(flat(&path)))
            .expect("ct-merkle accepts our PATH");
        let leaf = merkle::leaf_hash(&entries[index as usize]);
        let root = ours.root();
        prop_assert!(merkle::verify_inclusion(index, n, &leaf, &path, &root).is_ok());

        // Mutations fail (index ±1 or XOR 2, size ×2 or ÷2, flipped bits,
        // truncation, extension).
        for (i, s) in [(index ^ 2, n), (index.wrapping_add(1), n), (index.wrapping_sub(1), n), (index, n * 2), (index, n / 2)] {
            if (i, s) != (index, n) {
                prop_assert!(merkle::verify_inclusion(i, s, &leaf, &path, &root).is_err(), "index {} size {}", i, s);
            }
        }
        for k in 0..path.len() {
            let mut bad = path.clone();
            bad[k][k % 32] ^= 1;
            prop_assert!(merkle::verify_inclusion(index, n, &leaf, &bad, &root).is_err());
        }
        if !path.is_empty() {
            prop_assert!(merkle::verify_inclusion(index, n, &leaf, &path[1..], &root).is_err());
        }
        let mut longer = path.clone();
        longer.push(leaf);
        prop_assert!(merkle::verify_inclusion(index, n, &leaf, &longer, &root).is_err());
        let mut bad_leaf = leaf;
        bad_leaf[0] ^= 1;
        prop_assert!(merkle::verify_inclusion(index, n, &bad_leaf, &path, &root).is_err());

        let old = 1 + old_pick % n;
        let proof = merkle::consistency_proof(&ours, old, n).expect("ok").expect("ok");
        let old_root = ours.root_at(old);
        prop_assert!(merkle::verify_consistency(old, n, &old_root, &root, &proof).is_ok());
        if old < n {
            let their_proof = theirs.prove_consistency((n - old) as usize);
            prop_assert_eq!(flat(&proof), their_proof.as_bytes().to_vec());
            let their_old = RootHash::<Sha256>::new(old_root.into(), old);
            theirs.root().verify_consistency(&their_old, &ConsistencyProof::<Sha256>::try_from_bytes(flat(&proof)).expect("bytes"))
                .expect("ct-merkle accepts our PROOF");
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][31 - k % 32] ^= 0x40;
                prop_assert!(merkle::verify_consistency(old, n, &old_root, &root, &bad).is_err());
            }
            prop_assert!(merkle::verify_consistency(old, n, &root, &old_root, &proof).is_err(), "roots swapped");
            let mut prepended = vec![old_root];
            prepended.extend_from_slice(&proof);
            prop_assert!(merkle::verify_consistency(old, n, &old_root, &root, &prepended).is_err());
        }
    }

    #[test]
    fn the_compact_range_is_the_root_at_every_size(entries in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut range = merkle::CompactRange::new();
        let mut tree = MemoryTree::new();
        for e in &entries {
            range.push(merkle::leaf_hash(&[*e]));
            tree.push(&[*e]);
            prop_assert_eq!(range.root(), tree.root());
        }
        let again = merkle::CompactRange::from_parts(range.size(), range.hashes().to_vec()).expect("parts");
        prop_assert_eq!(again, range);
    }
}

/// Answers only nodes inside `[0, old)`: what a follower holds below a
/// chunk it refused.
struct Below<'a> {
    tree: &'a MemoryTree,
    old: u64,
}

impl merkle::NodeSource for Below<'_> {
    type Error = String;
    fn node(&self, level: u8, index: u64) -> Result<Hash, String> {
        let end = (index + 1) << level;
        if end > self.old {
            return Err(format!("node {level}/{index} is beyond {}", self.old));
        }
        merkle::NodeSource::node(self.tree, level, index).map_err(|e| match e {})
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(0x1d), ..ProptestConfig::default() })]

    /// PATH(i, N) rebuilt from the nodes below `old` and PROOF(old, N)
    /// equals the PATH ct-merkle computes from the whole tree.
    #[test]
    fn paths_beyond_what_is_held_match_ct_merkle(entries in entries(), pick in any::<u64>(), old_pick in any::<u64>()) {
        let (ours, theirs) = both(&entries);
        let n = entries.len() as u64;
        let old = 1 + old_pick % n;
        let index = pick % old;
        let consistency = merkle::consistency_proof(&ours, old, n).expect("ok").expect("ok");
        let below = Below { tree: &ours, old };
        let path = merkle::inclusion_proof_beyond(&below, index, old, n, &consistency)
            .expect("only nodes below old are read")
            .expect("a proof");
        prop_assert_eq!(flat(&path), theirs.prove_inclusion(index as usize).as_bytes().to_vec());
        // A proof of the wrong length, or an index not held, is refused.
        if !consistency.is_empty() {
            prop_assert!(merkle::inclusion_proof_beyond(&below, index, old, n, &consistency[1..]).expect("ok").is_err());
        }
        prop_assert!(merkle::inclusion_proof_beyond(&below, old, old, n, &consistency).expect("ok").is_err());
    }
}
