//! What every backend decides the same way, in one place: which entries of a
//! batch are new (dedup), which tiles an append reads, whether a note is the
//! checkpoint it claims, how signature lines merge, how a tile decodes, and
//! how tree nodes come out of stored tiles. Backends only move bytes.

use std::collections::{BTreeSet, HashMap};

use tlog_core::merkle::{self, Hash, NodeSource};
use tlog_core::note::{Note, SignatureLine};
use tlog_core::tile;

use crate::{Appended, LogState, PutCheckpoint, StoreError, MAX_ENTRY};

/// A batch's plan: each entry's outcome, and the new entries' (batch
/// position, leaf hash), in index order from the log's size.
pub struct AppendPlan {
    /// One per entry of the batch.
    pub appended: Vec<Appended>,
    /// The entries that get new indices.
    pub fresh: Vec<(usize, Hash)>,
}

/// A log's name must be 1..=255 bytes (it is a checkpoint's first line).
pub fn check_origin(origin: &str) -> Result<(), StoreError> {
    if origin.is_empty() || origin.len() > 255 {
        return Err(StoreError::TooLarge("origin must be 1..=255 bytes"));
    }
    Ok(())
}

/// Plans an append to a log in `state`: checks status and sizes, assigns
/// `[size, size + k)` in batch order, and with dedup gives an entry already
/// present (`earlier(leaf)`) or earlier in the batch its existing index.
pub fn plan_append(
    state: &LogState,
    batch: &[Vec<u8>],
    mut earlier: impl FnMut(&Hash) -> Result<Option<u64>, StoreError>,
) -> Result<AppendPlan, StoreError> {
    if state.status != crate::Status::Active {
        return Err(StoreError::NotActive(state.status));
    }
    if batch.iter().any(|e| e.len() > MAX_ENTRY) {
        return Err(StoreError::TooLarge("an entry over 65,535 bytes"));
    }
    let mut appended = Vec::with_capacity(batch.len());
    let mut fresh = Vec::with_capacity(batch.len());
    let mut in_batch: HashMap<Hash, u64> = HashMap::new();
    let mut next = state.size;
    for (position, entry) in batch.iter().enumerate() {
        let leaf = merkle::leaf_hash(entry);
        if state.options.dedup {
            let found = match in_batch.get(&leaf) {
                Some(i) => Some(*i),
                None => earlier(&leaf)?,
            };
            if let Some(index) = found {
                appended.push(Appended {
                    index,
                    duplicate: true,
                });
                continue;
            }
        }
        in_batch.entry(leaf).or_insert(next);
        appended.push(Appended {
            index: next,
            duplicate: false,
        });
        fresh.push((position, leaf));
        next += 1;
    }
    if next > merkle::MAX_SIZE {
        return Err(StoreError::TooLarge("the log is full"));
    }
    Ok(AppendPlan { appended, fresh })
}

/// Plans an import (a follower storing entries it verified against the
/// origin's checkpoint): they go at exactly `start`, which must be the
/// stored size (else `Conflict { have }`), each at its own index: no dedup,
/// the indices are the origin's.
pub fn plan_import(
    state: &LogState,
    start: u64,
    batch: &[Vec<u8>],
) -> Result<AppendPlan, StoreError> {
    if start != state.size {
        return Err(StoreError::Conflict { have: state.size });
    }
    let mut plain = state.clone();
    plain.options.dedup = false;
    plan_append(&plain, batch, |_| Ok(None))
}

/// The right-edge tiles `integrate` needs at tree size `size`: per level
/// 0..8, the partial tile's index, or `None` when the level has none.
pub fn edge_tiles(size: u64) -> Vec<Option<u64>> {
    (0..8u8)
        .map(|level| {
            let (full, width) = tile::tiles_at(size, level);
            (width != 0).then_some(full)
        })
        .collect()
}

/// A stored tile's hashes, refusing what no tile can be (C5).
pub fn decode_tile(level: u8, index: u64, bytes: &[u8]) -> Result<Vec<Hash>, StoreError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(32) || bytes.len() > 256 * 32 {
        return Err(StoreError::Corrupt(format!("tile {level}/{index}")));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// Reads one stored tile (level, index).
pub trait TileRead: Fn(u8, u64) -> Result<Option<Vec<Hash>>, StoreError> {}
impl<F: Fn(u8, u64) -> Result<Option<Vec<Hash>>, StoreError>> TileRead for F {}

/// Tree nodes from stored tiles: node (ℓ, i) folds 2^(ℓ mod 8) hashes of
/// tile level ⌊ℓ/8⌋. `read(level, index)` reads one tile.
pub struct TileNodes<F>(pub F);

impl<F: TileRead> NodeSource for TileNodes<F> {
    type Error = StoreError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let (l, r) = (level / 8, level % 8);
        let first = index << r;
        let tile = (self.0)(l, first / 256)?
            .ok_or_else(|| StoreError::Corrupt(format!("missing tile for node {level}/{index}")))?;
        fold(&tile, level, index)
    }
}

/// Node (`level`, `index`) from the tile holding it: 2^(level mod 8)
/// hashes folded.
fn fold(tile: &[Hash], level: u8, index: u64) -> Result<Hash, StoreError> {
    let r = level % 8;
    let start = ((index << r) % 256) as usize;
    let mut hashes: Vec<Hash> = tile
        .get(start..start + (1 << r))
        .ok_or_else(|| StoreError::Corrupt(format!("short tile for node {level}/{index}")))?
        .to_vec();
    while hashes.len() > 1 {
        hashes = hashes
            .chunks_exact(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    Ok(hashes[0])
}

/// A full tile's subtree: `levels[r]` holds its 256 / 2^r nodes of level r.
struct FullTile {
    levels: Vec<Vec<Hash>>,
}

impl FullTile {
    fn build(tile: Vec<Hash>) -> FullTile {
        let mut levels = vec![tile];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let next = levels[levels.len() - 1]
                .chunks_exact(2)
                .map(|p| merkle::node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        FullTile { levels }
    }
}

type TileKey = (crate::LogId, u8, u64);

/// Full tiles never change (tlog.md §4.3), so their inner nodes are
/// computed once and kept here: a proof then costs lookups instead of a
/// tile read and up to 255 hashes per tile level it crosses. Bounded (each
/// entry ~16 KiB); the oldest goes first.
pub struct TileCache {
    capacity: usize,
    inner: std::sync::Mutex<Held>,
}

/// The cached tiles, and their keys oldest first.
#[derive(Default)]
struct Held {
    map: HashMap<TileKey, std::sync::Arc<FullTile>>,
    order: std::collections::VecDeque<TileKey>,
}

impl TileCache {
    /// A cache of up to `capacity` full tiles.
    pub fn new(capacity: usize) -> TileCache {
        TileCache {
            capacity,
            inner: std::sync::Mutex::new(Held::default()),
        }
    }

    fn get(&self, key: &TileKey) -> Option<std::sync::Arc<FullTile>> {
        self.inner.lock().ok()?.map.get(key).cloned()
    }

    /// Whether the full tile is held (so a fetch can skip it).
    pub fn holds(&self, log: crate::LogId, level: u8, index: u64) -> bool {
        self.get(&(log, level, index)).is_some()
    }

    fn put(&self, key: TileKey, tile: std::sync::Arc<FullTile>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let held = &mut *inner;
        if held.map.insert(key, tile).is_none() {
            held.order.push_back(key);
            while held.order.len() > self.capacity {
                if let Some(old) = held.order.pop_front() {
                    held.map.remove(&old);
                }
            }
        }
    }
}

/// [`TileNodes`] through a [`TileCache`]: full tiles are read once.
pub struct CachedTileNodes<'c, F> {
    /// The log.
    pub log: crate::LogId,
    /// The cache.
    pub cache: &'c TileCache,
    /// Reads one tile.
    pub read: F,
}

impl<F: TileRead> NodeSource for CachedTileNodes<'_, F> {
    type Error = StoreError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let (l, r) = (level / 8, level % 8);
        let first = index << r;
        let key = (self.log, l, first / 256);
        let at = ((first % 256) >> r) as usize;
        if let Some(full) = self.cache.get(&key) {
            return Ok(full.levels[usize::from(r)][at]);
        }
        let tile = (self.read)(l, first / 256)?
            .ok_or_else(|| StoreError::Corrupt(format!("missing tile for node {level}/{index}")))?;
        if tile.len() != 256 {
            return fold(&tile, level, index);
        }
        let full = std::sync::Arc::new(FullTile::build(tile));
        let hash = full.levels[usize::from(r)][at];
        self.cache.put(key, full);
        Ok(hash)
    }
}

/// The tiles (level, index) a computation over nodes reads. Which nodes a
/// proof or subtree root needs depends only on indices and sizes, never on
/// hash values, so a dry run with placeholder hashes names them all; a
/// backend with round trips (PostgreSQL) fetches them in one query, then
/// runs the computation for real.
pub fn tiles_needed<T>(
    run: impl FnOnce(&dyn Fn(u8, u64) -> Result<Hash, StoreError>) -> T,
) -> BTreeSet<(u8, u64)> {
    let seen = std::cell::RefCell::new(BTreeSet::new());
    let record = |level: u8, index: u64| {
        let (l, r) = (level / 8, level % 8);
        seen.borrow_mut().insert((l, (index << r) / 256));
        Ok([0u8; 32])
    };
    let _ = run(&record);
    seen.into_inner()
}

/// A node source from a closure, for [`tiles_needed`]'s dry run.
pub struct FnNodes<'a>(pub &'a dyn Fn(u8, u64) -> Result<Hash, StoreError>);

impl NodeSource for FnNodes<'_> {
    type Error = StoreError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        (self.0)(level, index)
    }
}

/// Checks that `note` is a signed checkpoint of (`size`, `root`) of this
/// log, no larger than the tree; the caller then checks the root against
/// the stored tree ([`StoreError::CheckpointConflict`] if it differs).
pub fn check_checkpoint(
    state: &LogState,
    size: u64,
    root: &Hash,
    note: &[u8],
) -> Result<Note, StoreError> {
    let parsed = Note::parse(note).map_err(|e| StoreError::BadNote(e.to_string()))?;
    let body = tlog_core::Checkpoint::parse(parsed.text())
        .map_err(|e| StoreError::BadNote(e.to_string()))?;
    if body.size != size || body.root != *root || body.origin != state.origin {
        return Err(StoreError::BadNote(
            "the note is not this checkpoint".into(),
        ));
    }
    if size > state.size {
        return Err(StoreError::CheckpointConflict);
    }
    Ok(parsed)
}

/// The bytes to store for a checkpoint note given the one already stored
/// at its size: the same tree merges signature lines (a newer cosignature
/// of a key replaces the older), never dropping one.
pub fn merge_checkpoint(
    existing: Option<&[u8]>,
    parsed: &Note,
    note: &[u8],
) -> Result<(Vec<u8>, PutCheckpoint), StoreError> {
    let Some(old) = existing else {
        return Ok((note.to_vec(), PutCheckpoint::Stored));
    };
    let stored = Note::parse(old).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut lines: Vec<SignatureLine> = stored.signatures().to_vec();
    for line in parsed.signatures() {
        match lines
            .iter_mut()
            .find(|l| l.name == line.name && l.id == line.id)
        {
            Some(held) if held.cosignature_time() < line.cosignature_time() => *held = line.clone(),
            Some(_) => {}
            None => lines.push(line.clone()),
        }
    }
    // Canonical order, so every node holding the same lines stores the
    // same bytes: the first stored line (the log's signature) first, the
    // others by key name and id.
    if let Some((_, rest)) = lines.split_first_mut() {
        rest.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
    }
    let mut merged = Note::new(stored.text()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    for line in lines {
        merged.add(line);
    }
    Ok((merged.to_bytes(), PutCheckpoint::Merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlog_core::merkle::MemoryTree;

    #[test]
    fn the_dry_run_names_exactly_the_tiles_a_proof_reads() {
        let mut tree = MemoryTree::new();
        for i in 0..70_000u32 {
            tree.push(&i.to_be_bytes());
        }
        for (index, size) in [(0, 1), (5, 300), (65_535, 65_537), (12_345, 70_000)] {
            let needed = tiles_needed(|f| merkle::inclusion_proof(&FnNodes(f), index, size));
            // A source that serves only those tiles still yields the proof.
            let served = TileNodes(|level: u8, n: u64| {
                if !needed.contains(&(level, n)) {
                    return Err(StoreError::Corrupt(format!("tile {level}/{n} not fetched")));
                }
                let span = 1u64 << (8 * u32::from(level));
                let first = n * 256;
                let count = ((size / span) - first).min(256);
                Ok(Some(
                    (first..first + count)
                        .map(|i| tree.node(8 * level, i).expect("node"))
                        .collect(),
                ))
            });
            let proof = merkle::inclusion_proof(&served, index, size)
                .expect("every tile fetched")
                .expect("in range");
            let expected = merkle::inclusion_proof(&tree, index, size)
                .expect("infallible")
                .expect("in range");
            assert_eq!(proof, expected);
        }
    }

    /// Proofs through the full-tile cache equal the tree's, at sizes that
    /// end inside partial tiles (never cached) and across cache hits and
    /// evictions; a tile read once is not read again while held.
    #[test]
    fn cached_nodes_give_the_same_proofs_and_read_full_tiles_once() {
        let mut tree = MemoryTree::new();
        for i in 0..70_000u32 {
            tree.push(&i.to_be_bytes());
        }
        let reads = std::cell::Cell::new(0u32);
        let tile_at = |size: u64, level: u8, n: u64| -> Option<Vec<Hash>> {
            reads.set(reads.get() + 1);
            let span = 1u64 << (8 * u32::from(level));
            let first = n * 256;
            let count = ((size / span).saturating_sub(first)).min(256);
            (count > 0).then(|| {
                (first..first + count)
                    .map(|i| tree.node(8 * level, i).expect("node"))
                    .collect()
            })
        };
        for capacity in [2, 1024] {
            let cache = TileCache::new(capacity);
            for (index, size) in [
                (0, 1),
                (5, 300),
                (255, 256),
                (65_535, 65_537),
                (12_345, 70_000),
                (12_345, 70_000),
                (69_999, 70_000),
            ] {
                let nodes = CachedTileNodes {
                    log: [7; 32],
                    cache: &cache,
                    read: |level: u8, n: u64| Ok(tile_at(size, level, n)),
                };
                let proof = merkle::inclusion_proof(&nodes, index, size)
                    .expect("tiles")
                    .expect("in range");
                let expected = merkle::inclusion_proof(&tree, index, size)
                    .expect("infallible")
                    .expect("in range");
                assert_eq!(proof, expected, "inclusion {index} in {size}");
                for old in [1, index.max(1), size / 2, size] {
                    let got = merkle::consistency_proof(&nodes, old.min(size), size)
                        .expect("tiles")
                        .expect("in range");
                    let want = merkle::consistency_proof(&tree, old.min(size), size)
                        .expect("infallible")
                        .expect("in range");
                    assert_eq!(got, want, "consistency {old} → {size}");
                }
            }
        }
        // With room, a repeated proof reads no full tile again.
        let cache = TileCache::new(1024);
        let nodes = CachedTileNodes {
            log: [7; 32],
            cache: &cache,
            read: |level: u8, n: u64| Ok(tile_at(65_536, level, n)),
        };
        let first = merkle::inclusion_proof(&nodes, 12_345, 65_536).expect("tiles");
        let before = reads.get();
        let again = merkle::inclusion_proof(&nodes, 12_345, 65_536).expect("tiles");
        assert_eq!(first, again);
        assert_eq!(
            reads.get(),
            before,
            "every tile of a 65,536 tree is full and held"
        );
    }
}
