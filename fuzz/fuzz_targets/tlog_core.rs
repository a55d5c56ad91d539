//! Every tlog-core decoder on arbitrary bytes: signed notes, checkpoint
//! bodies, verifier and private keys, tile paths, policies, evidence, receipts, view
//! state, LKTL/1 frames and identification lines, and proof verification
//! with arbitrary hashes. No panic; what parses re-serialises to the same
//! bytes (notes, checkpoints, tile paths, keys).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlog_core::merkle;
use tlog_core::note::{KeyType, Note, SignerKey, VerifierKey};
use tlog_core::sync::{Frame, Ident};
use tlog_core::{Checkpoint, Evidence, LogView, Policy, TileId};

fuzz_target!(|data: &[u8]| {
    // LKTL/1: frames re-encode to the bytes they came from.
    if let Ok(Some((frame, used))) = Frame::decode(data, 1 << 20) {
        if !matches!(frame.message, tlog_core::sync::Message::Unknown(_)) {
            assert_eq!(frame.encode(), &data[..used]);
        }
    }
    let _ = Ident::parse(data);
    // Receipts (tlog-proof) re-encode to the bytes they came from.
    if let Ok(receipt) = tlog_core::Receipt::parse(data) {
        assert_eq!(receipt.encode(), data);
    }
    if let Ok(request) = tlog_core::witness::AddCheckpoint::parse(data) {
        let _ = request.decide(|_| None, None);
    }
    if let Ok(note) = Note::parse(data) {
        let again = note.to_bytes();
        assert_eq!(Note::parse(&again).map(|n| n.to_bytes()), Ok(again));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(checkpoint) = Checkpoint::parse(text) {
            assert_eq!(checkpoint.to_text(), text);
        }
        if let Ok(key) = VerifierKey::parse(text) {
            assert_eq!(key.to_string(), text);
        }
        let _ = SignerKey::parse(text);
        if let Ok(policy) = Policy::parse(text) {
            let _ = policy.verify(data, 1_800_000_000);
        }
        if let Some(tile) = TileId::parse(text) {
            assert_eq!(tile.path(), text);
        }
    }
    // Evidence and saved view state under a fixed key.
    let key = SignerKey::from_seed("log.example/fuzz", KeyType::Ed25519, &[7; 32])
        .expect("key")
        .verifier();
    let _ = Evidence::verify(data, std::slice::from_ref(&key));
    let _ = Evidence::origin(data);
    if let Ok(view) = LogView::restore(Policy::single(key), "log.example/fuzz", data) {
        assert_eq!(view.to_bytes(), data);
    }
    // Proof verification with hashes taken from the input.
    if data.len() >= 16 + 64 {
        let a = u64::from_be_bytes(data[0..8].try_into().expect("8"));
        let b = u64::from_be_bytes(data[8..16].try_into().expect("8"));
        let x: [u8; 32] = data[16..48].try_into().expect("32");
        let y: [u8; 32] = data[48..80].try_into().expect("32");
        let proof: Vec<[u8; 32]> = data[80..]
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32"))
            .collect();
        let _ = merkle::verify_inclusion(a, b, &x, &proof, &y);
        let _ = merkle::verify_consistency(a, b, &x, &y, &proof);
    }
});
