//! The client side (tlog.md §5.4, §7.8, §8.2) as an attacker would try it:
//! policies that are not met, stale or future cosignatures, a rollback, a
//! bad proof, a split view (evidence built, checked offline, and the log
//! refused from then on), forged evidence, and saved state.

use tlog_core::evidence::Evidence;
use tlog_core::merkle::{self, MemoryTree};
use tlog_core::note::{KeyType, Note, SignerKey};
use tlog_core::policy::{Policy, VerifyError};
use tlog_core::view::{LogView, Offer, ViewError};
use tlog_core::Checkpoint;

const ORIGIN: &str = "log.example/lk-test";
const NOW: u64 = 1_800_000_000;

fn log_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[0x11; 32]).expect("key")
}

fn witness(i: u8) -> SignerKey {
    SignerKey::from_seed(
        &format!("w{i}.example"),
        KeyType::Cosignature,
        &[0x30 + i; 32],
    )
    .expect("key")
}

fn tree(n: u64, salt: u8) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        let mut e = i.to_be_bytes().to_vec();
        e.push(salt);
        t.push(&e);
    }
    t
}

/// A note for `tree` signed by the log and cosigned by `witnesses` at `time`.
fn note(tree: &MemoryTree, witnesses: &[(SignerKey, u64)]) -> Vec<u8> {
    let mut note =
        Note::new(&Checkpoint::new(ORIGIN, tree.size(), tree.root()).to_text()).expect("text");
    note.add(log_key().sign(note.text(), 0));
    for (w, time) in witnesses {
        note.add(w.sign(note.text(), *time));
    }
    note.to_bytes()
}

fn policy_2_of_3() -> Policy {
    let text = format!(
        "log {}\nwitness a {}\nwitness b {}\nwitness c {}\ngroup ws 2 a b c\nquorum ws\n",
        log_key().verifier(),
        witness(1).verifier(),
        witness(2).verifier(),
        witness(3).verifier()
    );
    Policy::parse(&text).expect("policy")
}

#[test]
fn quorum_freshness_and_future_cosignatures() {
    let policy = policy_2_of_3().max_age(3600);
    let t = tree(10, 0);
    policy
        .verify(&note(&t, &[(witness(1), NOW), (witness(3), NOW - 10)]), NOW)
        .expect("2 of 3, fresh");
    assert_eq!(
        policy.verify(&note(&t, &[(witness(1), NOW)]), NOW),
        Err(VerifyError::PolicyNotMet),
        "1 of 3"
    );
    assert!(matches!(
        policy.verify(
            &note(&t, &[(witness(1), NOW), (witness(2), NOW - 7200)]),
            NOW
        ),
        Err(VerifyError::Stale { .. })
    ));
    assert_eq!(
        policy.verify(
            &note(&t, &[(witness(1), NOW), (witness(2), NOW + 601)]),
            NOW
        ),
        Err(VerifyError::PolicyNotMet),
        "a cosignature from the future does not count"
    );
    // A forged cosignature (another key under a configured name) rejects
    // the whole note; an unknown witness is just ignored.
    let mut forged = Note::parse(&note(&t, &[(witness(1), NOW)])).expect("note");
    let impostor = SignerKey::from_seed("w2.example", KeyType::Cosignature, &[9; 32]).expect("key");
    let mut line = impostor.sign(forged.text(), NOW);
    line.id = witness(2).verifier().id();
    forged.add(line);
    assert!(matches!(
        policy.verify(&forged.to_bytes(), NOW),
        Err(VerifyError::Note(_))
    ));
    let stranger = SignerKey::from_seed("x.example", KeyType::Cosignature, &[8; 32]).expect("key");
    assert_eq!(
        policy.verify(&note(&t, &[(witness(1), NOW), (stranger, NOW)]), NOW),
        Err(VerifyError::PolicyNotMet)
    );
    // One public key under two names counts once.
    let alias =
        SignerKey::from_seed("w1-alias.example", KeyType::Cosignature, &[0x31; 32]).expect("key");
    let two_names = Policy::parse(&format!(
        "log {}\nwitness a {}\nwitness b {}\ngroup ws 2 a b\nquorum ws\n",
        log_key().verifier(),
        witness(1).verifier(),
        alias.verifier()
    ))
    .expect("policy");
    assert_eq!(
        two_names.verify(&note(&t, &[(witness(1), NOW), (alias, NOW)]), NOW),
        Err(VerifyError::PolicyNotMet)
    );
}

#[test]
fn policy_files_are_checked() {
    let log = log_key().verifier();
    let w = witness(1).verifier();
    for bad in [
        String::new(),
        format!("log {log}\n"),
        format!("log {log}\nquorum x\n"),
        format!("log {log}\ngroup g 1 a\nquorum g\n"),
        format!("log {log}\nwitness a {w}\nwitness a {w}\nquorum none\n"),
        format!("log {log}\nwitness a {w}\ngroup g 2 a\nquorum g\n"),
        format!("log {log}\nwitness a {w}\ngroup g 1 a a\nquorum g\n"),
        format!("log {log}\nquorum none\nquorum none\n"),
        format!("log {w}\nquorum none\n"),
        format!("witness a {log}\nquorum none\n"),
        format!("log {log}\nfrobnicate\nquorum none\n"),
    ] {
        assert!(Policy::parse(&bad).is_err(), "{bad:?}");
    }
    Policy::parse(&format!(
        "# comment\nlog {log} https://log.example/\nquorum none\n"
    ))
    .expect("minimal");
}

#[test]
fn a_view_advances_only_along_consistent_trees() {
    let policy = Policy::single(log_key().verifier());
    let mut view = LogView::new(policy.clone(), ORIGIN);
    let t = tree(1000, 0);
    assert_eq!(view.offer(&note(&t, &[]), &[], NOW), Ok(Offer::Advanced));
    let bigger = tree(1500, 0);
    let proof = merkle::consistency_proof(&bigger, 1000, 1500)
        .expect("ok")
        .expect("ok");
    assert_eq!(view.needs_proof(1500), Some((1000, 1500)));
    // A bad proof is refused and blamed, not taken as evidence.
    let mut bad = proof.clone();
    bad[0][0] ^= 1;
    assert!(matches!(
        view.offer(&note(&bigger, &[]), &bad, NOW),
        Err(ViewError::BadProof(_))
    ));
    assert_eq!(
        view.offer(&note(&bigger, &[]), &proof, NOW),
        Ok(Offer::Advanced)
    );
    assert_eq!(
        view.offer(&note(&bigger, &[]), &[], NOW),
        Ok(Offer::Unchanged)
    );
    // Rolled back to the old checkpoint without a proof: refused.
    assert_eq!(
        view.offer(&note(&t, &[]), &[], NOW),
        Err(ViewError::Rollback {
            stored: 1500,
            offered: 1000
        })
    );
    assert_eq!(view.offer(&note(&t, &[]), &proof, NOW), Ok(Offer::Older));
    // A tree that is not an extension (entries rewritten): no proof can
    // make it pass.
    let forked = tree(2000, 1);
    let fake = merkle::consistency_proof(&forked, 1500, 2000)
        .expect("ok")
        .expect("ok");
    assert!(matches!(
        view.offer(&note(&forked, &[]), &fake, NOW),
        Err(ViewError::BadProof(_))
    ));
    // Another log's checkpoint.
    let other =
        SignerKey::from_seed("other.example/log", KeyType::Ed25519, &[0x11; 32]).expect("key");
    let mut foreign =
        Note::new(&Checkpoint::new("other.example/log", 1, tree(1, 0).root()).to_text())
            .expect("text");
    foreign.add(other.sign(foreign.text(), 0));
    let mut other_view = LogView::new(Policy::single(other.verifier()), ORIGIN);
    assert!(matches!(
        other_view.offer(&foreign.to_bytes(), &[], NOW),
        Err(ViewError::WrongOrigin { .. })
    ));

    // Saved and restored: identical behaviour.
    let saved = view.to_bytes();
    let mut restored = LogView::restore(policy.clone(), ORIGIN, &saved).expect("restore");
    assert_eq!(restored.checkpoint(), view.checkpoint());
    assert_eq!(restored.to_bytes(), saved);
    assert!(matches!(
        restored.offer(&note(&t, &[]), &[], NOW),
        Err(ViewError::Rollback { .. })
    ));
    for i in 0..saved.len() {
        let mut bad = saved.clone();
        bad[i] ^= 0x20;
        if let Ok(v) = LogView::restore(policy.clone(), ORIGIN, &bad) {
            // Only bits the format does not cover could survive a flip: none.
            assert_eq!(v.to_bytes(), bad, "byte {i}");
            panic!("byte {i} flipped and the state still restores");
        }
    }
    assert!(LogView::restore(policy, ORIGIN, &saved[..saved.len() - 1]).is_err());
}

#[test]
fn a_split_view_becomes_evidence_anyone_can_check() {
    let policy = Policy::single(log_key().verifier());
    let mut view = LogView::new(policy.clone(), ORIGIN);
    let honest = tree(8, 0);
    let lying = tree(8, 1);
    view.offer(&note(&honest, &[]), &[], NOW).expect("first");
    let Err(ViewError::Inconsistent(evidence)) = view.offer(&note(&lying, &[]), &[], NOW) else {
        panic!("equivocation not detected");
    };
    // Offline, with only the log's verifier key.
    let checked = Evidence::verify(&evidence, &[log_key().verifier()]).expect("valid evidence");
    // Whichever of the two the view saw first, the same valid evidence.
    let mut other = LogView::new(policy.clone(), ORIGIN);
    other.offer(&note(&lying, &[]), &[], NOW).expect("first");
    let Err(ViewError::Inconsistent(reversed)) = other.offer(&note(&honest, &[]), &[], NOW) else {
        panic!("equivocation not detected");
    };
    assert_eq!(reversed, evidence, "canonical in either order");
    assert_eq!(
        Checkpoint::parse(checked.note_a.text()).expect("cp").size,
        8
    );
    // Canonical: whoever holds the two notes builds the same bytes.
    let again = Evidence::build(
        &log_key().verifier(),
        &Note::parse(&note(&lying, &[])).expect("note"),
        &Note::parse(&note(&honest, &[])).expect("note"),
        if honest.root() < lying.root() {
            lying.root()
        } else {
            honest.root()
        },
        Vec::new(),
    )
    .expect("build");
    assert_eq!(again, evidence);
    // The view refuses the log from now on, even its honest checkpoints.
    assert_eq!(
        view.offer(&note(&tree(9, 0), &[]), &[], NOW),
        Err(ViewError::LogCompromised)
    );
    // Another client told of it stops too.
    let mut other = LogView::new(policy, ORIGIN);
    other.report_evidence(&evidence).expect("valid");
    assert!(other.compromised());

    // Evidence of different sizes: tree b's root at size_a differs.
    let big = tree(12, 1);
    let proof = merkle::consistency_proof(&big, 8, 12)
        .expect("ok")
        .expect("ok");
    let ev = Evidence::build(
        &log_key().verifier(),
        &Note::parse(&note(&honest, &[])).expect("note"),
        &Note::parse(&note(&big, &[])).expect("note"),
        big.root_at(8),
        proof.clone(),
    )
    .expect("sizes 8 and 12");
    Evidence::verify(&ev, &[log_key().verifier()]).expect("valid");

    // Forgeries: consistent trees, a wrong proof, another key, any flipped
    // byte, trailing bytes.
    let consistent = tree(12, 0);
    let proof_ok = merkle::consistency_proof(&consistent, 8, 12)
        .expect("ok")
        .expect("ok");
    assert!(Evidence::build(
        &log_key().verifier(),
        &Note::parse(&note(&honest, &[])).expect("note"),
        &Note::parse(&note(&consistent, &[])).expect("note"),
        consistent.root_at(8),
        proof_ok,
    )
    .is_err());
    let stranger = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[0x99; 32]).expect("key");
    assert!(Evidence::verify(&ev, &[stranger.verifier()]).is_err());
    for i in 0..ev.len() {
        let mut bad = ev.clone();
        bad[i] ^= 1;
        assert!(
            Evidence::verify(&bad, &[log_key().verifier()]).is_err(),
            "byte {i} flipped"
        );
    }
    let mut longer = ev.clone();
    longer.push(0);
    assert!(Evidence::verify(&longer, &[log_key().verifier()]).is_err());
}

fn entry(i: u64, salt: u8) -> Vec<u8> {
    let mut e = i.to_be_bytes().to_vec();
    e.push(salt);
    e
}

/// A receipt for entry `index` of `tree` under a 2-of-3 cosigned note.
fn receipt(tree: &MemoryTree, index: u64) -> tlog_core::Receipt {
    tlog_core::Receipt {
        extra: Some(b"app data".to_vec()),
        index,
        path: merkle::inclusion_proof(tree, index, tree.size())
            .expect("infallible")
            .expect("path"),
        note: note(tree, &[(witness(1), NOW - 5), (witness(3), NOW - 9)]),
    }
}

/// tlog.md §4.5, §8.4: a receipt round-trips, verifies offline under the
/// policy, and fails for another entry, index, path, key or quorum.
#[test]
fn receipts_verify_offline_and_every_alteration_fails() {
    use tlog_core::receipt::{Receipt, ReceiptError};
    let t = tree(1000, 1);
    let policy = policy_2_of_3();
    for index in [0, 1, 255, 256, 511, 998, 999] {
        let r = receipt(&t, index);
        let bytes = r.encode();
        assert_eq!(Receipt::parse(&bytes), Ok(r.clone()));
        let verified = r.verify(&entry(index, 1), &policy, NOW).expect("valid");
        assert_eq!(verified.checkpoint.size, 1000);
        // Another entry, index or path.
        assert!(matches!(
            r.verify(&entry(index, 2), &policy, NOW),
            Err(ReceiptError::NotIncluded { .. })
        ));
        for other in [index ^ 1, index.wrapping_add(1), 1000, u64::MAX] {
            let moved = Receipt {
                index: other,
                ..r.clone()
            };
            assert!(moved.verify(&entry(index, 1), &policy, NOW).is_err());
        }
        for k in 0..r.path.len() {
            let mut bad = r.clone();
            bad.path[k][k % 32] ^= 1;
            assert!(bad.verify(&entry(index, 1), &policy, NOW).is_err());
        }
        let mut short = r.clone();
        short.path.pop();
        assert!(short.verify(&entry(index, 1), &policy, NOW).is_err());
    }
    let r = receipt(&t, 7);
    // Too few cosignatures, or a log key not trusted.
    let lone = Receipt {
        note: note(&t, &[(witness(1), NOW - 5)]),
        ..r.clone()
    };
    assert!(matches!(
        lone.verify(&entry(7, 1), &policy, NOW),
        Err(ReceiptError::Checkpoint(_))
    ));
    let stranger = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[0x99; 32]).expect("key");
    assert!(matches!(
        r.verify(&entry(7, 1), &Policy::single(stranger.verifier()), NOW),
        Err(ReceiptError::Checkpoint(_))
    ));
    // Without `extra` it still round-trips.
    let plain = Receipt { extra: None, ..r };
    assert_eq!(Receipt::parse(&plain.encode()), Ok(plain));
}

/// Malformed receipts are refused with a reason, never a panic.
#[test]
fn malformed_receipts_are_refused() {
    use tlog_core::receipt::Receipt;
    let good = String::from_utf8(receipt(&tree(10, 1), 3).encode()).expect("utf8");
    let bad = [
        good.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
        good.replacen("index 3", "index 03", 1),
        good.replacen("index 3", "index +3", 1),
        good.replacen("index 3", "index 99999999999999999999", 1),
        good.replacen("index 3\n", "", 1),
        good.replacen("extra ", "extra !", 1),
        good.replacen("\n\n", "\n", 1),
        good.replacen("\n\n", "\nnot base64\n\n", 1),
        good.replacen("\n\n", "\nAAAA\n\n", 1),
        good.split("\n\n").next().expect("head").to_string() + "\n\n",
        format!(
            "c2sp.org/tlog-proof@v1\nindex 0\n{}\n{}",
            (0..64)
                .map(|_| tlog_core::note::b64encode(&[0u8; 32]))
                .collect::<Vec<_>>()
                .join("\n"),
            good.split("\n\n").nth(1).expect("note")
        ),
        "x".repeat(200_000),
        String::new(),
    ];
    for text in bad {
        assert!(Receipt::parse(text.as_bytes()).is_err(), "{text:.120}");
    }
}
