//! The PostgreSQL backend of the [`Store`] contract.
//!
//! # Schema (in its own PostgreSQL schema, `lightkeeper` by default)
//! - `kv (client bytea, key bytea, version bigint, value bytea)`, primary key
//!   `(client, key)`. Keys are `bytea`, not `text`, so PostgreSQL compares them
//!   byte by byte: the protocol's order, whatever the database's collation. A
//!   prefix read is a range scan `key >= prefix AND key < successor(prefix)`
//!   on the primary key, never `LIKE`, so `%` and `_` are ordinary bytes.
//! - `usage (client bytea, bytes bigint)`: the namespace's quota use, updated in
//!   the same transaction as the data.
//! - `migrations (version int, applied_at timestamptz)`: which [`MIGRATIONS`]
//!   ran. They run at open, in one transaction under an advisory lock, so two
//!   servers starting together cannot both migrate.
//!
//! # A put
//! One READ COMMITTED transaction in four round trips: `BEGIN`; the
//! namespace's advisory lock (so puts of one namespace run one at a time),
//! then the usage and the current versions of the put's keys, pipelined (each
//! statement's snapshot is taken after the lock is held); decide with
//! [`lss_core::accepts`] and [`lss_core::namespace_after`]; the upsert of every
//! key and of the usage row, pipelined; `COMMIT` (durable with the default
//! `synchronous_commit = on`). Different namespaces never wait for each other.
//! An advisory lock writes nothing to the WAL, unlike a row lock.
//!
//! # Faults
//! Serialization failures, deadlocks, unique violations and broken
//! connections are retried inside the store with backoff, never shown to
//! clients. A connection lost while COMMIT was in flight leaves the outcome
//! unknown; the retry then finds either the old state (and applies the put) or
//! exactly the put's versions and values, which it reports as committed: the
//! put is durable either way. When the database stays unreachable the store
//! answers [`StoreError::Unavailable`] quickly (bounded pool timeouts) and
//! serves again as soon as it is back, with no restart.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use lss_core::{accepts, namespace_after, ClientId, KeyValue, PutOutcome, ValidPut};
use lss_store::retry::{Failure, Retry};
use lss_store::{already_applied, prefix_end, Bulk, Entry, LoadError, Store, StoreError, Totals};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// The schema migrations, in order. Never edit one that has shipped: add the
/// next. `{schema}` is replaced by the quoted schema name.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE {schema}.kv (
        client bytea NOT NULL CHECK (length(client) = 33),
        key bytea NOT NULL,
        version bigint NOT NULL CHECK (version >= 0),
        value bytea NOT NULL,
        PRIMARY KEY (client, key)
    );
    CREATE TABLE {schema}.usage (
        client bytea PRIMARY KEY,
        bytes bigint NOT NULL CHECK (bytes >= 0)
    );",
)];

/// How failed operations are retried.
pub const RETRY: Retry = Retry {
    engine: "PostgreSQL",
    attempts: 6,
    base: Duration::from_millis(5),
};

/// TLS to the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PostgresTls {
    /// As the URL's `sslmode` says: `disable` and `prefer` (the default)
    /// connect without TLS; `require` uses TLS verified against the public web
    /// PKI roots.
    #[default]
    FromUrl,
    /// TLS required, the server verified against this PEM CA file.
    Ca(PathBuf),
}

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/dbname?sslmode=...` or the
    /// key=value form.
    pub url: String,
    /// PostgreSQL schema holding Lightkeeper's tables (created if missing).
    pub schema: String,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// How long a request may wait for a connection, or for one to be made,
    /// before it fails with `UNAVAILABLE`.
    pub connect_timeout: Duration,
    /// TLS settings.
    pub tls: PostgresTls,
    /// Most bytes (keys plus values) one namespace may hold.
    pub max_namespace_bytes: u64,
}

impl PostgresConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: "lightkeeper".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            tls: PostgresTls::FromUrl,
            max_namespace_bytes: lss_core::Limits::default().max_namespace_bytes,
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL does not parse.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(tokio_postgres::Error),
    /// Schema names are restricted to `[a-z_][a-z0-9_]*` (at most 63 bytes).
    #[error("invalid schema name {0:?}: use lowercase letters, digits and _")]
    Schema(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("PostgreSQL CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database is unreachable or refused us.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// The database's schema is newer than this build knows.
    #[error("PostgreSQL schema {schema} is at migration {found}; this build knows up to {known}: upgrade {program}")]
    TooNew {
        /// The schema.
        schema: String,
        /// Its newest migration.
        found: i32,
        /// Ours.
        known: i32,
        /// The program to upgrade.
        program: String,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration failed: {0}")]
    Migration(tokio_postgres::Error),
}

/// SQL text with the schema filled in.
struct Sql {
    lock_namespace: String,
    usage: String,
    totals: String,
    current: String,
    current_values: String,
    upsert: String,
    set_usage: String,
    get_from: String,
    get_range: String,
    count_from: String,
    count_range: String,
    scan_first: String,
    scan_after: String,
    load_existing: String,
    load_insert: String,
    load_usage: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        Sql {
            lock_namespace: "SELECT pg_advisory_xact_lock($1)".into(),
            usage: format!("SELECT bytes FROM {schema}.usage WHERE client = $1"),
            totals: format!(
                "SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM {schema}.usage WHERE bytes > 0"
            ),
            current: format!(
                "SELECT key, version, length(value)::int8 FROM {schema}.kv WHERE client = $1 AND key = ANY($2)"
            ),
            current_values: format!(
                "SELECT key, version, value FROM {schema}.kv WHERE client = $1 AND key = ANY($2)"
            ),
            upsert: format!(
                "INSERT INTO {schema}.kv (client, key, version, value) \
                 SELECT $1, k, v, val FROM unnest($2::bytea[], $3::int8[], $4::bytea[]) AS t(k, v, val) \
                 ON CONFLICT (client, key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value"
            ),
            set_usage: format!(
                "INSERT INTO {schema}.usage (client, bytes) VALUES ($1, $2) \
                 ON CONFLICT (client) DO UPDATE SET bytes = EXCLUDED.bytes"
            ),
            get_from: format!(
                "SELECT key, version, value FROM {schema}.kv WHERE client = $1 AND key >= $2 ORDER BY key"
            ),
            get_range: format!(
                "SELECT key, version, value FROM {schema}.kv WHERE client = $1 AND key >= $2 AND key < $3 ORDER BY key"
            ),
            count_from: format!(
                "SELECT count(*) FROM {schema}.kv WHERE client = $1 AND key >= $2"
            ),
            count_range: format!(
                "SELECT count(*) FROM {schema}.kv WHERE client = $1 AND key >= $2 AND key < $3"
            ),
            scan_first: format!(
                "SELECT client, key, version, value FROM {schema}.kv ORDER BY client, key LIMIT $1"
            ),
            scan_after: format!(
                "SELECT client, key, version, value FROM {schema}.kv WHERE (client, key) > ($1, $2) \
                 ORDER BY client, key LIMIT $3"
            ),
            load_existing: format!(
                "SELECT kv.client, kv.key, kv.version, kv.value FROM {schema}.kv \
                 JOIN unnest($1::bytea[], $2::bytea[]) AS t(c, k) ON kv.client = t.c AND kv.key = t.k"
            ),
            load_insert: format!(
                "INSERT INTO {schema}.kv (client, key, version, value) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::bytea[])"
            ),
            load_usage: format!(
                "INSERT INTO {schema}.usage (client, bytes) SELECT * FROM unnest($1::bytea[], $2::int8[]) \
                 ON CONFLICT (client) DO UPDATE SET bytes = {schema}.usage.bytes + EXCLUDED.bytes"
            ),
        }
    }
}

/// The advisory lock key of a namespace: 8 bytes of the public key's x
/// coordinate (uniformly distributed). Two namespaces sharing a key only
/// wait for each other; correctness never depends on it being unique.
fn namespace_lock(client: &ClientId) -> i64 {
    let bytes = client.as_bytes();
    i64::from_be_bytes([
        bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
    ])
}

/// The PostgreSQL store: a connection pool and prepared statements.
pub struct PostgresStore {
    pool: Pool,
    sql: Arc<Sql>,
    max_namespace_bytes: u64,
    /// Paged reads under way (each holds a pooled connection).
    paged: Arc<tokio::sync::Semaphore>,
}

/// How many paged reads may hold a pooled connection at once: a quarter of
/// the pool, so stalled readers cannot starve writers. Reads beyond it are
/// read whole (the server reserves memory for them first).
pub fn paged_readers(pool_size: usize) -> usize {
    (pool_size / 4).max(1)
}

/// (client, key) as stored.
type StoredKey = (Vec<u8>, Vec<u8>);

/// Whether a failed statement is worth retrying (and whether it hit a
/// COMMIT, which may have been applied).
pub fn classify(e: tokio_postgres::Error, at_commit: bool) -> Failure {
    let retryable_state = e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
    });
    // No SQLSTATE: the connection failed (closed, reset, timed out).
    let connection = e.code().is_none();
    if retryable_state || connection {
        Failure::Retry {
            error: e.to_string(),
            in_doubt: at_commit && connection,
        }
    } else {
        Failure::Fail(StoreError::Unavailable(format!("PostgreSQL: {e}")))
    }
}

/// A pool failure as a retry decision: a timed-out pool is final.
pub fn pool_failure(e: deadpool_postgres::PoolError) -> Failure {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e, false),
        // Timed out waiting for or creating a connection: the database is
        // unreachable or saturated. Retrying would only hold the client longer.
        other => Failure::Fail(StoreError::Unavailable(format!("PostgreSQL pool: {other}"))),
    }
}

impl PostgresStore {
    /// Connects, creates the schema if needed and runs pending migrations.
    pub async fn open(config: PostgresConfig) -> Result<Self, OpenError> {
        let schema = quote_schema(&config.schema)?;
        let pool = connect_pool(&config, "lssd").await?;
        migrate(
            &pool,
            &config.schema,
            &schema,
            "migrations",
            MIGRATIONS,
            "lssd",
        )
        .await?;
        Ok(PostgresStore {
            pool,
            sql: Arc::new(Sql::new(&schema)),
            max_namespace_bytes: config.max_namespace_bytes,
            paged: Arc::new(tokio::sync::Semaphore::new(paged_readers(config.pool_size))),
        })
    }

    async fn put_once(
        &self,
        put: &ValidPut,
        in_doubt: bool,
    ) -> Result<Result<PutOutcome, StoreError>, Failure> {
        let mut client = self.pool.get().await.map_err(pool_failure)?;
        let retry = |e| classify(e, false);
        let tx = client.transaction().await.map_err(retry)?;
        let namespace: &[u8] = put.client().as_bytes();
        let keys: Vec<&[u8]> = put.kvs().iter().map(|kv| kv.key.as_bytes()).collect();
        let (lock, usage, current) = tokio::try_join!(
            tx.prepare_cached(&self.sql.lock_namespace),
            tx.prepare_cached(&self.sql.usage),
            tx.prepare_cached(&self.sql.current),
        )
        .map_err(retry)?;
        // Pipelined in one round trip. PostgreSQL runs them in order, and in
        // READ COMMITTED each statement reads a snapshot taken when it starts:
        // after the namespace lock is held, so it sees every earlier put.
        let lock_key = namespace_lock(put.client());
        let lock_params: [&(dyn ToSql + Sync); 1] = [&lock_key];
        let usage_params: [&(dyn ToSql + Sync); 1] = [&namespace];
        let current_params: [&(dyn ToSql + Sync); 2] = [&namespace, &keys];
        let (_, used, rows) = tokio::try_join!(
            tx.execute(&lock, &lock_params),
            tx.query_opt(&usage, &usage_params),
            tx.query(&current, &current_params),
        )
        .map_err(retry)?;
        let used = used.map_or(0, |row| row.get::<_, i64>(0));
        let mut existing: HashMap<Vec<u8>, (i64, i64)> = HashMap::with_capacity(rows.len());
        for row in rows {
            existing.insert(row.get(0), (row.get(1), row.get(2)));
        }
        let mut conflicting = Vec::new();
        let mut freed: u64 = 0;
        for kv in put.kvs() {
            let found = existing.get(kv.key.as_bytes());
            if let Some((_, len)) = found {
                freed += kv.key.len() as u64 + u64::try_from(*len).unwrap_or(0);
            }
            if !accepts(kv.version, found.map(|(v, _)| *v)) {
                conflicting.push(kv);
            }
        }
        if !conflicting.is_empty() {
            let conflicts = self.conflicts(&tx, namespace, &conflicting).await?;
            tx.rollback().await.map_err(retry)?;
            if in_doubt && already_applied(put, &conflicts) {
                tracing::info!("a commit in doubt had been applied; reporting it committed");
                return Ok(Ok(PutOutcome::Committed));
            }
            return Ok(Ok(PutOutcome::Conflict(conflicts)));
        }
        let used = u64::try_from(used).unwrap_or(0);
        let added: u64 = put.kvs().iter().map(KeyValue::stored_len).sum();
        let after = match namespace_after(used, freed, added, self.max_namespace_bytes) {
            Ok(after) => after,
            Err(limit) => {
                tx.rollback().await.map_err(retry)?;
                return Ok(Err(limit.into()));
            }
        };
        let versions: Vec<i64> = put.kvs().iter().map(|kv| kv.version).collect();
        let values: Vec<&[u8]> = put.kvs().iter().map(|kv| kv.value.as_slice()).collect();
        let after = i64::try_from(after)
            .map_err(|_| Failure::Fail(StoreError::Corrupt("namespace usage overflows".into())))?;
        let (upsert, set_usage) = tokio::try_join!(
            tx.prepare_cached(&self.sql.upsert),
            tx.prepare_cached(&self.sql.set_usage),
        )
        .map_err(retry)?;
        // One round trip for both writes.
        let upsert_params: [&(dyn ToSql + Sync); 4] = [&namespace, &keys, &versions, &values];
        let usage_params: [&(dyn ToSql + Sync); 2] = [&namespace, &after];
        tokio::try_join!(
            tx.execute(&upsert, &upsert_params),
            tx.execute(&set_usage, &usage_params),
        )
        .map_err(retry)?;
        let started = std::time::Instant::now();
        tx.commit().await.map_err(|e| classify(e, true))?;
        lss_store::metrics::committed("postgres", 1, started.elapsed());
        Ok(Ok(PutOutcome::Committed))
    }

    /// The current state of the conflicting keys, in request order.
    async fn conflicts(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        namespace: &[u8],
        conflicting: &[&KeyValue],
    ) -> Result<Vec<KeyValue>, Failure> {
        let retry = |e| classify(e, false);
        let keys: Vec<&[u8]> = conflicting.iter().map(|kv| kv.key.as_bytes()).collect();
        let statement = tx
            .prepare_cached(&self.sql.current_values)
            .await
            .map_err(retry)?;
        let rows = tx
            .query(&statement, &[&namespace, &keys])
            .await
            .map_err(retry)?;
        let mut current: HashMap<Vec<u8>, (i64, Vec<u8>)> = HashMap::with_capacity(rows.len());
        for row in rows {
            current.insert(row.get(0), (row.get(1), row.get(2)));
        }
        Ok(conflicting
            .iter()
            .map(|kv| KeyValue::conflict(kv.key.clone(), current.remove(kv.key.as_bytes())))
            .collect())
    }

    async fn totals_once(&self) -> Result<Result<Totals, StoreError>, Failure> {
        let db = self.pool.get().await.map_err(pool_failure)?;
        let retry = |e| classify(e, false);
        let statement = db.prepare_cached(&self.sql.totals).await.map_err(retry)?;
        let row = db.query_one(&statement, &[]).await.map_err(retry)?;
        let namespaces: i64 = row.try_get(0).map_err(retry)?;
        let bytes: i64 = row.try_get(1).map_err(retry)?;
        Ok(match (u64::try_from(namespaces), u64::try_from(bytes)) {
            (Ok(namespaces), Ok(bytes)) => Ok(Totals { namespaces, bytes }),
            _ => Err(StoreError::Corrupt(format!(
                "usage totals {namespaces} namespaces, {bytes} bytes are negative"
            ))),
        })
    }

    async fn usage_once(&self, client: &ClientId) -> Result<Result<u64, StoreError>, Failure> {
        let db = self.pool.get().await.map_err(pool_failure)?;
        let retry = |e| classify(e, false);
        let statement = db.prepare_cached(&self.sql.usage).await.map_err(retry)?;
        let namespace: &[u8] = client.as_bytes();
        let row = db
            .query_opt(&statement, &[&namespace])
            .await
            .map_err(retry)?;
        Ok(match row {
            None => Ok(0),
            Some(row) => {
                let bytes: i64 = row.try_get(0).map_err(retry)?;
                u64::try_from(bytes).map_err(|_| {
                    StoreError::Corrupt(format!("namespace usage {bytes} is negative"))
                })
            }
        })
    }

    async fn get_once(
        &self,
        client: &ClientId,
        prefix: &str,
    ) -> Result<Result<Vec<KeyValue>, StoreError>, Failure> {
        let db = self.pool.get().await.map_err(pool_failure)?;
        let retry = |e| classify(e, false);
        let namespace: &[u8] = client.as_bytes();
        let start = prefix.as_bytes();
        let rows = match prefix_end(start) {
            Some(end) => {
                let statement = db
                    .prepare_cached(&self.sql.get_range)
                    .await
                    .map_err(retry)?;
                db.query(&statement, &[&namespace, &start, &end])
                    .await
                    .map_err(retry)?
            }
            None => {
                let statement = db.prepare_cached(&self.sql.get_from).await.map_err(retry)?;
                db.query(&statement, &[&namespace, &start])
                    .await
                    .map_err(retry)?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key: Vec<u8> = row.get(0);
            let Ok(key) = String::from_utf8(key) else {
                return Ok(Err(StoreError::Corrupt("a stored key is not UTF-8".into())));
            };
            out.push(KeyValue {
                key,
                version: row.get(1),
                value: row.get(2),
            });
        }
        Ok(Ok(out))
    }
}

impl PostgresStore {
    async fn scan_once(
        &self,
        after: &Option<(ClientId, String)>,
        limit: i64,
    ) -> Result<Result<Vec<Entry>, StoreError>, Failure> {
        let db = self.pool.get().await.map_err(pool_failure)?;
        let retry = |e| classify(e, false);
        let rows = match after {
            Some((client, key)) => {
                let statement = db
                    .prepare_cached(&self.sql.scan_after)
                    .await
                    .map_err(retry)?;
                let (client, key): (&[u8], &[u8]) = (client.as_bytes(), key.as_bytes());
                db.query(&statement, &[&client, &key, &limit])
                    .await
                    .map_err(retry)?
            }
            None => {
                let statement = db
                    .prepare_cached(&self.sql.scan_first)
                    .await
                    .map_err(retry)?;
                db.query(&statement, &[&limit]).await.map_err(retry)?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let client: Vec<u8> = row.get(0);
            let Ok(client) = ClientId::parse(&client) else {
                return Ok(Err(StoreError::Corrupt(
                    "a stored namespace is not a public key".into(),
                )));
            };
            let Ok(key) = String::from_utf8(row.get(1)) else {
                return Ok(Err(StoreError::Corrupt("a stored key is not UTF-8".into())));
            };
            out.push(Entry {
                client,
                kv: KeyValue {
                    key,
                    version: row.get(2),
                    value: row.get(3),
                },
            });
        }
        Ok(Ok(out))
    }

    async fn load_once(&self, entries: &[Entry]) -> Result<Result<u64, LoadError>, Failure> {
        let mut db = self.pool.get().await.map_err(pool_failure)?;
        let retry = |e| classify(e, false);
        let tx = db.transaction().await.map_err(retry)?;
        // The namespaces' locks, in one order, as puts take them.
        let mut locks: Vec<i64> = entries.iter().map(|e| namespace_lock(&e.client)).collect();
        locks.sort_unstable();
        locks.dedup();
        let lock = tx
            .prepare_cached(&self.sql.lock_namespace)
            .await
            .map_err(retry)?;
        for key in &locks {
            tx.execute(&lock, &[key]).await.map_err(retry)?;
        }
        let clients: Vec<&[u8]> = entries
            .iter()
            .map(|e| e.client.as_bytes().as_slice())
            .collect();
        let keys: Vec<&[u8]> = entries.iter().map(|e| e.kv.key.as_bytes()).collect();
        let existing = tx
            .prepare_cached(&self.sql.load_existing)
            .await
            .map_err(retry)?;
        let rows = tx
            .query(&existing, &[&clients, &keys])
            .await
            .map_err(retry)?;
        let mut stored: HashMap<StoredKey, (i64, Vec<u8>)> = HashMap::new();
        for row in rows {
            stored.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
        }
        let mut new = Vec::new();
        for entry in entries {
            let id = (
                entry.client.as_bytes().to_vec(),
                entry.kv.key.as_bytes().to_vec(),
            );
            match stored.get(&id) {
                None => new.push(entry),
                Some((v, value)) if *v == entry.kv.version && *value == entry.kv.value => {}
                Some((v, _)) => {
                    tx.rollback().await.map_err(retry)?;
                    return Ok(Err(LoadError::Mismatch {
                        client: entry.client.short(),
                        key: entry.kv.key.clone(),
                        existing: *v,
                        loaded: entry.kv.version,
                    }));
                }
            }
        }
        // A batch naming one key twice is loaded as if entry by entry: the
        // second must equal the first.
        let mut seen: HashMap<(ClientId, &str), &Entry> = HashMap::new();
        let mut unique = Vec::with_capacity(new.len());
        for entry in new {
            match seen.get(&(entry.client, entry.kv.key.as_str())) {
                Some(first) if first.kv == entry.kv => {}
                Some(first) => {
                    tx.rollback().await.map_err(retry)?;
                    return Ok(Err(LoadError::Mismatch {
                        client: entry.client.short(),
                        key: entry.kv.key.clone(),
                        existing: first.kv.version,
                        loaded: entry.kv.version,
                    }));
                }
                None => {
                    seen.insert((entry.client, entry.kv.key.as_str()), entry);
                    unique.push(entry);
                }
            }
        }
        let mut usage: HashMap<ClientId, i64> = HashMap::new();
        for entry in &unique {
            *usage.entry(entry.client).or_default() += entry.kv.stored_len() as i64;
        }
        let insert = tx
            .prepare_cached(&self.sql.load_insert)
            .await
            .map_err(retry)?;
        let c: Vec<&[u8]> = unique
            .iter()
            .map(|e| e.client.as_bytes().as_slice())
            .collect();
        let k: Vec<&[u8]> = unique.iter().map(|e| e.kv.key.as_bytes()).collect();
        let v: Vec<i64> = unique.iter().map(|e| e.kv.version).collect();
        let d: Vec<&[u8]> = unique.iter().map(|e| e.kv.value.as_slice()).collect();
        tx.execute(&insert, &[&c, &k, &v, &d])
            .await
            .map_err(retry)?;
        let set_usage = tx
            .prepare_cached(&self.sql.load_usage)
            .await
            .map_err(retry)?;
        let (uc, ub): (Vec<&[u8]>, Vec<i64>) = usage
            .iter()
            .map(|(client, bytes)| (client.as_bytes().as_slice(), *bytes))
            .unzip();
        tx.execute(&set_usage, &[&uc, &ub]).await.map_err(retry)?;
        tx.commit().await.map_err(|e| classify(e, true))?;
        Ok(Ok(unique.len() as u64))
    }
}

impl Bulk for PostgresStore {
    async fn scan(
        &self,
        after: Option<(ClientId, String)>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        RETRY
            .run("scan", |_| self.scan_once(&after, limit))
            .await
            .and_then(|result| result)
    }

    async fn load(&self, entries: Vec<Entry>) -> Result<u64, LoadError> {
        if entries.is_empty() {
            return Ok(0);
        }
        // A load whose COMMIT was cut is simply run again: identical entries
        // are skipped, so the retry is harmless.
        RETRY
            .run("load", |_| self.load_once(&entries))
            .await
            .map_err(LoadError::from)
            .and_then(|result| result)
    }
}

impl Store for PostgresStore {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        RETRY
            .run("put", |doubt| self.put_once(&put, doubt))
            .await
            .and_then(|result| result)
    }

    async fn get(&self, client: ClientId, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        RETRY
            .run("get", |_| self.get_once(&client, &prefix))
            .await
            .and_then(|result| result)
    }

    async fn usage(&self, client: ClientId) -> Result<u64, StoreError> {
        RETRY
            .run("usage", |_| self.usage_once(&client))
            .await
            .and_then(|result| result)
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        RETRY
            .run("totals", |_| self.totals_once())
            .await
            .and_then(|result| result)
    }

    async fn pages(
        &self,
        client: ClientId,
        prefix: String,
    ) -> Result<Box<dyn lss_store::Pages>, StoreError> {
        let Ok(permit) = self.paged.clone().try_acquire_owned() else {
            let kvs = self.get(client, prefix).await?;
            return Ok(Box::new(lss_store::Loaded(kvs.into())));
        };
        let db = self.pool.get().await.map_err(|e| match pool_failure(e) {
            Failure::Fail(e) => e,
            Failure::Retry { error, .. } => StoreError::Unavailable(error),
        })?;
        let (requests, asked) = tokio::sync::mpsc::channel(1);
        let (counted, count) = tokio::sync::oneshot::channel();
        tokio::spawn(serve_pages(
            db,
            self.sql.clone(),
            client,
            prefix,
            counted,
            asked,
            permit,
        ));
        let count = count
            .await
            .map_err(|_| StoreError::Unavailable("the paged read stopped".into()))??;
        Ok(Box::new(PostgresPages {
            count,
            requests,
            done: false,
            held: VecDeque::new(),
        }))
    }
}

/// One page asked of [`serve_pages`]: its byte budget and where to answer
/// (the rows, and whether the read is complete).
type PageRequest = (
    usize,
    tokio::sync::oneshot::Sender<Result<(Vec<KeyValue>, bool), StoreError>>,
);

/// A paged read: one REPEATABLE READ, READ ONLY transaction on its own
/// pooled connection (one snapshot for the count and every page), the rows
/// drawn from a portal (a cursor of the extended protocol) a batch at a
/// time. Ends, rolling back and returning the connection, when its reader
/// drops the pages.
async fn serve_pages(
    mut db: deadpool_postgres::Object,
    sql: Arc<Sql>,
    client: ClientId,
    prefix: String,
    counted: tokio::sync::oneshot::Sender<Result<u64, StoreError>>,
    mut asked: tokio::sync::mpsc::Receiver<PageRequest>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let failed = |e: tokio_postgres::Error| StoreError::Unavailable(format!("PostgreSQL: {e}"));
    let namespace: Vec<u8> = client.as_bytes().to_vec();
    let start = prefix.as_bytes().to_vec();
    let end = prefix_end(&start);
    let opened = async {
        let tx = db
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(failed)?;
        let (count_sql, get_sql) = match end {
            Some(_) => (&sql.count_range, &sql.get_range),
            None => (&sql.count_from, &sql.get_from),
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&namespace, &start];
        if let Some(end) = &end {
            params.push(end);
        }
        let count: i64 = tx
            .query_one(count_sql.as_str(), &params)
            .await
            .map_err(failed)?
            .try_get(0)
            .map_err(failed)?;
        let statement = tx.prepare(get_sql).await.map_err(failed)?;
        let portal = tx.bind(&statement, &params).await.map_err(failed)?;
        Ok((tx, portal, u64::try_from(count).unwrap_or(0)))
    };
    let (tx, portal, count) = match opened.await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = counted.send(Err(e));
            return;
        }
    };
    if counted.send(Ok(count)).is_err() {
        return;
    }
    let mut rows_next: i32 = 64;
    while let Some((budget, answer)) = asked.recv().await {
        let page = async {
            let rows = tx.query_portal(&portal, rows_next).await.map_err(failed)?;
            let complete = rows.len() < usize::try_from(rows_next).unwrap_or(usize::MAX);
            let mut kvs = Vec::with_capacity(rows.len());
            let mut bytes = 0usize;
            for row in rows {
                let key: Vec<u8> = row.try_get(0).map_err(failed)?;
                let key = String::from_utf8(key)
                    .map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))?;
                let value: Vec<u8> = row.try_get(2).map_err(failed)?;
                bytes += key.len() + value.len();
                kvs.push(KeyValue {
                    key,
                    version: row.try_get(1).map_err(failed)?,
                    value,
                });
            }
            // The next batch: about one budget at these rows' average size.
            let average = (bytes / kvs.len().max(1)).max(1);
            rows_next = i32::try_from(budget / average)
                .unwrap_or(1024)
                .clamp(1, 1024);
            Ok((kvs, complete))
        };
        let result = page.await;
        let failed = result.is_err();
        if answer.send(result).is_err() || failed {
            return;
        }
    }
}

/// The reader's side of [`serve_pages`]: pages cut to the asked size from
/// the batches the task sends (one batch held at most).
struct PostgresPages {
    count: u64,
    requests: tokio::sync::mpsc::Sender<PageRequest>,
    done: bool,
    held: VecDeque<KeyValue>,
}

impl lss_store::Pages for PostgresPages {
    fn count(&mut self) -> lss_store::PageFuture<'_, u64> {
        let count = self.count;
        Box::pin(async move { Ok(count) })
    }

    fn next_page(&mut self, max_bytes: usize) -> lss_store::PageFuture<'_, Vec<KeyValue>> {
        Box::pin(async move {
            let stopped = || StoreError::Unavailable("the paged read stopped".into());
            let mut page = Vec::new();
            loop {
                if lss_store::fill_page(&mut self.held, &mut page, max_bytes) {
                    return Ok(page);
                }
                if self.done {
                    return Ok(page);
                }
                let (answer, answered) = tokio::sync::oneshot::channel();
                self.requests
                    .send((max_bytes, answer))
                    .await
                    .map_err(|_| stopped())?;
                let (rows, complete) = answered.await.map_err(|_| stopped())??;
                self.done = complete;
                self.held.extend(rows);
            }
        })
    }
}

/// A bounded pool to the database of `config` (TLS as configured), its
/// sessions named `{program}/{pid}` unless the URL names them: shared by every
/// Lightkeeper store on PostgreSQL, so they connect, time out and fail alike.
pub async fn connect_pool(config: &PostgresConfig, program: &str) -> Result<Pool, OpenError> {
    let mut pg: tokio_postgres::Config = config.url.parse().map_err(OpenError::Url)?;
    pg.connect_timeout(config.connect_timeout);
    if pg.get_application_name().is_none() {
        // Names the process, so an operator (or a test) can tell which
        // server's sessions are still open, e.g. after it was killed: a
        // transaction it had sent COMMIT for may land until they end.
        pg.application_name(format!("{program}/{}", std::process::id()));
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls_connector(&config.tls, pg.get_ssl_mode())? {
        Some(tls) => Manager::from_config(pg, tls, manager_config),
        None => Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| OpenError::Connect(e.to_string()))
}

/// `"name"` for a schema name restricted to `[a-z_][a-z0-9_]*` (≤ 63 bytes).
pub fn quote_schema(name: &str) -> Result<String, OpenError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(format!("\"{name}\""))
    } else {
        Err(OpenError::Schema(name.to_owned()))
    }
}

fn tls_connector(
    tls: &PostgresTls,
    mode: tokio_postgres::config::SslMode,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, OpenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match tls {
        PostgresTls::FromUrl => {
            if mode != tokio_postgres::config::SslMode::Require {
                return Ok(None);
            }
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        PostgresTls::Ca(path) => {
            let ca_error = |reason: String| OpenError::Ca {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ca_error(e.to_string()))?;
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no certificate in the file".into()));
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OpenError::Connect(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// Creates `schema` if needed and applies the `migrations` newer than those
/// recorded in `schema.table`, in one transaction under an advisory lock per
/// (schema, table). Each store keeps its own table, so LSS and the log store
/// can share a schema and migrate independently.
pub async fn migrate(
    pool: &Pool,
    name: &str,
    schema: &str,
    table: &str,
    migrations: &[(i32, &str)],
    program: &str,
) -> Result<(), OpenError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| OpenError::Connect(e.to_string()))?;
    let tx = client.transaction().await.map_err(OpenError::Migration)?;
    // One migrator at a time per schema, across every lssd sharing the database.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('lightkeeper ' || $2 || ' ' || $1))",
        &[&name, &table],
    )
    .await
    .map_err(OpenError::Migration)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.{table} (
             version int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(OpenError::Migration)?;
    let applied: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.{table}"),
            &[],
        )
        .await
        .map_err(OpenError::Migration)?
        .get(0);
    let known = migrations.last().map_or(0, |(v, _)| *v);
    if applied > known {
        return Err(OpenError::TooNew {
            schema: name.to_owned(),
            found: applied,
            known,
            program: program.to_owned(),
        });
    }
    for (version, sql) in migrations.iter().filter(|(v, _)| *v > applied) {
        tracing::info!(schema = name, version, "applying PostgreSQL migration");
        tx.batch_execute(&sql.replace("{schema}", schema))
            .await
            .map_err(OpenError::Migration)?;
        tx.execute(
            &format!("INSERT INTO {schema}.{table} (version) VALUES ($1)"),
            &[version],
        )
        .await
        .map_err(OpenError::Migration)?;
    }
    tx.commit().await.map_err(OpenError::Migration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_restricted() {
        assert_eq!(quote_schema("lightkeeper").expect("ok"), "\"lightkeeper\"");
        for bad in [
            "",
            "Upper",
            "a-b",
            "1abc",
            "x\"; DROP TABLE kv; --",
            &"a".repeat(64),
        ] {
            assert!(quote_schema(bad).is_err(), "{bad:?}");
        }
    }
}
