//! A client's verification of one identity's UID chain (keyserver.md
//! §6.3). The server's rules ([`crate::rules`]) are replayed over the
//! history with each reply's TIMESTAMP as the clock, so a takeover the
//! server signed (a self-signed update, a MSGCOUNT gap, a re-registration
//! while live) is caught by anyone who scans the name, not only by its
//! owner.

use ed25519_dalek::VerifyingKey;

use crate::entry::Entry;
use crate::error::RpcError;
use crate::keyinit::sig_key_hash;
use crate::rules::{self, IdentityState, ROLLOVER};
use crate::uid::{UidMessage, UidMessageReply};

/// One chain position of the identity: the local entry and the server's
/// reply for it (None if the server did not serve one).
pub struct Match<'a> {
    /// Position.
    pub pos: u64,
    /// The verified local entry at `pos`.
    pub entry: &'a Entry,
    /// The reply FetchUID returned, if any.
    pub reply: Option<&'a UidMessageReply>,
}

/// Why a chain does not verify. [`Failure::Takeover`] and
/// [`Failure::BadUid`] concern server-signed data and become evidence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The server signed a UID that breaks continuity (§4.2).
    #[error("takeover at position {pos}: {why}")]
    Takeover {
        /// The position.
        pos: u64,
        /// Which rule.
        why: String,
    },
    /// The server's reply or entry does not bind to a valid UID.
    #[error("bad UID at position {pos}: {why}")]
    BadUid {
        /// The position.
        pos: u64,
        /// What is wrong.
        why: String,
    },
    /// A matching entry whose UID the server withholds.
    #[error("the keyserver withholds the UID at position {pos}")]
    Withheld {
        /// The position.
        pos: u64,
    },
    /// The reply is not signed by the key the schedule has for its
    /// position (not evidence: anyone can make such a reply).
    #[error("the reply at position {pos} is not signed by the scheduled key")]
    Unsigned {
        /// The position.
        pos: u64,
    },
}

/// The verified newest state of an identity.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The newest UID.
    pub message: UidMessage,
    /// Its state (position, keys, times).
    pub state: IdentityState,
    /// Its SigKeyHash.
    pub sig_key_hash: String,
    /// Its X25519 static key.
    pub static_key: [u8; 32],
    /// The newest reply.
    pub reply: UidMessageReply,
}

/// Verifies `matches` (in chain order) for mapped `identity`. `signer`
/// gives the scheduled server key for a position; `position_of` finds a
/// LASTENTRY in the local chain.
pub fn verify_chain(
    identity: &str,
    matches: &[Match<'_>],
    signer: impl Fn(u64) -> Option<VerifyingKey>,
    position_of: impl Fn(&Entry) -> Option<u64>,
) -> Result<Option<Verified>, Failure> {
    let mut prev: Option<Verified> = None;
    let mut last_time = 0u64;
    for m in matches {
        let pos = m.pos;
        let bad = |why: String| Failure::BadUid { pos, why };
        let u = m.entry.unlock(identity).map_err(|e| bad(e.to_string()))?;
        let reply = m.reply.ok_or(Failure::Withheld { pos })?;
        let key = signer(pos).ok_or(Failure::Unsigned { pos })?;
        if !reply.signed_by(&key) {
            return Err(Failure::Unsigned { pos });
        }
        if reply.entry.hashchain_pos != pos {
            return Err(bad("HASHCHAINPOS differs from the entry's position".into()));
        }
        let (entry, msg) = reply.open_for(identity).map_err(|e| bad(e.to_string()))?;
        if &entry != m.entry {
            return Err(bad("HASHCHAINENTRY differs from the chain's entry".into()));
        }
        if msg.uid_hash() != u {
            return Err(bad("the UID does not hash to the entry's U".into()));
        }
        if msg.content.identity != identity {
            return Err(bad("IDENTITY differs".into()));
        }
        let takeover = |why: String| Failure::Takeover { pos, why };
        let profiled = msg.check_profile().map_err(|e| takeover(e.to_string()))?;
        if !msg.signed_by(&profiled.sig_key, &msg.self_signature) {
            return Err(takeover("SELFSIGNATURE does not verify".into()));
        }
        let time = reply.entry.timestamp;
        if time < last_time {
            return Err(bad("TIMESTAMP decreases".into()));
        }
        last_time = time;
        let prev_state = prev.as_ref().map(|p| &p.state);
        let step = match (prev_state, msg.content.msg_count) {
            (None, _) => rules::check_creation_signatures(&msg, &profiled),
            (Some(p), 0) => {
                let free = p.not_after.saturating_add(2 * ROLLOVER);
                if msg.content.not_before < free || time < free {
                    Err(RpcError::IdentityTaken)
                } else {
                    rules::check_creation_signatures(&msg, &profiled)
                }
            }
            (Some(p), _) => rules::check_update(Some(p), &msg, time),
        };
        step.map_err(|e| takeover(e.to_string()))?;
        match &profiled.last_entry {
            None if pos == 0 => {}
            None => return Err(takeover("LASTENTRY is empty".into())),
            Some(le) => match position_of(le) {
                Some(q) if q < pos => {}
                _ => return Err(takeover("LASTENTRY is not an earlier chain entry".into())),
            },
        }
        let state = IdentityState::of(&msg, pos, *entry.uid_index());
        prev = Some(Verified {
            sig_key_hash: sig_key_hash(profiled.sig_key.as_bytes()),
            static_key: profiled.static_key,
            message: msg,
            state,
            reply: reply.clone(),
        });
    }
    Ok(prev)
}
