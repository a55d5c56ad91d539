//! The embedded backend: one redb file, format 1 of tlog.md §6.6 (tables
//! prefixed `tlog_`, so they can share `lightkeeper.redb` with LSS).
//!
//! Every write (appends, checkpoints, the witness record, evidence,
//! status) goes through one writer thread, which takes every job waiting
//! and applies them in one transaction with one fsync (group commit), then
//! answers each; reads run on the blocking pool in their own read
//! transaction. Multi-byte integers in keys are big-endian, so range scans
//! run in index order.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tlog_core::merkle::{self, CompactRange, Hash};
use tlog_core::tile;
use tokio::sync::oneshot;

use crate::rules::{
    check_checkpoint, edge_tiles, merge_checkpoint, plan_append, plan_import, AppendPlan,
    CachedTileNodes, TileCache, TileNodes,
};
use crate::{
    Appended, LogId, LogOptions, LogState, LogStore, PutCheckpoint, Status, StoreError,
    CHECKPOINT_HISTORY, MAX_ENTRIES_READ, MAX_ENTRY,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("tlog_meta");
const LOGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tlog_logs");
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tlog_entries");
const TILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tlog_tiles");
const LEAVES: TableDefinition<&[u8], u64> = TableDefinition::new("tlog_leaves");
const CHECKPOINTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tlog_checkpoints");
const WITNESSED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tlog_witnessed");
const EVIDENCE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tlog_evidence");
const FORMAT: u64 = 1;

/// Why the store cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the file.
    #[error("{0} is open in another process")]
    AlreadyOpen(PathBuf),
    /// A format this version does not know.
    #[error("{path} has tlog format {found}; this version reads format {FORMAT}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u64,
    },
    /// A log's stored root does not match its compact range (C5).
    #[error("{path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// redb failed.
    #[error("{path}: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::Error>,
    },
}

enum Job {
    Create(
        String,
        LogOptions,
        oneshot::Sender<Result<LogId, StoreError>>,
    ),
    Append(
        LogId,
        Vec<Vec<u8>>,
        oneshot::Sender<Result<Vec<Appended>, StoreError>>,
    ),
    Import(
        LogId,
        u64,
        Vec<Vec<u8>>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Checkpoint(
        LogId,
        u64,
        Hash,
        Vec<u8>,
        oneshot::Sender<Result<PutCheckpoint, StoreError>>,
    ),
    Witness(
        LogId,
        u64,
        u64,
        Hash,
        Vec<u8>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Evidence(LogId, u64, Vec<u8>, oneshot::Sender<Result<(), StoreError>>),
    Status(LogId, Status, oneshot::Sender<Result<(), StoreError>>),
    /// A read failed: check that the database still takes writes.
    Check,
}

pub use redb_reopen::Reopen;
use redb_reopen::Reopening as Db;

/// The embedded log store. Dropping it finishes the queued writes.
pub struct RedbLogStore {
    db: Arc<Db>,
    cache: Arc<TileCache>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedbLogStore {
    /// Opens or creates the redb file at `path`, checks every log's root
    /// against its compact range (C5), and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let existed = path.exists();
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::AlreadyOpen(path.to_path_buf()),
            e => storage(e.into()),
        })?;
        if !existed {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| storage(redb::StorageError::Io(e).into()))?;
            }
        }
        let again = path.to_path_buf();
        Self::start(db, path, Some(Box::new(move || Database::create(&again))))
    }

    /// Opens the database `open` gives (e.g. on a `StorageBackend` of the
    /// caller's), and again with `open` after a storage failure.
    pub fn open_with(path: &Path, open: Reopen) -> Result<Self, OpenError> {
        let db = open().map_err(|e| OpenError::Storage {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })?;
        Self::start(db, path, Some(open))
    }

    /// Keeps the log tables in a database the caller also writes (a
    /// service's own redb file), so the service can append in its own
    /// transactions with [`append_in`] and [`import_in`]. `path` names the
    /// file in errors.
    pub fn open_shared(db: Arc<Database>, path: &Path) -> Result<Self, OpenError> {
        Self::start_arc(db, path, None)
    }

    /// Checks the format and every log's root (C5), then starts the writer.
    fn start(db: Database, path: &Path, reopen: Option<Reopen>) -> Result<Self, OpenError> {
        Self::start_arc(Arc::new(db), path, reopen)
    }

    fn start_arc(
        db: Arc<Database>,
        path: &Path,
        reopen: Option<Reopen>,
    ) -> Result<Self, OpenError> {
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.to_path_buf(),
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
                Some(found) => {
                    return Err(OpenError::UnknownFormat {
                        path: path.to_path_buf(),
                        found,
                    })
                }
            }
            for table in [LOGS, ENTRIES, TILES, CHECKPOINTS, WITNESSED, EVIDENCE] {
                txn.open_table(table).map_err(|e| storage(e.into()))?;
            }
            txn.open_table(LEAVES).map_err(|e| storage(e.into()))?;
            // C5: every log's root is its compact range's.
            let logs = txn.open_table(LOGS).map_err(|e| storage(e.into()))?;
            for row in logs.iter().map_err(|e| storage(e.into()))? {
                let (_, value) = row.map_err(|e| storage(e.into()))?;
                decode_log(value.value()).map_err(|e| OpenError::Corrupt {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })?;
            }
        }
        txn.commit().map_err(|e| storage(e.into()))?;
        let (jobs, queue) = mpsc::channel();
        let db = Arc::new(Db::new(db, reopen));
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("tlog-redb-writer".into())
            .spawn(move || run_writer(&writer_db, &queue))
            .map_err(|e| storage(redb::StorageError::Io(e).into()))?;
        Ok(RedbLogStore {
            db,
            cache: Arc::new(TileCache::new(TILE_CACHE)),
            jobs: Some(jobs),
            writer: Some(writer),
        })
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the tlog writer has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(make(reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || {
            let txn = db
                .get()
                .map_err(unavailable)?
                .begin_read()
                .map_err(unavailable)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?;
        if let Err(StoreError::Unavailable(_)) = &result {
            // Maybe redb latched an I/O error: the writer checks and reopens.
            if let Some(jobs) = &self.jobs {
                let _ = jobs.send(Job::Check);
            }
        }
        result
    }
}

impl Drop for RedbLogStore {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("tlog redb writer thread panicked");
            }
        }
    }
}

// ---- encodings ----

fn key2(log: &LogId, n: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(log);
    k[32..].copy_from_slice(&n.to_be_bytes());
    k
}

fn tile_key(log: &LogId, level: u8, n: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[..32].copy_from_slice(log);
    k[32] = level;
    k[33..].copy_from_slice(&n.to_be_bytes());
    k
}

fn hash_key(log: &LogId, h: &Hash) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(log);
    k[32..].copy_from_slice(h);
    k
}

fn encode_log(s: &LogState) -> Vec<u8> {
    let mut out = vec![1, s.status.byte()];
    out.extend_from_slice(&s.size.to_be_bytes());
    out.extend_from_slice(&s.root);
    out.push(s.range.hashes().len() as u8);
    for h in s.range.hashes() {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&s.checkpoint_size.to_be_bytes());
    out.push(u8::from(s.options.dedup) | (u8::from(s.options.index_leaves) << 1));
    out.extend_from_slice(&(s.origin.len() as u16).to_be_bytes());
    out.extend_from_slice(s.origin.as_bytes());
    out
}

fn decode_log(bytes: &[u8]) -> Result<LogState, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("log record: {why}"));
    let mut r = tlog_core::wire::Reader::new(bytes);
    let short = |_| corrupt("truncated");
    if r.u8().map_err(short)? != 1 {
        return Err(corrupt("unknown record version"));
    }
    let status = Status::from_byte(r.u8().map_err(short)?).ok_or_else(|| corrupt("status"))?;
    let size = r.u64().map_err(short)?;
    let root = r.hash().map_err(short)?;
    let hashes = r.proof(64).map_err(short)?;
    let checkpoint_size = r.u64().map_err(short)?;
    let flags = r.u8().map_err(short)?;
    let origin = r.str16(255).map_err(short)?;
    r.end().map_err(short)?;
    let range = CompactRange::from_parts(size, hashes).map_err(|e| corrupt(&e.to_string()))?;
    if range.root() != root {
        return Err(corrupt("root does not match the compact range (C5)"));
    }
    Ok(LogState {
        origin,
        size,
        root,
        range,
        status,
        checkpoint_size,
        options: LogOptions {
            dedup: flags & 1 == 1,
            index_leaves: flags & 2 == 2,
        },
    })
}

fn read_log<T: ReadableTable<&'static [u8], &'static [u8]>>(
    logs: &T,
    log: &LogId,
) -> Result<LogState, StoreError> {
    let row = logs
        .get(log.as_slice())
        .map_err(unavailable)?
        .ok_or(StoreError::UnknownLog)?;
    decode_log(row.value())
}

fn read_tile<T: ReadableTable<&'static [u8], &'static [u8]>>(
    tiles: &T,
    log: &LogId,
    level: u8,
    n: u64,
) -> Result<Option<Vec<Hash>>, StoreError> {
    let Some(row) = tiles
        .get(tile_key(log, level, n).as_slice())
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    crate::rules::decode_tile(level, n, row.value()).map(Some)
}

/// Tree nodes from the tiles table.
fn nodes<T: ReadableTable<&'static [u8], &'static [u8]>>(
    tiles: &T,
    log: LogId,
) -> TileNodes<impl crate::rules::TileRead + '_> {
    TileNodes(move |level, n| read_tile(tiles, &log, level, n))
}

/// Full tiles kept with their inner nodes for proofs (~16 KiB each).
const TILE_CACHE: usize = 1024;

/// Nodes for reads: full tiles through the cache.
fn cached<'a, T: ReadableTable<&'static [u8], &'static [u8]>>(
    tiles: &'a T,
    log: LogId,
    cache: &'a TileCache,
) -> CachedTileNodes<'a, impl crate::rules::TileRead + 'a> {
    CachedTileNodes {
        log,
        cache,
        read: move |level, n| read_tile(tiles, &log, level, n),
    }
}

// ---- the writer ----

fn run_writer(db: &Db, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        if let Job::Check = first {
            db.recover("tlog");
            continue;
        }
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.retain(|job| !matches!(job, Job::Check));
        let committed = match db.get() {
            Ok(handle) => commit(&handle, &batch),
            Err(e) => Err(Failed::Before(unavailable(e))),
        };
        let failed = |e: &StoreError| (0..batch.len()).map(|_| Err(e.clone())).collect();
        let results = match committed {
            Ok(results) => results,
            Err(Failed::Before(e)) => {
                tracing::warn!(error = %e, jobs = batch.len(), "tlog redb commit failed; nothing written");
                db.recover("tlog");
                failed(&e)
            }
            Err(Failed::InDoubt { results, error }) => {
                // The COMMIT itself failed: with a failing disk redb may
                // still have made it durable. Reopen and read back, so an
                // append is never reported failed yet kept (and retried
                // into a duplicate).
                db.recover("tlog");
                match db.get().ok().and_then(|h| landed(&h, &batch, &results)) {
                    Some(true) => {
                        tracing::warn!(
                            jobs = batch.len(),
                            "a tlog redb commit reported failure but landed; acknowledged"
                        );
                        results
                    }
                    Some(false) => {
                        tracing::warn!(error = %error, jobs = batch.len(), "tlog redb commit failed; nothing written");
                        failed(&error)
                    }
                    None => {
                        tracing::error!(error = %error, jobs = batch.len(),
                            "tlog redb commit failed and the store cannot be read back: outcome unknown until it is");
                        failed(&error)
                    }
                }
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            reply(job, result);
        }
    }
}

/// Each job's outcome inside the shared transaction.
enum Done {
    Id(LogId),
    Appended(Vec<Appended>),
    Checkpoint(PutCheckpoint),
    Unit,
}

fn reply(job: Job, result: Result<Done, StoreError>) {
    match job {
        Job::Check => {}
        Job::Create(.., tx) => {
            let _ = tx.send(result.and_then(|d| match d {
                Done::Id(id) => Ok(id),
                _ => Err(unavailable("internal: wrong outcome")),
            }));
        }
        Job::Append(.., tx) => {
            let _ = tx.send(result.and_then(|d| match d {
                Done::Appended(a) => Ok(a),
                _ => Err(unavailable("internal: wrong outcome")),
            }));
        }
        Job::Checkpoint(.., tx) => {
            let _ = tx.send(result.and_then(|d| match d {
                Done::Checkpoint(c) => Ok(c),
                _ => Err(unavailable("internal: wrong outcome")),
            }));
        }
        Job::Import(.., tx)
        | Job::Witness(.., tx)
        | Job::Evidence(.., tx)
        | Job::Status(.., tx) => {
            let _ = tx.send(result.map(|_| ()));
        }
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Before(e)
    }
}

/// Why a batch was not applied.
enum Failed {
    /// Before its COMMIT: nothing written.
    Before(StoreError),
    /// The COMMIT failed: written or not, to be read back.
    InDoubt {
        /// What each job came to.
        results: Vec<Result<Done, StoreError>>,
        /// The failure.
        error: StoreError,
    },
}

/// Whether a batch whose COMMIT failed is in the store: its last append
/// or import that took new indices holds its last entry there (an index
/// beyond the log's size before the batch, so it cannot have been there
/// already; one transaction lands whole or not at all). `None` when the
/// store cannot be read.
fn landed(db: &Database, batch: &[Job], results: &[Result<Done, StoreError>]) -> Option<bool> {
    let last = batch
        .iter()
        .zip(results)
        .rev()
        .find_map(|(job, result)| match (job, result) {
            (Job::Append(log, entries, _), Ok(Done::Appended(appended))) => entries
                .iter()
                .zip(appended)
                .rev()
                .find(|(_, a)| !a.duplicate)
                .map(|(entry, a)| (*log, a.index, entry.clone())),
            (Job::Import(log, start, entries, _), Ok(Done::Unit)) => entries
                .last()
                .map(|entry| (*log, start + entries.len() as u64 - 1, entry.clone())),
            _ => None,
        });
    let Some((log, index, entry)) = last else {
        return Some(false);
    };
    let txn = db.begin_read().ok()?;
    let entries = txn.open_table(ENTRIES).ok()?;
    let stored = entries.get(key2(&log, index).as_slice()).ok()?;
    Some(stored.is_some_and(|g| g.value() == entry.as_slice()))
}

fn commit(db: &Database, batch: &[Job]) -> Result<Vec<Result<Done, StoreError>>, Failed> {
    let mut txn = db
        .begin_write()
        .map_err(|e| Failed::Before(unavailable(e)))?;
    txn.set_durability(Durability::Immediate);
    let results = {
        let mut t = Tables::open(&txn).map_err(Failed::Before)?;
        let mut results: Vec<Option<Result<Done, StoreError>>> = Vec::with_capacity(batch.len());
        // Appends waiting to be applied, coalesced per log: each run of
        // appends between other jobs is integrated once per log, so one
        // partial tile is rewritten per batch instead of once per append.
        let mut run: Vec<(LogId, Vec<usize>)> = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            results.push(None);
            if let Job::Append(log, entries, _) = job {
                if entries.iter().any(|e| e.len() > MAX_ENTRY) {
                    results[i] = Some(Err(StoreError::TooLarge("an entry over 65,535 bytes")));
                    continue;
                }
                match run.iter_mut().find(|(l, _)| l == log) {
                    Some((_, jobs)) => jobs.push(i),
                    None => run.push((*log, vec![i])),
                }
                continue;
            }
            t.flush_appends(batch, &mut run, &mut results)?;
            let result = match job {
                Job::Create(origin, options, _) => t.create(origin, *options).map(Done::Id),
                Job::Append(..) | Job::Check => continue,
                Job::Import(log, start, entries, _) => {
                    t.import(log, *start, entries).map(|()| Done::Unit)
                }
                Job::Checkpoint(log, size, root, note, _) => t
                    .put_checkpoint(log, *size, root, note)
                    .map(Done::Checkpoint),
                Job::Witness(log, expected, size, root, note, _) => t
                    .witness_cas(log, *expected, *size, root, note)
                    .map(|()| Done::Unit),
                Job::Evidence(log, observed, ev, _) => {
                    t.put_evidence(log, *observed, ev).map(|()| Done::Unit)
                }
                Job::Status(log, status, _) => t.set_status(log, *status).map(|()| Done::Unit),
            };
            // A storage failure inside a job fails the whole batch: the
            // transaction is dropped unwritten.
            if let Err(e @ StoreError::Unavailable(_)) = result {
                return Err(Failed::Before(e));
            }
            results[i] = Some(result);
        }
        t.flush_appends(batch, &mut run, &mut results)?;
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(unavailable("internal: job not applied"))))
            .collect()
    };
    if let Err(e) = txn.commit() {
        return Err(Failed::InDoubt {
            results,
            error: unavailable(e),
        });
    }
    Ok(results)
}

/// Appends inside the caller's write transaction on a database shared
/// with [`RedbLogStore::open_shared`], so a service commits its own rows
/// atomically with the entries (tlog.md §6.5). Durable when the caller's
/// commit returns (with redb's default `Durability::Immediate`); nothing of
/// it if the transaction is aborted. The tlog tables must not be open in
/// `txn` already.
pub fn append_in(
    txn: &redb::WriteTransaction,
    log: &LogId,
    entries: &[Vec<u8>],
) -> Result<Vec<Appended>, StoreError> {
    Tables::open(txn)?.append(log, entries)
}

/// Imports verified entries at exactly `start` inside the caller's write
/// transaction (followers committing derived rows with the entries);
/// `Conflict { have }` when `start` is not the stored size. Same terms as
/// [`append_in`].
pub fn import_in(
    txn: &redb::WriteTransaction,
    log: &LogId,
    start: u64,
    entries: &[Vec<u8>],
) -> Result<(), StoreError> {
    Tables::open(txn)?.import(log, start, entries)
}

struct Tables<'t> {
    logs: redb::Table<'t, &'static [u8], &'static [u8]>,
    entries: redb::Table<'t, &'static [u8], &'static [u8]>,
    tiles: redb::Table<'t, &'static [u8], &'static [u8]>,
    leaves: redb::Table<'t, &'static [u8], u64>,
    checkpoints: redb::Table<'t, &'static [u8], &'static [u8]>,
    witnessed: redb::Table<'t, &'static [u8], &'static [u8]>,
    evidence: redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            logs: txn.open_table(LOGS).map_err(unavailable)?,
            entries: txn.open_table(ENTRIES).map_err(unavailable)?,
            tiles: txn.open_table(TILES).map_err(unavailable)?,
            leaves: txn.open_table(LEAVES).map_err(unavailable)?,
            checkpoints: txn.open_table(CHECKPOINTS).map_err(unavailable)?,
            witnessed: txn.open_table(WITNESSED).map_err(unavailable)?,
            evidence: txn.open_table(EVIDENCE).map_err(unavailable)?,
        })
    }

    /// Applies the coalesced appends of `run`: one integration per log,
    /// each job's results handed back in order.
    fn flush_appends(
        &mut self,
        batch: &[Job],
        run: &mut Vec<(LogId, Vec<usize>)>,
        results: &mut [Option<Result<Done, StoreError>>],
    ) -> Result<(), StoreError> {
        for (log, jobs) in run.drain(..) {
            let entries: Vec<Vec<u8>> = jobs
                .iter()
                .flat_map(|&i| match &batch[i] {
                    Job::Append(_, entries, _) => entries.clone(),
                    _ => Vec::new(),
                })
                .collect();
            match self.append(&log, &entries) {
                Ok(appended) => {
                    let mut rest = appended.into_iter();
                    for &i in &jobs {
                        let n = match &batch[i] {
                            Job::Append(_, entries, _) => entries.len(),
                            _ => 0,
                        };
                        results[i] = Some(Ok(Done::Appended(rest.by_ref().take(n).collect())));
                    }
                }
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    for &i in &jobs {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    fn create(&mut self, origin: &str, options: LogOptions) -> Result<LogId, StoreError> {
        crate::rules::check_origin(origin)?;
        let id = tlog_core::log_id(origin);
        match read_log(&self.logs, &id) {
            Ok(_) => return Ok(id),
            Err(StoreError::UnknownLog) => {}
            Err(e) => return Err(e),
        }
        let state = LogState {
            origin: origin.to_string(),
            size: 0,
            root: merkle::EMPTY_ROOT,
            range: CompactRange::new(),
            status: Status::Active,
            checkpoint_size: 0,
            options,
        };
        self.logs
            .insert(id.as_slice(), encode_log(&state).as_slice())
            .map_err(unavailable)?;
        Ok(id)
    }

    fn append(&mut self, log: &LogId, batch: &[Vec<u8>]) -> Result<Vec<Appended>, StoreError> {
        let state = read_log(&self.logs, log)?;
        let leaves_table = &self.leaves;
        let plan = plan_append(&state, batch, |leaf| {
            Ok(leaves_table
                .get(hash_key(log, leaf).as_slice())
                .map_err(unavailable)?
                .map(|g| g.value()))
        })?;
        self.write(log, state, &plan, batch)?;
        Ok(plan.appended)
    }

    fn import(&mut self, log: &LogId, start: u64, batch: &[Vec<u8>]) -> Result<(), StoreError> {
        let state = read_log(&self.logs, log)?;
        let plan = plan_import(&state, start, batch)?;
        self.write(log, state, &plan, batch)
    }

    /// Writes a planned batch: entries, leaf index, tiles, the new state.
    fn write(
        &mut self,
        log: &LogId,
        mut state: LogState,
        plan: &AppendPlan,
        batch: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let keep_leaves = state.options.dedup || state.options.index_leaves;
        let fresh: Vec<(&[u8], Hash)> = plan
            .fresh
            .iter()
            .map(|&(i, leaf)| (batch[i].as_slice(), leaf))
            .collect();
        let mut edge = Vec::with_capacity(8);
        for (level, partial) in edge_tiles(state.size).into_iter().enumerate() {
            edge.push(match partial {
                Some(n) => read_tile(&self.tiles, log, level as u8, n)?.unwrap_or_default(),
                None => Vec::new(),
            });
        }
        let leaves: Vec<Hash> = fresh.iter().map(|(_, h)| *h).collect();
        let (range, updates) = tile::integrate(&state.range, &edge, &leaves)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for (i, (entry, leaf)) in fresh.iter().enumerate() {
            let index = state.size + i as u64;
            self.entries
                .insert(key2(log, index).as_slice(), *entry)
                .map_err(unavailable)?;
            if keep_leaves {
                let key = hash_key(log, leaf);
                if self
                    .leaves
                    .get(key.as_slice())
                    .map_err(unavailable)?
                    .is_none()
                {
                    self.leaves
                        .insert(key.as_slice(), index)
                        .map_err(unavailable)?;
                }
            }
        }
        for u in updates {
            let bytes: Vec<u8> = u.hashes.concat();
            self.tiles
                .insert(tile_key(log, u.level, u.index).as_slice(), bytes.as_slice())
                .map_err(unavailable)?;
        }
        state.size = range.size();
        state.root = range.root();
        state.range = range;
        self.logs
            .insert(log.as_slice(), encode_log(&state).as_slice())
            .map_err(unavailable)?;
        Ok(())
    }

    fn put_checkpoint(
        &mut self,
        log: &LogId,
        size: u64,
        root: &Hash,
        note: &[u8],
    ) -> Result<PutCheckpoint, StoreError> {
        let mut state = read_log(&self.logs, log)?;
        let parsed = check_checkpoint(&state, size, root, note)?;
        let at = merkle::subtree_root(&nodes(&self.tiles, *log), 0, size)?;
        if at != *root {
            return Err(StoreError::CheckpointConflict);
        }
        if size < state.checkpoint_size {
            return Ok(PutCheckpoint::Older {
                latest: state.checkpoint_size,
            });
        }
        let key = key2(log, size);
        let existing = self
            .checkpoints
            .get(key.as_slice())
            .map_err(unavailable)?
            .map(|g| g.value().to_vec());
        let (bytes, outcome) = merge_checkpoint(existing.as_deref(), &parsed, note)?;
        self.checkpoints
            .insert(key.as_slice(), bytes.as_slice())
            .map_err(unavailable)?;
        if size > state.checkpoint_size || state.checkpoint_size == 0 {
            state.checkpoint_size = size;
            self.logs
                .insert(log.as_slice(), encode_log(&state).as_slice())
                .map_err(unavailable)?;
        }
        // Keep the latest and the 1,024 before it.
        let low = key2(log, 0);
        let high = key2(log, u64::MAX);
        let count = self
            .checkpoints
            .range(low.as_slice()..=high.as_slice())
            .map_err(unavailable)?
            .count() as u64;
        if count > CHECKPOINT_HISTORY + 1 {
            let old: Vec<Vec<u8>> = self
                .checkpoints
                .range(low.as_slice()..=high.as_slice())
                .map_err(unavailable)?
                .take((count - CHECKPOINT_HISTORY - 1) as usize)
                .filter_map(|r| r.ok().map(|(k, _)| k.value().to_vec()))
                .collect();
            for k in old {
                self.checkpoints.remove(k.as_slice()).map_err(unavailable)?;
            }
        }
        Ok(outcome)
    }

    fn witness_cas(
        &mut self,
        log: &LogId,
        expected: u64,
        size: u64,
        root: &Hash,
        note: &[u8],
    ) -> Result<(), StoreError> {
        let current = self
            .witnessed
            .get(log.as_slice())
            .map_err(unavailable)?
            .map(|g| {
                let v = g.value();
                v.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if current != expected {
            return Err(StoreError::Mismatch { size: current });
        }
        let mut value = size.to_be_bytes().to_vec();
        value.extend_from_slice(root);
        value.extend_from_slice(note);
        self.witnessed
            .insert(log.as_slice(), value.as_slice())
            .map_err(unavailable)?;
        Ok(())
    }

    fn put_evidence(&mut self, log: &LogId, observed: u64, ev: &[u8]) -> Result<(), StoreError> {
        let key = hash_key(log, &tlog_core::Evidence::digest(ev));
        if self
            .evidence
            .get(key.as_slice())
            .map_err(unavailable)?
            .is_none()
        {
            let mut value = observed.to_be_bytes().to_vec();
            value.extend_from_slice(ev);
            self.evidence
                .insert(key.as_slice(), value.as_slice())
                .map_err(unavailable)?;
        }
        Ok(())
    }

    fn set_status(&mut self, log: &LogId, status: Status) -> Result<(), StoreError> {
        let mut state = read_log(&self.logs, log)?;
        state.status = status;
        self.logs
            .insert(log.as_slice(), encode_log(&state).as_slice())
            .map_err(unavailable)?;
        Ok(())
    }
}

impl LogStore for RedbLogStore {
    async fn create_log(&self, origin: &str, options: LogOptions) -> Result<LogId, StoreError> {
        let origin = origin.to_string();
        self.submit(|tx| Job::Create(origin, options, tx)).await
    }

    async fn append(&self, log: LogId, entries: Vec<Vec<u8>>) -> Result<Vec<Appended>, StoreError> {
        self.submit(|tx| Job::Append(log, entries, tx)).await
    }

    async fn import(
        &self,
        log: LogId,
        start: u64,
        entries: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.submit(|tx| Job::Import(log, start, entries, tx)).await
    }

    async fn state(&self, log: LogId) -> Result<LogState, StoreError> {
        self.read(move |txn| read_log(&txn.open_table(LOGS).map_err(unavailable)?, &log))
            .await
    }

    async fn tile(
        &self,
        log: LogId,
        level: u8,
        index: u64,
    ) -> Result<Option<Vec<Hash>>, StoreError> {
        self.read(move |txn| {
            read_tile(
                &txn.open_table(TILES).map_err(unavailable)?,
                &log,
                level,
                index,
            )
        })
        .await
    }

    async fn entries(&self, log: LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(move |txn| {
            let state = read_log(&txn.open_table(LOGS).map_err(unavailable)?, &log)?;
            let end = end
                .min(state.size)
                .min(start.saturating_add(MAX_ENTRIES_READ));
            if start >= end {
                return Ok(Vec::new());
            }
            let table = txn.open_table(ENTRIES).map_err(unavailable)?;
            let (lo, hi) = (key2(&log, start), key2(&log, end));
            table
                .range(lo.as_slice()..hi.as_slice())
                .map_err(unavailable)?
                .map(|row| row.map(|(_, v)| v.value().to_vec()).map_err(unavailable))
                .collect()
        })
        .await
    }

    async fn leaf_index(&self, log: LogId, leaf: Hash) -> Result<Option<u64>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(LEAVES).map_err(unavailable)?;
            Ok(table
                .get(hash_key(&log, &leaf).as_slice())
                .map_err(unavailable)?
                .map(|g| g.value()))
        })
        .await
    }

    async fn put_checkpoint(
        &self,
        log: LogId,
        size: u64,
        root: Hash,
        note: Vec<u8>,
    ) -> Result<PutCheckpoint, StoreError> {
        self.submit(|tx| Job::Checkpoint(log, size, root, note, tx))
            .await
    }

    async fn checkpoint(
        &self,
        log: LogId,
        size: Option<u64>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |txn| {
            let state = read_log(&txn.open_table(LOGS).map_err(unavailable)?, &log)?;
            let size = match size {
                Some(s) => s,
                None if state.checkpoint_size == 0 => {
                    // A log whose only checkpoint is of size 0.
                    0
                }
                None => state.checkpoint_size,
            };
            let table = txn.open_table(CHECKPOINTS).map_err(unavailable)?;
            Ok(table
                .get(key2(&log, size).as_slice())
                .map_err(unavailable)?
                .map(|g| g.value().to_vec()))
        })
        .await
    }

    async fn witness_cas(
        &self,
        log: LogId,
        expected: u64,
        size: u64,
        root: Hash,
        note: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.submit(|tx| Job::Witness(log, expected, size, root, note, tx))
            .await
    }

    async fn witnessed(&self, log: LogId) -> Result<Option<(u64, Hash, Vec<u8>)>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(WITNESSED).map_err(unavailable)?;
            let Some(row) = table.get(log.as_slice()).map_err(unavailable)? else {
                return Ok(None);
            };
            let v = row.value();
            if v.len() < 40 {
                return Err(StoreError::Corrupt("witness record".into()));
            }
            let size = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
            let root: Hash = v[8..40].try_into().unwrap_or([0; 32]);
            Ok(Some((size, root, v[40..].to_vec())))
        })
        .await
    }

    async fn put_evidence(
        &self,
        log: LogId,
        observed: u64,
        evidence: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.submit(|tx| Job::Evidence(log, observed, evidence, tx))
            .await
    }

    async fn evidence(&self, log: LogId) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(EVIDENCE).map_err(unavailable)?;
            let (lo, hi) = (hash_key(&log, &[0; 32]), hash_key(&log, &[0xff; 32]));
            table
                .range(lo.as_slice()..=hi.as_slice())
                .map_err(unavailable)?
                .map(|row| {
                    row.map(|(_, v)| v.value().get(8..).unwrap_or_default().to_vec())
                        .map_err(unavailable)
                })
                .collect()
        })
        .await
    }

    async fn inclusion_proof(
        &self,
        log: LogId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let cache = self.cache.clone();
        self.read(move |txn| {
            let state = read_log(&txn.open_table(LOGS).map_err(unavailable)?, &log)?;
            if size > state.size {
                return Err(StoreError::OutOfRange(format!(
                    "size {size} > {}",
                    state.size
                )));
            }
            let tiles = txn.open_table(TILES).map_err(unavailable)?;
            let proof = merkle::inclusion_proof(&cached(&tiles, log, &cache), index, size)?;
            proof.map_err(|e| StoreError::OutOfRange(e.to_string()))
        })
        .await
    }

    async fn consistency_proof(
        &self,
        log: LogId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let cache = self.cache.clone();
        self.read(move |txn| {
            let state = read_log(&txn.open_table(LOGS).map_err(unavailable)?, &log)?;
            if new > state.size {
                return Err(StoreError::OutOfRange(format!(
                    "size {new} > {}",
                    state.size
                )));
            }
            let tiles = txn.open_table(TILES).map_err(unavailable)?;
            let proof = merkle::consistency_proof(&cached(&tiles, log, &cache), old, new)?;
            proof.map_err(|e| StoreError::OutOfRange(e.to_string()))
        })
        .await
    }

    async fn set_status(&self, log: LogId, status: Status) -> Result<(), StoreError> {
        self.submit(|tx| Job::Status(log, status, tx)).await
    }
}
