//! Script execution by Bitcoin Core's interpreter (`bitcoinconsensus`
//! 0.106, Core 26, taproot rules), behind the `consensus` feature so the
//! rest of the core does not link the C++ library. The one place the
//! wallet, the CLI's tests and the core's tests run spends through it.

use bitcoin::consensus::encode::serialize;
use bitcoin::{Transaction, TxOut};

use crate::verify::ScriptCheck;

/// Verifies input `index` of `tx` spending `prevouts[index]`; every spent
/// output is given (taproot sighashes commit to all of them).
pub fn verify_spend(prevouts: &[TxOut], tx: &Transaction, index: usize) -> Result<(), String> {
    let spent = prevouts
        .get(index)
        .ok_or_else(|| format!("no prevout for input {index}"))?;
    let raw = serialize(tx);
    let utxos: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
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

/// [`ScriptCheck`] by `bitcoinconsensus`, for the receiver's verifier.
pub struct Consensus;

impl ScriptCheck for Consensus {
    fn verify_input(&self, spent: &TxOut, tx: &Transaction, index: usize) -> Result<(), String> {
        if index != 0 || tx.input.len() != 1 {
            return Err("only single-input spends are checked here".into());
        }
        verify_spend(std::slice::from_ref(spent), tx, index)
    }
}
