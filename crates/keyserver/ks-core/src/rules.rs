//! The server's rules for UIDs (keyserver.md §4.1, §4.2), shared with the
//! client's chain verification (§6.3 step 4) so both judge a history the
//! same way. Time is a parameter: the server passes its clock, a client
//! checking history passes the TIMESTAMP of the reply that carried the
//! entry.

use crate::entry::Entry;
use crate::error::RpcError;
use crate::identity;
use crate::uid::{KeyEntry, ProfiledUid, UidMessage};

/// One year: the longest validity, and the quarantine after it.
pub const ROLLOVER: u64 = 31_536_000;
/// Clocks are trusted to agree within this.
pub const CLOCK_SKEW: u64 = 300;
/// After a rotation of the server's key by the old key, checkpoints carry
/// the old key's signature too for this long (7 days, §3.8), so plain
/// witnesses keep cosigning until their operators add the new key.
pub const ROTATION_OVERLAP: u64 = 7 * 24 * 3600;
/// LASTENTRY must be at most this old (or the newest entry).
pub const LASTENTRY_WINDOW: u64 = 3600;

/// Localparts nobody may register (the server's own is `keyserver`).
pub const RESERVED_LOCALPARTS: &[&str] = &[
    "keyserver",
    "root",
    "admin",
    "administrator",
    "postmaster",
    "hostmaster",
    "webmaster",
    "abuse",
];

/// What a server serves.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The domains whose identities it accepts.
    pub domains: Vec<String>,
    /// Refused localparts.
    pub reserved: Vec<String>,
}

impl Policy {
    /// A policy for `domains` with the default reserved localparts.
    pub fn for_domains(domains: Vec<String>) -> Policy {
        Policy {
            domains,
            reserved: RESERVED_LOCALPARTS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Create or Update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// KeyRepository.CreateUID.
    Create,
    /// KeyRepository.UpdateUID.
    Update,
}

/// §4.1 steps 2, 3, 5, 6 and 7: everything that needs no stored state.
/// Limits and tokens (steps 1 and 4) are the server's. `keyserver` is
/// true for the server's own identity, whose reserved localpart it may use.
pub fn check_stateless(
    kind: Kind,
    msg: &UidMessage,
    now: u64,
    policy: &Policy,
    keyserver: bool,
) -> Result<ProfiledUid, RpcError> {
    let p = msg.check_profile()?;
    let c = &msg.content;
    if !policy
        .domains
        .iter()
        .any(|d| d == identity::domain(&c.identity))
    {
        return Err(RpcError::Policy("domain not served".into()));
    }
    let local = identity::localpart(&c.identity);
    if !keyserver && policy.reserved.iter().any(|r| r == local) {
        return Err(RpcError::Policy("reserved localpart".into()));
    }
    if !msg.signed_by(&p.sig_key, &msg.self_signature) {
        return Err(RpcError::BadSignature {
            field: "SELFSIGNATURE".into(),
        });
    }
    if kind == Kind::Create {
        check_creation_signatures(msg, &p)?;
    }
    check_times(c.not_before, c.not_after, now)?;
    Ok(p)
}

/// §4.1 step 6 and MSGCOUNT 0: a creation with SIGESCROW proves
/// possession of it (ESCROWSIGNATURE) and has no USERSIGNATURE; one
/// without has neither.
pub fn check_creation_signatures(msg: &UidMessage, p: &ProfiledUid) -> Result<(), RpcError> {
    match &p.sig_escrow {
        Some(escrow) => {
            if !msg.user_signature.is_empty() {
                return Err(RpcError::UpdateRule(
                    "a creation carries no USERSIGNATURE".into(),
                ));
            }
            if !msg.signed_by(escrow, &msg.escrow_signature) {
                return Err(RpcError::BadSignature {
                    field: "ESCROWSIGNATURE".into(),
                });
            }
        }
        None => {
            if !msg.user_signature.is_empty() || !msg.escrow_signature.is_empty() {
                return Err(RpcError::UpdateRule(
                    "a creation without SIGESCROW carries neither USER nor ESCROW signature".into(),
                ));
            }
        }
    }
    if msg.content.msg_count != 0 {
        return Err(RpcError::BadMsgcount { expected: 0 });
    }
    Ok(())
}

/// §4.1 step 7.
pub fn check_times(not_before: u64, not_after: u64, now: u64) -> Result<(), RpcError> {
    if not_before >= not_after {
        return Err(RpcError::TimeWindow(
            "NOTBEFORE must precede NOTAFTER".into(),
        ));
    }
    if not_after <= now || not_after > now + ROLLOVER + CLOCK_SKEW {
        return Err(RpcError::TimeWindow(
            "NOTAFTER must be in the future and within a year".into(),
        ));
    }
    if not_before > now + ROLLOVER {
        return Err(RpcError::TimeWindow("NOTBEFORE is too far ahead".into()));
    }
    Ok(())
}

/// What the server keeps of an identity's newest UID (the private
/// `identity` table of §8), and what a client keeps of a contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityState {
    /// Position of the newest entry.
    pub pos: u64,
    /// Its MSGCOUNT.
    pub msg_count: u64,
    /// Its SIGKEY.
    pub sig_key: KeyEntry,
    /// Its SIGESCROW (zero if none).
    pub sig_escrow: KeyEntry,
    /// Its NOTBEFORE.
    pub not_before: u64,
    /// Its NOTAFTER.
    pub not_after: u64,
    /// Its UIDIndex.
    pub uid_index: [u8; 32],
}

impl IdentityState {
    /// The state after `msg` was appended at `pos` with `uid_index`.
    pub fn of(msg: &UidMessage, pos: u64, uid_index: [u8; 32]) -> IdentityState {
        IdentityState {
            pos,
            msg_count: msg.content.msg_count,
            sig_key: msg.content.sig_key.clone(),
            sig_escrow: msg.content.sig_escrow.clone(),
            not_before: msg.content.not_before,
            not_after: msg.content.not_after,
            uid_index,
        }
    }

    /// Where the identity is in its lifetime at `now`.
    pub fn lifetime(&self, now: u64) -> Lifetime {
        if now < self.not_after.saturating_add(ROLLOVER) {
            Lifetime::Updatable
        } else if now < self.not_after.saturating_add(2 * ROLLOVER) {
            Lifetime::Quarantined
        } else {
            Lifetime::Reclaimable
        }
    }

    /// Whether the UID is current (NOTBEFORE ≤ now < NOTAFTER).
    pub fn is_current(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// An identity's lifetime stage (§4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Its owner may update it.
    Updatable,
    /// Nobody may update or reclaim it.
    Quarantined,
    /// It may be registered anew.
    Reclaimable,
}

/// §4.2 for a Create: the identity is unknown or reclaimable, and a
/// reclaim starts only after the quarantine.
pub fn check_create(
    prev: Option<&IdentityState>,
    msg: &UidMessage,
    now: u64,
) -> Result<(), RpcError> {
    if msg.content.msg_count != 0 {
        return Err(RpcError::BadMsgcount { expected: 0 });
    }
    let Some(prev) = prev else {
        return Ok(());
    };
    if prev.lifetime(now) != Lifetime::Reclaimable {
        return Err(RpcError::IdentityTaken);
    }
    if msg.content.not_before < prev.not_after.saturating_add(2 * ROLLOVER) {
        return Err(RpcError::TimeWindow(
            "a reclaim's NOTBEFORE must follow the quarantine".into(),
        ));
    }
    Ok(())
}

/// §4.2 for an Update of `prev` by `msg` (already through
/// [`check_stateless`]).
pub fn check_update(
    prev: Option<&IdentityState>,
    msg: &UidMessage,
    now: u64,
) -> Result<(), RpcError> {
    let prev = prev.ok_or(RpcError::IdentityUnknown)?;
    match prev.lifetime(now) {
        Lifetime::Updatable => {}
        Lifetime::Quarantined => {
            return Err(RpcError::TimeWindow("the identity is quarantined".into()))
        }
        Lifetime::Reclaimable => return Err(RpcError::IdentityUnknown),
    }
    let expected = prev.msg_count + 1;
    if msg.content.msg_count != expected {
        return Err(RpcError::BadMsgcount { expected });
    }
    match (
        msg.user_signature.is_empty(),
        msg.escrow_signature.is_empty(),
    ) {
        (false, true) => {
            let key = prev.sig_key.verifying_key().ok_or(RpcError::Internal)?;
            if !msg.signed_by(&key, &msg.user_signature) {
                return Err(RpcError::BadSignature {
                    field: "USERSIGNATURE".into(),
                });
            }
            if msg.content.sig_escrow != prev.sig_escrow {
                return Err(RpcError::UpdateRule(
                    "SIGESCROW changes only with an ESCROWSIGNATURE".into(),
                ));
            }
        }
        (true, false) => {
            if prev.sig_escrow.is_zero() {
                return Err(RpcError::UpdateRule(
                    "the identity has no escrow key".into(),
                ));
            }
            let key = prev.sig_escrow.verifying_key().ok_or(RpcError::Internal)?;
            if !msg.signed_by(&key, &msg.escrow_signature) {
                return Err(RpcError::BadSignature {
                    field: "ESCROWSIGNATURE".into(),
                });
            }
        }
        _ => {
            return Err(RpcError::UpdateRule(
                "exactly one of USERSIGNATURE and ESCROWSIGNATURE".into(),
            ))
        }
    }
    Ok(())
}

/// §4.2's LASTENTRY freshness: the entry must sit at a position ≥ `q_min`
/// (the first position appended within the last hour, or the last one).
/// `found` is where the chain has LASTENTRY, if anywhere.
pub fn check_last_entry(
    last_entry: Option<&Entry>,
    found: Option<u64>,
    q_min: u64,
    size: u64,
    genesis: bool,
) -> Result<(), RpcError> {
    match (last_entry, genesis) {
        (None, true) => Ok(()),
        (None, false) | (Some(_), true) => Err(RpcError::StaleLastentry { size }),
        (Some(_), false) => match found {
            Some(q) if q >= q_min => Ok(()),
            _ => Err(RpcError::StaleLastentry { size }),
        },
    }
}
