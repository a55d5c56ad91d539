//! The broker's LSS relay: it moves a signer's reads and writes to the
//! storage server and the server's MACs back, without being able to forge
//! either (it holds each signer's token, never its shared secret).
//!
//! A transport or server failure is retried with backoff until the
//! caller's deadline: it is *not* a conflict (the reference maps every
//! failure to a conflict and so makes the signer reboot, `W7`). A real
//! version conflict is reported as such.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use lss_client::{Client, ConnectOptions, PutError, RpcError};
use lss_core::{ClientId, KeyValue, Token};
use sphinx_wire::lss::{Muts, ProviderState, Receipt, Receipts, Seen};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why an LSS call gave up.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The server refused the write: other versions are stored.
    #[error("version conflict on {0} key(s)")]
    Conflict(usize),
    /// Failures until the deadline.
    #[error("LSS unavailable until the deadline: {0}")]
    Unavailable(String),
    /// Not retryable.
    #[error("LSS: {0}")]
    Failed(String),
}

/// Credentials a signer handed over (init step 1).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// The signer's LSS namespace.
    pub client_id: [u8; 33],
    /// Its bearer token.
    pub token: [u8; 32],
    /// Whether it asked for framed MACs.
    pub framed: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("client_id", &hex::encode(self.client_id))
            .field("token", &"<redacted>")
            .field("framed", &self.framed)
            .finish()
    }
}

/// The relay to every configured provider.
#[derive(Clone)]
pub struct Relay {
    providers: Arc<Vec<Provider>>,
    write_quorum: usize,
    /// Built with [`Relay::quorum`]: the signer verifies signed logs.
    verified: bool,
    /// Where the providers' keys are remembered across restarts.
    keys_file: Option<Arc<std::path::PathBuf>>,
}

/// One LSS server: one connection per signer account, reconnecting as
/// needed; its key once known; its puts run one after another by one
/// worker, in the order [`Relay::put`] was called, even when the caller
/// stopped waiting for them (a slow provider must not fall behind by
/// reordering).
struct Provider {
    options: ConnectOptions,
    clients: Mutex<HashMap<Account, Client>>,
    key: std::sync::Mutex<Option<([u8; 33], bool)>>,
    queue: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Job>>>,
    /// Signers (client ids) whose last put here was refused as a version
    /// conflict: this provider is behind for them.
    behind: std::sync::Mutex<std::collections::HashSet<[u8; 33]>>,
    /// What the last call to it found.
    seen: std::sync::Mutex<LastCall>,
}

/// When a provider last answered or failed to, and how.
#[derive(Debug, Clone, Default)]
struct LastCall {
    at: Option<Instant>,
    /// Why the last attempt got no answer; `None` when it answered.
    error: Option<String>,
}

/// A provider as the dashboard shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderView {
    /// Its URL.
    pub url: String,
    /// Whether it answered its last call (or probe).
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// Seconds since that call.
    pub seen_secs_ago: f64,
}

/// How long a probe of a provider may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bringing provider `provider` up to date before a put: the steps
/// (`lss_verify::quorum::repair_steps`) and the signer's MAC for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairJob {
    /// Which provider.
    pub provider: usize,
    /// The puts, in order.
    pub steps: Vec<Vec<KeyValue>>,
    /// The signer's client MAC for each.
    pub macs: Vec<[u8; 32]>,
}

/// One provider's work for one [`Relay::put`].
struct Job {
    provider: usize,
    account: Account,
    repair: Option<RepairJob>,
    put: Option<(Vec<KeyValue>, [u8; 32], Option<lss_proto::Verify>)>,
    deadline: Instant,
    done: tokio::sync::mpsc::Sender<(usize, Result<Receipt, RelayError>)>,
}

impl std::hash::Hash for Account {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.client_id.hash(state);
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// How long a quorum read waits for the providers beyond the read quorum
/// once it has that many answers (a provider that is down must not hold
/// every restore until the deadline).
pub const STRAGGLER_GRACE: Duration = Duration::from_millis(500);

/// One provider's part of a quorum put.
pub type ProviderPut = sphinx_wire::lss::ProviderPut;

impl Relay {
    /// A relay to the server at `options.url`.
    pub fn new(options: ConnectOptions) -> Relay {
        Relay {
            verified: false,
            ..Relay::quorum(vec![options], 1)
        }
    }

    /// The write quorum of the verified mode (`quorum-v1`), `None` for the
    /// reference's single-provider relay.
    pub fn write_quorum(&self) -> Option<u64> {
        self.verified.then_some(self.write_quorum as u64)
    }

    /// A relay to several servers, a put counting once `write_quorum` of
    /// them stored it.
    pub fn quorum(providers: Vec<ConnectOptions>, write_quorum: usize) -> Relay {
        Relay {
            providers: Arc::new(
                providers
                    .into_iter()
                    .map(|options| Provider {
                        options,
                        clients: Mutex::new(HashMap::new()),
                        key: std::sync::Mutex::new(None),
                        queue: std::sync::Mutex::new(None),
                        behind: std::sync::Mutex::new(Default::default()),
                        seen: std::sync::Mutex::new(LastCall::default()),
                    })
                    .collect(),
            ),
            write_quorum,
            verified: true,
            keys_file: None,
        }
    }

    /// Each provider's reachability, as its last call found it; a provider
    /// not called within `max_age` is probed (an `Info` call) first.
    pub async fn reachability(&self, max_age: Duration) -> Vec<ProviderView> {
        let probes = self.providers.iter().map(|p| async move {
            let fresh = p
                .seen
                .lock()
                .expect("seen lock")
                .at
                .is_some_and(|at| at.elapsed() <= max_age);
            if !fresh {
                let probe = async {
                    let mut grpc = lss_client::connect_channel(&p.options).await?;
                    lss_client::info(&mut grpc).await.map(|_| ())
                };
                let error = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
                };
                p.saw(error);
            }
            let seen = p.seen.lock().expect("seen lock").clone();
            ProviderView {
                url: p.options.url.clone(),
                reachable: seen.at.is_some() && seen.error.is_none(),
                error: seen.error,
                seen_secs_ago: seen.at.map_or(0.0, |at| at.elapsed().as_secs_f64()),
            }
        });
        join_all(probes).await
    }

    /// Remembers each provider's key (and whether it offers framed MACs) in
    /// `path` once learned, and starts from what it holds: after a restart
    /// of the broker, a provider that is down does not keep signers from
    /// connecting. A line is `<url> <key hex> <0|1>`; lines for other URLs,
    /// or unreadable ones, are ignored (the key is then asked again).
    pub fn remember_keys(mut self, path: std::path::PathBuf) -> Relay {
        if let Ok(Some(bytes)) = durable_file::read(&path) {
            for line in String::from_utf8_lossy(&bytes).lines() {
                let mut words = line.split_whitespace();
                let (Some(url), Some(key), Some(framed)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                let key: Option<[u8; 33]> = hex::decode(key).ok().and_then(|k| k.try_into().ok());
                if let (Some(p), Some(key)) =
                    (self.providers.iter().find(|p| p.options.url == url), key)
                {
                    *p.key.lock().expect("key lock") = Some((key, framed == "1"));
                }
            }
        }
        self.keys_file = Some(Arc::new(path));
        self
    }

    /// Writes every known key to the keys file.
    async fn save_keys(&self) {
        let Some(path) = self.keys_file.clone() else {
            return;
        };
        let text: String = self
            .providers
            .iter()
            .filter_map(|p| {
                let (key, framed) = (*p.key.lock().expect("key lock"))?;
                Some(format!(
                    "{} {} {}\n",
                    p.options.url,
                    hex::encode(key),
                    u8::from(framed)
                ))
            })
            .collect();
        let saved = tokio::task::spawn_blocking(move || {
            durable_file::replace(&path, text.as_bytes(), 0o644)
        })
        .await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "cannot remember the LSS providers' keys");
        }
    }

    /// How many providers.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether there are none (never, once configured).
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Every provider's public key (Info) and whether it offers framed
    /// MACs, retried until `deadline`. A key is asked once and then
    /// remembered, so a provider that is down later does not stop signers
    /// from (re)connecting.
    pub async fn server_keys(
        &self,
        deadline: Instant,
    ) -> Result<Vec<([u8; 33], bool)>, RelayError> {
        let known = self
            .providers
            .iter()
            .filter(|p| p.key.lock().expect("key lock").is_some())
            .count();
        let keys: Vec<_> = join_all(self.providers.iter().map(|p| p.server_key(deadline))).await;
        let learned = keys.iter().filter(|k| k.is_ok()).count();
        if learned > known {
            self.save_keys().await;
        }
        keys.into_iter().collect()
    }

    /// Everything `accounts[i]` stores at provider `i`, with its MAC over
    /// `nonce` (and, with `seen`, its attestation for a client whose last
    /// checkpoints are `seen`). Waits for every provider until the read
    /// quorum (`N − W + 1`) has answered, then [`STRAGGLER_GRACE`] longer.
    pub async fn get_all(
        &self,
        accounts: &[Account],
        nonce: [u8; 32],
        seen: Option<&[Option<Seen>]>,
        deadline: Instant,
    ) -> Result<Vec<ProviderState>, RelayError> {
        let needed = lss_verify::quorum::read_quorum(self.providers.len(), self.write_quorum);
        let mut pending: FuturesUnordered<_> = self
            .providers
            .iter()
            .zip(accounts)
            .enumerate()
            .map(|(i, (p, account))| {
                let verify = seen.map(|seen| verify_of(seen.get(i).copied().flatten()));
                async move { (i, p.get_all(*account, nonce, verify, deadline).await) }
            })
            .collect();
        let mut states = Vec::new();
        let mut failures = Vec::new();
        let mut grace: Option<Instant> = None;
        loop {
            let next = match grace {
                Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => pending.next().await,
            };
            let Some((i, result)) = next else { break };
            match result {
                Ok(mut state) => {
                    state.provider = i as u64;
                    states.push(state)
                }
                Err(e) => {
                    tracing::warn!(provider = i, error = %e, "LSS provider did not answer the read");
                    failures.push(e);
                }
            }
            if states.len() >= needed && grace.is_none() {
                grace = Some(Instant::now() + STRAGGLER_GRACE);
            }
        }
        if states.len() < needed {
            return Err(not_enough("read", states.len(), needed, failures));
        }
        states.sort_by_key(|s| s.provider);
        Ok(states)
    }

    /// Stores `muts` at every provider (`accounts[i]` with `puts[i]`),
    /// after carrying out `repairs`. The work is queued now, in call order
    /// per provider; the returned future resolves once `W` have stored it,
    /// with their receipts (at once for empty `muts`: repairs only). The
    /// other providers' puts go on in the background until `deadline`.
    pub fn put(
        &self,
        accounts: &[Account],
        muts: &Muts,
        puts: &[ProviderPut],
        repairs: Vec<RepairJob>,
        verify: bool,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Receipts, RelayError>> + Send + 'static {
        let n = self.providers.len();
        let write_quorum = self.write_quorum;
        let prepared = self.enqueue(accounts, muts, puts, repairs, verify, deadline);
        let relay = self.clone();
        let client_id = accounts.first().map(|a| a.client_id);
        async move {
            let (mut rx, putting) = prepared?;
            if !putting {
                return Ok(Receipts::default());
            }
            let mut receipts = Vec::new();
            let mut conflicts = 0;
            let mut failures = Vec::new();
            while let Some((i, result)) = rx.recv().await {
                match result {
                    Ok(receipt) => {
                        receipts.push(receipt);
                        if receipts.len() >= write_quorum {
                            receipts.sort_by_key(|r| r.provider);
                            let behind = client_id.map(|c| relay.behind(&c)).unwrap_or_default();
                            return Ok(Receipts { receipts, behind });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(provider = i, error = %e, "LSS provider did not store the put");
                        if let RelayError::Conflict(_) = e {
                            conflicts += 1;
                        }
                        failures.push(e);
                    }
                }
            }
            // Conflicts alone keep the quorum out of reach: other versions
            // are stored (another signer wrote), which a resync resolves.
            if conflicts > n - write_quorum {
                return Err(RelayError::Conflict(conflicts));
            }
            Err(not_enough("put", receipts.len(), write_quorum, failures))
        }
    }

    /// Queues each provider's job; returns where the results arrive and
    /// whether there is a put (not only repairs).
    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        accounts: &[Account],
        muts: &Muts,
        puts: &[ProviderPut],
        mut repairs: Vec<RepairJob>,
        verify: bool,
        deadline: Instant,
    ) -> Result<
        (
            tokio::sync::mpsc::Receiver<(usize, Result<Receipt, RelayError>)>,
            bool,
        ),
        RelayError,
    > {
        let n = self.providers.len();
        if accounts.len() != n || puts.len() != n {
            return Err(RelayError::Failed(format!(
                "{} accounts and {} MACs for {n} providers",
                accounts.len(),
                puts.len(),
            )));
        }
        let mut kvs = Vec::with_capacity(muts.len());
        for (key, (version, value)) in muts {
            let version = i64::try_from(*version)
                .map_err(|_| RelayError::Failed(format!("version of {key:?} out of range")))?;
            kvs.push(KeyValue::new(key.clone(), version, value.clone()));
        }
        let putting = !kvs.is_empty();
        let (done, rx) = tokio::sync::mpsc::channel(n);
        for (i, (account, put)) in accounts.iter().zip(puts).enumerate() {
            let repair = repairs
                .iter()
                .position(|r| r.provider == i)
                .map(|at| repairs.swap_remove(at));
            if !putting && repair.is_none() {
                continue;
            }
            let job = Job {
                provider: i,
                account: *account,
                repair,
                put: putting.then(|| {
                    (
                        kvs.clone(),
                        put.client_hmac,
                        verify.then(|| verify_of(put.seen)),
                    )
                }),
                deadline,
                done: done.clone(),
            };
            self.submit(job);
        }
        Ok((rx, putting))
    }

    /// Hands `job` to its provider's worker (started on first use).
    fn submit(&self, job: Job) {
        let i = job.provider;
        let mut queue = self.providers[i].queue.lock().expect("queue lock");
        let sender = queue.get_or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let relay = self.clone();
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    relay.run(job).await;
                }
            });
            tx
        });
        if let Err(e) = sender.send(job) {
            // The worker is gone (its runtime is shutting down).
            let job = e.0;
            let _ = job.done.try_send((
                job.provider,
                Err(RelayError::Failed("the relay is shutting down".into())),
            ));
        }
    }

    /// One provider's job: repairs first, then the put.
    async fn run(&self, job: Job) {
        let i = job.provider;
        let provider = &self.providers[i];
        if Instant::now() >= job.deadline {
            let _ = job.done.try_send((
                i,
                Err(RelayError::Unavailable(
                    "deadline passed while queued".into(),
                )),
            ));
            return;
        }
        if let Some(repair) = job.repair {
            let steps = repair.steps.len();
            for (n, (step, mac)) in repair.steps.into_iter().zip(repair.macs).enumerate() {
                match provider
                    .put(job.account, step, mac, None, job.deadline)
                    .await
                {
                    Ok(_) => {}
                    // An earlier put still queued for it when its state was
                    // read may have landed since: nothing left to repair.
                    Err(RelayError::Conflict(_)) if n == 0 => {
                        tracing::info!(
                            provider = i,
                            "LSS provider no longer behind as read; repair not needed"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(provider = i, step = n, steps, error = %e, "repairing an LSS provider that is behind failed");
                        break;
                    }
                }
                if n + 1 == steps {
                    tracing::info!(
                        provider = i,
                        steps,
                        "LSS provider that was behind brought up to date"
                    );
                }
            }
        }
        let Some((kvs, client_mac, verify)) = job.put else {
            return;
        };
        let result = provider
            .put(job.account, kvs, client_mac, verify, job.deadline)
            .await;
        {
            let mut behind = provider.behind.lock().expect("behind lock");
            match &result {
                Err(RelayError::Conflict(_)) => {
                    behind.insert(job.account.client_id);
                }
                Ok(_) => {
                    behind.remove(&job.account.client_id);
                }
                Err(e) => {
                    tracing::warn!(provider = i, error = %e, "LSS provider did not store a put; it is behind until repaired");
                }
            }
        }
        let receipt = result.map(|(server_hmac, attestation)| {
            let (checkpoint, bundle) = attestation.unwrap_or_default();
            Receipt {
                provider: i as u64,
                server_hmac,
                checkpoint,
                bundle,
            }
        });
        let _ = job.done.send((i, receipt)).await;
    }

    /// The providers known to be behind for `client_id`.
    fn behind(&self, client_id: &[u8; 33]) -> Vec<u8> {
        self.providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.behind.lock().expect("behind lock").contains(client_id))
            .map(|(i, _)| i as u8)
            .collect()
    }
}

/// The verifiable-log request for a client whose last checkpoint is `seen`.
fn verify_of(seen: Option<Seen>) -> lss_proto::Verify {
    match seen {
        None => lss_proto::Verify::default(),
        Some(seen) => lss_proto::Verify {
            seen_size: seen.size,
            seen_note: seen.note.to_vec(),
            ..Default::default()
        },
    }
}

fn not_enough(what: &str, ok: usize, needed: usize, failures: Vec<RelayError>) -> RelayError {
    let unavailable = failures
        .iter()
        .all(|e| matches!(e, RelayError::Unavailable(_)));
    let why = failures
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let message = format!("{ok} of the {needed} providers needed answered the {what} ({why})");
    if unavailable {
        RelayError::Unavailable(message)
    } else {
        RelayError::Failed(message)
    }
}

impl Provider {
    fn saw(&self, error: Option<String>) {
        *self.seen.lock().expect("seen lock") = LastCall {
            at: Some(Instant::now()),
            error,
        };
    }

    /// Runs `call` until it succeeds, fails for good, or the next backoff
    /// would pass `deadline`, noting what each attempt found.
    async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, RelayError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match call().await {
                Ok(value) => {
                    self.saw(None);
                    return Ok(value);
                }
                Err(Attempt::Stop(e)) => {
                    // It answered, if only to refuse.
                    self.saw(None);
                    return Err(e);
                }
                Err(Attempt::Again(error)) => {
                    self.saw(Some(error.clone()));
                    if Instant::now() + backoff >= deadline {
                        return Err(RelayError::Unavailable(error));
                    }
                    crate::metrics::lss_retry(what);
                    tracing::warn!(url = %self.options.url, what, %error, retry_in = ?backoff, "LSS call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn server_key(&self, deadline: Instant) -> Result<([u8; 33], bool), RelayError> {
        if let Some(key) = *self.key.lock().expect("key lock") {
            return Ok(key);
        }
        let key = self
            .retry("info", deadline, || async {
                let mut grpc = lss_client::connect_channel(&self.options).await?;
                lss_client::info(&mut grpc)
                    .await
                    .map(|info| (info.server_id.serialize(), info.offers_framed_macs()))
                    .map_err(|e| match e {
                        lss_client::ConnectError::Rpc(rpc) => Attempt::from(rpc),
                        other => Attempt::Stop(RelayError::Failed(other.to_string())),
                    })
            })
            .await?;
        *self.key.lock().expect("key lock") = Some(key);
        Ok(key)
    }

    async fn client(&self, account: Account) -> Result<Client, RpcError> {
        if let Some(client) = self.clients.lock().await.get(&account) {
            return Ok(client.clone());
        }
        let id = ClientId::parse(&account.client_id).map_err(|_| {
            RpcError::Status(tonic::Status::invalid_argument(
                "the signer's client id is not a public key",
            ))
        })?;
        let scheme = if account.framed {
            lss_core::MacScheme::Framed
        } else {
            lss_core::MacScheme::Unframed
        };
        let client = Client::connect(&self.options, id, Token(account.token))
            .await?
            .with_mac_scheme(scheme);
        self.clients.lock().await.insert(account, client.clone());
        Ok(client)
    }

    async fn get_all(
        &self,
        account: Account,
        nonce: [u8; 32],
        verify: Option<lss_proto::Verify>,
        deadline: Instant,
    ) -> Result<ProviderState, RelayError> {
        let (kvs, mac, attestation) = self
            .retry("get", deadline, || {
                let verify = verify.clone();
                async move {
                    let mut client = self.client(account).await?;
                    Ok(match verify {
                        Some(verify) => client.get_attested("", &nonce, verify).await?,
                        None => {
                            let (kvs, mac) = client.get("", &nonce).await?;
                            (kvs, mac, None)
                        }
                    })
                }
            })
            .await?;
        let server_hmac: [u8; 32] = mac
            .try_into()
            .map_err(|_| RelayError::Failed("the server's read MAC is not 32 bytes".into()))?;
        let muts = kvs
            .into_iter()
            .map(|kv| {
                let version = u64::try_from(kv.version).map_err(|_| {
                    RelayError::Failed(format!("negative version for {:?}", kv.key))
                })?;
                Ok((kv.key, (version, kv.value)))
            })
            .collect::<Result<Muts, RelayError>>()?;
        let (checkpoint, bundle) = attestation
            .map(|a| (a.checkpoint, a.bundle))
            .unwrap_or_default();
        Ok(ProviderState {
            provider: 0,
            server_hmac,
            muts,
            checkpoint,
            bundle,
        })
    }

    /// Stores `kvs` with the signer's MAC; returns the server's MAC (and
    /// attestation when `verify` asks for one).
    async fn put(
        &self,
        account: Account,
        kvs: Vec<KeyValue>,
        client_mac: [u8; 32],
        verify: Option<lss_proto::Verify>,
        deadline: Instant,
    ) -> Result<([u8; 32], Option<(Vec<u8>, Vec<u8>)>), RelayError> {
        let (mac, attestation) = self
            .retry("put", deadline, || async {
                let mut client = self.client(account).await?;
                let result = match verify.clone() {
                    Some(verify) => client.put_attested(kvs.clone(), &client_mac, verify).await,
                    None => client
                        .put(kvs.clone(), &client_mac)
                        .await
                        .map(|mac| (mac, None)),
                };
                match result {
                    Ok(ok) => Ok(ok),
                    Err(PutError::Conflict(conflicts)) => {
                        Err(Attempt::Stop(RelayError::Conflict(conflicts.len())))
                    }
                    Err(PutError::Rpc(e)) => Err(e.into()),
                    Err(e) => Err(Attempt::Stop(RelayError::Failed(e.to_string()))),
                }
            })
            .await?;
        let mac = mac
            .try_into()
            .map_err(|_| RelayError::Failed("the server's put MAC is not 32 bytes".into()))?;
        Ok((mac, attestation.map(|a| (a.checkpoint, a.bundle))))
    }
}

/// How one attempt failed.
enum Attempt {
    /// Worth another try (transport, `UNAVAILABLE`).
    Again(String),
    /// Final.
    Stop(RelayError),
}

impl From<RpcError> for Attempt {
    fn from(e: RpcError) -> Self {
        if e.is_retryable() {
            Attempt::Again(e.to_string())
        } else {
            Attempt::Stop(RelayError::Failed(e.to_string()))
        }
    }
}
