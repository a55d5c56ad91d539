//! The LKTL/1 federation peer (tlog.md §7): a node's logs, served to and
//! followed from other nodes over TCP on one port.
//!
//! - **Connections.** The node accepts inbound connections and dials every
//!   configured peer (backoff 1 s → `redial_max`, ±20 % jitter). Both
//!   directions run the same code: identification lines (anything that is
//!   not a peer, `nc` included, gets the `ERR` line), Hellos (a nonce equal
//!   to ours is a self-connection: closed), then frames. Each connection
//!   has a writer task (which also sends Ping after 30 s of silence), and a
//!   reader that answers GetHeaders/GetData from signed state, routes
//!   answers to the requests waiting for them, and hands Inv and Evidence
//!   to handlers that run one at a time per node (so the store sees one
//!   import at a time).
//! - **Inv** (§7.6–§7.7). A note counts only if the origin's key signs it;
//!   a smaller or equal one is compared with our tree (same root: the peer
//!   is behind, it gets our Inv; another root: evidence); a larger one is
//!   taken with the Inv's proof when it starts at our verified size, else
//!   after a GetHeaders round with our locator. A mirror then fetches the
//!   missing entries from that peer, checks each chunk against the note
//!   before storing it, and stores the note last; the origin itself never
//!   takes a larger note of its own log: it means its store lost signed
//!   history, and it freezes.
//! - **Evidence** (§7.8): built when two notes of the origin's key fork,
//!   or received and verified; stored, the log set `Equivocated` (no more
//!   fetching, relaying or signing; what was verified is still served),
//!   and sent once to every peer, now and at every later Hello.
//! - **Misbehaviour** (§7.9): a malformed frame, a note or proof that does
//!   not verify, Data that is not what was asked: the connection is closed
//!   and the peer banned (inbound by IP, dialed by its address) for 10 min,
//!   doubling per repeat up to 24 h. Requests are rate limited per
//!   connection (Reject 4 with a retry time); inbound connections are
//!   capped in total and per IP. Three requests unanswered in a row close
//!   the connection (no ban); a log is announced at most five times a
//!   second.
//! - **Validator** (§7.6): a service's rules judge every verified chunk
//!   before its import; a refusal marks the log `Invalid` and yields the
//!   refused entry with its PATH under the origin's note.
//! - **Cosigning** (§5.3): mirror and validating cosigners cosign a size
//!   once every entry below it is stored (and validated); a witness judges
//!   a checkpoint that arrives by Inv exactly as an HTTP add-checkpoint
//!   and sends the cosigned note back. Peers are told of every *signed*
//!   checkpoint, so a publish policy can wait for their cosignatures.
//! - **Prefix follows** (§7.5–§7.6): every log under an origin prefix that
//!   one key signs under each origin's name, created when a verified Inv
//!   names it, bounded per prefix.

use rate_limit::{Bucket, Rate};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tlog_core::merkle::{self, Hash};
use tlog_core::note::{KeyType, Note, SignerKey, VerifierKey};
use tlog_core::sync::{self, Frame, FrameError, HelloLog, Ident, Message};
use tlog_core::{follow, Checkpoint, Evidence};
use tlog_store::{LogId, LogStore, Status, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::LogNode;

/// The frame size this side accepts.
pub const MAX_FRAME: u32 = sync::DEFAULT_MAX_FRAME;
/// GetData requests a mirror keeps in flight to one peer.
const FETCH_WINDOW: usize = 4;
/// Requests unanswered in a row (each within `request_timeout`) before
/// the connection is closed (tlog.md §7.9).
const MAX_UNANSWERED: u32 = 3;
/// The least time between two announcements of one log (≤ 5 Inv per log
/// per second, tlog.md §7.9).
const INV_SPACING: Duration = Duration::from_millis(200);

/// How old this node's cosignature on a checkpoint must be before the
/// sequencer's refresh of that same checkpoint (an idle log, tlog.md §5.2)
/// makes it cosign again. Timestamps are whole seconds, so this is the
/// finest refresh there is; it also bounds what a peer claiming to be the
/// sequencer can make this node sign.
pub const RECOSIGN_AFTER: Duration = Duration::from_secs(1);

/// Which Inv [`inv_to`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    /// Our checkpoint, to a peer that showed a smaller one.
    IfBehind,
    /// Our checkpoint whatever the peer showed (at connection, and when
    /// cosignatures merged into it travel on).
    Always,
    /// The sequencer's refresh of an idle log: the latest checkpoint to
    /// every peer, with the log's signatures only. A peer holding it (the
    /// Inv's `old_size` is its size) takes that as the one signal to cosign
    /// it anew. Nothing else looks like it: a first announcement has a
    /// smaller `old_size`, and relays carry the merged cosignatures, so
    /// renewals cannot feed each other: one round per refresh.
    Refresh,
}

/// Limits and timers (tlog.md §7.9 defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Inbound connections in total.
    pub max_inbound: usize,
    /// Inbound connections per source address.
    pub max_inbound_per_ip: usize,
    /// Requests per second per connection (token bucket), GetData aside.
    pub requests_per_sec: u32,
    /// The bucket's size.
    pub burst: u32,
    /// Entries per second a connection may ask for with GetData (bursts
    /// of twice that). tlog.md §7.9's 20 requests/s would cap a mirror at
    /// 20,480 entries/s, a fifth of §9's catch-up target, so GetData is
    /// metered in entries instead.
    pub entries_per_sec: u32,
    /// The first ban; doubled per repeat.
    pub ban: Duration,
    /// The longest ban.
    pub ban_max: Duration,
    /// The longest wait between dials of a peer.
    pub redial_max: Duration,
    /// Identification line and Hello.
    pub handshake: Duration,
    /// A request unanswered this long failed.
    pub request_timeout: Duration,
    /// Ping after this long without sending.
    pub ping_after: Duration,
    /// Close after this long without receiving.
    pub idle_close: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inbound: 64,
            max_inbound_per_ip: 4,
            requests_per_sec: 20,
            burst: 40,
            entries_per_sec: 250_000,
            ban: Duration::from_secs(600),
            ban_max: Duration::from_secs(24 * 3600),
            redial_max: Duration::from_secs(300),
            handshake: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            ping_after: Duration::from_secs(30),
            idle_close: Duration::from_secs(90),
        }
    }
}

/// How a node takes part in the federation.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its name on the wire.
    pub name: String,
    /// Peers to dial (`host:port`).
    pub peers: Vec<String>,
    /// Limits.
    pub limits: Limits,
}

/// LKTL/1 is plaintext (everything on it is signed and verified, tlog.md
/// §7), so a listener off loopback is an explicit choice: `danger_plaintext`
/// (a daemon's `--danger-plaintext`). The error names the setting.
pub fn check_sync_listen(
    sync_listen: std::net::SocketAddr,
    danger_plaintext: bool,
) -> Result<(), String> {
    if sync_listen.ip().is_loopback() || danger_plaintext {
        Ok(())
    } else {
        Err(format!("--sync-listen {sync_listen} is not loopback: LKTL/1 is plaintext (everything on it is signed), so a public sync listener needs --danger-plaintext"))
    }
}

/// A service's rules applied to a followed log's entries before they are
/// stored (tlog.md §7.6): a member of a federation refuses to mirror (and
/// so to cosign) a history that is well-formed as a log but invalid for
/// the service. `check` sees each verified chunk in log order before its
/// import and may stage state; `committed` follows a successful import.
///
/// A refusal is the origin's fault, not the peer's: the chunk was proven
/// part of a note the origin's key signed. The node imports the entries
/// before the refused one, marks the log `Invalid` (no more fetching,
/// relaying or cosigning) and hands [`Validator::invalid`] the refused
/// entry and the ones it was judged against, each with its PATH under that
/// signed note, so the service can keep and serve evidence anyone can check.
pub trait Validator: Send + Sync {
    /// Judges entries `[start, start + entries.len())`.
    fn check(&self, start: u64, entries: &[Vec<u8>]) -> Result<(), Refused>;
    /// The checked chunk is durable up to `end`.
    fn committed(&self, end: u64);
    /// Fetches what [`Validator::check`] needs beyond the entries (side
    /// data LKTL/1 does not carry, tlog.md open question 8: a keyserver
    /// mirror's UID blobs) for `[start, start + entries.len())`. Runs on
    /// the blocking pool before `check`. An error is transient (a service
    /// is unreachable): this sync stops and is retried; nothing is marked.
    fn prepare(&self, _start: u64, _entries: &[Vec<u8>]) -> Result<(), String> {
        Ok(())
    }
    /// The origin's key for notes from now on, when a committed entry
    /// changed it (a log-resident key schedule, tlog.md §7.6: a keyserver's
    /// rotation). Read after each committed chunk; `None`: unchanged.
    fn log_key(&self) -> Option<VerifierKey> {
        None
    }
    /// The log is being marked `Invalid`; `evidence` proves why. Runs on
    /// the blocking pool; the status is stored only once this kept the
    /// evidence (`Ok`).
    fn invalid(&self, evidence: InvalidLog) -> Result<(), String>;
}

/// Why a [`Validator`] refused a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The first entry that breaks the rules.
    pub index: u64,
    /// The rule it breaks.
    pub reason: String,
    /// Earlier entries it was judged against (at most 64 are proven).
    pub related: Vec<u64>,
}

/// Most related entries proven in an [`InvalidLog`].
pub const MAX_RELATED: usize = 64;

/// One entry with its PATH under a signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEntry {
    /// Its index.
    pub index: u64,
    /// Its bytes.
    pub entry: Vec<u8>,
    /// PATH(index, the note's size).
    pub path: Vec<Hash>,
}

/// What a follower holds when it marks a log `Invalid`: the origin's
/// signed note covering the refused entry, and that entry (last) and the
/// earlier ones it was judged against, each with its PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLog {
    /// The rule broken.
    pub reason: String,
    /// The origin's signed note (cosignatures kept).
    pub note: Vec<u8>,
    /// Related entries in index order, then the refused one.
    pub entries: Vec<ProvenEntry>,
}

/// One log the node serves (its own) or follows (a mirror).
#[derive(Clone)]
pub struct Follow {
    /// The origin's key: every note of the log must carry its signature.
    pub key: VerifierKey,
    /// The origin's earlier keys (a log-resident key schedule, tlog.md
    /// §7.6): notes they signed, of the sizes before a rotation, are the
    /// origin's too, so a peer that holds one is not taken for a liar.
    pub previous: Vec<VerifierKey>,
    /// Witnesses whose cosignatures are kept on notes taken from peers
    /// (all other cosignatures are dropped before storing or relaying).
    pub witnesses: Vec<VerifierKey>,
    /// This node's mirror cosigner key (tlog.md §5.3): it cosigns a size
    /// only once it has verified and durably stored every entry below it.
    pub cosigner: Option<Arc<SignerKey>>,
    /// The service's rules, checked before entries are stored.
    pub validator: Option<Arc<dyn Validator>>,
    /// This node's validating cosigner key (tlog.md §5.3, distinct from
    /// any witness or mirror key): it cosigns a size only once every entry
    /// below it is durably stored and passed `validator` (required).
    pub validating: Option<Arc<SignerKey>>,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("key", &self.key)
            .field("witnesses", &self.witnesses)
            .field("cosigner", &self.cosigner.is_some())
            .field("validator", &self.validator.is_some())
            .field("validating", &self.validating.is_some())
            .finish()
    }
}

/// Every log whose origin starts with `prefix` and whose notes `key`
/// signs under the origin's own name (tlog.md §3.4, §7.6): one key, one
/// derived vkey per origin, as `lssd` signs its per-client logs. Such
/// logs are created in `store` as peers announce them (in a Hello or an
/// Inv whose note the derived key signs) and mirrored like a [`Follow`].
pub struct PrefixFollow<S> {
    /// The origin prefix (e.g. `lss.example.org/ns/`).
    pub prefix: String,
    /// The Ed25519 key; its name is ignored (each origin's vkey is
    /// derived with the origin as the name).
    pub key: VerifierKey,
    /// Where the mirrored logs are created.
    pub store: Arc<S>,
    /// Witnesses whose cosignatures are kept.
    pub witnesses: Vec<VerifierKey>,
    /// This node's mirror cosigner key, if it cosigns these logs.
    pub cosigner: Option<Arc<SignerKey>>,
    /// The most logs created under this prefix (a bound on what peers
    /// can make this node store).
    pub max_logs: usize,
}

impl<S> PrefixFollow<S> {
    /// The vkey of `origin` if it is under the prefix.
    fn key_for(&self, origin: &str) -> Option<VerifierKey> {
        if !origin.starts_with(&self.prefix) || origin.len() == self.prefix.len() {
            return None;
        }
        VerifierKey::new(origin, KeyType::Ed25519, *self.key.key()).ok()
    }
}

/// What a node does on its sync port beyond the logs it serves or
/// follows whole.
pub struct Roles<S> {
    /// Logs followed by origin prefix.
    pub prefixes: Vec<PrefixFollow<S>>,
    /// A witness (tlog.md §5.3): a checkpoint of a log it witnesses that
    /// arrives by `Inv` is judged and recorded exactly as an HTTP
    /// add-checkpoint (the Inv's old size and proof are the request's),
    /// and the cosigned note goes back to the peer.
    pub witness: Option<Arc<crate::witness::Witness<S>>>,
}

impl<S> Default for Roles<S> {
    fn default() -> Self {
        Roles {
            prefixes: Vec::new(),
            witness: None,
        }
    }
}

/// One log inside the peer.
struct Log<S> {
    node: Arc<LogNode<S>>,
    /// The origin's key (a validator may replace it, [`Validator::log_key`]).
    key: Mutex<VerifierKey>,
    /// Keys notes are checked with: the origin's and the witnesses'.
    keys: Mutex<Vec<VerifierKey>>,
    /// This node's mirror cosigner key, if it cosigns this log.
    cosigner: Option<Arc<SignerKey>>,
    /// The service's rules for this log's entries.
    validator: Option<Arc<dyn Validator>>,
    /// This node's validating cosigner key, if it validates this log.
    validating: Option<Arc<SignerKey>>,
    /// One Inv/Evidence handler at a time for this log.
    sync: tokio::sync::Mutex<()>,
    /// Evidence digests already sent to every connected peer.
    evidence_sent: Mutex<HashSet<Hash>>,
}

/// Nodes below `end` of a chunk being refused: stored tiles below
/// `stored`, the chunk's leaf hashes from there.
struct Held<'a, T> {
    tiles: &'a T,
    stored: u64,
    leaves: &'a [Hash],
}

impl<T: merkle::NodeSource<Error = StoreError>> merkle::NodeSource for Held<'_, T> {
    type Error = StoreError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let (a, b) = (index << level, (index + 1) << level);
        if b <= self.stored {
            return self.tiles.node(level, index);
        }
        if a >= self.stored {
            let (lo, hi) = ((a - self.stored) as usize, (b - self.stored) as usize);
            let leaves = self
                .leaves
                .get(lo..hi)
                .ok_or_else(|| StoreError::OutOfRange(format!("node {level}/{index}")))?;
            let mut tree = merkle::CompactRange::new();
            for leaf in leaves {
                tree.push(*leaf);
            }
            return Ok(tree.root());
        }
        // Straddles the stored size: its two halves.
        let (l, r) = (
            self.node(level - 1, index * 2)?,
            self.node(level - 1, index * 2 + 1)?,
        );
        Ok(merkle::node_hash(&l, &r))
    }
}

/// A failure on one connection.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    /// Misbehaviour: ban.
    #[error("misbehaviour: {0}")]
    Misbehaved(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Ban {
    until: Instant,
    count: u32,
}

/// The federation peer of a node's logs, on one sync port.
pub struct Peer<S> {
    /// The logs served or followed: those configured, and those created
    /// under a prefix follow as peers announce them.
    logs: std::sync::RwLock<HashMap<LogId, Arc<Log<S>>>>,
    prefixes: Vec<PrefixFollow<S>>,
    witness: Option<Arc<crate::witness::Witness<S>>>,
    config: Config,
    nonce: u64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    inbound: Mutex<HashMap<IpAddr, usize>>,
    bans: Mutex<HashMap<String, Ban>>,
}

/// One connection, as the handlers see it.
struct Conn {
    /// The peer's node name.
    name: String,
    /// What a ban of this peer is keyed on.
    ban_key: String,
    out: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<u32, oneshot::Sender<Message>>>,
    next_id: AtomicU32,
    /// Per common log (its Hello named the origin), the largest size the
    /// peer showed us.
    announced: Mutex<HashMap<LogId, u64>>,
    /// The origin prefixes its Hello said it follows: a log of ours under
    /// one becomes common when it appears here later.
    prefixes: Vec<String>,
    /// The common logs its Hello said it sequences: only their refreshes
    /// renew our cosignatures.
    sequences: HashSet<LogId>,
    kill: Notify,
    /// Closed, or asked to close: jobs and requests on it stop at once.
    killed: AtomicBool,
    /// Requests unanswered in a row.
    unanswered: AtomicU32,
}

impl Conn {
    /// The size the peer showed for `log`; `None` if it does not serve or
    /// follow it.
    fn announced(&self, log: &LogId) -> Option<u64> {
        self.announced.lock().ok()?.get(log).copied()
    }

    /// Marks `log` as common with this peer (it announced one we follow
    /// under a prefix).
    fn saw_log(&self, log: LogId) {
        if let Ok(mut announced) = self.announced.lock() {
            announced.entry(log).or_insert(0);
        }
    }

    fn saw(&self, log: &LogId, size: u64) {
        if let Ok(mut announced) = self.announced.lock() {
            if let Some(known) = announced.get_mut(log) {
                *known = (*known).max(size);
            }
        }
    }

    async fn send(&self, id: u32, message: Message) {
        let _ = self.out.send(Frame { id, message }).await;
    }

    /// Sends a request and waits for its answer, honouring rate-limit
    /// rejections (a few times).
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message, PeerError> {
        for _ in 0..5 {
            let id = loop {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                if id != 0 {
                    break id;
                }
            };
            let (tx, rx) = oneshot::channel();
            self.pending.lock().expect("lock").insert(id, tx);
            // A connection that closed already: nobody would answer (or
            // clear `pending` again), so do not wait for the timeout.
            if self.killed.load(Ordering::SeqCst) {
                self.pending.lock().expect("lock").remove(&id);
                return Err(PeerError::Protocol("connection closed".into()));
            }
            self.send(id, message.clone()).await;
            let answer = tokio::time::timeout(timeout, rx).await;
            self.pending.lock().expect("lock").remove(&id);
            match answer {
                Ok(Ok(Message::Reject {
                    code: 4 | 5,
                    retry_after_ms,
                    ..
                })) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(
                        retry_after_ms.clamp(50, 10_000),
                    )))
                    .await;
                }
                Ok(Ok(answer)) => {
                    self.unanswered.store(0, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(_)) => return Err(PeerError::Protocol("connection closed".into())),
                Err(_) => {
                    // Three in a row: the peer is gone or stuck (§7.9).
                    if self.unanswered.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_UNANSWERED {
                        tracing::info!(peer = %self.name, "three requests unanswered: closing");
                        self.close();
                    }
                    return Err(PeerError::Protocol("request unanswered".into()));
                }
            }
        }
        Err(PeerError::Protocol("rate limited by the peer".into()))
    }

    fn close(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

/// A task aborted when its handle is dropped (a fetch that stops early
/// leaves no request behind).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a connection hands to [`Peer::handle`].
enum Job {
    Inv {
        note: Vec<u8>,
        old_size: u64,
        proof: Vec<Hash>,
    },
    Evidence(Vec<u8>),
}

/// A value for jitter and nonces: time-based (this is the I/O edge).
fn entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    // splitmix64, so nearby times give unrelated values.
    let mut z = nanos.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// A note that verified: only the lines of known keys kept.
struct Verified {
    note: Note,
    checkpoint: Checkpoint,
    /// The note as the peer sent it (checked again when the keys change).
    raw: Vec<u8>,
}

impl<S: LogStore> Peer<S> {
    /// The peer of a node serving or following `logs`; [`Peer::run`]
    /// starts it.
    pub fn new(config: Config, logs: Vec<(Arc<LogNode<S>>, Follow)>) -> Arc<Self> {
        Self::with_roles(config, logs, Roles::default())
    }

    /// The same, with the prefix follows and the witness of `roles`.
    pub fn with_roles(
        config: Config,
        logs: Vec<(Arc<LogNode<S>>, Follow)>,
        roles: Roles<S>,
    ) -> Arc<Self> {
        let logs = logs
            .into_iter()
            .map(|(node, follow)| {
                let log = Log::new(node, follow);
                (log.node.log_id(), Arc::new(log))
            })
            .collect();
        Arc::new(Peer {
            logs: std::sync::RwLock::new(logs),
            prefixes: roles.prefixes,
            witness: roles.witness,
            config,
            nonce: entropy(),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            inbound: Mutex::new(HashMap::new()),
            bans: Mutex::new(HashMap::new()),
        })
    }

    /// One log, if served or followed.
    fn log(&self, id: &LogId) -> Option<Arc<Log<S>>> {
        self.logs.read().ok()?.get(id).cloned()
    }

    /// Every log, in no particular order.
    fn all_logs(&self) -> Vec<Arc<Log<S>>> {
        self.logs
            .read()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The logs this node follows, by origin (prefix-followed included).
    pub fn origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self
            .all_logs()
            .iter()
            .map(|l| l.node.origin().to_string())
            .collect();
        origins.sort();
        origins
    }

    /// The log of `origin` if a prefix follow covers it: found, or created
    /// (and its announcer started) within the prefix's bound.
    async fn log_under_prefix(self: &Arc<Self>, origin: &str) -> Option<Arc<Log<S>>> {
        let id = tlog_core::log_id(origin);
        if let Some(log) = self.log(&id) {
            return Some(log);
        }
        let prefix = self.prefixes.iter().find(|p| p.key_for(origin).is_some())?;
        let key = prefix.key_for(origin)?;
        let held = self
            .all_logs()
            .iter()
            .filter(|l| l.node.origin().starts_with(&prefix.prefix))
            .count();
        if held >= prefix.max_logs {
            tracing::warn!(%origin, prefix = %prefix.prefix, max = prefix.max_logs,
                "not following another log under the prefix: at its limit");
            return None;
        }
        let node = match LogNode::mirror(prefix.store.clone(), origin).await {
            Ok(node) => node,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "cannot create the log");
                return None;
            }
        };
        let log = Arc::new(Log::new(
            node,
            Follow {
                key,
                previous: Vec::new(),
                witnesses: prefix.witnesses.clone(),
                cosigner: prefix.cosigner.clone(),
                validator: None,
                validating: None,
            },
        ));
        {
            let mut logs = self.logs.write().ok()?;
            if let Some(raced) = logs.get(&id) {
                return Some(raced.clone());
            }
            logs.insert(id, log.clone());
        }
        tracing::info!(%origin, prefix = %prefix.prefix, "following a log under the prefix");
        tokio::spawn(self.clone().announce(log.clone()));
        Some(log)
    }

    /// Accepts on `listener`, dials the configured peers, and announces
    /// every newly signed checkpoint, until the listener fails.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        for peer in self.config.peers.clone() {
            tokio::spawn(self.clone().dial(peer));
        }
        for log in self.all_logs() {
            tokio::spawn(self.clone().announce(log));
        }
        loop {
            let Ok((stream, addr)) = listener.accept().await else {
                continue;
            };
            let ip = addr.ip();
            if self.banned(&ip.to_string()) {
                tracing::debug!(%addr, "refused: banned");
                continue;
            }
            {
                let mut inbound = self.inbound.lock().expect("lock");
                let total: usize = inbound.values().sum();
                let mine = inbound.entry(ip).or_insert(0);
                if total >= self.config.limits.max_inbound
                    || *mine >= self.config.limits.max_inbound_per_ip
                {
                    tracing::debug!(%addr, "refused: too many connections");
                    continue;
                }
                *mine += 1;
            }
            let peer = self.clone();
            tokio::spawn(async move {
                if let Err(e) = peer.clone().connection(stream, true, ip.to_string()).await {
                    tracing::debug!(%addr, error = %e, "inbound sync connection closed");
                }
                let mut inbound = peer.inbound.lock().expect("lock");
                if let Some(n) = inbound.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        inbound.remove(&ip);
                    }
                }
            });
        }
    }

    /// Keeps a connection to `addr`, redialing with backoff.
    async fn dial(self: Arc<Self>, addr: String) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if let Some(wait) = self.ban_left(&addr) {
                tokio::time::sleep(wait).await;
                continue;
            }
            let started = Instant::now();
            let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr));
            match connect.await {
                Ok(Ok(stream)) => {
                    if let Err(e) = self.clone().connection(stream, false, addr.clone()).await {
                        tracing::debug!(peer = %addr, error = %e, "sync connection closed");
                    }
                }
                Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "dial failed"),
                Err(_) => tracing::debug!(peer = %addr, "dial timed out"),
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            let jitter = 0.8 + (entropy() % 401) as f64 / 1000.0;
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(self.config.limits.redial_max);
        }
    }

    fn ban_left(&self, key: &str) -> Option<Duration> {
        let bans = self.bans.lock().expect("lock");
        let ban = bans.get(key)?;
        ban.until.checked_duration_since(Instant::now())
    }

    fn banned(&self, key: &str) -> bool {
        self.ban_left(key).is_some()
    }

    /// Whether `key` (an IP, or a dialed address) is banned now.
    pub fn is_banned(&self, key: &str) -> bool {
        self.banned(key)
    }

    fn misbehaved(&self, conn: &Conn, why: &str) {
        let mut bans = self.bans.lock().expect("lock");
        let ban = bans.entry(conn.ban_key.clone()).or_insert(Ban {
            until: Instant::now(),
            count: 0,
        });
        let length = self
            .config
            .limits
            .ban
            .saturating_mul(1 << ban.count.min(16))
            .min(self.config.limits.ban_max);
        ban.count += 1;
        ban.until = Instant::now() + length;
        tracing::warn!(peer = %conn.name, addr = %conn.ban_key, seconds = length.as_secs(), reason = why,
            "banned peer");
        conn.close();
    }

    /// One connection, either direction, until it closes.
    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        inbound: bool,
        ban_key: String,
    ) -> Result<(), PeerError> {
        let _ = stream.set_nodelay(true);
        let limits = self.config.limits.clone();
        let ident = Ident {
            software: format!("tlogd/{}", env!("CARGO_PKG_VERSION")),
            node: self.config.name.clone(),
            logs: self.all_logs().len() as u64,
        };
        stream.write_all(&ident.to_line()).await?;
        let mut buf = Vec::with_capacity(512);
        let line = tokio::time::timeout(limits.handshake, read_ident(&mut stream, &mut buf)).await;
        match line {
            Ok(Ok(())) => {}
            // Not a peer, or too slow: say what this port is, and close.
            _ if inbound => {
                let mut logs: Vec<(String, u64, Hash)> = self
                    .all_logs()
                    .iter()
                    .filter_map(|l| {
                        let (size, root) = l.node.published_head()?;
                        Some((l.node.origin().to_string(), size, root))
                    })
                    .collect();
                logs.sort();
                stream.write_all(&sync::err_line(&logs)).await?;
                stream.shutdown().await?;
                return Ok(());
            }
            _ => return Err(PeerError::Protocol("not an LKTL/1 peer".into())),
        }
        // Logs witnessed but not held: named with the size last cosigned.
        let mut witnessed = Vec::new();
        if let Some(w) = &self.witness {
            for origin in w.origins() {
                if self.log(&tlog_core::log_id(&origin)).is_none() {
                    let size = w.record(&origin).await?.map_or(0, |(size, _)| size);
                    witnessed.push(HelloLog {
                        prefix: false,
                        origin,
                        roles: 4,
                        size,
                    });
                }
            }
        }
        let hello = Message::Hello {
            version: 1,
            nonce: self.nonce,
            max_frame: MAX_FRAME,
            max_inflight: 8,
            node_name: self.config.name.clone(),
            logs: self
                .prefixes
                .iter()
                .map(|p| HelloLog {
                    prefix: true,
                    origin: p.prefix.clone(),
                    roles: 2,
                    size: 0,
                })
                .chain(self.all_logs().iter().map(|l| HelloLog {
                    prefix: false,
                    origin: l.node.origin().to_string(),
                    roles: if l.node.is_sequencer() { 1 } else { 2 },
                    size: l.node.signed_head().map_or(0, |(size, _)| size),
                }))
                .chain(witnessed)
                .take(sync::MAX_HELLO_LOGS)
                .collect(),
        };
        stream
            .write_all(
                &Frame {
                    id: 0,
                    message: hello,
                }
                .encode(),
            )
            .await?;
        let (mut reader, writer) = stream.into_split();
        let first = tokio::time::timeout(limits.handshake, read_frame(&mut reader, &mut buf)).await;
        let (name, nonce, theirs) = match first {
            Ok(Ok(Frame {
                message:
                    Message::Hello {
                        node_name,
                        nonce,
                        logs,
                        ..
                    },
                ..
            })) => (node_name, nonce, logs),
            Ok(Ok(_)) => return Err(PeerError::Protocol("the first frame is not Hello".into())),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(PeerError::Protocol("no Hello in time".into())),
        };
        if nonce == self.nonce {
            return Err(PeerError::Protocol("connected to itself".into()));
        }
        // Common logs: those both name, and ours under their prefixes
        // (they hold nothing of them yet). A log they name under one of
        // our prefixes is created only when an Inv of it verifies: a name
        // in a Hello proves nothing.
        let mut common: HashMap<LogId, u64> = HashMap::new();
        for l in theirs.iter().filter(|l| !l.prefix) {
            let id = tlog_core::log_id(&l.origin);
            if self.log(&id).is_some() {
                common.insert(id, l.size);
            }
        }
        for l in theirs.iter().filter(|l| l.prefix) {
            for log in self.all_logs() {
                if log.node.origin().starts_with(&l.origin) {
                    common.entry(log.node.log_id()).or_insert(0);
                }
            }
        }
        let (out, rx) = mpsc::channel(256);
        let conn = Arc::new(Conn {
            name: name.clone(),
            ban_key,
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            announced: Mutex::new(common),
            prefixes: theirs
                .iter()
                .filter(|l| l.prefix)
                .map(|l| l.origin.clone())
                .collect(),
            sequences: theirs
                .iter()
                .filter(|l| !l.prefix && l.roles & 1 != 0)
                .map(|l| tlog_core::log_id(&l.origin))
                .collect(),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
            unanswered: AtomicU32::new(0),
        });
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().expect("lock").insert(id, conn.clone());
        tracing::info!(peer = %name, addr = %conn.ban_key, "sync peer connected");
        let done = Arc::new(Notify::new());
        let mut writer = tokio::spawn(write_loop(writer, rx, limits.ping_after, done.clone()));
        // For each common log, our latest checkpoint, or the evidence.
        for log in self.all_logs() {
            let log = &log;
            if conn.announced(&log.node.log_id()).is_none() {
                continue;
            }
            let state = log.node.store().state(log.node.log_id()).await?;
            if state.status == Status::Equivocated {
                for blob in log.node.store().evidence(log.node.log_id()).await? {
                    conn.send(0, Message::Evidence(blob)).await;
                }
            } else {
                inv_to(log, &conn, Announce::Always).await;
            }
        }
        // For each log we witness that the peer serves or follows, our
        // latest cosigned note: it learns the size we hold (the old size
        // of its next Inv to us) and keeps our cosignature.
        if let Some(w) = &self.witness {
            for l in theirs
                .iter()
                .filter(|l| !l.prefix && w.witnesses(&l.origin))
            {
                if self.log(&tlog_core::log_id(&l.origin)).is_none() {
                    self.send_record(&conn, w, &l.origin).await;
                }
            }
        }
        let result = self.read_loop(&conn, reader, buf).await;
        self.conns.lock().expect("lock").remove(&id);
        // Jobs still queued for it, and requests they would make, end now
        // rather than holding their log's sync lock until a timeout.
        conn.killed.store(true, Ordering::SeqCst);
        conn.pending.lock().expect("lock").clear();
        done.notify_one();
        if tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        if let Err(PeerError::Misbehaved(why)) = &result {
            self.misbehaved(&conn, why);
        }
        tracing::info!(peer = %name, "sync peer disconnected");
        result
    }

    async fn read_loop(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        mut buf: Vec<u8>,
    ) -> Result<(), PeerError> {
        let limits = &self.config.limits;
        let request_rate = Rate::per_second(
            f64::from(limits.requests_per_sec.max(1)),
            f64::from(limits.burst),
        );
        let entry_rate = Rate::per_second(
            f64::from(limits.entries_per_sec.max(1)),
            f64::from(limits.entries_per_sec.saturating_mul(2)),
        );
        let mut bucket = Bucket::full(request_rate, Instant::now());
        let mut entries = Bucket::full(entry_rate, Instant::now());
        loop {
            let frame = tokio::select! {
                frame = tokio::time::timeout(limits.idle_close, read_frame(&mut reader, &mut buf)) => frame,
                _ = conn.kill.notified() => return Ok(()),
            };
            if conn.killed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let frame = match frame {
                Err(_) => return Err(PeerError::Protocol("silent for too long".into())),
                Ok(Err(PeerError::Misbehaved(why))) => {
                    let code = if why.contains("over the limit") { 3 } else { 1 };
                    conn.send(
                        0,
                        Message::Reject {
                            code,
                            retry_after_ms: 0,
                            reason: why.clone(),
                        },
                    )
                    .await;
                    return Err(PeerError::Misbehaved(why));
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(frame)) => frame,
            };
            let metered = match &frame.message {
                Message::GetData { count, .. } => {
                    Some((&mut entries, f64::from(*count), entry_rate))
                }
                Message::GetHeaders { .. }
                | Message::Inv { .. }
                | Message::Evidence(_)
                | Message::Unknown(_) => Some((&mut bucket, 1.0, request_rate)),
                _ => None,
            };
            if let Some((bucket, cost, rate)) = metered {
                if let Err(wait) = bucket.take(cost, rate, Instant::now()) {
                    let wait = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
                    if frame.id != 0 {
                        conn.send(
                            frame.id,
                            Message::Reject {
                                code: 4,
                                retry_after_ms: wait,
                                reason: "too many requests".into(),
                            },
                        )
                        .await;
                    }
                    continue;
                }
            }
            match frame.message {
                Message::Ping(n) => conn.send(0, Message::Pong(n)).await,
                Message::Pong(_) | Message::Hello { .. } => {}
                m @ (Message::Headers { .. }
                | Message::Data { .. }
                | Message::NotFound { .. }
                | Message::Reject { .. }) => {
                    let waiting = self.pending_take(conn, frame.id);
                    match waiting {
                        Some(tx) => {
                            let _ = tx.send(m);
                        }
                        None => {
                            if let Message::Reject { code, reason, .. } = &m {
                                tracing::debug!(peer = %conn.name, code, %reason, "rejected");
                            }
                        }
                    }
                }
                m @ (Message::GetHeaders { log_id, .. } | Message::GetData { log_id, .. }) => {
                    let answer = match self.log(&log_id) {
                        Some(log) => respond(&log.node, m).await,
                        None => Some(Message::NotFound {
                            log_id,
                            what: 1,
                            have_size: 0,
                        }),
                    };
                    if let Some(answer) = answer {
                        conn.send(frame.id, answer).await;
                    }
                }
                Message::Inv {
                    log_id,
                    note,
                    old_size,
                    proof,
                } => {
                    // Other origins are not followed: ignored (rate counted).
                    // One under a prefix we follow is taken if the derived
                    // key signs it.
                    let log = match self.log(&log_id) {
                        Some(log) => Some(log),
                        None => match self.prefix_origin(log_id, &note) {
                            Some(origin) => self.log_under_prefix(&origin).await,
                            None => None,
                        },
                    };
                    if log.is_none() {
                        if let Some(w) = self.witnessed_origin(log_id, &note) {
                            let request = tlog_core::witness::AddCheckpoint {
                                old: old_size,
                                proof,
                                note,
                            };
                            tokio::spawn(self.clone().witness_inv(conn.clone(), w, request));
                            continue;
                        }
                    }
                    if let Some(log) = log {
                        conn.saw_log(log_id);
                        let job = Job::Inv {
                            note,
                            old_size,
                            proof,
                        };
                        tokio::spawn(self.clone().handle(log, conn.clone(), job));
                    }
                }
                Message::Evidence(blob) => {
                    // Routed by the origin it names; other logs' ignored.
                    let origin = Evidence::origin(&blob);
                    if let Some(log) = origin.and_then(|o| self.log(&tlog_core::log_id(&o))) {
                        tokio::spawn(self.clone().handle(log, conn.clone(), Job::Evidence(blob)));
                    }
                }
                Message::Unknown(_) => {
                    conn.send(
                        frame.id,
                        Message::Reject {
                            code: 2,
                            retry_after_ms: 0,
                            reason: "unknown message type".into(),
                        },
                    )
                    .await
                }
            }
        }
    }

    /// The witness, if it witnesses the log of this Inv's note (and the
    /// note's origin is that log's).
    fn witnessed_origin(
        &self,
        log_id: LogId,
        note: &[u8],
    ) -> Option<Arc<crate::witness::Witness<S>>> {
        let w = self.witness.as_ref()?;
        let parsed = Note::parse(note).ok()?;
        let origin = parsed.text().split('\n').next()?;
        (tlog_core::log_id(origin) == log_id && w.witnesses(origin)).then(|| w.clone())
    }

    /// Our latest cosigned note of `origin` to `conn`, as an Inv.
    async fn send_record(&self, conn: &Conn, w: &crate::witness::Witness<S>, origin: &str) {
        if let Ok(Some((_, note))) = w.record(origin).await {
            conn.send(
                0,
                Message::Inv {
                    log_id: tlog_core::log_id(origin),
                    note,
                    old_size: 0,
                    proof: Vec::new(),
                },
            )
            .await;
        }
    }

    /// A witnessed log's checkpoint by Inv (tlog.md §5.3): cosign as over
    /// HTTP and send the cosigned note back; on a size conflict, send our
    /// record so the peer proves from the size we hold.
    async fn witness_inv(
        self: Arc<Self>,
        conn: Arc<Conn>,
        w: Arc<crate::witness::Witness<S>>,
        request: tlog_core::witness::AddCheckpoint,
    ) {
        let origin = Note::parse(&request.note)
            .ok()
            .and_then(|n| n.text().split('\n').next().map(str::to_string))
            .unwrap_or_default();
        match w.cosign(request, crate::now_secs()).await {
            Ok((_, cosigned)) => {
                conn.send(
                    0,
                    Message::Inv {
                        log_id: tlog_core::log_id(&origin),
                        note: cosigned.to_bytes(),
                        old_size: 0,
                        proof: Vec::new(),
                    },
                )
                .await;
            }
            Err(r) if r.status == 409 => self.send_record(&conn, &w, &origin).await,
            // Malformed, or not signed by the log's key: the peer's fault.
            Err(r) if r.status == 400 || r.status == 403 => {
                self.misbehaved(
                    &conn,
                    &format!("a witnessed checkpoint refused: {}", r.body.trim()),
                );
            }
            // 422 (inconsistent: the witness kept evidence if it is), 503.
            Err(r) => {
                tracing::warn!(peer = %conn.name, %origin, status = r.status, reason = %r.body.trim(),
                    "not cosigned");
            }
        }
    }

    /// The origin of an Inv for a log we do not hold, if it is under one
    /// of our prefixes, names this log and the derived key signed it.
    fn prefix_origin(&self, log_id: LogId, note: &[u8]) -> Option<String> {
        let parsed = Note::parse(note).ok()?;
        let origin = Checkpoint::parse(parsed.text()).ok()?.origin;
        if tlog_core::log_id(&origin) != log_id {
            return None;
        }
        let key = self.prefixes.iter().find_map(|p| p.key_for(&origin))?;
        parsed.verify(&[key]).ok()?;
        Some(origin)
    }

    fn pending_take(&self, conn: &Conn, id: u32) -> Option<oneshot::Sender<Message>> {
        conn.pending.lock().expect("lock").remove(&id)
    }

    /// Runs a job under its log's sync lock; misbehaviour bans.
    async fn handle(self: Arc<Self>, log: Arc<Log<S>>, conn: Arc<Conn>, job: Job) {
        let _one = log.sync.lock().await;
        if conn.killed.load(Ordering::SeqCst) {
            return;
        }
        let done = match job {
            Job::Inv {
                note,
                old_size,
                proof,
            } => log.on_inv(&self, &conn, note, old_size, proof).await,
            Job::Evidence(blob) => log.on_evidence(&self, &conn, blob).await,
        };
        let conn = &conn;
        match done {
            Ok(()) => {}
            Err(PeerError::Misbehaved(why)) => self.misbehaved(conn, &why),
            Err(e) => tracing::warn!(peer = %conn.name, error = %e, "sync with peer failed"),
        }
    }

    /// Announces every newly signed checkpoint of `log` to the peers
    /// behind it, and the latest to every peer when the log refreshes.
    ///
    /// At most five rounds a second per log (tlog.md §7.9): a checkpoint
    /// signed while a round waits replaces the older one, since the watch
    /// holds only the newest.
    async fn announce(self: Arc<Self>, log: Arc<Log<S>>) {
        let mut signed = log.node.signed();
        let mut refreshed = log.node.refreshed();
        let mut last: Option<Instant> = None;
        loop {
            // A refresh goes to peers that hold the checkpoint too, so
            // they cosign it anew (tlog.md §5.2).
            let mode = tokio::select! {
                changed = signed.changed() => match changed {
                    Ok(()) => Announce::IfBehind,
                    Err(_) => break,
                },
                changed = refreshed.changed() => match changed {
                    Ok(()) => {
                        refreshed.borrow_and_update();
                        Announce::Refresh
                    }
                    Err(_) => break,
                },
            };
            if let Some(at) = last {
                tokio::time::sleep(INV_SPACING.saturating_sub(at.elapsed())).await;
            }
            signed.borrow_and_update();
            last = Some(Instant::now());
            let state = match log.node.store().state(log.node.log_id()).await {
                Ok(state) => state,
                Err(_) => continue,
            };
            // Nothing is relayed of a log found equivocating or invalid.
            if matches!(state.status, Status::Equivocated | Status::Invalid) {
                continue;
            }
            let conns: Vec<_> = self.conns.lock().expect("lock").values().cloned().collect();
            for conn in conns {
                inv_to(&log, &conn, mode).await;
            }
        }
    }
}

impl<S: LogStore> Log<S> {
    fn new(node: Arc<LogNode<S>>, follow: Follow) -> Log<S> {
        let mut keys = vec![follow.key.clone()];
        keys.extend(follow.previous.iter().cloned());
        keys.extend(
            follow
                .witnesses
                .iter()
                .filter(|k| k.key_type() == KeyType::Cosignature)
                .cloned(),
        );
        Log {
            node,
            key: Mutex::new(follow.key),
            keys: Mutex::new(keys),
            cosigner: follow.cosigner,
            validating: follow.validating.filter(|_| follow.validator.is_some()),
            validator: follow.validator,
            sync: tokio::sync::Mutex::new(()),
            evidence_sent: Mutex::new(HashSet::new()),
        }
    }

    /// The origin's key now.
    fn key(&self) -> VerifierKey {
        self.key.lock().expect("lock").clone()
    }

    /// Adopts the key `validator` says the origin signs with from now on.
    fn adopt_key(&self, validator: &Arc<dyn Validator>) {
        let Some(new) = validator.log_key() else {
            return;
        };
        let mut key = self.key.lock().expect("lock");
        if *key == new {
            return;
        }
        tracing::info!(origin = %self.node.origin(), old = %*key, new = %new,
            "the log's key changed (its service's key schedule); notes are checked with the new key");
        // The old key stays known: notes it signed before the rotation are
        // the origin's.
        let mut keys = self.keys.lock().expect("lock");
        keys.retain(|k| k != &new);
        keys.insert(0, new.clone());
        *key = new;
    }

    /// Checks a note from a peer: the origin's key signed it, it is this
    /// log's, its size is in range.
    fn verify(&self, bytes: &[u8]) -> Result<Verified, PeerError> {
        let bad =
            |why: String| PeerError::Misbehaved(format!("a note that does not verify: {why}"));
        let note = Note::parse(bytes)
            .and_then(|n| n.verify(&self.keys.lock().expect("lock")))
            .map_err(|e| bad(e.to_string()))?;
        let checkpoint = Checkpoint::parse(note.text()).map_err(|e| bad(e.to_string()))?;
        if checkpoint.origin != self.node.origin() || checkpoint.size > merkle::MAX_SIZE {
            return Err(bad("another log's checkpoint".into()));
        }
        Ok(Verified {
            note,
            checkpoint,
            raw: bytes.to_vec(),
        })
    }

    async fn on_inv(
        self: &Arc<Self>,
        peer: &Peer<S>,
        conn: &Arc<Conn>,
        note: Vec<u8>,
        old_size: u64,
        proof: Vec<Hash>,
    ) -> Result<(), PeerError> {
        let theirs = self.verify(&note)?;
        conn.saw(&self.node.log_id(), theirs.checkpoint.size);
        self.consider(peer, conn, theirs, Some((old_size, proof)))
            .await
    }

    /// What to do with a verified note from `conn` (tlog.md §7.6–§7.7).
    async fn consider(
        self: &Arc<Self>,
        peer: &Peer<S>,
        conn: &Arc<Conn>,
        theirs: Verified,
        inv_proof: Option<(u64, Vec<Hash>)>,
    ) -> Result<(), PeerError> {
        let store = self.node.store();
        let log = self.node.log_id();
        let state = store.state(log).await?;
        if matches!(state.status, Status::Equivocated | Status::Invalid) {
            return Ok(());
        }
        let (n, root) = (theirs.checkpoint.size, theirs.checkpoint.root);
        let local = follow::Local {
            tree_size: state.size,
            checkpoint: (
                state.checkpoint_size,
                self.node.root_at(state.checkpoint_size).await?,
            ),
            sequencer: self.node.is_sequencer(),
        };
        let ours_at_n = if follow::needs_root(&local, n) {
            Some(self.node.root_at(n).await?)
        } else {
            None
        };
        let inv = inv_proof
            .as_ref()
            .map(|(old, proof)| (*old, proof.as_slice()));
        let verdict = follow::judge_note(&local, n, &root, ours_at_n, inv);
        tracing::debug!(peer = %conn.name, origin = %self.node.origin(), size = n,
            tree = state.size, ?verdict, "a peer's note");
        let target = match verdict {
            follow::Verdict::Known => {
                // Keep the extra cosignatures (relayed on if they are new);
                // tell a peer that is behind. The sequencer's refresh of
                // the latest checkpoint (an idle log, tlog.md §5.2) is
                // cosigned anew once ours on it has aged; nothing else is,
                // or every relay of a renewed line would renew the others'
                // and the note would never settle.
                if n == state.checkpoint_size {
                    let merged = self.node.merge_cosignatures(n, root, &theirs.note).await?;
                    let origin = self.node.origin();
                    let refresh = matches!(&inv_proof, Some((old, proof)) if *old == n && proof.is_empty())
                        && conn.sequences.contains(&log)
                        && theirs.note.signatures().iter().all(|l| l.name == origin);
                    let recosigned = refresh && self.recosign(n, root).await?;
                    if merged || recosigned {
                        self.relay(peer).await;
                    }
                }
                inv_to(self, conn, Announce::IfBehind).await;
                return Ok(());
            }
            follow::Verdict::Forked => return self.fork_below(peer, theirs).await,
            follow::Verdict::LostHistory => {
                tracing::error!(origin = %self.node.origin(), size = n, tree = state.size,
                    "a peer holds a checkpoint of this log, signed by its key, beyond the stored tree: the store lost signed history; log frozen");
                store.set_status(log, Status::Frozen).await?;
                return Ok(());
            }
            follow::Verdict::Extends => theirs,
            follow::Verdict::AskHeaders => {
                match self.headers_round(peer, conn, local.checkpoint).await? {
                    Some(target) => target,
                    None => return Ok(()),
                }
            }
        };
        self.fetch(peer, conn, state.size, state.range, target)
            .await
    }

    /// A peer's note of size ≤ our tree with another root: evidence, from
    /// our latest note and our tree.
    async fn fork_below(
        self: &Arc<Self>,
        peer: &Peer<S>,
        theirs: Verified,
    ) -> Result<(), PeerError> {
        let built = self
            .node
            .evidence_against(&self.key(), &theirs.note, &theirs.checkpoint)
            .await?;
        match built {
            Some(evidence) => self.record_evidence(peer, evidence).await,
            None => {
                tracing::warn!(origin = %self.node.origin(), size = theirs.checkpoint.size,
                    "a peer's checkpoint disagrees with our tree, but no signed note of ours covers it yet");
                Ok(())
            }
        }
    }

    /// Asks `conn` for its latest checkpoint with our locator; `Some` when
    /// it extends our verified (`s`, `r`).
    async fn headers_round(
        self: &Arc<Self>,
        peer: &Peer<S>,
        conn: &Arc<Conn>,
        (s, r): (u64, Hash),
    ) -> Result<Option<Verified>, PeerError> {
        let mut locator = Vec::new();
        for size in follow::locator_sizes(s) {
            locator.push((size, self.node.root_at(size).await?));
        }
        let log = self.node.log_id();
        let answer = conn
            .request(
                Message::GetHeaders {
                    log_id: log,
                    locator,
                },
                peer.config.limits.request_timeout,
            )
            .await?;
        let (base, note, proof, fork) = match answer {
            Message::Headers {
                log_id,
                base_size,
                note,
                proof,
                fork,
            } if log_id == log => (base_size, note, proof, fork),
            Message::NotFound { .. } => return Ok(None),
            other => {
                return Err(PeerError::Misbehaved(format!(
                    "{} in answer to GetHeaders",
                    other.name()
                )))
            }
        };
        let theirs = self.verify(&note)?;
        let (n, root) = (theirs.checkpoint.size, theirs.checkpoint.root);
        let verdict = follow::judge_headers((s, r), n, &root, base, &proof, fork.as_ref())
            .map_err(|e| PeerError::Misbehaved(e.0))?;
        match verdict {
            follow::HeadersVerdict::Extends => Ok(Some(theirs)),
            follow::HeadersVerdict::NotLarger => {
                // Nothing to fetch, unless it forks there.
                if self.node.root_at(n).await? != root {
                    self.fork_below(peer, theirs).await?;
                }
                Ok(None)
            }
            follow::HeadersVerdict::Fork { root_at_s, proof } => {
                let Some(bytes) = self.node.store().checkpoint(log, Some(s)).await? else {
                    return Ok(None);
                };
                let mine = Note::parse(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("stored note: {e}")))?;
                let (root_b_at_a, proof) =
                    follow::evidence_parts((s, r), (n, root), root_at_s, proof);
                match Evidence::build(&self.key(), &mine, &theirs.note, root_b_at_a, proof) {
                    Ok(evidence) => self.record_evidence(peer, evidence).await.map(|()| None),
                    Err(e) => Err(PeerError::Misbehaved(format!(
                        "a fork that is not evidence: {e}"
                    ))),
                }
            }
        }
    }

    /// Fetches `[from, target)` from `conn`, checks every chunk against the
    /// target, imports it, then stores and publishes the target.
    async fn fetch(
        self: &Arc<Self>,
        peer: &Peer<S>,
        conn: &Arc<Conn>,
        from: u64,
        range: merkle::CompactRange,
        target: Verified,
    ) -> Result<(), PeerError> {
        let store = self.node.store();
        let log = self.node.log_id();
        let (n, root) = (target.checkpoint.size, target.checkpoint.root);
        let mut working = range;
        let mut next = from;
        // Up to FETCH_WINDOW chunks in flight (the peer's max_inflight is
        // at least 1; ours advertises 8), verified and imported in order.
        let mut inflight = std::collections::VecDeque::new();
        let mut ask = next;
        while next < n {
            while inflight.len() < FETCH_WINDOW && ask < n {
                let asked = follow::next_chunk(ask, n);
                let (conn, timeout) = (conn.clone(), peer.config.limits.request_timeout);
                let request = Message::GetData {
                    log_id: log,
                    start: asked.start,
                    count: asked.count,
                    tree_size: n,
                };
                inflight.push_back((
                    asked,
                    Aborting(tokio::spawn(
                        async move { conn.request(request, timeout).await },
                    )),
                ));
                ask += u64::from(asked.count);
            }
            let Some((asked, mut pending)) = inflight.pop_front() else {
                break;
            };
            let answer = (&mut pending.0)
                .await
                .map_err(|e| PeerError::Protocol(format!("request task: {e}")))??;
            let (start, entries, tree_size, proof) = match answer {
                Message::Data {
                    log_id,
                    start,
                    entries,
                    tree_size,
                    proof,
                } if log_id == log => (start, entries, tree_size, proof),
                Message::NotFound { .. } => {
                    return Err(PeerError::Protocol(
                        "the peer announced entries it does not serve".into(),
                    ))
                }
                other => {
                    return Err(PeerError::Misbehaved(format!(
                        "{} in answer to GetData",
                        other.name()
                    )))
                }
            };
            let chunk = follow::check_chunk(
                &asked,
                &root,
                &working,
                (start, &entries, tree_size, &proof),
            )
            .map_err(|e| PeerError::Misbehaved(e.0))?;
            let short = (entries.len() as u32) < asked.count;
            if let Some(v) = &self.validator {
                let (prep, chunk_entries) = (v.clone(), entries.clone());
                tokio::task::spawn_blocking(move || prep.prepare(next, &chunk_entries))
                    .await
                    .map_err(|e| PeerError::Protocol(format!("validator task: {e}")))?
                    .map_err(|e| PeerError::Protocol(format!("the validator's side data: {e}")))?;
                if let Err(refused) = v.check(next, &entries) {
                    return self
                        .invalid(v, next, entries, &proof, &target, refused)
                        .await;
                }
            }
            store.import(log, next, entries).await?;
            if let Some(v) = &self.validator {
                v.committed(chunk.size());
                self.adopt_key(v);
            }
            next = chunk.size();
            working = chunk;
            if short {
                // A short chunk (the peer's frame limit): what is in flight
                // starts too far on; ask again from here.
                inflight.clear();
                ask = next;
            }
        }
        // A key the validator adopted during this sync (a rotation's
        // overlap) signed the note too: keep its line, which the check with
        // the old key dropped.
        let target_note = match self.verify(&target.raw) {
            Ok(v) if v.checkpoint.size == n && v.checkpoint.root == root => v.note,
            _ => target.note.clone(),
        };
        store
            .put_checkpoint(log, n, root, target_note.to_bytes())
            .await?;
        self.node.publish_stored().await?;
        tracing::debug!(peer = %conn.name, size = n, "mirror up to date");
        // Every entry below n is verified and durable: cosign n, and send
        // the cosigned note to every peer (the origin included).
        // A validating cosigner too: every entry below n also passed the
        // service's rules (the replica was built from them at start, and
        // every chunk since was checked before its import).
        let keys = [&self.cosigner, &self.validating];
        let mut note = target_note;
        let mut signed = false;
        for key in keys.into_iter().flatten() {
            note.add(key.sign(note.text(), crate::now_secs()));
            signed = true;
        }
        if signed && self.node.merge_cosignatures(n, root, &note).await? {
            self.relay(peer).await;
        }
        Ok(())
    }

    /// Cosigns the stored checkpoint of size `n` again with this node's
    /// cosigner keys whose line on it is at least [`RECOSIGN_AFTER`] old.
    /// Whether a line was renewed. Bounded: a peer can make this node sign
    /// at most once a second per log, and lines only ever get newer.
    async fn recosign(&self, n: u64, root: Hash) -> Result<bool, PeerError> {
        let keys: Vec<&Arc<SignerKey>> = [&self.cosigner, &self.validating]
            .into_iter()
            .flatten()
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        let Some(stored) = self
            .node
            .store()
            .checkpoint(self.node.log_id(), Some(n))
            .await?
        else {
            return Ok(false);
        };
        let Ok(mut note) = Note::parse(&stored) else {
            return Ok(false);
        };
        let now = crate::now_secs();
        let mut renewed = false;
        for key in keys {
            let verifier = key.verifier();
            let aged = note
                .signatures()
                .iter()
                .find(|l| l.name == verifier.name() && l.id == verifier.id())
                .and_then(|l| l.cosignature_time())
                .is_none_or(|t| now.saturating_sub(t) >= RECOSIGN_AFTER.as_secs());
            if aged {
                note.add(key.sign(note.text(), now));
                renewed = true;
            }
        }
        Ok(renewed && self.node.merge_cosignatures(n, root, &note).await?)
    }

    /// A verified chunk `[next, next + entries.len())` of `target`'s tree
    /// (`proof`: its end → `target`) that the validator refused: import the
    /// valid entries before the refused one, mark the log `Invalid`, and
    /// give the validator the proof (tlog.md §7.6).
    async fn invalid(
        self: &Arc<Self>,
        validator: &Arc<dyn Validator>,
        next: u64,
        mut entries: Vec<Vec<u8>>,
        proof: &[Hash],
        target: &Verified,
        refused: Refused,
    ) -> Result<(), PeerError> {
        let store = self.node.store();
        let log = self.node.log_id();
        let end = next + entries.len() as u64;
        let n = target.checkpoint.size;
        if refused.index < next || refused.index >= end {
            return Err(PeerError::Protocol(format!(
                "the validator refused entry {} of a chunk [{next}, {end})",
                refused.index
            )));
        }
        tracing::error!(origin = %self.node.origin(), index = refused.index, size = n,
            reason = %refused.reason,
            "the log's key signed entries the service's rules refuse; the log is Invalid and stays at the last valid size");
        // Leaf hashes of the chunk, and the PATHs, before anything moves.
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let mut wanted: Vec<u64> = refused
            .related
            .iter()
            .copied()
            .filter(|&j| j < refused.index)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let cut = wanted.len().saturating_sub(MAX_RELATED);
        wanted.drain(..cut);
        wanted.push(refused.index);
        let needed = tlog_store::rules::tiles_needed(|read| {
            let src = Held {
                tiles: &tlog_store::rules::FnNodes(read),
                stored: next,
                leaves: &leaves,
            };
            wanted
                .iter()
                .map(|&j| merkle::inclusion_proof_beyond(&src, j, end, n, proof))
                .collect::<Vec<_>>()
        });
        let mut tiles = HashMap::new();
        for (level, index) in needed {
            if let Some(tile) = store.tile(log, level, index).await? {
                tiles.insert((level, index), tile);
            }
        }
        let read = |level: u8, index: u64| Ok(tiles.get(&(level, index)).cloned());
        let stored = tlog_store::rules::TileNodes(read);
        let src = Held {
            tiles: &stored,
            stored: next,
            leaves: &leaves,
        };
        let mut proven = Vec::new();
        for &j in &wanted {
            let path = merkle::inclusion_proof_beyond(&src, j, end, n, proof)?
                .map_err(|e| PeerError::Protocol(format!("PATH of entry {j}: {e}")))?;
            let entry = if j >= next {
                entries[(j - next) as usize].clone()
            } else {
                store
                    .entries(log, j, j + 1)
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt(format!("entry {j} missing")))?
            };
            proven.push(ProvenEntry {
                index: j,
                entry,
                path,
            });
        }
        // The entries before the refused one are valid: keep them.
        entries.truncate((refused.index - next) as usize);
        if !entries.is_empty() {
            validator.check(next, &entries).map_err(|e| {
                PeerError::Protocol(format!(
                    "the validator refused a prefix it had passed: {}",
                    e.reason
                ))
            })?;
            let valid_end = next + entries.len() as u64;
            store.import(log, next, entries).await?;
            validator.committed(valid_end);
            self.adopt_key(validator);
        }
        // The evidence is kept before the status is: a crash in between
        // refuses the same chunk again at the next start.
        let evidence = InvalidLog {
            reason: refused.reason,
            note: target.note.to_bytes(),
            entries: proven,
        };
        let v = validator.clone();
        tokio::task::spawn_blocking(move || v.invalid(evidence))
            .await
            .map_err(|e| PeerError::Protocol(format!("validator task: {e}")))?
            .map_err(|e| PeerError::Protocol(format!("keeping the evidence: {e}")))?;
        store.set_status(log, Status::Invalid).await?;
        Ok(())
    }

    /// Sends the stored checkpoint to every peer of this log, whatever it
    /// showed: cosignatures merged into it travel on. Bounded: a note only
    /// changes when a cosignature it lacked arrives.
    async fn relay(&self, peer: &Peer<S>) {
        let conns: Vec<_> = peer.conns.lock().expect("lock").values().cloned().collect();
        for conn in conns {
            inv_to(self, &conn, Announce::Always).await;
        }
    }

    async fn on_evidence(
        self: &Arc<Self>,
        peer: &Peer<S>,
        conn: &Arc<Conn>,
        blob: Vec<u8>,
    ) -> Result<(), PeerError> {
        let digest = Evidence::digest(&blob);
        if self.evidence_sent.lock().expect("lock").contains(&digest) {
            return Ok(());
        }
        let evidence = Evidence::verify(&blob, std::slice::from_ref(&self.key()))
            .map_err(|e| PeerError::Misbehaved(format!("evidence that does not verify: {e}")))?;
        let origin = Checkpoint::parse(evidence.note_a.text())
            .map(|c| c.origin)
            .unwrap_or_default();
        if origin != self.node.origin() {
            return Err(PeerError::Misbehaved("evidence about another log".into()));
        }
        tracing::info!(peer = %conn.name, "evidence received and verified");
        self.record_evidence(peer, blob).await
    }

    /// Keeps verified evidence, stops following the log, tells every peer.
    async fn record_evidence(
        self: &Arc<Self>,
        peer: &Peer<S>,
        evidence: Vec<u8>,
    ) -> Result<(), PeerError> {
        let store = self.node.store();
        let log = self.node.log_id();
        store
            .put_evidence(log, crate::now_secs(), evidence.clone())
            .await?;
        store.set_status(log, Status::Equivocated).await?;
        let digest = Evidence::digest(&evidence);
        if !self.evidence_sent.lock().expect("lock").insert(digest) {
            return Ok(());
        }
        tracing::error!(origin = %self.node.origin(), digest = %crate::hex(&digest),
            "the log's key signed two inconsistent trees: evidence stored, log no longer followed");
        let conns: Vec<_> = peer.conns.lock().expect("lock").values().cloned().collect();
        for conn in conns {
            conn.send(0, Message::Evidence(evidence.clone())).await;
        }
        Ok(())
    }
}

/// Sends `conn` our signed checkpoint if it showed a smaller one, or,
/// unless `IfBehind`, whatever the sizes: so a peer holding an equal or
/// larger tree checks ours against its own at our size, and a fork is
/// caught at every connection (one Inv per connection).
async fn inv_to<S: LogStore>(log: &Log<S>, conn: &Conn, mode: Announce) {
    let id = log.node.log_id();
    let theirs = match conn.announced(&id) {
        Some(theirs) => theirs,
        // A log that appeared here after the peer's Hello, under a prefix
        // it follows.
        None if conn
            .prefixes
            .iter()
            .any(|p| log.node.origin().starts_with(p)) =>
        {
            conn.saw_log(id);
            0
        }
        None => return,
    };
    let Some(published) = log.node.signed().borrow().clone() else {
        return;
    };
    if theirs >= published.size && mode == Announce::IfBehind {
        return;
    }
    // A proof from their size when it is within ours, else none.
    let old_size = if theirs <= published.size { theirs } else { 0 };
    let proof = if old_size == 0 {
        Vec::new()
    } else {
        match log
            .node
            .store()
            .consistency_proof(log.node.log_id(), old_size, published.size)
            .await
        {
            Ok(proof) => proof,
            Err(_) => return,
        }
    };
    let note = if mode == Announce::Refresh {
        log_signatures_only(&published.note, log.node.origin())
    } else {
        published.note
    };
    conn.send(
        0,
        Message::Inv {
            log_id: log.node.log_id(),
            note,
            old_size,
            proof,
        },
    )
    .await;
}

/// `note` with only the log's own signature lines (named after `origin`):
/// the form of a refresh.
fn log_signatures_only(note: &[u8], origin: &str) -> Vec<u8> {
    let Ok(parsed) = Note::parse(note) else {
        return note.to_vec();
    };
    let Ok(mut bare) = Note::new(parsed.text()) else {
        return note.to_vec();
    };
    for line in parsed.signatures().iter().filter(|l| l.name == origin) {
        bare.add(line.clone());
    }
    bare.to_bytes()
}

async fn read_ident<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(), PeerError> {
    loop {
        match Ident::parse(buf) {
            Ok(Some((_, used))) => {
                buf.drain(..used);
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(PeerError::Protocol(e.to_string())),
        }
        let mut chunk = [0u8; 256];
        match stream.read(&mut chunk).await? {
            0 => return Err(PeerError::Protocol("closed".into())),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Frame, PeerError> {
    loop {
        match Frame::decode(buf, MAX_FRAME) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                return Ok(frame);
            }
            Ok(None) => {}
            Err(e @ FrameError::TooLarge(_)) => {
                return Err(PeerError::Misbehaved(format!("{e} (over the limit)")))
            }
            Err(e) => return Err(PeerError::Misbehaved(e.to_string())),
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match stream.read(&mut chunk).await? {
            0 => return Err(PeerError::Protocol("closed".into())),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Writes queued frames (a Ping after `ping_after` of silence); on `done`,
/// writes what is queued (a last Reject) and closes.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Frame>,
    ping_after: Duration,
    done: Arc<Notify>,
) {
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(ping_after, rx.recv()) => match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => Frame {
                    id: 0,
                    message: Message::Ping(entropy()),
                },
            },
            _ = done.notified() => {
                while let Ok(frame) = rx.try_recv() {
                    if writer.write_all(&frame.encode()).await.is_err() {
                        break;
                    }
                }
                break;
            }
        };
        if writer.write_all(&frame.encode()).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// The answer to a GetHeaders or GetData, from signed state only (the
/// signed checkpoint may be ahead of the published one while the publish
/// policy waits for the peers' cosignatures).
async fn respond<S: LogStore>(node: &LogNode<S>, message: Message) -> Option<Message> {
    let store = node.store();
    let log = node.log_id();
    let not_found = |log_id, what, have_size| {
        Some(Message::NotFound {
            log_id,
            what,
            have_size,
        })
    };
    match message {
        Message::GetData {
            log_id,
            start,
            count,
            tree_size,
        } => {
            if log_id != log {
                return not_found(log_id, 1, 0);
            }
            let (size, _) = node.signed_head().unwrap_or((0, merkle::EMPTY_ROOT));
            if tree_size > size || start >= tree_size {
                return not_found(log_id, if tree_size > size { 3 } else { 2 }, size);
            }
            let end = (start + u64::from(count)).min(tree_size);
            let entries = store.entries(log, start, end).await.ok()?;
            let got = entries.len() as u64;
            let proof = store
                .consistency_proof(log, start + got, tree_size)
                .await
                .ok()?;
            Some(Message::Data {
                log_id,
                start,
                entries,
                tree_size,
                proof,
            })
        }
        Message::GetHeaders { log_id, locator } => {
            if log_id != log {
                return not_found(log_id, 1, 0);
            }
            let published = node.signed().borrow().clone();
            let Some(published) = published else {
                return not_found(log_id, 1, 0);
            };
            let size = published.size;
            // The first locator size ≤ ours whose root we share.
            let mut base = 0;
            let mut fork = None;
            for (i, (s, r)) in locator.iter().enumerate() {
                if *s > size {
                    continue;
                }
                let ours = node.root_at(*s).await.ok()?;
                if ours == *r {
                    base = *s;
                    break;
                }
                if i == 0 {
                    fork = Some(*s);
                }
            }
            let proof = store.consistency_proof(log, base, size).await.ok()?;
            let fork = match fork {
                Some(s) => Some(sync::Fork {
                    size: s,
                    root: node.root_at(s).await.ok()?,
                    proof: store.consistency_proof(log, s, size).await.ok()?,
                }),
                None => None,
            };
            Some(Message::Headers {
                log_id,
                base_size: base,
                note: published.note,
                proof,
                fork,
            })
        }
        _ => None,
    }
}
