//! `ks-client`: a keyserver client that believes nothing it has not
//! verified (keyserver.md §6).
//!
//! - **Sync** (§6.2): the head, then the new entries in chunks; every entry
//!   is link-checked and folded into a copy of the compact range, which
//!   must reach the checkpoint's root before anything is kept. The
//!   checkpoint must be signed by the key the chain itself scheduled for
//!   its size (§3.8), starting from the pinned H_0; rollbacks and forks
//!   are refused. Work is proportional to the new entries: there is never
//!   a re-scan from entry 0.
//! - **Key schedule**: the keyserver's own UIDs, found by scanning new
//!   entries for its HashID and verified with the same UID-chain rules as
//!   anyone's.
//! - **Lookup** (§6.3): scan, fetch, verify the UID chain
//!   (`ks_core::verify`).
//! - **Alice and Bob** (§6.4, §6.5): register, publish KeyInits, flush, and
//!   start a session with every check of §6.5.
//!
//! - **Tokens** (§5, [`wallet`]): blinded requests, verified finished
//!   tokens, and paid calls that never lose a token.

use std::collections::{BTreeSet, HashMap};

use ed25519_dalek::{SigningKey, VerifyingKey};
use ks_core::author::{self, Authority, UidKeys};
use ks_core::b64;
use ks_core::capabilities::SignedCapabilities;
use ks_core::entry::Entry;
use ks_core::keyinit::{
    check_keyinit, sig_key_hash, DispersalReceipt, FlushReceipt, KeyInit, KeyInitReceipt, Window,
};
use ks_core::lcj::{object, Fields, Lcj, Value};
use ks_core::rules::Kind;
use ks_core::sig::{self, Ctx};
use ks_core::uid::{UidMessage, UidMessageReply};
use ks_core::verify::{verify_chain, Failure, Match, Verified};
use tlog_core::merkle::CompactRange;
use tlog_core::note::{KeyType, Note, VerifierKey};
use tlog_core::Checkpoint;

pub mod store;
pub mod wallet;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or answered with something that is
    /// not JSON-RPC.
    #[error("transport: {0}")]
    Transport(String),
    /// The server refused the call.
    #[error("server error {code} ({reason}): {message}")]
    Rpc {
        /// JSON-RPC code.
        code: i64,
        /// `data.reason`.
        reason: String,
        /// `message`.
        message: String,
        /// `data.index`: which of the call's tokens (token errors).
        index: Option<u64>,
    },
    /// The checkpoint lacks the cosignatures the witness policy requires.
    #[error("the checkpoint is not witnessed as required: {0}")]
    Unwitnessed(String),
    /// Not enough payment tokens in the wallet (`ks-cli tokens request`).
    #[error(
        "payment required: {needed} token(s) needed, {have} in the wallet (ks-cli tokens request)"
    )]
    PaymentRequired {
        /// The call's price.
        needed: usize,
        /// The wallet's balance.
        have: usize,
    },
    /// The request cannot be made as asked.
    #[error("{0}")]
    Usage(String),
    /// The server showed a smaller chain than one it signed before.
    #[error("rollback: the server shows size {shown}, below the verified {have}")]
    Rollback {
        /// What it showed.
        shown: u64,
        /// What the client holds.
        have: u64,
    },
    /// Two different trees of one size.
    #[error("fork: the server's checkpoint of size {size} has another root")]
    Fork {
        /// The size.
        size: u64,
    },
    /// Entries that do not reach the checkpoint's root or do not link.
    #[error("the server's data does not verify: {0}")]
    BadData(String),
    /// Entry 0 is not the pinned genesis.
    #[error("entry 0 is not the pinned keyserver genesis")]
    PinMismatch,
    /// Server-signed data that proves misbehaviour.
    #[error("misbehaviour: {0}")]
    Misbehaviour(Failure),
    /// Misbehaviour with a self-contained evidence file (§6.6).
    #[error("misbehaviour: {failure}; evidence: {proves}")]
    Evidence {
        /// What the check found.
        failure: String,
        /// What the file proves.
        proves: String,
        /// The file.
        evidence: Box<ks_core::evidence::Evidence>,
    },
    /// A KeyInit that fails §6.5, or one served twice.
    #[error("bad KeyInit: {0}")]
    BadKeyInit(String),
    /// No one-time KeyInit and the identity refuses fallbacks.
    #[error("no one-time KeyInit available (FORWARDSEC strict)")]
    NoOneTimeKeyInit,
    /// The identity does not exist or is not current.
    #[error("not found: {0}")]
    NotFound(String),
    /// The identity is registered and current (found in the local chain).
    #[error("{0} is taken")]
    Taken(String),
    /// The local state file failed.
    #[error("local state: {0}")]
    Storage(String),
}

/// How old the witnesses' cosignatures may be (keyserver.md §6.2 step 4:
/// `max_checkpoint_age`).
pub const MAX_CHECKPOINT_AGE: u64 = 3600;

/// How long published KeyInits are valid by default (30 days: a month of
/// session starts; the server accepts up to 90).
pub const KEYINIT_LIFETIME: u64 = 30 * 86_400;

/// What a client pins: `keyserver@<domain>` and H_0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The keyserver identity.
    pub identity: String,
    /// The link hash of entry 0.
    pub h0: [u8; 32],
}

impl Pin {
    /// Parses `keyserver@<domain>:<64 hex>`.
    pub fn parse(s: &str) -> Option<Pin> {
        let (identity, h) = s.trim().rsplit_once(':')?;
        let h0: [u8; 32] = hex::decode(h).ok()?.try_into().ok()?;
        let mapped = ks_core::identity::map(identity).ok()?;
        (mapped == identity && identity.starts_with("keyserver@")).then(|| Pin {
            identity: identity.to_string(),
            h0,
        })
    }
}

/// One sync's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// Entries before.
    pub from: u64,
    /// Entries now (the verified checkpoint's size).
    pub to: u64,
}

/// A user's private keys for one identity.
pub struct OwnIdentity {
    /// The mapped identity.
    pub identity: String,
    /// SIGKEY.
    pub sig_key: SigningKey,
    /// SIGESCROW, until confirmed and put on paper.
    pub escrow: Option<SigningKey>,
    /// The static X25519 secret.
    pub static_secret: x25519_dalek::StaticSecret,
    /// The newest UID and its reply.
    pub uid: UidMessage,
    /// The reply the server gave for it.
    pub reply: UidMessageReply,
    /// The next KeyInit MSGCOUNT.
    pub next_keyinit: u64,
    /// Forward-secret private keys by KEYINITHASH.
    pub pf_secrets: HashMap<String, x25519_dalek::StaticSecret>,
}

/// What Bob gets from `session_start` (§6.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStart {
    /// Alice's identity.
    pub identity: String,
    /// The position of her verified UID.
    pub position: u64,
    /// Her static X25519 key.
    pub static_key: [u8; 32],
    /// The forward-secret key of the KeyInit.
    pub pf_key: [u8; 32],
    /// Where to send.
    pub mix_address: String,
    /// Her nym address.
    pub nym_address: String,
    /// KEYINITHASH.
    pub key_init_hash: String,
    /// Whether it was a fallback.
    pub fallback: bool,
    /// The signed dispersal receipt.
    pub receipt: DispersalReceipt,
}

/// A keyserver client with verified local state.
pub struct Client {
    url: String,
    pin: Pin,
    origin: Option<String>,
    entries: Vec<Entry>,
    /// Per entry, SHA-256 after k1: a name test costs one compression.
    midstates: Vec<ks_core::entry::Midstate>,
    positions: HashMap<[u8; 32], u64>,
    range: CompactRange,
    note: Option<Vec<u8>>,
    /// (position, SIGKEY) of each keyserver UID, ascending.
    schedule: Vec<(u64, VerifyingKey)>,
    /// KEYINITHASHes this client was served with ONETIME set.
    one_time_seen: BTreeSet<String>,
    /// Their signed receipts (evidence if one is served again).
    one_time_receipts: HashMap<String, ks_core::keyinit::SignedDispersal>,
    /// Verified Capabilities.
    capabilities: Option<SignedCapabilities>,
    /// The witnesses' part of the tlog-policy (witness, group and quorum
    /// lines), if checkpoints must be cosigned.
    witness_policy: Option<String>,
    /// The token wallet (§5).
    tokens: BTreeSet<String>,
    /// Token requests awaiting the issuer, by batch id.
    batches: std::collections::BTreeMap<String, store::WalletBatch>,
    /// Where the state persists (None: in memory only).
    file: Option<store::StateFile>,
    /// HTTP(S) to the keyserver.
    agent: ureq::Agent,
}

fn rpc_error(v: &serde_json::Value) -> ClientError {
    ClientError::Rpc {
        code: v["code"].as_i64().unwrap_or(0),
        reason: v["data"]["reason"].as_str().unwrap_or("").to_string(),
        message: v["message"].as_str().unwrap_or("").to_string(),
        index: v["data"]["index"].as_u64(),
    }
}

fn bad(what: impl Into<String>) -> ClientError {
    ClientError::BadData(what.into())
}

/// serde_json → LCJ value (the reply's JSON, parsed strictly again).
fn lcj_of(v: &serde_json::Value) -> Result<Value, ClientError> {
    let bytes = serde_json::to_vec(v).map_err(|e| bad(e.to_string()))?;
    ks_core::lcj::parse_relaxed(&bytes).map_err(|e| bad(format!("reply: {e}")))
}

impl Client {
    /// A client of the keyserver at `url` (its JSON-RPC endpoint) pinned
    /// to `pin`, with nothing verified yet.
    pub fn new(url: &str, pin: Pin) -> Client {
        Client {
            url: url.to_string(),
            pin,
            origin: None,
            entries: Vec::new(),
            midstates: Vec::new(),
            positions: HashMap::new(),
            range: CompactRange::new(),
            note: None,
            schedule: Vec::new(),
            one_time_seen: BTreeSet::new(),
            one_time_receipts: HashMap::new(),
            capabilities: None,
            witness_policy: None,
            tokens: BTreeSet::new(),
            batches: Default::default(),
            file: None,
            agent: http_tls::ClientTls::default().agent(ureq::Agent::config_builder()),
        }
    }

    /// Uses `tls` for HTTPS to the keyserver from now on (a private CA, a
    /// client certificate); by default the Mozilla roots.
    pub fn set_tls(&mut self, tls: &http_tls::ClientTls) {
        self.agent = tls.agent(ureq::Agent::config_builder());
    }

    /// Opens the state file at `path`. The first open needs the server's
    /// URL and the pin; later opens use the stored ones (a different pin
    /// is refused: re-pinning is a new state file).
    pub fn open(
        path: &std::path::Path,
        url: Option<&str>,
        pin: Option<Pin>,
    ) -> Result<Client, ClientError> {
        let file = store::StateFile::open(path)?;
        let loaded = file.load()?;
        let text = |k: &str| {
            loaded
                .meta
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let stored_pin = text("pin").and_then(|p| Pin::parse(&p));
        let pin = match (stored_pin, pin) {
            (Some(s), Some(p)) if s != p => {
                return Err(ClientError::Storage(
                    "this state file is pinned to another keyserver".into(),
                ))
            }
            (Some(s), _) => s,
            (None, Some(p)) => p,
            (None, None) => {
                return Err(ClientError::Storage(
                    "not initialised: give the server URL and pin".into(),
                ))
            }
        };
        let url = url
            .map(str::to_string)
            .or_else(|| text("url"))
            .ok_or_else(|| ClientError::Storage("no server URL".into()))?;
        let mut c = Client::new(&url, pin.clone());
        for (i, raw) in loaded.entries.iter().enumerate() {
            let e = Entry::from_bytes(raw).map_err(|e| ClientError::Storage(e.to_string()))?;
            c.positions.insert(*e.hash(), i as u64);
            c.range.push(e.leaf_hash());
            c.midstates.push(ks_core::entry::Midstate::of(e.nonce()));
            c.entries.push(e);
        }
        c.origin = text("origin");
        c.witness_policy = text("policy").filter(|p| !p.is_empty());
        c.note = loaded.meta.get("note").cloned();
        for (p, k) in loaded.schedule {
            let key =
                VerifyingKey::from_bytes(&k).map_err(|e| ClientError::Storage(e.to_string()))?;
            c.schedule.push((p, key));
        }
        c.one_time_seen = loaded.seen.into_iter().collect();
        c.one_time_receipts = loaded.receipts.into_iter().collect();
        c.tokens = loaded.tokens.into_iter().collect();
        c.batches = loaded.batches.into_iter().collect();
        // The pin and URL are stored with the first verified sync, so a
        // wrong pin leaves nothing behind.
        c.file = Some(file);
        Ok(c)
    }

    /// Stores an own identity (with its private keys) in the state file.
    pub fn save_own(&self, own: &OwnIdentity) -> Result<(), ClientError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut pf: Vec<String> = own
            .pf_secrets
            .iter()
            .map(|(h, s)| format!("{h} {}", b64::encode(s.as_bytes())))
            .collect();
        pf.sort();
        file.put_own(&store::OwnRecord {
            uid: own.uid.clone(),
            reply: own.reply.clone(),
            sig_key: b64::encode(own.sig_key.as_bytes()),
            escrow: own
                .escrow
                .as_ref()
                .map(|e| b64::encode(e.as_bytes()))
                .unwrap_or_default(),
            static_secret: b64::encode(own.static_secret.as_bytes()),
            next_keyinit: own.next_keyinit,
            pf_secrets: pf,
        })
    }

    /// An own identity from the state file.
    pub fn load_own(&self, identity: &str) -> Result<Option<OwnIdentity>, ClientError> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let Some(r) = file.own(identity)? else {
            return Ok(None);
        };
        own_of(r).map(Some)
    }

    /// Every own identity in the state file.
    pub fn owns(&self) -> Result<Vec<OwnIdentity>, ClientError> {
        match &self.file {
            None => Ok(Vec::new()),
            Some(f) => f.owns()?.into_iter().map(own_of).collect(),
        }
    }

    /// Calls a method; the result as an LCJ value (for results made of
    /// signed structures and plain members).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        lcj_of(&self.call_json(method, params)?)
    }

    /// Calls a method; the result as JSON (results that carry signed
    /// notes, whose text is outside LCJ).
    pub fn call_json(&self, method: &str, params: Value) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": method,
            "params": serde_json::from_slice::<serde_json::Value>(&ks_core::lcj::encode(&params))
                .map_err(|e| ClientError::Transport(e.to_string()))?,
        });
        let text = self.forward(&serde_json::to_vec(&body).unwrap_or_default())?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| ClientError::Transport(e.to_string()))?;
        if let Some(e) = v.get("error") {
            return Err(rpc_error(e));
        }
        Ok(v["result"].clone())
    }

    /// POSTs a JSON-RPC body as it is; the response body as it is (a
    /// mirror's `--proxy-writes`; at most 64 MiB).
    pub fn forward(&self, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut response = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| ClientError::Transport(format!("POST {}: {e}", self.url)))?;
        response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// The verified key schedule: (position, SIGKEY) of each keyserver UID
    /// in chain order (signer(p) is the last at or before p).
    pub fn schedule(&self) -> &[(u64, VerifyingKey)] {
        &self.schedule
    }

    /// The verified size.
    pub fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The verified checkpoint note.
    pub fn checkpoint(&self) -> Option<&[u8]> {
        self.note.as_deref()
    }

    /// The verified entry at `pos`.
    pub fn entry(&self, pos: u64) -> Option<&Entry> {
        self.entries.get(usize::try_from(pos).ok()?)
    }

    /// signer(p): the SIGKEY of the newest keyserver UID at a position ≤ p.
    pub fn signer(&self, pos: u64) -> Option<VerifyingKey> {
        self.schedule
            .iter()
            .rev()
            .find(|(p, _)| *p <= pos)
            .map(|(_, k)| *k)
    }

    /// §6.2: brings the local chain up to the server's latest checkpoint,
    /// verifying everything before keeping anything.
    pub fn sync(&mut self) -> Result<Synced, ClientError> {
        let m = self.size();
        let mut params = Vec::new();
        if m > 0 {
            params.push(("KnownSize", Value::Integer(m)));
        }
        let head = match self.call_json(
            "KeyRepository.FetchLastHashChain",
            Value::Object(
                params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
        ) {
            Err(ClientError::Rpc { code: -32030, .. }) => {
                return Err(ClientError::Rollback { shown: 0, have: m })
            }
            r => r?,
        };
        let note_text = head["Checkpoint"]
            .as_str()
            .ok_or_else(|| bad("FetchLastHashChain without a Checkpoint"))?;
        let note =
            Note::parse(note_text.as_bytes()).map_err(|e| bad(format!("checkpoint: {e}")))?;
        let cp = Checkpoint::parse(note.text()).map_err(|e| bad(format!("checkpoint: {e}")))?;
        if let Some(origin) = &self.origin {
            if &cp.origin != origin {
                return Err(bad(format!("checkpoint of another origin: {}", cp.origin)));
            }
        }
        let n = cp.size;
        if n < m {
            return Err(ClientError::Rollback { shown: n, have: m });
        }
        if n == m {
            if cp.root != self.range.root() {
                return Err(ClientError::Fork { size: n });
            }
            self.accept_note(&note, &cp)?;
            return Ok(Synced { from: m, to: n });
        }
        // Download [m, n), link-check and fold into a copy of the range.
        let mut range = self.range.clone();
        let mut new = Vec::with_capacity((n - m) as usize);
        let mut prev = self.entries.last().map_or([0u8; 32], |e| *e.hash());
        while m + (new.len() as u64) < n {
            let start = m + new.len() as u64;
            let chunk = self.call(
                "KeyRepository.FetchHashChain",
                object([
                    ("StartPosition", Value::Integer(start)),
                    ("EndPosition", Value::Integer(n - 1)),
                ]),
            )?;
            let mut f = Fields::of(chunk).map_err(|e| bad(e.to_string()))?;
            if f.integer("HCFirstPos").map_err(|e| bad(e.to_string()))? != start {
                return Err(bad("HCFirstPos is not the position asked for"));
            }
            let list = f.strings("HCEntries").map_err(|e| bad(e.to_string()))?;
            if list.is_empty() || start + list.len() as u64 > n {
                return Err(bad("a chunk with no entries or beyond the checkpoint"));
            }
            for s in list {
                let raw = b64::decode(&s).ok_or_else(|| bad("an entry is not base64"))?;
                let e = Entry::from_bytes(&raw).map_err(|e| bad(e.to_string()))?;
                e.check_link(&prev)
                    .map_err(|_| bad(format!("entry {} does not link", start)))?;
                prev = *e.hash();
                range.push(e.leaf_hash());
                new.push(e);
            }
        }
        if range.root() != cp.root {
            return Err(bad("the entries do not reach the checkpoint's root"));
        }
        if m == 0 {
            let first = new.first().ok_or(ClientError::PinMismatch)?;
            if first.hash() != &self.pin.h0 || !first.is_for(&self.pin.identity) {
                return Err(ClientError::PinMismatch);
            }
        }
        // Extend the key schedule from the keyserver's new entries (a name
        // test per new entry, one compression each with the midstates).
        let new_mid: Vec<ks_core::entry::Midstate> = new
            .iter()
            .map(|e| ks_core::entry::Midstate::of(e.nonce()))
            .collect();
        let mut schedule = self.schedule.clone();
        let ks_name = ks_core::entry::Name::new(&self.pin.identity);
        let new_ks: Vec<(u64, Entry)> = new
            .iter()
            .zip(&new_mid)
            .enumerate()
            .filter(|(_, (e, mid))| mid.matches(e, &ks_name))
            .map(|(i, (e, _))| (m + i as u64, *e))
            .collect();
        if !new_ks.is_empty() {
            let mut ks: Vec<(u64, Entry)> = self
                .schedule
                .iter()
                .filter_map(|(p, _)| self.entry(*p).map(|e| (*p, *e)))
                .collect();
            ks.extend(new_ks);
            let new_positions: HashMap<[u8; 32], u64> = new
                .iter()
                .enumerate()
                .map(|(i, e)| (*e.hash(), m + i as u64))
                .collect();
            schedule = self.keyserver_schedule(&ks, |h| {
                self.positions.get(h).or(new_positions.get(h)).copied()
            })?;
        }
        let log_key = schedule
            .iter()
            .rev()
            .find(|(p, _)| *p < n)
            .map(|(_, k)| *k)
            .ok_or_else(|| bad("no scheduled key for the checkpoint"))?;
        let verified = self.acceptable(&note, &cp, log_key)?;
        // Everything verified: keep it (one transaction in the state file).
        if let Some(file) = &self.file {
            let raw: Vec<[u8; ks_core::entry::ENTRY_LEN]> = new.iter().map(|e| e.0).collect();
            let rows: Vec<(u64, [u8; 32])> =
                schedule.iter().map(|(p, k)| (*p, k.to_bytes())).collect();
            file.commit(store::Commit {
                from: m,
                entries: &raw,
                schedule: &rows,
                meta: &[
                    ("origin", cp.origin.clone().into_bytes()),
                    ("note", verified.to_bytes()),
                    (
                        "pin",
                        format!("{}:{}", self.pin.identity, hex::encode(self.pin.h0)).into_bytes(),
                    ),
                    ("url", self.url.clone().into_bytes()),
                    (
                        "policy",
                        self.witness_policy.clone().unwrap_or_default().into_bytes(),
                    ),
                ],
            })?;
        }
        for (i, e) in new.iter().enumerate() {
            self.positions.insert(*e.hash(), m + i as u64);
        }
        self.midstates.extend(new_mid);
        self.entries.extend(new);
        self.range = range;
        self.schedule = schedule;
        self.origin = Some(cp.origin.clone());
        self.note = Some(verified.to_bytes());
        Ok(Synced { from: m, to: n })
    }

    fn accept_note(&mut self, note: &Note, cp: &Checkpoint) -> Result<(), ClientError> {
        let key = self
            .signer(cp.size.saturating_sub(1))
            .ok_or_else(|| bad("no scheduled key"))?;
        let verified = self.acceptable(note, cp, key)?;
        self.note = Some(verified.to_bytes());
        Ok(())
    }

    /// §6.2 step 4: the checkpoint is signed by `log_key`, the key the
    /// schedule gives its size, and, under a witness policy, cosigned by
    /// its quorum within [`MAX_CHECKPOINT_AGE`]. The note with only its
    /// verified lines.
    fn acceptable(
        &self,
        note: &Note,
        cp: &Checkpoint,
        log_key: VerifyingKey,
    ) -> Result<Note, ClientError> {
        let verifier = VerifierKey::new(&cp.origin, KeyType::Ed25519, log_key)
            .map_err(|e| bad(e.to_string()))?;
        let Some(witnesses) = &self.witness_policy else {
            return note
                .verify(&[verifier])
                .map_err(|e| bad(format!("checkpoint not signed by the scheduled key: {e}")));
        };
        let policy = tlog_core::Policy::parse(&format!("log {verifier}\n{witnesses}"))
            .map_err(|e| ClientError::Storage(format!("the witness policy: {e}")))?
            .max_age(MAX_CHECKPOINT_AGE);
        match policy.verify(&note.to_bytes(), now()) {
            Ok(v) => Ok(v.note),
            Err(e) => {
                // Signed by the scheduled key but short of cosignatures:
                // refused, not misbehaviour (a witness may be slow).
                note.verify(&[verifier])
                    .map_err(|e| bad(format!("checkpoint not signed by the scheduled key: {e}")))?;
                Err(ClientError::Unwitnessed(e.to_string()))
            }
        }
    }

    /// Requires every checkpoint to carry cosignatures of `quorum` of the
    /// witnesses `vkeys` (tlog.md §5.4; `ks-cli init --witness`). Kept
    /// with the next verified sync.
    pub fn require_witnesses(
        &mut self,
        vkeys: &[String],
        quorum: usize,
    ) -> Result<(), ClientError> {
        if vkeys.is_empty() || quorum == 0 || quorum > vkeys.len() {
            return Err(ClientError::Usage(format!(
                "a quorum of 1 to {} witnesses",
                vkeys.len()
            )));
        }
        let mut text = String::new();
        let mut names = Vec::new();
        for (i, v) in vkeys.iter().enumerate() {
            let key = VerifierKey::parse(v)
                .map_err(|e| ClientError::Usage(format!("witness key {v:?}: {e}")))?;
            if key.key_type() != KeyType::Cosignature {
                return Err(ClientError::Usage(format!(
                    "{v:?} is not a witness (cosignature) key"
                )));
            }
            text.push_str(&format!("witness w{i} {v}\n"));
            names.push(format!("w{i}"));
        }
        text.push_str(&format!(
            "group witnesses {quorum} {}\nquorum witnesses\n",
            names.join(" ")
        ));
        // The whole file must parse (with any log key in its place).
        let any = VerifierKey::new(
            "check",
            KeyType::Ed25519,
            SigningKey::from_bytes(&[1; 32]).verifying_key(),
        )
        .map_err(|e| ClientError::Usage(e.to_string()))?;
        tlog_core::Policy::parse(&format!("log {any}\n{text}"))
            .map_err(|e| ClientError::Usage(format!("witness policy: {e}")))?;
        self.witness_policy = Some(text);
        Ok(())
    }

    /// Whether checkpoints must be witnessed.
    pub fn requires_witnesses(&self) -> bool {
        self.witness_policy.is_some()
    }

    /// The keyserver's UID chain over `entries`, verified: each key signs
    /// from its own position on (§3.8), and continuity (USERSIGNATURE by
    /// the previous key, or escrow) is what makes a new key count.
    fn keyserver_schedule(
        &self,
        entries: &[(u64, Entry)],
        position_of: impl Fn(&[u8; 32]) -> Option<u64>,
    ) -> Result<Vec<(u64, VerifyingKey)>, ClientError> {
        let ident = self.pin.identity.clone();
        let mut replies = Vec::new();
        let mut keys = Vec::new();
        for (p, e) in entries {
            let reply = self.fetch_uid(e.uid_index())?;
            if let Some(r) = &reply {
                if let Ok((_, msg)) = r.open_for(&ident) {
                    if let Some(k) = msg.content.sig_key.verifying_key() {
                        keys.push((*p, k));
                    }
                }
            }
            replies.push((*p, *e, reply));
        }
        let matches: Vec<Match<'_>> = replies
            .iter()
            .map(|(p, e, r)| Match {
                pos: *p,
                entry: e,
                reply: r.as_ref(),
            })
            .collect();
        let signer = |pos: u64| keys.iter().rev().find(|(p, _)| *p <= pos).map(|(_, k)| *k);
        verify_chain(&ident, &matches, signer, |e| position_of(e.hash()))
            .map_err(ClientError::Misbehaviour)?;
        if replies.first().map(|(p, _, _)| *p) != Some(0) {
            return Err(ClientError::PinMismatch);
        }
        Ok(keys)
    }

    /// FetchUID: the reply for a UIDIndex as served, unverified (`None`
    /// when the server has none).
    pub fn fetch_uid(&self, index: &[u8; 32]) -> Result<Option<UidMessageReply>, ClientError> {
        match self.call(
            "KeyRepository.FetchUID",
            object([("UIDIndex", Value::String(b64::encode(index)))]),
        ) {
            Ok(v) => {
                let mut f = Fields::of(v).map_err(|e| bad(e.to_string()))?;
                let r: UidMessageReply = f
                    .nested("UIDMessageReply")
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Some(r))
            }
            Err(ClientError::Rpc { code: -32031, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches Capabilities and verifies them under the scheduled key of
    /// SIGNINGPOS, and their KEYHASHCHAINENTRY against the local chain.
    pub fn capabilities(&mut self) -> Result<SignedCapabilities, ClientError> {
        let v = self.call(
            "KeyRepository.Capabilities",
            Value::Object(Default::default()),
        )?;
        let signed = SignedCapabilities::from_value(v).map_err(|e| bad(e.to_string()))?;
        let c = &signed.capabilities;
        if c.key_hash_chain_pos >= self.size() {
            self.sync()?;
        }
        let key = self
            .signer(c.signing_pos)
            .ok_or_else(|| bad("Capabilities name an unscheduled SIGNINGPOS"))?;
        if !sig::verify(&key, Ctx::Capabilities, c, &signed.signature) {
            return Err(bad("Capabilities are not signed by the scheduled key"));
        }
        let ours = self
            .entry(c.key_hash_chain_pos)
            .ok_or_else(|| bad("KEYHASHCHAINPOS beyond the chain"))?;
        if b64::encode(&ours.0) != c.key_hash_chain_entry {
            let failure = "KEYHASHCHAINENTRY is not the chain's entry (bad-capabilities)";
            let Some(mut evidence) =
                self.entry_evidence(ks_core::evidence::BAD_CAPABILITIES, c.key_hash_chain_pos)
            else {
                return Err(bad(failure));
            };
            evidence.identity = self.pin.identity.clone();
            evidence.capabilities = vec![signed.clone()];
            return Err(proven(evidence, failure.to_string(), bad(failure)));
        }
        self.capabilities = Some(signed.clone());
        Ok(signed)
    }

    /// §6.3: the verified current state of `identity`, or `None`.
    pub fn lookup(&mut self, identity: &str) -> Result<Option<Verified>, ClientError> {
        let ident = ks_core::identity::map(identity)
            .map_err(|e| ClientError::NotFound(format!("{identity}: {e}")))?;
        let mut found = Vec::new();
        let name = ks_core::entry::Name::new(&ident);
        for (p, (e, m)) in self.entries.iter().zip(&self.midstates).enumerate() {
            if m.matches(e, &name) {
                found.push((p as u64, *e));
            }
        }
        let mut replies = Vec::new();
        for (p, e) in &found {
            replies.push((*p, *e, self.fetch_uid(e.uid_index())?));
        }
        let matches: Vec<Match<'_>> = replies
            .iter()
            .map(|(p, e, r)| Match {
                pos: *p,
                entry: e,
                reply: r.as_ref(),
            })
            .collect();
        let result = verify_chain(
            &ident,
            &matches,
            |p| self.signer(p),
            |e| self.positions.get(e.hash()).copied(),
        );
        match result {
            Err(failure @ Failure::Takeover { pos, .. }) => {
                let later = replies
                    .iter()
                    .find(|(p, _, _)| *p == pos)
                    .and_then(|(_, _, r)| r.clone());
                let earlier = replies
                    .iter()
                    .rev()
                    .filter(|(p, _, _)| *p < pos)
                    .find_map(|(_, _, r)| r.clone());
                match (earlier, later) {
                    (Some(earlier), Some(later)) => {
                        let evidence = ks_core::evidence::Evidence {
                            key_schedule: self.schedule_replies()?,
                            identity: ident.clone(),
                            replies: vec![earlier, later],
                            ..self.evidence_head(ks_core::evidence::TAKEOVER)
                        };
                        Err(proven(
                            evidence,
                            failure.to_string(),
                            ClientError::Misbehaviour(failure),
                        ))
                    }
                    _ => Err(ClientError::Misbehaviour(failure)),
                }
            }
            Err(failure @ Failure::BadUid { pos, .. }) => {
                let reply = replies
                    .iter()
                    .find(|(p, _, _)| *p == pos)
                    .and_then(|(_, _, r)| r.clone());
                let (Some(reply), Ok(key_schedule)) = (reply, self.schedule_replies()) else {
                    return Err(ClientError::Misbehaviour(failure));
                };
                let evidence = ks_core::evidence::Evidence {
                    key_schedule,
                    identity: ident.clone(),
                    replies: vec![reply],
                    ..self.evidence_head(ks_core::evidence::BAD_UID)
                };
                Err(proven(
                    evidence,
                    failure.to_string(),
                    ClientError::Misbehaviour(failure),
                ))
            }
            r => r.map_err(ClientError::Misbehaviour),
        }
    }

    /// The keyserver's UID replies of the key schedule, from genesis.
    fn schedule_replies(&self) -> Result<Vec<UidMessageReply>, ClientError> {
        let mut out = Vec::new();
        for (pos, _) in &self.schedule {
            let e = self
                .entry(*pos)
                .ok_or_else(|| bad("a schedule position beyond the chain"))?;
            out.push(
                self.fetch_uid(e.uid_index())?
                    .ok_or_else(|| bad("the keyserver withholds its own UID"))?,
            );
        }
        Ok(out)
    }

    /// §6.4 step 2: registers `identity` with fresh keys (SIGKEY, SIGESCROW
    /// and a static X25519 key) and verifies the reply.
    pub fn register(
        &mut self,
        identity: &str,
        forward_sec: &str,
    ) -> Result<OwnIdentity, ClientError> {
        self.sync()?;
        let ident = ks_core::identity::map(identity)
            .map_err(|e| ClientError::NotFound(format!("{identity}: {e}")))?;
        // §6.4 step 2: a live match in the local chain means taken, found
        // without spending a token on a call the server would refuse.
        if let Some(found) = self.lookup(&ident)? {
            if found.state.is_current(now()) {
                return Err(ClientError::Taken(ident));
            }
        }
        let sig_key = SigningKey::from_bytes(&random());
        let escrow = SigningKey::from_bytes(&random());
        let static_secret = x25519_dalek::StaticSecret::from(random::<32>());
        let keys = UidKeys {
            sig_key: &sig_key,
            escrow: Some(&escrow),
            static_key: x25519_dalek::PublicKey::from(&static_secret).to_bytes(),
        };
        let last = self.entries.last().copied();
        let content = author::content(&ident, &keys, 0, last.as_ref(), forward_sec, now());
        let msg = author::sign_create(content, &keys);
        let reply = self.submit(Kind::Create, &msg)?;
        Ok(OwnIdentity {
            identity: ident,
            sig_key,
            escrow: Some(escrow),
            static_secret,
            uid: msg,
            reply,
            next_keyinit: 1,
            pf_secrets: HashMap::new(),
        })
    }

    /// An update of `own` that rotates SIGKEY, authorised by the old
    /// SIGKEY, or by the escrow key when `recover` (the old SIGKEY lost).
    pub fn update(
        &mut self,
        own: &mut OwnIdentity,
        recover: Option<&SigningKey>,
    ) -> Result<(), ClientError> {
        self.sync()?;
        let new_key = SigningKey::from_bytes(&random());
        let static_key = x25519_dalek::PublicKey::from(&own.static_secret).to_bytes();
        let escrow_pub = own.uid.content.sig_escrow.clone();
        let last = self.entries.last().copied();
        let keys = UidKeys {
            sig_key: &new_key,
            escrow: None,
            static_key,
        };
        let mut content = author::content(
            &own.identity,
            &keys,
            own.uid.content.msg_count + 1,
            last.as_ref(),
            &own.uid.content.preferences.forward_sec,
            now(),
        );
        content.sig_escrow = escrow_pub;
        let by = match recover {
            Some(e) => Authority::Escrow(e),
            None => Authority::User(&own.sig_key),
        };
        let msg = author::sign_update(content, &new_key, by);
        let reply = self.submit(Kind::Update, &msg)?;
        own.sig_key = new_key;
        own.uid = msg;
        own.reply = reply;
        own.pf_secrets.clear();
        Ok(())
    }

    /// Sends a Create or Update and verifies the reply: it carries exactly
    /// the message sent, binds to its entry, and is signed by the
    /// scheduled key of its position.
    fn submit(&mut self, kind: Kind, msg: &UidMessage) -> Result<UidMessageReply, ClientError> {
        let method = match kind {
            Kind::Create => "KeyRepository.CreateUID",
            Kind::Update => "KeyRepository.UpdateUID",
        };
        let v = self.paid_call(method, vec![("UIDMessage", msg.to_value())], "Token", 1)?;
        let mut f = Fields::of(v).map_err(|e| bad(e.to_string()))?;
        let reply: UidMessageReply = f
            .nested("UIDMessageReply")
            .map_err(|e| bad(e.to_string()))?;
        let (_, echoed) = reply
            .open_for(&msg.content.identity)
            .map_err(|e| bad(format!("the reply does not bind: {e}")))?;
        if echoed.to_lcj() != msg.to_lcj() {
            return Err(bad("the reply carries another UID"));
        }
        let pos = reply.entry.hashchain_pos;
        let key = self
            .signer(pos)
            .ok_or_else(|| bad("no scheduled key for the reply"))?;
        if !reply.signed_by(&key) {
            return Err(bad("the reply is not signed by the scheduled key"));
        }
        Ok(reply)
    }

    /// §6.4 step 4 (inclusion part): the reply's entry is in the verified
    /// chain at its position.
    pub fn confirm(&mut self, own: &OwnIdentity) -> Result<u64, ClientError> {
        let pos = own.reply.entry.hashchain_pos;
        if pos >= self.size() {
            self.sync()?;
        }
        let ours = *self
            .entry(pos)
            .ok_or_else(|| ClientError::NotFound(format!("position {pos} is not published yet")))?;
        if b64::encode(&ours.0) != own.reply.entry.hashchain_entry {
            return Err(self.reply_not_in_log(&own.identity, &own.reply, pos, &ours));
        }
        Ok(pos)
    }

    /// Evidence that the server signed `reply` for `pos` and then a
    /// checkpoint with `actual` there (the inclusion proof is computed from
    /// the verified local chain).
    fn reply_not_in_log(
        &self,
        identity: &str,
        reply: &UidMessageReply,
        pos: u64,
        actual: &Entry,
    ) -> ClientError {
        let failure = Failure::BadUid {
            pos,
            why: "another entry sits at the reply's position (reply-not-in-log)".into(),
        };
        let Some(mut evidence) = self.entry_evidence(ks_core::evidence::REPLY_NOT_IN_LOG, pos)
        else {
            return ClientError::Misbehaviour(failure);
        };
        evidence.identity = identity.to_string();
        evidence.replies = vec![reply.clone()];
        evidence.entry = b64::encode(&actual.0);
        proven(
            evidence,
            failure.to_string(),
            ClientError::Misbehaviour(failure),
        )
    }

    /// The part of an evidence file of `kind` every type carries but the
    /// key schedule: the origin and the pin.
    fn evidence_head(&self, kind: &str) -> ks_core::evidence::Evidence {
        ks_core::evidence::Evidence {
            kind: kind.into(),
            origin: self.origin.clone().unwrap_or_default(),
            pin: format!("{}:{}", self.pin.identity, hex::encode(self.pin.h0)),
            ..Default::default()
        }
    }

    /// An evidence file of `kind` with the pin, the key schedule, the
    /// verified checkpoint and the local entry at `pos` with its inclusion
    /// proof (computed from the verified chain); `None` if the schedule's
    /// UIDs cannot be fetched or nothing is verified yet.
    fn entry_evidence(&self, kind: &str, pos: u64) -> Option<ks_core::evidence::Evidence> {
        let mut tree = tlog_core::merkle::MemoryTree::new();
        for e in &self.entries {
            tree.push_hash(e.leaf_hash());
        }
        let Ok(Ok(proof)) = tlog_core::merkle::inclusion_proof(&tree, pos, self.size()) else {
            return None;
        };
        Some(ks_core::evidence::Evidence {
            key_schedule: self.schedule_replies().ok()?,
            checkpoint: b64::encode(self.note.as_ref()?),
            entry: b64::encode(&self.entry(pos)?.0),
            proof: proof.iter().map(|h| b64::encode(h)).collect(),
            position: pos,
            ..self.evidence_head(kind)
        })
    }

    /// LookupUID (keyserver.md §4.6), checked against the local chain: the
    /// signed answer must list exactly the identity's positions below its
    /// TREESIZE. One left out is `omitted-lookup` evidence; one listed
    /// that is not the identity's is refused as bad data.
    pub fn lookup_at_server(&mut self, identity: &str) -> Result<Vec<u64>, ClientError> {
        let ident = ks_core::identity::map(identity)
            .map_err(|e| ClientError::NotFound(format!("{identity}: {e}")))?;
        let v = self.call(
            "KeyRepository.LookupUID",
            object([("Identity", Value::String(ident.clone()))]),
        )?;
        let mut f = Fields::of(v).map_err(|e| bad(e.to_string()))?;
        let reply: ks_core::keyinit::LookupReply =
            f.nested("Lookup").map_err(|e| bad(e.to_string()))?;
        let signature = f.string("Signature").map_err(|e| bad(e.to_string()))?;
        if reply.identity != ident || Some(&reply.origin) != self.origin.as_ref() {
            return Err(bad("the lookup answer is for another identity or log"));
        }
        if reply.tree_size == 0 {
            return Err(bad("the lookup answer covers no chain"));
        }
        if reply.tree_size > self.size() {
            self.sync()?;
        }
        if reply.tree_size > self.size() {
            return Err(bad("the lookup answer covers entries never published"));
        }
        let key = self
            .signer(reply.tree_size - 1)
            .ok_or_else(|| bad("no scheduled key for the lookup answer"))?;
        if !sig::verify(&key, Ctx::LookupReply, &reply, &signature) {
            return Err(bad("the lookup answer is not signed by the scheduled key"));
        }
        let name = ks_core::entry::Name::new(&ident);
        let ours: Vec<u64> = self
            .entries
            .iter()
            .zip(&self.midstates)
            .take(reply.tree_size as usize)
            .enumerate()
            .filter(|(_, (e, m))| m.matches(e, &name))
            .map(|(p, _)| p as u64)
            .collect();
        if let Some(missing) = ours.iter().find(|p| !reply.hc_positions.contains(p)) {
            let failure = Failure::BadUid {
                pos: *missing,
                why: "LookupUID left this entry out (omitted-lookup)".into(),
            };
            let Some(mut evidence) =
                self.entry_evidence(ks_core::evidence::OMITTED_LOOKUP, *missing)
            else {
                return Err(ClientError::Misbehaviour(failure));
            };
            evidence.identity = ident;
            evidence.lookup = vec![reply];
            evidence.lookup_signature = signature;
            return Err(proven(
                evidence,
                failure.to_string(),
                ClientError::Misbehaviour(failure),
            ));
        }
        if ours != reply.hc_positions {
            return Err(bad(
                "the lookup answer lists positions that are not the identity's",
            ));
        }
        Ok(ours)
    }

    /// §6.6 gossip: checks another party's checkpoint (a signed note)
    /// against the verified chain. A note signed by the scheduled key for a
    /// tree that conflicts with ours is a fork: evidence with the LKEV blob.
    pub fn check_checkpoint(&mut self, note_bytes: &[u8]) -> Result<u64, ClientError> {
        self.sync()?;
        let note = Note::parse(note_bytes).map_err(|e| bad(format!("the checkpoint: {e}")))?;
        let cp = Checkpoint::parse(note.text()).map_err(|e| bad(format!("the checkpoint: {e}")))?;
        if Some(&cp.origin) != self.origin.as_ref() {
            return Err(bad("a checkpoint of another log"));
        }
        if cp.size == 0 || cp.size > self.size() {
            return Err(ClientError::NotFound(format!(
                "a checkpoint of size {} is beyond the verified chain ({}): sync later",
                cp.size,
                self.size()
            )));
        }
        let key = self
            .signer(cp.size - 1)
            .ok_or_else(|| bad("no scheduled key"))?;
        let verifier =
            VerifierKey::new(&cp.origin, KeyType::Ed25519, key).map_err(|e| bad(e.to_string()))?;
        note.verify(std::slice::from_ref(&verifier))
            .map_err(|_| bad("the checkpoint is not signed by the scheduled key"))?;
        let mut tree = tlog_core::merkle::MemoryTree::new();
        for e in &self.entries {
            tree.push_hash(e.leaf_hash());
        }
        let ours_then = tree.root_at(cp.size);
        if ours_then == cp.root {
            return Ok(cp.size);
        }
        let failure = format!("fork: the server signed another tree of size {}", cp.size);
        let ours = self.note.clone().and_then(|n| Note::parse(&n).ok());
        let proof = match tlog_core::merkle::consistency_proof(&tree, cp.size, self.size()) {
            Ok(Ok(p)) => p,
            _ => Vec::new(),
        };
        let lkev = ours.and_then(|ours| {
            if cp.size == self.size() {
                tlog_core::Evidence::build(&verifier, &note, &ours, ours_then, Vec::new()).ok()
            } else {
                tlog_core::Evidence::build(&verifier, &note, &ours, ours_then, proof).ok()
            }
        });
        let (Some(lkev), Ok(key_schedule)) = (lkev, self.schedule_replies()) else {
            return Err(ClientError::Fork { size: cp.size });
        };
        let evidence = ks_core::evidence::Evidence {
            kind: ks_core::evidence::FORK.into(),
            origin: cp.origin.clone(),
            pin: format!("{}:{}", self.pin.identity, hex::encode(self.pin.h0)),
            key_schedule,
            lkev: b64::encode(&lkev),
            ..Default::default()
        };
        match ks_core::evidence::verify(&evidence) {
            Ok(proves) => Err(ClientError::Evidence {
                failure,
                proves,
                evidence: Box::new(evidence),
            }),
            Err(_) => Err(ClientError::Fork { size: cp.size }),
        }
    }

    /// §6.4 step 3: publishes `count` one-time and `fallbacks` fallback
    /// KeyInits valid for [`KEYINIT_LIFETIME`]; verifies every receipt.
    pub fn publish_key_inits(
        &mut self,
        own: &mut OwnIdentity,
        count: usize,
        fallbacks: usize,
        mix_address: &str,
        nym_address: &str,
    ) -> Result<Vec<KeyInitReceipt>, ClientError> {
        self.publish_key_inits_for(
            own,
            count,
            fallbacks,
            mix_address,
            nym_address,
            KEYINIT_LIFETIME,
        )
    }

    /// [`Client::publish_key_inits`] with KeyInits valid for `lifetime`
    /// seconds from now (at most the UID's NOTAFTER; the server refuses
    /// more than 90 days).
    pub fn publish_key_inits_for(
        &mut self,
        own: &mut OwnIdentity,
        count: usize,
        fallbacks: usize,
        mix_address: &str,
        nym_address: &str,
        lifetime: u64,
    ) -> Result<Vec<KeyInitReceipt>, ClientError> {
        let repo = own
            .uid
            .content
            .repo_uris
            .first()
            .cloned()
            .unwrap_or_default();
        let now = now();
        let not_after = (now + lifetime.max(1)).min(own.uid.content.not_after);
        let mut key_inits = Vec::new();
        let mut secrets = Vec::new();
        for i in 0..count + fallbacks {
            let secret = x25519_dalek::StaticSecret::from(random::<32>());
            let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
            let ki = author::key_init(
                &own.sig_key,
                &repo,
                &author::anchor(&public, mix_address, nym_address),
                &random(),
                own.next_keyinit + i as u64,
                i >= count,
                now.saturating_sub(60),
                not_after,
            );
            secrets.push((ki.hash(), secret));
            key_inits.push(ki);
        }
        let price = key_inits.len();
        let v = self.paid_call(
            "KeyInitRepository.AddKeyInit",
            vec![
                (
                    "SigPubKey",
                    Value::String(b64::encode(own.sig_key.verifying_key().as_bytes())),
                ),
                (
                    "KeyInits",
                    Value::Array(key_inits.iter().map(Lcj::to_value).collect()),
                ),
            ],
            "Tokens",
            price,
        )?;
        let mut f = Fields::of(v).map_err(|e| bad(e.to_string()))?;
        let signatures = f.strings("Signatures").map_err(|e| bad(e.to_string()))?;
        let timestamp = f.integer("Timestamp").map_err(|e| bad(e.to_string()))?;
        if signatures.len() != key_inits.len() {
            return Err(bad("one receipt per KeyInit"));
        }
        let key = self
            .signer(self.size().saturating_sub(1))
            .ok_or_else(|| bad("no key"))?;
        let origin = self.origin.clone().unwrap_or_default();
        let mut receipts = Vec::new();
        for (ki, s) in key_inits.iter().zip(&signatures) {
            let receipt = KeyInitReceipt {
                key_init_hash: ki.hash(),
                origin: origin.clone(),
                sig_key_hash: sig_key_hash(own.sig_key.verifying_key().as_bytes()),
                timestamp,
            };
            if !sig::verify(&key, Ctx::KeyinitReceipt, &receipt, s) {
                return Err(bad("a KeyInit receipt does not verify"));
            }
            receipts.push(receipt);
        }
        own.next_keyinit += key_inits.len() as u64;
        own.pf_secrets.extend(secrets);
        Ok(receipts)
    }

    /// §6.5: Bob fetches one of Alice's KeyInits and checks everything.
    pub fn session_start(&mut self, identity: &str) -> Result<SessionStart, ClientError> {
        self.sync()?;
        let alice = self
            .lookup(identity)?
            .ok_or_else(|| ClientError::NotFound(identity.to_string()))?;
        if !alice.state.is_current(now()) {
            return Err(ClientError::NotFound(format!("{identity} is not current")));
        }
        let v = self.call(
            "KeyInitRepository.FetchKeyInit",
            object([("SigKeyHash", Value::String(alice.sig_key_hash.clone()))]),
        )?;
        let mut f = Fields::of(v).map_err(|e| bad(e.to_string()))?;
        let ki: KeyInit = f.nested("KeyInit").map_err(|e| bad(e.to_string()))?;
        let receipt: DispersalReceipt = f.nested("Dispersal").map_err(|e| bad(e.to_string()))?;
        let signature = f.string("Signature").map_err(|e| bad(e.to_string()))?;
        let server = self
            .signer(self.size().saturating_sub(1))
            .ok_or_else(|| bad("no key"))?;
        let reject = |why: &str| ClientError::BadKeyInit(why.to_string());
        if !sig::verify(&server, Ctx::KeyinitDispersal, &receipt, &signature) {
            return Err(reject("the dispersal receipt is not signed by the server"));
        }
        if receipt.key_init_hash != ki.hash()
            || Some(&receipt.origin) != self.origin.as_ref()
            || receipt.sig_key_hash != alice.sig_key_hash
        {
            return Err(reject("the receipt is not for this KeyInit"));
        }
        let sig_key = alice
            .message
            .content
            .sig_key
            .verifying_key()
            .ok_or_else(|| reject("no SIGKEY"))?;
        let checked = match check_keyinit(
            &ki,
            &sig_key,
            &alice.message.content.repo_uris,
            Window::Fetch,
            now(),
        ) {
            Ok(c) => c,
            Err(why) => {
                let served = ks_core::keyinit::SignedDispersal {
                    receipt: receipt.clone(),
                    signature: signature.clone(),
                };
                return Err(self.bad_keyinit(&alice, ki, served, &why.to_string()));
            }
        };
        if let Some(c) = &self.capabilities {
            if !c
                .capabilities
                .key_init_repository_uris
                .contains(&ki.contents.repo_uri)
            {
                return Err(reject("REPOURI is not one of the server's repositories"));
            }
        }
        let hash = ki.hash();
        let served = ks_core::keyinit::SignedDispersal {
            receipt: receipt.clone(),
            signature,
        };
        if self.one_time_seen.contains(&hash) {
            return Err(self.keyinit_reuse(&alice.message.content.identity, &hash, served));
        }
        if ki.contents.fallback && alice.message.content.preferences.forward_sec == "strict" {
            return Err(ClientError::NoOneTimeKeyInit);
        }
        if receipt.one_time {
            if let Some(file) = &self.file {
                file.seen(&hash, &served)?;
            }
            self.one_time_seen.insert(hash.clone());
            self.one_time_receipts.insert(hash.clone(), served);
        }
        Ok(SessionStart {
            identity: alice.message.content.identity.clone(),
            position: alice.state.pos,
            static_key: alice.static_key,
            pf_key: checked.pf_key,
            mix_address: checked.anchor.mix_address,
            nym_address: checked.anchor.nym_address,
            key_init_hash: hash,
            fallback: ki.contents.fallback,
            receipt,
        })
    }

    /// A served KeyInit that fails §6.5: `bad-keyinit` evidence (the
    /// receipt, the KeyInit and the owner's UID reply) if it is provable at
    /// the receipt's time, else a plain refusal.
    fn bad_keyinit(
        &self,
        owner: &Verified,
        ki: KeyInit,
        served: ks_core::keyinit::SignedDispersal,
        why: &str,
    ) -> ClientError {
        let failure = ClientError::BadKeyInit(why.to_string());
        let Ok(key_schedule) = self.schedule_replies() else {
            return failure;
        };
        let evidence = ks_core::evidence::Evidence {
            key_schedule,
            identity: owner.message.content.identity.clone(),
            replies: vec![owner.reply.clone()],
            dispersals: vec![served],
            key_inits: vec![ki],
            ..self.evidence_head(ks_core::evidence::BAD_KEYINIT)
        };
        proven(evidence, failure.to_string(), failure)
    }

    /// A one-time KeyInit served again: `keyinit-reuse` evidence from the
    /// first serving's signed receipt and this one.
    fn keyinit_reuse(
        &self,
        identity: &str,
        hash: &str,
        again: ks_core::keyinit::SignedDispersal,
    ) -> ClientError {
        let failure =
            ClientError::BadKeyInit("keyinit-reuse: a one-time KeyInit served twice".into());
        let Some(first) = self.one_time_receipts.get(hash) else {
            return failure;
        };
        let Ok(key_schedule) = self.schedule_replies() else {
            return failure;
        };
        let evidence = ks_core::evidence::Evidence {
            key_schedule,
            identity: identity.to_string(),
            dispersals: vec![first.clone(), again],
            ..self.evidence_head(ks_core::evidence::KEYINIT_REUSE)
        };
        proven(evidence, failure.to_string(), failure)
    }

    /// §4.5: deletes all of `own`'s KeyInits with a fresh nonce.
    pub fn flush(&mut self, own: &OwnIdentity) -> Result<FlushReceipt, ClientError> {
        let origin = self.origin.clone().unwrap_or_default();
        let (req, signature) = author::flush(&own.sig_key, &origin, &random(), now());
        let v = self.call(
            "KeyInitRepository.FlushKeyInit",
            object([
                (
                    "SigPubKey",
                    Value::String(b64::encode(own.sig_key.verifying_key().as_bytes())),
                ),
                ("Flush", req.to_value()),
                ("Signature", Value::String(signature)),
            ]),
        )?;
        let mut f = Fields::of(v).map_err(|e| bad(e.to_string()))?;
        let receipt: FlushReceipt = f.nested("Receipt").map_err(|e| bad(e.to_string()))?;
        let s = f.string("Signature").map_err(|e| bad(e.to_string()))?;
        let key = self
            .signer(self.size().saturating_sub(1))
            .ok_or_else(|| bad("no key"))?;
        if !sig::verify(&key, Ctx::FlushReceipt, &receipt, &s) || receipt.nonce != req.nonce {
            return Err(bad("the flush receipt does not verify"));
        }
        Ok(receipt)
    }
}

fn own_of(r: store::OwnRecord) -> Result<OwnIdentity, ClientError> {
    let key = |s: &str| {
        b64::exact::<32>(s)
            .ok_or_else(|| ClientError::Storage("a stored key is not b64(32)".into()))
    };
    let mut pf_secrets = HashMap::new();
    for row in &r.pf_secrets {
        let (h, k) = row
            .split_once(' ')
            .ok_or_else(|| ClientError::Storage("a stored PF key is malformed".into()))?;
        pf_secrets.insert(h.to_string(), x25519_dalek::StaticSecret::from(key(k)?));
    }
    Ok(OwnIdentity {
        identity: r.uid.content.identity.clone(),
        sig_key: SigningKey::from_bytes(&key(&r.sig_key)?),
        escrow: if r.escrow.is_empty() {
            None
        } else {
            Some(SigningKey::from_bytes(&key(&r.escrow)?))
        },
        static_secret: x25519_dalek::StaticSecret::from(key(&r.static_secret)?),
        uid: r.uid,
        reply: r.reply,
        next_keyinit: r.next_keyinit,
        pf_secrets,
    })
}

/// `failure` with its evidence file if the file proves it (checked here
/// exactly as `ks-cli verify-evidence` will), else `otherwise`.
fn proven(
    evidence: ks_core::evidence::Evidence,
    failure: String,
    otherwise: ClientError,
) -> ClientError {
    match ks_core::evidence::verify(&evidence) {
        Ok(proves) => ClientError::Evidence {
            failure,
            proves,
            evidence: Box::new(evidence),
        },
        Err(_) => otherwise,
    }
}

fn random<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
