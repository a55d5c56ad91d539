//! One entry of a namespace's log: one committed put.

use sha2::{Digest, Sha256};
use tlog_core::wire::{DecodeError, Reader, Writer};
use tlog_core::{leaf_hash, Hash};

use crate::state::StateLeaf;

/// Encoded length of an [`Entry`].
pub const ENTRY_LEN: usize = 8 + 32 + 32 + 8 + 32;

/// A log entry: which put it was and what the namespace held afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its index in the log.
    pub seq: u64,
    /// The log's root before it (at size `seq`): each entry names its
    /// predecessor, so a history cannot be reordered even entry by entry.
    pub prev_root: Hash,
    /// [`writes_digest`] of the put.
    pub writes: Hash,
    /// Keys in the namespace after the put.
    pub state_count: u64,
    /// The state root after the put.
    pub state_root: Hash,
}

impl Entry {
    /// `u64 seq ‖ prev_root ‖ writes ‖ u64 state_count ‖ state_root`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.into_inner()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.seq);
        w.hash(&self.prev_root);
        w.hash(&self.writes);
        w.u64(self.state_count);
        w.hash(&self.state_root);
    }

    /// Parses exactly [`ENTRY_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let e = Self::read(&mut r)?;
        r.end()?;
        Ok(e)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Entry {
            seq: r.u64()?,
            prev_root: r.hash()?,
            writes: r.hash()?,
            state_count: r.u64()?,
            state_root: r.hash()?,
        })
    }

    /// Its leaf hash in the log's Merkle tree.
    pub fn leaf(&self) -> Hash {
        leaf_hash(&self.encode())
    }
}

/// SHA-256 over a domain tag and the leaf hashes of the written entries in
/// key order: binds an entry to exactly the keys, versions and values put.
pub fn writes_digest(written: &[StateLeaf]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"lightkeeper lss writes v1\n");
    for leaf in written {
        h.update(leaf.hash());
    }
    h.finalize().into()
}

/// The same digest over answer leaves (a prefix read's result).
pub fn answer_digest(answer: &[StateLeaf]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"lightkeeper lss answer v1\n");
    for leaf in answer {
        h.update(leaf.hash());
    }
    h.finalize().into()
}
