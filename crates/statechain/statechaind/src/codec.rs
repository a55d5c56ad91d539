//! The `statechain` table's row formats (§5.3). Public coin state is one
//! row (`s ‖ id`); each secret is its own sealed row so that erasing it is
//! deleting that row (and, after the next KEK rotation, unrecoverable).
//! Rows are fixed binary layouts, versioned by the schema in `c ‖ "meta"`;
//! a row that does not decode is reported as corruption, never a panic.

use std::collections::BTreeMap;

use secp256k1::{PublicKey, XOnlyPublicKey};
use statechain_core::rules::{CoinChain, PendingTransfer, Session};
use statechain_core::scalar::{point, ser33, xonly, Scalar};

/// A stored row does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {0} row")]
pub struct Corrupt(pub &'static str);

/// Row key prefixes.
pub mod key {
    /// `s ‖ id`: public coin state.
    pub fn coin(id: &[u8; 16]) -> Vec<u8> {
        [b"s".as_slice(), id].concat()
    }
    /// `z ‖ id`: sealed share.
    pub fn share(id: &[u8; 16]) -> Vec<u8> {
        [b"z".as_slice(), id].concat()
    }
    /// `n ‖ id`: pending session.
    pub fn session(id: &[u8; 16]) -> Vec<u8> {
        [b"n".as_slice(), id].concat()
    }
    /// `x ‖ id`: pending transfer's `x1`.
    pub fn transfer(id: &[u8; 16]) -> Vec<u8> {
        [b"x".as_slice(), id].concat()
    }
    /// `e ‖ id ‖ seq`: log index of entry `seq`.
    pub fn entry(id: &[u8; 16], seq: u32) -> Vec<u8> {
        [b"e".as_slice(), id, &seq.to_be_bytes()].concat()
    }
    /// `e ‖ id`: the prefix of a coin's entries.
    pub fn entries(id: &[u8; 16]) -> Vec<u8> {
        [b"e".as_slice(), id].concat()
    }
    /// `g ‖ id ‖ n`: signature `n`'s index and partial signature.
    pub fn signature(id: &[u8; 16], n: u32) -> Vec<u8> {
        [b"g".as_slice(), id, &n.to_be_bytes()].concat()
    }
    /// `h ‖ leaf_hash`: log index.
    pub fn leaf(hash: &[u8; 32]) -> Vec<u8> {
        [b"h".as_slice(), hash].concat()
    }
    /// `m ‖ A_next ‖ id`: mailbox.
    pub fn mailbox(a_next: &[u8; 32], id: &[u8; 16]) -> Vec<u8> {
        [b"m".as_slice(), a_next, id].concat()
    }
    /// `m ‖ A_next`: a receiver's inbox prefix.
    pub fn inbox(a_next: &[u8; 32]) -> Vec<u8> {
        [b"m".as_slice(), a_next].concat()
    }
    /// `k ‖ token_id`: token.
    pub fn token(id: &[u8; 16]) -> Vec<u8> {
        [b"k".as_slice(), id].concat()
    }
    /// `q ‖ id ‖ op`: last applied request and its reply.
    pub fn applied(id: &[u8; 16], op: u8) -> Vec<u8> {
        [b"q".as_slice(), id, &[op]].concat()
    }
    /// `c ‖ "meta"`.
    pub const META: &[u8] = b"cmeta";
}

/// Appends fixed-width fields.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// Bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// A big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
}

/// Reads fixed-width fields; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    row: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, a `row` row.
    pub fn new(buf: &'a [u8], row: &'static str) -> Self {
        Reader { buf, row }
    }
    /// `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        if self.buf.len() < N {
            return Err(Corrupt(self.row));
        }
        let (head, rest) = self.buf.split_at(N);
        self.buf = rest;
        head.try_into().map_err(|_| Corrupt(self.row))
    }
    /// A u8.
    pub fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }
    /// A u32.
    pub fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// A u64.
    pub fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// A compressed point.
    pub fn point(&mut self) -> Result<PublicKey, Corrupt> {
        point(&self.array::<33>()?).ok_or(Corrupt(self.row))
    }
    /// An x-only key.
    pub fn xonly(&mut self) -> Result<XOnlyPublicKey, Corrupt> {
        xonly(&self.array::<32>()?).ok_or(Corrupt(self.row))
    }
    /// A scalar.
    pub fn scalar(&mut self) -> Result<Scalar, Corrupt> {
        Scalar::from_bytes(&self.array()?).map_err(|_| Corrupt(self.row))
    }
    /// The rest.
    pub fn rest(self) -> &'a [u8] {
        self.buf
    }
    /// Requires that nothing is left.
    pub fn end(self) -> Result<(), Corrupt> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Corrupt(self.row))
        }
    }
}

/// The `s ‖ id` row: the coin's public state and its last applied digest
/// per op.
pub fn encode_coin(chain: &CoinChain, last_applied: &BTreeMap<u8, [u8; 32]>) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(&chain.statechain_id)
        .bytes(&ser33(&chain.server_key))
        .bytes(&chain.auth_key.serialize())
        .u32(chain.count)
        .u32(chain.head_seq)
        .bytes(&chain.head)
        .u32(chain.h_init)
        .u32(chain.interval)
        .bytes(&[chain.policy])
        .bytes(&chain.token_hash)
        .u32(chain.transfers)
        .bytes(&[chain.closed as u8]);
    match &chain.pending {
        Some(p) => {
            w.bytes(&[1])
                .bytes(&p.next_auth_key.serialize())
                .bytes(&ser33(&p.x1_pub))
                .u32(p.seq);
        }
        None => {
            w.bytes(&[0]);
        }
    }
    w.u32(chain.sessions.len() as u32);
    for s in &chain.sessions {
        w.u32(s.seq)
            .u32(s.n)
            .bytes(&s.server_nonce)
            .bytes(&s.commitment)
            .bytes(&s.challenge.to_bytes());
    }
    w.u32(last_applied.len() as u32);
    for (op, digest) in last_applied {
        w.bytes(&[*op]).bytes(digest);
    }
    w.0
}

/// Decodes an `s ‖ id` row.
pub fn decode_coin(row: &[u8]) -> Result<(CoinChain, BTreeMap<u8, [u8; 32]>), Corrupt> {
    let mut r = Reader::new(row, "coin");
    let statechain_id = r.array()?;
    let server_key = r.point()?;
    let auth_key = r.xonly()?;
    let count = r.u32()?;
    let head_seq = r.u32()?;
    let head = r.array()?;
    let h_init = r.u32()?;
    let interval = r.u32()?;
    let policy = r.u8()?;
    let token_hash = r.array()?;
    let transfers = r.u32()?;
    let closed = r.u8()? == 1;
    let pending = match r.u8()? {
        0 => None,
        _ => Some(PendingTransfer {
            next_auth_key: r.xonly()?,
            x1_pub: r.point()?,
            seq: r.u32()?,
        }),
    };
    let n = r.u32()?;
    let mut sessions = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        sessions.push(Session {
            seq: r.u32()?,
            n: r.u32()?,
            server_nonce: r.array()?,
            commitment: r.array()?,
            challenge: r.scalar()?,
        });
    }
    let m = r.u32()?;
    let mut last_applied = BTreeMap::new();
    for _ in 0..m {
        let op = r.u8()?;
        last_applied.insert(op, r.array()?);
    }
    r.end()?;
    Ok((
        CoinChain {
            statechain_id,
            server_key,
            auth_key,
            count,
            head_seq,
            head,
            h_init,
            interval,
            policy,
            token_hash,
            pending,
            sessions,
            transfers,
            closed,
        },
        last_applied,
    ))
}
