//! A follower's decisions in LKTL/1 (tlog.md §7.6–§7.7), with no I/O: what
//! a verified note from a peer means for what this node holds, what a
//! `Headers` answer proves, and whether a `Data` chunk is the asked part of
//! the announced tree. The driver (`tlog-node`'s peer) does the reads,
//! requests and writes these decide; anything a peer sent that these
//! refuse is [`Misbehaviour`].

use crate::merkle::{leaf_hash, verify_consistency, CompactRange, Hash};
use crate::sync::Fork;

/// A peer sent something that does not verify: disconnect and ban it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("misbehaviour: {0}")]
pub struct Misbehaviour(pub String);

fn misbehaved(why: impl Into<String>) -> Misbehaviour {
    Misbehaviour(why.into())
}

/// What this node holds of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Entries stored (≥ the verified checkpoint's size).
    pub tree_size: u64,
    /// The latest verified (stored) checkpoint's size and root.
    pub checkpoint: (u64, Hash),
    /// This node signs the log (it is the origin), rather than mirroring it.
    pub sequencer: bool,
}

/// What a peer's verified note of size `n` means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Our tree has that root at `n`: keep its cosignatures; tell the peer
    /// about our newer checkpoint if we have one.
    Known,
    /// Our tree has another root at `n`: evidence, from our tree (the
    /// larger one) and our latest note.
    Forked,
    /// The origin itself sees its key's note beyond its tree: its store
    /// lost signed history; freeze (§6.3).
    LostHistory,
    /// Larger and proven to extend our verified checkpoint: fetch
    /// `[tree_size, n)` from that peer.
    Extends,
    /// Larger but not proven from our verified size: ask the peer with
    /// `GetHeaders` (locator of [`locator_sizes`]).
    AskHeaders,
}

/// Whether [`judge_note`] needs our root at `n` (the note is within our
/// tree).
pub fn needs_root(local: &Local, n: u64) -> bool {
    n <= local.tree_size
}

/// Judges a peer's note of (`n`, `root`), already verified under the
/// origin's key. `ours_at_n` is our tree's root at `n` when
/// [`needs_root`]; `inv` is the `Inv`'s (old size, proof) if it came by
/// `Inv`.
pub fn judge_note(
    local: &Local,
    n: u64,
    root: &Hash,
    ours_at_n: Option<Hash>,
    inv: Option<(u64, &[Hash])>,
) -> Verdict {
    if needs_root(local, n) {
        return match ours_at_n {
            Some(ours) if ours == *root => Verdict::Known,
            Some(_) => Verdict::Forked,
            // The driver did not read it: treat as unknown, ask.
            None => Verdict::AskHeaders,
        };
    }
    if local.sequencer {
        return Verdict::LostHistory;
    }
    let (s, r) = local.checkpoint;
    let proven = s == 0
        || inv.is_some_and(|(old, proof)| {
            old == s && verify_consistency(s, n, &r, root, proof).is_ok()
        });
    if proven {
        Verdict::Extends
    } else {
        Verdict::AskHeaders
    }
}

/// The locator sizes for a verified size `s` (§7.7): `s`, then `s − 2^j`
/// for j = 0, 1, … while > 0; strictly decreasing, at most 64.
pub fn locator_sizes(s: u64) -> Vec<u64> {
    let mut sizes = vec![s];
    let mut j = 0;
    while j < 63 && s > (1u64 << j) {
        sizes.push(s - (1u64 << j));
        j += 1;
    }
    sizes
}

/// What a verified `Headers` answer to our locator (first entry our
/// verified (`s`, `r`)) proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadersVerdict {
    /// Its note extends ours: fetch.
    Extends,
    /// Its note is not larger than ours: compare it with our tree
    /// ([`judge_note`]).
    NotLarger,
    /// Its tree has another root at `s`, proven to lead to its note:
    /// evidence, our note at `s` against its note.
    Fork {
        /// Its root at `s`.
        root_at_s: Hash,
        /// Its proof from `s` to its note.
        proof: Vec<Hash>,
    },
}

/// Judges a `Headers` answer whose note (`n`, `root`) verified.
pub fn judge_headers(
    (s, r): (u64, Hash),
    n: u64,
    root: &Hash,
    base: u64,
    proof: &[Hash],
    fork: Option<&Fork>,
) -> Result<HeadersVerdict, Misbehaviour> {
    if let Some(fork) = fork {
        if fork.size != s
            || fork.size > n
            || fork.root == r
            || verify_consistency(fork.size, n, &fork.root, root, &fork.proof).is_err()
        {
            return Err(misbehaved("a fork claim that does not verify"));
        }
        return Ok(HeadersVerdict::Fork {
            root_at_s: fork.root,
            proof: fork.proof.clone(),
        });
    }
    if n <= s {
        return Ok(HeadersVerdict::NotLarger);
    }
    if base != s || verify_consistency(s, n, &r, root, proof).is_err() {
        return Err(misbehaved(
            "Headers whose proof does not extend our checkpoint",
        ));
    }
    Ok(HeadersVerdict::Extends)
}

/// The (root at a, proof a → b) of LKEV evidence between a note of ours of
/// size `a` and root `ra`, and one of size `b` ≥ `a` and root `rb` whose
/// tree has `rb_at_a` at `a` with `proof` (for equal sizes the larger root
/// stands for tree b, by the canonical order, and the proof is empty).
pub fn evidence_parts(
    (a, ra): (u64, Hash),
    (b, rb): (u64, Hash),
    rb_at_a: Hash,
    proof: Vec<Hash>,
) -> (Hash, Vec<Hash>) {
    if a == b {
        (ra.max(rb), Vec::new())
    } else {
        (rb_at_a, proof)
    }
}

/// A `GetData` this node sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// First index.
    pub start: u64,
    /// Entries asked.
    pub count: u32,
    /// The announced tree's size.
    pub tree_size: u64,
}

/// The next chunk to ask for after `next`, towards `tree_size`: aligned to
/// 256 so chunks match entry bundles, at most 1,024 entries.
pub fn next_chunk(next: u64, tree_size: u64) -> Asked {
    Asked {
        start: next,
        count: (1024 - next % 256).min(tree_size.saturating_sub(next)) as u32,
        tree_size,
    }
}

/// Checks a `Data` answer against what was asked and the announced root:
/// the entries must extend `working` (our compact range at `asked.start`)
/// to a tree the proof shows inside the announced one. Returns the
/// extended range, so the entries can be imported.
pub fn check_chunk(
    asked: &Asked,
    root: &Hash,
    working: &CompactRange,
    (start, entries, tree_size, proof): (u64, &[Vec<u8>], u64, &[Hash]),
) -> Result<CompactRange, Misbehaviour> {
    if start != asked.start
        || tree_size != asked.tree_size
        || entries.is_empty()
        || entries.len() > asked.count as usize
        || working.size() != asked.start
    {
        return Err(misbehaved("Data for something not asked"));
    }
    let mut chunk = working.clone();
    for e in entries {
        chunk.push(leaf_hash(e));
    }
    verify_consistency(chunk.size(), tree_size, &chunk.root(), root, proof).map_err(|_| {
        misbehaved(format!(
            "entries at {start} that are not in the announced tree"
        ))
    })?;
    Ok(chunk)
}
