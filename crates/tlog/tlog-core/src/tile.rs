//! tlog-tiles arithmetic and paths (tlog.md §4.2–§4.3).
//!
//! Level-ℓ tile n, hash i, is node (8ℓ, n·256 + i); entry bundles mirror
//! level 0. Paths are canonical: anything else is "not found", never an
//! alias of a canonical path.

/// Hashes per full tile, and entries per full bundle.
pub const WIDTH: u64 = 256;
/// Highest tile level.
pub const MAX_LEVEL: u8 = 63;

/// A tile or bundle: its level (`None` for entries), index and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileId {
    /// `Some(level)` for a hash tile, `None` for an entry bundle.
    pub level: Option<u8>,
    /// Its index at that level.
    pub index: u64,
    /// 256 for a full tile, 1..=255 for a partial one.
    pub width: u16,
}

impl TileId {
    /// Its path below the log's prefix: `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let level = match self.level {
            Some(l) => l.to_string(),
            None => "entries".to_string(),
        };
        let mut path = format!("tile/{level}/{}", index_path(self.index));
        if self.width < 256 {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses a canonical path; `None` for anything else.
    pub fn parse(path: &str) -> Option<TileId> {
        let rest = path.strip_prefix("tile/")?;
        let (level, rest) = rest.split_once('/')?;
        let level = match level {
            "entries" => None,
            l => {
                let l = crate::checkpoint::parse_decimal(l)?;
                if l > u64::from(MAX_LEVEL) {
                    return None;
                }
                Some(l as u8)
            }
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                let w = crate::checkpoint::parse_decimal(width)?;
                if !(1..=255).contains(&w) {
                    return None;
                }
                (index, w as u16)
            }
            None => (rest, 256),
        };
        Some(TileId {
            level,
            index: parse_index(index)?,
            width,
        })
    }
}

/// `<N>` as 3-digit groups, every group but the last prefixed `x`.
pub fn index_path(n: u64) -> String {
    let digits = format!("{n:03}");
    let pad = (3 - digits.len() % 3) % 3;
    let digits = format!("{}{digits}", "0".repeat(pad));
    let groups: Vec<&str> = (0..digits.len())
        .step_by(3)
        .map(|i| &digits[i..i + 3])
        .collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g}")
            } else {
                g.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn parse_index(text: &str) -> Option<u64> {
    let groups: Vec<&str> = text.split('/').collect();
    let last = groups.len() - 1;
    let mut value: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let digits = if i < last {
            group.strip_prefix('x')?
        } else {
            group
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if i == 0 && last > 0 && digits == "000" {
            return None;
        }
        value = value
            .checked_mul(1000)?
            .checked_add(digits.parse::<u64>().ok()?)?;
    }
    Some(value)
}

/// The widths of level `level`'s tiles at tree size `size`: the number of
/// full tiles, and the partial tile's width (0 when there is none).
pub fn tiles_at(size: u64, level: u8) -> (u64, u16) {
    let span = WIDTH.checked_pow(u32::from(level)).unwrap_or(u64::MAX);
    let hashes = size / span;
    (hashes / WIDTH, (hashes % WIDTH) as u16)
}

/// Whether `tile` exists (may be served) at the published size `size`.
pub fn exists(tile: &TileId, size: u64) -> bool {
    let (full, partial) = tiles_at(size, tile.level.unwrap_or(0));
    if tile.width == 256 {
        tile.index < full
    } else {
        tile.index < full || (tile.index == full && tile.width <= partial)
    }
}

/// A hash tile to write: `hashes.len()` is its width (1..=256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileUpdate {
    /// Tile level.
    pub level: u8,
    /// Tile index.
    pub index: u64,
    /// Its hashes, from the first.
    pub hashes: Vec<crate::merkle::Hash>,
}

/// Why a batch cannot be integrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrateError {
    /// The right-edge tiles given do not match the range's size.
    #[error("right-edge tile at level {level} has {got} hashes, the size needs {want}")]
    Edge {
        /// Tile level.
        level: u8,
        /// Hashes needed.
        want: u16,
        /// Hashes given.
        got: usize,
    },
    /// The log would pass 2^63 − 1 entries.
    #[error("the log is full")]
    Full,
}

/// Appends `leaves` to the tree whose compact range is `range` (tlog.md
/// §6.2): returns the new range and every hash tile the batch changed,
/// whole. `edge[L]` must hold the current partial tile of level `L` (empty
/// when the width there is 0), as the store has it; levels beyond `edge`
/// are taken as empty. Stores call this inside their append transaction.
pub fn integrate(
    range: &crate::merkle::CompactRange,
    edge: &[Vec<crate::merkle::Hash>],
    leaves: &[crate::merkle::Hash],
) -> Result<(crate::merkle::CompactRange, Vec<TileUpdate>), IntegrateError> {
    let size = range.size();
    if size.saturating_add(leaves.len() as u64) > crate::merkle::MAX_SIZE {
        return Err(IntegrateError::Full);
    }
    // The partial tiles being extended, by level.
    let mut open: Vec<(u64, Vec<crate::merkle::Hash>)> = Vec::new();
    for level in 0..8u8 {
        let (full, width) = tiles_at(size, level);
        let given = edge
            .get(usize::from(level))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if given.len() != usize::from(width) {
            return Err(IntegrateError::Edge {
                level,
                want: width,
                got: given.len(),
            });
        }
        open.push((full, given.to_vec()));
    }
    let mut touched = std::collections::BTreeSet::new();
    let mut done: Vec<TileUpdate> = Vec::new();
    let mut range = range.clone();
    for leaf in leaves {
        for (level, index, hash) in range.push(*leaf) {
            if level % 8 != 0 || level / 8 >= 8 {
                continue;
            }
            let l = usize::from(level / 8);
            let (tile, hashes) = &mut open[l];
            debug_assert_eq!(index, *tile * WIDTH + hashes.len() as u64);
            hashes.push(hash);
            touched.insert(l);
            if hashes.len() as u64 == WIDTH {
                done.push(TileUpdate {
                    level: l as u8,
                    index: *tile,
                    hashes: std::mem::take(hashes),
                });
                *tile += 1;
                touched.remove(&l);
            }
        }
    }
    for l in touched {
        let (tile, hashes) = &open[l];
        if !hashes.is_empty() {
            done.push(TileUpdate {
                level: l as u8,
                index: *tile,
                hashes: hashes.clone(),
            });
        }
    }
    Ok((range, done))
}
