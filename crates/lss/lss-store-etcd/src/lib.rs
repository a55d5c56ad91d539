//! The etcd backend of the [`Store`] contract.
//!
//! # Layout (under one root prefix, `lightkeeper/` by default)
//! - `ROOT kv/ CLIENT KEY` → `version (i64 big-endian) ‖ value`, where CLIENT
//!   is the 33-byte compressed client id. etcd orders keys by bytes, so a
//!   namespace's keys are contiguous and in protocol order, and a literal prefix
//!   read is one range `[start, prefix_end(start))`.
//! - `ROOT usage/ CLIENT` → the namespace's quota use (u64 big-endian).
//!
//! Nothing outside the root prefix is ever read or written.
//!
//! # A put
//! 1. One read-only etcd transaction gets the usage key and every key of the
//!    put, all at one revision.
//! 2. Versions are decided with [`lss_core::accepts`] and the quota with
//!    [`lss_core::namespace_after`]; a conflict is answered from that snapshot.
//! 3. One write transaction, guarded by "the usage key's `mod_revision` is
//!    still the one read", puts every key and the usage key. Every put of a
//!    namespace rewrites its usage key, so any concurrent put of the same
//!    namespace makes the guard fail; the put is then re-read and re-decided
//!    (and will usually conflict). Different namespaces never interfere.
//!
//! etcd acknowledges a transaction once a quorum has it in its write-ahead
//! log (fsync'd), so an acknowledged put survives the loss of a minority.
//!
//! # etcd's limits
//! etcd refuses transactions with more than `--max-txn-ops` operations
//! (default 128) or larger than `--max-request-bytes` (default 1.5 MiB). The
//! store knows both ([`EtcdConfig`]) and refuses a put that would exceed them
//! before sending anything: `KeysPerPut` or `RequestBytes`, never a partial
//! write. If etcd is configured lower than we were told, its refusal is
//! reported the same way.
//!
//! # Faults
//! Unreachable members, leader elections and timeouts are retried with
//! backoff; a write whose answer was lost is resolved by re-reading
//! ([`lss_store::already_applied`]).

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use lss_core::{
    accepts, namespace_after, ClientId, KeyValue, Limit, LimitExceeded, PutOutcome, ValidPut,
};
use lss_store::retry::{Failure, Retry};
use lss_store::{already_applied, prefix_end, Bulk, Entry, LoadError, Store, StoreError, Totals};

const VERSION_LEN: usize = 8;
/// Entries per page of a prefix read.
const PAGE: i64 = 512;
/// How failed operations are retried: 10, 20, 40, … 640 ms plus jitter,
/// long enough in total (~2.5 s) to ride out a leader election.
const RETRY: Retry = Retry {
    engine: "etcd",
    attempts: 8,
    base: Duration::from_millis(10),
};
/// Bytes of protobuf framing counted per operation when estimating a
/// transaction's size (generous: tags, lengths, the op wrapper).
const OP_OVERHEAD: usize = 32;

/// Settings of the etcd store.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Root of every key Lightkeeper writes; must be non-empty.
    pub prefix: String,
    /// User and password, if the cluster has auth enabled.
    pub user: Option<(String, String)>,
    /// TLS: the CA (PEM) that signs the members' certificates. With `Some`,
    /// endpoints must be `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// The cluster's `--max-txn-ops` (etcd's default is 128).
    pub max_txn_ops: usize,
    /// The cluster's `--max-request-bytes` (etcd's default is 1.5 MiB).
    pub max_request_bytes: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Most bytes (keys plus values) one namespace may hold.
    pub max_namespace_bytes: u64,
}

impl EtcdConfig {
    /// Defaults for `endpoints`, matching a stock etcd.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "lightkeeper/".into(),
            user: None,
            ca_pem: None,
            max_txn_ops: 128,
            max_request_bytes: 1_572_864,
            timeout: Duration::from_secs(5),
            max_namespace_bytes: lss_core::Limits::default().max_namespace_bytes,
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Nothing to connect to.
    #[error("no etcd endpoints given")]
    NoEndpoints,
    /// The key prefix is empty: Lightkeeper must keep to a prefix of its own.
    #[error("the etcd key prefix must not be empty")]
    EmptyPrefix,
    /// The cluster could not be reached or refused the credentials.
    #[error("cannot connect to etcd at {endpoints}: {error}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// What failed.
        error: etcd_client::Error,
    },
}

/// The etcd store.
pub struct EtcdStore {
    client: Client,
    kv_root: Vec<u8>,
    usage_root: Vec<u8>,
    max_txn_ops: usize,
    max_request_bytes: usize,
    max_namespace_bytes: u64,
}

impl EtcdStore {
    /// Connects and checks that the cluster answers.
    pub async fn open(config: EtcdConfig) -> Result<Self, OpenError> {
        if config.endpoints.is_empty() {
            return Err(OpenError::NoEndpoints);
        }
        if config.prefix.is_empty() {
            return Err(OpenError::EmptyPrefix);
        }
        let mut options = ConnectOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &config.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(ca) = &config.ca_pem {
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca)),
            );
        }
        let connect_error = |error| OpenError::Connect {
            endpoints: config.endpoints.join(","),
            error,
        };
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(connect_error)?;
        let mut probe = client.kv_client();
        // A linearizable read of our own root: proves a quorum answers.
        probe
            .get(
                config.prefix.as_bytes().to_vec(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(connect_error)?;
        let root = config.prefix.into_bytes();
        Ok(EtcdStore {
            client,
            kv_root: [root.as_slice(), b"kv/"].concat(),
            usage_root: [root.as_slice(), b"usage/"].concat(),
            max_txn_ops: config.max_txn_ops,
            max_request_bytes: config.max_request_bytes,
            max_namespace_bytes: config.max_namespace_bytes,
        })
    }

    /// Reads `keys` in one read-only transaction, so at one revision: each
    /// key's value and `mod_revision`, or `None` where it does not exist.
    async fn read_together(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<(Vec<u8>, i64)>>, Failure> {
        let count = keys.len();
        let reads: Vec<TxnOp> = keys.into_iter().map(|k| TxnOp::get(k, None)).collect();
        let response = self
            .client
            .kv_client()
            .txn(Txn::new().and_then(reads))
            .await
            .map_err(|e| self.classify(e, false))?;
        let out: Vec<Option<(Vec<u8>, i64)>> = response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => Ok(get
                    .kvs()
                    .first()
                    .map(|kv| (kv.value().to_vec(), kv.mod_revision()))),
                _ => Err(corrupt("etcd answered a read with something else")),
            })
            .collect::<Result<_, _>>()?;
        if out.len() != count {
            return Err(corrupt("etcd answered a different number of reads"));
        }
        Ok(out)
    }

    fn kv_key(&self, client: &ClientId, key: &str) -> Vec<u8> {
        [self.kv_root.as_slice(), client.as_bytes(), key.as_bytes()].concat()
    }

    fn usage_key(&self, client: &ClientId) -> Vec<u8> {
        [self.usage_root.as_slice(), client.as_bytes()].concat()
    }

    /// Refuses a put etcd would refuse, before anything is sent.
    fn check_size(&self, put: &ValidPut) -> Result<(), StoreError> {
        // The write transaction: one op per key plus the usage key.
        let ops = put.kvs().len() + 1;
        if ops > self.max_txn_ops {
            return Err(LimitExceeded {
                limit: Limit::KeysPerPut,
                max: (self.max_txn_ops - 1) as u64,
                got: put.kvs().len() as u64,
            }
            .into());
        }
        let fixed = self.kv_root.len() + ClientId::LEN + VERSION_LEN + OP_OVERHEAD;
        let bytes: usize = put
            .kvs()
            .iter()
            .map(|kv| fixed + kv.key.len() + kv.value.len())
            .sum::<usize>()
            + self.usage_root.len()
            + ClientId::LEN
            + 2 * OP_OVERHEAD;
        if bytes > self.max_request_bytes {
            return Err(LimitExceeded {
                limit: Limit::RequestBytes,
                max: self.max_request_bytes as u64,
                got: bytes as u64,
            }
            .into());
        }
        Ok(())
    }

    async fn put_once(
        &self,
        put: &ValidPut,
        in_doubt: bool,
    ) -> Result<Result<PutOutcome, StoreError>, Failure> {
        let client = put.client();
        let usage_key = self.usage_key(client);
        let keys: Vec<Vec<u8>> = put
            .kvs()
            .iter()
            .map(|kv| self.kv_key(client, &kv.key))
            .collect();
        let mut reads = vec![usage_key.clone()];
        reads.extend(keys.iter().cloned());
        let mut stored = self.read_together(reads).await?.into_iter();
        let (used, usage_revision) = match stored.next().flatten() {
            Some((value, revision)) => (decode_usage(&value)?, revision),
            None => (0, 0),
        };
        let mut conflicts = Vec::new();
        let mut freed: u64 = 0;
        for kv in put.kvs() {
            let current = match stored.next().flatten() {
                Some((value, _)) => Some(decode(&value).map_err(Failure::Fail)?),
                None => None,
            };
            if let Some((_, value)) = &current {
                freed += (kv.key.len() + value.len()) as u64;
            }
            if !accepts(kv.version, current.as_ref().map(|(v, _)| *v)) {
                conflicts.push(KeyValue::conflict(kv.key.clone(), current));
            }
        }
        if !conflicts.is_empty() {
            if in_doubt && already_applied(put, &conflicts) {
                tracing::info!("a write in doubt had been applied; reporting it committed");
                return Ok(Ok(PutOutcome::Committed));
            }
            return Ok(Ok(PutOutcome::Conflict(conflicts)));
        }
        let added: u64 = put.kvs().iter().map(KeyValue::stored_len).sum();
        let after = match namespace_after(used, freed, added, self.max_namespace_bytes) {
            Ok(after) => after,
            Err(limit) => return Ok(Err(limit.into())),
        };
        let mut writes: Vec<TxnOp> = put
            .kvs()
            .iter()
            .zip(keys)
            .map(|(kv, key)| TxnOp::put(key, encode(kv.version, &kv.value), None))
            .collect();
        writes.push(TxnOp::put(
            usage_key.clone(),
            after.to_be_bytes().to_vec(),
            None,
        ));
        let guarded = Txn::new()
            .when([Compare::mod_revision(
                usage_key,
                CompareOp::Equal,
                usage_revision,
            )])
            .and_then(writes);
        let started = std::time::Instant::now();
        let response = self
            .client
            .kv_client()
            .txn(guarded)
            .await
            .map_err(|e| self.classify(e, true))?;
        if response.succeeded() {
            lss_store::metrics::committed("etcd", 1, started.elapsed());
            Ok(Ok(PutOutcome::Committed))
        } else {
            Err(Failure::Retry {
                error: "another put of this namespace committed first".into(),
                in_doubt: false,
            })
        }
    }

    async fn get_once(
        &self,
        client: &ClientId,
        prefix: &str,
    ) -> Result<Result<Vec<KeyValue>, StoreError>, Failure> {
        let start = self.kv_key(client, prefix);
        let end = prefix_end(&start).unwrap_or_default();
        let skip = self.kv_root.len() + ClientId::LEN;
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(usize::MAX);
        let mut out = Vec::new();
        let mut from = start;
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                // Later pages read the first page's revision: one snapshot.
                options = options.with_revision(revision);
            }
            let mut page = kv
                .get(from.clone(), Some(options))
                .await
                .map_err(|e| self.classify(e, false))?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let entries = page.take_kvs();
            let Some(last) = entries.last() else { break };
            from = [last.key(), &[0]].concat();
            for entry in &entries {
                let Ok(key) = std::str::from_utf8(&entry.key()[skip..]) else {
                    return Ok(Err(StoreError::Corrupt("a stored key is not UTF-8".into())));
                };
                let (version, value) = match decode(entry.value()) {
                    Ok(decoded) => decoded,
                    Err(e) => return Ok(Err(e)),
                };
                out.push(KeyValue {
                    key: key.to_owned(),
                    version,
                    value,
                });
            }
            if !more {
                break;
            }
        }
        Ok(Ok(out))
    }

    fn classify(&self, e: etcd_client::Error, writing: bool) -> Failure {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(status) => {
                let message = status.message();
                if message.contains("too many operations in txn request") {
                    return Failure::Fail(
                        LimitExceeded {
                            limit: Limit::KeysPerPut,
                            max: self.max_txn_ops.saturating_sub(1) as u64,
                            got: 0,
                        }
                        .into(),
                    );
                }
                if message.contains("request is too large") {
                    return Failure::Fail(
                        LimitExceeded {
                            limit: Limit::RequestBytes,
                            max: self.max_request_bytes as u64,
                            got: 0,
                        }
                        .into(),
                    );
                }
                match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
                    | tonic::Code::ResourceExhausted => Failure::Retry {
                        error: format!("etcd: {}: {message}", status.code()),
                        in_doubt: writing,
                    },
                    // A compacted revision in a paged read: start over.
                    tonic::Code::OutOfRange => Failure::Retry {
                        error: format!("etcd: {message}"),
                        in_doubt: false,
                    },
                    _ => Failure::Fail(StoreError::Unavailable(format!("etcd: {message}"))),
                }
            }
            E::TransportError(e) => Failure::Retry {
                error: format!("etcd transport: {e}"),
                in_doubt: writing,
            },
            E::IoError(e) => Failure::Retry {
                error: format!("etcd I/O: {e}"),
                in_doubt: writing,
            },
            other => Failure::Fail(StoreError::Unavailable(format!("etcd: {other}"))),
        }
    }
}

impl EtcdStore {
    async fn totals_once(&self) -> Result<Result<Totals, StoreError>, Failure> {
        let end = prefix_end(&self.usage_root).unwrap_or_default();
        let page = self
            .client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
            .get(
                self.usage_root.clone(),
                Some(GetOptions::new().with_range(end)),
            )
            .await
            .map_err(|e| self.classify(e, false))?;
        let mut totals = Totals::default();
        for stored in page.kvs() {
            let used = decode_usage(stored.value())?;
            if used > 0 {
                totals.namespaces += 1;
                totals.bytes += used;
            }
        }
        Ok(Ok(totals))
    }

    async fn scan_once(
        &self,
        after: &Option<(ClientId, String)>,
        limit: usize,
    ) -> Result<Result<Vec<Entry>, StoreError>, Failure> {
        let from = match after {
            Some((client, key)) => [self.kv_key(client, key).as_slice(), &[0]].concat(),
            None => self.kv_root.clone(),
        };
        let end = prefix_end(&self.kv_root).unwrap_or_default();
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let mut page = self
            .client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
            .get(from, Some(options))
            .await
            .map_err(|e| self.classify(e, false))?;
        let mut out = Vec::new();
        for stored in page.take_kvs() {
            let rest = &stored.key()[self.kv_root.len()..];
            let Some((namespace, key)) = rest.split_first_chunk::<{ ClientId::LEN }>() else {
                return Ok(Err(StoreError::Corrupt(
                    "a stored key has no namespace".into(),
                )));
            };
            let Ok(client) = ClientId::parse(namespace) else {
                return Ok(Err(StoreError::Corrupt(
                    "a stored namespace is not a public key".into(),
                )));
            };
            let Ok(key) = std::str::from_utf8(key) else {
                return Ok(Err(StoreError::Corrupt("a stored key is not UTF-8".into())));
            };
            let (version, value) = match decode(stored.value()) {
                Ok(decoded) => decoded,
                Err(e) => return Ok(Err(e)),
            };
            out.push(Entry {
                client,
                kv: KeyValue {
                    key: key.to_owned(),
                    version,
                    value,
                },
            });
        }
        Ok(Ok(out))
    }

    async fn load_once(&self, entries: &[Entry]) -> Result<Result<u64, LoadError>, Failure> {
        let mut clients: Vec<ClientId> = entries.iter().map(|e| e.client).collect();
        clients.sort();
        clients.dedup();
        let ops = entries.len() + clients.len();
        if ops > self.max_txn_ops {
            return Ok(Err(LoadError::Store(
                LimitExceeded {
                    limit: Limit::KeysPerPut,
                    max: self.max_txn_ops as u64,
                    got: ops as u64,
                }
                .into(),
            )));
        }
        let mut reads: Vec<Vec<u8>> = clients.iter().map(|c| self.usage_key(c)).collect();
        reads.extend(entries.iter().map(|e| self.kv_key(&e.client, &e.kv.key)));
        let mut stored = self.read_together(reads).await?.into_iter();
        let mut usage: Vec<(ClientId, u64, i64)> = Vec::with_capacity(clients.len());
        for client in &clients {
            match stored.next().flatten() {
                Some((value, revision)) => usage.push((*client, decode_usage(&value)?, revision)),
                None => usage.push((*client, 0, 0)),
            }
        }
        let mut new: Vec<&Entry> = Vec::new();
        for entry in entries {
            let current = match stored.next().flatten() {
                Some((value, _)) => Some(decode(&value).map_err(Failure::Fail)?),
                None => None,
            };
            // Earlier entries of this batch count as stored.
            let current = current.or_else(|| {
                new.iter()
                    .find(|n| n.client == entry.client && n.kv.key == entry.kv.key)
                    .map(|n| (n.kv.version, n.kv.value.clone()))
            });
            match current {
                None => new.push(entry),
                Some((v, value)) if v == entry.kv.version && value == entry.kv.value => {}
                Some((v, _)) => {
                    return Ok(Err(LoadError::Mismatch {
                        client: entry.client.short(),
                        key: entry.kv.key.clone(),
                        existing: v,
                        loaded: entry.kv.version,
                    }))
                }
            }
        }
        if new.is_empty() {
            return Ok(Ok(0));
        }
        let mut guards = Vec::new();
        let mut writes = Vec::new();
        for (client, used, revision) in &usage {
            let added: u64 = new
                .iter()
                .filter(|e| e.client == *client)
                .map(|e| e.kv.stored_len())
                .sum();
            if added == 0 {
                continue;
            }
            let key = self.usage_key(client);
            guards.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                *revision,
            ));
            writes.push(TxnOp::put(
                key,
                used.saturating_add(added).to_be_bytes().to_vec(),
                None,
            ));
        }
        for entry in &new {
            let key = self.kv_key(&entry.client, &entry.kv.key);
            guards.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
            writes.push(TxnOp::put(
                key,
                encode(entry.kv.version, &entry.kv.value),
                None,
            ));
        }
        let response = self
            .client
            .kv_client()
            .txn(Txn::new().when(guards).and_then(writes))
            .await
            .map_err(|e| self.classify(e, true))?;
        if response.succeeded() {
            Ok(Ok(new.len() as u64))
        } else {
            Err(Failure::Retry {
                error: "the store changed during the load".into(),
                in_doubt: false,
            })
        }
    }
}

impl Bulk for EtcdStore {
    async fn scan(
        &self,
        after: Option<(ClientId, String)>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        RETRY
            .run("scan", |_| self.scan_once(&after, limit))
            .await
            .and_then(|result| result)
    }

    async fn load(&self, entries: Vec<Entry>) -> Result<u64, LoadError> {
        if entries.is_empty() {
            return Ok(0);
        }
        RETRY
            .run("load", |_| self.load_once(&entries))
            .await
            .map_err(LoadError::from)
            .and_then(|result| result)
    }
}

impl Store for EtcdStore {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        if put.kvs().is_empty() {
            return Ok(PutOutcome::Committed);
        }
        self.check_size(&put)?;
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
            .run("usage", |_| async {
                let stored = self.read_together(vec![self.usage_key(&client)]).await?;
                match stored.into_iter().next().flatten() {
                    Some((value, _)) => decode_usage(&value).map(Ok),
                    None => Ok(Ok(0)),
                }
            })
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
        let from = self.kv_key(&client, &prefix);
        let end = prefix_end(&from).unwrap_or_default();
        // The count fixes the revision every page is read at: one snapshot,
        // held by etcd (no connection or transaction of ours stays open).
        let counted = RETRY
            .run("count", |_| {
                let (from, end) = (from.clone(), end.clone());
                async move {
                    let answer = self
                        .client
                        .kv_client()
                        .get(
                            from,
                            Some(GetOptions::new().with_range(end).with_count_only()),
                        )
                        .await
                        .map_err(|e| self.classify(e, false))?;
                    let revision = answer.header().map_or(0, |h| h.revision());
                    Ok((u64::try_from(answer.count()).unwrap_or(0), revision))
                }
            })
            .await?;
        Ok(Box::new(EtcdPages {
            kv: self.client.kv_client(),
            skip: self.kv_root.len() + ClientId::LEN,
            from,
            end,
            revision: counted.1,
            count: counted.0,
            done: false,
            rows: FIRST_PAGE_ROWS,
            held: std::collections::VecDeque::new(),
        }))
    }
}

/// Rows asked for by the first page of a paged read; later pages ask for
/// as many as the page's byte budget holds at the sizes seen so far.
const FIRST_PAGE_ROWS: i64 = 64;

/// A prefix read a page at a time, every page at the revision of the count.
/// Memory: one page, plus the rows of the last batch beyond it.
struct EtcdPages {
    kv: etcd_client::KvClient,
    skip: usize,
    /// The next key to read (inclusive).
    from: Vec<u8>,
    end: Vec<u8>,
    revision: i64,
    count: u64,
    done: bool,
    /// Rows to ask for next.
    rows: i64,
    /// Rows read but not handed out yet.
    held: std::collections::VecDeque<KeyValue>,
}

impl EtcdPages {
    /// Reads the next rows; sizes the read after them to about `budget`
    /// bytes at the rows' average size.
    async fn fetch(&mut self, budget: usize) -> Result<(), StoreError> {
        let options = GetOptions::new()
            .with_range(self.end.clone())
            .with_limit(self.rows)
            .with_revision(self.revision);
        let mut page = self
            .kv
            .clone()
            .max_decoding_message_size(usize::MAX)
            .get(self.from.clone(), Some(options))
            .await
            // A compacted revision ends the read: the client reads again.
            .map_err(|e| StoreError::Unavailable(format!("etcd paged read: {e}")))?;
        self.done = !page.more();
        let entries = page.take_kvs();
        match entries.last() {
            Some(last) => self.from = [last.key(), &[0]].concat(),
            None => self.done = true,
        }
        let fetched: usize = entries
            .iter()
            .map(|e| e.key().len() + e.value().len())
            .sum();
        let average = (fetched / entries.len().max(1)).max(1);
        self.rows = i64::try_from(budget / average)
            .unwrap_or(PAGE)
            .clamp(1, PAGE);
        for entry in &entries {
            let key = entry
                .key()
                .get(self.skip..)
                .and_then(|k| std::str::from_utf8(k).ok())
                .ok_or_else(|| StoreError::Corrupt("a stored key is not UTF-8".into()))?;
            let (version, value) = decode(entry.value())?;
            self.held.push_back(KeyValue {
                key: key.to_owned(),
                version,
                value,
            });
        }
        Ok(())
    }
}

impl lss_store::Pages for EtcdPages {
    fn count(&mut self) -> lss_store::PageFuture<'_, u64> {
        let count = self.count;
        Box::pin(async move { Ok(count) })
    }

    fn next_page(&mut self, max_bytes: usize) -> lss_store::PageFuture<'_, Vec<KeyValue>> {
        Box::pin(async move {
            let mut page = Vec::new();
            loop {
                if lss_store::fill_page(&mut self.held, &mut page, max_bytes) {
                    return Ok(page);
                }
                if self.done {
                    return Ok(page);
                }
                self.fetch(max_bytes).await?;
            }
        })
    }
}

fn corrupt(what: &str) -> Failure {
    Failure::Fail(StoreError::Corrupt(what.into()))
}

fn encode(version: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_LEN + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(stored: &[u8]) -> Result<(i64, Vec<u8>), StoreError> {
    match stored.split_first_chunk::<VERSION_LEN>() {
        Some((version, value)) => Ok((i64::from_be_bytes(*version), value.to_vec())),
        None => Err(StoreError::Corrupt(format!(
            "a stored value is {} bytes, shorter than its version",
            stored.len()
        ))),
    }
}

fn decode_usage(stored: &[u8]) -> Result<u64, Failure> {
    stored
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a usage record is not 8 bytes"))
}
