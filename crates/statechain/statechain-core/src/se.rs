//! The SE's coin state machine (§3.4, §3.5, §2.4), sans I/O.
//!
//! [`SeCoin`] is everything the SE keeps for one coin: the public state the
//! log defines ([`CoinChain`]), the secret share, the pending signing session
//! and transfer, the mailbox and the last applied request per op. Each
//! handler takes the coin, a parsed request whose auth signature the caller
//! has already checked against the key the request names ([`Authorised`]),
//! the randomness it may need and `now`, and returns the coin's next state,
//! the leaf to append (if the op is logged) and the reply. The driver
//! commits next state, leaf and reply in one durable transaction and only
//! then sends the reply (§5.4); on failure it drops the next state, so a
//! crash or an error changes nothing.
//!
//! Every entry the SE produces is checked with the members' rules
//! ([`CoinChain::apply`]) before it is returned, so the SE cannot log what a
//! member would reject.

use std::collections::BTreeMap;

use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::auth::{self, Op};
use crate::cosign;
use crate::keyupdate;
use crate::leaf::{self, Body, Leaf};
use crate::rules::{CoinChain, RuleError};
use crate::scalar::{ser33, Scalar};
use crate::{LeafHash, SeId, StatechainId};

/// SE policy that affects coin handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `h_init` frozen into new coins.
    pub h_init: u32,
    /// `c` frozen into new coins.
    pub interval: u32,
    /// Signatures per coin before `coin_exhausted`.
    pub max_signatures: u32,
    /// Seconds a pending signing session lives.
    pub session_ttl: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            h_init: 2000,
            interval: 10,
            max_signatures: 1024,
            session_ttl: 600,
        }
    }
}

/// The SE's refusals, with the codes and statuses of §3.6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeError {
    /// 401: signature invalid or by the wrong key.
    #[error("authorisation signature invalid or by the wrong key")]
    BadAuth,
    /// 409: `head` is not the coin's newest entry.
    #[error("head is not the coin's newest entry (newest is seq {head_seq})")]
    StaleState {
        /// The current head.
        head: LeafHash,
        /// Its seq.
        head_seq: u32,
    },
    /// 409: another signing session is open.
    #[error("another signing session is pending for this coin")]
    SessionPending,
    /// 409: the nonce already answered another challenge.
    #[error("this server nonce already answered another challenge")]
    NonceConsumed,
    /// 409: the commitment was used before in this coin.
    #[error("commitment already used in this coin")]
    CommitmentReused,
    /// 409: a newer transfer replaced this receiver's.
    #[error("the transfer to this receiver was superseded")]
    TransferSuperseded,
    /// 409: no backup was signed since the transfer started.
    #[error("no backup was signed after the transfer started")]
    NoBackupSigned,
    /// 409: the count does not match the log.
    #[error("count {got} does not match the coin's {expected} signatures")]
    CountMismatch {
        /// The coin's count.
        expected: u32,
        /// The request's count.
        got: u32,
    },
    /// 409: `s2·G ≠ S_new`.
    #[error("the key update does not match the claimed server key")]
    KeyMismatch,
    /// 409: the coin was withdrawn.
    #[error("statechain is closed")]
    Closed,
    /// 409: `max_signatures` reached.
    #[error("the coin reached its signature limit")]
    CoinExhausted,
    /// 404: no such session.
    #[error("no pending session with that nonce and commitment")]
    NoSession,
    /// 404: no pending transfer to that receiver.
    #[error("no pending transfer to that receiver")]
    NoPendingTransfer,
    /// 503 (a bug or an RNG failure): the entry would break the log rules,
    /// or the randomness was degenerate; nothing changed.
    #[error("internal consistency check failed: {0}")]
    Internal(String),
}

impl SeError {
    /// The error code of §3.6.
    pub fn code(&self) -> &'static str {
        match self {
            SeError::BadAuth => "bad_auth",
            SeError::StaleState { .. } => "stale_state",
            SeError::SessionPending => "session_pending",
            SeError::NonceConsumed => "nonce_consumed",
            SeError::CommitmentReused => "commitment_reused",
            SeError::TransferSuperseded => "transfer_superseded",
            SeError::NoBackupSigned => "no_backup_signed",
            SeError::CountMismatch { .. } => "count_mismatch",
            SeError::KeyMismatch => "key_mismatch",
            SeError::Closed => "statechain_closed",
            SeError::CoinExhausted => "coin_exhausted",
            SeError::NoSession => "no_session",
            SeError::NoPendingTransfer => "no_pending_transfer",
            SeError::Internal(_) => "unavailable",
        }
    }

    /// The HTTP status of §3.6.
    pub fn status(&self) -> u16 {
        match self {
            SeError::BadAuth => 401,
            SeError::NoSession | SeError::NoPendingTransfer => 404,
            SeError::Internal(_) => 503,
            _ => 409,
        }
    }
}

impl From<RuleError> for SeError {
    fn from(e: RuleError) -> SeError {
        SeError::Internal(e.to_string())
    }
}

/// A request whose auth signature verified under `key` on `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorised {
    /// The key the request names (and signed with).
    pub key: XOnlyPublicKey,
    /// The signature.
    pub sig: [u8; 64],
    /// The digest it covers (the request's identity for replays).
    pub digest: [u8; 32],
}

impl Authorised {
    /// Verifies `sig` by `key` on the request's digest.
    pub fn check(
        key: XOnlyPublicKey,
        sig: [u8; 64],
        digest: [u8; 32],
    ) -> Result<Authorised, SeError> {
        if crate::bip340::verify(&key, &digest, &sig) {
            Ok(Authorised { key, sig, digest })
        } else {
            Err(SeError::BadAuth)
        }
    }
}

/// A pending signing session (the `n` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSign {
    /// The secret nonce `r_s`.
    pub nonce: Scalar,
    /// `R_s`.
    pub nonce_pub: PublicKey,
    /// The owner's commitment.
    pub commitment: [u8; 32],
    /// Creation time (seconds).
    pub created: u64,
}

/// The secret half of a pending transfer (the `x` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingX1 {
    /// The receiver.
    pub next_auth_key: XOnlyPublicKey,
    /// `x1`.
    pub x1: Scalar,
}

/// The coin's mailbox (one message, replaced by each upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The receiver.
    pub next_auth_key: XOnlyPublicKey,
    /// `enc ‖ ciphertext`.
    pub enc: Vec<u8>,
    /// Upload time (seconds).
    pub uploaded: u64,
}

/// Everything the SE keeps for one coin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeCoin {
    /// The public state (what members derive from the log).
    pub chain: CoinChain,
    /// The current share `s` (`None` once withdrawn).
    pub share: Option<Scalar>,
    /// The open signing session.
    pub pending_sign: Option<PendingSign>,
    /// The pending transfer's `x1`.
    pub pending_x1: Option<PendingX1>,
    /// The mailbox.
    pub mailbox: Option<Mailbox>,
    /// Last applied request digest per op (the `q` rows' keys; the driver
    /// keeps the reply bytes next to it).
    pub last_applied: BTreeMap<u8, [u8; 32]>,
}

/// What a handler returns: the coin's next state, the entry to log and the
/// reply to send after the commit.
#[derive(Debug, Clone)]
pub struct Step<R> {
    /// The next state.
    pub coin: SeCoin,
    /// The entry to append in the same transaction, if the op is logged.
    pub leaf: Option<Leaf>,
    /// The reply.
    pub reply: R,
}

/// The auth digest of a `deposit/init`.
pub fn deposit_digest(se_id: &SeId, auth_key: &XOnlyPublicKey, token_id: &[u8; 16]) -> [u8; 32] {
    auth::digest(
        se_id,
        Op::DepositInit,
        &[0; 16],
        &[0; 32],
        &[&auth_key.serialize(), &crate::hash::sha256(token_id)],
    )
}

/// Opens a coin (`deposit/init`): `share` and `statechain_id` are fresh
/// randomness drawn by the caller.
pub fn open_coin(
    se_id: &SeId,
    policy: &Policy,
    statechain_id: StatechainId,
    share: Scalar,
    token_id: &[u8; 16],
    auth: &Authorised,
) -> Result<Step<PublicKey>, SeError> {
    if auth.digest != deposit_digest(se_id, &auth.key, token_id) {
        return Err(SeError::BadAuth);
    }
    let server_key = share.public();
    let leaf = Leaf {
        statechain_id,
        seq: 0,
        prev: [0; 32],
        body: Body::Open(leaf::Open {
            server_key,
            auth_key: auth.key,
            token_hash: crate::hash::sha256(token_id),
            h_init: policy.h_init,
            interval: policy.interval,
            policy: leaf::POLICY_DECREASING_LOCKTIME,
            auth_sig: auth.sig,
        }),
    };
    let chain = CoinChain::open(&leaf, se_id)?;
    let mut last_applied = BTreeMap::new();
    last_applied.insert(Op::DepositInit.code(), auth.digest);
    Ok(Step {
        coin: SeCoin {
            chain,
            share: Some(share),
            pending_sign: None,
            pending_x1: None,
            mailbox: None,
            last_applied,
        },
        leaf: Some(leaf),
        reply: server_key,
    })
}

/// The result of checking a request against the coin before applying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The same request as the last applied one for this op: answer with the
    /// recorded reply (`LK-Replay: 1`), even if `head` moved.
    Replay,
    /// Apply it.
    Apply,
}

impl SeCoin {
    /// §3.5: replay, stale head, closed coin, or apply. `key` must be the
    /// key the op requires (checked here), `head` the request's.
    pub fn admit(&self, op: Op, head: &LeafHash, auth: &Authorised) -> Result<Admission, SeError> {
        if self.last_applied.get(&op.code()) == Some(&auth.digest) {
            return Ok(Admission::Replay);
        }
        if self.chain.closed {
            return Err(SeError::Closed);
        }
        let required = match op {
            Op::TransferReceiver => match &self.chain.pending {
                Some(p) => p.next_auth_key,
                None => return Err(SeError::NoPendingTransfer),
            },
            _ => self.chain.auth_key,
        };
        if auth.key != required {
            return Err(match op {
                Op::TransferReceiver => SeError::TransferSuperseded,
                _ => SeError::BadAuth,
            });
        }
        if *head != self.chain.head {
            return Err(SeError::StaleState {
                head: self.chain.head,
                head_seq: self.chain.head_seq,
            });
        }
        Ok(Admission::Apply)
    }

    fn digest(&self, se_id: &SeId, op: Op, fields: &[&[u8]]) -> [u8; 32] {
        auth::digest(
            se_id,
            op,
            &self.chain.statechain_id,
            &self.chain.head,
            fields,
        )
    }

    fn next_leaf(&self, body: Body) -> Leaf {
        Leaf {
            statechain_id: self.chain.statechain_id,
            seq: self.chain.head_seq + 1,
            prev: self.chain.head,
            body,
        }
    }

    /// Expires a pending session older than the TTL (its nonce is erased
    /// unused).
    pub fn expire(&mut self, policy: &Policy, now: u64) {
        if self
            .pending_sign
            .as_ref()
            .is_some_and(|p| now.saturating_sub(p.created) >= policy.session_ttl)
        {
            self.pending_sign = None;
        }
    }

    /// `sign/first`: returns `R_s`. `rand32` is fresh randomness.
    pub fn sign_first(
        &self,
        se_id: &SeId,
        policy: &Policy,
        com: [u8; 32],
        auth: &Authorised,
        rand32: &[u8; 32],
        now: u64,
    ) -> Result<Step<PublicKey>, SeError> {
        if auth.digest != self.digest(se_id, Op::SignFirst, &[&com]) {
            return Err(SeError::BadAuth);
        }
        let mut coin = self.clone();
        coin.expire(policy, now);
        if let Some(p) = &coin.pending_sign {
            if p.commitment == com {
                let r = p.nonce_pub;
                return Ok(Step {
                    coin,
                    leaf: None,
                    reply: r,
                });
            }
            return Err(SeError::SessionPending);
        }
        if coin.chain.count >= policy.max_signatures {
            return Err(SeError::CoinExhausted);
        }
        if coin.chain.sessions.iter().any(|s| s.commitment == com) {
            return Err(SeError::CommitmentReused);
        }
        let share = coin.share.as_ref().ok_or(SeError::Closed)?;
        let nonce = cosign::server_nonce(
            share,
            rand32,
            &coin.chain.statechain_id,
            &coin.chain.head,
            &com,
        )
        .map_err(|_| SeError::Internal("degenerate nonce".into()))?;
        let nonce_pub = nonce.public();
        if coin
            .chain
            .sessions
            .iter()
            .any(|s| s.server_nonce == ser33(&nonce_pub))
        {
            // §2.4 rule 2: a repeat means the RNG failed; the caller logs
            // an error and retries with new randomness.
            return Err(SeError::Internal(
                "server nonce repeated: RNG failure".into(),
            ));
        }
        coin.pending_sign = Some(PendingSign {
            nonce,
            nonce_pub,
            commitment: com,
            created: now,
        });
        coin.last_applied.insert(Op::SignFirst.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: None,
            reply: nonce_pub,
        })
    }

    /// `sign/second`: returns `(s_s, count)` and the `g` entry.
    pub fn sign_second(
        &self,
        se_id: &SeId,
        nonce_pub: &PublicKey,
        com: [u8; 32],
        challenge: &Scalar,
        auth: &Authorised,
    ) -> Result<Step<(Scalar, u32)>, SeError> {
        let expected = self.digest(
            se_id,
            Op::SignSecond,
            &[&ser33(nonce_pub), &com, &challenge.to_bytes()],
        );
        if auth.digest != expected {
            return Err(SeError::BadAuth);
        }
        if let Some(r) = self
            .chain
            .sessions
            .iter()
            .find(|s| s.server_nonce == ser33(nonce_pub))
        {
            return Err(if r.challenge == *challenge {
                // A replay whose head moved on: only the q row may answer it.
                SeError::StaleState {
                    head: self.chain.head,
                    head_seq: self.chain.head_seq,
                }
            } else {
                SeError::NonceConsumed
            });
        }
        let pending = match &self.pending_sign {
            Some(p) if p.nonce_pub == *nonce_pub && p.commitment == com => p,
            _ => return Err(SeError::NoSession),
        };
        let share = self.share.as_ref().ok_or(SeError::Closed)?;
        let partial = cosign::server_partial(&pending.nonce, share, challenge)
            .map_err(|_| SeError::Internal("degenerate partial signature".into()))?;
        let count = self.chain.count + 1;
        let leaf = self.next_leaf(Body::Signature(leaf::Signature {
            n: count,
            server_nonce: *nonce_pub,
            commitment: com,
            challenge: challenge.clone(),
            auth_sig: auth.sig,
        }));
        let mut coin = self.clone();
        coin.chain.apply(&leaf, se_id)?;
        coin.pending_sign = None; // r_s is erased with the commit
        coin.last_applied.insert(Op::SignSecond.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: Some(leaf),
            reply: (partial, count),
        })
    }

    /// `sign/cancel`: erases the pending nonce unused.
    pub fn sign_cancel(
        &self,
        se_id: &SeId,
        nonce_pub: &PublicKey,
        auth: &Authorised,
    ) -> Result<Step<()>, SeError> {
        if auth.digest != self.digest(se_id, Op::SignCancel, &[&ser33(nonce_pub)]) {
            return Err(SeError::BadAuth);
        }
        match &self.pending_sign {
            Some(p) if p.nonce_pub == *nonce_pub => {}
            _ => return Err(SeError::NoSession),
        }
        let mut coin = self.clone();
        coin.pending_sign = None;
        coin.last_applied.insert(Op::SignCancel.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: None,
            reply: (),
        })
    }

    fn no_session(&self) -> Result<(), SeError> {
        if self.pending_sign.is_some() {
            Err(SeError::SessionPending)
        } else {
            Ok(())
        }
    }

    /// `transfer/sender`: `x1` is fresh randomness; returns it with the `x`
    /// entry (and replaces any earlier pending transfer).
    pub fn transfer_sender(
        &self,
        se_id: &SeId,
        next_auth_key: XOnlyPublicKey,
        x1: Scalar,
        auth: &Authorised,
    ) -> Result<Step<Scalar>, SeError> {
        if auth.digest != self.digest(se_id, Op::TransferSender, &[&next_auth_key.serialize()]) {
            return Err(SeError::BadAuth);
        }
        self.no_session()?;
        let leaf = self.next_leaf(Body::Transfer(leaf::Transfer {
            x1_pub: x1.public(),
            next_auth_key,
            auth_sig: auth.sig,
        }));
        let mut coin = self.clone();
        coin.chain.apply(&leaf, se_id)?;
        coin.pending_x1 = Some(PendingX1 {
            next_auth_key,
            x1: x1.clone(),
        });
        coin.mailbox = None;
        coin.last_applied
            .insert(Op::TransferSender.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: Some(leaf),
            reply: x1,
        })
    }

    /// `transfer/message`: stores the encrypted message for the pending
    /// receiver.
    pub fn transfer_message(
        &self,
        se_id: &SeId,
        next_auth_key: XOnlyPublicKey,
        enc: Vec<u8>,
        auth: &Authorised,
        now: u64,
    ) -> Result<Step<()>, SeError> {
        let enc_hash = crate::hash::sha256(&enc);
        if auth.digest
            != self.digest(
                se_id,
                Op::TransferMessage,
                &[&next_auth_key.serialize(), &enc_hash],
            )
        {
            return Err(SeError::BadAuth);
        }
        match &self.chain.pending {
            Some(p) if p.next_auth_key == next_auth_key => {}
            Some(_) => return Err(SeError::TransferSuperseded),
            None => return Err(SeError::NoPendingTransfer),
        }
        if !self.chain.signed_since_pending() {
            return Err(SeError::NoBackupSigned);
        }
        let mut coin = self.clone();
        coin.mailbox = Some(Mailbox {
            next_auth_key,
            enc,
            uploaded: now,
        });
        coin.last_applied
            .insert(Op::TransferMessage.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: None,
            reply: (),
        })
    }

    /// `transfer/receiver`: the key update; returns the `t` entry.
    pub fn transfer_receiver(
        &self,
        se_id: &SeId,
        next_auth_key: XOnlyPublicKey,
        new_server_key: PublicKey,
        count: u32,
        t2: &Scalar,
        auth: &Authorised,
    ) -> Result<Step<()>, SeError> {
        let expected = self.digest(
            se_id,
            Op::TransferReceiver,
            &[
                &next_auth_key.serialize(),
                &ser33(&new_server_key),
                &count.to_be_bytes(),
            ],
        );
        if auth.digest != expected || auth.key != next_auth_key {
            return Err(SeError::BadAuth);
        }
        self.no_session()?;
        let x1 = match &self.pending_x1 {
            Some(p) if p.next_auth_key == next_auth_key => &p.x1,
            Some(_) => return Err(SeError::TransferSuperseded),
            None => return Err(SeError::NoPendingTransfer),
        };
        if count != self.chain.count {
            return Err(SeError::CountMismatch {
                expected: self.chain.count,
                got: count,
            });
        }
        let share = self.share.as_ref().ok_or(SeError::Closed)?;
        let new_share = keyupdate::server_update(share, t2, x1, &new_server_key)
            .map_err(|_| SeError::KeyMismatch)?;
        let leaf = self.next_leaf(Body::Updated(leaf::Updated {
            new_server_key,
            new_auth_key: next_auth_key,
            count,
            auth_sig: auth.sig,
        }));
        let mut coin = self.clone();
        coin.chain.apply(&leaf, se_id)?;
        coin.share = Some(new_share);
        coin.pending_x1 = None;
        coin.mailbox = None;
        coin.last_applied
            .insert(Op::TransferReceiver.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: Some(leaf),
            reply: (),
        })
    }

    /// `withdraw/complete`: erases the share; returns the `f` entry.
    pub fn withdraw_complete(
        &self,
        se_id: &SeId,
        count: u32,
        auth: &Authorised,
    ) -> Result<Step<()>, SeError> {
        if auth.digest != self.digest(se_id, Op::WithdrawComplete, &[&count.to_be_bytes()]) {
            return Err(SeError::BadAuth);
        }
        self.no_session()?;
        if count != self.chain.count {
            return Err(SeError::CountMismatch {
                expected: self.chain.count,
                got: count,
            });
        }
        let leaf = self.next_leaf(Body::Final(leaf::Final {
            count,
            auth_sig: auth.sig,
        }));
        let mut coin = self.clone();
        coin.chain.apply(&leaf, se_id)?;
        coin.share = None;
        coin.pending_x1 = None;
        coin.mailbox = None;
        coin.last_applied
            .insert(Op::WithdrawComplete.code(), auth.digest);
        Ok(Step {
            coin,
            leaf: Some(leaf),
            reply: (),
        })
    }
}

/// The auth digest of `transfer/inbox`, signed by the receiver's `A_next` (no coin; `time` within ±300 s of
/// the SE's clock, checked by [`inbox_time_ok`]).
pub fn inbox_digest(se_id: &SeId, time: u64) -> [u8; 32] {
    auth::digest(
        se_id,
        Op::TransferInbox,
        &[0; 16],
        &[0; 32],
        &[&time.to_be_bytes()],
    )
}

/// `|time − now| ≤ 300`.
pub fn inbox_time_ok(time: u64, now: u64) -> bool {
    time.abs_diff(now) <= 300
}
