//! Shared test support: script verification by `bitcoinconsensus` (Bitcoin
//! Core 26's interpreter, code no one here wrote, via the `consensus`
//! feature) and a funding transaction.
#![allow(dead_code)]

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

#[allow(unused_imports)]
pub use statechain_core::consensus::{verify_spend, Consensus};

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
