//! The verifiable log's I/O side (issue 17): each namespace's
//! [`NamespaceLog`] loaded from the store on first use, kept in memory,
//! updated by every put under a per-namespace lock, and signed for the
//! clients that ask. The rules and encodings are `lss-verify`'s.
//!
//! The log is written in the same store put as the data it records, so no
//! backend can commit one without the other. The cache is a cache: a
//! conflict or error the log did not predict drops it, and the next request
//! reloads it from the store (which also picks up another lssd process
//! writing the same database). A namespace whose data changed without its
//! log (a restored backup, a hand edit) is logged as diverged and still
//! signed as it is: clients then hold the server's own contradiction.
//!
//! Checkpoints are signed outside the namespace's lock by one task that
//! signs whatever is waiting with one BIP340 signature
//! ([`lss_verify::statement::sign_batch`]): under load every receipt of a
//! group commit shares a signature; alone, a request is signed directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lss_core::{ClientId, KeyValue, PutOutcome, ServerKey, SortedKvs, ValidPut};
use lss_store::Store;
use lss_verify::ledger::{
    is_reserved, NamespaceLog, PendingAttestation, Unsigned, HEAD_KEY, RING_PREFIX,
};
use lss_verify::statement::{sign_batch, MAX_BATCH};
use lss_verify::Seen;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::status;

/// Namespaces whose logs stay in memory; beyond it, idle ones are dropped
/// (and reloaded from the store when next used).
pub const CACHED_NAMESPACES: usize = 4096;

/// Memory the cached logs may hold (their state trees are about 100 bytes
/// per key): beyond it, the largest idle ones are dropped. A namespace in
/// use is never dropped, so one larger than this still works, alone.
pub const CACHE_BYTES: usize = 256 * 1024 * 1024;

type Cell = Arc<tokio::sync::Mutex<Option<NamespaceLog>>>;

/// A cached log and the bytes it held when last used.
#[derive(Default, Clone)]
struct Cached {
    cell: Cell,
    bytes: Arc<AtomicUsize>,
}

/// A statement digest waiting for its signature.
type SignJob = ([u8; 32], oneshot::Sender<Vec<u8>>);

/// The logs of every namespace.
pub struct Ledgers {
    key: ServerKey,
    cells: Mutex<HashMap<ClientId, Cached>>,
    budget: usize,
    /// The batch signer, started on first use (it needs the runtime).
    signer: OnceLock<mpsc::UnboundedSender<SignJob>>,
}

/// Signs what is waiting, up to [`MAX_BATCH`] at a time, until every
/// sender is gone.
async fn sign_batches(key: ServerKey, mut jobs: mpsc::UnboundedReceiver<SignJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Woken by the first job, the task would run next (tokio runs a
        // task woken by another first) and sign it alone; yielding once lets
        // the requests already runnable, typically the rest of a group
        // commit, add theirs.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let digests: Vec<[u8; 32]> = batch.iter().map(|(d, _)| *d).collect();
        crate::metrics::signature_batch(digests.len());
        for ((_, reply), sig) in batch.drain(..).zip(sign_batch(&key, &digests)) {
            // A requester that went away needs no signature.
            let _ = reply.send(sig);
        }
    }
}

/// A signed checkpoint and its bundle.
pub struct Attested {
    /// The signed note.
    pub checkpoint: Vec<u8>,
    /// The bundle.
    pub bundle: Vec<u8>,
}

impl From<Attested> for lss_proto::Attestation {
    fn from(a: Attested) -> Self {
        lss_proto::Attestation {
            checkpoint: a.checkpoint,
            bundle: a.bundle,
        }
    }
}

/// The client's `seen`, checked.
pub fn seen(verify: &lss_proto::Verify) -> Result<Option<Seen>, Status> {
    if verify.seen_note.is_empty() {
        return Ok(None);
    }
    let note = verify
        .seen_note
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("verify.seen_note must be 32 bytes"))?;
    Ok(Some(Seen {
        size: verify.seen_size,
        note,
    }))
}

/// A put's `verify` request: the client's last checkpoint, and its
/// signature of the put if it sent one.
#[derive(Debug, Clone, Copy)]
pub struct PutVerify {
    /// Its last verified checkpoint.
    pub seen: Option<Seen>,
    /// Its BIP340 signature of the put (`lss_verify::entry::put_digest`).
    pub client_sig: Option<[u8; 64]>,
}

impl PutVerify {
    /// Parses a put's `verify` (a malformed one is `INVALID_ARGUMENT`).
    pub fn parse(verify: &lss_proto::Verify) -> Result<Self, Status> {
        let client_sig = match verify.client_sig.len() {
            0 => None,
            64 => verify.client_sig.as_slice().try_into().ok(),
            _ => {
                return Err(Status::invalid_argument(
                    "verify.client_sig must be 64 bytes (a BIP340 signature) or empty",
                ))
            }
        };
        Ok(PutVerify {
            seen: seen(verify)?,
            client_sig,
        })
    }
}

/// What a logged put came to.
pub enum Logged<R = Attested> {
    /// Committed (with the receipt when asked for).
    Committed(Option<R>),
    /// A version conflict on the client's keys: nothing written.
    Conflict(Vec<KeyValue>),
}

impl Ledgers {
    /// Logs signed with `key`, cached within [`CACHE_BYTES`].
    pub fn new(key: ServerKey) -> Self {
        Self::with_budget(key, CACHE_BYTES)
    }

    /// Logs signed with `key`, cached within `budget` bytes.
    pub fn with_budget(key: ServerKey, budget: usize) -> Self {
        Ledgers {
            key,
            cells: Mutex::new(HashMap::new()),
            budget,
            signer: OnceLock::new(),
        }
    }

    /// Signs `unsigned`, batched with whatever else is waiting.
    pub async fn sign(&self, unsigned: Unsigned) -> Attested {
        let Unsigned { statement, bundle } = unsigned;
        let digest = statement.digest();
        let signer = self.signer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(sign_batches(self.key.clone(), rx));
            tx
        });
        let (reply, signature) = oneshot::channel();
        let signature = match signer.send((digest, reply)) {
            Ok(()) => signature.await.ok(),
            Err(_) => None,
        };
        // Only if the signer task is gone (a panic): sign here.
        let signature = signature.unwrap_or_else(|| self.key.sign_schnorr(&digest).to_vec());
        Attested {
            checkpoint: statement.note(&self.key.server_id(), signature),
            bundle,
        }
    }

    /// The key that signs checkpoints.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// Bytes the cached logs held when last used.
    pub fn cached_bytes(&self) -> usize {
        let cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells
            .values()
            .map(|c| c.bytes.load(Ordering::Relaxed))
            .sum()
    }

    fn cell(&self, client: ClientId) -> Cached {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        if !cells.contains_key(&client) {
            // Drop idle logs, largest first, until the new one fits.
            let mut total: usize = cells
                .values()
                .map(|c| c.bytes.load(Ordering::Relaxed))
                .sum();
            if cells.len() >= CACHED_NAMESPACES || total > self.budget {
                let mut idle: Vec<(ClientId, usize)> = cells
                    .iter()
                    .filter(|(_, c)| Arc::strong_count(&c.cell) == 1)
                    .map(|(id, c)| (*id, c.bytes.load(Ordering::Relaxed)))
                    .collect();
                idle.sort_unstable_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
                for (id, bytes) in idle {
                    if cells.len() < CACHED_NAMESPACES && total <= self.budget {
                        break;
                    }
                    cells.remove(&id);
                    total -= bytes;
                }
            }
        }
        cells.entry(client).or_default().clone()
    }

    async fn load<S: Store>(store: &S, client: ClientId) -> Result<NamespaceLog, Status> {
        let kvs = store
            .get(client, String::new())
            .await
            .map_err(status::store)?;
        let log = NamespaceLog::load(&kvs).map_err(|e| {
            tracing::error!(client = %client.short(), error = %e, "cannot load the namespace's log");
            Status::data_loss(e.to_string())
        })?;
        if log.diverged() {
            tracing::error!(client = %client.short(), size = log.size(),
                "the namespace's data is not what its log records (restored or edited under lssd?)");
        }
        Ok(log)
    }

    /// Commits `kvs` with its log entry; with `verify`, signs the receipt.
    pub async fn put<S: Store>(
        &self,
        store: &S,
        client: ClientId,
        kvs: SortedKvs,
        verify: Option<PutVerify>,
    ) -> Result<Logged, Status> {
        // Each value hashed once, for the signature check and the log.
        let written: Vec<lss_verify::StateLeaf> = kvs
            .as_slice()
            .iter()
            .map(|kv| lss_verify::StateLeaf::of(&kv.key, kv.version, &kv.value))
            .collect();
        if let Some(sig) = verify.and_then(|v| v.client_sig) {
            // Checked before anything is locked or stored: a signature that
            // is not the client's own for exactly these writes is refused.
            let writes = lss_verify::entry::writes_digest(&written);
            if !lss_verify::entry::verify_put(client.as_bytes(), &writes, &sig) {
                return Err(Status::invalid_argument(
                    "verify.client_sig is not the client's signature of this put",
                ));
            }
        }
        let cached = self.cell(client);
        let mut guard = cached.cell.lock().await;
        let result = self
            .put_locked(&mut guard, store, client, kvs, written, verify)
            .await;
        cached.bytes.store(
            guard.as_ref().map_or(0, NamespaceLog::memory),
            Ordering::Relaxed,
        );
        drop(guard);
        Ok(match result? {
            Logged::Committed(None) => Logged::Committed(None),
            Logged::Committed(Some(unsigned)) => Logged::Committed(Some(self.sign(unsigned).await)),
            Logged::Conflict(c) => Logged::Conflict(c),
        })
    }

    async fn put_locked<S: Store>(
        &self,
        guard: &mut Option<NamespaceLog>,
        store: &S,
        client: ClientId,
        kvs: SortedKvs,
        written: Vec<lss_verify::StateLeaf>,
        verify: Option<PutVerify>,
    ) -> Result<Logged<Unsigned>, Status> {
        // Twice at most: once from the cache, once after reloading it.
        for attempt in 0..2 {
            let log = match guard.as_mut() {
                Some(log) => log,
                None => guard.insert(Self::load(store, client).await?),
            };
            let predicted = kvs
                .as_slice()
                .iter()
                .all(|kv| lss_core::accepts(kv.version, log.version(&kv.key)));
            if !predicted && attempt == 0 {
                // Let the store decide with fresh data.
                *guard = None;
                continue;
            }
            if !predicted {
                // Fresh data and still a conflict: the store lists it.
                let outcome = store
                    .put(ValidPut::new(client, kvs.clone()))
                    .await
                    .map_err(status::store)?;
                return match outcome {
                    PutOutcome::Conflict(c) => Ok(Logged::Conflict(c)),
                    PutOutcome::Committed => {
                        // The log is behind a writer it cannot see; reload.
                        *guard = None;
                        Err(Status::aborted("namespace changed concurrently; retry"))
                    }
                };
            }
            let prepared = log.prepare_leaves(written.clone(), verify.and_then(|v| v.client_sig));
            let all = kvs
                .clone()
                .with_server_kvs(prepared.extra.clone())
                .map_err(status::rejected)?;
            match store.put(ValidPut::new(client, all)).await {
                Ok(PutOutcome::Committed) => {
                    log.commit(prepared);
                    let receipt = match verify {
                        None => None,
                        Some(v) => Some(Self::attest(store, client, log, v.seen, None).await?),
                    };
                    return Ok(Logged::Committed(receipt));
                }
                Ok(PutOutcome::Conflict(conflicts)) => {
                    *guard = None;
                    let theirs: Vec<KeyValue> = conflicts
                        .into_iter()
                        .filter(|kv| !is_reserved(&kv.key))
                        .collect();
                    if !theirs.is_empty() {
                        return Ok(Logged::Conflict(theirs));
                    }
                    // Only the log's head moved: another process wrote.
                }
                Err(e) => {
                    *guard = None;
                    return Err(status::store(e));
                }
            }
        }
        Err(Status::aborted("namespace changed concurrently; retry"))
    }

    /// Reads `prefix` and signs the answer for `seen` and `nonce`.
    pub async fn get<S: Store>(
        &self,
        store: &S,
        client: ClientId,
        prefix: String,
        nonce: Vec<u8>,
        seen: Option<Seen>,
    ) -> Result<(Vec<KeyValue>, Attested), Status> {
        let cached = self.cell(client);
        let mut guard = cached.cell.lock().await;
        let result = self
            .get_locked(&mut guard, store, client, prefix, nonce, seen)
            .await;
        cached.bytes.store(
            guard.as_ref().map_or(0, NamespaceLog::memory),
            Ordering::Relaxed,
        );
        drop(guard);
        let (kvs, unsigned) = result?;
        Ok((kvs, self.sign(unsigned).await))
    }

    async fn get_locked<S: Store>(
        &self,
        guard: &mut Option<NamespaceLog>,
        store: &S,
        client: ClientId,
        prefix: String,
        nonce: Vec<u8>,
        seen: Option<Seen>,
    ) -> Result<(Vec<KeyValue>, Unsigned), Status> {
        // Another process may have written: the head's version tells.
        let log = self.current(guard, store, client).await?;
        let mut kvs = store
            .get(client, prefix.clone())
            .await
            .map_err(status::store)?;
        kvs.retain(|kv| !is_reserved(&kv.key));
        let unsigned = Self::attest(store, client, log, seen, Some((prefix, nonce, &kvs))).await?;
        Ok((kvs, unsigned))
    }

    /// Opens a snapshot of `prefix` and takes the checkpoint that goes with
    /// it (both under the namespace's lock, so they agree), for a reply
    /// streamed after the lock is released and signed over exactly the
    /// entries sent ([`lss_verify::ledger::PendingAttestation`]).
    pub async fn stream<S: Store>(
        &self,
        store: &S,
        client: ClientId,
        prefix: String,
        nonce: Vec<u8>,
        seen: Option<Seen>,
    ) -> Result<(Box<dyn lss_store::Pages>, PendingAttestation), Status> {
        let cached = self.cell(client);
        let mut guard = cached.cell.lock().await;
        let result = async {
            let log = self.current(&mut guard, store, client).await?;
            let pages = store
                .pages(client, prefix.clone())
                .await
                .map_err(status::store)?;
            let ring = Self::ring_for(store, client, log, seen).await?;
            let pending = log
                .pending(
                    client.as_bytes(),
                    seen,
                    Some(nonce),
                    Some(&prefix),
                    ring.as_deref(),
                )
                .map_err(|e| Status::data_loss(e.to_string()))?;
            Ok((pages, pending))
        }
        .await;
        cached.bytes.store(
            guard.as_ref().map_or(0, NamespaceLog::memory),
            Ordering::Relaxed,
        );
        result
    }

    /// The namespace's log as the store holds it now: the cached one unless
    /// another process wrote since (the head's version tells), else loaded.
    async fn current<'g, S: Store>(
        &self,
        guard: &'g mut Option<NamespaceLog>,
        store: &S,
        client: ClientId,
    ) -> Result<&'g mut NamespaceLog, Status> {
        let head = store
            .get(client, HEAD_KEY.to_owned())
            .await
            .map_err(status::store)?;
        let stored_size = head
            .iter()
            .find(|kv| kv.key == HEAD_KEY)
            .map_or(0, |kv| kv.version as u64 + 1);
        if guard.as_ref().is_some_and(|log| log.size() != stored_size) {
            *guard = None;
        }
        Ok(match guard {
            Some(log) => log,
            None => guard.insert(Self::load(store, client).await?),
        })
    }

    /// The ring's kvs when a bundle for `seen` needs them.
    async fn ring_for<S: Store>(
        store: &S,
        client: ClientId,
        log: &NamespaceLog,
        seen: Option<Seen>,
    ) -> Result<Option<Vec<KeyValue>>, Status> {
        if !log.needs_ring(log.bundle_start(seen)) {
            return Ok(None);
        }
        store
            .get(client, RING_PREFIX.to_owned())
            .await
            .map(Some)
            .map_err(status::store)
    }

    async fn attest<S: Store>(
        store: &S,
        client: ClientId,
        log: &NamespaceLog,
        seen: Option<Seen>,
        read: Option<(String, Vec<u8>, &[KeyValue])>,
    ) -> Result<Unsigned, Status> {
        let ring = Self::ring_for(store, client, log, seen).await?;
        let (nonce, answer) = match read {
            Some((prefix, nonce, kvs)) => (Some(nonce), Some((prefix, kvs))),
            None => (None, None),
        };
        log.unsigned(
            client.as_bytes(),
            seen,
            nonce,
            answer.as_ref().map(|(p, kvs)| (p.as_str(), *kvs)),
            ring.as_deref(),
        )
        .map_err(|e| Status::data_loss(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lss_core::Limits;
    use lss_store::{RedbConfig, RedbStore};

    fn client(n: u8) -> ClientId {
        lss_store::conformance::client(n)
    }

    fn kvs(n: usize) -> SortedKvs {
        let kvs = (0..n)
            .map(|i| KeyValue::new(format!("key-{i:05}"), 0, vec![1; 8]))
            .collect();
        SortedKvs::new(kvs, &Limits::default()).expect("sorted")
    }

    /// A client cannot make lssd hold its whole state tree, nor many of
    /// them: idle logs beyond the budget are dropped, the largest first,
    /// and reload from the store when used again.
    #[tokio::test]
    async fn the_log_cache_stays_within_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path(), RedbConfig::default()).expect("store");
        let key = ServerKey::from_hex(&"22".repeat(32)).expect("key");
        let budget = 64 * 1024;
        let ledgers = Ledgers::with_budget(key, budget);
        // One namespace alone over the budget still works.
        let big = ledgers
            .put(&store, client(1), kvs(2_000), None)
            .await
            .expect("put");
        assert!(matches!(big, Logged::Committed(None)));
        let one = ledgers.cached_bytes();
        assert!(one > budget, "a 2,000-key tree is counted: {one}");
        // The next namespace evicts it (idle, largest). Eviction happens
        // before a new log loads, so the cache holds at most the budget
        // plus the newest log.
        let small = {
            let alone = Ledgers::with_budget(ledgers.key.clone(), budget);
            alone
                .put(&store, client(99), kvs(50), None)
                .await
                .expect("put");
            alone.cached_bytes()
        };
        for n in 2..10 {
            ledgers
                .put(&store, client(n), kvs(50), None)
                .await
                .expect("put");
            let cached = ledgers.cached_bytes();
            assert!(cached <= budget + small, "{cached} > {budget} + {small}");
        }
        assert!(ledgers.cached_bytes() < one, "the large log was dropped");
        // Reloaded from the store when used again, with its log intact.
        let receipt = ledgers
            .put(
                &store,
                client(1),
                SortedKvs::new(
                    vec![KeyValue::new("key-00000", 1, vec![2])],
                    &Limits::default(),
                )
                .expect("kvs"),
                Some(PutVerify {
                    seen: None,
                    client_sig: None,
                }),
            )
            .await
            .expect("put");
        let Logged::Committed(Some(receipt)) = receipt else {
            panic!("a receipt");
        };
        let statement =
            lss_verify::Statement::verify(&receipt.checkpoint, &ledgers.key.server_id())
                .expect("signed");
        assert_eq!(statement.size, 2, "the reloaded log continues");
        assert_eq!(statement.state_count, 2_000);
    }

    /// Receipts that wait together share one signature, and each verifies
    /// on its own as a checkpoint of its namespace.
    #[tokio::test]
    async fn checkpoints_waiting_together_share_one_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path(), RedbConfig::default()).expect("store");
        let key = ServerKey::from_hex(&"22".repeat(32)).expect("key");
        let ledgers = Ledgers::new(key.clone());
        let mut unsigned = Vec::new();
        for n in 1..=16 {
            ledgers
                .put(&store, client(n), kvs(2), None)
                .await
                .expect("put");
            let cached = ledgers.cell(client(n));
            let guard = cached.cell.lock().await;
            let log = guard.as_ref().expect("cached");
            unsigned.push(
                Ledgers::attest(&store, client(n), log, None, None)
                    .await
                    .expect("unsigned"),
            );
        }
        // Joined on this test's one thread, all 16 wait before the signer
        // task first runs.
        let signed =
            futures_util::future::join_all(unsigned.into_iter().map(|u| ledgers.sign(u))).await;
        let mut signatures = std::collections::HashSet::new();
        for (n, attested) in (1..=16).zip(&signed) {
            let statement = lss_verify::Statement::verify(&attested.checkpoint, &key.server_id())
                .expect("verifies");
            assert_eq!(statement.client, *client(n).as_bytes());
            let note = signature_bytes(&attested.checkpoint);
            assert!(note.len() > 64, "a batch signature with its proof");
            signatures.insert(note[..64].to_vec());
        }
        assert_eq!(signatures.len(), 1, "one BIP340 signature for the 16");
        // Alone, a checkpoint is signed directly.
        let cached = ledgers.cell(client(1));
        let guard = cached.cell.lock().await;
        let alone = Ledgers::attest(&store, client(1), guard.as_ref().expect("log"), None, None)
            .await
            .expect("unsigned");
        drop(guard);
        let attested = ledgers.sign(alone).await;
        assert_eq!(signature_bytes(&attested.checkpoint).len(), 64);
    }

    /// The signature bytes of a checkpoint note's (only) line.
    fn signature_bytes(note: &[u8]) -> Vec<u8> {
        tlog_core::note::Note::parse(note)
            .expect("note")
            .signatures()[0]
            .signature
            .clone()
    }
}
