//! The commitment to a namespace's whole current state, and proofs that a
//! prefix read left nothing out.
//!
//! The state is the sorted list of the namespace's entries, each committed as
//! a leaf `(key, version, SHA-256(value))`; its digest is the RFC 9162 Merkle
//! root of those leaves in byte order of keys, so a client that reads
//! everything recomputes it exactly. A prefix read is the contiguous run of
//! leaves whose keys start with the prefix; its proof is the run's neighbours
//! (the last key before it and the first after it, which must not match the
//! prefix) and the hashes of the subtrees outside the run. With the root
//! signed, a run that lacks a key of the prefix cannot be proved unless the
//! signed tree itself is out of order, which a full read shows.
//!
//! The server keeps every level of the tree ([`StateTree`]), so an update in
//! place costs `O(log n)` hashes and an insertion `O(n)`; RFC 9162's tree is
//! the bottom-up tree in which a level's unpaired last node moves up as is.

use sha2::{Digest, Sha256};
use tlog_core::wire::{DecodeError, Reader, Writer};
use tlog_core::{leaf_hash, node_hash, Hash, EMPTY_ROOT};

/// Longest key a leaf may carry (lssd's own limit is lower).
pub const MAX_KEY: usize = 64 * 1024;

/// One entry of the state as the commitment sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateLeaf {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: i64,
    /// SHA-256 of its value.
    #[serde(with = "crate::b64_hash")]
    pub value_hash: Hash,
}

impl StateLeaf {
    /// The leaf of a stored entry.
    pub fn of(key: &str, version: i64, value: &[u8]) -> Self {
        StateLeaf {
            key: key.to_owned(),
            version,
            value_hash: Sha256::digest(value).into(),
        }
    }

    /// `leaf_hash(u32 len ‖ key ‖ i64 version ‖ value hash)`.
    pub fn hash(&self) -> Hash {
        let mut w = Writer::default();
        self.write(&mut w);
        leaf_hash(&w.into_inner())
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.blob32(self.key.as_bytes());
        w.u64(self.version as u64);
        w.hash(&self.value_hash);
    }
}

/// `MTH` of `leaves` (the empty root for none).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n` (for `n ≥ 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The server's state tree: sorted keys with their leaves and every level.
#[derive(Debug, Clone, Default)]
pub struct StateTree {
    keys: Vec<(String, i64)>,
    /// `levels[0]` are the leaf hashes; `levels[l][j]` is `MTH` of leaves
    /// `[j·2^l, min((j+1)·2^l, n))`.
    levels: Vec<Vec<Hash>>,
}

impl StateTree {
    /// From leaves in strictly increasing key order (checked).
    pub fn from_sorted(leaves: Vec<StateLeaf>) -> Result<Self, StateError> {
        if leaves.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err(StateError::Unsorted);
        }
        let hashes = leaves.iter().map(StateLeaf::hash).collect();
        let keys = leaves.into_iter().map(|l| (l.key, l.version)).collect();
        let mut tree = StateTree {
            keys,
            levels: vec![hashes],
        };
        tree.rebuild();
        Ok(tree)
    }

    /// Approximate heap bytes held (keys, versions, every level's hashes).
    pub fn memory(&self) -> usize {
        let keys: usize = self
            .keys
            .iter()
            .map(|(k, _)| k.capacity() + std::mem::size_of::<(String, i64)>())
            .sum();
        keys + self.levels.iter().map(|l| l.capacity() * 32).sum::<usize>()
    }

    /// Number of keys.
    pub fn count(&self) -> u64 {
        self.keys.len() as u64
    }

    /// The state root.
    pub fn root(&self) -> Hash {
        match self.levels.last() {
            Some(top) if top.len() == 1 => top[0],
            _ => EMPTY_ROOT,
        }
    }

    /// The version stored for `key`.
    pub fn version(&self, key: &str) -> Option<i64> {
        self.position(key).ok().map(|i| self.keys[i].1)
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.keys.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Sets `leaf` (replacing its key's leaf or inserting it).
    pub fn upsert(&mut self, leaf: &StateLeaf) {
        let hash = leaf.hash();
        match self.position(&leaf.key) {
            Ok(i) => {
                self.keys[i].1 = leaf.version;
                self.levels[0][i] = hash;
                let mut j = i;
                for l in 1..self.levels.len() {
                    j /= 2;
                    let below = &self.levels[l - 1];
                    let h = match below.get(2 * j + 1) {
                        Some(right) => node_hash(&below[2 * j], right),
                        None => below[2 * j],
                    };
                    self.levels[l][j] = h;
                }
            }
            Err(i) => {
                self.keys.insert(i, (leaf.key.clone(), leaf.version));
                self.levels[0].insert(i, hash);
                self.rebuild();
            }
        }
    }

    fn rebuild(&mut self) {
        self.levels.truncate(1);
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        while self.levels.last().map_or(0, Vec::len) > 1 {
            let below = self.levels.last().map(Vec::as_slice).unwrap_or_default();
            let up = below
                .chunks(2)
                .map(|c| match c {
                    [l, r] => node_hash(l, r),
                    [one] => *one,
                    _ => EMPTY_ROOT, // chunks(2) yields one or two
                })
                .collect();
            self.levels.push(up);
        }
    }

    /// `MTH` of the subtree `[start, start + size)` that RFC 9162's
    /// recursion produces (aligned on its own size rounded up).
    fn subtree(&self, start: u64, size: u64) -> Hash {
        let level = 64 - (size - 1).leading_zeros() as usize; // ceil(log2 size)
        let level = if size == 1 { 0 } else { level };
        self.levels[level][(start >> level) as usize]
    }

    /// The proof for the keys starting with `prefix`: the indices of the run
    /// and what a client needs to check it against [`StateTree::root`].
    pub fn prefix_proof(&self, prefix: &str) -> (std::ops::Range<usize>, PrefixProof) {
        let start = self.keys.partition_point(|(k, _)| k.as_str() < prefix);
        let end = start
            + self.keys[start..]
                .iter()
                .take_while(|(k, _)| k.starts_with(prefix))
                .count();
        let n = self.keys.len();
        let lo = start.saturating_sub(1);
        let hi = if end < n { end + 1 } else { end };
        let mut hashes = Vec::new();
        if n > 0 {
            self.outside(0, n as u64, lo as u64, hi as u64, &mut hashes);
        }
        let leaf = |i: usize| {
            let (key, version) = &self.keys[i];
            NeighbourLeaf {
                key: key.clone(),
                version: *version,
                hash: self.levels[0][i],
            }
        };
        let proof = PrefixProof {
            total: n as u64,
            start: start as u64,
            left: (start > 0).then(|| leaf(start - 1)),
            right: (end < n).then(|| leaf(end)),
            hashes,
        };
        (start..end, proof)
    }

    fn outside(&self, start: u64, size: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        if start + size <= lo || start >= hi {
            out.push(self.subtree(start, size));
        } else if start >= lo && start + size <= hi {
            // Inside the run: the client recomputes it.
        } else {
            let k = split(size);
            self.outside(start, k, lo, hi, out);
            self.outside(start + k, size - k, lo, hi, out);
        }
    }
}

/// A run's neighbour: its key and version in clear (to check order and
/// that it does not match the prefix) and its leaf hash (its value is not
/// the reader's business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourLeaf {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: i64,
    /// Its leaf hash (checked by the root, not recomputed).
    pub hash: Hash,
}

/// The proof that a prefix read is the whole run of its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixProof {
    /// Keys in the state.
    pub total: u64,
    /// Index of the run's first key (its insertion point when empty).
    pub start: u64,
    /// The key before the run, present iff `start > 0`.
    pub left: Option<NeighbourLeaf>,
    /// The key after it, present iff the run does not reach the end.
    pub right: Option<NeighbourLeaf>,
    /// Subtree hashes outside `[start - 1, end + 1)`, left to right.
    pub hashes: Vec<Hash>,
}

/// Most hashes a prefix proof holds (two paths of at most 63 each).
pub const MAX_PROOF_HASHES: usize = 128;

/// Why a state or a prefix answer does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Keys out of order or repeated.
    #[error("keys are not in strictly increasing order")]
    Unsorted,
    /// A returned key does not start with the prefix.
    #[error("key {0:?} does not start with the prefix")]
    OutsidePrefix(String),
    /// A neighbour is missing, superfluous, or matches the prefix.
    #[error("bad neighbour: {0}")]
    Neighbour(&'static str),
    /// Positions outside the tree.
    #[error("positions do not fit a tree of {0} keys")]
    Positions(u64),
    /// The proof has too few or too many hashes.
    #[error("proof has the wrong number of hashes")]
    ProofLength,
    /// The recomputed root differs from the signed one.
    #[error("the answer and proof do not hash to the signed state root")]
    Root,
}

impl PrefixProof {
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.total);
        w.u64(self.start);
        for n in [&self.left, &self.right] {
            match n {
                None => w.u8(0),
                Some(n) => {
                    w.u8(1);
                    w.blob32(n.key.as_bytes());
                    w.u64(n.version as u64);
                    w.hash(&n.hash);
                }
            }
        }
        w.proof(&self.hashes);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let total = r.u64()?;
        let start = r.u64()?;
        let mut neighbour = || -> Result<Option<NeighbourLeaf>, DecodeError> {
            match r.u8()? {
                0 => Ok(None),
                1 => {
                    let key =
                        String::from_utf8(r.blob32(MAX_KEY)?).map_err(|_| DecodeError::Utf8)?;
                    Ok(Some(NeighbourLeaf {
                        key,
                        version: r.u64()? as i64,
                        hash: r.hash()?,
                    }))
                }
                _ => Err(DecodeError::TooLong),
            }
        };
        let left = neighbour()?;
        let right = neighbour()?;
        let hashes = r.proof(MAX_PROOF_HASHES)?;
        Ok(PrefixProof {
            total,
            start,
            left,
            right,
            hashes,
        })
    }

    /// Checks that `answer` is every key of `prefix` in the state of
    /// `count` keys whose root is `root`.
    pub fn verify(
        &self,
        prefix: &str,
        answer: &[StateLeaf],
        count: u64,
        root: &Hash,
    ) -> Result<(), StateError> {
        if self.total != count {
            return Err(StateError::Positions(count));
        }
        if answer.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err(StateError::Unsorted);
        }
        if let Some(a) = answer.iter().find(|a| !a.key.starts_with(prefix)) {
            return Err(StateError::OutsidePrefix(a.key.clone()));
        }
        let end = self
            .start
            .checked_add(answer.len() as u64)
            .filter(|&e| e <= count)
            .ok_or(StateError::Positions(count))?;
        if self.left.is_some() != (self.start > 0) {
            return Err(StateError::Neighbour(
                "left neighbour present iff the run is not first",
            ));
        }
        if self.right.is_some() != (end < count) {
            return Err(StateError::Neighbour(
                "right neighbour present iff the run is not last",
            ));
        }
        if let Some(l) = &self.left {
            if l.key.as_str() >= prefix {
                return Err(StateError::Neighbour(
                    "left neighbour not before the prefix",
                ));
            }
        }
        if let Some(r) = &self.right {
            if r.key.starts_with(prefix) || r.key.as_str() < prefix {
                return Err(StateError::Neighbour(
                    "right neighbour not after the prefix",
                ));
            }
        }
        let mut run: Vec<Hash> = Vec::with_capacity(answer.len() + 2);
        run.extend(self.left.as_ref().map(|n| n.hash));
        run.extend(answer.iter().map(StateLeaf::hash));
        run.extend(self.right.as_ref().map(|n| n.hash));
        if run.is_empty() {
            return if count == 0 && *root == EMPTY_ROOT && self.hashes.is_empty() {
                Ok(())
            } else {
                Err(StateError::Root)
            };
        }
        let lo = self.start - u64::from(self.left.is_some());
        let mut hashes = self.hashes.iter();
        let got = run_root(0, count, lo, &run, &mut hashes).ok_or(StateError::ProofLength)?;
        if hashes.next().is_some() {
            return Err(StateError::ProofLength);
        }
        if got != *root {
            return Err(StateError::Root);
        }
        Ok(())
    }
}

/// `MTH` of `[start, start + size)` from the run (leaves from `lo`) and the
/// proof's hashes for subtrees outside it.
fn run_root<'a>(
    start: u64,
    size: u64,
    lo: u64,
    run: &[Hash],
    proof: &mut impl Iterator<Item = &'a Hash>,
) -> Option<Hash> {
    let hi = lo + run.len() as u64;
    if start + size <= lo || start >= hi {
        proof.next().copied()
    } else if start >= lo && start + size <= hi {
        let from = (start - lo) as usize;
        Some(root_of(&run[from..from + size as usize]))
    } else {
        let k = split(size);
        let left = run_root(start, k, lo, run, proof)?;
        let right = run_root(start + k, size - k, lo, run, proof)?;
        Some(node_hash(&left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(keys: &[String]) -> Vec<StateLeaf> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| StateLeaf::of(k, i as i64, k.as_bytes()))
            .collect()
    }

    proptest! {
        #[test]
        fn tree_matches_rfc9162_and_proofs_verify(
            keys in proptest::collection::btree_set("[a-c]{0,3}", 0..40),
            updates in proptest::collection::vec(("[a-c]{0,3}", 0i64..5), 0..10),
            prefix in "[a-c]{0,2}",
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let mut model: std::collections::BTreeMap<String, StateLeaf> =
                leaves(&keys).into_iter().map(|l| (l.key.clone(), l)).collect();
            let mut tree = StateTree::from_sorted(model.values().cloned().collect()).unwrap();
            for (k, v) in updates {
                let leaf = StateLeaf::of(&k, v, b"x");
                tree.upsert(&leaf);
                model.insert(k, leaf);
            }
            let all: Vec<StateLeaf> = model.values().cloned().collect();
            let hashes: Vec<Hash> = all.iter().map(StateLeaf::hash).collect();
            prop_assert_eq!(tree.root(), root_of(&hashes));
            let (run, proof) = tree.prefix_proof(&prefix);
            let answer = &all[run.clone()];
            prop_assert!(answer.iter().all(|l| l.key.starts_with(&prefix)));
            prop_assert_eq!(answer.len(), all.iter().filter(|l| l.key.starts_with(&prefix)).count());
            proof.verify(&prefix, answer, tree.count(), &tree.root()).unwrap();
            // Leaving any key out, or rolling one back, fails.
            for i in 0..answer.len() {
                let mut short = answer.to_vec();
                short.remove(i);
                prop_assert!(proof.verify(&prefix, &short, tree.count(), &tree.root()).is_err());
                let mut old = answer.to_vec();
                old[i].version -= 1;
                prop_assert!(proof.verify(&prefix, &old, tree.count(), &tree.root()).is_err());
            }
            // Round trip through the encoding.
            let mut w = Writer::default();
            proof.write(&mut w);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(PrefixProof::read(&mut r).unwrap(), proof);
        }
    }

    #[test]
    fn matches_tlog_core_memory_tree() {
        let mut t = tlog_core::MemoryTree::new();
        let mut hs = Vec::new();
        for i in 0..70u32 {
            let h = leaf_hash(&i.to_be_bytes());
            t.push_hash(h);
            hs.push(h);
            assert_eq!(root_of(&hs), t.root());
        }
    }

    #[test]
    fn a_proof_for_another_prefix_or_state_fails() {
        let keys: Vec<String> = ["a", "b1", "b2", "c"].map(String::from).to_vec();
        let all = leaves(&keys);
        let tree = StateTree::from_sorted(all.clone()).unwrap();
        let (run, proof) = tree.prefix_proof("b");
        assert_eq!(run, 1..3);
        assert!(proof.verify("b", &all[1..3], 4, &tree.root()).is_ok());
        // Reusing it for a narrower prefix (dropping "b2") does not verify.
        assert!(proof.verify("b1", &all[1..2], 4, &tree.root()).is_err());
        assert_eq!(
            proof.verify("b", &all[1..3], 4, &EMPTY_ROOT),
            Err(StateError::Root)
        );
        assert!(StateTree::from_sorted(vec![all[1].clone(), all[0].clone()]).is_err());
    }
}
