//! The PostgreSQL backend of the [`LogStore`] contract (tlog.md §6.7).
//!
//! # Schema
//! The eight tables of the redb format as columns, in the schema of
//! [`PostgresConfig::schema`] (`lightkeeper` by default, shared with LSS;
//! this store records its migrations in `tlog_migrations`, so the two
//! migrate independently). Ids and hashes are `bytea` checked to 32 bytes,
//! sizes and indices `bigint`; primary keys equal the redb keys.
//!
//! # An append
//! Appends to one log wait in this node's queue for it; whoever leads takes
//! every waiting append (up to 4,096 entries) and commits them together, in
//! a task of its own so that a caller going away cannot cancel the others'
//! (group commit: 26 k appends/s instead of 500, docs/benchmarks.md). One
//! READ COMMITTED transaction: `SELECT … FOR UPDATE` of the log's row
//! (so one log's appenders run one at a time, across every node sharing the
//! database, while other logs run in parallel); the batch's leaf hashes
//! looked up in one query (dedup); the right-edge tiles in one query;
//! [`tlog_core::tile::integrate`]; entries, leaves and tiles written with
//! `unnest` (one statement each); the row updated; `COMMIT`, durable with the
//! default `synchronous_commit = on`.
//!
//! # Faults
//! Connection, serialization and unique-violation failures are retried
//! through `lss_store::retry`, as in `lss-store-postgres` (whose pool, TLS,
//! migration runner and failure classification this store uses, so both
//! stores connect and fail alike). A COMMIT whose answer was lost is in
//! doubt: the retry re-reads the indices the batch was given and, if they
//! hold exactly its entries, reports the earlier outcome instead of
//! appending twice. While the database is unreachable every call answers
//! [`StoreError::Unavailable`] quickly, and service resumes with it.
//!
//! # Reads of proofs
//! Which tree nodes a proof needs depends only on sizes and indices, so a
//! dry run names the tiles ([`tlog_store::rules::tiles_needed`]), one query
//! fetches them, and the proof is computed from those: one round trip per
//! proof whatever its length.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use deadpool_postgres::{Pool, Transaction};
use lss_store::retry::Failure;
use lss_store_postgres::{classify, connect_pool, migrate, pool_failure, quote_schema, RETRY};
pub use lss_store_postgres::{OpenError, PostgresConfig, PostgresTls};
use tlog_core::merkle::{self, CompactRange, Hash, NodeSource};
use tlog_core::tile;
use tlog_store::rules::{
    check_checkpoint, check_origin, decode_tile, edge_tiles, merge_checkpoint, plan_append,
    plan_import, tiles_needed, AppendPlan, CachedTileNodes, FnNodes, TileCache,
};
use tlog_store::{
    Appended, LogId, LogOptions, LogState, LogStore, PutCheckpoint, Status, StoreError,
    CHECKPOINT_HISTORY, MAX_ENTRIES_READ,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The schema migrations, in order. Never edit one that has shipped: add the
/// next. `{schema}` is replaced by the quoted schema name.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE {schema}.tlog_logs (
        log_id bytea PRIMARY KEY CHECK (length(log_id) = 32),
        origin text NOT NULL UNIQUE,
        status smallint NOT NULL,
        size bigint NOT NULL CHECK (size >= 0),
        root bytea NOT NULL CHECK (length(root) = 32),
        range bytea NOT NULL,
        checkpoint_size bigint NOT NULL CHECK (checkpoint_size >= 0),
        dedup boolean NOT NULL,
        index_leaves boolean NOT NULL
    );
    CREATE TABLE {schema}.tlog_entries (
        log_id bytea NOT NULL CHECK (length(log_id) = 32),
        idx bigint NOT NULL CHECK (idx >= 0),
        entry bytea NOT NULL,
        PRIMARY KEY (log_id, idx)
    );
    CREATE TABLE {schema}.tlog_tiles (
        log_id bytea NOT NULL CHECK (length(log_id) = 32),
        level smallint NOT NULL CHECK (level >= 0 AND level < 8),
        idx bigint NOT NULL CHECK (idx >= 0),
        hashes bytea NOT NULL,
        PRIMARY KEY (log_id, level, idx)
    );
    CREATE TABLE {schema}.tlog_leaves (
        log_id bytea NOT NULL CHECK (length(log_id) = 32),
        leaf bytea NOT NULL CHECK (length(leaf) = 32),
        idx bigint NOT NULL CHECK (idx >= 0),
        PRIMARY KEY (log_id, leaf)
    );
    CREATE TABLE {schema}.tlog_checkpoints (
        log_id bytea NOT NULL CHECK (length(log_id) = 32),
        size bigint NOT NULL CHECK (size >= 0),
        note bytea NOT NULL,
        PRIMARY KEY (log_id, size)
    );
    CREATE TABLE {schema}.tlog_witnessed (
        log_id bytea PRIMARY KEY CHECK (length(log_id) = 32),
        size bigint NOT NULL CHECK (size >= 0),
        root bytea NOT NULL CHECK (length(root) = 32),
        note bytea NOT NULL
    );
    CREATE TABLE {schema}.tlog_evidence (
        log_id bytea NOT NULL CHECK (length(log_id) = 32),
        digest bytea NOT NULL CHECK (length(digest) = 32),
        observed bigint NOT NULL,
        evidence bytea NOT NULL,
        PRIMARY KEY (log_id, digest)
    );",
)];

/// SQL text with the schema filled in.
struct Sql {
    create: String,
    state: String,
    lock: String,
    leaves: String,
    tiles: String,
    tile: String,
    insert_entries: String,
    insert_leaves: String,
    upsert_tiles: String,
    update_tree: String,
    entries: String,
    leaf_index: String,
    checkpoint: String,
    upsert_checkpoint: String,
    set_checkpoint_size: String,
    prune_checkpoints: String,
    witnessed: String,
    witnessed_lock: String,
    update_witnessed: String,
    insert_witnessed: String,
    insert_evidence: String,
    evidence: String,
    set_status: String,
    all_logs: String,
}

const LOG_COLUMNS: &str = "origin, status, size, root, range, checkpoint_size, dedup, index_leaves";

impl Sql {
    fn new(s: &str) -> Self {
        Sql {
            create: format!(
                "INSERT INTO {s}.tlog_logs (log_id, {LOG_COLUMNS}) VALUES ($1, $2, $3, 0, $4, ''::bytea, 0, $5, $6) \
                 ON CONFLICT (log_id) DO NOTHING"
            ),
            state: format!("SELECT {LOG_COLUMNS} FROM {s}.tlog_logs WHERE log_id = $1"),
            lock: format!("SELECT {LOG_COLUMNS} FROM {s}.tlog_logs WHERE log_id = $1 FOR UPDATE"),
            leaves: format!(
                "SELECT leaf, idx FROM {s}.tlog_leaves WHERE log_id = $1 AND leaf = ANY($2)"
            ),
            tiles: format!(
                "SELECT t.level, t.idx, t.hashes FROM {s}.tlog_tiles t \
                 JOIN unnest($2::int2[], $3::int8[]) AS w(level, idx) ON t.level = w.level AND t.idx = w.idx \
                 WHERE t.log_id = $1"
            ),
            tile: format!(
                "SELECT hashes FROM {s}.tlog_tiles WHERE log_id = $1 AND level = $2 AND idx = $3"
            ),
            insert_entries: format!(
                "INSERT INTO {s}.tlog_entries (log_id, idx, entry) \
                 SELECT $1, i, e FROM unnest($2::int8[], $3::bytea[]) AS t(i, e)"
            ),
            insert_leaves: format!(
                "INSERT INTO {s}.tlog_leaves (log_id, leaf, idx) \
                 SELECT $1, l, i FROM unnest($2::bytea[], $3::int8[]) AS t(l, i) \
                 ON CONFLICT (log_id, leaf) DO NOTHING"
            ),
            upsert_tiles: format!(
                "INSERT INTO {s}.tlog_tiles (log_id, level, idx, hashes) \
                 SELECT $1, l, i, h FROM unnest($2::int2[], $3::int8[], $4::bytea[]) AS t(l, i, h) \
                 ON CONFLICT (log_id, level, idx) DO UPDATE SET hashes = EXCLUDED.hashes"
            ),
            update_tree: format!(
                "UPDATE {s}.tlog_logs SET size = $2, root = $3, range = $4 WHERE log_id = $1"
            ),
            entries: format!(
                "SELECT idx, entry FROM {s}.tlog_entries WHERE log_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx"
            ),
            leaf_index: format!(
                "SELECT idx FROM {s}.tlog_leaves WHERE log_id = $1 AND leaf = $2"
            ),
            checkpoint: format!(
                "SELECT note FROM {s}.tlog_checkpoints WHERE log_id = $1 AND size = $2"
            ),
            upsert_checkpoint: format!(
                "INSERT INTO {s}.tlog_checkpoints (log_id, size, note) VALUES ($1, $2, $3) \
                 ON CONFLICT (log_id, size) DO UPDATE SET note = EXCLUDED.note"
            ),
            set_checkpoint_size: format!(
                "UPDATE {s}.tlog_logs SET checkpoint_size = $2 WHERE log_id = $1"
            ),
            prune_checkpoints: format!(
                "DELETE FROM {s}.tlog_checkpoints WHERE log_id = $1 AND size IN \
                 (SELECT size FROM {s}.tlog_checkpoints WHERE log_id = $1 ORDER BY size DESC OFFSET $2)"
            ),
            witnessed: format!(
                "SELECT size, root, note FROM {s}.tlog_witnessed WHERE log_id = $1"
            ),
            witnessed_lock: format!(
                "SELECT size, root FROM {s}.tlog_witnessed WHERE log_id = $1 FOR UPDATE"
            ),
            update_witnessed: format!(
                "UPDATE {s}.tlog_witnessed SET size = $2, root = $3, note = $4 \
                 WHERE log_id = $1 AND size = $5"
            ),
            insert_witnessed: format!(
                "INSERT INTO {s}.tlog_witnessed (log_id, size, root, note) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (log_id) DO NOTHING"
            ),
            insert_evidence: format!(
                "INSERT INTO {s}.tlog_evidence (log_id, digest, observed, evidence) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (log_id, digest) DO NOTHING"
            ),
            evidence: format!(
                "SELECT evidence FROM {s}.tlog_evidence WHERE log_id = $1 ORDER BY digest"
            ),
            set_status: format!("UPDATE {s}.tlog_logs SET status = $2 WHERE log_id = $1"),
            all_logs: format!("SELECT {LOG_COLUMNS} FROM {s}.tlog_logs"),
        }
    }
}

/// The PostgreSQL log store: a connection pool and its statements.
pub struct PostgresLogStore {
    inner: Arc<Inner>,
}

impl std::ops::Deref for PostgresLogStore {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// The store's state, shared with the group-commit tasks (which run to
/// the end even if the caller that started one goes away).
#[doc(hidden)]
pub struct Inner {
    pool: Pool,
    sql: Sql,
    sequencers: Mutex<HashMap<LogId, Arc<Sequencer>>>,
    /// Full tiles with their inner nodes, for proofs.
    cache: TileCache,
}

/// One log's group commit on this node: appends wait in `queue`; whoever
/// holds `leader` takes every waiting append and commits them in one
/// transaction, then answers each. The log row's lock still orders nodes.
#[derive(Default)]
struct Sequencer {
    queue: Mutex<Vec<Waiting>>,
    leader: tokio::sync::Mutex<()>,
}

struct Waiting {
    entries: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
}

/// Most entries one group commit takes (tlog.md §6.8 `batch_max_entries`).
const BATCH_MAX_ENTRIES: usize = 4096;

/// A u64 from the API as a `bigint`: values past `i64::MAX` name nothing
/// stored, so they saturate.
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("PostgreSQL {what}"))
}

fn hash(bytes: &[u8], what: &str) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| corrupt(what))
}

fn decode_state(row: &Row) -> Result<LogState, StoreError> {
    let origin: String = row.get(0);
    let status = Status::from_byte(u8::try_from(row.get::<_, i16>(1)).unwrap_or(u8::MAX))
        .ok_or_else(|| corrupt("log status"))?;
    let size = u64::try_from(row.get::<_, i64>(2)).map_err(|_| corrupt("log size"))?;
    let root = hash(row.get(3), "log root")?;
    let range_bytes: &[u8] = row.get(4);
    if !range_bytes.len().is_multiple_of(32) {
        return Err(corrupt("compact range"));
    }
    let hashes = range_bytes
        .chunks_exact(32)
        .map(|c| hash(c, "compact range"))
        .collect::<Result<Vec<_>, _>>()?;
    let range = CompactRange::from_parts(size, hashes)
        .map_err(|e| StoreError::Corrupt(format!("compact range: {e}")))?;
    if range.root() != root {
        return Err(StoreError::Corrupt(
            "log root does not match its compact range (C5)".into(),
        ));
    }
    Ok(LogState {
        origin,
        size,
        root,
        range,
        status,
        checkpoint_size: u64::try_from(row.get::<_, i64>(5))
            .map_err(|_| corrupt("checkpoint size"))?,
        options: LogOptions {
            dedup: row.get(6),
            index_leaves: row.get(7),
        },
    })
}

/// One attempt's outcome: `Err` to retry (or give up), `Ok` with the
/// operation's own answer.
type Attempt<T> = Result<Result<T, StoreError>, Failure>;

/// Runs a query-building step, classifying its failure for the retry loop.
fn step(e: tokio_postgres::Error) -> Failure {
    classify(e, false)
}

/// Ends a transaction that decided to change nothing, before answering:
/// its locks are released now, not whenever the dropped transaction's
/// ROLLBACK would be flushed.
async fn abort<T>(tx: Transaction<'_>, e: StoreError) -> Attempt<T> {
    tx.rollback().await.map_err(step)?;
    Ok(Err(e))
}

/// What an append whose COMMIT was sent had decided, to recognise it if the
/// answer is lost.
struct Sent {
    first: u64,
    fresh: Vec<Vec<u8>>,
    appended: Vec<Appended>,
}

impl PostgresLogStore {
    /// Connects, creates the schema if needed, runs pending migrations, and
    /// checks every log's root against its compact range (C5).
    pub async fn open(config: PostgresConfig) -> Result<Self, OpenError> {
        let schema = quote_schema(&config.schema)?;
        let pool = connect_pool(&config, "tlogd").await?;
        migrate(
            &pool,
            &config.schema,
            &schema,
            "tlog_migrations",
            MIGRATIONS,
            "tlogd",
        )
        .await?;
        let store = PostgresLogStore {
            inner: Arc::new(Inner {
                pool,
                sql: Sql::new(&schema),
                sequencers: Mutex::new(HashMap::new()),
                cache: TileCache::new(1024),
            }),
        };
        let db = store
            .pool
            .get()
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let rows = db
            .query(&store.sql.all_logs, &[])
            .await
            .map_err(OpenError::Migration)?;
        for row in &rows {
            decode_state(row).map_err(|e| {
                OpenError::Connect(format!(
                    "log {:?}: {e}",
                    row.try_get::<_, String>(0).unwrap_or_default()
                ))
            })?;
        }
        Ok(store)
    }
}

impl Inner {
    async fn run<T, Fut>(
        &self,
        what: &'static str,
        attempt: impl FnMut(bool) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        match RETRY.run(what, attempt).await {
            Ok(result) => result,
            Err(lss_store::StoreError::Corrupt(e)) => Err(StoreError::Corrupt(e)),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Failure> {
        self.pool.get().await.map_err(pool_failure)
    }

    async fn read_state(
        &self,
        db: &impl tokio_postgres::GenericClient,
        sql: &str,
        log: &LogId,
    ) -> Result<Result<LogState, StoreError>, Failure> {
        let id: &[u8] = log;
        let row = db.query_opt(sql, &[&id]).await.map_err(step)?;
        Ok(match row {
            Some(row) => decode_state(&row),
            None => Err(StoreError::UnknownLog),
        })
    }

    /// The tiles in `wanted`, fetched in one query.
    async fn fetch_tiles(
        &self,
        db: &impl tokio_postgres::GenericClient,
        log: &LogId,
        wanted: &BTreeSet<(u8, u64)>,
    ) -> Result<Result<HashMap<(u8, u64), Vec<Hash>>, StoreError>, Failure> {
        let id: &[u8] = log;
        let levels: Vec<i16> = wanted.iter().map(|(l, _)| i16::from(*l)).collect();
        let indices: Vec<i64> = wanted.iter().map(|(_, n)| big(*n)).collect();
        let rows = db
            .query(&self.sql.tiles, &[&id, &levels, &indices])
            .await
            .map_err(step)?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let level = u8::try_from(row.get::<_, i16>(0)).unwrap_or(u8::MAX);
            let index = u64::try_from(row.get::<_, i64>(1)).unwrap_or(u64::MAX);
            match decode_tile(level, index, row.get(2)) {
                Ok(hashes) => {
                    out.insert((level, index), hashes);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    /// Runs a computation over tree nodes with the tiles it needs fetched
    /// in one query.
    async fn over_nodes<T>(
        &self,
        db: &impl tokio_postgres::GenericClient,
        log: &LogId,
        compute: impl Fn(&FnNodes<'_>) -> Result<T, StoreError>,
    ) -> Attempt<T> {
        let wanted = tiles_needed(|f| compute(&FnNodes(f)));
        let tiles = match self.fetch_tiles(db, log, &wanted).await? {
            Ok(tiles) => tiles,
            Err(e) => return Ok(Err(e)),
        };
        let source = CachedTileNodes {
            log: *log,
            cache: &self.cache,
            read: |level: u8, n: u64| Ok(tiles.get(&(level, n)).cloned()),
        };
        let node = |level: u8, index: u64| source.node(level, index);
        Ok(compute(&FnNodes(&node)))
    }

    /// Commits the appends of `batch` in one transaction and answers each.
    async fn commit_group(&self, log: LogId, batch: Vec<Waiting>) {
        let all: Vec<Vec<u8>> = batch
            .iter()
            .flat_map(|w| w.entries.iter().cloned())
            .collect();
        let sent = Mutex::new(None);
        let (log, all_ref, sent) = (&log, &all, &sent);
        let result = self
            .run("append", move |doubt| async move {
                self.append_once(log, all_ref, sent, doubt, None).await
            })
            .await;
        match result {
            Ok(appended) => {
                let mut rest = appended.into_iter();
                for w in batch {
                    let mine: Vec<Appended> = rest.by_ref().take(w.entries.len()).collect();
                    let _ = w.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// One attempt at an append, or with `import_at` an import at exactly
    /// that size (no dedup).
    async fn append_once(
        &self,
        log: &LogId,
        batch: &[Vec<u8>],
        sent: &Mutex<Option<Sent>>,
        in_doubt: bool,
        import_at: Option<u64>,
    ) -> Attempt<Vec<Appended>> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(step)?;
        let state = match self.read_state(&*tx, &self.sql.lock, log).await? {
            Ok(state) => state,
            Err(e) => return abort(tx, e).await,
        };
        if in_doubt {
            if let Some(earlier) = self.landed(&tx, log, &state, sent).await? {
                tx.rollback().await.map_err(step)?;
                tracing::info!("an append's COMMIT in doubt had landed; reporting it");
                return Ok(Ok(earlier));
            }
        }
        let first = state.size;
        let plan = match self.stage(&tx, log, state, batch, import_at).await? {
            Ok(plan) => plan,
            Err(e) => return abort(tx, e).await,
        };
        if plan.fresh.is_empty() {
            tx.rollback().await.map_err(step)?;
            return Ok(Ok(plan.appended));
        }
        if let Ok(mut sent) = sent.lock() {
            *sent = Some(Sent {
                first,
                fresh: plan.fresh.iter().map(|(i, _)| batch[*i].clone()).collect(),
                appended: plan.appended.clone(),
            });
        }
        tx.commit().await.map_err(|e| classify(e, true))?;
        Ok(Ok(plan.appended))
    }

    /// Appends inside the caller's transaction (on this store's database,
    /// READ COMMITTED), so a service commits its own rows atomically with
    /// the entries (tlog.md §6.5): the log row is locked until the caller
    /// ends `tx`, and the entries are durable when the caller's COMMIT
    /// returns. A COMMIT whose answer is lost is the caller's to resolve
    /// (read back `[state.size, …)`). Nothing is written on `Err`, but the
    /// caller should still roll back.
    pub async fn append_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        log: LogId,
        entries: &[Vec<u8>],
    ) -> Result<Vec<Appended>, StoreError> {
        self.stage_in(tx, log, entries, None)
            .await
            .map(|plan| plan.appended)
    }

    /// Imports verified entries at exactly `start` inside the caller's
    /// transaction (followers that commit derived rows with the entries,
    /// as a validator does); `Conflict { have }` when `start` is not the
    /// stored size. Same terms as [`Inner::append_in`].
    pub async fn import_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        log: LogId,
        start: u64,
        entries: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        self.stage_in(tx, log, entries, Some(start))
            .await
            .map(|_| ())
    }

    async fn stage_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        log: LogId,
        entries: &[Vec<u8>],
        import_at: Option<u64>,
    ) -> Result<AppendPlan, StoreError> {
        if entries.iter().any(|e| e.len() > tlog_store::MAX_ENTRY) {
            return Err(StoreError::TooLarge("an entry over 65,535 bytes"));
        }
        let failed = |f: Failure| match f {
            Failure::Fail(lss_store::StoreError::Corrupt(e)) => StoreError::Corrupt(e),
            Failure::Fail(e) => StoreError::Unavailable(e.to_string()),
            Failure::Retry { error, .. } => StoreError::Unavailable(error),
        };
        let state = self
            .read_state(tx, &self.sql.lock, &log)
            .await
            .map_err(failed)??;
        self.stage(tx, &log, state, entries, import_at)
            .await
            .map_err(failed)?
    }

    /// Stages an append (or, with `import_at`, an import at exactly that
    /// size) in `tx`, whose log row was locked and read as `state`: writes
    /// the entries, leaf index, tiles and new tree state. Commits nothing;
    /// an `Ok(Err)` wrote nothing and the caller rolls back.
    async fn stage(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        log: &LogId,
        mut state: LogState,
        batch: &[Vec<u8>],
        import_at: Option<u64>,
    ) -> Attempt<AppendPlan> {
        let id: &[u8] = log;
        let known: HashMap<Hash, u64> = if state.options.dedup && import_at.is_none() {
            let leaves: Vec<Vec<u8>> = batch
                .iter()
                .map(|e| merkle::leaf_hash(e).to_vec())
                .collect();
            let rows = tx
                .query(&self.sql.leaves, &[&id, &leaves])
                .await
                .map_err(step)?;
            let mut known = HashMap::with_capacity(rows.len());
            for row in rows {
                let leaf = match hash(row.get(0), "leaf") {
                    Ok(h) => h,
                    Err(e) => return Ok(Err(e)),
                };
                known.insert(leaf, u64::try_from(row.get::<_, i64>(1)).unwrap_or(0));
            }
            known
        } else {
            HashMap::new()
        };
        let planned = match import_at {
            Some(start) => plan_import(&state, start, batch),
            None => plan_append(&state, batch, |leaf| Ok(known.get(leaf).copied())),
        };
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        if plan.fresh.is_empty() {
            return Ok(Ok(plan));
        }
        let wanted: BTreeSet<(u8, u64)> = edge_tiles(state.size)
            .into_iter()
            .enumerate()
            .filter_map(|(level, n)| n.map(|n| (level as u8, n)))
            .collect();
        let mut tiles = match self.fetch_tiles(tx, log, &wanted).await? {
            Ok(tiles) => tiles,
            Err(e) => return Ok(Err(e)),
        };
        let edge: Vec<Vec<Hash>> = edge_tiles(state.size)
            .into_iter()
            .enumerate()
            .map(|(level, n)| {
                n.and_then(|n| tiles.remove(&(level as u8, n)))
                    .unwrap_or_default()
            })
            .collect();
        let leaves: Vec<Hash> = plan.fresh.iter().map(|(_, h)| *h).collect();
        let (range, updates) = match tile::integrate(&state.range, &edge, &leaves) {
            Ok(done) => done,
            Err(e) => return Ok(Err(StoreError::Corrupt(e.to_string()))),
        };
        let first = state.size;
        let indices: Vec<i64> = (0..plan.fresh.len() as u64)
            .map(|i| big(first + i))
            .collect();
        let entries: Vec<&[u8]> = plan
            .fresh
            .iter()
            .map(|(i, _)| batch[*i].as_slice())
            .collect();
        let leaf_bytes: Vec<&[u8]> = plan.fresh.iter().map(|(_, h)| h.as_slice()).collect();
        let levels: Vec<i16> = updates.iter().map(|u| i16::from(u.level)).collect();
        let tile_indices: Vec<i64> = updates.iter().map(|u| big(u.index)).collect();
        let tile_bytes: Vec<Vec<u8>> = updates.iter().map(|u| u.hashes.concat()).collect();
        state.size = range.size();
        state.root = range.root();
        let range_bytes = range.hashes().concat();
        let (size, root): (i64, &[u8]) = (big(state.size), &state.root);
        let keep_leaves = state.options.dedup || state.options.index_leaves;
        // Pipelined: PostgreSQL runs them in order on the one connection.
        let insert_leaves = async {
            if keep_leaves {
                tx.execute(&self.sql.insert_leaves, &[&id, &leaf_bytes, &indices])
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            }
        };
        let entry_params: [&(dyn ToSql + Sync); 3] = [&id, &indices, &entries];
        let tile_params: [&(dyn ToSql + Sync); 4] = [&id, &levels, &tile_indices, &tile_bytes];
        let tree_params: [&(dyn ToSql + Sync); 4] = [&id, &size, &root, &range_bytes];
        tokio::try_join!(
            tx.execute(&self.sql.insert_entries, &entry_params),
            insert_leaves,
            tx.execute(&self.sql.upsert_tiles, &tile_params),
            tx.execute(&self.sql.update_tree, &tree_params),
        )
        .map_err(step)?;
        Ok(Ok(plan))
    }

    /// After a COMMIT in doubt: the earlier outcome if the indices it gave
    /// hold exactly its entries.
    async fn landed(
        &self,
        tx: &Transaction<'_>,
        log: &LogId,
        state: &LogState,
        sent: &Mutex<Option<Sent>>,
    ) -> Result<Option<Vec<Appended>>, Failure> {
        let Some((first, fresh, appended)) = sent.lock().ok().and_then(|s| {
            s.as_ref()
                .map(|s| (s.first, s.fresh.clone(), s.appended.clone()))
        }) else {
            return Ok(None);
        };
        let end = first + fresh.len() as u64;
        if state.size < end {
            return Ok(None);
        }
        let id: &[u8] = log;
        let rows = tx
            .query(&self.sql.entries, &[&id, &big(first), &big(end)])
            .await
            .map_err(step)?;
        let stored: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
        Ok((stored == fresh).then_some(appended))
    }

    async fn checkpoint_once(
        &self,
        log: &LogId,
        size: u64,
        root: &Hash,
        note: &[u8],
    ) -> Attempt<PutCheckpoint> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(step)?;
        let id: &[u8] = log;
        let state = match self.read_state(&*tx, &self.sql.lock, log).await? {
            Ok(state) => state,
            Err(e) => return abort(tx, e).await,
        };
        let parsed = match check_checkpoint(&state, size, root, note) {
            Ok(parsed) => parsed,
            Err(e) => return abort(tx, e).await,
        };
        let at = self
            .over_nodes(&*tx, log, |nodes| merkle::subtree_root(nodes, 0, size))
            .await?;
        match at {
            Ok(at) if at == *root => {}
            Ok(_) => return abort(tx, StoreError::CheckpointConflict).await,
            Err(e) => return abort(tx, e).await,
        }
        if size < state.checkpoint_size {
            tx.rollback().await.map_err(step)?;
            return Ok(Ok(PutCheckpoint::Older {
                latest: state.checkpoint_size,
            }));
        }
        let existing: Option<Vec<u8>> = tx
            .query_opt(&self.sql.checkpoint, &[&id, &big(size)])
            .await
            .map_err(step)?
            .map(|row| row.get(0));
        let (bytes, outcome) = match merge_checkpoint(existing.as_deref(), &parsed, note) {
            Ok(merged) => merged,
            Err(e) => return abort(tx, e).await,
        };
        let (keep, at) = (big(CHECKPOINT_HISTORY + 1), big(size));
        let note_params: [&(dyn ToSql + Sync); 3] = [&id, &at, &bytes];
        let size_params: [&(dyn ToSql + Sync); 2] = [&id, &at];
        let prune_params: [&(dyn ToSql + Sync); 2] = [&id, &keep];
        tokio::try_join!(
            tx.execute(&self.sql.upsert_checkpoint, &note_params),
            tx.execute(&self.sql.set_checkpoint_size, &size_params),
            tx.execute(&self.sql.prune_checkpoints, &prune_params),
        )
        .map_err(step)?;
        tx.commit().await.map_err(|e| classify(e, true))?;
        Ok(Ok(outcome))
    }

    async fn witness_once(
        &self,
        log: &LogId,
        expected: u64,
        size: u64,
        root: &Hash,
        note: &[u8],
        in_doubt: bool,
    ) -> Attempt<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(step)?;
        let id: &[u8] = log;
        let current = tx
            .query_opt(&self.sql.witnessed_lock, &[&id])
            .await
            .map_err(step)?;
        let existed = current.is_some();
        let (current, current_root) = match current {
            Some(row) => (
                u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                row.get::<_, Vec<u8>>(1),
            ),
            None => (0, Vec::new()),
        };
        if in_doubt && current == size && current_root == root.as_slice() && size != expected {
            // Our own write, whose COMMIT answer was lost.
            tx.rollback().await.map_err(step)?;
            return Ok(Ok(()));
        }
        if current != expected {
            tx.rollback().await.map_err(step)?;
            return Ok(Err(StoreError::Mismatch { size: current }));
        }
        let root: &[u8] = root;
        let (new, old) = (big(size), big(expected));
        let written = if existed {
            tx.execute(&self.sql.update_witnessed, &[&id, &new, &root, &note, &old])
                .await
                .map_err(step)?
        } else {
            // Two first writers race on the INSERT: the loser's waits for
            // the winner's commit, writes nothing, and then reads its size.
            tx.execute(&self.sql.insert_witnessed, &[&id, &new, &root, &note])
                .await
                .map_err(step)?
        };
        if written == 0 {
            let current = tx
                .query_opt(&self.sql.witnessed_lock, &[&id])
                .await
                .map_err(step)?
                .map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
            tx.rollback().await.map_err(step)?;
            return Ok(Err(StoreError::Mismatch { size: current }));
        }
        tx.commit().await.map_err(|e| classify(e, true))?;
        Ok(Ok(()))
    }
}

impl LogStore for PostgresLogStore {
    async fn create_log(&self, origin: &str, options: LogOptions) -> Result<LogId, StoreError> {
        check_origin(origin)?;
        let log = tlog_core::log_id(origin);
        let empty: &[u8] = &merkle::EMPTY_ROOT;
        let status = i16::from(Status::Active.byte());
        self.run("create_log", move |_| async move {
            let db = self.client().await?;
            let id: &[u8] = &log;
            db.execute(
                &self.sql.create,
                &[
                    &id,
                    &origin,
                    &status,
                    &empty,
                    &options.dedup,
                    &options.index_leaves,
                ],
            )
            .await
            .map_err(step)?;
            Ok(Ok(log))
        })
        .await
    }

    async fn append(&self, log: LogId, entries: Vec<Vec<u8>>) -> Result<Vec<Appended>, StoreError> {
        if entries.iter().any(|e| e.len() > tlog_store::MAX_ENTRY) {
            return Err(StoreError::TooLarge("an entry over 65,535 bytes"));
        }
        let sequencer = self
            .sequencers
            .lock()
            .map_err(|_| StoreError::Unavailable("sequencer lock poisoned".into()))?
            .entry(log)
            .or_default()
            .clone();
        let (reply, mut answer) = oneshot::channel();
        if let Ok(mut queue) = sequencer.queue.lock() {
            queue.push(Waiting { entries, reply });
        }
        loop {
            let _leading = sequencer.leader.lock().await;
            // A leader before us may have committed ours already.
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Unavailable(
                        "the group commit failed; the append's outcome is unknown".into(),
                    ))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = match sequencer.queue.lock() {
                Ok(mut queue) => {
                    let mut taken = 0;
                    let n = queue
                        .iter()
                        .take_while(|w| {
                            taken += w.entries.len();
                            taken <= BATCH_MAX_ENTRIES
                        })
                        .count()
                        .max(1);
                    let n = n.min(queue.len());
                    queue.drain(..n).collect::<Vec<_>>()
                }
                Err(_) => Vec::new(),
            };
            if batch.is_empty() {
                continue;
            }
            // In a task of its own: a caller that goes away mid-commit
            // cannot cancel the others' appends.
            let inner = self.inner.clone();
            if tokio::spawn(async move { inner.commit_group(log, batch).await })
                .await
                .is_err()
            {
                tracing::error!("a tlog group commit task panicked");
            }
        }
    }

    async fn import(
        &self,
        log: LogId,
        start: u64,
        entries: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if entries.iter().any(|e| e.len() > tlog_store::MAX_ENTRY) {
            return Err(StoreError::TooLarge("an entry over 65,535 bytes"));
        }
        let sent = Mutex::new(None);
        let (log, entries, sent) = (&log, &entries, &sent);
        self.run("import", move |doubt| async move {
            self.append_once(log, entries, sent, doubt, Some(start))
                .await
        })
        .await
        .map(|_| ())
    }

    async fn state(&self, log: LogId) -> Result<LogState, StoreError> {
        self.run("state", move |_| async move {
            let db = self.client().await?;
            self.read_state(&**db, &self.sql.state, &log).await
        })
        .await
    }

    async fn tile(
        &self,
        log: LogId,
        level: u8,
        index: u64,
    ) -> Result<Option<Vec<Hash>>, StoreError> {
        self.run("tile", move |_| async move {
            let db = self.client().await?;
            let id: &[u8] = &log;
            let row = db
                .query_opt(&self.sql.tile, &[&id, &i16::from(level), &big(index)])
                .await
                .map_err(step)?;
            Ok(row
                .map(|row| decode_tile(level, index, row.get(0)))
                .transpose())
        })
        .await
    }

    async fn entries(&self, log: LogId, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.run("entries", move |_| async move {
            let db = self.client().await?;
            let state = match self.read_state(&**db, &self.sql.state, &log).await? {
                Ok(state) => state,
                Err(e) => return Ok(Err(e)),
            };
            let end = end
                .min(state.size)
                .min(start.saturating_add(MAX_ENTRIES_READ));
            if start >= end {
                return Ok(Ok(Vec::new()));
            }
            let id: &[u8] = &log;
            let rows = db
                .query(&self.sql.entries, &[&id, &big(start), &big(end)])
                .await
                .map_err(step)?;
            if rows.len() as u64 != end - start {
                return Ok(Err(corrupt("entries: an index is missing")));
            }
            Ok(Ok(rows.iter().map(|r| r.get(1)).collect()))
        })
        .await
    }

    async fn leaf_index(&self, log: LogId, leaf: Hash) -> Result<Option<u64>, StoreError> {
        self.run("leaf_index", move |_| async move {
            let db = self.client().await?;
            let (id, leaf): (&[u8], &[u8]) = (&log, &leaf);
            let row = db
                .query_opt(&self.sql.leaf_index, &[&id, &leaf])
                .await
                .map_err(step)?;
            Ok(Ok(
                row.map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
            ))
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
        let note = &note;
        self.run("put_checkpoint", move |_| async move {
            self.checkpoint_once(&log, size, &root, note).await
        })
        .await
    }

    async fn checkpoint(
        &self,
        log: LogId,
        size: Option<u64>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("checkpoint", move |_| async move {
            let db = self.client().await?;
            let size = match size {
                Some(size) => size,
                None => match self.read_state(&**db, &self.sql.state, &log).await? {
                    Ok(state) => state.checkpoint_size,
                    Err(e) => return Ok(Err(e)),
                },
            };
            let id: &[u8] = &log;
            let row = db
                .query_opt(&self.sql.checkpoint, &[&id, &big(size)])
                .await
                .map_err(step)?;
            Ok(Ok(row.map(|r| r.get(0))))
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
        let note = &note;
        self.run("witness_cas", move |doubt| async move {
            self.witness_once(&log, expected, size, &root, note, doubt)
                .await
        })
        .await
    }

    async fn witnessed(&self, log: LogId) -> Result<Option<(u64, Hash, Vec<u8>)>, StoreError> {
        self.run("witnessed", move |_| async move {
            let db = self.client().await?;
            let id: &[u8] = &log;
            let Some(row) = db
                .query_opt(&self.sql.witnessed, &[&id])
                .await
                .map_err(step)?
            else {
                return Ok(Ok(None));
            };
            let size = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            Ok(hash(row.get(1), "witness root").map(|root| Some((size, root, row.get(2)))))
        })
        .await
    }

    async fn put_evidence(
        &self,
        log: LogId,
        observed: u64,
        evidence: Vec<u8>,
    ) -> Result<(), StoreError> {
        let digest = tlog_core::Evidence::digest(&evidence);
        let evidence = &evidence;
        self.run("put_evidence", move |_| async move {
            let db = self.client().await?;
            let (id, digest): (&[u8], &[u8]) = (&log, &digest);
            db.execute(
                &self.sql.insert_evidence,
                &[&id, &digest, &big(observed), evidence],
            )
            .await
            .map_err(step)?;
            Ok(Ok(()))
        })
        .await
    }

    async fn evidence(&self, log: LogId) -> Result<Vec<Vec<u8>>, StoreError> {
        self.run("evidence", move |_| async move {
            let db = self.client().await?;
            let id: &[u8] = &log;
            let rows = db.query(&self.sql.evidence, &[&id]).await.map_err(step)?;
            Ok(Ok(rows.iter().map(|r| r.get(0)).collect()))
        })
        .await
    }

    async fn inclusion_proof(
        &self,
        log: LogId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        self.run("inclusion_proof", move |_| async move {
            let db = self.client().await?;
            let state = match self.read_state(&**db, &self.sql.state, &log).await? {
                Ok(state) => state,
                Err(e) => return Ok(Err(e)),
            };
            if size > state.size {
                return Ok(Err(StoreError::OutOfRange(format!(
                    "size {size} > {}",
                    state.size
                ))));
            }
            self.over_nodes(&**db, &log, |nodes| {
                merkle::inclusion_proof(nodes, index, size)?
                    .map_err(|e| StoreError::OutOfRange(e.to_string()))
            })
            .await
        })
        .await
    }

    async fn consistency_proof(
        &self,
        log: LogId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        self.run("consistency_proof", move |_| async move {
            let db = self.client().await?;
            let state = match self.read_state(&**db, &self.sql.state, &log).await? {
                Ok(state) => state,
                Err(e) => return Ok(Err(e)),
            };
            if new > state.size {
                return Ok(Err(StoreError::OutOfRange(format!(
                    "size {new} > {}",
                    state.size
                ))));
            }
            self.over_nodes(&**db, &log, |nodes| {
                merkle::consistency_proof(nodes, old, new)?
                    .map_err(|e| StoreError::OutOfRange(e.to_string()))
            })
            .await
        })
        .await
    }

    async fn set_status(&self, log: LogId, status: Status) -> Result<(), StoreError> {
        let code = i16::from(status.byte());
        self.run("set_status", move |_| async move {
            let db = self.client().await?;
            let id: &[u8] = &log;
            let n = db
                .execute(&self.sql.set_status, &[&id, &code])
                .await
                .map_err(step)?;
            Ok(if n == 0 {
                Err(StoreError::UnknownLog)
            } else {
                Ok(())
            })
        })
        .await
    }
}
