//! The embedded backend: one redb file, one writer thread, group commit.
//!
//! # Layout (format 1), file `<data_dir>/lightkeeper.redb`
//! - table `kv`: key `client_id (33 bytes, compressed) ‖ key (UTF-8)`, value
//!   `version (i64 big-endian) ‖ value bytes`. The fixed-width namespace prefix
//!   makes the table's byte order the keys' byte order within a namespace, so a
//!   prefix read is one range scan. Values are stored raw: 8 bytes of overhead,
//!   where the reference's CBOR integer arrays roughly double every value.
//! - table `usage`: key `client_id`, value the namespace's bytes (keys plus
//!   values), kept in the same transaction as the data it counts.
//! - table `meta`: `"format"` → 1. An unknown format refuses to open.
//!
//! # Group commit
//! Puts are sent to a single writer thread. It takes every put waiting in its
//! queue (up to a batch limit), applies them one after another in **one** write
//! transaction, and commits it with one fsync (`Durability::Immediate`). Only
//! after the commit returns are the outcomes sent back. So:
//! - each put is still all-or-nothing: all its versions are checked against the
//!   transaction's state (which includes earlier puts of the batch) before any
//!   of its keys is written;
//! - a conflict or quota refusal of one put does not affect the others;
//! - if the commit fails, every put of the batch is told `Unavailable` and none
//!   of them is visible, since the transaction is discarded whole;
//! - under load, N concurrent puts cost one fsync instead of N.
//!
//! # Reads
//! Reads run on tokio's blocking pool in their own read transaction: a redb
//! snapshot that never waits for the writer.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use lss_core::{accepts, namespace_after, ClientId, KeyValue, PutOutcome, ValidPut};
use redb::{Database, Durability, ReadableTable, TableDefinition, TableError};
use redb_reopen::{Reopen, Reopening};
use tokio::sync::oneshot;

use crate::{Store, StoreError, Totals};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const USAGE: TableDefinition<&[u8], u64> = TableDefinition::new("usage");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: u64 = 1;
const NAMESPACE_LEN: usize = 33;
const VERSION_LEN: usize = 8;

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "lightkeeper.redb";

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct RedbConfig {
    /// Most bytes (keys plus values) one namespace may hold.
    pub max_namespace_bytes: u64,
    /// Most puts one commit may carry.
    pub max_batch_puts: usize,
    /// Most payload bytes one commit may carry (a batch always takes one put).
    pub max_batch_bytes: usize,
    /// redb page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for RedbConfig {
    fn default() -> Self {
        RedbConfig {
            max_namespace_bytes: lss_core::Limits::default().max_namespace_bytes,
            max_batch_puts: 1_024,
            max_batch_bytes: 64 * 1_024 * 1_024,
            cache_bytes: 256 * 1_024 * 1_024,
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (another `lssd`?) holds the database's lock.
    #[error("{0} is already open in another process")]
    AlreadyOpen(PathBuf),
    /// The file was written by a format this build does not know.
    #[error("{path} has storage format {found}, this build reads format {FORMAT}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u64,
    },
    /// Any other I/O or redb error.
    #[error("cannot open {path}: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
}

/// The embedded store. Cheap to share behind an `Arc`; dropping the last
/// handle finishes the queued puts and stops the writer thread.
pub struct RedbStore {
    /// Opened again after a storage failure (redb latches I/O errors).
    db: Arc<Reopening>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

struct Job {
    put: ValidPut,
    reply: oneshot::Sender<Result<PutOutcome, StoreError>>,
}

impl RedbStore {
    /// Opens or creates `<dir>/lightkeeper.redb` and starts the writer thread.
    pub fn open(dir: &Path, config: RedbConfig) -> Result<Self, OpenError> {
        let path = dir.join(FILE_NAME);
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.clone(),
            source: Box::new(source),
        };
        let existed = path.exists();
        let (again, cache) = (path.clone(), config.cache_bytes);
        let reopen: Reopen =
            Box::new(move || Database::builder().set_cache_size(cache).create(&again));
        let db = reopen().map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::AlreadyOpen(path.clone()),
            e => storage(e.into()),
        })?;
        if !existed {
            // Make the new file's directory entry durable, or a crash could lose
            // the whole database along with its acknowledged writes.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| storage(redb::StorageError::Io(e).into()))?;
        }
        Self::start(db, &path, config, reopen)
    }

    /// Opens the database `open` gives (e.g. on a `StorageBackend` of the
    /// caller's, as the fault tests do), and again with it after a storage
    /// failure. `path` names the file in errors.
    pub fn open_with(path: &Path, config: RedbConfig, open: Reopen) -> Result<Self, OpenError> {
        let db = open().map_err(|e| OpenError::Storage {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })?;
        Self::start(db, path, config, open)
    }

    fn start(
        db: Database,
        path: &Path,
        config: RedbConfig,
        reopen: Reopen,
    ) -> Result<Self, OpenError> {
        let path = path.to_path_buf();
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.clone(),
            source: Box::new(source),
        };
        let txn = db.begin_write().map_err(|e| storage(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| storage(e.into()))?;
            let found = meta
                .get("format")
                .map_err(|e| storage(e.into()))?
                .map(|g| g.value());
            match found {
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(|e| storage(e.into()))?;
                }
                Some(FORMAT) => {}
                Some(found) => return Err(OpenError::UnknownFormat { path, found }),
            }
            txn.open_table(KV).map_err(|e| storage(e.into()))?;
            txn.open_table(USAGE).map_err(|e| storage(e.into()))?;
        }
        txn.commit().map_err(|e| storage(e.into()))?;

        let db = Arc::new(Reopening::new(Arc::new(db), Some(reopen)));
        let (jobs, queue) = mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("lss-redb-writer".into())
            .spawn(move || run_writer(&writer_db, &queue, &config))
            .map_err(|e| storage(redb::StorageError::Io(e).into()))?;
        Ok(RedbStore {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
        })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("redb writer thread panicked");
            }
        }
    }
}

impl Store for RedbStore {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the redb writer has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(Job { put, reply })
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn get(&self, client: ClientId, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || reading(&db, |h| read_prefix(h, &client, &prefix)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    async fn pages(
        &self,
        client: ClientId,
        prefix: String,
    ) -> Result<Box<dyn crate::Pages>, StoreError> {
        let db = self.db.clone();
        let pages = tokio::task::spawn_blocking(move || {
            reading(&db, |h| RedbPages::open(h, &client, &prefix))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))??;
        Ok(Box::new(pages))
    }

    async fn usage(&self, client: ClientId) -> Result<u64, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || reading(&db, |h| read_usage(h, &client)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || reading(&db, read_totals))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// One read on the current database; a storage failure makes the reader
/// check it (and open it again if redb latched the failure).
fn reading<T>(
    db: &Reopening,
    read: impl FnOnce(&Database) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let result = match db.get() {
        Ok(handle) => read(&handle),
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
    };
    if let Err(StoreError::Unavailable(_)) = &result {
        db.recover("lss");
    }
    result
}

fn run_writer(db: &Reopening, queue: &mpsc::Receiver<Job>, config: &RedbConfig) {
    while let Ok(first) = queue.recv() {
        let mut bytes = payload_len(&first.put);
        let mut batch = vec![first];
        while batch.len() < config.max_batch_puts && bytes < config.max_batch_bytes {
            match queue.try_recv() {
                Ok(job) => {
                    bytes += payload_len(&job.put);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let committed = match db.get() {
            Ok(handle) => commit_batch(&handle, &batch, config.max_namespace_bytes),
            Err(e) => Err(Failed::Before(e.to_string())),
        };
        let outcomes = match committed {
            Ok(outcomes) => Ok(outcomes),
            Err(Failed::Before(e)) => {
                tracing::warn!(error = %e, puts = batch.len(), "redb commit failed; batch not written");
                db.recover("lss");
                Err(e)
            }
            Err(Failed::InDoubt { outcomes, error }) => {
                // The COMMIT itself failed: with a failing disk redb may
                // still have made it durable. Reopen, then read back: the
                // caller learns the truth, not "maybe".
                db.recover("lss");
                match db.get().ok().and_then(|h| landed(&h, &batch, &outcomes)) {
                    Some(true) => {
                        tracing::warn!(
                            puts = batch.len(),
                            "a redb commit reported failure but landed; acknowledged"
                        );
                        Ok(outcomes)
                    }
                    Some(false) => {
                        tracing::warn!(error = %error, puts = batch.len(), "redb commit failed; batch not written");
                        Err(error)
                    }
                    _ => {
                        tracing::error!(error = %error, puts = batch.len(),
                            "redb commit failed and the store cannot be read back: outcome unknown until it is");
                        Err(error)
                    }
                }
            }
        };
        match outcomes {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    // The caller may have gone away (request cancelled); the
                    // write is committed either way.
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(StoreError::Unavailable(e.clone())));
                }
            }
        }
    }
}

fn payload_len(put: &ValidPut) -> usize {
    put.kvs()
        .iter()
        .map(|kv| kv.key.len() + kv.value.len())
        .sum()
}

type Outcome = Result<PutOutcome, StoreError>;

// A large error type is fine here: these are internal, and their error path is a failed commit.
#[allow(clippy::result_large_err)]
/// Applies a batch in one transaction. The outer error (storage) fails the
/// whole batch; the inner results are per put.
fn commit_batch(db: &Database, batch: &[Job], max_namespace: u64) -> Result<Vec<Outcome>, Failed> {
    let before = |e: redb::Error| Failed::Before(e.to_string());
    let mut txn = db.begin_write().map_err(|e| before(e.into()))?;
    txn.set_durability(Durability::Immediate);
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut wrote = false;
    {
        let mut kv = txn.open_table(KV).map_err(|e| before(e.into()))?;
        let mut usage = txn.open_table(USAGE).map_err(|e| before(e.into()))?;
        let mut key_buf = Vec::new();
        for job in batch {
            let outcome = apply(&mut kv, &mut usage, &mut key_buf, &job.put, max_namespace)
                .map_err(before)?;
            wrote |= matches!(outcome, Ok(PutOutcome::Committed)) && !job.put.kvs().is_empty();
            outcomes.push(outcome);
        }
    }
    if wrote {
        let started = std::time::Instant::now();
        if let Err(e) = txn.commit() {
            return Err(Failed::InDoubt {
                outcomes,
                error: e.to_string(),
            });
        }
        crate::metrics::committed("redb", batch.len(), started.elapsed());
    } else {
        // Only conflicts and refusals: nothing to make durable.
        txn.abort().map_err(|e| before(e.into()))?;
    }
    Ok(outcomes)
}

/// Why a batch was not acknowledged.
enum Failed {
    /// Before its COMMIT: nothing written.
    Before(String),
    /// The COMMIT failed: written or not, to be read back.
    InDoubt {
        /// What the batch decided for each put.
        outcomes: Vec<Outcome>,
        /// The failure.
        error: String,
    },
}

/// Whether a batch whose COMMIT failed is in the store: its last committed
/// put's entries are there at their new versions (a put only ever raises a
/// version, so they cannot have been there before; one transaction lands
/// whole or not at all). `None` when the store cannot be read.
fn landed(db: &Database, batch: &[Job], outcomes: &[Outcome]) -> Option<bool> {
    let Some(job) = batch
        .iter()
        .zip(outcomes)
        .rev()
        .find(|(job, o)| matches!(o, Ok(PutOutcome::Committed)) && !job.put.kvs().is_empty())
        .map(|(job, _)| job)
    else {
        return Some(false);
    };
    let txn = db.begin_read().ok()?;
    let kv = txn.open_table(KV).ok()?;
    let mut key_buf = Vec::new();
    for item in job.put.kvs() {
        composite_key(&mut key_buf, job.put.client().as_bytes(), &item.key);
        let stored = kv.get(key_buf.as_slice()).ok()?;
        let matches = stored
            .as_ref()
            .and_then(|g| decode(g.value()).ok())
            .is_some_and(|(version, value)| {
                version == item.version && value == item.value.as_slice()
            });
        if !matches {
            return Some(false);
        }
    }
    Some(true)
}

#[allow(clippy::result_large_err)]
fn apply(
    kv: &mut redb::Table<&[u8], &[u8]>,
    usage: &mut redb::Table<&[u8], u64>,
    key_buf: &mut Vec<u8>,
    put: &ValidPut,
    max_namespace: u64,
) -> Result<Outcome, redb::Error> {
    let namespace = put.client().as_bytes();
    let mut conflicts = Vec::new();
    let mut freed: u64 = 0;
    for item in put.kvs() {
        composite_key(key_buf, namespace, &item.key);
        let guard = kv.get(key_buf.as_slice())?;
        let current = match guard.as_ref().map(|g| decode(g.value())).transpose() {
            Ok(current) => current,
            Err(corrupt) => return Ok(Err(corrupt)),
        };
        if let Some((_, value)) = current {
            freed += (item.key.len() + value.len()) as u64;
        }
        if !accepts(item.version, current.map(|(v, _)| v)) {
            let current = current.map(|(v, value)| (v, value.to_vec()));
            conflicts.push(KeyValue::conflict(item.key.clone(), current));
        }
    }
    if !conflicts.is_empty() {
        return Ok(Ok(PutOutcome::Conflict(conflicts)));
    }

    let used = usage
        .get(namespace.as_slice())?
        .map(|g| g.value())
        .unwrap_or(0);
    let added: u64 = put.kvs().iter().map(KeyValue::stored_len).sum();
    let after = match namespace_after(used, freed, added, max_namespace) {
        Ok(after) => after,
        Err(limit) => return Ok(Err(limit.into())),
    };

    for item in put.kvs() {
        composite_key(key_buf, namespace, &item.key);
        // Checked by redb too; a value this large never passes the request limits.
        let len = u32::try_from(VERSION_LEN + item.value.len())
            .map_err(|_| redb::StorageError::ValueTooLarge(item.value.len()))?;
        let mut slot = kv.insert_reserve(key_buf.as_slice(), len)?;
        let slot = slot.as_mut();
        slot[..VERSION_LEN].copy_from_slice(&item.version.to_be_bytes());
        slot[VERSION_LEN..].copy_from_slice(&item.value);
    }
    if after != used {
        usage.insert(namespace.as_slice(), after)?;
    }
    Ok(Ok(PutOutcome::Committed))
}

fn composite_key(buf: &mut Vec<u8>, namespace: &[u8; NAMESPACE_LEN], key: &str) {
    buf.clear();
    buf.extend_from_slice(namespace);
    buf.extend_from_slice(key.as_bytes());
}

fn decode(stored: &[u8]) -> Result<(i64, &[u8]), StoreError> {
    let Some((version, value)) = stored.split_first_chunk::<VERSION_LEN>() else {
        return Err(StoreError::Corrupt(format!(
            "a stored value is {} bytes, shorter than its version",
            stored.len()
        )));
    };
    Ok((i64::from_be_bytes(*version), value))
}

fn read_usage(db: &Database, client: &ClientId) -> Result<u64, StoreError> {
    let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
    let txn = db.begin_read().map_err(|e| unavailable(e.into()))?;
    let table = match txn.open_table(USAGE) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(unavailable(e.into())),
    };
    let used = table
        .get(client.as_bytes().as_slice())
        .map_err(|e| unavailable(e.into()))?;
    Ok(used.map_or(0, |g| g.value()))
}

fn read_totals(db: &Database) -> Result<Totals, StoreError> {
    let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
    let txn = db.begin_read().map_err(|e| unavailable(e.into()))?;
    let table = match txn.open_table(USAGE) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Totals::default()),
        Err(e) => return Err(unavailable(e.into())),
    };
    let mut totals = Totals::default();
    for row in table.iter().map_err(|e| unavailable(e.into()))? {
        let (_, used) = row.map_err(|e| unavailable(e.into()))?;
        if used.value() > 0 {
            totals.namespaces += 1;
            totals.bytes += used.value();
        }
    }
    Ok(totals)
}

/// A prefix read through one redb read transaction (the table handle owns
/// it), a page per blocking task. The transaction is held until the read is
/// complete or dropped; that only delays reuse of pages freed meanwhile.
struct RedbPages {
    table: Option<Arc<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>>,
    /// The composite key of the prefix.
    start: Arc<Vec<u8>>,
    /// Where the next page starts (exclusive), once one was read.
    after: Option<Vec<u8>>,
}

impl RedbPages {
    fn open(db: &Database, client: &ClientId, prefix: &str) -> Result<Self, StoreError> {
        let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
        let txn = db.begin_read().map_err(|e| unavailable(e.into()))?;
        let table = match txn.open_table(KV) {
            Ok(table) => Some(Arc::new(table)),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(unavailable(e.into())),
        };
        let mut start = Vec::with_capacity(NAMESPACE_LEN + prefix.len());
        composite_key(&mut start, client.as_bytes(), prefix);
        Ok(RedbPages {
            table,
            start: Arc::new(start),
            after: None,
        })
    }
}

/// Entries of `table` under `start`, strictly after `after`, until `stop`
/// says so (given the bytes so far and the next entry's size).
fn scan_table(
    table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    after: Option<&[u8]>,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    use std::ops::Bound;
    let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
    let lower = match after {
        Some(after) => Bound::Excluded(after),
        None => Bound::Included(start),
    };
    let range = table
        .range::<&[u8]>((lower, Bound::Unbounded))
        .map_err(|e| unavailable(e.into()))?;
    for entry in range {
        let (key, value) = entry.map_err(|e| unavailable(e.into()))?;
        let key = key.value();
        if !key.starts_with(start) {
            break;
        }
        if !visit(key, value.value())? {
            break;
        }
    }
    Ok(())
}

impl crate::Pages for RedbPages {
    fn count(&mut self) -> crate::PageFuture<'_, u64> {
        let table = self.table.clone();
        let start = self.start.clone();
        Box::pin(async move {
            let Some(table) = table else { return Ok(0) };
            tokio::task::spawn_blocking(move || {
                let mut count = 0u64;
                scan_table(&table, &start, None, |_, _| {
                    count += 1;
                    Ok(true)
                })?;
                Ok(count)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
        })
    }

    fn next_page(&mut self, max_bytes: usize) -> crate::PageFuture<'_, Vec<KeyValue>> {
        Box::pin(async move {
            let Some(table) = self.table.clone() else {
                return Ok(Vec::new());
            };
            let start = self.start.clone();
            let after = self.after.take();
            let (page, last) = tokio::task::spawn_blocking(move || {
                let mut page = Vec::new();
                let mut bytes = 0usize;
                let mut last = None;
                scan_table(&table, &start, after.as_deref(), |key, stored| {
                    let (version, value) = decode(stored)?;
                    let name = std::str::from_utf8(&key[NAMESPACE_LEN..])
                        .map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))?;
                    let len = name.len() + value.len();
                    if !page.is_empty() && bytes + len > max_bytes {
                        return Ok(false);
                    }
                    bytes += len;
                    page.push(KeyValue::new(name, version, value.to_vec()));
                    last = Some(key.to_vec());
                    Ok(true)
                })?;
                Ok::<_, StoreError>((page, last))
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))??;
            match last {
                Some(last) => self.after = Some(last),
                None => self.table = None, // Done: let the transaction go.
            }
            Ok(page)
        })
    }
}

fn read_prefix(
    db: &Database,
    client: &ClientId,
    prefix: &str,
) -> Result<Vec<KeyValue>, StoreError> {
    let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
    let txn = db.begin_read().map_err(|e| unavailable(e.into()))?;
    let table = match txn.open_table(KV) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(unavailable(e.into())),
    };
    let mut start = Vec::with_capacity(NAMESPACE_LEN + prefix.len());
    composite_key(&mut start, client.as_bytes(), prefix);
    let mut out = Vec::new();
    for entry in table
        .range(start.as_slice()..)
        .map_err(|e| unavailable(e.into()))?
    {
        let (key, value) = entry.map_err(|e| unavailable(e.into()))?;
        let key = key.value();
        if !key.starts_with(&start) {
            break;
        }
        let key = std::str::from_utf8(&key[NAMESPACE_LEN..])
            .map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))?;
        let (version, value) = decode(value.value())?;
        out.push(KeyValue::new(key, version, value));
    }
    Ok(out)
}

impl crate::Bulk for RedbStore {
    async fn scan(
        &self,
        after: Option<(ClientId, String)>,
        limit: usize,
    ) -> Result<Vec<crate::Entry>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || reading(&db, |h| scan(h, after, limit)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("scan task failed: {e}")))?
    }

    async fn load(&self, entries: Vec<crate::Entry>) -> Result<u64, crate::LoadError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let handle = db
                .get()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let loaded = load(&handle, &entries);
            drop(handle);
            if loaded.is_err() {
                db.recover("lss");
            }
            loaded
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("load task failed: {e}")))?
    }
}

fn scan(
    db: &Database,
    after: Option<(ClientId, String)>,
    limit: usize,
) -> Result<Vec<crate::Entry>, StoreError> {
    let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
    let txn = db.begin_read().map_err(|e| unavailable(e.into()))?;
    let table = match txn.open_table(KV) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(unavailable(e.into())),
    };
    let mut start = Vec::new();
    let range = match &after {
        Some((client, key)) => {
            composite_key(&mut start, client.as_bytes(), key);
            table.range::<&[u8]>((
                std::ops::Bound::Excluded(start.as_slice()),
                std::ops::Bound::Unbounded,
            ))
        }
        None => table.range::<&[u8]>(..),
    }
    .map_err(|e| unavailable(e.into()))?;
    let mut out = Vec::new();
    for entry in range.take(limit) {
        let (key, value) = entry.map_err(|e| unavailable(e.into()))?;
        let key = key.value();
        let Some((namespace, key)) = key.split_first_chunk::<NAMESPACE_LEN>() else {
            return Err(StoreError::Corrupt("a stored key has no namespace".into()));
        };
        let client = ClientId::parse(namespace)
            .map_err(|_| StoreError::Corrupt("a stored namespace is not a public key".into()))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))?;
        let (version, value) = decode(value.value())?;
        out.push(crate::Entry {
            client,
            kv: KeyValue::new(key, version, value),
        });
    }
    Ok(out)
}

fn load(db: &Database, entries: &[crate::Entry]) -> Result<u64, crate::LoadError> {
    let unavailable = |e: redb::Error| StoreError::Unavailable(e.to_string());
    let mut txn = db.begin_write().map_err(|e| unavailable(e.into()))?;
    txn.set_durability(Durability::Immediate);
    let mut written = 0;
    {
        let mut kv = txn.open_table(KV).map_err(|e| unavailable(e.into()))?;
        let mut usage = txn.open_table(USAGE).map_err(|e| unavailable(e.into()))?;
        let mut key_buf = Vec::new();
        for entry in entries {
            let namespace = entry.client.as_bytes();
            composite_key(&mut key_buf, namespace, &entry.kv.key);
            let existing = kv
                .get(key_buf.as_slice())
                .map_err(|e| unavailable(e.into()))?
                .map(|g| decode(g.value()).map(|(v, value)| (v, value.to_vec())))
                .transpose()?;
            match existing {
                Some((version, value))
                    if version == entry.kv.version && value == entry.kv.value =>
                {
                    continue
                }
                Some((version, _)) => {
                    // Dropping the transaction unwritten aborts it.
                    return Err(crate::LoadError::Mismatch {
                        client: entry.client.short(),
                        key: entry.kv.key.clone(),
                        existing: version,
                        loaded: entry.kv.version,
                    });
                }
                None => {}
            }
            let mut stored = Vec::with_capacity(VERSION_LEN + entry.kv.value.len());
            stored.extend_from_slice(&entry.kv.version.to_be_bytes());
            stored.extend_from_slice(&entry.kv.value);
            kv.insert(key_buf.as_slice(), stored.as_slice())
                .map_err(|e| unavailable(e.into()))?;
            let used = usage
                .get(namespace.as_slice())
                .map_err(|e| unavailable(e.into()))?
                .map(|g| g.value())
                .unwrap_or(0);
            usage
                .insert(
                    namespace.as_slice(),
                    used.saturating_add(entry.kv.stored_len()),
                )
                .map_err(|e| unavailable(e.into()))?;
            written += 1;
        }
    }
    txn.commit().map_err(|e| unavailable(e.into()))?;
    Ok(written)
}
