//! The whole protocol in memory (statechain.md §4.7, §9.5–§9.6 at the core
//! level): an SE driven through `se`, owners through `owner`/`cosign`, a
//! member applying every leaf with `rules`, receivers with `verify`; every
//! backup and the withdrawal checked by `bitcoinconsensus` against `Tx0`'s
//! output. Then the attacks of §9.6 that the core decides, each asserting
//! the refusal it must produce.

mod support;
mod world;

use world::*;

use bitcoin::{ScriptBuf, Transaction};
use secp256k1::PublicKey;
use statechain_core::address::{Address, Net};
use statechain_core::auth::{self, Op};
use statechain_core::bip340;
use statechain_core::cosign::CoinKey;
use statechain_core::leaf::Leaf;
use statechain_core::message::{self, TransferMessage};
use statechain_core::owner::OwnerCoin;
use statechain_core::rules::{CoinChain, Ledger, RuleError};
use statechain_core::scalar::{ser33, Scalar};
use statechain_core::se::{Admission, SeError};
use statechain_core::tx::{self, TemplateError};
use statechain_core::verify::{self, ChainFacts, Receiver, Refusal};
use statechain_core::LeafHash;

fn check_all_backups(coin: &OwnerCoin) {
    let funding = coin.funding.as_ref().expect("funding");
    for (i, b) in coin.backups.iter().enumerate() {
        assert_eq!(
            b.tx.lock_time.to_consensus_u32(),
            coin.h0 - i as u32 * coin.interval,
            "backup {} locktime",
            i + 1
        );
        support::verify_spend(std::slice::from_ref(&funding.output), &b.tx, 0)
            .expect("backup spends under consensus");
    }
}

/// Deposit → 12 transfers around three wallets → withdraw.
#[test]
fn deposit_transfers_withdraw() {
    let mut world = World::new(1);
    let tip = 500;
    let wallets = [
        Wallet::new(&mut world.rng),
        Wallet::new(&mut world.rng),
        Wallet::new(&mut world.rng),
    ];
    let mut coin = world.deposit(&wallets[0], DEPOSIT_TIP);
    let b1 = coin.next_backup(&wallets[0].o.public()).expect("backup 1");
    world.cosign(&mut coin, b1);
    check_all_backups(&coin);
    let p = coin.key.p;
    for t in 0..12usize {
        let (from, to) = (t % 3, (t + 1) % 3);
        assert_eq!(coin.owner_share, wallets[from].o);
        let enc = world.send(&mut coin, &wallets[to].address());
        coin = world.receive(&wallets[to], &enc, tip + t as u32);
        assert_eq!(coin.key.p, p, "P never changes");
        check_all_backups(&coin);
        let last = coin.backups.last().expect("backup");
        assert_eq!(
            last.tx.output[0].script_pubkey,
            tx::owner_script(&wallets[to].o.public()).expect("script")
        );
    }
    assert_eq!(coin.count(), 13);
    assert_eq!(world.se().chain.transfers, 12);
    // The SE's share plus the current owner's is the same secret as at deposit.
    let share = world.se().share.clone().expect("share");
    assert_eq!(
        statechain_core::scalar::add_points(&share.public(), &coin.owner_share.public())
            .expect("P"),
        p
    );

    // Withdraw: TxW co-signed like a backup, then complete.
    let funding = coin.funding.clone().expect("funding");
    let txw = tx::withdrawal_tx(
        &funding,
        ScriptBuf::from_bytes(vec![
            0x00, 0x14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        ]),
        2,
        tip + 20,
    )
    .expect("txw");
    let m = coin.sighash(&txw).expect("sighash");
    let sig = world.cosign(&mut coin, txw.clone());
    coin.backups.pop(); // the withdrawal is not a backup
    let signed = tx::with_signature(txw, 0, &sig);
    assert!(bip340::verify(&coin.key.output_key(), &m, &sig));
    support::verify_spend(std::slice::from_ref(&funding.output), &signed, 0)
        .expect("withdrawal spends");
    assert!(
        signed.output[0].value.to_sat() < VALUE && signed.output[0].value.to_sat() > VALUE - 1000
    );
    let count = world.se().chain.count;
    let auth = authorise(
        &coin.auth_secret,
        world.digest(Op::WithdrawComplete, &[&count.to_be_bytes()]),
    );
    let step = world
        .se()
        .withdraw_complete(&SE_ID, count, &auth)
        .expect("complete");
    world.commit(step);
    assert!(world.se().chain.closed && world.se().share.is_none());
    // Member and SE agree on the public state.
    assert_eq!(world.member.coin(&world.id()), Some(&world.se().chain));
    assert_eq!(world.se().chain.count, 14);

    // A closed coin refuses everything.
    let head = world.se().chain.head;
    let auth = authorise(&coin.auth_secret, world.digest(Op::SignFirst, &[&[9; 32]]));
    assert_eq!(
        world.se().admit(Op::SignFirst, &head, &auth),
        Err(SeError::Closed)
    );

    // The CPFP child of the newest backup also passes consensus.
    let last = coin.backups.last().expect("backup").tx.clone();
    let child = tx::cpfp_child(
        &last,
        &coin.owner_share,
        ScriptBuf::from_bytes(vec![0x51, 0x20].into_iter().chain([7u8; 32]).collect()),
        5,
        &[1; 32],
    )
    .expect("child");
    let prevouts = [last.output[0].clone(), last.output[1].clone()];
    support::verify_spend(&prevouts, &child, 0).expect("child key path");
    support::verify_spend(&prevouts, &child, 1).expect("child anchor");
}

/// A coin ready to be sent to `wallets[1]`: the sealed message and the
/// decrypted one, for tampering.
fn ready_to_receive(seed: u64) -> (World, Vec<Wallet>, OwnerCoin, TransferMessage) {
    let mut world = World::new(seed);
    let wallets = vec![
        Wallet::new(&mut world.rng),
        Wallet::new(&mut world.rng),
        Wallet::new(&mut world.rng),
    ];
    let mut coin = world.deposit(&wallets[0], DEPOSIT_TIP);
    let b1 = coin.next_backup(&wallets[0].o.public()).expect("backup 1");
    world.cosign(&mut coin, b1);
    let enc = world.send(&mut coin, &wallets[1].address());
    let plain = message::open(&enc, &wallets[1].a, &SE_ID, &world.id()).expect("decrypt");
    let msg = TransferMessage::from_json(&plain).expect("parse");
    (world, wallets, coin, msg)
}

/// Re-signs backup `i` (0-based) after tampering, through a fresh session,
/// so only the template check can catch it (the SE signs blindly).
fn tamper_backup(
    world: &mut World,
    coin: &mut OwnerCoin,
    msg: &mut TransferMessage,
    i: usize,
    f: impl FnOnce(&mut Transaction),
) {
    let mut tx = msg.backups[i].tx.clone();
    tx.input[0].witness = bitcoin::Witness::new();
    f(&mut tx);
    // A fresh session makes the signature valid for the tampered bytes.
    let saved = coin.backups.clone();
    world.cosign(coin, tx);
    let signed = coin.backups.pop().expect("just pushed");
    coin.backups = saved;
    msg.backups[i] = signed;
}

/// A change to one backup's bytes.
type Tamper = Box<dyn FnOnce(&mut Transaction)>;

#[test]
fn doctored_messages_are_refused() {
    let tip = 500;
    // The honest message verifies.
    let (world, wallets, _, msg) = ready_to_receive(2);
    world
        .verify(&wallets[1], &msg, tip)
        .expect("honest message verifies");

    // Missing newest backup.
    let mut m = msg.clone();
    m.backups.pop();
    assert_eq!(
        world.verify(&wallets[1], &m, tip).err(),
        Some(Refusal::BackupCount {
            expected: 2,
            got: 1
        })
    );
    // Wrong receiver (a replayed message read by someone else).
    assert_eq!(
        world.verify(&wallets[2], &msg, tip).err(),
        Some(Refusal::NotPending)
    );
    // Wrong t1.
    let mut m = msg.clone();
    m.t1 = m.t1.add(&Scalar::one()).expect("t1+1");
    assert_eq!(world.verify(&wallets[1], &m, tip).err(), Some(Refusal::T1));
    // Another coin id.
    let mut m = msg.clone();
    m.statechain_id[0] ^= 1;
    assert_eq!(
        world.verify(&wallets[1], &m, tip).err(),
        Some(Refusal::WrongCoin)
    );
    // Chain facts.
    let v = |facts: ChainFacts| {
        verify::verify_transfer(
            &SE_ID,
            &world.id(),
            &msg,
            &world.chain_from_log(),
            &Receiver {
                owner_share: &wallets[1].o,
                auth_key: bip340::xonly_of(&wallets[1].a),
            },
            &facts,
            3,
            &support::Consensus,
        )
        .err()
    };
    let h_k = msg.backups[1].tx.lock_time.to_consensus_u32();
    assert!(matches!(
        v(ChainFacts {
            tip_height: h_k - 10,
            tx0_confirmations: Some(6),
            tx0_unspent: true
        }),
        Some(Refusal::TooLate { .. })
    ));
    assert_eq!(
        v(ChainFacts {
            tip_height: tip,
            tx0_confirmations: Some(1),
            tx0_unspent: true
        }),
        Some(Refusal::Unconfirmed { have: 1, need: 3 })
    );
    assert_eq!(
        v(ChainFacts {
            tip_height: tip,
            tx0_confirmations: None,
            tx0_unspent: true
        }),
        Some(Refusal::Unconfirmed { have: 0, need: 3 })
    );
    assert_eq!(
        v(ChainFacts {
            tip_height: tip,
            tx0_confirmations: Some(6),
            tx0_unspent: false
        }),
        Some(Refusal::Spent)
    );
    // h0 later than confirmation height + h_init.
    assert_eq!(
        v(ChainFacts {
            tip_height: tip,
            tx0_confirmations: Some(tip - 10),
            tx0_unspent: true
        }),
        Some(Refusal::DepositSchedule)
    );

    // Template tampering, each re-signed by the SE (blind) so only the
    // template can catch it.
    let cases: Vec<(usize, Tamper, Refusal)> = vec![
        (
            1,
            Box::new(|t: &mut Transaction| {
                t.lock_time =
                    bitcoin::absolute::LockTime::from_consensus(t.lock_time.to_consensus_u32() + 1)
            }),
            Refusal::Backup {
                index: 2,
                reason: TemplateError::LockTime {
                    expected: 2480,
                    got: 2481,
                },
            },
        ),
        (
            1,
            Box::new(|t: &mut Transaction| {
                t.output[0].value = bitcoin::Amount::from_sat(VALUE - 1)
            }),
            Refusal::Backup {
                index: 2,
                reason: TemplateError::Amount {
                    expected: VALUE,
                    got: VALUE - 1,
                },
            },
        ),
        (
            1,
            Box::new(|t: &mut Transaction| t.output.push(t.output[1].clone())),
            Refusal::Backup {
                index: 2,
                reason: TemplateError::Outputs,
            },
        ),
        (
            1,
            Box::new(|t: &mut Transaction| t.version = bitcoin::transaction::Version::TWO),
            Refusal::Backup {
                index: 2,
                reason: TemplateError::Version {
                    expected: 3,
                    got: 2,
                },
            },
        ),
        (
            1,
            Box::new(|t: &mut Transaction| t.input[0].sequence = bitcoin::Sequence::MAX),
            Refusal::Backup {
                index: 2,
                reason: TemplateError::Sequence(0xffff_ffff),
            },
        ),
        (
            1,
            Box::new(|t: &mut Transaction| {
                t.output[0].script_pubkey = tx::owner_script(&PublicKey::from_secret_key(
                    secp256k1::SECP256K1,
                    &secp256k1::SecretKey::from_slice(&[3; 32]).expect("k"),
                ))
                .expect("s")
            }),
            Refusal::Payee,
        ),
        (
            0,
            Box::new(|t: &mut Transaction| t.output[1].value = bitcoin::Amount::from_sat(1)),
            Refusal::Backup {
                index: 1,
                reason: TemplateError::Anchor,
            },
        ),
    ];
    for (n, (i, f, expected)) in cases.into_iter().enumerate() {
        let (mut world, wallets, mut coin, mut msg) = ready_to_receive(100 + n as u64);
        tamper_backup(&mut world, &mut coin, &mut msg, i, f);
        // The re-signing session is the log's newest `g`; the receiver's
        // view is the log without it, with that session standing in for the
        // original one at position i (as if the SE had signed the tampered
        // bytes in the first place).
        let leaves: Vec<Leaf> = world
            .log
            .iter()
            .map(|b| Leaf::decode(b).expect("leaf"))
            .collect();
        let mut chain =
            CoinChain::from_entries(&leaves[..leaves.len() - 1], &SE_ID).expect("chain");
        let tampered_session = CoinChain::from_entries(&leaves, &SE_ID)
            .expect("chain")
            .sessions
            .pop()
            .expect("session");
        chain.sessions[i] = tampered_session;
        let got = verify::verify_transfer(
            &SE_ID,
            &world.id(),
            &msg,
            &chain,
            &Receiver {
                owner_share: &wallets[1].o,
                auth_key: bip340::xonly_of(&wallets[1].a),
            },
            &world.facts(500),
            3,
            &support::Consensus,
        )
        .err();
        assert_eq!(got, Some(expected), "case {n}");
    }

    // A signature that does not verify (bit flip in s): consensus and
    // BIP340 both refuse.
    let (world, wallets, _, mut msg) = ready_to_receive(3);
    let mut w: Vec<Vec<u8>> = msg.backups[0].tx.input[0].witness.to_vec();
    w[0][40] ^= 1;
    msg.backups[0].tx.input[0].witness = bitcoin::Witness::from_slice(&w);
    assert_eq!(
        world.verify(&wallets[1], &msg, tip).err(),
        Some(Refusal::Backup {
            index: 1,
            reason: TemplateError::Signature
        })
    );

    // A wrong opening: the audit names the commitment.
    let (world, wallets, _, mut msg) = ready_to_receive(4);
    msg.backups[0].opening.blinding = msg.backups[0]
        .opening
        .blinding
        .add(&Scalar::one())
        .expect("b+1");
    assert!(matches!(
        world.verify(&wallets[1], &msg, tip).err(),
        Some(Refusal::Audit { index: 1, .. })
    ));
}

/// §2.2: a depositor who chose `O_1 = X − S_1` controls `P = X` alone, but
/// cannot sign the transfer statement under `x(O_1)`.
#[test]
fn rogue_key_without_proof_of_possession_is_refused() {
    let (world, wallets, _, msg) = ready_to_receive(5);
    let x = Scalar::from_bytes(&[0x77; 32]).expect("x");
    let s1 = match Leaf::decode(&world.log[0]).expect("s").body {
        statechain_core::leaf::Body::Open(o) => o.server_key,
        _ => unreachable!("first leaf is s"),
    };
    let rogue_o = statechain_core::scalar::sub_points(&x.public(), &s1).expect("rogue");
    let mut m = msg.clone();
    m.sender_pubkey = rogue_o;
    // Funding must pay P = S + O_rogue = X for step 4 to pass.
    let key = CoinKey::new(x.public()).expect("key");
    m.tx0 = support::tx0(key.script_pubkey(), VALUE, 1, 3);
    // The best the attacker can do: sign the statement with x.
    let funding_outpoint = bitcoin::OutPoint {
        txid: m.tx0.compute_txid(),
        vout: 1,
    };
    let to = wallets[1].address();
    let x1_pub = world.se().chain.pending.as_ref().expect("pending").x1_pub;
    let stmt = message::transfer_statement(
        &SE_ID,
        &world.id(),
        &funding_outpoint,
        &to.owner,
        &to.auth,
        2,
        &x1_pub,
    );
    m.transfer_sig = bip340::sign(&x, &stmt, &[0; 32]);
    assert_eq!(
        world.verify(&wallets[1], &m, 500).err(),
        Some(Refusal::TransferSig)
    );
}

/// §9.6: the sender transfers to B, then to C. B's update is superseded; C
/// accepts, and C's newest backup is `c` blocks below B's.
#[test]
fn double_transfer_supersedes_the_first_receiver() {
    let (mut world, wallets, mut coin, msg_b) = ready_to_receive(6);
    let enc_c = world.send(&mut coin, &wallets[2].address());
    // B's message no longer matches the log (pending is C, count moved).
    assert!(matches!(
        world.verify(&wallets[1], &msg_b, 500).err(),
        Some(Refusal::NotPending)
    ));
    // B forcing the key update anyway.
    let v_head = world.se().chain.head;
    let b = &wallets[1];
    let auth = authorise(
        &b.a,
        world.digest(
            Op::TransferReceiver,
            &[
                &bip340::xonly_of(&b.a).serialize(),
                &ser33(&b.o.public()),
                &2u32.to_be_bytes(),
            ],
        ),
    );
    assert_eq!(
        world.se().admit(Op::TransferReceiver, &v_head, &auth),
        Err(SeError::TransferSuperseded)
    );
    let c_coin = world.receive(&wallets[2], &enc_c, 500);
    let lt = |c: &OwnerCoin| c.backups.last().expect("b").tx.lock_time.to_consensus_u32();
    let b_last = msg_b
        .backups
        .last()
        .expect("b")
        .tx
        .lock_time
        .to_consensus_u32();
    assert_eq!(lt(&c_coin), b_last - world.policy.interval);
}

/// §2.4 and §3.4–§3.5 at the SE: one open session per coin, replays answer
/// the same, a consumed nonce never answers another challenge, commitments
/// are single-use, stale heads are refused, `max_signatures` holds.
#[test]
fn session_rules_at_the_se() {
    let (mut world, wallets, mut coin, _) = ready_to_receive(7);
    let w0 = &wallets[0];
    let head = world.se().chain.head;
    let com1 = [1u8; 32];
    let a1 = authorise(&w0.a, world.digest(Op::SignFirst, &[&com1]));
    let rand = world.rng.bytes();
    let step = world
        .se()
        .sign_first(&SE_ID, &world.policy, com1, &a1, &rand, world.now)
        .expect("first");
    let r1 = world.commit(step);
    // The same commitment again: the same nonce (even with other randomness).
    let again = world
        .se()
        .sign_first(&SE_ID, &world.policy, com1, &a1, &[9; 32], world.now)
        .expect("same")
        .reply;
    assert_eq!(again, r1);
    // Another commitment while pending.
    let a2 = authorise(&w0.a, world.digest(Op::SignFirst, &[&[2u8; 32]]));
    assert_eq!(
        world
            .se()
            .sign_first(&SE_ID, &world.policy, [2; 32], &a2, &[8; 32], world.now)
            .err(),
        Some(SeError::SessionPending)
    );
    // sign/second with a wrong commitment: no session.
    let c = Scalar::from_bytes(&[0x42; 32]).expect("c");
    let a_bad = authorise(
        &w0.a,
        world.digest(Op::SignSecond, &[&ser33(&r1), &[3; 32], &c.to_bytes()]),
    );
    assert_eq!(
        world
            .se()
            .sign_second(&SE_ID, &r1, [3; 32], &c, &a_bad)
            .err(),
        Some(SeError::NoSession)
    );
    // Answer c; then the same request is a replay; another c is refused.
    let a_c = authorise(
        &w0.a,
        world.digest(Op::SignSecond, &[&ser33(&r1), &com1, &c.to_bytes()]),
    );
    let step = world
        .se()
        .sign_second(&SE_ID, &r1, com1, &c, &a_c)
        .expect("second");
    let (partial, count) = world.commit(step);
    assert_eq!(
        world.se().admit(Op::SignSecond, &head, &a_c),
        Ok(Admission::Replay)
    );
    assert_eq!(count, 3);
    let _ = partial;
    let c2 = Scalar::from_bytes(&[0x43; 32]).expect("c2");
    let head2 = world.se().chain.head;
    let a_c2 = authorise(
        &w0.a,
        auth::digest(
            &SE_ID,
            Op::SignSecond,
            &world.id(),
            &head2,
            &[&ser33(&r1), &com1, &c2.to_bytes()],
        ),
    );
    assert_eq!(
        world.se().admit(Op::SignSecond, &head2, &a_c2),
        Ok(Admission::Apply)
    );
    assert_eq!(
        world.se().sign_second(&SE_ID, &r1, com1, &c2, &a_c2).err(),
        Some(SeError::NonceConsumed)
    );
    // The old head is stale for a new request.
    let stale = authorise(
        &w0.a,
        auth::digest(&SE_ID, Op::SignFirst, &world.id(), &head, &[&[4u8; 32]]),
    );
    assert!(matches!(
        world.se().admit(Op::SignFirst, &head, &stale),
        Err(SeError::StaleState { .. })
    ));
    // Commitment reuse.
    let a_re = authorise(&w0.a, world.digest(Op::SignFirst, &[&com1]));
    assert_eq!(
        world
            .se()
            .sign_first(&SE_ID, &world.policy, com1, &a_re, &[5; 32], world.now)
            .err(),
        Some(SeError::CommitmentReused)
    );
    // A signature by another key is bad_auth.
    let other = authorise(&wallets[2].a, world.digest(Op::SignFirst, &[&[6u8; 32]]));
    let head3 = world.se().chain.head;
    assert_eq!(
        world.se().admit(Op::SignFirst, &head3, &other),
        Err(SeError::BadAuth)
    );
    // Expiry frees the coin; max_signatures stops it.
    let a7 = authorise(&w0.a, world.digest(Op::SignFirst, &[&[7u8; 32]]));
    let step = world
        .se()
        .sign_first(&SE_ID, &world.policy, [7; 32], &a7, &[1; 32], world.now)
        .expect("first");
    world.commit(step);
    let a8 = authorise(&w0.a, world.digest(Op::SignFirst, &[&[8u8; 32]]));
    assert_eq!(
        world
            .se()
            .sign_first(
                &SE_ID,
                &world.policy,
                [8; 32],
                &a8,
                &[1; 32],
                world.now + 10
            )
            .err(),
        Some(SeError::SessionPending)
    );
    let later = world.now + world.policy.session_ttl;
    assert!(world
        .se()
        .sign_first(&SE_ID, &world.policy, [8; 32], &a8, &[1; 32], later)
        .is_ok());
    let mut tight = world.policy.clone();
    tight.max_signatures = world.se().chain.count;
    assert_eq!(
        world
            .se()
            .sign_first(&SE_ID, &tight, [8; 32], &a8, &[1; 32], later)
            .err(),
        Some(SeError::CoinExhausted)
    );
    let _ = &mut coin;
}

/// §5.2 as a member applies it: forged or misplaced entries are refused.
#[test]
fn members_refuse_invalid_entries() {
    let (world, wallets, _, _) = ready_to_receive(8);
    let leaves: Vec<Leaf> = world
        .log
        .iter()
        .map(|b| Leaf::decode(b).expect("leaf"))
        .collect();
    let id = world.id();
    let chain_before = |n: usize| CoinChain::from_entries(&leaves[..n], &SE_ID).expect("prefix");
    let last = leaves.len() - 1; // the newest g entry
    let mut forged = leaves[last].clone();
    if let statechain_core::leaf::Body::Signature(g) = &mut forged.body {
        g.auth_sig = bip340::sign(&wallets[2].a, &forged_digest(&leaves[last]), &[0; 32]);
    }
    assert_eq!(
        chain_before(last).apply(&forged, &SE_ID),
        Err(RuleError::BadAuth)
    );
    let mut gap = leaves[last].clone();
    gap.seq += 1;
    assert!(matches!(
        chain_before(last).apply(&gap, &SE_ID),
        Err(RuleError::SeqGap { .. })
    ));
    let mut fork = leaves[last].clone();
    fork.prev = [0x99; 32];
    assert_eq!(
        chain_before(last).apply(&fork, &SE_ID),
        Err(RuleError::Fork)
    );
    // A repeated R_s (re-signed correctly by the owner so only the rule catches it).
    let first_g = leaves
        .iter()
        .position(|l| matches!(l.body, statechain_core::leaf::Body::Signature(_)))
        .expect("g");
    let mut repeat = leaves[last].clone();
    if let (statechain_core::leaf::Body::Signature(g), statechain_core::leaf::Body::Signature(g0)) =
        (&mut repeat.body, &leaves[first_g].body)
    {
        g.server_nonce = g0.server_nonce;
    }
    let resign = |l: &mut Leaf, a: &Scalar| {
        let d = l.auth_digest(&SE_ID);
        if let statechain_core::leaf::Body::Signature(g) = &mut l.body {
            g.auth_sig = bip340::sign(a, &d, &[0; 32]);
        }
    };
    resign(&mut repeat, &wallets[0].a);
    assert_eq!(
        chain_before(last).apply(&repeat, &SE_ID),
        Err(RuleError::NonceReused)
    );
    let mut miscount = leaves[last].clone();
    if let statechain_core::leaf::Body::Signature(g) = &mut miscount.body {
        g.n += 1;
    }
    resign(&mut miscount, &wallets[0].a);
    assert!(matches!(
        chain_before(last).apply(&miscount, &SE_ID),
        Err(RuleError::BadCount { .. })
    ));
    // A second open of the same id.
    let mut ledger = Ledger::new();
    ledger.apply(&leaves[0], &SE_ID).expect("open");
    assert!(matches!(
        ledger.apply(&leaves[0], &SE_ID),
        Err(RuleError::DuplicateOpen(_))
    ));
    assert_eq!(ledger.coin(&id).map(|c| c.count), Some(0));
}

fn forged_digest(l: &Leaf) -> LeafHash {
    l.auth_digest(&SE_ID)
}

#[test]
fn addresses_round_trip_and_refuse_other_networks() {
    let mut rng = Rng(9);
    let w = Wallet::new(&mut rng);
    let s = w.address().encode(Net::Test);
    assert!(s.starts_with("tlks1"));
    assert_eq!(Address::decode(&s, Net::Test), Ok(w.address()));
    assert!(Address::decode(&s, Net::Bitcoin).is_err());
    let mut bad = s.clone().into_bytes();
    let n = bad.len() - 3;
    bad[n] = if bad[n] == b'q' { b'p' } else { b'q' };
    assert!(Address::decode(std::str::from_utf8(&bad).expect("utf8"), Net::Test).is_err());
    // bech32 (not m) of the same payload is refused.
    let hrp = bech32::Hrp::parse("tlks").expect("hrp");
    let mut data = vec![0u8];
    data.extend_from_slice(&ser33(&w.o.public()));
    data.extend_from_slice(&bip340::xonly_of(&w.a).serialize());
    let legacy = bech32::encode::<bech32::Bech32>(hrp, &data).expect("encode");
    assert!(Address::decode(&legacy, Net::Test).is_err());
}

#[test]
fn transfer_messages_are_bound_to_receiver_coin_and_se() {
    let (world, wallets, coin, msg) = ready_to_receive(10);
    let to = wallets[1].address();
    let enc = message::seal(
        &msg.to_json(),
        &to.auth,
        &SE_ID,
        &coin.statechain_id,
        [4; 32],
    )
    .expect("seal");
    assert!(message::open(&enc, &wallets[1].a, &SE_ID, &coin.statechain_id).is_ok());
    assert!(
        message::open(&enc, &wallets[2].a, &SE_ID, &coin.statechain_id).is_err(),
        "other key"
    );
    assert!(
        message::open(&enc, &wallets[1].a, &[0; 32], &coin.statechain_id).is_err(),
        "other SE"
    );
    assert!(
        message::open(&enc, &wallets[1].a, &SE_ID, &[0; 16]).is_err(),
        "other coin"
    );
    let mut flipped = enc.clone();
    let n = flipped.len() - 1;
    flipped[n] ^= 1;
    assert!(
        message::open(&flipped, &wallets[1].a, &SE_ID, &coin.statechain_id).is_err(),
        "tampered"
    );
    assert!(
        message::open(&enc[..70], &wallets[1].a, &SE_ID, &coin.statechain_id).is_err(),
        "truncated"
    );
    // Strict JSON: unknown fields, other versions, uppercase hex.
    let json = String::from_utf8(msg.to_json()).expect("utf8");
    assert!(TransferMessage::from_json(json.replacen("{", "{\"extra\":1,", 1).as_bytes()).is_err());
    assert!(
        TransferMessage::from_json(json.replace("\"version\":1", "\"version\":2").as_bytes())
            .is_err()
    );
    let upper = json.replace(
        &hex::encode(msg.t1.to_bytes()),
        &hex::encode_upper(msg.t1.to_bytes()),
    );
    assert!(TransferMessage::from_json(upper.as_bytes()).is_err());
    assert_eq!(
        TransferMessage::from_json(json.as_bytes()).as_ref(),
        Ok(&msg)
    );
    let _ = world;
}
