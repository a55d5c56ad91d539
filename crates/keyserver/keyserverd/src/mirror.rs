//! `keyserverd mirror` (keyserver.md §8): follow a keyserver's log over
//! LKTL/1 (tlog.md §7) from the primary's sync listener and serve the chain
//! calls (FetchLastHashChain, FetchHashChain, FetchUID) and the tiles from
//! the replica, so clients can sync and look up without the primary.
//!
//! Nothing is stored unverified (tlog.md §7.6). `tlog-node` proves every
//! chunk against a note the log key signed; the [`Validator`] here then
//! checks each leaf (tag, length, TYPE, the H_n link, entry 0 is the
//! pinned genesis) and, because LKTL/1 carries no side data (tlog.md open
//! question 8), pulls each entry's `uid` blob by FetchUID from the primary
//! and checks that it binds to the leaf (HASHCHAINPOS, HASHCHAINENTRY,
//! ORIGIN, the UIDIndex prefix) and that SERVERSIGNATURE verifies under
//! the key schedule. The keyserver's own UIDs extend the schedule (their
//! update chain verified as a client does, §6.3), and the node checks
//! later notes with the new key ([`Validator::log_key`]). The blobs are
//! durable before their entries are imported, so every served entry has
//! its UID.
//!
//! The schedule at start comes from a full verified sync of the primary
//! from the pin (`ks-client`), so a mirror also starts after an escrow
//! rotation, which has no overlap (§3.8): a running mirror adopts a new key
//! from the chain, but a note signed only by a key it has not yet seen
//! committed is refused, so after an escrow rotation mirrors are restarted.
//!
//! Capabilities are relayed from the primary unchanged (they are signed);
//! writes, LookupUID and the KeyInit repository (consumable, private
//! state) get -32060 naming the primary, or are relayed byte for byte with
//! `--proxy-writes` (the primary then sees the mirror's address for its
//! rate limits; paid calls carry their tokens through).
//!
//! A leaf or blob the rules refuse is signed by the primary's key, so the
//! log is marked `Invalid` (the mirror stays at the last valid size) and
//! the signed note with the refused entry and its PATH is kept in
//! `invalid.json` for the operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use ed25519_dalek::VerifyingKey;
use ks_client::{Client, Pin};
use ks_core::entry::Entry;
use ks_core::error::RpcError;
use ks_core::lcj::{object, Fields, Lcj as _, Value};
use ks_core::uid::UidMessageReply;
use ks_core::verify::{verify_chain, Match};
use tlog_core::note::{KeyType, Note, VerifierKey};
use tlog_node::peer::{InvalidLog, Refused, Validator};
use tlog_node::LogNode;
use tlog_store::{LogStore, RedbLogStore};

use crate::chain::ReadCall;
use crate::daemon::StartError;
use crate::rpc::Methods;

/// How to start a mirror.
#[derive(Clone, Debug)]
pub struct MirrorOptions {
    /// Its database (`mirror.redb`) and `invalid.json`.
    pub data_dir: PathBuf,
    /// The primary's JSON-RPC endpoint (`--from`).
    pub from: String,
    /// The primary's LKTL/1 listener, `host:port` (`--sync`).
    pub sync: String,
    /// `keyserver@<domain>:<hex H_0>` (`--pin`).
    pub pin: String,
    /// The public listener (JSON-RPC and tiles).
    pub listen: SocketAddr,
    /// LKTL/1 for mirrors of this mirror.
    pub sync_listen: SocketAddr,
    /// Relay writes, LookupUID and the KeyInit repository to the primary.
    pub proxy_writes: bool,
    /// Witness verifier keys whose cosignatures are kept on mirrored
    /// checkpoints (clients that require them then accept the mirror's).
    pub witnesses: Vec<String>,
    /// TLS for the public listener; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its name on the sync port; its validating cosigner key (kept in
    /// `validator-key`, 0600) is named `<name>/validator`.
    pub name: String,
}

/// A running mirror.
pub struct RunningMirror {
    /// The public listener's address.
    pub addr: SocketAddr,
    /// The LKTL/1 listener's address.
    pub sync_addr: SocketAddr,
    /// The mirrored log's origin.
    pub origin: String,
    /// Entries held at start.
    pub size: u64,
    /// Its validating cosigner's verifier key: it cosigns a size only once
    /// every entry and UID below it passed the checks (give it to the
    /// primary's `--mirror-cosigner`, and to clients that require it).
    pub validating_vkey: String,
    /// Ends when the listener fails.
    pub serving: tokio::task::JoinHandle<()>,
}

/// The verified state at the committed size.
#[derive(Clone)]
struct Replica {
    size: u64,
    /// H of the last entry (zero before entry 0).
    last: [u8; 32],
    /// (position, SIGKEY) of each keyserver UID, in chain order.
    schedule: Vec<(u64, VerifyingKey)>,
    /// The keyserver's own entries with their replies (its update chain).
    own: Vec<(u64, Entry, UidMessageReply)>,
}

/// Why an entry is refused.
struct Refusal {
    /// The rule.
    why: String,
    /// Earlier entries it was judged against.
    related: Vec<u64>,
    /// The evidence type (§6.6) and the signed reply that, with the
    /// refused entry and its PATH under the note, proves it.
    accused: Option<(&'static str, Box<UidMessageReply>)>,
}

/// signer(pos) of a schedule (§3.8).
fn signer_at(schedule: &[(u64, VerifyingKey)], pos: u64) -> Option<VerifyingKey> {
    schedule
        .iter()
        .rev()
        .find(|(p, _)| *p <= pos)
        .map(|(_, k)| *k)
}

impl Replica {
    /// Admits entry `pos` with the primary's reply for it.
    fn admit(
        &mut self,
        pin: &Pin,
        origin: &str,
        pos: u64,
        entry: Entry,
        reply: &UidMessageReply,
    ) -> Result<(), Refusal> {
        let plain = |why: String| Refusal {
            why,
            related: Vec::new(),
            accused: None,
        };
        if pos == 0 && (entry.hash() != &pin.h0 || !entry.is_for(&pin.identity)) {
            return Err(plain("entry 0 is not the pinned genesis".into()));
        }
        entry
            .check_link(&self.last)
            .map_err(|_| plain(format!("entry {pos} does not link to the one before")))?;
        if reply.entry.hashchain_pos != pos {
            return Err(plain(format!(
                "the UID reply for entry {pos} names position {}",
                reply.entry.hashchain_pos
            )));
        }
        if reply.chain_entry().ok() != Some(entry) {
            return Err(Refusal {
                accused: Some((ks_core::evidence::REPLY_NOT_IN_LOG, Box::new(reply.clone()))),
                ..plain(format!("the UID reply for entry {pos} names another entry"))
            });
        }
        if reply.entry.origin != origin {
            return Err(plain(format!(
                "the UID reply for entry {pos} names origin {}",
                reply.entry.origin
            )));
        }
        let prefix = ks_core::b64::decode(&reply.entry.uid_message_encrypted)
            .filter(|b| b.len() >= 48)
            .map(|b| b[..32] == entry.uid_index()[..]);
        if prefix != Some(true) {
            return Err(Refusal {
                accused: Some((ks_core::evidence::BAD_UID, Box::new(reply.clone()))),
                ..plain(format!(
                    "the UID blob of entry {pos} does not start with its UIDIndex"
                ))
            });
        }
        let mut schedule = self.schedule.clone();
        let mut own = self.own.clone();
        if entry.is_for(&pin.identity) {
            // A keyserver UID: its SIGKEY signs from here on (§3.8), once
            // its update chain verifies as a client's would (§6.3).
            let related: Vec<u64> = own.iter().map(|(p, _, _)| *p).collect();
            let refused = |why: String| Refusal {
                why,
                related: related.clone(),
                accused: None,
            };
            let (_, msg) = reply
                .open_for(&pin.identity)
                .map_err(|e| refused(format!("the keyserver UID at {pos}: {e}")))?;
            let key = msg
                .content
                .sig_key
                .verifying_key()
                .ok_or_else(|| refused(format!("the keyserver UID at {pos} has no SIGKEY")))?;
            schedule.push((pos, key));
            own.push((pos, entry, reply.clone()));
            let matches: Vec<Match<'_>> = own
                .iter()
                .map(|(p, e, r)| Match {
                    pos: *p,
                    entry: e,
                    reply: Some(r),
                })
                .collect();
            let signer = |p: u64| signer_at(&schedule, p);
            let position_of = |e: &Entry| {
                own.iter()
                    .find(|(_, o, _)| o.hash() == e.hash())
                    .map(|(p, _, _)| *p)
            };
            verify_chain(&pin.identity, &matches, signer, position_of)
                .map_err(|e| refused(format!("the keyserver's own chain: {e}")))?;
        }
        let key = signer_at(&schedule, pos)
            .ok_or_else(|| plain(format!("no scheduled key for entry {pos}")))?;
        if !reply.signed_by(&key) {
            return Err(plain(format!(
                "the UID reply for entry {pos} is not signed by the scheduled key"
            )));
        }
        self.schedule = schedule;
        self.own = own;
        self.last = *entry.hash();
        self.size = pos + 1;
        Ok(())
    }
}

/// A chunk judged by [`Validator::prepare`], waiting for `check` and
/// `committed`.
struct Staged {
    start: u64,
    replica: Replica,
    refused: Option<Refused>,
}

/// The keyserver Validator of a mirror (tlog.md §7.6).
pub struct KeyserverValidator {
    pin: Pin,
    origin: String,
    upstream: Arc<Client>,
    db: Arc<redb::Database>,
    invalid_path: PathBuf,
    current: Mutex<Replica>,
    staged: Mutex<Option<Staged>>,
    new_key: Mutex<Option<VerifyingKey>>,
    /// The evidence type and signed reply behind a refusal, for
    /// [`Validator::invalid`].
    accused: Mutex<Option<(&'static str, Box<UidMessageReply>)>>,
}

/// FetchUID calls a mirror keeps in flight while catching up.
const FETCHERS: usize = 8;

impl KeyserverValidator {
    /// The primary's reply for each entry, in order, fetched by
    /// [`FETCHERS`] threads. Unreachable or withheld: an error, so the
    /// sync is retried, never judged (a withheld blob is not provable
    /// from here).
    fn fetch_replies(&self, entries: &[(u64, Entry)]) -> Result<Vec<UidMessageReply>, String> {
        let fetch = |(pos, entry): &(u64, Entry)| {
            self.upstream
                .fetch_uid(entry.uid_index())
                .map_err(|e| format!("FetchUID for entry {pos}: {e}"))?
                .ok_or_else(|| format!("the primary serves no UID for entry {pos}"))
        };
        if entries.len() < 2 {
            return entries.iter().map(fetch).collect();
        }
        let per = entries.len().div_ceil(FETCHERS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = entries
                .chunks(per)
                .map(|part| scope.spawn(move || part.iter().map(fetch).collect::<Vec<_>>()))
                .collect();
            let mut out = Vec::with_capacity(entries.len());
            for w in workers {
                for r in w.join().map_err(|_| "a FetchUID thread panicked")? {
                    out.push(r?);
                }
            }
            Ok(out)
        })
    }
}

impl Validator for KeyserverValidator {
    fn prepare(&self, start: u64, entries: &[Vec<u8>]) -> Result<(), String> {
        let mut next = self.current.lock().map_err(|_| "lock poisoned")?.clone();
        if start != next.size {
            return Err(format!(
                "a chunk from {start}; the replica holds {}",
                next.size
            ));
        }
        let mut refused = None;
        let mut parsed = Vec::with_capacity(entries.len());
        for (i, leaf) in entries.iter().enumerate() {
            let pos = start + i as u64;
            match Entry::from_leaf(leaf) {
                Ok(e) => parsed.push((pos, e)),
                Err(e) => {
                    refused = Some(Refused {
                        index: pos,
                        reason: format!("leaf {pos}: {e}"),
                        related: Vec::new(),
                    });
                    break;
                }
            }
        }
        let replies = self.fetch_replies(&parsed)?;
        let mut rows = Vec::with_capacity(parsed.len());
        for ((pos, entry), reply) in parsed.into_iter().zip(replies) {
            if let Err(r) = next.admit(&self.pin, &self.origin, pos, entry, &reply) {
                refused = Some(Refused {
                    index: pos,
                    reason: r.why,
                    related: r.related,
                });
                *self.accused.lock().map_err(|_| "lock poisoned")? = r.accused;
                break;
            }
            rows.push((*entry.uid_index(), reply.to_lcj()));
        }
        crate::store::put_uids(&self.db, &rows).map_err(|e| format!("storing UIDs: {e}"))?;
        *self.staged.lock().map_err(|_| "lock poisoned")? = Some(Staged {
            start,
            replica: next,
            refused,
        });
        Ok(())
    }

    fn check(&self, start: u64, entries: &[Vec<u8>]) -> Result<(), Refused> {
        let end = start + entries.len() as u64;
        let staged = self.staged.lock().map_err(|_| Refused {
            index: start,
            reason: "lock poisoned".into(),
            related: Vec::new(),
        })?;
        match staged.as_ref() {
            Some(s) if s.start == start => match &s.refused {
                Some(r) if r.index < end => Err(r.clone()),
                _ if s.replica.size >= end => Ok(()),
                _ => Err(Refused {
                    index: s.replica.size,
                    reason: "entries beyond those prepared".into(),
                    related: Vec::new(),
                }),
            },
            _ => Err(Refused {
                index: start,
                reason: "a chunk that was not prepared".into(),
                related: Vec::new(),
            }),
        }
    }

    fn committed(&self, end: u64) {
        let Some(staged) = self.staged.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        if staged.replica.size != end {
            return;
        }
        if let Ok(mut current) = self.current.lock() {
            let before = current.schedule.last().map(|(p, _)| *p);
            let after = staged.replica.schedule.last();
            if let Some((p, key)) = after {
                if before != Some(*p) && before.is_some() {
                    if let Ok(mut k) = self.new_key.lock() {
                        *k = Some(*key);
                    }
                }
            }
            *current = staged.replica;
        }
    }

    fn log_key(&self) -> Option<VerifierKey> {
        let key = self.new_key.lock().ok()?.take()?;
        VerifierKey::new(&self.origin, KeyType::Ed25519, key).ok()
    }

    fn invalid(&self, evidence: InvalidLog) -> Result<(), String> {
        let json = serde_json::json!({
            "reason": evidence.reason,
            "origin": self.origin,
            "checkpoint": String::from_utf8_lossy(&evidence.note),
            "entries": evidence.entries.iter().map(|e| serde_json::json!({
                "index": e.index,
                "leaf": hex::encode(&e.entry),
                "path": e.path.iter().map(hex::encode).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?;
        let dir = self
            .invalid_path
            .parent()
            .unwrap_or(std::path::Path::new("."));
        // A refusal a signed reply proves on its own becomes an evidence
        // file anyone checks with the pin (`ks-cli verify-evidence`).
        let accused = self.accused.lock().map_err(|_| "lock poisoned")?.take();
        if let Some((kind, reply)) = accused {
            let key_schedule = self
                .current
                .lock()
                .map_err(|_| "lock poisoned")?
                .own
                .iter()
                .map(|(_, _, r)| r.clone())
                .collect();
            let mut proof = ks_core::evidence::Evidence {
                kind: kind.into(),
                origin: self.origin.clone(),
                pin: format!("{}:{}", self.pin.identity, hex::encode(self.pin.h0)),
                key_schedule,
                ..Default::default()
            };
            let pos = reply.entry.hashchain_pos;
            if kind == ks_core::evidence::REPLY_NOT_IN_LOG {
                // The log's entry at the reply's position, with its PATH
                // under the signed note (the refused entry is the last).
                let refused = evidence
                    .entries
                    .last()
                    .filter(|e| e.index == pos)
                    .ok_or("the refused entry is not at the reply's position")?;
                let entry = Entry::from_leaf(&refused.entry).map_err(|e| e.to_string())?;
                proof.checkpoint = ks_core::b64::encode(&evidence.note);
                proof.entry = ks_core::b64::encode(&entry.0);
                proof.proof = refused
                    .path
                    .iter()
                    .map(|h| ks_core::b64::encode(h))
                    .collect();
            }
            proof.replies = vec![*reply];
            let file = dir.join(format!("evidence-{kind}-{pos}.json"));
            durable_file::replace(&file, &proof.to_file(), 0o644).map_err(|e| e.to_string())?;
        }
        durable_file::replace(&self.invalid_path, &bytes, 0o644).map_err(|e| e.to_string())
    }
}

/// What a mirror answers.
pub struct Mirror {
    node: Arc<LogNode<RedbLogStore>>,
    db: Arc<redb::Database>,
    upstream: Arc<Client>,
    from: String,
    proxy_writes: bool,
}

impl Mirror {
    async fn forward(&self, body: Bytes) -> Result<Vec<u8>, RpcError> {
        let upstream = self.upstream.clone();
        tokio::task::spawn_blocking(move || upstream.forward(&body))
            .await
            .map_err(|_| RpcError::Internal)?
            .map_err(|e| {
                tracing::warn!(error = %e, "relaying to the primary failed");
                RpcError::Unavailable
            })
    }
}

impl Methods for Mirror {
    async fn call(
        &self,
        method: &str,
        params: Value,
        _client: Option<std::net::IpAddr>,
    ) -> Result<Value, RpcError> {
        let p = Fields::of(params).map_err(|_| RpcError::params("params", "must be an object"))?;
        if !crate::chain::is_read(method) {
            return Err(
                if ks_core::capabilities::METHODS.contains(&method)
                    || method == "KeyHashchain.LookupUID"
                {
                    RpcError::ReadOnly {
                        primary: self.from.clone(),
                    }
                } else {
                    RpcError::MethodNotFound
                },
            );
        }
        match crate::chain::read_call(method, p)? {
            ReadCall::Last { known } => crate::chain::fetch_last(&self.node, known).await,
            ReadCall::Chain { start, end } => {
                let entries = crate::chain::range(&self.node, start, end).await?;
                Ok(crate::chain::chunk_value(start, &entries))
            }
            ReadCall::Uid { index } => {
                let reply =
                    crate::chain::uid_reply(crate::store::Reader::new(self.db.clone()), &index)
                        .await?;
                // Blobs are stored just before their entries: serve only
                // those of published entries.
                let (size, _) = self.node.published_head().ok_or(RpcError::Unavailable)?;
                if reply.entry.hashchain_pos >= size {
                    return Err(RpcError::NotFound);
                }
                Ok(object([("UIDMessageReply", reply.to_value())]))
            }
        }
    }

    async fn relay(&self, method: &str, body: Bytes) -> Option<Result<Vec<u8>, RpcError>> {
        let relayed = method == "KeyRepository.Capabilities"
            || (self.proxy_writes
                && (method.starts_with("KeyInitRepository.")
                    || matches!(
                        method,
                        "KeyRepository.CreateUID"
                            | "KeyRepository.UpdateUID"
                            | "KeyRepository.LookupUID"
                            | "KeyHashchain.LookupUID"
                    )));
        if relayed {
            Some(self.forward(body).await)
        } else {
            None
        }
    }
}

fn storage(e: impl std::fmt::Display) -> StartError {
    StartError::Storage(e.to_string())
}

/// Verifies the primary's chain from the pin, opens the replica and serves.
pub async fn start_mirror(opts: MirrorOptions) -> Result<RunningMirror, StartError> {
    let pin = Pin::parse(&opts.pin).ok_or_else(|| {
        StartError::Config(format!(
            "--pin {}: expected keyserver@<domain>:<64 hex digits of H_0>",
            opts.pin
        ))
    })?;
    let witnesses = opts
        .witnesses
        .iter()
        .map(|w| {
            VerifierKey::parse(w).map_err(|e| StartError::Config(format!("--witness {w}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| StartError::Io(format!("{}: {e}", opts.data_dir.display())))?;
    // The primary's chain, verified from the pin as a client does: the
    // origin and the key schedule.
    let (verified, upstream) = {
        let (from, pin) = (opts.from.clone(), pin.clone());
        tokio::task::spawn_blocking(move || {
            let mut client = Client::new(&from, pin.clone());
            client.sync().map(|_| (client, Client::new(&from, pin)))
        })
        .await
        .map_err(|e| StartError::Io(e.to_string()))?
        .map_err(|e| {
            StartError::Io(format!(
                "verifying the primary's chain at {}: {e}",
                opts.from
            ))
        })?
    };
    let note = Note::parse(verified.checkpoint().unwrap_or_default()).map_err(storage)?;
    let origin = tlog_core::Checkpoint::parse(note.text())
        .map_err(storage)?
        .origin;
    let path = opts.data_dir.join("mirror.redb");
    let db = Arc::new(
        redb::Database::create(&path).map_err(|e| storage(format!("{}: {e}", path.display())))?,
    );
    let store = Arc::new(RedbLogStore::open_shared(db.clone(), &path).map_err(storage)?);
    let node = LogNode::mirror(store.clone(), &origin)
        .await
        .map_err(storage)?;
    let size = store.state(node.log_id()).await.map_err(storage)?.size;
    // The replica at its stored size: the same chain as the primary's.
    if size > verified.size() {
        return Err(StartError::Storage(format!(
            "this mirror holds {size} entries of {origin}, the primary shows {}: refusing to follow a rollback",
            verified.size()
        )));
    }
    let mut replica = Replica {
        size,
        last: [0; 32],
        schedule: Vec::new(),
        own: Vec::new(),
    };
    if size > 0 {
        let leaf = store
            .entries(node.log_id(), size - 1, size)
            .await
            .map_err(storage)?
            .pop()
            .ok_or_else(|| storage(format!("entry {} is missing", size - 1)))?;
        let ours = Entry::from_leaf(&leaf).map_err(storage)?;
        if Some(&ours) != verified.entry(size - 1) {
            return Err(StartError::Storage(format!(
                "entry {} here differs from the primary's: a fork",
                size - 1
            )));
        }
        replica.last = *ours.hash();
        let reader = crate::store::Reader::new(db.clone());
        for (p, key) in verified.schedule().iter().filter(|(p, _)| *p < size) {
            let entry = *verified
                .entry(*p)
                .ok_or_else(|| storage(format!("entry {p} missing")))?;
            let raw = reader
                .uid(entry.uid_index())
                .map_err(storage)?
                .ok_or_else(|| storage(format!("the UID of entry {p} is missing")))?;
            let reply = UidMessageReply::from_lcj(&raw).map_err(storage)?;
            replica.schedule.push((*p, *key));
            replica.own.push((*p, entry, reply));
        }
    }
    let log_key = verified
        .schedule()
        .last()
        .map(|(_, k)| *k)
        .ok_or_else(|| storage("the primary's chain has no keyserver key"))?;
    let key = VerifierKey::new(&origin, KeyType::Ed25519, log_key).map_err(storage)?;
    let upstream = Arc::new(upstream);
    let validator = Arc::new(KeyserverValidator {
        pin,
        origin: origin.clone(),
        upstream: upstream.clone(),
        db: db.clone(),
        invalid_path: opts.data_dir.join("invalid.json"),
        current: Mutex::new(replica),
        staged: Mutex::new(None),
        new_key: Mutex::new(None),
        accused: Mutex::new(None),
    });
    // Mirrors witness (§8): a validating cosigner, distinct from any
    // witness key (tlog.md §5.3).
    let (validating, validating_vkey) =
        tlog_node::keyfile::validating_key(&opts.data_dir, &opts.name)
            .map_err(|e| StartError::Config(e.to_string()))?;
    let sync = tokio::net::TcpListener::bind(opts.sync_listen)
        .await
        .map_err(|e| StartError::Io(format!("--sync-listen {}: {e}", opts.sync_listen)))?;
    let sync_addr = sync
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let peer = tlog_node::peer::Peer::new(
        tlog_node::peer::Config {
            name: opts.name.clone(),
            peers: vec![opts.sync.clone()],
            limits: tlog_node::peer::Limits::default(),
        },
        vec![(
            node.clone(),
            tlog_node::peer::Follow {
                key,
                previous: Vec::new(),
                witnesses,
                cosigner: None,
                validator: Some(validator),
                validating: Some(Arc::new(validating)),
            },
        )],
    );
    tokio::spawn(peer.run(sync));
    let mirror = Arc::new(Mirror {
        node: node.clone(),
        db,
        upstream,
        from: opts.from.clone(),
        proxy_writes: opts.proxy_writes,
    });
    let (addr, serving) =
        crate::daemon::serve_public(mirror, &node, &origin, opts.listen, opts.tls.clone()).await?;
    Ok(RunningMirror {
        addr,
        sync_addr,
        origin,
        size,
        validating_vkey,
        serving,
    })
}
