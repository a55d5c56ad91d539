//! Transaction templates (§4): backups with decreasing locktimes (policy
//! `0x01`), the withdrawal, and the CPFP child that gets a zero-fee backup
//! mined; plus the BIP341 key-path sighash they are co-signed on.
//!
//! Templates are exact so that the receiver can rebuild each backup from a
//! few numbers and refuse anything else (§4.5 step 7): a backup with an extra
//! output, a fee, another version or a final sequence is not a backup.

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use secp256k1::PublicKey;

use crate::bip340;
use crate::cosign::{CoinKey, CosignError};
use crate::scalar::Scalar;

/// `nSequence` of backup and withdrawal inputs: non-final (so `nLockTime`
/// applies), BIP68 disabled, no RBF signalling needed under TRUC.
pub const NON_FINAL: Sequence = Sequence(0xFFFF_FFFD);
/// The pay-to-anchor script `OP_1 <0x4e73>` (§4.3).
pub const P2A_SCRIPT: [u8; 4] = [0x51, 0x02, 0x4e, 0x73];
/// Locktimes at or above this are timestamps, not heights.
pub const LOCKTIME_THRESHOLD: u32 = 500_000_000;

/// Why a transaction is not the template it claims to be, or cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Version is not the template's.
    #[error("version {got} (expected {expected})")]
    Version {
        /// Expected.
        expected: i32,
        /// Found.
        got: i32,
    },
    /// Locktime is not `h_i`.
    #[error("locktime {got} (expected {expected})")]
    LockTime {
        /// Expected.
        expected: u32,
        /// Found (heights; a timestamp shows as its raw value).
        got: u32,
    },
    /// The locktime schedule leaves the valid height range.
    #[error("no valid locktime for backup {0} (h0 too low for this many transfers)")]
    Schedule(u32),
    /// Not exactly one input spending the funding outpoint.
    #[error("the input is not exactly the funding outpoint")]
    Input,
    /// `nSequence` other than `0xFFFFFFFD`.
    #[error("nSequence 0x{0:08x} (expected 0xfffffffd)")]
    Sequence(u32),
    /// A non-empty scriptSig.
    #[error("non-empty scriptSig")]
    ScriptSig,
    /// The witness is not one 64-byte SIGHASH_DEFAULT signature.
    #[error("the witness is not one 64-byte signature")]
    Witness,
    /// Not exactly the template's outputs.
    #[error("outputs are not [owner, anchor]")]
    Outputs,
    /// Output 0 does not pay the expected owner key.
    #[error("output 0 pays someone else")]
    Payee,
    /// Output 0 does not carry the whole coin value (a fee or a skim).
    #[error("output 0 carries {got} sat, the coin is {expected} sat")]
    Amount {
        /// The coin value.
        expected: u64,
        /// Output 0's value.
        got: u64,
    },
    /// Output 1 is not a zero-value P2A anchor.
    #[error("output 1 is not a zero-value P2A anchor")]
    Anchor,
    /// The signature does not verify for `x(Q)` and the sighash.
    #[error("the signature does not verify for the coin's key")]
    Signature,
    /// The fee leaves less than the dust limit.
    #[error("amount {0} sat is below the dust limit after fees")]
    Dust(u64),
    /// Key derivation failed (negligible).
    #[error(transparent)]
    Key(#[from] CosignError),
}

/// The coin's funding output `Tx0:vout` (§4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funding {
    /// `Tx0:vout`.
    pub outpoint: OutPoint,
    /// The output (value `v`, script `0x51 0x20 ‖ x(Q)`).
    pub output: TxOut,
}

/// `h_i = h0 − (i−1)·c` for backup `i ≥ 1`, if it is a valid height.
pub fn backup_locktime(h0: u32, interval: u32, i: u32) -> Option<u32> {
    let steps = i.checked_sub(1)?;
    let h = (h0 as u64).checked_sub(steps as u64 * interval as u64)?;
    (h > 0 && h < LOCKTIME_THRESHOLD as u64).then_some(h as u32)
}

/// The BIP86 output script of a single key (owner `i`'s backup payee).
pub fn owner_script(owner: &PublicKey) -> Result<ScriptBuf, CosignError> {
    Ok(CoinKey::new(*owner)?.script_pubkey())
}

/// BIP341's tweaked secret for a single key's BIP86 output, `g_P·o + t`
/// (BIP340 signing negates it when `Q` has odd Y).
pub fn tweaked_secret(key: &CoinKey, secret: &Scalar) -> Result<Scalar, CosignError> {
    Ok(secret.signed(key.g_p).add(key.tweak())?)
}

/// The unsigned backup `i` paying `owner` with locktime `locktime`.
pub fn backup_tx(
    funding: &Funding,
    locktime: u32,
    owner: &PublicKey,
) -> Result<Transaction, TemplateError> {
    if locktime == 0 || locktime >= LOCKTIME_THRESHOLD {
        return Err(TemplateError::Schedule(0));
    }
    Ok(Transaction {
        version: Version(3),
        lock_time: LockTime::from_consensus(locktime),
        input: vec![TxIn {
            previous_output: funding.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: NON_FINAL,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut {
                value: funding.output.value,
                script_pubkey: owner_script(owner)?,
            },
            TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::from_bytes(P2A_SCRIPT.to_vec()),
            },
        ],
    })
}

/// The BIP341 key-path sighash (`SIGHASH_DEFAULT`, all prevouts) of input
/// `index` of `tx`, spending `prevouts` (one per input, in order).
pub fn key_spend_sighash(
    tx: &Transaction,
    index: usize,
    prevouts: &[TxOut],
) -> Result<[u8; 32], TemplateError> {
    SighashCache::new(tx)
        .taproot_key_spend_signature_hash(index, &Prevouts::All(prevouts), TapSighashType::Default)
        .map(|h| h.to_byte_array())
        .map_err(|_| TemplateError::Input)
}

/// `tx` with input `index`'s witness set to the 64-byte signature.
pub fn with_signature(mut tx: Transaction, index: usize, sig: &[u8; 64]) -> Transaction {
    if let Some(input) = tx.input.get_mut(index) {
        input.witness = Witness::from_slice(&[&sig[..]]);
    }
    tx
}

/// Checks that `tx` is exactly backup `i`'s template with locktime
/// `locktime`, paying the whole coin to `owner`'s BIP86 key (or, with
/// `None`, to some P2TR key: an earlier owner whose key the checker does not
/// know), with a valid co-signature under the coin's key. Returns the
/// sighash the signature covers.
pub fn check_backup(
    tx: &Transaction,
    funding: &Funding,
    coin: &CoinKey,
    locktime: u32,
    owner: Option<&PublicKey>,
) -> Result<[u8; 32], TemplateError> {
    if tx.version != Version(3) {
        return Err(TemplateError::Version {
            expected: 3,
            got: tx.version.0,
        });
    }
    let got = tx.lock_time.to_consensus_u32();
    if got != locktime || !tx.lock_time.is_block_height() {
        return Err(TemplateError::LockTime {
            expected: locktime,
            got,
        });
    }
    let [input] = tx.input.as_slice() else {
        return Err(TemplateError::Input);
    };
    if input.previous_output != funding.outpoint {
        return Err(TemplateError::Input);
    }
    if input.sequence != NON_FINAL {
        return Err(TemplateError::Sequence(input.sequence.0));
    }
    if !input.script_sig.is_empty() {
        return Err(TemplateError::ScriptSig);
    }
    let [payee, anchor] = tx.output.as_slice() else {
        return Err(TemplateError::Outputs);
    };
    let pays_owner = match owner {
        Some(owner) => payee.script_pubkey == owner_script(owner)?,
        None => payee.script_pubkey.is_p2tr(),
    };
    if !pays_owner {
        return Err(TemplateError::Payee);
    }
    if payee.value != funding.output.value {
        return Err(TemplateError::Amount {
            expected: funding.output.value.to_sat(),
            got: payee.value.to_sat(),
        });
    }
    if anchor.value != Amount::ZERO || anchor.script_pubkey.as_bytes() != P2A_SCRIPT {
        return Err(TemplateError::Anchor);
    }
    let sig: [u8; 64] = match input.witness.len() {
        1 => input
            .witness
            .nth(0)
            .and_then(|w| w.try_into().ok())
            .ok_or(TemplateError::Witness)?,
        _ => return Err(TemplateError::Witness),
    };
    let sighash = key_spend_sighash(tx, 0, std::slice::from_ref(&funding.output))?;
    if !bip340::verify(&coin.output_key(), &sighash, &sig) {
        return Err(TemplateError::Signature);
    }
    Ok(sighash)
}

/// The unsigned withdrawal paying `to` the coin minus the fee at
/// `fee_rate` sat/vB (§4.4), with `nLockTime` = the tip (anti fee-sniping).
pub fn withdrawal_tx(
    funding: &Funding,
    to: ScriptBuf,
    fee_rate_sat_vb: u64,
    tip: u32,
) -> Result<Transaction, TemplateError> {
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_consensus(tip.min(LOCKTIME_THRESHOLD - 1)),
        input: vec![TxIn {
            previous_output: funding.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: NON_FINAL,
            witness: Witness::from_slice(&[&[0u8; 64][..]]),
        }],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: to,
        }],
    };
    let fee = fee_rate_sat_vb.saturating_mul(tx.vsize() as u64);
    let value = funding.output.value.to_sat().saturating_sub(fee);
    let dust = tx.output[0].script_pubkey.minimal_non_dust().to_sat();
    if value < dust {
        return Err(TemplateError::Dust(value));
    }
    tx.output[0].value = Amount::from_sat(value);
    tx.input[0].witness = Witness::new();
    Ok(tx)
}

/// The CPFP child of a signed backup (§4.3): spends the owner output (key
/// path, `o_i` tweaked) and the anchor, pays `to` the value minus the fee at
/// `fee_rate` for the whole package (the parent pays nothing).
pub fn cpfp_child(
    backup: &Transaction,
    owner_share: &Scalar,
    to: ScriptBuf,
    fee_rate_sat_vb: u64,
    aux: &[u8; 32],
) -> Result<Transaction, TemplateError> {
    let [payee, anchor] = backup.output.as_slice() else {
        return Err(TemplateError::Outputs);
    };
    let owner = CoinKey::new(owner_share.public())?;
    if payee.script_pubkey != owner.script_pubkey() {
        return Err(TemplateError::Payee);
    }
    let txid = backup.compute_txid();
    let mut child = Transaction {
        version: Version(3),
        lock_time: LockTime::ZERO,
        input: vec![
            TxIn {
                previous_output: OutPoint { txid, vout: 0 },
                script_sig: ScriptBuf::new(),
                sequence: NON_FINAL,
                witness: Witness::from_slice(&[&[0u8; 64][..]]),
            },
            TxIn {
                previous_output: OutPoint { txid, vout: 1 },
                script_sig: ScriptBuf::new(),
                sequence: NON_FINAL,
                witness: Witness::new(),
            },
        ],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: to,
        }],
    };
    let package_vsize = (backup.vsize() + child.vsize()) as u64;
    let value = payee
        .value
        .to_sat()
        .saturating_sub(fee_rate_sat_vb.saturating_mul(package_vsize));
    let dust = child.output[0].script_pubkey.minimal_non_dust().to_sat();
    if value < dust {
        return Err(TemplateError::Dust(value));
    }
    child.output[0].value = Amount::from_sat(value);
    let prevouts = [payee.clone(), anchor.clone()];
    let sighash = key_spend_sighash(&child, 0, &prevouts)?;
    let secret = tweaked_secret(&owner, owner_share)?;
    let sig = bip340::sign(&secret, &sighash, aux);
    Ok(with_signature(child, 0, &sig))
}
