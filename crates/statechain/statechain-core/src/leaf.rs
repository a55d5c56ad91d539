//! The public log's entries (§5.1): one fixed-layout binary leaf per state
//! change, so the SE, members and receivers hash and check exactly the same
//! bytes. Decoding is strict: the length must be the kind's, points must be
//! on the curve and scalars in `[1, n−1]`; anything else is an error, never a
//! panic.
//!
//! ```text
//! leaf = "LKSC" ‖ 0x01 ‖ kind ‖ statechain_id (16) ‖ seq (u32) ‖ prev (32) ‖ body
//! 's' (228 B): S (33) ‖ A (32) ‖ token_hash (32) ‖ h_init (u32) ‖ interval (u32) ‖ policy (1) ‖ auth_sig (64)
//! 'g' (223 B): n (u32) ‖ R_s (33) ‖ com (32) ‖ c (32) ‖ auth_sig (64)
//! 'x' (187 B): X1 (33) ‖ A_next (32) ‖ auth_sig (64)
//! 't' (191 B): S_new (33) ‖ A_new (32) ‖ count (u32) ‖ auth_sig (64, by A_new)
//! 'f' (126 B): count (u32) ‖ auth_sig (64)
//! ```

use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::auth::{self, Op};
use crate::scalar::{point, ser33, xonly, Scalar};
use crate::{LeafHash, SeId, StatechainId};

/// The service tag every leaf starts with (tlog.md §0).
pub const MAGIC: [u8; 4] = *b"LKSC";
/// The leaf format version.
pub const VERSION: u8 = 0x01;
/// Bytes before the body.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 16 + 4 + 32;
/// The backup construction of §1.3 (decreasing locktimes).
pub const POLICY_DECREASING_LOCKTIME: u8 = 0x01;

/// Why bytes are not a leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    /// Not the `LKSC` tag or not version 1.
    #[error("not an LKSC v1 leaf")]
    Tag,
    /// An unknown kind byte.
    #[error("unknown leaf kind 0x{0:02x}")]
    Kind(u8),
    /// The length is not the kind's.
    #[error("leaf of kind '{kind}' must be {expected} bytes, got {got}")]
    Length {
        /// The kind.
        kind: char,
        /// Its length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A field that must be a point or x-only key is not on the curve.
    #[error("field {0} is not a valid point")]
    Point(&'static str),
    /// A field that must be a scalar is 0 or ≥ n.
    #[error("field {0} is not a scalar in [1, n-1]")]
    Scalar(&'static str),
}

/// The coin opened (`s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The SE's first share key `S_1`.
    pub server_key: PublicKey,
    /// The first owner's auth key `A_1`.
    pub auth_key: XOnlyPublicKey,
    /// `SHA256(token_id)`.
    pub token_hash: [u8; 32],
    /// Blocks from deposit to backup 1's locktime.
    pub h_init: u32,
    /// Locktime decrement per transfer, `c`.
    pub interval: u32,
    /// Backup policy ([`POLICY_DECREASING_LOCKTIME`]).
    pub policy: u8,
    /// Auth signature by `A_1` (op 0x01).
    pub auth_sig: [u8; 64],
}

/// A partial signature was released (`g`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The coin's signature count after this entry.
    pub n: u32,
    /// The SE's nonce `R_s`.
    pub server_nonce: PublicKey,
    /// The owner's commitment.
    pub commitment: [u8; 32],
    /// The challenge `c`.
    pub challenge: Scalar,
    /// Auth signature by the current `A` (op 0x03).
    pub auth_sig: [u8; 64],
}

/// A transfer was started (`x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// `X1 = x1·G`.
    pub x1_pub: PublicKey,
    /// The receiver's auth key.
    pub next_auth_key: XOnlyPublicKey,
    /// Auth signature by the current `A` (op 0x05).
    pub auth_sig: [u8; 64],
}

/// The SE share was rotated to the receiver (`t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The new SE share key.
    pub new_server_key: PublicKey,
    /// The new owner's auth key (= the pending `A_next`).
    pub new_auth_key: XOnlyPublicKey,
    /// The signature count the receiver verified.
    pub count: u32,
    /// Auth signature by `A_new` (op 0x07).
    pub auth_sig: [u8; 64],
}

/// The coin was withdrawn (`f`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// The signature count at withdrawal.
    pub count: u32,
    /// Auth signature by the current `A` (op 0x08).
    pub auth_sig: [u8; 64],
}

/// A leaf's kind-specific body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `s`.
    Open(Open),
    /// `g`.
    Signature(Signature),
    /// `x`.
    Transfer(Transfer),
    /// `t`.
    Updated(Updated),
    /// `f`.
    Final(Final),
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The coin.
    pub statechain_id: StatechainId,
    /// The coin's entry number, from 0.
    pub seq: u32,
    /// The leaf hash of the coin's previous entry (zero for `s`).
    pub prev: LeafHash,
    /// The body.
    pub body: Body,
}

impl Body {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Body::Open(_) => b's',
            Body::Signature(_) => b'g',
            Body::Transfer(_) => b'x',
            Body::Updated(_) => b't',
            Body::Final(_) => b'f',
        }
    }

    /// The op whose authorisation the body carries.
    pub fn op(&self) -> Op {
        match self {
            Body::Open(_) => Op::DepositInit,
            Body::Signature(_) => Op::SignSecond,
            Body::Transfer(_) => Op::TransferSender,
            Body::Updated(_) => Op::TransferReceiver,
            Body::Final(_) => Op::WithdrawComplete,
        }
    }

    /// The auth signature.
    pub fn auth_sig(&self) -> &[u8; 64] {
        match self {
            Body::Open(b) => &b.auth_sig,
            Body::Signature(b) => &b.auth_sig,
            Body::Transfer(b) => &b.auth_sig,
            Body::Updated(b) => &b.auth_sig,
            Body::Final(b) => &b.auth_sig,
        }
    }
}

/// The body length of each kind.
fn body_len(kind: u8) -> Option<usize> {
    Some(match kind {
        b's' => 33 + 32 + 32 + 4 + 4 + 1 + 64,
        b'g' => 4 + 33 + 32 + 32 + 64,
        b'x' => 33 + 32 + 64,
        b't' => 33 + 32 + 4 + 64,
        b'f' => 4 + 64,
        _ => return None,
    })
}

/// A bounds-checked reader over a slice whose length was checked up front.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.buf.split_at(N);
        self.buf = rest;
        head.try_into().expect("split_at gives N bytes")
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take::<4>())
    }
    fn point(&mut self, name: &'static str) -> Result<PublicKey, LeafError> {
        point(&self.take::<33>()).ok_or(LeafError::Point(name))
    }
    fn xonly(&mut self, name: &'static str) -> Result<XOnlyPublicKey, LeafError> {
        xonly(&self.take::<32>()).ok_or(LeafError::Point(name))
    }
}

impl Leaf {
    /// Parses a leaf strictly.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LeafError> {
        if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(LeafError::Tag);
        }
        let kind = bytes[5];
        let expected = HEADER_LEN + body_len(kind).ok_or(LeafError::Kind(kind))?;
        if bytes.len() != expected {
            return Err(LeafError::Length {
                kind: kind as char,
                expected,
                got: bytes.len(),
            });
        }
        let mut r = Reader { buf: &bytes[6..] };
        let statechain_id = r.take::<16>();
        let seq = r.u32();
        let prev = r.take::<32>();
        let body = match kind {
            b's' => Body::Open(Open {
                server_key: r.point("S")?,
                auth_key: r.xonly("A")?,
                token_hash: r.take::<32>(),
                h_init: r.u32(),
                interval: r.u32(),
                policy: r.take::<1>()[0],
                auth_sig: r.take::<64>(),
            }),
            b'g' => Body::Signature(Signature {
                n: r.u32(),
                server_nonce: r.point("R_s")?,
                commitment: r.take::<32>(),
                challenge: Scalar::from_bytes(&r.take::<32>())
                    .map_err(|_| LeafError::Scalar("c"))?,
                auth_sig: r.take::<64>(),
            }),
            b'x' => Body::Transfer(Transfer {
                x1_pub: r.point("X1")?,
                next_auth_key: r.xonly("A_next")?,
                auth_sig: r.take::<64>(),
            }),
            b't' => Body::Updated(Updated {
                new_server_key: r.point("S_new")?,
                new_auth_key: r.xonly("A_new")?,
                count: r.u32(),
                auth_sig: r.take::<64>(),
            }),
            b'f' => Body::Final(Final {
                count: r.u32(),
                auth_sig: r.take::<64>(),
            }),
            other => return Err(LeafError::Kind(other)),
        };
        Ok(Leaf {
            statechain_id,
            seq,
            prev,
            body,
        })
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let kind = self.body.kind();
        let mut out = Vec::with_capacity(HEADER_LEN + body_len(kind).unwrap_or(0));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&self.statechain_id);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev);
        match &self.body {
            Body::Open(b) => {
                out.extend_from_slice(&ser33(&b.server_key));
                out.extend_from_slice(&b.auth_key.serialize());
                out.extend_from_slice(&b.token_hash);
                out.extend_from_slice(&b.h_init.to_be_bytes());
                out.extend_from_slice(&b.interval.to_be_bytes());
                out.push(b.policy);
            }
            Body::Signature(b) => {
                out.extend_from_slice(&b.n.to_be_bytes());
                out.extend_from_slice(&ser33(&b.server_nonce));
                out.extend_from_slice(&b.commitment);
                out.extend_from_slice(&b.challenge.to_bytes());
            }
            Body::Transfer(b) => {
                out.extend_from_slice(&ser33(&b.x1_pub));
                out.extend_from_slice(&b.next_auth_key.serialize());
            }
            Body::Updated(b) => {
                out.extend_from_slice(&ser33(&b.new_server_key));
                out.extend_from_slice(&b.new_auth_key.serialize());
                out.extend_from_slice(&b.count.to_be_bytes());
            }
            Body::Final(b) => {
                out.extend_from_slice(&b.count.to_be_bytes());
            }
        }
        out.extend_from_slice(self.body.auth_sig());
        out
    }

    /// The RFC 9162 leaf hash (what the next entry's `prev` and a client's
    /// `head` name).
    pub fn hash(&self) -> LeafHash {
        crate::hash::leaf_hash(&self.encode())
    }

    /// The digest the entry's auth signature covers (§3.2): for `s` with a
    /// zero id and head, otherwise with `head = prev`.
    pub fn auth_digest(&self, se_id: &SeId) -> [u8; 32] {
        let op = self.body.op();
        match &self.body {
            Body::Open(b) => auth::digest(
                se_id,
                op,
                &[0; 16],
                &[0; 32],
                &[&b.auth_key.serialize(), &b.token_hash],
            ),
            Body::Signature(b) => auth::digest(
                se_id,
                op,
                &self.statechain_id,
                &self.prev,
                &[
                    &ser33(&b.server_nonce),
                    &b.commitment,
                    &b.challenge.to_bytes(),
                ],
            ),
            Body::Transfer(b) => auth::digest(
                se_id,
                op,
                &self.statechain_id,
                &self.prev,
                &[&b.next_auth_key.serialize()],
            ),
            Body::Updated(b) => auth::digest(
                se_id,
                op,
                &self.statechain_id,
                &self.prev,
                &[
                    &b.new_auth_key.serialize(),
                    &ser33(&b.new_server_key),
                    &b.count.to_be_bytes(),
                ],
            ),
            Body::Final(b) => auth::digest(
                se_id,
                op,
                &self.statechain_id,
                &self.prev,
                &[&b.count.to_be_bytes()],
            ),
        }
    }
}
