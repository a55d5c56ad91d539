//! Request authorisation (§3.2): every mutating request, and every log entry
//! it produces, carries a BIP340 signature by the coin's current auth key on
//! `TaggedHash("LK/statechain/auth/v1", se_id ‖ op ‖ statechain_id ‖ head ‖
//! fields)`. The SE recomputes the digest from the parsed request fields and
//! members from the entry, so no JSON canonicalisation is involved.

use crate::hash::{tagged_hash, TAG_AUTH};
use crate::{LeafHash, SeId, StatechainId};

/// The operation codes of §3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Op {
    /// `deposit/init` (logged `s`).
    DepositInit = 0x01,
    /// `sign/first`.
    SignFirst = 0x02,
    /// `sign/second` (logged `g`).
    SignSecond = 0x03,
    /// `sign/cancel`.
    SignCancel = 0x04,
    /// `transfer/sender` (logged `x`).
    TransferSender = 0x05,
    /// `transfer/message`.
    TransferMessage = 0x06,
    /// `transfer/receiver` (logged `t`, signed by `A_next`).
    TransferReceiver = 0x07,
    /// `withdraw/complete` (logged `f`).
    WithdrawComplete = 0x08,
    /// `transfer/inbox` (signed by `A_next`, no coin).
    TransferInbox = 0x09,
}

impl Op {
    /// The op byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name used in error messages and the `q` rows.
    pub fn name(self) -> &'static str {
        match self {
            Op::DepositInit => "deposit/init",
            Op::SignFirst => "sign/first",
            Op::SignSecond => "sign/second",
            Op::SignCancel => "sign/cancel",
            Op::TransferSender => "transfer/sender",
            Op::TransferMessage => "transfer/message",
            Op::TransferReceiver => "transfer/receiver",
            Op::WithdrawComplete => "withdraw/complete",
            Op::TransferInbox => "transfer/inbox",
        }
    }
}

/// The digest an auth signature covers. `statechain_id` and `head` are zero
/// for [`Op::DepositInit`] and [`Op::TransferInbox`].
pub fn digest(
    se_id: &SeId,
    op: Op,
    statechain_id: &StatechainId,
    head: &LeafHash,
    fields: &[&[u8]],
) -> [u8; 32] {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + fields.len());
    let opb = [op.code()];
    parts.push(se_id);
    parts.push(&opb);
    parts.push(statechain_id);
    parts.push(head);
    parts.extend_from_slice(fields);
    tagged_hash(TAG_AUTH, &parts)
}
