//! What a receiver checks before accepting a coin (§4.5), as a pure function
//! of the decrypted message, the coin's state rebuilt from its proven log
//! entries, the receiver's own keys and the chain facts.
//!
//! Any failure refuses the coin and names the check ([`Refusal`]); the CLI
//! exits 3 with that name. Checkpoint policy and inclusion proofs (step 2's
//! first half) are the caller's: this module trusts that `coin` was built
//! from entries proven under a policy-accepted checkpoint. Script execution
//! is behind [`ScriptCheck`] so the core stays free of the C++ library; the
//! wallet passes `bitcoinconsensus`.

use bitcoin::{Transaction, TxOut};
use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::bip340;
use crate::cosign::{audit, AuditError, CoinKey};
use crate::keyupdate::{receiver_update, t1_is_valid};
use crate::message::{transfer_statement, TransferMessage};
use crate::rules::CoinChain;
use crate::scalar::Scalar;
use crate::tx::{backup_locktime, check_backup, Funding, TemplateError};
use crate::{LeafHash, SeId, StatechainId};

/// Executes a spend of `spent` by input `index` of `tx` under consensus rules.
pub trait ScriptCheck {
    /// `Ok` iff the input's witness satisfies `spent`'s script.
    fn verify_input(&self, spent: &TxOut, tx: &Transaction, index: usize) -> Result<(), String>;
}

/// Chain facts the wallet gathers through its chain source (§4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFacts {
    /// The current tip height.
    pub tip_height: u32,
    /// `Tx0`'s confirmations (`None`: unknown to the chain source).
    pub tx0_confirmations: Option<u32>,
    /// Whether `Tx0:vout` is unspent.
    pub tx0_unspent: bool,
}

/// The receiver's side: its fresh address keys.
#[derive(Debug, Clone)]
pub struct Receiver<'a> {
    /// `o_next`.
    pub owner_share: &'a Scalar,
    /// `A_next` (x-only of `a_next`).
    pub auth_key: XOnlyPublicKey,
}

/// The check that refused a coin (§4.5's numbering).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Step 1: the message names another coin or SE.
    #[error("step 1: the message is for another coin or SE")]
    WrongCoin,
    /// Step 2: the coin is closed.
    #[error("step 2: the coin is closed")]
    Closed,
    /// Step 2: no pending transfer to this receiver in the log.
    #[error("step 2: the log has no pending transfer to this receiver")]
    NotPending,
    /// Step 3: the number of backups is not the logged signature count.
    #[error("step 3: {got} backups but the log counts {expected} signatures")]
    BackupCount {
        /// `N` from the log.
        expected: u32,
        /// `K` in the message.
        got: u32,
    },
    /// Step 3: a server nonce repeats (share exposure).
    #[error("step 3: a server nonce repeats in the coin's log")]
    NonceRepeated,
    /// Step 4: `Tx0:vout` does not pay `x(Q)` for `P = S_K + O_K`.
    #[error("step 4: the funding output does not pay the coin's key")]
    Funding,
    /// Step 5: the transfer statement is not signed by `O_K` (no PoP).
    #[error("step 5: the transfer statement is not signed by the sender's share key")]
    TransferSig,
    /// Step 6: `t1·G ≠ O_K + X1`.
    #[error("step 6: t1 does not match O_K + X1")]
    T1,
    /// Step 7: backup `i` is not its exact template, or its signature fails.
    #[error("step 7: backup {index}: {reason}")]
    Backup {
        /// `i`, from 1.
        index: u32,
        /// The template failure.
        reason: TemplateError,
    },
    /// Step 7: `bitcoinconsensus` refuses backup `i`.
    #[error("step 7: backup {index} fails script verification: {reason}")]
    Consensus {
        /// `i`.
        index: u32,
        /// The library's reason.
        reason: String,
    },
    /// Step 7: backup `i`'s session audit fails.
    #[error("step 7: backup {index} session audit: {reason}")]
    Audit {
        /// `i`.
        index: u32,
        /// Which part.
        reason: AuditError,
    },
    /// Step 8: the newest backup does not pay this receiver.
    #[error("step 8: the newest backup does not pay this receiver")]
    Payee,
    /// Step 9: too few blocks left before the newest backup's locktime.
    #[error(
        "step 9: newest backup locktime {locktime} is not above tip {tip} + interval {interval}"
    )]
    TooLate {
        /// `h_K`.
        locktime: u32,
        /// The tip.
        tip: u32,
        /// `c`.
        interval: u32,
    },
    /// Step 9: `h0` is later than the deposit's confirmation allows.
    #[error("step 9: backup 1's locktime is beyond confirmation height + h_init")]
    DepositSchedule,
    /// Step 9: `Tx0` lacks confirmations.
    #[error("step 9: the funding transaction has {have} confirmations, {need} required")]
    Unconfirmed {
        /// Confirmations seen.
        have: u32,
        /// Required.
        need: u32,
    },
    /// Step 9: `Tx0:vout` is spent.
    #[error("step 9: the coin's output is already spent")]
    Spent,
    /// Key arithmetic failed (negligible).
    #[error("degenerate key values")]
    Degenerate,
}

/// A verified coin, ready for the key update (step 10).
#[derive(Debug, Clone)]
pub struct Verified {
    /// `P`, `Q`.
    pub key: CoinKey,
    /// `Tx0:vout`.
    pub funding: Funding,
    /// `t2 = t1 − o_next`, sent in `transfer/receiver`.
    pub t2: Scalar,
    /// `S_new = P − O_next`.
    pub new_server_key: PublicKey,
    /// `K = N`.
    pub count: u32,
    /// The newest verified leaf hash (the request's `head`).
    pub head: LeafHash,
    /// `h_K`.
    pub last_locktime: u32,
    /// `h_K < tip + 4c`: the receiver should be warned.
    pub short_lifetime: bool,
}

/// Runs §4.5 steps 1 and 3–10 (the key-update values) for `msg`.
#[allow(clippy::too_many_arguments)]
pub fn verify_transfer(
    se_id: &SeId,
    statechain_id: &StatechainId,
    msg: &TransferMessage,
    coin: &CoinChain,
    receiver: &Receiver<'_>,
    facts: &ChainFacts,
    min_confirmations: u32,
    scripts: &dyn ScriptCheck,
) -> Result<Verified, Refusal> {
    // 1.
    if msg.statechain_id != *statechain_id
        || msg.se_id != *se_id
        || coin.statechain_id != *statechain_id
    {
        return Err(Refusal::WrongCoin);
    }
    // 2 (the logged state).
    if coin.closed {
        return Err(Refusal::Closed);
    }
    let pending = match &coin.pending {
        Some(p) if p.next_auth_key == receiver.auth_key => p,
        _ => return Err(Refusal::NotPending),
    };
    // 3.
    let k = u32::try_from(msg.backups.len()).unwrap_or(u32::MAX);
    if k != coin.count || k == 0 || coin.sessions.len() != msg.backups.len() {
        return Err(Refusal::BackupCount {
            expected: coin.count,
            got: k,
        });
    }
    for (i, s) in coin.sessions.iter().enumerate() {
        if coin.sessions[..i]
            .iter()
            .any(|o| o.server_nonce == s.server_nonce)
        {
            return Err(Refusal::NonceRepeated);
        }
    }
    // 4.
    let key =
        CoinKey::from_shares(&coin.server_key, &msg.sender_pubkey).map_err(|_| Refusal::Funding)?;
    let output = msg
        .tx0
        .output
        .get(msg.vout as usize)
        .ok_or(Refusal::Funding)?
        .clone();
    if output.script_pubkey != key.script_pubkey() {
        return Err(Refusal::Funding);
    }
    let funding = Funding {
        outpoint: bitcoin::OutPoint {
            txid: msg.tx0.compute_txid(),
            vout: msg.vout,
        },
        output,
    };
    // 5.
    let next_owner = receiver.owner_share.public();
    let statement = transfer_statement(
        se_id,
        statechain_id,
        &funding.outpoint,
        &next_owner,
        &receiver.auth_key,
        k,
        &pending.x1_pub,
    );
    let sender_x = msg.sender_pubkey.x_only_public_key().0;
    if !bip340::verify(&sender_x, &statement, &msg.transfer_sig) {
        return Err(Refusal::TransferSig);
    }
    // 6.
    if !t1_is_valid(&msg.t1, &msg.sender_pubkey, &pending.x1_pub) {
        return Err(Refusal::T1);
    }
    // 7.
    let h0 = msg.backups[0].tx.lock_time.to_consensus_u32();
    let mut last_locktime = h0;
    for (i, (rec, session)) in msg.backups.iter().zip(&coin.sessions).enumerate() {
        let index = i as u32 + 1;
        let locktime = backup_locktime(h0, coin.interval, index).ok_or(Refusal::Backup {
            index,
            reason: TemplateError::Schedule(index),
        })?;
        // Earlier owners' keys are not public: their backups must pay some
        // P2TR key; the newest must pay this receiver (step 8).
        let payee = (index == k).then_some(&next_owner);
        let sighash = check_backup(&rec.tx, &funding, &key, locktime, payee).map_err(|reason| {
            if index == k && reason == TemplateError::Payee {
                Refusal::Payee
            } else {
                Refusal::Backup { index, reason }
            }
        })?;
        scripts
            .verify_input(&funding.output, &rec.tx, 0)
            .map_err(|reason| Refusal::Consensus { index, reason })?;
        let sig: [u8; 64] = rec.tx.input[0]
            .witness
            .nth(0)
            .and_then(|w| w.try_into().ok())
            .ok_or(Refusal::Backup {
                index,
                reason: TemplateError::Witness,
            })?;
        audit(&key, session, &rec.opening, &sighash, &sig)
            .map_err(|reason| Refusal::Audit { index, reason })?;
        last_locktime = locktime;
    }
    // 9.
    let tip = facts.tip_height;
    if (last_locktime as u64) <= tip as u64 + coin.interval as u64 {
        return Err(Refusal::TooLate {
            locktime: last_locktime,
            tip,
            interval: coin.interval,
        });
    }
    let confirmations = facts.tx0_confirmations.unwrap_or(0);
    if confirmations < min_confirmations.max(1) {
        return Err(Refusal::Unconfirmed {
            have: confirmations,
            need: min_confirmations.max(1),
        });
    }
    let conf_height = tip.saturating_sub(confirmations - 1);
    if h0 as u64 > conf_height as u64 + coin.h_init as u64 {
        return Err(Refusal::DepositSchedule);
    }
    if !facts.tx0_unspent {
        return Err(Refusal::Spent);
    }
    // 10.
    let (t2, new_server_key) =
        receiver_update(&msg.t1, receiver.owner_share, &key.p).map_err(|_| Refusal::Degenerate)?;
    Ok(Verified {
        short_lifetime: (last_locktime as u64) < tip as u64 + 4 * coin.interval as u64,
        key,
        funding,
        t2,
        new_server_key,
        count: k,
        head: coin.head,
        last_locktime,
    })
}
