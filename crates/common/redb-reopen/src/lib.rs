//! A redb database that survives storage failures.
//!
//! redb refuses every operation after one I/O error (`PreviousIo`: a full
//! disk, EIO) until the file is opened again; opening it again restores
//! its last committed state. A store that keeps one `Database` for its
//! lifetime is therefore out of service from the first ENOSPC until a
//! restart, even after space is freed. [`Reopening`] is the handle the
//! stores share: readers and the writer take the current database for one
//! operation; after a failure the writer calls [`Reopening::recover`],
//! which probes the database and, if it no longer takes writes, waits for
//! readers to let go of it, drops it (releasing the file lock) and opens
//! the file again.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

/// Opens the database file again.
pub type Reopen = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The current database, and how to open it again.
pub struct Reopening {
    current: RwLock<Option<Arc<Database>>>,
    /// `None` for a database owned by someone else (it reopens it).
    reopen: Option<Reopen>,
}

/// The database is being opened again after a failure (or could not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeingReopened;

impl std::fmt::Display for BeingReopened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database is being reopened after a storage failure")
    }
}

impl std::error::Error for BeingReopened {}

impl Reopening {
    /// A handle on `db`, opened again with `reopen` after failures.
    pub fn new(db: Arc<Database>, reopen: Option<Reopen>) -> Self {
        Reopening {
            current: RwLock::new(Some(db)),
            reopen,
        }
    }

    /// The current database, for one operation.
    pub fn get(&self) -> Result<Arc<Database>, BeingReopened> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or(BeingReopened)
    }

    /// Whether the database still takes writes (an empty commit).
    pub fn healthy(&self) -> bool {
        self.get()
            .ok()
            .and_then(|db| db.begin_write().ok())
            .is_some_and(|txn| txn.commit().is_ok())
    }

    /// After a failure: if the database no longer takes writes, opens the
    /// file again (logged). Call it from the writer, with no database
    /// handle of its own held.
    pub fn recover(&self, what: &str) {
        if self.healthy() {
            return;
        }
        match self.reopen() {
            Ok(()) => tracing::warn!(store = what, "redb reopened after a storage failure"),
            Err(e) => tracing::error!(store = what, error = %e,
                "redb could not be reopened; retried at the next failure"),
        }
    }

    fn reopen(&self) -> Result<(), String> {
        let Some(reopen) = &self.reopen else {
            return Err("a shared database is reopened by its owner".into());
        };
        let mut current = self
            .current
            .write()
            .map_err(|_| "lock poisoned".to_string())?;
        if let Some(mut old) = current.take() {
            // Readers hold a clone for one read; new ones wait on the lock.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still) => {
                        *current = Some(still);
                        return Err("readers still hold the failed database".into());
                    }
                }
            }
        }
        *current = Some(Arc::new(reopen().map_err(|e| e.to_string())?));
        Ok(())
    }
}
