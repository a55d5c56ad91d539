//! The SE's state in one redb file shared with its log (§5.3, §5.4): the
//! `statechain` table beside tlog-store's tables, and the writer, one thread
//! that applies requests to coins in arrival order with
//! `statechain_core::se` and commits every waiting request in one
//! transaction (group commit across coins). A request's log entry, its coin
//! rows, its sealed secrets and its `q` row (the reply for retries) commit
//! together through `tlog_store::redb::append_in`; the reply leaves only
//! after that commit returned, so no partial signature, `x1` or key update
//! exists without its entry, and a crash before the commit changes nothing.

use std::sync::mpsc;
use std::sync::Arc;

use rand::RngCore;
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::{json, Value};
use statechain_core::auth::Op;
use statechain_core::leaf::{Body, Leaf};
use statechain_core::scalar::{ser33, Scalar};
use statechain_core::se::{
    self, Admission, Authorised, Mailbox, PendingSign, PendingX1, Policy, SeCoin, SeError,
};
use statechain_core::{LeafHash, SeId, StatechainId};
use tlog_store::LogId;
use tokio::sync::oneshot;

use crate::api::ApiError;
use crate::codec::{self, key, Corrupt, Reader, Writer};
use crate::seal::Kek;

/// The SE's table (byte keys with the prefixes of §5.3).
pub const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("statechain");

/// What a coin request asks for, parsed and with its fields typed.
#[derive(Debug, Clone)]
pub enum CoinReq {
    /// `sign/first`.
    SignFirst {
        /// The owner's commitment.
        com: [u8; 32],
    },
    /// `sign/second`.
    SignSecond {
        /// `R_s`.
        nonce: secp256k1::PublicKey,
        /// The commitment.
        com: [u8; 32],
        /// `c`.
        challenge: Scalar,
    },
    /// `sign/cancel`.
    SignCancel {
        /// `R_s`.
        nonce: secp256k1::PublicKey,
    },
    /// `transfer/sender`.
    Sender {
        /// `A_next`.
        next: secp256k1::XOnlyPublicKey,
    },
    /// `transfer/message`.
    Message {
        /// `A_next`.
        next: secp256k1::XOnlyPublicKey,
        /// `enc ‖ ciphertext`.
        enc: Vec<u8>,
    },
    /// `transfer/receiver`.
    Receiver {
        /// `A_next`.
        next: secp256k1::XOnlyPublicKey,
        /// `S_new`.
        new_server_key: secp256k1::PublicKey,
        /// `N` as the receiver verified it.
        count: u32,
        /// `t2`.
        t2: Scalar,
    },
    /// `withdraw/complete`.
    Withdraw {
        /// `N`.
        count: u32,
    },
}

impl CoinReq {
    /// The op.
    pub fn op(&self) -> Op {
        match self {
            CoinReq::SignFirst { .. } => Op::SignFirst,
            CoinReq::SignSecond { .. } => Op::SignSecond,
            CoinReq::SignCancel { .. } => Op::SignCancel,
            CoinReq::Sender { .. } => Op::TransferSender,
            CoinReq::Message { .. } => Op::TransferMessage,
            CoinReq::Receiver { .. } => Op::TransferReceiver,
            CoinReq::Withdraw { .. } => Op::WithdrawComplete,
        }
    }
}

/// A reply and whether it is a replay of a recorded one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The JSON body.
    pub body: Value,
    /// `LK-Replay: 1`.
    pub replay: bool,
}

/// A stored `(key, value)` pair.
pub type Row = (Vec<u8>, Vec<u8>);

/// A job for the writer.
pub enum Job {
    /// `deposit/init`.
    Deposit {
        /// The token.
        token_id: [u8; 16],
        /// The depositor's authorisation (checked).
        auth: Authorised,
        /// The answer.
        reply: oneshot::Sender<Result<Reply, ApiError>>,
    },
    /// Any request on an existing coin.
    Coin {
        /// The coin.
        id: StatechainId,
        /// The client's view of the head.
        head: LeafHash,
        /// The authorisation (signature checked under `auth.key`).
        auth: Authorised,
        /// The request.
        req: Box<CoinReq>,
        /// The clock.
        now: u64,
        /// The answer.
        reply: oneshot::Sender<Result<Reply, ApiError>>,
    },
    /// `POST /v1/tokens`.
    NewToken {
        /// Born paid (backend `free`).
        paid: bool,
        /// The fee.
        fee_sat: u64,
        /// The answer.
        reply: oneshot::Sender<Result<[u8; 16], ApiError>>,
    },
    /// KEK rotation (§2.6): re-seal every live secret under the next epoch.
    RotateKek {
        /// The data directory (where the KEK files are).
        dir: std::path::PathBuf,
        /// The new epoch, or why not.
        reply: oneshot::Sender<Result<u32, ApiError>>,
    },
    /// `statechaind token mark-paid` (backend `manual`).
    MarkPaid {
        /// The token.
        token_id: [u8; 16],
        /// The answer.
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
}

/// A token's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// 0 unpaid, 1 paid, 2 spent.
    pub status: u8,
    /// Its fee.
    pub fee_sat: u64,
    /// The coin it opened, and by whom.
    pub spent: Option<(StatechainId, [u8; 32])>,
}

impl Token {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&[self.status]).u64(self.fee_sat);
        if let Some((id, a)) = &self.spent {
            w.bytes(id).bytes(a);
        }
        w.0
    }

    /// Decodes a token row.
    pub fn decode(row: &[u8]) -> Result<Token, Corrupt> {
        let mut r = Reader::new(row, "token");
        let status = r.u8()?;
        let fee_sat = r.u64()?;
        let rest = r.rest();
        let spent = match rest.len() {
            0 => None,
            48 => Some((
                rest[..16].try_into().map_err(|_| Corrupt("token"))?,
                rest[16..].try_into().map_err(|_| Corrupt("token"))?,
            )),
            _ => return Err(Corrupt("token")),
        };
        Ok(Token {
            status,
            fee_sat,
            spent,
        })
    }

    /// The status name.
    pub fn status_name(&self) -> &'static str {
        match self.status {
            0 => "unpaid",
            1 => "paid",
            _ => "spent",
        }
    }
}

/// Who the writer is.
pub struct WriterConfig {
    /// The SE id.
    pub se_id: SeId,
    /// Coin policy.
    pub policy: Policy,
    /// The log.
    pub log: LogId,
    /// The sealing key (replaced by a rotation).
    pub kek: Arc<Kek>,
    /// Crash hooks (feature `danger-test-hooks`).
    pub hooks: crate::hooks::Hooks,
}

/// The handle the HTTP side uses.
#[derive(Clone)]
pub struct SeStore {
    /// The database (reads happen directly).
    pub db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
}

fn storage<E: std::fmt::Display>(e: E) -> ApiError {
    tracing::warn!(error = %e, "statechain storage error");
    ApiError::unavailable()
}

impl SeStore {
    /// Creates the table and starts the writer at log size `size`.
    pub fn start(db: Arc<Database>, config: WriterConfig, size: u64) -> Result<SeStore, ApiError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(TABLE).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let (tx, rx) = mpsc::channel();
        let mut writer = WriterThread {
            db: db.clone(),
            config,
            pending_kek: None,
            size,
            leaves: Vec::new(),
        };
        std::thread::Builder::new()
            .name("statechain-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(storage)?;
        Ok(SeStore { db, jobs: tx })
    }

    /// Queues a job; `unavailable` if the writer is gone.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.jobs.send(job).map_err(|_| ApiError::unavailable())
    }

    /// Reads one row.
    pub fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TABLE).map_err(storage)?;
        Ok(table.get(k).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    /// Rows whose key starts with `prefix`, from `start` (inclusive, ≥
    /// prefix), at most `limit`.
    pub fn scan(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Row>, ApiError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TABLE).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.range(start..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

struct WriterThread {
    db: Arc<Database>,
    config: WriterConfig,
    /// A rotation's new KEK, adopted once its batch committed.
    pending_kek: Option<Kek>,
    /// The log size the next appended leaf gets.
    size: u64,
    /// The batch's leaves, appended once at the end.
    leaves: Vec<Vec<u8>>,
}

/// An answer waiting for the batch's commit.
enum Answer {
    Epoch(
        oneshot::Sender<Result<u32, ApiError>>,
        Result<u32, ApiError>,
        std::path::PathBuf,
    ),
    Reply(
        oneshot::Sender<Result<Reply, ApiError>>,
        Result<Reply, ApiError>,
    ),
    Token(
        oneshot::Sender<Result<[u8; 16], ApiError>>,
        Result<[u8; 16], ApiError>,
    ),
    Unit(oneshot::Sender<Result<(), ApiError>>, Result<(), ApiError>),
}

impl Answer {
    fn send(self, failed: bool) {
        macro_rules! send {
            ($tx:expr, $r:expr) => {{
                let _ = $tx.send(if failed {
                    Err(ApiError::unavailable())
                } else {
                    $r
                });
            }};
        }
        match self {
            Answer::Epoch(tx, r, _) => send!(tx, r),
            Answer::Reply(tx, r) => send!(tx, r),
            Answer::Token(tx, r) => send!(tx, r),
            Answer::Unit(tx, r) => send!(tx, r),
        }
    }

    fn is_fatal(&self) -> bool {
        let e = match self {
            Answer::Reply(_, Err(e))
            | Answer::Token(_, Err(e))
            | Answer::Unit(_, Err(e))
            | Answer::Epoch(_, Err(e), _) => e,
            _ => return false,
        };
        e.status == 503
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn random_scalar() -> Scalar {
    loop {
        if let Ok(s) = Scalar::from_bytes(&random()) {
            return s;
        }
    }
}

fn entry_json(index: u64, hash: &LeafHash) -> Value {
    json!({"index": index, "leaf_hash": hex::encode(hash)})
}

impl WriterThread {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        // A KEK rotation runs alone: everything sealed in its batch must be
        // sealed under one key.
        let mut deferred: Option<Job> = None;
        loop {
            let first = match deferred.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            if !matches!(batch[0], Job::RotateKek { .. }) {
                while let Ok(more) = rx.try_recv() {
                    if matches!(more, Job::RotateKek { .. }) {
                        deferred = Some(more);
                        break;
                    }
                    batch.push(more);
                    if batch.len() >= 1024 {
                        break;
                    }
                }
            }
            let saved = self.size;
            let mut kinds: Vec<u8> = Vec::new();
            self.leaves.clear();
            let mut answers = Vec::with_capacity(batch.len());
            let committed = match self.db.begin_write() {
                Err(e) => {
                    tracing::warn!(error = %e, "cannot begin a statechain transaction");
                    for job in batch {
                        answers.push(unanswered(job));
                    }
                    false
                }
                Ok(txn) => {
                    let mut fatal = false;
                    for job in batch {
                        let answer = self.apply(&txn, job);
                        fatal |= answer.is_fatal();
                        answers.push(answer);
                    }
                    // The kind byte of each leaf (after "LKSC" and the version).
                    kinds = self
                        .leaves
                        .iter()
                        .filter_map(|l| l.get(5).copied())
                        .collect();
                    if !fatal && !kinds.is_empty() {
                        fatal = !self.append_batch(&txn, saved);
                    }
                    self.config.hooks.before_commit(&kinds);
                    if fatal {
                        let _ = txn.abort();
                        false
                    } else {
                        match txn.commit() {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "statechain commit failed");
                                false
                            }
                        }
                    }
                }
            };
            if committed {
                self.config.hooks.after_commit(&kinds);
            } else {
                self.size = saved;
            }
            let rotated = self.pending_kek.take();
            for a in answers {
                if let (Answer::Epoch(_, Ok(_), dir), true, Some(_)) = (&a, committed, &rotated) {
                    let old = self.config.kek.epoch();
                    if let Err(e) = Kek::shred(dir, old) {
                        tracing::error!(error = %e, "the old KEK could not be shredded; delete it by hand");
                    }
                }
                a.send(!committed);
            }
            if let (true, Some(new)) = (committed, rotated) {
                tracing::info!(
                    epoch = new.epoch(),
                    "KEK rotated; live secrets re-sealed, the old key shredded"
                );
                self.config.kek = Arc::new(new);
            }
        }
    }

    fn append_batch(&mut self, txn: &redb::WriteTransaction, first: u64) -> bool {
        let leaves = std::mem::take(&mut self.leaves);
        match tlog_store::redb::append_in(txn, &self.config.log, &leaves) {
            Ok(appended) => {
                self.size = first + leaves.len() as u64;
                let ok = appended
                    .iter()
                    .map(|a| a.index)
                    .eq(first..first + leaves.len() as u64)
                    && appended.iter().all(|a| !a.duplicate);
                if !ok {
                    tracing::error!(first, "the log did not put the batch where the SE expected");
                }
                ok
            }
            Err(e) => {
                tracing::warn!(error = %e, "appending the batch to the log failed");
                false
            }
        }
    }

    fn apply(&mut self, txn: &redb::WriteTransaction, job: Job) -> Answer {
        match job {
            Job::Deposit {
                token_id,
                auth,
                reply,
            } => Answer::Reply(reply, self.deposit(txn, &token_id, &auth)),
            Job::Coin {
                id,
                head,
                auth,
                req,
                now,
                reply,
            } => Answer::Reply(reply, self.coin_request(txn, &id, &head, &auth, &req, now)),
            Job::NewToken {
                paid,
                fee_sat,
                reply,
            } => {
                let id: [u8; 16] = random();
                let token = Token {
                    status: paid as u8,
                    fee_sat,
                    spent: None,
                };
                let r = self
                    .put(txn, &key::token(&id), &token.encode())
                    .map(|()| id);
                Answer::Token(reply, r)
            }
            Job::RotateKek { dir, reply } => {
                // A rotation is its own batch: re-seal and commit, then
                // swap keys and shred the old one.
                let r = reseal_all(txn, &self.config.kek, &dir).map(|new| {
                    self.pending_kek = Some(new);
                });
                match r {
                    Ok(()) => Answer::Epoch(reply, Ok(self.config.kek.epoch() + 1), dir),
                    Err(e) => Answer::Epoch(reply, Err(e), dir),
                }
            }
            Job::MarkPaid { token_id, reply } => {
                let r = (|| {
                    let row = self
                        .get(txn, &key::token(&token_id))?
                        .ok_or_else(|| ApiError::not_found("unknown_token", "no such token"))?;
                    let mut t = Token::decode(&row).map_err(storage)?;
                    if t.status == 0 {
                        t.status = 1;
                        self.put(txn, &key::token(&token_id), &t.encode())?;
                    }
                    Ok(())
                })();
                Answer::Unit(reply, r)
            }
        }
    }

    fn get(&self, txn: &redb::WriteTransaction, k: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        let table = txn.open_table(TABLE).map_err(storage)?;
        let v = table.get(k).map_err(storage)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn put(&self, txn: &redb::WriteTransaction, k: &[u8], v: &[u8]) -> Result<(), ApiError> {
        let mut table = txn.open_table(TABLE).map_err(storage)?;
        table.insert(k, v).map_err(storage)?;
        Ok(())
    }

    fn remove(&self, txn: &redb::WriteTransaction, k: &[u8]) -> Result<(), ApiError> {
        let mut table = txn.open_table(TABLE).map_err(storage)?;
        table.remove(k).map_err(storage)?;
        Ok(())
    }

    fn deposit(
        &mut self,
        txn: &redb::WriteTransaction,
        token_id: &[u8; 16],
        auth: &Authorised,
    ) -> Result<Reply, ApiError> {
        let row = self
            .get(txn, &key::token(token_id))?
            .ok_or_else(|| ApiError::not_found("unknown_token", "no such token"))?;
        let mut token = Token::decode(&row).map_err(storage)?;
        match (&token.spent, token.status) {
            (Some((id, a)), _) if *a == auth.key.serialize() => {
                // The same (token, A): the same coin (§3.5).
                return self
                    .recorded(txn, id, Op::DepositInit)
                    .map(|body| Reply { body, replay: true });
            }
            (Some(_), _) => {
                return Err(ApiError::conflict(
                    "token_spent",
                    "the token opened another coin",
                ))
            }
            (None, 0) => {
                return Err(ApiError::new(
                    402,
                    "token_unpaid",
                    "the token is not paid",
                    false,
                ))
            }
            _ => {}
        }
        let id: StatechainId = random();
        let step = se::open_coin(
            &self.config.se_id,
            &self.config.policy,
            id,
            random_scalar(),
            token_id,
            auth,
        )
        .map_err(ApiError::from_se)?;
        let leaf = step.leaf.clone().ok_or_else(ApiError::unavailable)?;
        let index = self.write_coin(txn, None, &step.coin, &leaf)?;
        token.status = 2;
        token.spent = Some((id, auth.key.serialize()));
        self.put(txn, &key::token(token_id), &token.encode())?;
        let body = json!({
            "statechain_id": hex::encode(id),
            "server_pubkey": hex::encode(ser33(&step.reply)),
            "entry": entry_json(index, &leaf.hash()),
        });
        self.record(txn, &id, Op::DepositInit, &auth.digest, &body)?;
        Ok(Reply {
            body,
            replay: false,
        })
    }

    /// The recorded reply of the last applied `op` on a coin.
    fn recorded(
        &self,
        txn: &redb::WriteTransaction,
        id: &StatechainId,
        op: Op,
    ) -> Result<Value, ApiError> {
        let k = key::applied(id, op.code());
        let sealed = self.get(txn, &k)?.ok_or_else(ApiError::unavailable)?;
        let plain = self.config.kek.open(&k, &sealed).map_err(storage)?;
        serde_json::from_slice(&plain[32..]).map_err(storage)
    }

    /// Records `body` as the reply to the request with `digest` (sealed:
    /// `transfer/sender`'s reply carries `x1`).
    fn record(
        &self,
        txn: &redb::WriteTransaction,
        id: &StatechainId,
        op: Op,
        digest: &[u8; 32],
        body: &Value,
    ) -> Result<(), ApiError> {
        let k = key::applied(id, op.code());
        let mut plain = digest.to_vec();
        plain.extend_from_slice(body.to_string().as_bytes());
        let sealed = self.config.kek.seal(&k, &plain);
        zeroize::Zeroize::zeroize(&mut plain);
        self.put(txn, &k, &sealed)
    }

    /// Loads everything the SE keeps for a coin.
    fn load(
        &self,
        txn: &redb::WriteTransaction,
        id: &StatechainId,
    ) -> Result<Option<SeCoin>, ApiError> {
        let Some(row) = self.get(txn, &key::coin(id))? else {
            return Ok(None);
        };
        let (chain, last_applied) = codec::decode_coin(&row).map_err(storage)?;
        let kek = &self.config.kek;
        let open = |k: Vec<u8>| -> Result<Option<Scalar>, ApiError> {
            match self.get(txn, &k)? {
                None => Ok(None),
                Some(sealed) => {
                    let plain = kek.open(&k, &sealed).map_err(storage)?;
                    Scalar::from_slice(&plain).map(Some).map_err(storage)
                }
            }
        };
        let share = open(key::share(id))?;
        let pending_sign = match self.get(txn, &key::session(id))? {
            None => None,
            Some(row) => {
                let mut r = Reader::new(&row, "session");
                let nonce_pub = r.point().map_err(storage)?;
                let commitment = r.array().map_err(storage)?;
                let created = r.u64().map_err(storage)?;
                let plain = kek.open(&key::session(id), r.rest()).map_err(storage)?;
                Some(PendingSign {
                    nonce: Scalar::from_slice(&plain).map_err(storage)?,
                    nonce_pub,
                    commitment,
                    created,
                })
            }
        };
        let pending_x1 = match self.get(txn, &key::transfer(id))? {
            None => None,
            Some(row) => {
                let mut r = Reader::new(&row, "transfer");
                let next_auth_key = r.xonly().map_err(storage)?;
                let plain = kek.open(&key::transfer(id), r.rest()).map_err(storage)?;
                Some(PendingX1 {
                    next_auth_key,
                    x1: Scalar::from_slice(&plain).map_err(storage)?,
                })
            }
        };
        let mailbox = match &chain.pending {
            None => None,
            Some(p) => {
                let a = p.next_auth_key.serialize();
                self.get(txn, &key::mailbox(&a, id))?.map(|row| {
                    let uploaded = u64::from_be_bytes(row[..8].try_into().unwrap_or([0; 8]));
                    Mailbox {
                        next_auth_key: p.next_auth_key,
                        enc: row.get(8..).unwrap_or_default().to_vec(),
                        uploaded,
                    }
                })
            }
        };
        Ok(Some(SeCoin {
            chain,
            share,
            pending_sign,
            pending_x1,
            mailbox,
            last_applied,
        }))
    }

    /// Writes the rows that differ between `old` and `new`, and the leaf's
    /// index rows; returns the leaf's log index.
    fn write_coin(
        &mut self,
        txn: &redb::WriteTransaction,
        old: Option<&SeCoin>,
        new: &SeCoin,
        leaf: &Leaf,
    ) -> Result<u64, ApiError> {
        self.write_state(txn, old, new)?;
        let index = self.size + self.leaves.len() as u64;
        let id = &new.chain.statechain_id;
        let hash = leaf.hash();
        self.put(txn, &key::entry(id, leaf.seq), &index.to_be_bytes())?;
        self.put(txn, &key::leaf(&hash), &index.to_be_bytes())?;
        self.leaves.push(leaf.encode());
        Ok(index)
    }

    fn write_state(
        &mut self,
        txn: &redb::WriteTransaction,
        old: Option<&SeCoin>,
        new: &SeCoin,
    ) -> Result<(), ApiError> {
        let id = new.chain.statechain_id;
        let kek = &self.config.kek;
        self.put(
            txn,
            &key::coin(&id),
            &codec::encode_coin(&new.chain, &new.last_applied),
        )?;
        if old.map(|o| &o.share) != Some(&new.share) {
            match &new.share {
                Some(s) => self.put(
                    txn,
                    &key::share(&id),
                    &kek.seal(&key::share(&id), &s.to_bytes()),
                )?,
                None => self.remove(txn, &key::share(&id))?,
            }
        }
        if old.map(|o| &o.pending_sign) != Some(&new.pending_sign) {
            match &new.pending_sign {
                Some(p) => {
                    let mut w = Writer::default();
                    w.bytes(&ser33(&p.nonce_pub))
                        .bytes(&p.commitment)
                        .u64(p.created);
                    w.bytes(&kek.seal(&key::session(&id), &p.nonce.to_bytes()));
                    self.put(txn, &key::session(&id), &w.0)?;
                }
                None => self.remove(txn, &key::session(&id))?,
            }
        }
        if old.map(|o| &o.pending_x1) != Some(&new.pending_x1) {
            match &new.pending_x1 {
                Some(p) => {
                    let mut w = Writer::default();
                    w.bytes(&p.next_auth_key.serialize());
                    w.bytes(&kek.seal(&key::transfer(&id), &p.x1.to_bytes()));
                    self.put(txn, &key::transfer(&id), &w.0)?;
                }
                None => self.remove(txn, &key::transfer(&id))?,
            }
        }
        if old.map(|o| &o.mailbox) != Some(&new.mailbox) {
            if let Some(m) = old.and_then(|o| o.mailbox.as_ref()) {
                self.remove(txn, &key::mailbox(&m.next_auth_key.serialize(), &id))?;
            }
            if let Some(m) = &new.mailbox {
                let mut w = Writer::default();
                w.u64(m.uploaded).bytes(&m.enc);
                self.put(txn, &key::mailbox(&m.next_auth_key.serialize(), &id), &w.0)?;
            }
        }
        Ok(())
    }

    fn coin_request(
        &mut self,
        txn: &redb::WriteTransaction,
        id: &StatechainId,
        head: &LeafHash,
        auth: &Authorised,
        req: &CoinReq,
        now: u64,
    ) -> Result<Reply, ApiError> {
        let coin = self
            .load(txn, id)?
            .ok_or_else(|| ApiError::not_found("unknown_statechain", "no such statechain"))?;
        let op = req.op();
        if coin.admit(op, head, auth).map_err(ApiError::from_se)? == Admission::Replay {
            return self
                .recorded(txn, id, op)
                .map(|body| Reply { body, replay: true });
        }
        let se_id = self.config.se_id;
        let (next, leaf, body) = match req {
            CoinReq::SignFirst { com } => {
                let mut attempt = 0;
                let step = loop {
                    match coin.sign_first(&se_id, &self.config.policy, *com, auth, &random(), now) {
                        Err(SeError::Internal(e)) if attempt < 3 => {
                            tracing::error!(coin = %hex::encode(id), error = %e, "server nonce draw failed; drawing again");
                            attempt += 1;
                        }
                        other => break other.map_err(ApiError::from_se)?,
                    }
                };
                let body = json!({"server_nonce": hex::encode(ser33(&step.reply))});
                (step.coin, None, body)
            }
            CoinReq::SignSecond {
                nonce,
                com,
                challenge,
            } => {
                let step = coin
                    .sign_second(&se_id, nonce, *com, challenge, auth)
                    .map_err(ApiError::from_se)?;
                let (partial, count) = step.reply;
                let leaf = step.leaf.ok_or_else(ApiError::unavailable)?;
                let index = self.size + self.leaves.len() as u64;
                self.put(
                    txn,
                    &key::signature(id, count),
                    &[index.to_be_bytes().as_slice(), &partial.to_bytes()].concat(),
                )?;
                let body = json!({
                    "partial_sig": hex::encode(partial.to_bytes()),
                    "count": count,
                    "entry": entry_json(index, &leaf.hash()),
                });
                (step.coin, Some(leaf), body)
            }
            CoinReq::SignCancel { nonce } => {
                let step = coin
                    .sign_cancel(&se_id, nonce, auth)
                    .map_err(ApiError::from_se)?;
                (step.coin, None, json!({"cancelled": true}))
            }
            CoinReq::Sender { next } => {
                let step = coin
                    .transfer_sender(&se_id, *next, random_scalar(), auth)
                    .map_err(ApiError::from_se)?;
                let leaf = step.leaf.ok_or_else(ApiError::unavailable)?;
                let index = self.size + self.leaves.len() as u64;
                let body = json!({
                    "x1": hex::encode(step.reply.to_bytes()),
                    "x1_pub": hex::encode(ser33(&step.reply.public())),
                    "entry": entry_json(index, &leaf.hash()),
                });
                (step.coin, Some(leaf), body)
            }
            CoinReq::Message { next, enc } => {
                let step = coin
                    .transfer_message(&se_id, *next, enc.clone(), auth, now)
                    .map_err(ApiError::from_se)?;
                (step.coin, None, json!({"stored": true}))
            }
            CoinReq::Receiver {
                next,
                new_server_key,
                count,
                t2,
            } => {
                let step = coin
                    .transfer_receiver(&se_id, *next, *new_server_key, *count, t2, auth)
                    .map_err(ApiError::from_se)?;
                let leaf = step.leaf.ok_or_else(ApiError::unavailable)?;
                let index = self.size + self.leaves.len() as u64;
                (
                    step.coin,
                    Some(leaf.clone()),
                    json!({"entry": entry_json(index, &leaf.hash())}),
                )
            }
            CoinReq::Withdraw { count } => {
                let step = coin
                    .withdraw_complete(&se_id, *count, auth)
                    .map_err(ApiError::from_se)?;
                let leaf = step.leaf.ok_or_else(ApiError::unavailable)?;
                let index = self.size + self.leaves.len() as u64;
                (
                    step.coin,
                    Some(leaf.clone()),
                    json!({"entry": entry_json(index, &leaf.hash())}),
                )
            }
        };
        match &leaf {
            Some(leaf) => {
                self.write_coin(txn, Some(&coin), &next, leaf)?;
            }
            None => self.write_state(txn, Some(&coin), &next)?,
        }
        self.record(txn, id, op, &auth.digest, &body)?;
        if matches!(leaf.as_ref().map(|l| &l.body), Some(Body::Final(_))) {
            tracing::info!(coin = %hex::encode(id), "withdrawn; share erased");
        }
        Ok(Reply {
            body,
            replay: false,
        })
    }
}

fn unanswered(job: Job) -> Answer {
    match job {
        Job::Deposit { reply, .. } | Job::Coin { reply, .. } => {
            Answer::Reply(reply, Err(ApiError::unavailable()))
        }
        Job::NewToken { reply, .. } => Answer::Token(reply, Err(ApiError::unavailable())),
        Job::MarkPaid { reply, .. } => Answer::Unit(reply, Err(ApiError::unavailable())),
        Job::RotateKek { reply, dir } => Answer::Epoch(reply, Err(ApiError::unavailable()), dir),
    }
}

/// The sealed part of each secret row: everything after this many bytes.
fn sealed_offset(k: &[u8]) -> Option<usize> {
    match k.first()? {
        b'z' | b'q' => Some(0),
        b'n' => Some(33 + 32 + 8),
        b'x' => Some(32),
        _ => None,
    }
}

/// Re-seals every secret row (`z`, `n`, `x`, `q`) under the next epoch's
/// KEK (created now, 0600) and records the epoch in `c ‖ "meta"`, all in
/// `txn`. The caller commits, then swaps keys and shreds the old one.
pub fn reseal_all(
    txn: &redb::WriteTransaction,
    old: &Kek,
    dir: &std::path::Path,
) -> Result<Kek, ApiError> {
    let next_epoch = old.epoch() + 1;
    // A leftover of a rotation that crashed before its commit was never
    // used: start over with a fresh key.
    Kek::shred(dir, next_epoch).map_err(storage)?;
    let new = Kek::load_or_create(dir, next_epoch).map_err(storage)?;
    let mut table = txn.open_table(TABLE).map_err(storage)?;
    let mut rows = Vec::new();
    for prefix in [b"n", b"q", b"x", b"z"] {
        let end = [prefix[0] + 1];
        for row in table
            .range(prefix.as_slice()..end.as_slice())
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            rows.push((k.value().to_vec(), v.value().to_vec()));
        }
    }
    for (k, v) in rows {
        let Some(off) = sealed_offset(&k) else {
            continue;
        };
        if v.len() < off {
            return Err(storage(format!("short secret row {}", hex::encode(&k))));
        }
        let plain = old.open(&k, &v[off..]).map_err(storage)?;
        let mut out = v[..off].to_vec();
        out.extend_from_slice(&new.seal(&k, &plain));
        table
            .insert(k.as_slice(), out.as_slice())
            .map_err(storage)?;
    }
    table
        .insert(key::META, next_epoch.to_be_bytes().as_slice())
        .map_err(storage)?;
    Ok(new)
}

/// The KEK epoch recorded in the database (0 before any rotation).
pub fn kek_epoch(db: &Database) -> Result<u32, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    let v = table.get(key::META).map_err(|e| e.to_string())?;
    Ok(match v {
        Some(v) => u32::from_be_bytes(
            v.value()
                .try_into()
                .map_err(|_| "corrupt meta row".to_string())?,
        ),
        None => 0,
    })
}

/// §5.4 rule 5's inputs: every coin with the log index its `e ‖ id ‖
/// head_seq` row names and the head it records; the caller compares each
/// with the log.
pub fn coin_heads(db: &Database) -> Result<Vec<(StatechainId, Option<u64>, LeafHash)>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for row in table
        .range(b"s".as_slice()..b"t".as_slice())
        .map_err(|e| e.to_string())?
    {
        let (_, v) = row.map_err(|e| e.to_string())?;
        let (chain, _) = codec::decode_coin(v.value()).map_err(|e| e.to_string())?;
        let id = chain.statechain_id;
        let index = table
            .get(key::entry(&id, chain.head_seq).as_slice())
            .map_err(|e| e.to_string())?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes));
        out.push((id, index, chain.head));
    }
    Ok(out)
}
