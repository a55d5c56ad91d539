//! The keyserver's state in one redb file shared with the log (keyserver.md
//! §4.7, §8): the `ks_*` tables beside tlog-store's, and the sequencer, one
//! writer thread that runs the stateful rules (§4.2–4.5) and commits every
//! waiting request in one transaction with one fsync. A UID's entry, its
//! signed reply and its state rows commit together through
//! `tlog_store::redb::append_in`, and a reply leaves only once that commit
//! returned, so a crash leaves all of a request or nothing.

use std::sync::mpsc;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use ks_core::b64;
use ks_core::entry::{uid_index, Entry};
use ks_core::error::RpcError;
use ks_core::keyinit::{
    disperse, sig_key_hash, DispersalReceipt, FlushReceipt, FlushRequest, KeyInit, KeyInitReceipt,
    Stored, FLUSH_NONCE_TTL, MAX_KEYINITS,
};
use ks_core::lcj::Lcj;
use ks_core::lcj_record;
use ks_core::rules::{self, IdentityState, Kind, LASTENTRY_WINDOW};
use ks_core::sig::{sign, Ctx};
use ks_core::uid::{self, ReplyEntry, UidMessage, UidMessageReply};
use rand::RngCore;
use redb::{Database, ReadableTable, TableDefinition};
use tlog_store::LogId;
use tokio::sync::oneshot;

/// UIDIndex → LCJ(UIDMessageReply); public through FetchUID.
const UID: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ks_uid");
/// Identity → LCJ(IdentityRow); private, never replicated.
const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("ks_identity");
/// SigKeyHash → identity, for the current SIGKEY of each identity.
const SIGKEY: TableDefinition<&str, &str> = TableDefinition::new("ks_sigkey");
/// UIDHash → position (idempotent retries).
const UIDHASH: TableDefinition<&[u8], u64> = TableDefinition::new("ks_uidhash");
/// Position → reply TIMESTAMP (LASTENTRY freshness).
const ENTRY_TIME: TableDefinition<u64, u64> = TableDefinition::new("ks_entry_time");
/// H_n → position ‖ entry (LASTENTRY lookup).
const ENTRY_POS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ks_entry_pos");
/// SigKeyHash ‖ 0 ‖ FALLBACK ‖ NOTAFTER ‖ MSGCOUNT ‖ NOTBEFORE → LCJ(KeyInit):
/// dispersal chooses from the keys alone and decodes only what it serves.
const KEYINIT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ks_keyinit");
/// SigKeyHash → highest MSGCOUNT accepted.
const KEYINIT_HWM: TableDefinition<&str, u64> = TableDefinition::new("ks_keyinit_hwm");
/// KEYINITHASH → LCJ(SignedReceipt), kept for idempotent retries.
const KEYINIT_SEEN: TableDefinition<&str, &[u8]> = TableDefinition::new("ks_keyinit_seen");
/// SigKeyHash ‖ NONCE → expiry.
const FLUSH_NONCE: TableDefinition<&[u8], u64> = TableDefinition::new("ks_flush_nonce");
/// token_key_id ‖ nonce → time (u64 BE) ‖ method: redeemed tokens (§5),
/// pruned when their key is no longer accepted.
const SPENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ks_spent_tokens");

/// Identity → its positions (u64 BE each, ascending): LookupUID's answer
/// (§4.6). Private; kept for every entry so enabling lookups later needs
/// no rebuild.
const BY_IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("ks_by_identity");

/// A token as the spent set keys it: token_key_id ‖ nonce.
pub type SpendId = [u8; 64];

lcj_record! {
    /// What the server keeps of an identity: its newest UID and where.
    pub struct IdentityRow {
        /// Position of the newest entry.
        pos: u64 = "POS",
        /// Its UIDIndex (b64(32)).
        uid_index: String = "UIDINDEX",
        /// The newest UIDMessage.
        uid: UidMessage = "UID",
    }
}

lcj_record! {
    /// A signed KeyInit receipt, as stored and returned again on retries.
    pub struct SignedReceipt {
        /// The receipt.
        receipt: KeyInitReceipt = "RECEIPT",
        /// Its signature.
        signature: String = "SIGNATURE",
    }
}

impl IdentityRow {
    fn state(&self) -> Result<IdentityState, RpcError> {
        let index = b64::exact::<32>(&self.uid_index).ok_or(RpcError::Internal)?;
        Ok(IdentityState::of(&self.uid, self.pos, index))
    }
}

/// A request for the sequencer.
pub enum Job {
    /// CreateUID or UpdateUID, already through §4.1.
    Uid {
        /// Which.
        kind: Kind,
        /// The message.
        msg: Box<UidMessage>,
        /// Its keys, from the §4.1 checks.
        profiled: Box<uid::ProfiledUid>,
        /// The verified token paying for it (none when tokens are disabled).
        token: Option<SpendId>,
        /// Whether it is the server's own identity (genesis).
        keyserver: bool,
        /// Skip §4.2 (feature `test-faults` only: a keyserver that forges).
        forced: bool,
        /// Sign the reply with this key (a rotation of the server's key:
        /// each key signs from its own position on, §3.8).
        reply_key: Option<SigningKey>,
        /// Seal these bytes instead of the UID's LCJ (feature
        /// `test-faults` only: a forger's non-canonical encoding).
        plaintext: Option<Vec<u8>>,
        /// The clock.
        now: u64,
        /// The answer.
        reply: oneshot::Sender<Result<UidMessageReply, RpcError>>,
    },
    /// AddKeyInit, each KeyInit already through `check_keyinit` against
    /// the owner's UID as read before queuing.
    AddKeyInit {
        /// The caller's SIGKEY.
        sig_pub: ed25519_dalek::VerifyingKey,
        /// Up to 64 KeyInits.
        key_inits: Vec<KeyInit>,
        /// The verified tokens paying for them, aligned (empty when tokens
        /// are disabled).
        tokens: Vec<SpendId>,
        /// The clock.
        now: u64,
        /// Signatures of the receipts and the timestamp.
        reply: oneshot::Sender<Result<(Vec<String>, u64), RpcError>>,
    },
    /// FetchKeyInit (deletes one-time KeyInits).
    FetchKeyInit {
        /// Whose.
        sig_key_hash: String,
        /// The clock.
        now: u64,
        /// Keep what it says it deleted (feature `test-faults` only).
        #[cfg(feature = "test-faults")]
        keep: bool,
        /// Serve a KeyInit of its own making (feature `test-faults` only).
        #[cfg(feature = "test-faults")]
        substitute: bool,
        /// The KeyInit, the receipt and its signature.
        reply: oneshot::Sender<Result<(KeyInit, DispersalReceipt, String), RpcError>>,
    },
    /// FlushKeyInit, already through `check_flush`.
    Flush {
        /// The request.
        req: FlushRequest,
        /// The caller's SIGKEY.
        sig_pub: ed25519_dalek::VerifyingKey,
        /// The clock.
        now: u64,
        /// The receipt and its signature.
        reply: oneshot::Sender<Result<(FlushReceipt, String), RpcError>>,
    },
}

/// The keyserver's tables and its sequencer.
pub struct KsStore {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    #[cfg(feature = "test-faults")]
    faults: Arc<Faults>,
}

/// What a `test-faults` keyserver's repository does wrong on request,
/// shared by the handler that arms it and the sequencer that does it.
#[cfg(feature = "test-faults")]
#[derive(Default)]
pub struct Faults {
    /// `Test.StaleKeyInits`: `previous-sigkey` keeps the KeyInits of a
    /// SIGKEY an update replaced and serves them as the new key's;
    /// `expired` serves an expired KeyInit instead of deleting it.
    pub stale: std::sync::Mutex<Option<String>>,
    /// New SigKeyHash → the replaced one whose KeyInits were kept.
    moved: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Who the sequencer is.
pub struct SequencerConfig {
    /// The log origin.
    pub origin: String,
    /// The log in the shared file.
    pub log: LogId,
    /// The current signing key (the keyserver UID's SIGKEY).
    pub signer: SigningKey,
    /// Domains and reserved names.
    pub policy: rules::Policy,
}

fn storage(e: impl std::fmt::Display) -> RpcError {
    tracing::warn!(error = %e, "keyserver storage failed");
    RpcError::Unavailable
}

impl KsStore {
    /// Starts the sequencer on `db` (which tlog-store shares). `size` and
    /// `h_last` are the log's committed size and its last entry's H (the
    /// caller reads them from the log store).
    pub fn start(
        db: Arc<Database>,
        config: SequencerConfig,
        size: u64,
        h_last: [u8; 32],
    ) -> Result<KsStore, RpcError> {
        let txn = db.begin_write().map_err(storage)?;
        ensure_tables(&txn)?;
        txn.commit().map_err(storage)?;
        let last_time = if size == 0 {
            0
        } else {
            let read = db.begin_read().map_err(storage)?;
            let times = read.open_table(ENTRY_TIME).map_err(storage)?;
            let t = times.get(size - 1).map_err(storage)?.map(|g| g.value());
            t.ok_or_else(|| storage("the log and the keyserver tables disagree on the size"))?
        };
        let (jobs, rx) = mpsc::channel();
        #[cfg(feature = "test-faults")]
        let faults = Arc::new(Faults::default());
        let mut seq = Sequencer {
            db: db.clone(),
            config,
            size,
            h_last,
            last_time,
            leaves: Vec::new(),
            #[cfg(feature = "test-faults")]
            faults: faults.clone(),
        };
        std::thread::Builder::new()
            .name("ks-sequencer".into())
            .spawn(move || seq.run(rx))
            .map_err(storage)?;
        Ok(KsStore {
            db,
            jobs,
            #[cfg(feature = "test-faults")]
            faults,
        })
    }

    /// The repository's faults, to arm (feature `test-faults` only).
    #[cfg(feature = "test-faults")]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Forgets spent tokens of keys no longer accepted (§5: a token of a
    /// retired key cannot be redeemed, so its row has no use). Returns how
    /// many rows went. Blocking; run at start.
    pub fn prune_spent(&self, accepted: &[[u8; 32]]) -> Result<u64, RpcError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let gone = {
            let mut spent = txn.open_table(SPENT).map_err(storage)?;
            let stale: Vec<Vec<u8>> = spent
                .iter()
                .map_err(storage)?
                .filter_map(|r| r.ok())
                .map(|(k, _)| k.value().to_vec())
                .filter(|k| !accepted.iter().any(|a| k.starts_with(a)))
                .collect();
            for k in &stale {
                spent.remove(k.as_slice()).map_err(storage)?;
            }
            stale.len() as u64
        };
        txn.commit().map_err(storage)?;
        Ok(gone)
    }

    /// How many tokens were redeemed and are still remembered.
    pub fn spent_count(&self) -> Result<u64, RpcError> {
        use redb::ReadableTableMetadata as _;
        let read = self.db.begin_read().map_err(storage)?;
        read.open_table(SPENT)
            .map_err(storage)?
            .len()
            .map_err(storage)
    }

    /// Queues a job; its answer comes on the job's channel.
    pub fn submit(&self, job: Job) -> Result<(), RpcError> {
        self.jobs.send(job).map_err(|_| RpcError::Unavailable)
    }

    /// A read handle for the blocking pool.
    pub fn reader(&self) -> Reader {
        Reader {
            db: self.db.clone(),
        }
    }
}

/// Reads of the keyserver tables (blocking: call on the blocking pool).
#[derive(Clone)]
pub struct Reader {
    db: Arc<Database>,
}

impl Reader {
    /// Reads `db` (a mirror's file, whose `uid` table it fills with
    /// [`put_uids`]).
    pub fn new(db: Arc<Database>) -> Reader {
        Reader { db }
    }

    /// The stored reply for a UIDIndex.
    pub fn uid(&self, index: &[u8; 32]) -> Result<Option<Vec<u8>>, RpcError> {
        let read = self.db.begin_read().map_err(storage)?;
        let t = read.open_table(UID).map_err(storage)?;
        Ok(t.get(&index[..])
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    /// The identity row of `identity`.
    pub fn identity(&self, identity: &str) -> Result<Option<IdentityRow>, RpcError> {
        let read = self.db.begin_read().map_err(storage)?;
        read_identity(&read.open_table(IDENTITY).map_err(storage)?, identity)
    }

    /// Every position of `identity` (ascending), committed or not yet
    /// published: callers cut at the published size.
    pub fn positions(&self, identity: &str) -> Result<Vec<u64>, RpcError> {
        let read = self.db.begin_read().map_err(storage)?;
        let t = read.open_table(BY_IDENTITY).map_err(storage)?;
        let Some(v) = t.get(identity).map_err(storage)? else {
            return Ok(Vec::new());
        };
        Ok(v.value()
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
            .collect())
    }

    /// The row of the identity whose current SIGKEY is `sig_pub`, if any.
    pub fn owner(
        &self,
        sig_pub: &ed25519_dalek::VerifyingKey,
    ) -> Result<Option<IdentityRow>, RpcError> {
        let read = self.db.begin_read().map_err(storage)?;
        let hash = sig_key_hash(sig_pub.as_bytes());
        let ident = read
            .open_table(SIGKEY)
            .map_err(storage)?
            .get(hash.as_str())
            .map_err(storage)?
            .map(|g| g.value().to_string());
        match ident {
            None => Ok(None),
            Some(i) => read_identity(&read.open_table(IDENTITY).map_err(storage)?, &i),
        }
    }
}

fn ensure_tables(txn: &redb::WriteTransaction) -> Result<(), RpcError> {
    txn.open_table(UID).map_err(storage)?;
    txn.open_table(IDENTITY).map_err(storage)?;
    txn.open_table(SIGKEY).map_err(storage)?;
    txn.open_table(UIDHASH).map_err(storage)?;
    txn.open_table(ENTRY_TIME).map_err(storage)?;
    txn.open_table(ENTRY_POS).map_err(storage)?;
    txn.open_table(KEYINIT).map_err(storage)?;
    txn.open_table(KEYINIT_HWM).map_err(storage)?;
    txn.open_table(KEYINIT_SEEN).map_err(storage)?;
    txn.open_table(FLUSH_NONCE).map_err(storage)?;
    txn.open_table(SPENT).map_err(storage)?;
    txn.open_table(BY_IDENTITY).map_err(storage)?;
    Ok(())
}

fn read_identity(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    identity: &str,
) -> Result<Option<IdentityRow>, RpcError> {
    match t.get(identity).map_err(storage)? {
        None => Ok(None),
        Some(v) => IdentityRow::from_lcj(v.value())
            .map(Some)
            .map_err(|e| storage(format!("identity row does not decode: {e}"))),
    }
}

/// A Create or Update as the sequencer applies it.
#[derive(Clone, Copy)]
struct UidArgs<'a> {
    kind: Kind,
    msg: &'a UidMessage,
    profiled: &'a uid::ProfiledUid,
    token: Option<SpendId>,
    keyserver: bool,
    forced: bool,
    reply_key: Option<&'a SigningKey>,
    plaintext: Option<&'a [u8]>,
    now: u64,
}

struct Sequencer {
    db: Arc<Database>,
    config: SequencerConfig,
    /// Entries committed.
    size: u64,
    /// H of the last committed entry.
    h_last: [u8; 32],
    /// TIMESTAMP of the last committed entry.
    last_time: u64,
    /// This batch's leaves, appended just before the commit.
    leaves: Vec<Vec<u8>>,
    #[cfg(feature = "test-faults")]
    faults: Arc<Faults>,
}

/// A job's answer, sent only after the commit.
enum Answer {
    Uid(
        oneshot::Sender<Result<UidMessageReply, RpcError>>,
        Result<UidMessageReply, RpcError>,
    ),
    Add(
        oneshot::Sender<Result<(Vec<String>, u64), RpcError>>,
        Result<(Vec<String>, u64), RpcError>,
    ),
    Fetch(
        oneshot::Sender<Result<(KeyInit, DispersalReceipt, String), RpcError>>,
        Result<(KeyInit, DispersalReceipt, String), RpcError>,
    ),
    Flush(
        oneshot::Sender<Result<(FlushReceipt, String), RpcError>>,
        Result<(FlushReceipt, String), RpcError>,
    ),
}

impl Answer {
    fn send(self, failed: bool) {
        // A failed commit turns every answer into "unavailable": nothing
        // of the batch is stored.
        macro_rules! send {
            ($tx:expr, $r:expr) => {{
                let _ = $tx.send(if failed {
                    Err(RpcError::Unavailable)
                } else {
                    $r
                });
            }};
        }
        match self {
            Answer::Uid(tx, r) => send!(tx, r),
            Answer::Add(tx, r) => send!(tx, r),
            Answer::Fetch(tx, r) => send!(tx, r),
            Answer::Flush(tx, r) => send!(tx, r),
        }
    }
}

impl Sequencer {
    /// The armed `Test.StaleKeyInits` kind (never without `test-faults`).
    fn stale(&self) -> Option<String> {
        #[cfg(feature = "test-faults")]
        return self.faults.stale.lock().ok().and_then(|s| s.clone());
        #[cfg(not(feature = "test-faults"))]
        None
    }

    /// Remembers that `new`'s KeyInits are served from `old`'s.
    #[cfg(feature = "test-faults")]
    fn keep_moved(&self, new: &str, old: &str) {
        if let Ok(mut m) = self.faults.moved.lock() {
            m.insert(new.to_string(), old.to_string());
        }
    }

    /// Where `hash`'s KeyInits are read from.
    fn source_of(&self, hash: &str) -> String {
        #[cfg(feature = "test-faults")]
        if self.stale().as_deref() == Some("previous-sigkey") {
            if let Some(old) = self
                .faults
                .moved
                .lock()
                .ok()
                .and_then(|m| m.get(hash).cloned())
            {
                return old;
            }
        }
        hash.to_string()
    }

    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 1024 {
                    break;
                }
            }
            let saved = (self.size, self.h_last, self.last_time);
            let mut answers = Vec::with_capacity(batch.len());
            let committed = match self.db.begin_write() {
                Err(e) => {
                    tracing::warn!(error = %e, "cannot begin a keyserver transaction");
                    for job in batch {
                        answers.push(unanswered(job));
                    }
                    false
                }
                Ok(txn) => {
                    let mut fatal = false;
                    let first = self.size;
                    self.leaves.clear();
                    for job in batch {
                        let answer = self.apply(&txn, job);
                        if let Some(RpcError::Unavailable) = answer_error(&answer) {
                            fatal = true;
                        }
                        answers.push(answer);
                    }
                    // The batch's entries in one append: the tiles are
                    // integrated once per batch, not once per entry.
                    if !fatal && !self.leaves.is_empty() {
                        fatal = !self.append_batch(&txn, first);
                    }
                    if fatal {
                        let _ = txn.abort();
                        false
                    } else {
                        match txn.commit() {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "keyserver commit failed");
                                false
                            }
                        }
                    }
                }
            };
            if !committed {
                (self.size, self.h_last, self.last_time) = saved;
            }
            for a in answers {
                a.send(!committed);
            }
        }
    }

    fn apply(&mut self, txn: &redb::WriteTransaction, job: Job) -> Answer {
        match job {
            Job::Uid {
                kind,
                msg,
                profiled,
                token,
                keyserver,
                forced,
                reply_key,
                plaintext,
                now,
                reply,
            } => Answer::Uid(
                reply,
                self.uid(
                    txn,
                    &UidArgs {
                        kind,
                        msg: &msg,
                        profiled: &profiled,
                        token,
                        keyserver,
                        forced,
                        reply_key: reply_key.as_ref(),
                        plaintext: plaintext.as_deref(),
                        now,
                    },
                ),
            ),
            Job::AddKeyInit {
                sig_pub,
                key_inits,
                tokens,
                now,
                reply,
            } => Answer::Add(
                reply,
                self.add_key_inits(txn, &sig_pub, &key_inits, &tokens, now),
            ),
            Job::FetchKeyInit {
                sig_key_hash,
                now,
                #[cfg(feature = "test-faults")]
                keep,
                #[cfg(feature = "test-faults")]
                substitute,
                reply,
            } => {
                #[cfg(not(feature = "test-faults"))]
                let (keep, substitute) = (false, false);
                Answer::Fetch(
                    reply,
                    self.fetch_key_init(txn, &sig_key_hash, now, keep, substitute),
                )
            }
            Job::Flush {
                req,
                sig_pub,
                now,
                reply,
            } => Answer::Flush(reply, self.flush(txn, &req, &sig_pub, now)),
        }
    }

    /// Appends the batch's leaves at `first`; false (and a log line) if the
    /// log did not put them exactly there.
    fn append_batch(&mut self, txn: &redb::WriteTransaction, first: u64) -> bool {
        let leaves = std::mem::take(&mut self.leaves);
        match tlog_store::redb::append_in(txn, &self.config.log, &leaves) {
            Ok(appended) => {
                let expected = (first..).take(leaves.len());
                if appended.iter().map(|a| a.index).eq(expected) {
                    true
                } else {
                    tracing::error!(
                        first,
                        "the log did not put the batch where the keyserver expected"
                    );
                    false
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "appending the batch to the log failed");
                false
            }
        }
    }

    /// §4.2, in `txn`; the entry is appended with the batch.
    fn uid(
        &mut self,
        txn: &redb::WriteTransaction,
        args: &UidArgs<'_>,
    ) -> Result<UidMessageReply, RpcError> {
        let UidArgs {
            kind,
            msg,
            profiled,
            token,
            keyserver,
            forced,
            reply_key,
            plaintext,
            now,
        } = *args;
        let u = match plaintext {
            Some(p) => uid::uid_hash_of(p),
            None => msg.uid_hash(),
        };
        let index = uid_index(&u);
        let mut uids = txn.open_table(UID).map_err(storage)?;
        // A retry of a committed request gets the stored reply.
        if txn
            .open_table(UIDHASH)
            .map_err(storage)?
            .get(&u[..])
            .map_err(storage)?
            .is_some()
        {
            let stored = uids
                .get(&index[..])
                .map_err(storage)?
                .ok_or_else(|| storage("uidhash without its reply"))?;
            return UidMessageReply::from_lcj(stored.value()).map_err(storage);
        }
        let ident = &msg.content.identity;
        let mut identities = txn.open_table(IDENTITY).map_err(storage)?;
        let prev = read_identity(&identities, ident)?;
        let prev_state = prev.as_ref().map(IdentityRow::state).transpose()?;
        match (kind, forced) {
            (_, true) => {}
            (Kind::Create, false) => rules::check_create(prev_state.as_ref(), msg, now)?,
            (Kind::Update, false) => rules::check_update(prev_state.as_ref(), msg, now)?,
        }
        // LASTENTRY: a chain entry appended within the last hour, or the
        // newest one; "" only for the keyserver's genesis.
        let genesis = keyserver && self.size == 0;
        let found = match &profiled.last_entry {
            None => None,
            Some(e) => {
                let positions = txn.open_table(ENTRY_POS).map_err(storage)?;
                let row = positions
                    .get(&e.hash()[..])
                    .map_err(storage)?
                    .map(|g| g.value().to_vec());
                // The entry must be the one stored there, not only its H.
                row.filter(|r| r.len() == 8 + ks_core::entry::ENTRY_LEN && r[8..] == e.0[..])
                    .and_then(|r| r[..8].try_into().ok().map(u64::from_be_bytes))
            }
        };
        let fresh = match found {
            Some(q) if q + 1 == self.size => Some(q),
            Some(q) => {
                let times = txn.open_table(ENTRY_TIME).map_err(storage)?;
                let t = times.get(q).map_err(storage)?.map(|g| g.value());
                t.filter(|t| *t + LASTENTRY_WINDOW >= now).map(|_| q)
            }
            None => None,
        };
        rules::check_last_entry(profiled.last_entry.as_ref(), fresh, 0, self.size, genesis)?;
        // Paid for last, so a refused call spends nothing; a retry of a
        // committed call got its stored reply above.
        let method = match kind {
            Kind::Create => "CreateUID",
            Kind::Update => "UpdateUID",
        };
        let paying: Vec<(u64, SpendId)> = token.into_iter().map(|t| (0, t)).collect();
        spend(txn, &paying, now, method)?;

        let mut nonce = [0u8; 8];
        let mut iv = [0u8; 16];
        let mut iv2 = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        rand::rngs::OsRng.fill_bytes(&mut iv);
        rand::rngs::OsRng.fill_bytes(&mut iv2);
        let entry = Entry::build(ident, &u, &nonce, &iv, &self.h_last);
        let pos = self.size;
        // Appended with the rest of the batch, in order, before the commit.
        self.leaves.push(entry.leaf().to_vec());
        let timestamp = now.max(self.last_time);
        let reply_entry = ReplyEntry {
            hashchain_entry: b64::encode(&entry.0),
            hashchain_pos: pos,
            origin: self.config.origin.clone(),
            timestamp,
            uid_message_encrypted: match plaintext {
                Some(p) => uid::seal_plaintext(p.to_vec(), &iv2),
                None => uid::seal(msg, &iv2),
            },
        };
        let reply = UidMessageReply {
            server_signature: sign(
                reply_key.unwrap_or(&self.config.signer),
                Ctx::UidReply,
                &reply_entry,
            ),
            entry: reply_entry,
        };
        uids.insert(&index[..], &reply.to_lcj()[..])
            .map_err(storage)?;
        let row = IdentityRow {
            pos,
            uid_index: b64::encode(&index),
            uid: msg.clone(),
        };
        identities
            .insert(ident.as_str(), &row.to_lcj()[..])
            .map_err(storage)?;
        txn.open_table(UIDHASH)
            .map_err(storage)?
            .insert(&u[..], pos)
            .map_err(storage)?;
        {
            let mut by_identity = txn.open_table(BY_IDENTITY).map_err(storage)?;
            let mut list = by_identity
                .get(ident.as_str())
                .map_err(storage)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            list.extend_from_slice(&pos.to_be_bytes());
            by_identity
                .insert(ident.as_str(), list.as_slice())
                .map_err(storage)?;
        }
        txn.open_table(ENTRY_TIME)
            .map_err(storage)?
            .insert(pos, timestamp)
            .map_err(storage)?;
        let mut pos_row = pos.to_be_bytes().to_vec();
        pos_row.extend_from_slice(&entry.0);
        txn.open_table(ENTRY_POS)
            .map_err(storage)?
            .insert(&entry.hash()[..], pos_row.as_slice())
            .map_err(storage)?;
        let new_hash = sig_key_hash(profiled.sig_key.as_bytes());
        let mut sigkeys = txn.open_table(SIGKEY).map_err(storage)?;
        if let Some(prev) = &prev {
            let old = prev
                .uid
                .content
                .sig_key
                .verifying_key()
                .map(|k| sig_key_hash(k.as_bytes()))
                .unwrap_or_default();
            if old != new_hash {
                // A new SIGKEY (or a reclaim): the old key's KeyInits go.
                sigkeys.remove(old.as_str()).map_err(storage)?;
                if self.stale().as_deref() == Some("previous-sigkey") {
                    #[cfg(feature = "test-faults")]
                    self.keep_moved(&new_hash, &old);
                } else {
                    delete_key_inits(txn, &old)?;
                }
            }
        }
        sigkeys
            .insert(new_hash.as_str(), ident.as_str())
            .map_err(storage)?;
        self.size += 1;
        self.h_last = *entry.hash();
        self.last_time = timestamp;
        Ok(reply)
    }

    /// The identity whose current SIGKEY is `sig_pub`, if it is current.
    fn current_owner(
        &self,
        txn: &redb::WriteTransaction,
        sig_pub: &ed25519_dalek::VerifyingKey,
        now: u64,
    ) -> Result<IdentityRow, RpcError> {
        let hash = sig_key_hash(sig_pub.as_bytes());
        let ident = txn
            .open_table(SIGKEY)
            .map_err(storage)?
            .get(hash.as_str())
            .map_err(storage)?
            .map(|g| g.value().to_string())
            .ok_or(RpcError::IdentityUnknown)?;
        let row = read_identity(&txn.open_table(IDENTITY).map_err(storage)?, &ident)?
            .ok_or(RpcError::IdentityUnknown)?;
        let state = row.state()?;
        if !state.is_current(now) || state.sig_key.pubkey != b64::encode(sig_pub.as_bytes()) {
            return Err(RpcError::IdentityUnknown);
        }
        Ok(row)
    }

    /// §4.3, all or nothing.
    fn add_key_inits(
        &mut self,
        txn: &redb::WriteTransaction,
        sig_pub: &ed25519_dalek::VerifyingKey,
        key_inits: &[KeyInit],
        tokens: &[SpendId],
        now: u64,
    ) -> Result<(Vec<String>, u64), RpcError> {
        let row = self.current_owner(txn, sig_pub, now)?;
        let hash = sig_key_hash(sig_pub.as_bytes());
        let repos = row.uid.content.repo_uris.clone();
        let seen = txn.open_table(KEYINIT_SEEN).map_err(storage)?;
        let mut hwm_table = txn.open_table(KEYINIT_HWM).map_err(storage)?;
        let mut hwm = hwm_table
            .get(hash.as_str())
            .map_err(storage)?
            .map(|g| g.value());
        let mut signatures = Vec::with_capacity(key_inits.len());
        let mut fresh = Vec::new();
        for (i, ki) in key_inits.iter().enumerate() {
            let ki_hash = ki.hash();
            if let Some(stored) = seen.get(ki_hash.as_str()).map_err(storage)? {
                // A retry: the original receipt.
                let r = SignedReceipt::from_lcj(stored.value()).map_err(storage)?;
                signatures.push(Some(r.signature));
                continue;
            }
            // The signatures and anchors were checked before queuing; the
            // UID may have changed since (a revocation shortens NOTAFTER).
            if ki.contents.not_after > row.uid.content.not_after
                || !repos.contains(&ki.contents.repo_uri)
            {
                return Err(RpcError::TimeWindow(format!(
                    "KeyInits[{i}] outlives the owner's UID"
                )));
            }
            if hwm.is_some_and(|h| ki.contents.msg_count <= h) {
                return Err(RpcError::BadMsgcount {
                    expected: hwm.map_or(0, |h| h + 1),
                });
            }
            hwm = Some(ki.contents.msg_count);
            signatures.push(None);
            fresh.push((i, ki_hash));
        }
        drop(seen);
        let mut table = txn.open_table(KEYINIT).map_err(storage)?;
        let stored = table
            .range(prefix_range(&hash).0.as_slice()..prefix_range(&hash).1.as_slice())
            .map_err(storage)?
            .count();
        if stored + fresh.len() > MAX_KEYINITS {
            return Err(RpcError::KeyinitLimit);
        }
        // One token per new KeyInit; a retried one was paid for already.
        if !tokens.is_empty() {
            let paying: Vec<(u64, SpendId)> = fresh
                .iter()
                .filter_map(|(i, _)| Some((*i as u64, *tokens.get(*i)?)))
                .collect();
            if paying.len() != fresh.len() {
                return Err(RpcError::PaymentRequired);
            }
            spend(txn, &paying, now, "AddKeyInit")?;
        }
        let timestamp = now;
        let mut seen = txn.open_table(KEYINIT_SEEN).map_err(storage)?;
        for (i, ki_hash) in fresh {
            let ki = &key_inits[i];
            table
                .insert(keyinit_key(&hash, ki).as_slice(), &ki.to_lcj()[..])
                .map_err(storage)?;
            let receipt = KeyInitReceipt {
                key_init_hash: ki_hash.clone(),
                origin: self.config.origin.clone(),
                sig_key_hash: hash.clone(),
                timestamp,
            };
            let signature = sign(&self.config.signer, Ctx::KeyinitReceipt, &receipt);
            seen.insert(
                ki_hash.as_str(),
                &SignedReceipt {
                    receipt,
                    signature: signature.clone(),
                }
                .to_lcj()[..],
            )
            .map_err(storage)?;
            signatures[i] = Some(signature);
        }
        if let Some(h) = hwm {
            hwm_table.insert(hash.as_str(), h).map_err(storage)?;
        }
        let signatures = signatures
            .into_iter()
            .map(|s| s.ok_or(RpcError::Internal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((signatures, timestamp))
    }

    /// §4.4: choose, maybe delete, sign a receipt.
    fn fetch_key_init(
        &mut self,
        txn: &redb::WriteTransaction,
        hash: &str,
        now: u64,
        keep: bool,
        substitute: bool,
    ) -> Result<(KeyInit, DispersalReceipt, String), RpcError> {
        let mut table = txn.open_table(KEYINIT).map_err(storage)?;
        let (lo, hi) = prefix_range(&self.source_of(hash));
        let mut keys = Vec::new();
        let mut expired = Vec::new();
        for row in table.range(lo.as_slice()..hi.as_slice()).map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            let k = k.value().to_vec();
            let st = stored_of_key(&k).ok_or_else(|| storage("a KeyInit key is malformed"))?;
            if st.not_after <= now {
                expired.push(k);
            } else {
                keys.push((k, st));
            }
        }
        let serve_expired = self.stale().as_deref() == Some("expired");
        if !serve_expired {
            for k in &expired {
                table.remove(k.as_slice()).map_err(storage)?;
            }
        }
        let stored: Vec<Stored> = keys.iter().map(|(_, st)| st.clone()).collect();
        let draws = [rand::rngs::OsRng.next_u64(), rand::rngs::OsRng.next_u64()];
        let d = match expired.first() {
            // A faulty repository serves what it should have deleted.
            Some(k) if serve_expired => {
                let st = stored_of_key(k).ok_or_else(|| storage("a KeyInit key is malformed"))?;
                keys = vec![(k.clone(), st)];
                ks_core::keyinit::Dispersal {
                    serve: 0,
                    delete: false,
                    one_time: false,
                }
            }
            _ => disperse(&stored, now, draws).ok_or(RpcError::NoKeyinit)?,
        };
        let key = keys.swap_remove(d.serve).0;
        let ki = match table.get(key.as_slice()).map_err(storage)? {
            Some(v) => KeyInit::from_lcj(v.value()).map_err(storage)?,
            None => return Err(storage("a KeyInit vanished inside its transaction")),
        };
        if d.delete && !keep {
            table.remove(key.as_slice()).map_err(storage)?;
        }
        let ki = if substitute {
            // A PF key the server holds, in an anchor it can seal (SIGKEY
            // is public), signed by the only key it has: its own.
            let c = &ki.contents;
            let mut forged = ks_core::author::key_init(
                &self.config.signer,
                &c.repo_uri,
                &ks_core::author::anchor(&[9; 32], "mix.evil", "ZXZpbA=="),
                &[7; 16],
                c.msg_count,
                c.fallback,
                c.not_before,
                c.not_after,
            );
            forged.contents.sig_key_hash = c.sig_key_hash.clone();
            forged
        } else {
            ki
        };
        let receipt = DispersalReceipt {
            key_init_hash: ki.hash(),
            one_time: d.one_time,
            origin: self.config.origin.clone(),
            sig_key_hash: hash.to_string(),
            timestamp: now,
        };
        let signature = sign(&self.config.signer, Ctx::KeyinitDispersal, &receipt);
        Ok((ki, receipt, signature))
    }

    /// §4.5: the nonce row and the deletion in one transaction.
    fn flush(
        &mut self,
        txn: &redb::WriteTransaction,
        req: &FlushRequest,
        sig_pub: &ed25519_dalek::VerifyingKey,
        now: u64,
    ) -> Result<(FlushReceipt, String), RpcError> {
        self.current_owner(txn, sig_pub, now)?;
        let mut nonces = txn.open_table(FLUSH_NONCE).map_err(storage)?;
        let mut key = req.sig_key_hash.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(req.nonce.as_bytes());
        if nonces.get(key.as_slice()).map_err(storage)?.is_some() {
            return Err(RpcError::Replay);
        }
        // Forget nonces whose window has passed (bounded table).
        let expired: Vec<Vec<u8>> = nonces
            .iter()
            .map_err(storage)?
            .filter_map(|r| r.ok())
            .filter(|(_, exp)| exp.value() <= now)
            .map(|(k, _)| k.value().to_vec())
            .collect();
        for k in expired {
            nonces.remove(k.as_slice()).map_err(storage)?;
        }
        nonces
            .insert(key.as_slice(), now + FLUSH_NONCE_TTL)
            .map_err(storage)?;
        let flushed = delete_key_inits(txn, &req.sig_key_hash)?;
        let receipt = FlushReceipt {
            flushed,
            nonce: req.nonce.clone(),
            origin: self.config.origin.clone(),
            sig_key_hash: req.sig_key_hash.clone(),
            timestamp: now,
        };
        let signature = sign(&self.config.signer, Ctx::FlushReceipt, &receipt);
        Ok((receipt, signature))
    }
}

/// Redeems `tokens` (each with its index in the call) in `txn`: all of
/// them, or none if any was spent before or repeats within the call.
fn spend(
    txn: &redb::WriteTransaction,
    tokens: &[(u64, SpendId)],
    now: u64,
    method: &str,
) -> Result<(), RpcError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let mut spent = txn.open_table(SPENT).map_err(storage)?;
    for (n, (index, id)) in tokens.iter().enumerate() {
        if tokens[..n].iter().any(|(_, t)| t == id)
            || spent.get(&id[..]).map_err(storage)?.is_some()
        {
            return Err(RpcError::TokenSpent { index: *index });
        }
    }
    let mut row = now.to_be_bytes().to_vec();
    row.extend_from_slice(method.as_bytes());
    for (_, id) in tokens {
        spent.insert(&id[..], row.as_slice()).map_err(storage)?;
    }
    Ok(())
}

fn unanswered(job: Job) -> Answer {
    match job {
        Job::Uid { reply, .. } => Answer::Uid(reply, Err(RpcError::Unavailable)),
        Job::AddKeyInit { reply, .. } => Answer::Add(reply, Err(RpcError::Unavailable)),
        Job::FetchKeyInit { reply, .. } => Answer::Fetch(reply, Err(RpcError::Unavailable)),
        Job::Flush { reply, .. } => Answer::Flush(reply, Err(RpcError::Unavailable)),
    }
}

fn answer_error(a: &Answer) -> Option<&RpcError> {
    match a {
        Answer::Uid(_, Err(e)) | Answer::Add(_, Err(e)) | Answer::Fetch(_, Err(e)) => Some(e),
        Answer::Flush(_, Err(e)) => Some(e),
        _ => None,
    }
}

/// The KeyInit table's key: SigKeyHash ‖ 0 ‖ FALLBACK ‖ NOTAFTER ‖
/// MSGCOUNT ‖ NOTBEFORE (big-endian, so one SigKeyHash's rows are
/// contiguous).
fn keyinit_key(hash: &str, ki: &KeyInit) -> Vec<u8> {
    let mut k = hash.as_bytes().to_vec();
    k.push(0);
    k.push(u8::from(ki.contents.fallback));
    k.extend_from_slice(&ki.contents.not_after.to_be_bytes());
    k.extend_from_slice(&ki.contents.msg_count.to_be_bytes());
    k.extend_from_slice(&ki.contents.not_before.to_be_bytes());
    k
}

/// What dispersal needs, read back from a KeyInit key.
fn stored_of_key(key: &[u8]) -> Option<Stored> {
    let tail = key.len().checked_sub(25)?;
    let t = &key[tail..];
    let be = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    Some(Stored {
        fallback: t[0] == 1,
        not_after: be(&t[1..9])?,
        msg_count: be(&t[9..17])?,
        not_before: be(&t[17..25])?,
    })
}

/// All keys of one SigKeyHash: [hash ‖ 0, hash ‖ 1).
fn prefix_range(hash: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = hash.as_bytes().to_vec();
    let mut hi = lo.clone();
    lo.push(0);
    hi.push(1);
    (lo, hi)
}

fn delete_key_inits(txn: &redb::WriteTransaction, hash: &str) -> Result<u64, RpcError> {
    let mut table = txn.open_table(KEYINIT).map_err(storage)?;
    let (lo, hi) = prefix_range(hash);
    let keys: Vec<Vec<u8>> = table
        .range(lo.as_slice()..hi.as_slice())
        .map_err(storage)?
        .filter_map(|r| r.ok())
        .map(|(k, _)| k.value().to_vec())
        .collect();
    for k in &keys {
        table.remove(k.as_slice()).map_err(storage)?;
    }
    Ok(keys.len() as u64)
}

/// Stores replicated `uid` rows (UIDIndex → LCJ(UIDMessageReply)) in one
/// durable transaction: a mirror's, before the entries they belong to are
/// imported (keyserver.md §8). Rows are immutable, so a row written again
/// is the same bytes.
pub fn put_uids(db: &Database, rows: &[([u8; 32], Vec<u8>)]) -> Result<(), RpcError> {
    if rows.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut t = txn.open_table(UID).map_err(storage)?;
        for (index, reply) in rows {
            t.insert(&index[..], reply.as_slice()).map_err(storage)?;
        }
    }
    txn.commit().map_err(storage)
}
