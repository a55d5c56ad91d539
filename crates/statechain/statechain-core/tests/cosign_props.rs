//! Blinded co-signing properties (statechain.md §9.2, §9.3, §9.4): random
//! shares, nonces, blinding factors and messages; every parity combination
//! occurs; the signature verifies with `secp256k1` and spends a P2TR output
//! under `bitcoinconsensus`; each deviation (challenge ± 1, a wrong share, a
//! flipped sign, a missing tweak term, another message) breaks it; the audit
//! rejects a wrong opening, commitment or challenge; key-update chains keep
//! the invariant; one nonce answering two challenges leaks the share.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;

use bitcoin::{Amount, OutPoint, TxOut};
use proptest::prelude::*;
use statechain_core::bip340;
use statechain_core::cosign::{
    self, audit, AuditError, CoinKey, CosignError, Opening, OwnerSession,
};
use statechain_core::keyupdate;
use statechain_core::rules::Session;
use statechain_core::scalar::{add_points, ser33, xbytes, Scalar, Sign};
use statechain_core::tx::{self, Funding};

fn scalar() -> impl Strategy<Value = Scalar> {
    any::<[u8; 32]>().prop_filter_map("not a scalar", |b| Scalar::from_bytes(&b).ok())
}

/// Which parts of the final combination to get wrong.
#[derive(Clone, Copy, Debug, Default)]
struct Fault {
    flip_sigma: bool,
    flip_gp: bool,
    flip_gq: bool,
    no_tweak: bool,
}

/// The owner's step 5 written out, with optional faults, for the negative
/// cases (the library's `finish` refuses to produce a bad signature).
#[allow(clippy::too_many_arguments)]
fn combine(
    key: &CoinKey,
    o: &Scalar,
    r_o: &Scalar,
    b: &Scalar,
    r_s: &Scalar,
    s: &Scalar,
    m: &[u8; 32],
    f: Fault,
) -> Option<[u8; 64]> {
    let flip = |x: Sign, yes: bool| if yes { x * Sign::Minus } else { x };
    let (g_p, g_q) = (flip(key.g_p, f.flip_gp), flip(key.g_q, f.flip_gq));
    let r_star = secp256k1::PublicKey::combine_keys(&[
        &r_s.public(),
        &r_o.public(),
        &statechain_core::scalar::mul_point(&key.p, b),
    ])
    .ok()?;
    let sigma = flip(Sign::of(&r_star), f.flip_sigma);
    let e = Scalar::reduce(&statechain_core::hash::tagged_hash(
        statechain_core::hash::TAG_CHALLENGE,
        &[&xbytes(&r_star), &xbytes(&key.q), m],
    ))
    .ok()?;
    let c = b.add(&e.signed(sigma * g_p * g_q)).ok()?;
    let s_s = cosign::server_partial(r_s, s, &c).ok()?;
    let mut s_o = r_o.add(&c.mul(o)).ok()?;
    if !f.no_tweak {
        s_o = s_o.add(&e.mul(key.tweak()).signed(sigma * g_q)).ok()?;
    }
    let sig_s = s_s.add(&s_o).ok()?.signed(sigma);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&xbytes(&r_star));
    sig[32..].copy_from_slice(&sig_s.to_bytes());
    Some(sig)
}

static PARITIES: Mutex<BTreeMap<(bool, bool, bool), u32>> = Mutex::new(BTreeMap::new());

/// One random case of the blinded co-signature.
#[allow(clippy::too_many_arguments)]
fn cosign_case(
    o: Scalar,
    s: Scalar,
    r_s: Scalar,
    r_o: Scalar,
    b: Scalar,
    value: u64,
    vout: u32,
    salt: u8,
    locktime: u32,
    payee: Scalar,
) -> Result<(), TestCaseError> {
    let key = match CoinKey::from_shares(&s.public(), &o.public()) {
        Ok(k) => k,
        Err(CosignError::TweakOverflow) => return Ok(()),
        Err(e) => return Err(TestCaseError::fail(e.to_string())),
    };
    // The message is a real backup's sighash, so the result is a spend.
    let tx0 = support::tx0(key.script_pubkey(), value, vout, salt);
    let funding = Funding {
        outpoint: OutPoint {
            txid: tx0.compute_txid(),
            vout,
        },
        output: tx0.output[vout as usize].clone(),
    };
    let backup = tx::backup_tx(&funding, locktime, &payee.public()).expect("template");
    let m =
        tx::key_spend_sighash(&backup, 0, std::slice::from_ref(&funding.output)).expect("sighash");

    let owner = OwnerSession::new(r_o.clone(), b.clone(), m);
    let ch = owner.challenge(&key, &r_s.public()).expect("challenge");
    let s_s = cosign::server_partial(&r_s, &s, &ch.c).expect("partial");
    let sig = owner
        .finish(&key, &o, &s.public(), &r_s.public(), &ch, &s_s)
        .expect("finish");
    prop_assert!(bip340::verify(&key.output_key(), &m, &sig));
    let signed = tx::with_signature(backup.clone(), 0, &sig);
    prop_assert_eq!(
        tx::check_backup(&signed, &funding, &key, locktime, Some(&payee.public())),
        Ok(m)
    );
    prop_assert_eq!(
        support::verify_spend(std::slice::from_ref(&funding.output), &signed, 0),
        Ok(())
    );
    *PARITIES
        .lock()
        .expect("lock")
        .entry((key.g_p.is_minus(), key.g_q.is_minus(), ch.sigma.is_minus()))
        .or_default() += 1;

    // The written-out combination agrees with the library when faultless …
    prop_assert_eq!(
        combine(&key, &o, &r_o, &b, &r_s, &s, &m, Fault::default()),
        Some(sig)
    );
    // … and every single fault breaks the signature.
    for f in [
        Fault {
            flip_sigma: true,
            ..Fault::default()
        },
        Fault {
            flip_gp: true,
            ..Fault::default()
        },
        Fault {
            flip_gq: true,
            ..Fault::default()
        },
        Fault {
            no_tweak: true,
            ..Fault::default()
        },
    ] {
        if let Some(bad) = combine(&key, &o, &r_o, &b, &r_s, &s, &m, f) {
            prop_assert!(
                !bip340::verify(&key.output_key(), &m, &bad),
                "{:?} still verifies",
                f
            );
            let tampered = tx::with_signature(backup.clone(), 0, &bad);
            prop_assert!(support::verify_spend(
                std::slice::from_ref(&funding.output),
                &tampered,
                0
            )
            .is_err());
        }
    }
    // A wrong share on either side.
    let wrong = s.add(&Scalar::one()).expect("s+1");
    prop_assert!(
        combine(&key, &wrong, &r_o, &b, &r_s, &s, &m, Fault::default())
            .is_none_or(|bad| !bip340::verify(&key.output_key(), &m, &bad))
    );
    let s_s_wrong = cosign::server_partial(&r_s, &wrong, &ch.c).expect("partial");
    prop_assert_eq!(
        owner.finish(&key, &o, &s.public(), &r_s.public(), &ch, &s_s_wrong),
        Err(CosignError::BadPartial)
    );
    // The SE answering c ± 1.
    for delta in [Scalar::one(), Scalar::one().neg()] {
        let c2 = ch.c.add(&delta).expect("c±1");
        let s_s2 = cosign::server_partial(&r_s, &s, &c2).expect("partial");
        prop_assert_eq!(
            owner.finish(&key, &o, &s.public(), &r_s.public(), &ch, &s_s2),
            Err(CosignError::BadPartial)
        );
        // The owner who ignored the check would publish s + σ·(s_s' − s_s).
        let s_final = Scalar::from_slice(&sig[32..]).expect("s");
        let shifted = s_s2
            .sub(&s_s)
            .and_then(|d| s_final.add(&d.signed(ch.sigma)));
        let mut forced = sig;
        forced[32..].copy_from_slice(&shifted.map(|v| v.to_bytes()).unwrap_or([0; 32]));
        prop_assert!(!bip340::verify(&key.output_key(), &m, &forced));
    }
    // Another message.
    let mut m2 = m;
    m2[0] ^= 1;
    prop_assert!(!bip340::verify(&key.output_key(), &m2, &sig));

    // The audit: the honest opening passes; each wrong part is named.
    let logged = Session {
        seq: 1,
        n: 1,
        server_nonce: ser33(&r_s.public()),
        commitment: owner.commitment(),
        challenge: ch.c.clone(),
    };
    let opening = Opening {
        owner_nonce: r_o.public(),
        blinding: b.clone(),
    };
    prop_assert_eq!(audit(&key, &logged, &opening, &m, &sig), Ok(()));
    let wrong_b = Opening {
        owner_nonce: r_o.public(),
        blinding: b.add(&Scalar::one()).expect("b+1"),
    };
    prop_assert_eq!(
        audit(&key, &logged, &wrong_b, &m, &sig),
        Err(AuditError::Commitment)
    );
    let wrong_r = Opening {
        owner_nonce: payee.public(),
        blinding: b.clone(),
    };
    prop_assert_eq!(
        audit(&key, &logged, &wrong_r, &m, &sig),
        Err(AuditError::Commitment)
    );
    let mut bad_com = logged.clone();
    bad_com.commitment[5] ^= 0x40;
    prop_assert_eq!(
        audit(&key, &bad_com, &opening, &m, &sig),
        Err(AuditError::Commitment)
    );
    let mut bad_c = logged.clone();
    bad_c.challenge = ch.c.add(&Scalar::one()).expect("c+1");
    prop_assert_eq!(
        audit(&key, &bad_c, &opening, &m, &sig),
        Err(AuditError::Challenge)
    );
    let mut other_sig = sig;
    other_sig[..32].copy_from_slice(&xbytes(&payee.public()));
    prop_assert_eq!(
        audit(&key, &logged, &opening, &m, &other_sig),
        Err(AuditError::Nonce)
    );
    Ok(())
}

/// 512 random cases; all eight `(g_P, g_Q, σ)` combinations must occur.
#[test]
fn blinded_cosignature_spends_under_consensus() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    });
    let strategy = (
        (scalar(), scalar(), scalar(), scalar(), scalar()),
        (
            10_000u64..2_100_000_000_000_000,
            0u32..3,
            any::<u8>(),
            1u32..499_999_999,
            scalar(),
        ),
    );
    runner
        .run(
            &strategy,
            |((o, s, r_s, r_o, b), (value, vout, salt, locktime, payee))| {
                cosign_case(o, s, r_s, r_o, b, value, vout, salt, locktime, payee)
            },
        )
        .expect("every case holds");
    let counts = PARITIES.lock().expect("lock").clone();
    assert_eq!(
        counts.len(),
        8,
        "all (g_P, g_Q, σ) combinations occurred: {counts:?}"
    );
    assert!(counts.values().all(|n| *n >= 10), "{counts:?}");
}

proptest! {
    #[test]
    fn key_update_chains_keep_the_coin_key(
        o1 in scalar(), s1 in scalar(),
        steps in proptest::collection::vec((scalar(), scalar()), 1..50),
    ) {
        let p = add_points(&s1.public(), &o1.public()).expect("P");
        let total = o1.add(&s1).expect("o+s");
        let (mut o, mut s) = (o1, s1);
        for (x1, o_next) in steps {
            let t1 = keyupdate::sender_t1(&o, &x1).expect("t1");
            prop_assert!(keyupdate::t1_is_valid(&t1, &o.public(), &x1.public()));
            let (t2, claimed) = keyupdate::receiver_update(&t1, &o_next, &p).expect("update");
            // A wrong t2 is a key mismatch and changes nothing.
            let bad_t2 = t2.add(&Scalar::one()).expect("t2+1");
            prop_assert!(keyupdate::server_update(&s, &bad_t2, &x1, &claimed).is_err());
            let s_next = keyupdate::server_update(&s, &t2, &x1, &claimed).expect("update");
            prop_assert_eq!(s_next.add(&o_next).expect("sum"), total.clone());
            prop_assert_eq!(add_points(&s_next.public(), &o_next.public()).expect("P"), p);
            // The old owner's share no longer completes the key with the new SE share.
            prop_assert!(s_next.add(&o).map(|v| v != total).unwrap_or(true));
            o = o_next;
            s = s_next;
        }
    }
}

/// §9.4: two partial signatures under one nonce with different challenges
/// give away the share, which then signs alone.
#[test]
fn nonce_reuse_leaks_the_share() {
    let s = Scalar::from_bytes(&[0x23; 32]).expect("s");
    let o = Scalar::from_bytes(&[0x11; 32]).expect("o");
    let r_s = Scalar::from_bytes(&[0x35; 32]).expect("r_s");
    let key = CoinKey::from_shares(&s.public(), &o.public()).expect("key");
    let c1 = Scalar::from_bytes(&[0x42; 32]).expect("c1");
    let c2 = Scalar::from_bytes(&[0x43; 32]).expect("c2");
    let s_s1 = cosign::server_partial(&r_s, &s, &c1).expect("1");
    let s_s2 = cosign::server_partial(&r_s, &s, &c2).expect("2");
    let recovered =
        cosign::recover_share_from_nonce_reuse(&s_s1, &c1, &s_s2, &c2).expect("recover");
    assert_eq!(recovered, s);
    // With the share, the previous owner (who kept o) spends alone: sign the
    // coin's key-path output with the full tweaked secret.
    let full = tx::tweaked_secret(&key, &recovered.add(&o).expect("sum")).expect("tweak");
    let tx0 = support::tx0(key.script_pubkey(), 50_000, 0, 9);
    let funding = Funding {
        outpoint: OutPoint {
            txid: tx0.compute_txid(),
            vout: 0,
        },
        output: tx0.output[0].clone(),
    };
    let mut theft = tx::withdrawal_tx(
        &funding,
        TxOut {
            value: Amount::ZERO,
            script_pubkey: key.script_pubkey(),
        }
        .script_pubkey,
        1,
        100,
    )
    .expect("tx");
    let m =
        tx::key_spend_sighash(&theft, 0, std::slice::from_ref(&funding.output)).expect("sighash");
    theft = tx::with_signature(theft, 0, &bip340::sign(&full, &m, &[0; 32]));
    assert_eq!(
        support::verify_spend(std::slice::from_ref(&funding.output), &theft, 0),
        Ok(())
    );
}
