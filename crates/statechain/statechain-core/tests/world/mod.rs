//! The protocol's parties in memory, shared by `flow.rs` and the
//! `receiver_verify` example (statechain.md §8's receiver-verification
//! row): an SE driven through `se`, a member applying every leaf with
//! `rules`, owners through `owner`/`cosign`, receivers with `verify`.
#![allow(dead_code)]

use bitcoin::Transaction;
use statechain_core::address::Address;
use statechain_core::auth::{self, Op};
use statechain_core::bip340;
use statechain_core::cosign::{Opening, OwnerSession};
use statechain_core::leaf::Leaf;
use statechain_core::message::{self, TransferMessage};
use statechain_core::owner::OwnerCoin;
use statechain_core::rules::{CoinChain, Ledger};
use statechain_core::scalar::{ser33, Scalar};
use statechain_core::se::{self, Admission, Authorised, Policy, SeCoin};
use statechain_core::verify::{self, ChainFacts, Receiver, Refusal};
use statechain_core::{SeId, StatechainId};

use crate::support;

pub const SE_ID: SeId = [0x5e; 32];
pub const VALUE: u64 = 100_000;
pub const DEPOSIT_TIP: u32 = 490;

/// Deterministic "randomness" for the test (drivers use the OS CSPRNG).
pub struct Rng(pub u64);
impl Rng {
    pub fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            chunk.copy_from_slice(&self.0.to_be_bytes());
        }
        out
    }
    pub fn scalar(&mut self) -> Scalar {
        loop {
            if let Ok(s) = Scalar::from_bytes(&self.bytes()) {
                return s;
            }
        }
    }
}

/// The SE side: one coin's state, the log and a member replaying it.
pub struct World {
    pub rng: Rng,
    pub policy: Policy,
    pub coin: Option<SeCoin>,
    pub log: Vec<Vec<u8>>,
    pub member: Ledger,
    pub now: u64,
}

pub struct Wallet {
    pub o: Scalar,
    pub a: Scalar,
}

impl Wallet {
    pub fn new(rng: &mut Rng) -> Wallet {
        Wallet {
            o: rng.scalar(),
            a: rng.scalar(),
        }
    }
    pub fn address(&self) -> Address {
        Address {
            owner: self.o.public(),
            auth: bip340::xonly_of(&self.a),
        }
    }
}

pub fn authorise(a: &Scalar, digest: [u8; 32]) -> Authorised {
    Authorised::check(
        bip340::xonly_of(a),
        bip340::sign(a, &digest, &[0; 32]),
        digest,
    )
    .expect("own signature")
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            rng: Rng(seed),
            policy: Policy::default(),
            coin: None,
            log: Vec::new(),
            member: Ledger::new(),
            now: 1_000,
        }
    }

    pub fn se(&self) -> &SeCoin {
        self.coin.as_ref().expect("coin")
    }

    pub fn id(&self) -> StatechainId {
        self.se().chain.statechain_id
    }

    /// What the driver does after a handler: append, let the member
    /// validate, adopt the new state.
    pub fn commit<R>(&mut self, step: se::Step<R>) -> R {
        if let Some(leaf) = &step.leaf {
            let bytes = leaf.encode();
            self.member
                .apply(&Leaf::decode(&bytes).expect("decodes"), &SE_ID)
                .expect("member accepts");
            self.log.push(bytes);
        }
        self.coin = Some(step.coin);
        step.reply
    }

    pub fn digest(&self, op: Op, fields: &[&[u8]]) -> [u8; 32] {
        auth::digest(&SE_ID, op, &self.id(), &self.se().chain.head, fields)
    }

    pub fn deposit(&mut self, w: &Wallet, tip: u32) -> OwnerCoin {
        let token = [7u8; 16];
        let auth = authorise(
            &w.a,
            se::deposit_digest(&SE_ID, &bip340::xonly_of(&w.a), &token),
        );
        let id: StatechainId = self.rng.bytes()[..16].try_into().expect("16");
        let share = self.rng.scalar();
        let step = se::open_coin(&SE_ID, &self.policy, id, share, &token, &auth).expect("open");
        let server_key = self.commit(step);
        let mut coin = OwnerCoin::deposit(
            id,
            w.o.clone(),
            w.a.clone(),
            server_key,
            tip + self.policy.h_init,
            self.policy.interval,
            self.se().chain.head,
        )
        .expect("key");
        let tx0 = support::tx0(coin.key.script_pubkey(), VALUE, 1, 3);
        coin.set_funding(tx0, 1).expect("funding");
        coin
    }

    /// One co-signing session for `unsigned` (§2.3), through the SE.
    pub fn cosign(&mut self, coin: &mut OwnerCoin, unsigned: Transaction) -> [u8; 64] {
        let m = coin.sighash(&unsigned).expect("sighash");
        let owner = OwnerSession::new(self.rng.scalar(), self.rng.scalar(), m);
        let com = owner.commitment();
        let auth = authorise(&coin.auth_secret, self.digest(Op::SignFirst, &[&com]));
        let head = self.se().chain.head;
        assert_eq!(
            self.se().admit(Op::SignFirst, &head, &auth),
            Ok(Admission::Apply)
        );
        let rand = self.rng.bytes();
        let step = self
            .se()
            .sign_first(&SE_ID, &self.policy, com, &auth, &rand, self.now)
            .expect("first");
        let r_s = self.commit(step);
        assert!(
            !self
                .se()
                .chain
                .sessions
                .iter()
                .any(|s| s.server_nonce == ser33(&r_s)),
            "fresh nonce"
        );
        let ch = owner.challenge(&coin.key, &r_s).expect("challenge");
        let auth = authorise(
            &coin.auth_secret,
            self.digest(Op::SignSecond, &[&ser33(&r_s), &com, &ch.c.to_bytes()]),
        );
        let step = self
            .se()
            .sign_second(&SE_ID, &r_s, com, &ch.c, &auth)
            .expect("second");
        let (s_s, count) = self.commit(step);
        assert_eq!(count, self.se().chain.count);
        let sig = owner
            .finish(
                &coin.key,
                &coin.owner_share,
                &coin.server_key,
                &r_s,
                &ch,
                &s_s,
            )
            .expect("finish");
        coin.push_backup(
            unsigned,
            &sig,
            Opening {
                owner_nonce: owner.nonce_point(),
                blinding: owner.blinding().clone(),
            },
        );
        coin.head = self.se().chain.head;
        sig
    }

    pub fn start_transfer(&mut self, coin: &OwnerCoin, to: &Address) -> Scalar {
        let auth = authorise(
            &coin.auth_secret,
            self.digest(Op::TransferSender, &[&to.auth.serialize()]),
        );
        let x1 = self.rng.scalar();
        let step = self
            .se()
            .transfer_sender(&SE_ID, to.auth, x1, &auth)
            .expect("sender");
        self.commit(step)
    }

    /// Sender side of a transfer up to the sealed message in the mailbox.
    pub fn send(&mut self, coin: &mut OwnerCoin, to: &Address) -> Vec<u8> {
        let x1 = self.start_transfer(coin, to);
        let unsigned = coin.next_backup(&to.owner).expect("backup");
        self.cosign(coin, unsigned);
        let msg = coin
            .transfer_message(&SE_ID, to, &x1, &[0; 32])
            .expect("message");
        let enc = message::seal(
            &msg.to_json(),
            &to.auth,
            &SE_ID,
            &coin.statechain_id,
            self.rng.bytes(),
        )
        .expect("seal");
        let auth = authorise(
            &coin.auth_secret,
            self.digest(
                Op::TransferMessage,
                &[&to.auth.serialize(), &statechain_core::hash::sha256(&enc)],
            ),
        );
        let step = self
            .se()
            .transfer_message(&SE_ID, to.auth, enc.clone(), &auth, self.now)
            .expect("message");
        self.commit(step);
        enc
    }

    /// The receiver's view of the coin from the public log.
    pub fn chain_from_log(&self) -> CoinChain {
        let leaves: Vec<Leaf> = self
            .log
            .iter()
            .map(|b| Leaf::decode(b).expect("leaf"))
            .filter(|l| l.statechain_id == self.id())
            .collect();
        CoinChain::from_entries(&leaves, &SE_ID).expect("valid chain")
    }

    pub fn facts(&self, tip: u32) -> ChainFacts {
        ChainFacts {
            tip_height: tip,
            tx0_confirmations: Some(6),
            tx0_unspent: true,
        }
    }

    pub fn verify(
        &self,
        w: &Wallet,
        msg: &TransferMessage,
        tip: u32,
    ) -> Result<verify::Verified, Refusal> {
        verify::verify_transfer(
            &SE_ID,
            &self.id(),
            msg,
            &self.chain_from_log(),
            &Receiver {
                owner_share: &w.o,
                auth_key: bip340::xonly_of(&w.a),
            },
            &self.facts(tip),
            3,
            &support::Consensus,
        )
    }

    /// Receiver side: decrypt, verify, key update.
    pub fn receive(&mut self, w: &Wallet, enc: &[u8], tip: u32) -> OwnerCoin {
        let plain = message::open(enc, &w.a, &SE_ID, &self.id()).expect("decrypt");
        let msg = TransferMessage::from_json(&plain).expect("parse");
        let v = self.verify(w, &msg, tip).expect("verified");
        let auth = authorise(
            &w.a,
            self.digest(
                Op::TransferReceiver,
                &[
                    &bip340::xonly_of(&w.a).serialize(),
                    &ser33(&v.new_server_key),
                    &v.count.to_be_bytes(),
                ],
            ),
        );
        assert_eq!(
            self.se().admit(Op::TransferReceiver, &v.head, &auth),
            Ok(Admission::Apply)
        );
        let step = self
            .se()
            .transfer_receiver(
                &SE_ID,
                bip340::xonly_of(&w.a),
                v.new_server_key,
                v.count,
                &v.t2,
                &auth,
            )
            .expect("update");
        self.commit(step);
        OwnerCoin::received(
            &msg,
            &v,
            w.o.clone(),
            w.a.clone(),
            self.se().chain.interval,
            self.se().chain.head,
        )
    }
}
