//! `integrate` over random batch splits writes exactly the tiles §4.3 says
//! exist, with the tree's node hashes, at every size up to 70,000.

use std::collections::HashMap;

use proptest::prelude::*;
use tlog_core::merkle::{self, CompactRange, Hash, MemoryTree, NodeSource};
use tlog_core::tile::{self, IntegrateError};

type Tiles = HashMap<(u8, u64), Vec<Hash>>;

fn edge(tiles: &Tiles, size: u64) -> Vec<Vec<Hash>> {
    (0..8u8)
        .map(|level| {
            let (full, width) = tile::tiles_at(size, level);
            if width == 0 {
                Vec::new()
            } else {
                tiles.get(&(level, full)).cloned().unwrap_or_default()
            }
        })
        .collect()
}

fn check(tiles: &Tiles, tree: &MemoryTree) {
    let size = tree.size();
    for level in 0..3u8 {
        let (full, width) = tile::tiles_at(size, level);
        for n in 0..full + u64::from(width > 0) {
            let w = if n < full { 256 } else { u64::from(width) };
            let want: Vec<Hash> = (0..w)
                .map(|i| tree.node(8 * level, n * 256 + i).expect("node"))
                .collect();
            assert_eq!(
                tiles.get(&(level, n)),
                Some(&want),
                "size {size} tile {level}/{n}"
            );
        }
    }
    assert_eq!(
        tiles.len() as u64,
        (0..8u8)
            .map(|l| {
                let (f, w) = tile::tiles_at(size, l);
                f + u64::from(w > 0)
            })
            .sum::<u64>()
    );
}

fn run(batches: &[usize]) -> (Tiles, MemoryTree) {
    let mut tiles = Tiles::new();
    let mut range = CompactRange::new();
    let mut tree = MemoryTree::new();
    let mut next = 0u64;
    for &k in batches {
        let leaves: Vec<Hash> = (next..next + k as u64)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        for l in &leaves {
            tree.push_hash(*l);
        }
        next += k as u64;
        let (new, updates) =
            tile::integrate(&range, &edge(&tiles, range.size()), &leaves).expect("ok");
        for u in updates {
            tiles.insert((u.level, u.index), u.hashes);
        }
        range = new;
        assert_eq!(range.root(), tree.root());
    }
    (tiles, tree)
}

#[test]
fn seventy_thousand_in_uneven_batches() {
    let mut batches = Vec::new();
    let (mut total, mut k) = (0usize, 1usize);
    while total < 70_000 {
        let b = k.min(70_000 - total);
        batches.push(b);
        total += b;
        k = (k * 7 + 3) % 4099 + 1;
    }
    let (tiles, tree) = run(&batches);
    assert_eq!(tree.size(), 70_000);
    check(&tiles, &tree);
    // §4.3's example: 273 full level-0 tiles, partial 112; one full level-1
    // tile, partial 17; level-2 partial 1.
    assert_eq!(tile::tiles_at(70_000, 0), (273, 112));
    assert_eq!(tile::tiles_at(70_000, 1), (1, 17));
    assert_eq!(tile::tiles_at(70_000, 2), (0, 1));
    assert_eq!(tiles[&(2, 0)].len(), 1);
}

#[test]
fn a_wrong_edge_is_refused() {
    let (tiles, tree) = run(&[300]);
    let mut bad = edge(&tiles, 300);
    bad[0].pop();
    assert!(matches!(
        tile::integrate(tree.range(), &bad, &[[0; 32]]),
        Err(IntegrateError::Edge { level: 0, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]
    #[test]
    fn any_split_gives_the_same_tiles(batches in proptest::collection::vec(1usize..700, 1..20)) {
        let (tiles, tree) = run(&batches);
        check(&tiles, &tree);
        let (whole, _) = run(&[tree.size() as usize]);
        prop_assert_eq!(tiles, whole);
    }
}
