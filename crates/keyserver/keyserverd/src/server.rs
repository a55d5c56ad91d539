//! The keyserver's methods (keyserver.md §2.2) over the sequencer and the
//! log node: stateless checks (§4.1) run here, on the caller's task,
//! before anything is queued; stateful rules run in the sequencer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use ks_core::b64;
use ks_core::capabilities::{
    Capabilities, Limits as CapLimits, Prices, SignedCapabilities, METHODS,
};
use ks_core::error::RpcError;
use ks_core::keyinit::{
    check_flush, check_keyinit, FlushRequest, KeyInit, Window, MAX_KEYINITS, MAX_KEYINITS_PER_CALL,
};
use ks_core::lcj::{object, Fields, Lcj, Value};
use ks_core::rules::{self, Kind, Policy};
use ks_core::sig::{sign, Ctx};
use ks_core::uid::UidMessage;
use tlog_node::LogNode;
use tlog_store::RedbLogStore;
use tokio::sync::oneshot;

use crate::chain::ReadCall;
use crate::limits::{Limits, LimitsConfig};
use crate::store::{Job, KsStore, SpendId};
use crate::tokens::TokenPolicy;

/// Entries per FetchHashChain reply.
pub const MAX_CHUNK: u64 = 4096;
/// Largest request body.
pub const MAX_REQUEST_BYTES: usize = 256 << 10;

/// What a keyserver serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The log origin, e.g. `localhost/kt/v1`.
    pub origin: String,
    /// Served domains; the first is the primary.
    pub domains: Vec<String>,
    /// Base URL of this server's JSON-RPC endpoint (Capabilities).
    pub public_url: String,
    /// Payment tokens (§5); `None`: disabled mode.
    pub tokens: Option<Arc<TokenPolicy>>,
    /// Serve LookupUID (§4.6, `--enable-lookup`): the server then learns
    /// whom callers look up.
    pub lookup: bool,
    /// The witnesses checkpoints are submitted to (vkeys; Capabilities'
    /// WITNESSES, informative: clients take theirs from their policy).
    pub witnesses: Vec<String>,
}

impl Config {
    /// `keyserver@<primary domain>`.
    pub fn keyserver_identity(&self) -> String {
        format!("keyserver@{}", self.domains.first().map_or("", |d| d))
    }
}

/// A running keyserver.
pub struct Keyserver {
    config: Config,
    policy: Policy,
    store: KsStore,
    node: Arc<LogNode<RedbLogStore>>,
    signer: SigningKey,
    signing_pos: u64,
    capabilities: Mutex<Option<(Instant, Value)>>,
    limits: Limits,
    /// `test-faults`: LookupUID leaves out the newest position.
    #[cfg(feature = "test-faults")]
    omit_lookup: std::sync::atomic::AtomicBool,
    /// `test-faults`: FetchKeyInit keeps one-time KeyInits it says it
    /// deleted.
    #[cfg(feature = "test-faults")]
    keep_one_time: std::sync::atomic::AtomicBool,
    /// `test-faults`: FetchKeyInit serves KeyInits of its own making.
    #[cfg(feature = "test-faults")]
    substitute: std::sync::atomic::AtomicBool,
    /// `test-faults`: FetchUID serves replies with another UID, signed.
    #[cfg(feature = "test-faults")]
    corrupt_uids: std::sync::atomic::AtomicBool,
    /// `test-faults`: FetchUID serves replies naming the previous
    /// position's entry, signed.
    #[cfg(feature = "test-faults")]
    misplace_uids: std::sync::atomic::AtomicBool,
    /// `test-faults`: how FetchHashChain tampers (`drop` the first or
    /// `change` the last entry of each chunk).
    #[cfg(feature = "test-faults")]
    chain_fault: Mutex<Option<String>>,
    /// `test-faults`: how Capabilities lie (see `Test.CapabilitiesFault`).
    #[cfg(feature = "test-faults")]
    caps_fault: Mutex<Option<String>>,
}

/// The wall clock in unix seconds (the one clock the rules are given).
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, RpcError>>) -> Result<T, RpcError> {
    rx.await.map_err(|_| RpcError::Unavailable)?
}

impl Keyserver {
    /// A keyserver over its sequencer and log node.
    pub fn new(
        config: Config,
        store: KsStore,
        node: Arc<LogNode<RedbLogStore>>,
        signer: SigningKey,
        signing_pos: u64,
        limits: LimitsConfig,
    ) -> Self {
        Keyserver {
            limits: Limits::new(limits),
            policy: Policy::for_domains(config.domains.clone()),
            config,
            store,
            node,
            signer,
            signing_pos,
            capabilities: Mutex::new(None),
            #[cfg(feature = "test-faults")]
            omit_lookup: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-faults")]
            keep_one_time: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-faults")]
            substitute: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-faults")]
            caps_fault: Mutex::new(None),
            #[cfg(feature = "test-faults")]
            corrupt_uids: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-faults")]
            misplace_uids: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-faults")]
            chain_fault: Mutex::new(None),
        }
    }

    /// The log node.
    pub fn node(&self) -> &Arc<LogNode<RedbLogStore>> {
        &self.node
    }

    /// Redeemed tokens still remembered (admin stats). Blocking.
    pub fn spent_tokens(&self) -> Result<u64, RpcError> {
        self.store.spent_count()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs one method for `client` (its address, for rate limits); the
    /// result or the error.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        client: Option<std::net::IpAddr>,
    ) -> Result<Value, RpcError> {
        // With tokens disabled, registrations are free and rest on the
        // hourly limit.
        let free = self.config.tokens.is_none();
        self.limits.check(method, client, free, Instant::now())?;
        let mut p =
            Fields::of(params).map_err(|_| RpcError::params("params", "must be an object"))?;
        let result = match method {
            "KeyRepository.Capabilities" => {
                p.finish()?;
                self.capabilities().await?
            }
            m if crate::chain::is_read(m) => match crate::chain::read_call(m, p)? {
                ReadCall::Last { known } => crate::chain::fetch_last(&self.node, known).await?,
                ReadCall::Chain { start, end } => self.fetch_chain(start, end).await?,
                ReadCall::Uid { index } => self.fetch_uid(&index).await?,
            },
            "KeyRepository.CreateUID" | "KeyRepository.UpdateUID" => {
                let msg: UidMessage = p.nested("UIDMessage")?;
                let token = p.take("Token").ok();
                p.finish()?;
                let kind = if method.ends_with("CreateUID") {
                    Kind::Create
                } else {
                    Kind::Update
                };
                let reply = self.submit_uid(kind, msg, token, false).await?;
                object([("UIDMessageReply", reply.to_value())])
            }
            "KeyRepository.LookupUID" | "KeyHashchain.LookupUID" if self.config.lookup => {
                let identity = p.string("Identity")?;
                p.finish()?;
                self.lookup_uid(&identity).await?
            }
            "KeyInitRepository.AddKeyInit" => {
                let sig_pub = verifying_key(&p.string("SigPubKey")?, "SigPubKey")?;
                let key_inits: Vec<KeyInit> = p.list("KeyInits")?;
                let tokens = p.take("Tokens").ok();
                p.finish()?;
                self.add_key_inits(sig_pub, key_inits, tokens).await?
            }
            "KeyInitRepository.FetchKeyInit" => {
                let hash = p.string("SigKeyHash")?;
                p.finish()?;
                if b64::exact::<64>(&hash).is_none() {
                    return Err(RpcError::params("SigKeyHash", "is not b64(64)"));
                }
                self.limits.check_fetch_of(&hash, Instant::now())?;
                self.fetch_key_init(hash).await?
            }
            "KeyInitRepository.FlushKeyInit" => {
                let sig_pub = verifying_key(&p.string("SigPubKey")?, "SigPubKey")?;
                let req: FlushRequest = p.nested("Flush")?;
                let signature = p.string("Signature")?;
                p.finish()?;
                self.limits.check_flush_of(
                    &ks_core::keyinit::sig_key_hash(sig_pub.as_bytes()),
                    Instant::now(),
                )?;
                self.flush(sig_pub, req, signature).await?
            }
            #[cfg(feature = "test-faults")]
            "Test.ForgeUID" => {
                // A keyserver that forges: appends and signs a UID without
                // §4.2 (only the v1 profile is checked), as a compromised
                // server would. Built only with feature `test-faults`.
                // `NonCanonical`: its sealed plaintext is not canonical LCJ
                // (a space after the first brace), and U is its hash.
                let msg: UidMessage = p.nested("UIDMessage")?;
                let non_canonical = match p.take("NonCanonical") {
                    Err(_) => false,
                    Ok(Value::Bool(b)) => b,
                    Ok(_) => return Err(RpcError::params("NonCanonical", "expected a boolean")),
                };
                p.finish()?;
                let profiled = msg.check_profile()?;
                let plaintext = non_canonical.then(|| {
                    let mut plain = msg.to_lcj();
                    plain.insert(1, b' ');
                    plain
                });
                let (tx, rx) = oneshot::channel();
                self.store.submit(Job::Uid {
                    kind: Kind::Update,
                    msg: Box::new(msg),
                    profiled: Box::new(profiled),
                    token: None,
                    keyserver: false,
                    forced: true,
                    reply_key: None,
                    plaintext,
                    now: now(),
                    reply: tx,
                })?;
                let reply = answer(rx).await?;
                object([("UIDMessageReply", reply.to_value())])
            }
            #[cfg(feature = "test-faults")]
            "Test.OmitLookups" => {
                // A keyserver that hides entries from LookupUID.
                p.finish()?;
                self.omit_lookup
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                object([("Omitting", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.KeepOneTime" => {
                // A repository that serves one-time KeyInits again while
                // signing that it deleted them.
                p.finish()?;
                self.keep_one_time
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                object([("Keeping", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.SubstituteKeyInits" => {
                // A repository that hands out KeyInits with PF keys of its
                // own (it cannot sign them as their owner).
                p.finish()?;
                self.substitute
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                object([("Substituting", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.TamperChain" => {
                // FetchHashChain drops the first entry of each chunk or
                // changes the last (the checkpoint stays honest).
                let kind = p.string("Kind")?;
                p.finish()?;
                if let Ok(mut f) = self.chain_fault.lock() {
                    *f = Some(kind);
                }
                object([("Tampering", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.StaleKeyInits" => {
                // A repository that serves KeyInits it should have deleted:
                // those of a SIGKEY a later update replaced, as the new
                // key's (`previous-sigkey`), or expired ones (`expired`).
                let kind = p.string("Kind")?;
                p.finish()?;
                if kind != "previous-sigkey" && kind != "expired" {
                    return Err(RpcError::params(
                        "Kind",
                        "is neither previous-sigkey nor expired",
                    ));
                }
                if let Ok(mut f) = self.store.faults().stale.lock() {
                    *f = Some(kind);
                }
                object([("Stale", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.CorruptUIDs" => {
                // FetchUID answers with a UID other than the entry's,
                // sealed and signed by the server.
                p.finish()?;
                self.corrupt_uids
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                object([("Corrupting", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.MisplaceUIDs" => {
                // FetchUID answers for the entry at p with a reply that
                // names the entry at p − 1 as HASHCHAINENTRY, signed.
                p.finish()?;
                self.misplace_uids
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                object([("Misplacing", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.CapabilitiesFault" => {
                // Capabilities that are `unsigned`, signed by an
                // `unscheduled` key, with TKNPUBKEY altered after signing
                // (`tknpubkey`, a man in the middle), or naming another
                // chain entry, signed (`entry`).
                let kind = p.string("Kind")?;
                p.finish()?;
                if let Ok(mut f) = self.caps_fault.lock() {
                    *f = Some(kind);
                }
                object([("Fault", Value::Bool(true))])
            }
            #[cfg(feature = "test-faults")]
            "Test.ForgeReply" => {
                // A keyserver that lies about inclusion: a signed reply for
                // the next position, with nothing appended.
                let msg: UidMessage = p.nested("UIDMessage")?;
                p.finish()?;
                self.forge_reply(&msg).await?
            }
            #[cfg(feature = "test-faults")]
            "Test.SignCheckpoint" => {
                // A keyserver that equivocates: signs any tree head.
                let size = p.integer("Size")?;
                let root = b64::exact::<32>(&p.string("Root")?)
                    .ok_or_else(|| RpcError::params("Root", "is not b64(32)"))?;
                p.finish()?;
                let key = tlog_core::note::SignerKey::from_seed(
                    &self.config.origin,
                    tlog_core::note::KeyType::Ed25519,
                    self.signer.as_bytes(),
                )
                .map_err(|_| RpcError::Internal)?;
                let text = tlog_core::Checkpoint::new(&self.config.origin, size, root).to_text();
                let mut note = tlog_core::note::Note::new(&text).map_err(|_| RpcError::Internal)?;
                note.add(key.sign(&text, now()));
                object([("Note", Value::String(b64::encode(&note.to_bytes())))])
            }
            _ => return Err(RpcError::MethodNotFound),
        };
        Ok(result)
    }

    /// The stateless half of redemption (§4.1 step 4, §5) for the tokens
    /// a paid call carries in `member` (one string, or a list of `count`):
    /// their spend ids, or nothing when tokens are disabled (the members
    /// are then ignored). Whether they were spent is the sequencer's
    /// question, in the call's own transaction.
    fn redeemable(
        policy: Option<&TokenPolicy>,
        member: &str,
        value: Option<Value>,
        count: usize,
    ) -> Result<Vec<SpendId>, RpcError> {
        let Some(policy) = policy else {
            return Ok(Vec::new());
        };
        let strings = match value {
            None => return Err(RpcError::PaymentRequired),
            Some(Value::String(s)) if count == 1 && member == "Token" => vec![s],
            Some(Value::Array(items)) if member == "Tokens" => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(RpcError::params(member, "expected strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(RpcError::params(member, "has the wrong type")),
        };
        if strings.len() < count {
            return Err(RpcError::PaymentRequired);
        }
        if strings.len() > count {
            return Err(RpcError::params(member, "more tokens than the price"));
        }
        strings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let invalid = |e: ks_core::token::TokenError| RpcError::TokenInvalid {
                    index: i as u64,
                    problem: e.to_string(),
                };
                let token = ks_core::token::Token::from_b64(s).map_err(invalid)?;
                token
                    .verify(&policy.digest, &policy.accepted)
                    .map_err(invalid)?;
                Ok(token.spend_id())
            })
            .collect()
    }

    #[cfg(feature = "test-faults")]
    async fn forge_reply(&self, msg: &UidMessage) -> Result<Value, RpcError> {
        use crate::chain::unavailable;
        use tlog_store::LogStore as _;
        let log = self.node.log_id();
        let size = self
            .node
            .store()
            .state(log)
            .await
            .map_err(unavailable)?
            .size;
        let last = crate::chain::entries(&self.node, size - 1, size).await?;
        let prev: [u8; 32] = last[0][..32].try_into().map_err(|_| RpcError::Internal)?;
        let u = msg.uid_hash();
        let entry =
            ks_core::entry::Entry::build(&msg.content.identity, &u, &[0x5a; 8], &[0x5b; 16], &prev);
        let reply_entry = ks_core::uid::ReplyEntry {
            hashchain_entry: b64::encode(&entry.0),
            hashchain_pos: size,
            origin: self.config.origin.clone(),
            timestamp: now(),
            uid_message_encrypted: ks_core::uid::seal(msg, &[0x5c; 16]),
        };
        let reply = ks_core::uid::UidMessageReply {
            server_signature: sign(&self.signer, Ctx::UidReply, &reply_entry),
            entry: reply_entry,
        };
        Ok(object([("UIDMessageReply", reply.to_value())]))
    }

    /// CreateUID / UpdateUID with the call's `Token` member; `keyserver`
    /// only for the server's own UID (which is free).
    pub async fn submit_uid(
        &self,
        kind: Kind,
        msg: UidMessage,
        token: Option<Value>,
        keyserver: bool,
    ) -> Result<ks_core::uid::UidMessageReply, RpcError> {
        let now = now();
        let profiled = rules::check_stateless(kind, &msg, now, &self.policy, keyserver)?;
        let policy = self.config.tokens.as_deref().filter(|_| !keyserver);
        let token = Self::redeemable(policy, "Token", token, 1)?.pop();
        let (tx, rx) = oneshot::channel();
        self.store.submit(Job::Uid {
            kind,
            msg: Box::new(msg),
            profiled: Box::new(profiled),
            token,
            keyserver,
            forced: false,
            reply_key: None,
            plaintext: None,
            now,
            reply: tx,
        })?;
        answer(rx).await
    }

    async fn capabilities(&self) -> Result<Value, RpcError> {
        #[cfg(feature = "test-faults")]
        let fault = self.caps_fault.lock().ok().and_then(|f| f.clone());
        #[cfg(feature = "test-faults")]
        if let Some(kind) = fault {
            return self.faulty_capabilities(&kind).await;
        }
        if let Ok(cached) = self.capabilities.lock() {
            if let Some((at, v)) = cached.as_ref() {
                if at.elapsed() < Duration::from_secs(60) {
                    return Ok(v.clone());
                }
            }
        }
        let (size, _) = self.node.published_head().ok_or(RpcError::Unavailable)?;
        let last = crate::chain::entries(&self.node, size - 1, size).await?;
        let entry = last.first().ok_or(RpcError::Unavailable)?;
        let domains = self.config.domains.clone();
        let caps = Capabilities {
            domains: domains.clone(),
            key_hash_chain_entry: b64::encode(entry),
            key_hash_chain_pos: size - 1,
            key_hash_chain_uris: vec![format!("https://{}", self.config.origin)],
            key_init_repository_uris: domains,
            key_repository_uris: vec![self.config.public_url.clone()],
            keyserver_identity: self.config.keyserver_identity(),
            limits: CapLimits {
                max_chunk: MAX_CHUNK,
                max_key_inits: MAX_KEYINITS as u64,
                max_key_inits_per_call: MAX_KEYINITS_PER_CALL as u64,
                max_request_bytes: MAX_REQUEST_BYTES as u64,
            },
            methods: METHODS
                .iter()
                .filter(|m| self.config.lookup || **m != "KeyRepository.LookupUID")
                .map(|m| m.to_string())
                .collect(),
            origin: self.config.origin.clone(),
            prices: match &self.config.tokens {
                Some(_) => Prices {
                    add_key_init: 1,
                    create_uid: 1,
                    update_uid: 1,
                },
                None => Prices::default(),
            },
            signing_pos: self.signing_pos,
            sig_pub_keys: vec![b64::encode(self.signer.verifying_key().as_bytes())],
            timestamp: now(),
            tkn_accepted: self.config.tokens.as_ref().map_or(Vec::new(), |t| {
                t.accepted.iter().map(|k| b64::encode(k.key_id())).collect()
            }),
            tkn_pub_key: self
                .config
                .tokens
                .as_ref()
                .map_or(String::new(), |t| b64::encode(t.current.spki())),
            tokens: if self.config.tokens.is_some() {
                "required"
            } else {
                "disabled"
            }
            .into(),
            version: "1.0".into(),
            witnesses: self.config.witnesses.clone(),
        };
        let signed = SignedCapabilities {
            signature: sign(&self.signer, Ctx::Capabilities, &caps),
            capabilities: caps,
        };
        let v = signed.to_value();
        if let Ok(mut cached) = self.capabilities.lock() {
            *cached = Some((Instant::now(), v.clone()));
        }
        Ok(v)
    }

    /// `test-faults`: the reply with a UID of the server's own making in
    /// place of the one its entry commits to, sealed and signed (the
    /// keyserver's own genesis UID is left alone, so clients still start).
    #[cfg(feature = "test-faults")]
    fn corrupted(
        &self,
        mut reply: ks_core::uid::UidMessageReply,
    ) -> Result<ks_core::uid::UidMessageReply, RpcError> {
        if reply.entry.hashchain_pos == 0 {
            return Ok(reply);
        }
        let thief = SigningKey::from_bytes(&[0x77; 32]);
        let keys = ks_core::author::UidKeys {
            sig_key: &thief,
            escrow: None,
            static_key: [9; 32],
        };
        let content =
            ks_core::author::content("mallory@localhost", &keys, 0, None, "strict", now());
        let msg = ks_core::author::sign_create(content, &keys);
        reply.entry.uid_message_encrypted = ks_core::uid::seal(&msg, &[0x5d; 16]);
        reply.server_signature = sign(&self.signer, Ctx::UidReply, &reply.entry);
        Ok(reply)
    }

    #[cfg(feature = "test-faults")]
    async fn faulty_capabilities(&self, kind: &str) -> Result<Value, RpcError> {
        if let Ok(mut c) = self.capabilities.lock() {
            *c = None;
        }
        let saved = take_fault(&self.caps_fault);
        let honest = Box::pin(self.capabilities()).await;
        if let Ok(mut f) = self.caps_fault.lock() {
            *f = saved;
        }
        let honest = honest?;
        let mut signed = SignedCapabilities::from_value(honest).map_err(|_| RpcError::Internal)?;
        match kind {
            "unsigned" => signed.signature = b64::encode(&[0; 64]),
            "unscheduled" => {
                let other = SigningKey::from_bytes(&[0x66; 32]);
                signed.signature = sign(&other, Ctx::Capabilities, &signed.capabilities);
            }
            "tknpubkey" => signed.capabilities.tkn_pub_key = b64::encode(&[1; 300]),
            "entry" => {
                let genesis = crate::chain::entries(&self.node, 0, 1).await?;
                signed.capabilities.key_hash_chain_entry =
                    b64::encode(genesis.first().ok_or(RpcError::Internal)?);
                signed.signature = sign(&self.signer, Ctx::Capabilities, &signed.capabilities);
            }
            _ => return Err(RpcError::params("Kind", "unknown fault")),
        }
        if let Ok(mut c) = self.capabilities.lock() {
            *c = None;
        }
        Ok(signed.to_value())
    }

    async fn fetch_chain(&self, start: u64, end: u64) -> Result<Value, RpcError> {
        #[allow(unused_mut)]
        let mut entries = crate::chain::range(&self.node, start, end).await?;
        #[cfg(feature = "test-faults")]
        match self
            .chain_fault
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .as_deref()
        {
            Some("drop") if !entries.is_empty() => {
                // HCFirstPos still says `start` (a chunk of one is left
                // empty).
                entries.remove(0);
            }
            Some("change") => {
                if let Some(e) = entries.last_mut() {
                    e[50] ^= 1;
                }
            }
            _ => {}
        }
        Ok(crate::chain::chunk_value(start, &entries))
    }

    async fn fetch_uid(&self, index: &[u8; 32]) -> Result<Value, RpcError> {
        let reply = crate::chain::uid_reply(self.store_reader(), index).await?;
        #[cfg(feature = "test-faults")]
        let reply = if self.corrupt_uids.load(std::sync::atomic::Ordering::Relaxed) {
            self.corrupted(reply)?
        } else {
            reply
        };
        #[cfg(feature = "test-faults")]
        let reply = match reply.entry.hashchain_pos {
            p if p > 0
                && self
                    .misplace_uids
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                let mut reply = reply;
                let before = crate::chain::entries(&self.node, p - 1, p).await?;
                reply.entry.hashchain_entry =
                    b64::encode(before.first().ok_or(RpcError::Internal)?);
                reply.server_signature = sign(&self.signer, Ctx::UidReply, &reply.entry);
                reply
            }
            _ => reply,
        };
        Ok(object([("UIDMessageReply", reply.to_value())]))
    }

    /// LookupUID (§4.6): every position of the identity below the latest
    /// published size, signed, so that leaving one out is provable.
    async fn lookup_uid(&self, identity: &str) -> Result<Value, RpcError> {
        let mapped = ks_core::identity::map(identity)
            .map_err(|e| RpcError::params("Identity", e.to_string()))?;
        let (size, _) = self.node.published_head().ok_or(RpcError::Unavailable)?;
        let reader = self.store_reader();
        let name = mapped.clone();
        let mut positions = tokio::task::spawn_blocking(move || reader.positions(&name))
            .await
            .map_err(|_| RpcError::Internal)??;
        positions.retain(|p| *p < size);
        #[cfg(feature = "test-faults")]
        if self.omit_lookup.load(std::sync::atomic::Ordering::Relaxed) {
            positions.pop();
        }
        let reply = ks_core::keyinit::LookupReply {
            hc_positions: positions,
            identity: mapped,
            origin: self.config.origin.clone(),
            tree_size: size,
        };
        let signature = sign(&self.signer, Ctx::LookupReply, &reply);
        Ok(object([
            ("Lookup", reply.to_value()),
            ("Signature", Value::String(signature)),
        ]))
    }

    fn store_reader(&self) -> crate::store::Reader {
        self.store.reader()
    }

    /// The newest row of `identity` (a read on the blocking pool).
    pub async fn identity_row(
        &self,
        identity: &str,
    ) -> Result<Option<crate::store::IdentityRow>, RpcError> {
        let (reader, identity) = (self.store_reader(), identity.to_string());
        tokio::task::spawn_blocking(move || reader.identity(&identity))
            .await
            .map_err(|_| RpcError::Internal)?
    }

    async fn add_key_inits(
        &self,
        sig_pub: VerifyingKey,
        key_inits: Vec<KeyInit>,
        tokens: Option<Value>,
    ) -> Result<Value, RpcError> {
        if key_inits.is_empty() {
            return Err(RpcError::params("KeyInits", "is empty"));
        }
        if key_inits.len() > MAX_KEYINITS_PER_CALL {
            return Err(RpcError::KeyinitLimit);
        }
        // §4.3's per-KeyInit checks (a signature, a decryption and a key
        // check each) and the tokens' RSA checks run on the blocking pool,
        // not on the sequencer.
        let reader = self.store_reader();
        let policy = self.config.tokens.clone();
        let checked = tokio::task::spawn_blocking(
            move || -> Result<(Vec<KeyInit>, Vec<SpendId>), RpcError> {
                let spends =
                    Self::redeemable(policy.as_deref(), "Tokens", tokens, key_inits.len())?;
                let row = reader.owner(&sig_pub)?.ok_or(RpcError::IdentityUnknown)?;
                let now = now();
                for (i, ki) in key_inits.iter().enumerate() {
                    check_keyinit(
                        ki,
                        &sig_pub,
                        &row.uid.content.repo_uris,
                        Window::Publish {
                            uid_not_after: row.uid.content.not_after,
                        },
                        now,
                    )
                    .map_err(|e| match e {
                        RpcError::InvalidParams { field, problem } => RpcError::InvalidParams {
                            field: format!("KeyInits[{i}].{field}"),
                            problem,
                        },
                        e => e,
                    })?;
                }
                Ok((key_inits, spends))
            },
        )
        .await
        .map_err(|_| RpcError::Internal)?;
        let (key_inits, tokens) = checked?;
        let (tx, rx) = oneshot::channel();
        self.store.submit(Job::AddKeyInit {
            sig_pub,
            key_inits,
            tokens,
            now: now(),
            reply: tx,
        })?;
        let (signatures, timestamp) = answer(rx).await?;
        Ok(object([
            (
                "Signatures",
                Value::Array(signatures.into_iter().map(Value::String).collect()),
            ),
            ("Timestamp", Value::Integer(timestamp)),
        ]))
    }

    async fn fetch_key_init(&self, sig_key_hash: String) -> Result<Value, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.store.submit(Job::FetchKeyInit {
            sig_key_hash,
            now: now(),
            #[cfg(feature = "test-faults")]
            keep: self
                .keep_one_time
                .load(std::sync::atomic::Ordering::Relaxed),
            #[cfg(feature = "test-faults")]
            substitute: self.substitute.load(std::sync::atomic::Ordering::Relaxed),
            reply: tx,
        })?;
        let (ki, receipt, signature) = answer(rx).await?;
        Ok(object([
            ("KeyInit", ki.to_value()),
            ("Dispersal", receipt.to_value()),
            ("Signature", Value::String(signature)),
        ]))
    }

    async fn flush(
        &self,
        sig_pub: VerifyingKey,
        req: FlushRequest,
        signature: String,
    ) -> Result<Value, RpcError> {
        let now = now();
        check_flush(&req, &signature, &sig_pub, &self.config.origin, now)?;
        let (tx, rx) = oneshot::channel();
        self.store.submit(Job::Flush {
            req,
            sig_pub,
            now,
            reply: tx,
        })?;
        let (receipt, signature) = answer(rx).await?;
        Ok(object([
            ("Receipt", receipt.to_value()),
            ("Signature", Value::String(signature)),
        ]))
    }
}

#[cfg(feature = "test-faults")]
fn take_fault(f: &Mutex<Option<String>>) -> Option<String> {
    f.lock().ok().and_then(|mut f| f.take())
}

fn verifying_key(s: &str, field: &str) -> Result<VerifyingKey, RpcError> {
    let bytes = b64::exact::<32>(s).ok_or_else(|| RpcError::params(field, "is not b64(32)"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| RpcError::params(field, "is not an Ed25519 key"))
}
