//! Interop with code written by others (tlog.md §10): `signed_note` 0.2.0
//! verifies our notes from our verifier key and we verify its; `tlog_tiles`
//! 0.2.0 reads our tiles through a path adapter (it uses Go sumdb paths with
//! the tile height, `tile/8/<L>/…`), computes our root with its
//! `tree_hash`, and its record and tree proofs cross-verify with ours; its
//! `Checkpoint` parses ours.

use std::collections::HashMap;

use signed_note::{StandardSigner, StandardVerifier, VerifierList};
use tlog_core::merkle::{self, MemoryTree, NodeSource};
use tlog_core::note::{KeyType, Note, SignerKey, VerifierKey};
use tlog_core::tile::{self, TileId};
use tlog_core::Checkpoint;
use tlog_tiles::tile::{Tile, TileHashReader, TileReader};
use tlog_tiles::tlog;

const ORIGIN: &str = "log.example/lk-test";

fn log_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[0x11; 32]).expect("key")
}

#[test]
fn signed_note_verifies_our_notes_and_we_verify_its() {
    let key = log_key();
    let mut tree = MemoryTree::new();
    for i in 0..100u32 {
        tree.push(&i.to_be_bytes());
    }
    let mut note = Note::new(&Checkpoint::new(ORIGIN, 100, tree.root()).to_text()).expect("text");
    note.add(key.sign(note.text(), 0));
    let ours = note.to_bytes();

    // Theirs verifies ours, from our vkey.
    let verifier = StandardVerifier::new(&key.verifier().to_string()).expect("their parser");
    let theirs = signed_note::Note::from_bytes(&ours).expect("their note parser");
    let (verified, _) = theirs
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .expect("their verification");
    assert_eq!(verified.len(), 1);
    // Their signer, from our private key line, makes our exact bytes.
    let signer = StandardSigner::new(&key.to_private_line()).expect("their signer");
    let mut theirs = signed_note::Note::new(note.text().as_bytes(), &[]).expect("note");
    theirs.add_sigs(&[&signer]).expect("sign");
    assert_eq!(theirs.to_bytes(), ours);

    // Go's sumdb/note example, as signed_note documents it: we verify it.
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let msg = "If you think cryptography is the answer to your problem,\n\
               then you don't know what your problem is.\n\
               \n\
               \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let key = VerifierKey::parse(vkey).expect("their vkey");
    let note = Note::parse(msg.as_bytes())
        .expect("parse")
        .verify(&[key])
        .expect("verifies");
    assert_eq!(note.to_bytes(), msg.as_bytes());
    let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    let ours = SignerKey::parse(skey).expect("their private key format");
    assert_eq!(ours.verifier().to_string(), vkey);
    let mut again = Note::new(note.text()).expect("text");
    again.add(ours.sign(again.text(), 0));
    assert_eq!(again.to_bytes(), msg.as_bytes(), "deterministic Ed25519");
}

/// Our tiles, by our canonical path.
struct Tiles {
    size: u64,
    by_path: HashMap<String, Vec<u8>>,
}

impl Tiles {
    fn of(tree: &MemoryTree) -> Tiles {
        let size = tree.size();
        let mut by_path = HashMap::new();
        for level in 0..8u8 {
            let (full, partial) = tile::tiles_at(size, level);
            let widths = (0..full)
                .map(|n| (n, 256u16))
                .chain((partial > 0).then_some((full, partial)));
            for (n, width) in widths {
                let mut bytes = Vec::new();
                for i in 0..u64::from(width) {
                    let node = tree.node(8 * level, n * 256 + i).expect("infallible");
                    bytes.extend_from_slice(&node);
                }
                let id = TileId {
                    level: Some(level),
                    index: n,
                    width,
                };
                by_path.insert(id.path(), bytes);
            }
        }
        Tiles { size, by_path }
    }
}

/// `tlog_tiles` asks for Go sumdb tiles; the adapter maps each to our path.
impl TileReader for Tiles {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog::Error> {
        tiles
            .iter()
            .map(|t| {
                let id = TileId {
                    level: Some(t.level()),
                    index: t.level_index(),
                    width: t.width() as u16,
                };
                assert!(tile::exists(&id, self.size), "{} is not served", id.path());
                self.by_path
                    .get(&id.path())
                    .or_else(|| {
                        // A partial of a tile that is now full: its prefix.
                        let full = TileId { width: 256, ..id };
                        self.by_path.get(&full.path())
                    })
                    .map(|b| b[..32 * t.width() as usize].to_vec())
                    .ok_or(tlog::Error::InvalidTile)
            })
            .collect()
    }

    fn save_tiles(&self, _tiles: &[Tile], _data: &[Vec<u8>]) {}
}

#[test]
fn tlog_tiles_reads_our_tiles_and_proofs_cross_verify() {
    for size in [1u64, 255, 256, 257, 1000, 65_536, 70_000] {
        let mut tree = MemoryTree::new();
        for i in 0..size {
            tree.push(&i.to_be_bytes());
        }
        let tiles = Tiles::of(&tree);
        let root = tlog::Hash(tree.root());
        let reader = TileHashReader::new(size, root, &tiles);
        assert_eq!(
            tlog::tree_hash(size, &reader).expect("their tree_hash"),
            root,
            "size {size}"
        );
        for index in [0, size / 3, size - 1] {
            let theirs = tlog::prove_record(size, index, &reader).expect("their proof");
            let ours = merkle::inclusion_proof(&tree, index, size)
                .expect("infallible")
                .expect("ok");
            let leaf = merkle::leaf_hash(&index.to_be_bytes());
            assert_eq!(theirs.iter().map(|h| h.0).collect::<Vec<_>>(), ours);
            tlog::check_record(&theirs, size, root, index, tlog::Hash(leaf)).expect("their check");
        }
        for old in [1, size / 2, size - 1] {
            if old == 0 || old >= size {
                continue;
            }
            let theirs = tlog::prove_tree(size, old, &reader).expect("their tree proof");
            let ours = merkle::consistency_proof(&tree, old, size)
                .expect("infallible")
                .expect("ok");
            assert_eq!(
                theirs.iter().map(|h| h.0).collect::<Vec<_>>(),
                ours,
                "{old} → {size}"
            );
            let old_root = tree.root_at(old);
            tlog::check_tree(&theirs, size, root, old, tlog::Hash(old_root)).expect("their check");
            merkle::verify_consistency(old, size, &old_root, &tree.root(), &ours).expect("ours");
        }
        let text = Checkpoint::new(ORIGIN, size, tree.root()).to_text();
        let parsed = tlog_tiles::Checkpoint::from_bytes(text.as_bytes()).expect("their parser");
        assert_eq!(
            (parsed.origin(), parsed.size(), parsed.hash().0),
            (ORIGIN, size, tree.root())
        );
    }
}
