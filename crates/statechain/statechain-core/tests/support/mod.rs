//! Shared test support: script verification by `bitcoinconsensus` (Bitcoin
//! Core 26's interpreter, code no one here wrote) and a funding transaction.
#![allow(dead_code)]

use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::serialize;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use statechain_core::verify::ScriptCheck;

/// `bitcoinconsensus` with taproot rules.
pub struct Consensus;

impl ScriptCheck for Consensus {
    fn verify_input(&self, spent: &TxOut, tx: &Transaction, index: usize) -> Result<(), String> {
        verify_spend(std::slice::from_ref(spent), tx, index)
    }
}

/// Verifies input `index` of `tx` spending `prevouts[index]`, with every
/// prevout given (taproot sighashes commit to all of them).
pub fn verify_spend(prevouts: &[TxOut], tx: &Transaction, index: usize) -> Result<(), String> {
    let raw = serialize(tx);
    let utxos: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    let spent = &prevouts[index];
    bitcoinconsensus::verify_with_flags(
        spent.script_pubkey.as_bytes(),
        spent.value.to_sat(),
        &raw,
        Some(&utxos),
        index,
        bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
    )
    .map_err(|e| format!("{e:?}"))
}

/// A funding transaction paying `value` to `script` at output `vout`
/// (other outputs pay an unrelated script).
pub fn tx0(script: ScriptBuf, value: u64, vout: u32, salt: u8) -> Transaction {
    let mut output: Vec<TxOut> = (0..vout)
        .map(|_| TxOut {
            value: Amount::from_sat(1000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        })
        .collect();
    output.push(TxOut {
        value: Amount::from_sat(value),
        script_pubkey: script,
    });
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::from_byte_array(
                    [salt; 32],
                )),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output,
    }
}
