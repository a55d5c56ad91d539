//! The log's validity rules (§5.2), applied entry by entry in log order.
//!
//! [`CoinChain`] is one coin's state as the log defines it: members apply
//! every entry to it before storing (so a semantically invalid history is
//! never mirrored or cosigned), receivers rebuild their coin's state from
//! its entries, and the SE checks each entry it is about to commit with the
//! same code. [`Ledger`] holds the coins of a whole log in memory.

use std::collections::BTreeMap;

use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::bip340;
use crate::leaf::{Body, Leaf};
use crate::scalar::{point, ser33, Scalar};
use crate::{LeafHash, SeId, StatechainId};

/// Why an entry breaks the rules. Each names what a member reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An `s` entry for an id already in the log.
    #[error("statechain {0} is opened twice")]
    DuplicateOpen(String),
    /// A non-`s` entry for an unknown coin.
    #[error("entry for unknown statechain {0}")]
    UnknownCoin(String),
    /// An entry after the coin's final entry.
    #[error("statechain is closed")]
    Closed,
    /// `s` with `seq ≠ 0` or `prev ≠ 0`.
    #[error("an open entry must have seq 0 and a zero prev")]
    BadOpen,
    /// `seq` is not the next one.
    #[error("seq {got} does not follow {last}")]
    SeqGap {
        /// The coin's last seq.
        last: u32,
        /// The entry's seq.
        got: u32,
    },
    /// `prev` is not the coin's previous leaf hash (a fork of the coin chain).
    #[error("prev does not name the coin's previous entry (fork)")]
    Fork,
    /// The auth signature does not verify under the key the op requires.
    #[error("auth signature invalid for the current auth key")]
    BadAuth,
    /// `g` whose `n` is not `N + 1`.
    #[error("signature count {got} is not {expected}")]
    BadCount {
        /// `N + 1` (for `g`) or `N` (for `t`, `f`).
        expected: u32,
        /// The count in the entry.
        got: u32,
    },
    /// An `R_s` seen before in the coin: the share may be exposed.
    #[error("server nonce repeated in the coin (share exposure alarm)")]
    NonceReused,
    /// A commitment seen before in the coin.
    #[error("commitment repeated in the coin")]
    CommitmentReused,
    /// `t` without a pending `x` for that receiver.
    #[error("key update without a pending transfer to that receiver")]
    NoPendingTransfer,
    /// An unknown backup policy in `s`.
    #[error("unknown backup policy 0x{0:02x}")]
    Policy(u8),
    /// `interval` 0 (locktimes would not decrease).
    #[error("interval must be positive")]
    Interval,
}

/// One logged co-signing session (a `g` entry), as a receiver audits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The `g` entry's seq.
    pub seq: u32,
    /// The count after it.
    pub n: u32,
    /// `ser33(R_s)`, a valid point (checked when its leaf was decoded);
    /// kept encoded because coins are loaded far more often than audited
    /// (decompressing every logged nonce on each load dominated the SE's
    /// CPU). [`Session::nonce_point`] parses it.
    pub server_nonce: [u8; 33],
    /// The owner's commitment.
    pub commitment: [u8; 32],
    /// The challenge.
    pub challenge: Scalar,
}

impl Session {
    /// `R_s` as a point.
    pub fn nonce_point(&self) -> Option<PublicKey> {
        point(&self.server_nonce)
    }
}

/// A transfer started and not yet completed (the latest `x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransfer {
    /// The receiver's auth key.
    pub next_auth_key: XOnlyPublicKey,
    /// `X1`.
    pub x1_pub: PublicKey,
    /// The `x` entry's seq.
    pub seq: u32,
}

/// A coin's state derived from its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinChain {
    /// The coin.
    pub statechain_id: StatechainId,
    /// The current SE share key.
    pub server_key: PublicKey,
    /// The current owner's auth key.
    pub auth_key: XOnlyPublicKey,
    /// `N`, the number of `g` entries.
    pub count: u32,
    /// The last entry's seq.
    pub head_seq: u32,
    /// The last entry's leaf hash.
    pub head: LeafHash,
    /// `h_init`.
    pub h_init: u32,
    /// `c`.
    pub interval: u32,
    /// Backup policy.
    pub policy: u8,
    /// `SHA256(token_id)`.
    pub token_hash: [u8; 32],
    /// The latest `x` after the latest `s`/`t`.
    pub pending: Option<PendingTransfer>,
    /// Every `g` entry, in order.
    pub sessions: Vec<Session>,
    /// The number of `t` entries.
    pub transfers: u32,
    /// Whether an `f` entry closed the coin.
    pub closed: bool,
}

impl CoinChain {
    /// Opens a coin from its `s` entry.
    pub fn open(leaf: &Leaf, se_id: &SeId) -> Result<CoinChain, RuleError> {
        let Body::Open(b) = &leaf.body else {
            return Err(RuleError::UnknownCoin(hex::encode(leaf.statechain_id)));
        };
        if leaf.seq != 0 || leaf.prev != [0; 32] {
            return Err(RuleError::BadOpen);
        }
        if b.policy != crate::leaf::POLICY_DECREASING_LOCKTIME {
            return Err(RuleError::Policy(b.policy));
        }
        if b.interval == 0 {
            return Err(RuleError::Interval);
        }
        if !bip340::verify(&b.auth_key, &leaf.auth_digest(se_id), &b.auth_sig) {
            return Err(RuleError::BadAuth);
        }
        Ok(CoinChain {
            statechain_id: leaf.statechain_id,
            server_key: b.server_key,
            auth_key: b.auth_key,
            count: 0,
            head_seq: 0,
            head: leaf.hash(),
            h_init: b.h_init,
            interval: b.interval,
            policy: b.policy,
            token_hash: b.token_hash,
            pending: None,
            sessions: Vec::new(),
            transfers: 0,
            closed: false,
        })
    }

    /// Checks a non-`s` entry against the state without changing it.
    pub fn check(&self, leaf: &Leaf, se_id: &SeId) -> Result<(), RuleError> {
        if self.closed {
            return Err(RuleError::Closed);
        }
        if leaf.seq != self.head_seq.wrapping_add(1) || leaf.seq == 0 {
            return Err(RuleError::SeqGap {
                last: self.head_seq,
                got: leaf.seq,
            });
        }
        if leaf.prev != self.head {
            return Err(RuleError::Fork);
        }
        let signer = match &leaf.body {
            Body::Updated(b) => b.new_auth_key,
            _ => self.auth_key,
        };
        if !bip340::verify(&signer, &leaf.auth_digest(se_id), leaf.body.auth_sig()) {
            return Err(RuleError::BadAuth);
        }
        match &leaf.body {
            Body::Open(_) => return Err(RuleError::DuplicateOpen(hex::encode(leaf.statechain_id))),
            Body::Signature(b) => {
                let expected = self.count.checked_add(1).ok_or(RuleError::BadCount {
                    expected: u32::MAX,
                    got: b.n,
                })?;
                if b.n != expected {
                    return Err(RuleError::BadCount { expected, got: b.n });
                }
                if self
                    .sessions
                    .iter()
                    .any(|s| s.server_nonce == ser33(&b.server_nonce))
                {
                    return Err(RuleError::NonceReused);
                }
                if self.sessions.iter().any(|s| s.commitment == b.commitment) {
                    return Err(RuleError::CommitmentReused);
                }
            }
            Body::Transfer(_) => {}
            Body::Updated(b) => {
                match &self.pending {
                    Some(p) if p.next_auth_key == b.new_auth_key => {}
                    _ => return Err(RuleError::NoPendingTransfer),
                }
                if b.count != self.count {
                    return Err(RuleError::BadCount {
                        expected: self.count,
                        got: b.count,
                    });
                }
            }
            Body::Final(b) => {
                if b.count != self.count {
                    return Err(RuleError::BadCount {
                        expected: self.count,
                        got: b.count,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks and applies a non-`s` entry.
    pub fn apply(&mut self, leaf: &Leaf, se_id: &SeId) -> Result<(), RuleError> {
        self.check(leaf, se_id)?;
        match &leaf.body {
            Body::Open(_) => {}
            Body::Signature(b) => {
                self.count = b.n;
                self.sessions.push(Session {
                    seq: leaf.seq,
                    n: b.n,
                    server_nonce: ser33(&b.server_nonce),
                    commitment: b.commitment,
                    challenge: b.challenge.clone(),
                });
            }
            Body::Transfer(b) => {
                self.pending = Some(PendingTransfer {
                    next_auth_key: b.next_auth_key,
                    x1_pub: b.x1_pub,
                    seq: leaf.seq,
                });
            }
            Body::Updated(b) => {
                self.server_key = b.new_server_key;
                self.auth_key = b.new_auth_key;
                self.pending = None;
                self.transfers += 1;
            }
            Body::Final(_) => {
                self.closed = true;
                self.pending = None;
            }
        }
        self.head_seq = leaf.seq;
        self.head = leaf.hash();
        Ok(())
    }

    /// Whether any `g` entry follows the pending `x` entry (the SE's
    /// `no_backup_signed` check, §3.4).
    pub fn signed_since_pending(&self) -> bool {
        match (&self.pending, self.sessions.last()) {
            (Some(p), Some(s)) => s.seq > p.seq,
            _ => false,
        }
    }

    /// Rebuilds a coin from its entries in order.
    pub fn from_entries(leaves: &[Leaf], se_id: &SeId) -> Result<CoinChain, RuleError> {
        let (first, rest) = leaves
            .split_first()
            .ok_or_else(|| RuleError::UnknownCoin(String::new()))?;
        let mut coin = CoinChain::open(first, se_id)?;
        for l in rest {
            if l.statechain_id != coin.statechain_id {
                return Err(RuleError::UnknownCoin(hex::encode(l.statechain_id)));
            }
            coin.apply(l, se_id)?;
        }
        Ok(coin)
    }
}

/// Every coin of one SE's log, for members and tests.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    coins: BTreeMap<StatechainId, CoinChain>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Applies the next entry of the log.
    pub fn apply(&mut self, leaf: &Leaf, se_id: &SeId) -> Result<(), RuleError> {
        match &leaf.body {
            Body::Open(_) => {
                if self.coins.contains_key(&leaf.statechain_id) {
                    return Err(RuleError::DuplicateOpen(hex::encode(leaf.statechain_id)));
                }
                let coin = CoinChain::open(leaf, se_id)?;
                self.coins.insert(leaf.statechain_id, coin);
                Ok(())
            }
            _ => self
                .coins
                .get_mut(&leaf.statechain_id)
                .ok_or_else(|| RuleError::UnknownCoin(hex::encode(leaf.statechain_id)))?
                .apply(leaf, se_id),
        }
    }

    /// A coin's state.
    pub fn coin(&self, id: &StatechainId) -> Option<&CoinChain> {
        self.coins.get(id)
    }

    /// The number of coins.
    pub fn len(&self) -> usize {
        self.coins.len()
    }

    /// Whether no coin was opened.
    pub fn is_empty(&self) -> bool {
        self.coins.is_empty()
    }
}
