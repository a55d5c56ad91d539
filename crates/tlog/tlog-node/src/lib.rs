//! The transparency-log runtime (tlog.md §4, §6): one log served from a
//! [`LogStore`], its checkpointer, and its HTTP resources. The rules live in
//! `tlog-core` and the store; this crate only moves bytes and time.
//!
//! - **Appends** go straight to the store, whose writer thread batches
//!   every waiting append into one durable transaction (§6.2); `Ok` means
//!   durable.
//! - **Checkpointer** (§6.3): every interval, if the committed tree grew,
//!   sign its head, store the note (the store refuses a root that is not
//!   the tree's at that size, and never rolls back), then publish it. A
//!   store behind its latest checkpoint (a restored backup) freezes the log:
//!   nothing more is signed.
//! - **HTTP** (§4.1–§4.5): `checkpoint`, hash tiles and entry bundles
//!   (canonical paths only; nothing beyond the published size), the
//!   `lk/v1/inclusion` and `lk/v1/consistency` extensions, and for a
//!   general-purpose log `POST add` behind an operator token.
//!
//! - **Witness** ([`witness`]): tlog-witness `add-checkpoint` for the logs
//!   it is configured for.
//!
//! - **Submitting** ([`submit`]): the log side of witnessing (§5.2).
//!
//! - **Federation** ([`peer`]): the LKTL/1 port: banner and `ERR` line for
//!   `nc`, serving peers, following the log from them (mirrors), Inv,
//!   equivocation evidence, bans and limits.
//!
//! Not yet here (issue 14): receipts.

use std::sync::Arc;
use std::time::Duration;

pub mod keyfile;
pub mod peer;
pub mod shared;
pub mod submit;
pub mod witness;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tlog_core::note::{b64encode, KeyType, Note, SignerKey};
use tlog_core::tile::{self, TileId};
use tlog_core::Checkpoint;
use tlog_store::{Appended, LogId, LogOptions, LogStore, Status, StoreError};
use tokio::sync::watch;

/// Why the node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key's name is not the origin (tlog.md §3.4).
    #[error("the log key is named {key}, not after the origin {origin}")]
    KeyName {
        /// The key's name.
        key: String,
        /// The origin.
        origin: String,
    },
    /// A transition key for a node that signs nothing (a mirror).
    #[error("a mirror signs no checkpoints")]
    Mirror,
    /// A transition key that is not an Ed25519 log key.
    #[error("the previous key {0} is not an Ed25519 log key")]
    NotALogKey(String),
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch (the runtime's clock, passed into the rules).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A published checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its size.
    pub size: u64,
    /// The signed note.
    pub note: Vec<u8>,
}

/// One log being served.
pub struct LogNode<S> {
    store: Arc<S>,
    log: LogId,
    origin: String,
    /// The log key; `None` for a mirror, which serves the origin's notes.
    key: Option<SignerKey>,
    published: watch::Sender<Option<Published>>,
    /// The latest signed (stored) checkpoint, what peers are told about:
    /// ahead of `published` while the publish policy waits for
    /// cosignatures that peers give over LKTL/1.
    signed: watch::Sender<Option<Published>>,
    /// Counts the refreshes of an idle log federation cosigners witness:
    /// each asks the announcer to send the latest note to every peer again.
    refreshed: watch::Sender<u64>,
    publish: submit::Publish,
    /// When the witnesses last got a submission.
    last_submitted: std::sync::Mutex<Option<std::time::Instant>>,
    /// One `publish_stored` at a time: two interleaved could each read
    /// the store and send what they read, the older last, and the watches
    /// would step back to a note that lacks a merged cosignature.
    publishing: tokio::sync::Mutex<()>,
    /// A previous log key that also signs new checkpoints until a Unix
    /// time: a key rotation's transition (tlog.md §3.5), so witnesses that
    /// know only the old key keep cosigning while their operators add the
    /// new one.
    transition: std::sync::Mutex<Option<(SignerKey, u64)>>,
}

impl<S: LogStore> LogNode<S> {
    /// Creates (or finds) the log of `key`'s name in `store`, publishes its
    /// latest stored checkpoint, and starts the checkpointer.
    pub async fn start(
        store: Arc<S>,
        key: SignerKey,
        options: LogOptions,
        interval: Duration,
        publish: submit::Publish,
    ) -> Result<Arc<Self>, NodeError> {
        let origin = key.name().to_string();
        if !tlog_core::checkpoint::is_lightkeeper_origin(&origin) {
            return Err(NodeError::KeyName {
                key: origin.clone(),
                origin,
            });
        }
        let node = Self::open(store, &origin, options, Some(key), publish).await?;
        node.checkpoint_once().await;
        let ticker = Arc::downgrade(&node);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(node) = ticker.upgrade() else { break };
                node.checkpoint_once().await;
            }
        });
        Ok(node)
    }

    /// Serves a mirror of `origin`: no key, no appends over HTTP; the
    /// origin's checkpoints are published as the follower stores them.
    pub async fn mirror(store: Arc<S>, origin: &str) -> Result<Arc<Self>, NodeError> {
        Self::open(
            store,
            origin,
            LogOptions::default(),
            None,
            submit::Publish::default(),
        )
        .await
    }

    async fn open(
        store: Arc<S>,
        origin: &str,
        options: LogOptions,
        key: Option<SignerKey>,
        publish: submit::Publish,
    ) -> Result<Arc<Self>, NodeError> {
        let log = store.create_log(origin, options).await?;
        let (published, _) = watch::channel(None);
        let (signed, _) = watch::channel(None);
        let (refreshed, _) = watch::channel(0);
        let node = Arc::new(LogNode {
            store,
            log,
            origin: origin.to_string(),
            key,
            published,
            signed,
            refreshed,
            publish,
            last_submitted: std::sync::Mutex::new(None),
            publishing: tokio::sync::Mutex::new(()),
            transition: std::sync::Mutex::new(None),
        });
        node.publish_stored().await?;
        Ok(node)
    }

    /// Publishes the store's latest checkpoint if it is newer than the
    /// published one (a mirror, after its follower stored one) and meets
    /// the publish policy (a sequencer's); peers hear of it either way.
    pub async fn publish_stored(&self) -> Result<(), StoreError> {
        let _one = self.publishing.lock().await;
        let Some(note) = self.store.checkpoint(self.log, None).await? else {
            return Ok(());
        };
        let parsed = Note::parse(&note)
            .map_err(|_| StoreError::Corrupt("stored checkpoint does not parse".into()))?;
        let size = Checkpoint::parse(parsed.text())
            .map_err(|_| StoreError::Corrupt("stored checkpoint does not parse".into()))?
            .size;
        let stored = Published { size, note };
        let newer = |current: &Option<Published>| {
            current
                .as_ref()
                .is_none_or(|p| p.size < size || (p.size == size && p.note != stored.note))
        };
        if newer(&self.signed.borrow()) {
            self.signed.send_replace(Some(stored.clone()));
        }
        if self.key.is_some() && !self.publish.is_met(&parsed) {
            return Ok(());
        }
        if newer(&self.published.borrow()) {
            self.published.send_replace(Some(stored));
        }
        Ok(())
    }

    /// Signs every checkpoint from now on with `previous` too (after the
    /// log key's signature), until the Unix time `until` (tlog.md §3.5's
    /// transition after a key rotation). Refused for a key of another
    /// name, or on a mirror.
    pub fn sign_also_with(&self, previous: SignerKey, until: u64) -> Result<(), NodeError> {
        if self.key.is_none() {
            return Err(NodeError::Mirror);
        }
        if previous.name() != self.origin {
            return Err(NodeError::KeyName {
                key: previous.name().to_string(),
                origin: self.origin.clone(),
            });
        }
        if previous.key_type() != KeyType::Ed25519 {
            return Err(NodeError::NotALogKey(previous.name().to_string()));
        }
        if let Ok(mut t) = self.transition.lock() {
            *t = Some((previous, until));
        }
        Ok(())
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether this node signs the log (else it mirrors it).
    pub fn is_sequencer(&self) -> bool {
        self.key.is_some()
    }

    /// The published checkpoint's size and root.
    pub fn published_head(&self) -> Option<(u64, tlog_core::Hash)> {
        let published = self.published.borrow().clone()?;
        let note = Note::parse(&published.note).ok()?;
        let checkpoint = Checkpoint::parse(note.text()).ok()?;
        Some((checkpoint.size, checkpoint.root))
    }

    /// The root of the stored tree at `size` (≤ the committed size).
    pub async fn root_at(&self, size: u64) -> Result<tlog_core::Hash, StoreError> {
        if size == 0 {
            return Ok(tlog_core::merkle::EMPTY_ROOT);
        }
        // The last leaf's inclusion path folds from the left at every level.
        let entry = self
            .store
            .entries(self.log, size - 1, size)
            .await?
            .pop()
            .ok_or_else(|| StoreError::OutOfRange(format!("no entry {}", size - 1)))?;
        let path = self.store.inclusion_proof(self.log, size - 1, size).await?;
        let mut root = tlog_core::merkle::leaf_hash(&entry);
        for p in &path {
            root = tlog_core::merkle::node_hash(p, &root);
        }
        Ok(root)
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Its id.
    pub fn log_id(&self) -> LogId {
        self.log
    }

    /// The latest published checkpoint, and a way to wait for the next.
    pub fn published(&self) -> watch::Receiver<Option<Published>> {
        self.published.subscribe()
    }

    /// The latest signed checkpoint (≥ the published one), and a way to
    /// wait for the next: what federation peers verify, store and cosign.
    pub fn signed(&self) -> watch::Receiver<Option<Published>> {
        self.signed.subscribe()
    }

    /// Changes when an idle log wants its latest checkpoint announced to
    /// every peer again, those that hold it included (see `refresh`).
    pub fn refreshed(&self) -> watch::Receiver<u64> {
        self.refreshed.subscribe()
    }

    /// The signed checkpoint's size and root.
    pub fn signed_head(&self) -> Option<(u64, tlog_core::Hash)> {
        let signed = self.signed.borrow().clone()?;
        let note = Note::parse(&signed.note).ok()?;
        let checkpoint = Checkpoint::parse(note.text()).ok()?;
        Some((checkpoint.size, checkpoint.root))
    }

    /// Appends one entry; `Ok` when durable (not yet published).
    pub async fn append(&self, entry: Vec<u8>) -> Result<Appended, StoreError> {
        let mut done = self.store.append(self.log, vec![entry]).await?;
        done.pop()
            .ok_or_else(|| StoreError::Unavailable("no index returned".into()))
    }

    /// One round of §6.3: sign and publish the committed tree if it grew.
    pub async fn checkpoint_once(&self) {
        if let Err(e) = self.try_checkpoint().await {
            tracing::warn!(origin = %self.origin, error = %e, "checkpoint not made");
        }
    }

    async fn try_checkpoint(&self) -> Result<(), StoreError> {
        let Some(key) = &self.key else {
            return self.publish_stored().await;
        };
        let state = self.store.state(self.log).await?;
        if state.status != Status::Active {
            return Ok(());
        }
        let have = self.published.borrow().as_ref().map(|p| p.size);
        if have == Some(state.size) {
            return self.refresh(key).await;
        }
        let signed = self.signed.borrow().as_ref().map(|p| p.size);
        if signed == Some(state.size) && self.publish.witnesses.is_empty() {
            // Signed and told to the peers; their cosignatures publish it.
            return Ok(());
        }
        if state.size < state.checkpoint_size {
            tracing::error!(origin = %self.origin, size = state.size, checkpoint = state.checkpoint_size,
                "the store is behind its own signed checkpoint (a restored backup?): log frozen");
            return self.store.set_status(self.log, Status::Frozen).await;
        }
        let text = Checkpoint::new(&self.origin, state.size, state.root).to_text();
        let mut note = Note::new(&text).map_err(|e| StoreError::BadNote(e.to_string()))?;
        note.add(key.sign(note.text(), 0));
        if let Ok(mut transition) = self.transition.lock() {
            match transition.as_ref() {
                Some((previous, until)) if now_secs() < *until => {
                    note.add(previous.sign(note.text(), 0));
                }
                Some(_) => *transition = None,
                None => {}
            }
        }
        let bytes = note.to_bytes();
        match self
            .store
            .put_checkpoint(self.log, state.size, state.root, bytes.clone())
            .await
        {
            Ok(_) => {}
            Err(StoreError::CheckpointConflict) => {
                tracing::error!(origin = %self.origin, "the store's tree disagrees with a stored checkpoint: log frozen");
                return self.store.set_status(self.log, Status::Frozen).await;
            }
            Err(e) => return Err(e),
        }
        if self.publish.witnesses.is_empty() {
            // Announcing it to the federation cosigners is their
            // submission: the first refresh comes `republish` after it.
            if !self.publish.cosigners.is_empty() {
                if let Ok(mut at) = self.last_submitted.lock() {
                    *at = Some(std::time::Instant::now());
                }
            }
            // No HTTP witnesses: published now under `quorum none`, else
            // once federation cosignatures merged over LKTL/1 meet it.
            return self.publish_stored().await;
        }
        self.witness_and_publish(key, note, state.size, state.root)
            .await
    }

    /// An idle witnessed log resubmits its latest checkpoint every
    /// `republish` (tlog.md §5.2) so cosignatures stay fresh: to its HTTP
    /// witnesses, or, when federation cosigners witness it, by announcing
    /// the checkpoint to the peers again (they cosign it anew, peer.rs, and
    /// their fresher lines merge into it and publish it again).
    async fn refresh(&self, key: &SignerKey) -> Result<(), StoreError> {
        let due = self
            .last_submitted
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= self.publish.republish))
            .unwrap_or(false);
        if !due {
            return Ok(());
        }
        if self.publish.witnesses.is_empty() {
            if !self.publish.cosigners.is_empty() {
                if let Ok(mut at) = self.last_submitted.lock() {
                    *at = Some(std::time::Instant::now());
                }
                // The announcer sends the latest note to every peer.
                self.refreshed.send_modify(|n| *n += 1);
            }
            return Ok(());
        }
        let Some(bytes) = self.store.checkpoint(self.log, None).await? else {
            return Ok(());
        };
        let note = Note::parse(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let checkpoint =
            Checkpoint::parse(note.text()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.witness_and_publish(key, note, checkpoint.size, checkpoint.root)
            .await
    }

    /// Submits the stored checkpoint to the witnesses, merges what they
    /// cosigned, and publishes at the quorum; freezes on lost history.
    async fn witness_and_publish(
        &self,
        key: &SignerKey,
        mut note: Note,
        size: u64,
        root: tlog_core::Hash,
    ) -> Result<(), StoreError> {
        if let Ok(mut at) = self.last_submitted.lock() {
            *at = Some(std::time::Instant::now());
        }
        let lines = match submit::cosign(self, &key.verifier(), &note, size).await {
            submit::Submitted::Cosigned(lines) => lines,
            submit::Submitted::LostHistory(why) => {
                tracing::error!(origin = %self.origin, %why,
                    "a witness holds signed history this store lacks (a restored backup?): log frozen");
                return self.store.set_status(self.log, Status::Frozen).await;
            }
        };
        let cosigned = lines.len();
        for line in lines {
            note.add(line);
        }
        self.store
            .put_checkpoint(self.log, size, root, note.to_bytes())
            .await?;
        if cosigned < self.publish.quorum {
            tracing::warn!(origin = %self.origin, size, cosigned, quorum = self.publish.quorum,
                "not published: too few witnesses cosigned; retried next round");
        }
        self.publish_stored().await
    }

    /// Evidence that `key` signed `theirs` and our stored latest note,
    /// whose trees differ at `theirs`' size (`None` when they agree, or
    /// when no note of ours covers that size yet).
    pub async fn evidence_against(
        &self,
        key: &tlog_core::VerifierKey,
        theirs: &Note,
        checkpoint: &Checkpoint,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.store.checkpoint(self.log, None).await? else {
            return Ok(None);
        };
        let mine = Note::parse(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mine_cp =
            Checkpoint::parse(mine.text()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let n = checkpoint.size;
        if mine_cp.size < n {
            return Ok(None);
        }
        let ours_there = self.root_at(n).await?;
        if ours_there == checkpoint.root {
            return Ok(None);
        }
        let proof = if mine_cp.size == n {
            Vec::new()
        } else {
            self.store
                .consistency_proof(self.log, n, mine_cp.size)
                .await?
        };
        let (root_b_at_a, proof) = tlog_core::follow::evidence_parts(
            (n, checkpoint.root),
            (mine_cp.size, mine_cp.root),
            ours_there,
            proof,
        );
        Ok(tlog_core::Evidence::build(key, theirs, &mine, root_b_at_a, proof).ok())
    }

    /// A receipt for entry `index` against the latest published checkpoint
    /// (`None` while the entry is not published yet).
    pub async fn receipt(&self, index: u64) -> Result<Option<tlog_core::Receipt>, StoreError> {
        let Some(published) = self.published.borrow().clone() else {
            return Ok(None);
        };
        if index >= published.size {
            return Ok(None);
        }
        let path = self
            .store
            .inclusion_proof(self.log, index, published.size)
            .await?;
        Ok(Some(tlog_core::Receipt {
            extra: None,
            index,
            path,
            note: published.note,
        }))
    }

    /// Merges the signature lines of `note` (verified by the caller) into
    /// the stored checkpoint of size `size` and root `root`, the latest;
    /// republishes it when it is the published size (or this node mirrors
    /// the log). Whether the stored note gained a line.
    pub async fn merge_cosignatures(
        &self,
        size: u64,
        root: tlog_core::Hash,
        note: &Note,
    ) -> Result<bool, StoreError> {
        let before = self.store.checkpoint(self.log, Some(size)).await?;
        match self
            .store
            .put_checkpoint(self.log, size, root, note.to_bytes())
            .await
        {
            Ok(_) => {}
            Err(StoreError::CheckpointConflict) => return Ok(false),
            Err(e) => return Err(e),
        }
        let after = self.store.checkpoint(self.log, Some(size)).await?;
        if before == after {
            return Ok(false);
        }
        // The policy decides (a mirror publishes what it stored; a
        // sequencer once the cosignatures meet its policy).
        self.publish_stored().await?;
        Ok(true)
    }

    /// The witnesses this log submits to.
    pub fn publisher(&self) -> &submit::Publish {
        &self.publish
    }

    /// The HTTP resources; `append_token` enables `POST add`; `lk_rate`
    /// bounds `lk/v1` requests per second per client address (bursts of
    /// twice that), when the server passes connection info.
    pub fn router(self: Arc<Self>, append_token: Option<String>, lk_rate: u32) -> Router {
        let state = Arc::new(Http {
            node: self,
            token: append_token,
        });
        let limiter = Arc::new(RateLimit::new(lk_rate));
        let lk = Router::new()
            .route("/inclusion", get(inclusion::<S>))
            .route("/consistency", get(consistency::<S>))
            .route("/receipt", get(receipt::<S>))
            .route("/checkpoint/{size}", get(checkpoint_at::<S>))
            .route("/evidence", get(evidence::<S>))
            .layer(axum::middleware::from_fn_with_state(limiter, rate_limit));
        Router::new()
            .route("/checkpoint", get(checkpoint::<S>))
            .route("/tile/{*path}", get(tile_resource::<S>))
            .nest("/lk/v1", lk)
            .route("/add", post(add::<S>))
            .layer(axum::middleware::map_response(cors))
            .with_state(state)
    }
}

/// A token bucket per client address (tlog.md §4.5: 200/s, bursts of 400).
pub struct RateLimit {
    buckets: rate_limit::Keyed<std::net::IpAddr>,
}

/// Addresses remembered at most; beyond, full buckets are forgotten.
const MAX_BUCKETS: usize = 10_000;

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimit {
            buckets: rate_limit::Keyed::new(
                rate_limit::Rate::per_second(rate, 2.0 * rate),
                MAX_BUCKETS,
            ),
        }
    }

    /// `Ok` to serve, or `Err(seconds to wait)`.
    fn take(&self, ip: std::net::IpAddr, now: std::time::Instant) -> Result<(), u64> {
        self.buckets
            .take(&ip, now)
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

async fn rate_limit(
    State(limit): State<Arc<RateLimit>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip {
        if let Err(wait) = limit.take(ip, std::time::Instant::now()) {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, wait.to_string())],
                "too many requests\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

struct Http<S> {
    node: Arc<LogNode<S>>,
    token: Option<String>,
}

async fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

const TEXT: &str = "text/plain; charset=utf-8";
const IMMUTABLE: &str = "public, max-age=604800, immutable";

fn text(cache: &'static str, body: String) -> Response {
    (
        [(header::CONTENT_TYPE, TEXT), (header::CACHE_CONTROL, cache)],
        body,
    )
        .into_response()
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response()
        }
        StoreError::OutOfRange(why) => not_found(&why),
        StoreError::NotActive(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the log is {status:?}: no appends until an operator acts (see the log)\n"),
        )
            .into_response(),
        other => (StatusCode::INTERNAL_SERVER_ERROR, format!("{other}\n")).into_response(),
    }
}

fn published_size<S>(http: &Http<S>) -> Option<u64> {
    http.node.published.borrow().as_ref().map(|p| p.size)
}

async fn checkpoint<S: LogStore>(State(http): State<Arc<Http<S>>>) -> Response {
    let note = http
        .node
        .published
        .borrow()
        .as_ref()
        .map(|p| p.note.clone());
    match note {
        Some(note) => (
            [
                (header::CONTENT_TYPE, TEXT),
                (header::CACHE_CONTROL, "no-store"),
            ],
            note,
        )
            .into_response(),
        None => not_found("no checkpoint published yet"),
    }
}

/// `lk/v1/checkpoint/<N>`: the retained checkpoint of exactly size N.
async fn checkpoint_at<S: LogStore>(
    State(http): State<Arc<Http<S>>>,
    Path(size): Path<String>,
) -> Response {
    let Some(size) = tlog_core::checkpoint::parse_decimal(&size) else {
        return not_found("not a canonical size");
    };
    if published_size(&http).is_none_or(|latest| size > latest) {
        return not_found("not published");
    }
    let node = &http.node;
    match node.store.checkpoint(node.log, Some(size)).await {
        Ok(Some(note)) => (
            [
                (header::CONTENT_TYPE, TEXT),
                (header::CACHE_CONTROL, "no-store"),
            ],
            note,
        )
            .into_response(),
        Ok(None) => not_found("no checkpoint of that size retained"),
        Err(e) => store_error(e),
    }
}

/// `lk/v1/evidence`: every evidence blob held, base64, one per line.
async fn evidence<S: LogStore>(State(http): State<Arc<Http<S>>>) -> Response {
    let node = &http.node;
    match node.store.evidence(node.log).await {
        Ok(blobs) => text(
            "no-store",
            blobs
                .iter()
                .map(|b| format!("{}\n", b64encode(b)))
                .collect(),
        ),
        Err(e) => store_error(e),
    }
}

async fn tile_resource<S: LogStore>(
    State(http): State<Arc<Http<S>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = TileId::parse(&format!("tile/{path}")) else {
        return not_found("not a canonical tile path");
    };
    let Some(size) = published_size(&http) else {
        return not_found("nothing published yet");
    };
    if !tile::exists(&id, size) {
        return not_found("not published");
    }
    let node = &http.node;
    let width = usize::from(id.width);
    let body = match id.level {
        Some(level) => match node.store.tile(node.log, level, id.index).await {
            Ok(Some(hashes)) if hashes.len() >= width => hashes[..width].concat(),
            Ok(_) => return not_found("not stored"),
            Err(e) => return store_error(e),
        },
        None => {
            let start = id.index * tile::WIDTH;
            match node
                .store
                .entries(node.log, start, start + width as u64)
                .await
            {
                Ok(entries) if entries.len() == width => {
                    let mut out = Vec::new();
                    for e in entries {
                        out.extend_from_slice(&(e.len() as u16).to_be_bytes());
                        out.extend_from_slice(&e);
                    }
                    if accepts_gzip(&headers) && out.len() >= 32 {
                        if let Some(gz) = gzip(&out) {
                            return (
                                [
                                    (header::CONTENT_TYPE, "application/octet-stream"),
                                    (header::CACHE_CONTROL, IMMUTABLE),
                                    (header::CONTENT_ENCODING, "gzip"),
                                ],
                                gz,
                            )
                                .into_response();
                        }
                    }
                    out
                }
                Ok(_) => return not_found("not stored"),
                Err(e) => return store_error(e),
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        body,
    )
        .into_response()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.split(';').next().map(str::trim) == Some("gzip"))
        })
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

#[derive(serde::Deserialize)]
struct ProofQuery {
    index: Option<String>,
    old: Option<String>,
    size: Option<String>,
}

/// A canonical decimal query parameter; `Err(())` is a 400.
fn decimal(value: &Option<String>) -> Result<Option<u64>, ()> {
    match value {
        None => Ok(None),
        Some(v) => tlog_core::checkpoint::parse_decimal(v).map(Some).ok_or(()),
    }
}

fn bad_decimal() -> Response {
    (StatusCode::BAD_REQUEST, "not a canonical decimal\n").into_response()
}

/// The request's target size: `size` if given (then the answer never
/// changes), else the latest published, with its cache header; `Err` (a
/// 404's reason) when it is not published.
fn target_size<S>(http: &Http<S>, size: Option<u64>) -> Result<(u64, &'static str), &'static str> {
    let latest = published_size(http).ok_or("nothing published yet")?;
    let n = size.unwrap_or(latest);
    if n > latest {
        return Err("not published");
    }
    Ok((
        n,
        if size.is_some() {
            IMMUTABLE
        } else {
            "no-store"
        },
    ))
}

/// `header` lines, then the proof's hashes, one base64 per line.
fn proof_body(
    header: String,
    proof: Result<Vec<tlog_core::merkle::Hash>, StoreError>,
    cache: &'static str,
) -> Response {
    match proof {
        Ok(proof) => {
            let mut body = header;
            for h in proof {
                body.push_str(&b64encode(&h));
                body.push('\n');
            }
            text(cache, body)
        }
        Err(e) => store_error(e),
    }
}

/// `lk/v1/receipt?index=I`: a tlog-proof against the latest published
/// checkpoint, cosignatures included (tlog.md §4.5).
async fn receipt<S: LogStore>(
    State(http): State<Arc<Http<S>>>,
    Query(q): Query<ProofQuery>,
) -> Response {
    let index = match decimal(&q.index) {
        Ok(Some(i)) => i,
        Err(()) => return bad_decimal(),
        Ok(None) => return (StatusCode::BAD_REQUEST, "index is required\n").into_response(),
    };
    match http.node.receipt(index).await {
        Ok(Some(receipt)) => text(
            "no-store",
            String::from_utf8_lossy(&receipt.encode()).into(),
        ),
        Ok(None) => not_found("not published"),
        Err(e) => store_error(e),
    }
}

async fn inclusion<S: LogStore>(
    State(http): State<Arc<Http<S>>>,
    Query(q): Query<ProofQuery>,
) -> Response {
    let (index, size) = match (decimal(&q.index), decimal(&q.size)) {
        (Ok(Some(i)), Ok(s)) => (i, s),
        (Err(()), _) | (_, Err(())) => return bad_decimal(),
        (Ok(None), _) => return (StatusCode::BAD_REQUEST, "index is required\n").into_response(),
    };
    let (n, cache) = match target_size(&http, size) {
        Ok(t) => t,
        Err(why) => return not_found(why),
    };
    if index >= n {
        return not_found("not published");
    }
    let node = &http.node;
    let proof = node.store.inclusion_proof(node.log, index, n).await;
    proof_body(format!("size {n}\nindex {index}\n"), proof, cache)
}

async fn consistency<S: LogStore>(
    State(http): State<Arc<Http<S>>>,
    Query(q): Query<ProofQuery>,
) -> Response {
    let (old, size) = match (decimal(&q.old), decimal(&q.size)) {
        (Ok(Some(o)), Ok(s)) => (o, s),
        (Err(()), _) | (_, Err(())) => return bad_decimal(),
        (Ok(None), _) => return (StatusCode::BAD_REQUEST, "old is required\n").into_response(),
    };
    let (n, cache) = match target_size(&http, size) {
        Ok(t) => t,
        Err(why) => return not_found(why),
    };
    if old > n {
        return (StatusCode::BAD_REQUEST, "old is above size\n").into_response();
    }
    let node = &http.node;
    let proof = node.store.consistency_proof(node.log, old, n).await;
    proof_body(format!("old {old}\nsize {n}\n"), proof, cache)
}

async fn add<S: LogStore>(
    State(http): State<Arc<Http<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &http.token else {
        return (
            StatusCode::NOT_FOUND,
            "this log takes no appends over HTTP\n",
        )
            .into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        presented.as_bytes(),
        token.as_bytes(),
    )) {
        return (StatusCode::UNAUTHORIZED, "bearer token required\n").into_response();
    }
    if body.len() > tlog_store::MAX_ENTRY {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "an entry is at most 65,535 bytes\n",
        )
            .into_response();
    }
    match http.node.append(body.to_vec()).await {
        Ok(a) => text("no-store", format!("{}\n", a.index)),
        Err(StoreError::NotActive(status)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("log is {status:?}\n"),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}
