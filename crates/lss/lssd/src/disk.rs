//! The disk reserve: below `min_free_disk_bytes` of free space on the
//! embedded store's filesystem, puts that would create a namespace are
//! refused (`RESOURCE_EXHAUSTED`), while clients that already store data
//! keep writing: a signer's state must never be the thing that cannot be
//! saved because strangers filled the disk first.
//!
//! Free space is sampled off the executor once a second (a `statvfs`), so
//! the put path reads an atomic. It applies to the embedded store only: a
//! PostgreSQL or etcd server watches its own disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often free space is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Free space against the reserve.
#[derive(Debug)]
pub struct DiskReserve {
    dir: PathBuf,
    reserve: u64,
    /// Bytes free at the last sample; `u64::MAX` until one succeeds.
    free: AtomicU64,
}

/// Free space is below the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Below {
    /// Bytes free at the last sample.
    pub free: u64,
    /// The reserve.
    pub reserve: u64,
}

impl DiskReserve {
    /// Keeps `reserve` bytes free on the filesystem holding `dir`; sampled
    /// once now (blocking).
    pub fn new(dir: PathBuf, reserve: u64) -> Arc<Self> {
        let disk = Arc::new(DiskReserve {
            dir,
            reserve,
            free: AtomicU64::new(u64::MAX),
        });
        disk.sample();
        disk
    }

    /// Reads free space now (blocking: a `statvfs`).
    pub fn sample(&self) {
        match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(stat) => {
                // The field types are u64 here and u32 on some targets.
                #[allow(clippy::useless_conversion)]
                let free = u64::from(stat.blocks_available())
                    .saturating_mul(u64::from(stat.fragment_size()));
                let before = self.free.swap(free, Ordering::Relaxed);
                let was_below = before < self.reserve;
                if free < self.reserve && !was_below {
                    tracing::warn!(
                        free,
                        reserve = self.reserve,
                        "free disk space below min_free_disk_bytes: new clients are refused"
                    );
                } else if free >= self.reserve && was_below {
                    tracing::info!(free, "free disk space above min_free_disk_bytes again");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, dir = %self.dir.display(), "cannot read free disk space")
            }
        }
    }

    /// Whether free space is below the reserve.
    pub fn below(&self) -> Option<Below> {
        let free = self.free.load(Ordering::Relaxed);
        (free < self.reserve).then_some(Below {
            free,
            reserve: self.reserve,
        })
    }
}

/// Samples `disk` every [`SAMPLE_EVERY`] while the server runs.
pub async fn keep_sampling(disk: Arc<DiskReserve>) {
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let disk = disk.clone();
        let _ = tokio::task::spawn_blocking(move || disk.sample()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_disk_is_below_and_zero_never_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let never = DiskReserve::new(dir.path().to_owned(), 0);
        assert_eq!(never.below(), None);
        let always = DiskReserve::new(dir.path().to_owned(), u64::MAX);
        let below = always.below().expect("no disk has 16 EiB free");
        assert!(below.free > 0 && below.free < u64::MAX);
    }
}
