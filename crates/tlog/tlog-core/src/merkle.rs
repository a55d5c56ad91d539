//! RFC 9162 §2.1 Merkle trees (tlog.md §2): leaf and node hashes, compact
//! ranges, and the verification and generation of inclusion and
//! consistency proofs.
//!
//! Verification follows the RFC's algorithms step by step, with the spec's
//! bounds on proof lengths, so no input can make it loop, allocate or
//! panic. Generation reads stored nodes through [`NodeSource`]: node
//! (ℓ, i) covers `[i·2^ℓ, (i+1)·2^ℓ)` and never changes once it exists, and
//! any subtree root is a fold of O(log n) of them.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `H("")`: the root of the empty tree.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Most hashes an inclusion proof may have.
pub const MAX_INCLUSION_PROOF: usize = 63;
/// Most hashes a consistency proof may have.
pub const MAX_CONSISTENCY_PROOF: usize = 64;
/// Largest tree size a follower accepts (PostgreSQL `bigint`).
pub const MAX_SIZE: u64 = (1 << 63) - 1;

/// `H(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(entry)
        .finalize()
        .into()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Why a proof does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not in the tree.
    #[error("index {index} is not below the tree size {size}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The size.
        size: u64,
    },
    /// The old size is larger than the new one.
    #[error("old size {old} is larger than new size {new}")]
    SizesOutOfOrder {
        /// Old.
        old: u64,
        /// New.
        new: u64,
    },
    /// More hashes than any valid proof has.
    #[error("proof of {0} hashes is too long")]
    TooLong(usize),
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has the wrong length for these sizes")]
    WrongLength,
    /// The hashes do not lead to the claimed root(s).
    #[error("proof does not lead to the claimed root")]
    Mismatch,
}

/// RFC 9162 §2.1.3.2: does `proof` show `leaf` at `index` in the tree of
/// `size` with `root`?
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(index, size, leaf, proof)? != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// The root of the tree of `size` in which `proof` puts `leaf` at `index`
/// (RFC 9162 §2.1.3.2 without the final comparison), for a caller that
/// checks the root some other way, such as a signature over it.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_INCLUSION_PROOF {
        return Err(ProofError::TooLong(proof.len()));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree (`old`, `old_root`) is a
/// prefix of (`new`, `new_root`)?
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if proof.len() > MAX_CONSISTENCY_PROOF {
        return Err(ProofError::TooLong(proof.len()));
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path = proof.iter();
    let first = if old.is_power_of_two() {
        *old_root
    } else {
        *path.next().ok_or(ProofError::WrongLength)?
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// The roots of the perfect subtrees that make up `[0, size)`, largest
/// first: enough to append and to compute the root (tlog.md §2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

/// Why bytes are not a compact range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a compact range of size {size} has {expected} hashes, not {got}")]
pub struct RangeError {
    /// The size.
    pub size: u64,
    /// Hashes it must have.
    pub expected: u32,
    /// Hashes given.
    pub got: usize,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// From stored parts: one hash per set bit of `size`, largest first.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, RangeError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(RangeError {
                size,
                expected: size.count_ones(),
                got: hashes.len(),
            });
        }
        Ok(CompactRange { size, hashes })
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its hashes, largest subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash; returns the nodes completed by it, lowest
    /// first, as (level, index, hash) with the leaf itself at level 0.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let mut done = vec![(0u8, self.size, leaf)];
        let mut h = leaf;
        let mut level = 0u8;
        while (self.size >> level) & 1 == 1 {
            let left = self.hashes.pop().unwrap_or(EMPTY_ROOT); // invariant: one per set bit
            h = node_hash(&left, &h);
            level += 1;
            done.push((level, self.size >> level, h));
        }
        self.hashes.push(h);
        self.size += 1;
        done
    }

    /// `MTH(D[0:size])`.
    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        let Some(last) = hashes.next() else {
            return EMPTY_ROOT;
        };
        hashes.fold(*last, |r, x| node_hash(x, &r))
    }
}

/// Stored tree nodes: node (`level`, `index`) is `MTH` of
/// `[index·2^level, (index+1)·2^level)`; only complete nodes are asked for.
pub trait NodeSource {
    /// The error of a read.
    type Error;
    /// One node.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// `MTH(D[start:end])` from stored nodes, for `start < end` where `start` is
/// a multiple of the largest power of two ≤ `end - start`... or, in general,
/// for any range that RFC 9162's recursion produces (it folds the perfect
/// subtrees covering the range, right to left).
pub fn subtree_root<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    if start >= end {
        return Ok(EMPTY_ROOT);
    }
    // Decompose [start, end) into perfect aligned subtrees, left to right.
    let mut parts = Vec::new();
    let mut at = start;
    while at < end {
        let mut level = if at == 0 {
            63
        } else {
            at.trailing_zeros().min(63)
        };
        while level > 0 && (end - at) < (1u64 << level) {
            level -= 1;
        }
        parts.push(src.node(level as u8, at >> level)?);
        at += 1u64 << level;
    }
    let mut hashes = parts.iter().rev();
    let last = *hashes.next().unwrap_or(&EMPTY_ROOT);
    Ok(hashes.fold(last, |r, x| node_hash(x, &r)))
}

fn split(n: u64) -> u64 {
    // The largest power of two strictly below n (n ≥ 2).
    1u64 << (63 - (n - 1).leading_zeros())
}

/// PATH(index, D[0:size]) (tlog.md §2.3).
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if index >= size {
        return Ok(Err(ProofError::IndexOutOfRange { index, size }));
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    // Walk down, recording siblings; RFC order is leaf-up, so reverse.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            proof.push(subtree_root(src, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(subtree_root(src, lo, lo + k)?);
            lo += k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(Ok(proof))
}

/// PROOF(old, D[0:new]) (tlog.md §2.4).
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if old > new {
        return Ok(Err(ProofError::SizesOutOfOrder { old, new }));
    }
    if old == 0 || old == new {
        return Ok(Ok(Vec::new()));
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    loop {
        if m == hi - lo {
            if !whole {
                proof.push(subtree_root(src, lo, hi)?);
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            proof.push(subtree_root(src, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(subtree_root(src, lo, lo + k)?);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(Ok(proof))
}

/// The node ranges `[lo, hi)` of tree `new` that PROOF(`old`, `new`)
/// holds, in proof order (RFC order, leaf-up). Depends on the sizes only.
fn consistency_ranges(old: u64, new: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    if old == 0 || old >= new {
        return ranges;
    }
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    loop {
        if m == hi - lo {
            if !whole {
                ranges.push((lo, hi));
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    ranges.reverse();
    ranges
}

/// PATH(`index`, D[0:`new`]) for a node that holds the tree only below
/// `old` (`src` answers nodes inside `[0, old)`) and a consistency proof
/// `old` → `new` that it verified. This is how a follower that refused an
/// entry of a verified chunk proves, under the signed checkpoint it was
/// announced with, exactly which entry it refused (tlog.md §7.6) without
/// holding the rest of the tree: every node of the larger tree is either
/// inside `[0, old)`, one the consistency proof carries, or the parent of
/// such nodes.
pub fn inclusion_proof_beyond<S: NodeSource>(
    src: &S,
    index: u64,
    old: u64,
    new: u64,
    consistency: &[Hash],
) -> Result<Result<Vec<Hash>, ProofError>, S::Error> {
    if index >= old || old > new {
        return Ok(Err(ProofError::IndexOutOfRange { index, size: old }));
    }
    if old == new {
        return inclusion_proof(src, index, new);
    }
    let ranges = consistency_ranges(old, new);
    if ranges.len() != consistency.len() {
        return Ok(Err(ProofError::WrongLength));
    }
    let known: std::collections::HashMap<(u64, u64), Hash> = ranges
        .into_iter()
        .zip(consistency.iter().copied())
        .collect();
    fn hash_of<S: NodeSource>(
        src: &S,
        known: &std::collections::HashMap<(u64, u64), Hash>,
        old: u64,
        lo: u64,
        hi: u64,
    ) -> Result<Result<Hash, ProofError>, S::Error> {
        if hi <= old {
            return subtree_root(src, lo, hi).map(Ok);
        }
        if let Some(h) = known.get(&(lo, hi)) {
            return Ok(Ok(*h));
        }
        if hi - lo < 2 {
            return Ok(Err(ProofError::WrongLength));
        }
        let k = split(hi - lo);
        let left = match hash_of(src, known, old, lo, lo + k)? {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let right = match hash_of(src, known, old, lo + k, hi)? {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(node_hash(&left, &right)))
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, new, index);
    while hi - lo > 1 {
        let k = split(hi - lo);
        let sibling = if m < k {
            let s = hash_of(src, &known, old, lo + k, hi)?;
            hi = lo + k;
            s
        } else {
            let s = hash_of(src, &known, old, lo, lo + k)?;
            lo += k;
            m -= k;
            s
        };
        match sibling {
            Ok(h) => proof.push(h),
            Err(e) => return Ok(Err(e)),
        }
    }
    proof.reverse();
    Ok(Ok(proof))
}

/// A whole tree in memory: every level's complete nodes. For tests,
/// oracles and small logs; stores use tiles.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    range: CompactRange,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: &[u8]) {
        self.push_hash(leaf_hash(entry));
    }

    /// Appends a leaf hash.
    pub fn push_hash(&mut self, leaf: Hash) {
        for (level, index, hash) in self.range.push(leaf) {
            let level = usize::from(level);
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            debug_assert_eq!(self.levels[level].len() as u64, index);
            self.levels[level].push(hash);
        }
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// Its root.
    pub fn root(&self) -> Hash {
        self.range.root()
    }

    /// The root at any earlier size.
    pub fn root_at(&self, size: u64) -> Hash {
        match subtree_root(self, 0, size.min(self.size())) {
            Ok(root) => root,
            Err(never) => match never {},
        }
    }

    /// Its compact range.
    pub fn range(&self) -> &CompactRange {
        &self.range
    }
}

impl NodeSource for MemoryTree {
    type Error = std::convert::Infallible;
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        // Callers ask only for complete nodes, which exist.
        Ok(self
            .levels
            .get(usize::from(level))
            .and_then(|l| l.get(index as usize))
            .copied()
            .unwrap_or(EMPTY_ROOT))
    }
}
