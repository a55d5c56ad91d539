//! The signing core: VLS behind the serial request/response format and the
//! LSS relay messages, with no network I/O.
//!
//! It is driven by one thread (VLS is synchronous and CPU-bound): the MQTT
//! loop hands it each payload the broker sends, and publishes what it
//! returns.
//!
//! Why it is shaped like this:
//! - **Persist before reply, commit after proof** (LSS mode): a request's
//!   mutations go to the broker with the client MAC; the reply is held until
//!   the broker returns the server MAC the signer expects for exactly those
//!   mutations; only then is the transaction committed locally and the reply
//!   released. The init dance is held to the same rule (the reference
//!   commits before LSS acknowledges, `W8`).
//! - **Transactions are never left open** (`W3`): if a handler fails or
//!   panics, or a put is refused, the session (node and store) is dropped
//!   and reopened from the durable store: the only rollback VLS's store has,
//!   and one that cannot leave memory ahead of disk.
//! - **A duplicate is answered, not re-signed** (`W5`, `W7`): the last
//!   request and its reply are kept; a resent request gets the cached reply.
//!   A request whose put reached LSS but whose acknowledgement was lost is
//!   recognised at the next resync (LSS holds exactly its mutations) and
//!   answered from the cache too.
//! - **Hostile input is an error, not a panic** (`W9`): frames are checked
//!   before VLS sees them, `HsmdInit` is validated, VLS runs under
//!   `catch_unwind`, and every LSS state and acknowledgement is MAC-checked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sphinx_wire::control::{self, ControlMessage, ControlResponse, Interval, Policy};
use sphinx_wire::hsmd::Frame;
use sphinx_wire::lss::{InitResponse, Msg, Muts, Response, SignerMutations};
use sphinx_wire::serial;
use sphinx_wire::topics::Suffix;
use vls_persist::kvv::cloud::CloudKVVStore;
use vls_persist::kvv::redb::RedbKVVStore;
use vls_persist::kvv::{JsonFormat, KVVPersister, KVVStore, KVV};
use vls_protocol_signer::approver::{Approve, NegativeApprover, VelocityApprover};
use vls_protocol_signer::handler::{Handler, HandlerBuilder, InitHandler, RootHandler};
use vls_protocol_signer::lightning_signer::bitcoin::blockdata::constants::genesis_block;
use vls_protocol_signer::lightning_signer::bitcoin::hashes::Hash;
use vls_protocol_signer::lightning_signer::bitcoin::secp256k1::PublicKey;
use vls_protocol_signer::lightning_signer::bitcoin::Network;
use vls_protocol_signer::lightning_signer::node::{NodeConfig, NodeServices};
use vls_protocol_signer::lightning_signer::persist::{Mutations, Persist};
use vls_protocol_signer::lightning_signer::policy::simple_validator::{
    make_default_simple_policy, SimpleValidatorFactory,
};
use vls_protocol_signer::lightning_signer::signer::my_keys_manager::MyKeysManager;
use vls_protocol_signer::lightning_signer::signer::ClockStartingTimeFactory;
use vls_protocol_signer::lightning_signer::util::clock::{Clock, StandardClock};
use vls_protocol_signer::lightning_signer::util::velocity::{
    VelocityControl, VelocityControlIntervalType, VelocityControlSpec,
};
use vls_protocol_signer::vls_protocol::msgs::{self, Message};

use crate::lss::{self, Credentials, LssError};
use crate::quorum::{Awaited, Quorum, QuorumError};

/// Acknowledged puts between two resyncs asked for to repair a provider.
pub const REPAIR_RESYNC_EVERY: u64 = 100;

/// The hsmd wire version this signer speaks at most.
pub const MAX_PROTOCOL_VERSION: u32 = msgs::DEFAULT_MAX_PROTOCOL_VERSION;

/// Why a message got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The payload is not a serial request or LSS message.
    #[error("malformed message: {0}")]
    Malformed(#[from] sphinx_wire::WireError),
    /// The hsmd message does not parse.
    #[error("undecodable hsmd message (type {0}): {1}")]
    Undecodable(u16, String),
    /// A request arrived before the signer was initialised.
    #[error("not initialised: {0}")]
    NotInitialised(&'static str),
    /// `HsmdInit` is not acceptable.
    #[error("HsmdInit refused: {0}")]
    BadInit(String),
    /// VLS refused or failed.
    #[error("signer refused {name}: {reason}")]
    Refused {
        /// The request's name.
        name: String,
        /// VLS's error.
        reason: String,
    },
    /// The durable store failed.
    #[error("signer store: {0}")]
    Store(String),
    /// LSS state or acknowledgement not acceptable.
    #[error(transparent)]
    Lss(#[from] LssError),
    /// An LSS message that does not fit the current step.
    #[error("unexpected LSS message: {0}")]
    LssProtocol(&'static str),
    /// Several providers: not enough verified, or not one history.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
}

/// Where the signer's state is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every change is stored in LSS (through the broker) before the reply.
    Lss,
    /// Only the local store (the broker runs with `--no-lss`).
    Local,
}

/// What to publish after a `vls` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// The reply, on `vls-res`.
    Reply(Vec<u8>),
    /// Mutations to store first, on `lss-res`; the reply is held.
    Persist(Vec<u8>),
}

type Persister = KVVPersister<CloudKVVStore<RedbKVVStore>, JsonFormat>;

struct Handlers {
    /// Never used to handle anything: cloned for each `HsmdInit`.
    pristine: InitHandler,
    root: Option<RootHandler>,
}

/// An open store and, once built, the node's handlers.
struct Session {
    persister: Arc<Persister>,
    handlers: Option<Handlers>,
}

/// What acknowledges stored changes.
enum Expected {
    /// The one server's MAC over exactly them.
    Mac([u8; 32]),
    /// `W` verified receipts of several providers.
    Quorum(Awaited),
}

/// Changes waiting for the server's acknowledgement.
enum Pending {
    /// A control message's changes; its response is held.
    Control {
        response: Vec<u8>,
        expected: Expected,
        policy_changed: bool,
    },
    /// The init dance's mutations (a new node, or an upgrade).
    Init { expected: Expected },
    /// A request's mutations; its reply is held.
    Request {
        seq: u16,
        request: Vec<u8>,
        reply: Vec<u8>,
        muts: Muts,
        expected: Expected,
        /// The `lss-res` payload, resent if the request is.
        persist: Vec<u8>,
    },
}

/// The signer's state machine.
pub struct Core {
    network: Network,
    seed: [u8; 32],
    store_dir: PathBuf,
    mode: Mode,
    session: Option<Session>,
    /// The accepted `HsmdInit`, replayed when the session is rebuilt.
    init_msg: Option<Vec<u8>>,
    /// The last request (seq and bytes) and the reply sent for it.
    last: Option<(u16, Vec<u8>, Vec<u8>)>,
    /// LSS credentials and the nonce of the current dance.
    lss: Option<(Credentials, [u8; 32])>,
    /// Instead, with several providers (`quorum-v1`): each one's
    /// credentials and last verified checkpoint.
    quorum: Option<Quorum>,
    /// The smallest write quorum this signer accepts from the broker.
    min_write_quorum: usize,
    /// Acknowledged puts since start, and at which one the last resync to
    /// repair a provider was asked for (at most one per
    /// [`REPAIR_RESYNC_EVERY`], so a provider that cannot be repaired does
    /// not make every request pay for a full read).
    acknowledged: u64,
    repair_resync_at: Option<u64>,
    /// Resync after the current publishes.
    resync_wanted: bool,
    /// Where the providers' last verified checkpoints (and evidence) are
    /// kept: apart from the VLS store, so that restoring the node from LSS
    /// after losing that store still remembers what each provider signed.
    checkpoint_dir: PathBuf,
    /// LSS state verified in the current dance (step 2 done).
    synced: bool,
    pending: Option<Pending>,
    /// Accept control messages in sphinx-key's form (Lightning Signed
    /// Message), which hsmd's `SignMessage` can be asked to make.
    compat_control: bool,
    /// A request whose changes went to LSS but met a conflict: perhaps our
    /// own earlier attempt landed and its answer was lost. The next verified
    /// read tells; if LSS holds exactly these changes, the held reply is the
    /// answer to the resent request.
    doubt: Option<Held>,
    /// VLS's clock (velocity windows, validation).
    clock: Arc<dyn Clock>,
    /// Requests answered from the cache instead of being signed again.
    cache_hits: u64,
    /// Which MACs the signer asks LSS for (framed unless the operator
    /// allowed a server without them).
    mac_scheme: lss_core::MacScheme,
}

/// A request's reply held until LSS stores its changes.
struct Held {
    seq: u16,
    request: Vec<u8>,
    reply: Vec<u8>,
    muts: Muts,
}

/// What [`Core::dispatch`] asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Publish on this topic.
    Publish(Suffix, Vec<u8>),
    /// Start the LSS dance again: say `hello` with a fresh login token.
    Resync,
}

impl Core {
    /// Opens the store in `store_dir` for `seed`. In local mode the node is
    /// built at once; in LSS mode it is built in the init dance, after the
    /// local store has been reconciled with LSS.
    pub fn open(
        network: Network,
        seed: [u8; 32],
        store_dir: &Path,
        mode: Mode,
    ) -> Result<Self, CoreError> {
        let mut core = Core {
            network,
            seed,
            store_dir: store_dir.to_path_buf(),
            mode,
            session: None,
            init_msg: None,
            last: None,
            lss: None,
            quorum: None,
            min_write_quorum: 1,
            acknowledged: 0,
            repair_resync_at: None,
            resync_wanted: false,
            checkpoint_dir: store_dir.to_path_buf(),
            synced: false,
            pending: None,
            compat_control: false,
            doubt: None,
            clock: Arc::new(StandardClock()),
            cache_hits: 0,
            mac_scheme: lss_core::MacScheme::Framed,
        };
        let persister = core.open_store()?;
        let handlers = match mode {
            Mode::Local => {
                let (handlers, muts) = core.build(&persister)?;
                commit_local(&persister, muts)?;
                Some(handlers)
            }
            Mode::Lss => None,
        };
        core.session = Some(Session {
            persister,
            handlers,
        });
        Ok(core)
    }

    /// Accept an LSS server without framed MACs (the reference's, or
    /// another that lacks the `framed-mac-v1` extension). Its MACs let
    /// whoever relays a put regroup its entries undetected; only for servers
    /// that cannot be upgraded.
    pub fn allow_unframed_macs(mut self, allow: bool) -> Self {
        self.mac_scheme = if allow {
            lss_core::MacScheme::Unframed
        } else {
            lss_core::MacScheme::Framed
        };
        self
    }

    /// With several LSS providers, refuse a broker that asks for fewer than
    /// `w` receipts per put (the host must not lower the operator's quorum).
    pub fn min_write_quorum(mut self, w: usize) -> Self {
        self.min_write_quorum = w;
        self
    }

    /// Keep the LSS providers' checkpoints and evidence in `dir` (default:
    /// the store directory).
    pub fn checkpoint_dir(mut self, dir: &Path) -> Self {
        self.checkpoint_dir = dir.to_path_buf();
        self
    }

    /// Use `clock` as VLS's clock instead of the system's (tests with a
    /// virtual clock). Takes effect for the node built next.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Also accept control messages signed as sphinx-key signs them (a
    /// Lightning Signed Message by the node key). Only for operators whose
    /// control app cannot sign in Lightkeeper's domain: `SignMessage`
    /// requests shaped like a control message are refused either way, but a
    /// signature from another signer of the same seed without that rule
    /// would pass.
    pub fn accept_sphinx_key_control(mut self, accept: bool) -> Self {
        self.compat_control = accept;
        self
    }

    /// How many resent requests were answered from the cache (never signed
    /// twice).
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits
    }

    /// The node id, once the node is built.
    pub fn node_id(&self) -> Option<String> {
        let handlers = self.session.as_ref()?.handlers.as_ref()?;
        Some(handlers.pristine.node().get_id().to_string())
    }

    fn open_store(&self) -> Result<Arc<Persister>, CoreError> {
        let dir = self.store_dir.clone();
        guarded("open the store", move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CoreError::Store(format!("cannot create {}: {e}", dir.display())))?;
            let local = RedbKVVStore::new(&dir);
            Ok(Arc::new(KVVPersister(
                CloudKVVStore::new(local),
                JsonFormat,
            )))
        })
    }

    fn builder(&self, persister: &Arc<Persister>) -> HandlerBuilder {
        // The operator's policy (a control message) sets VLS's global
        // velocity limit, and payments are approved within it. Without one,
        // VLS's default policy applies and no payment is preapproved: the
        // operator must say how much may leave.
        let mut policy = make_default_simple_policy(self.network);
        let clock = self.clock.clone();
        let approver: Arc<dyn Approve> = match stored_policy(persister) {
            Some(p) => {
                let spec = VelocityControlSpec {
                    limit_msat: p.msat_per_interval,
                    interval_type: match p.interval {
                        Interval::Hourly => VelocityControlIntervalType::Hourly,
                        Interval::Daily => VelocityControlIntervalType::Daily,
                    },
                };
                policy.global_velocity_control = spec;
                Arc::new(VelocityApprover::new(
                    clock.clone(),
                    VelocityControl::new(spec),
                    NegativeApprover(),
                ))
            }
            None => Arc::new(NegativeApprover()),
        };
        let services = NodeServices {
            validator_factory: Arc::new(SimpleValidatorFactory::new_with_policy(policy)),
            starting_time_factory: ClockStartingTimeFactory::new(),
            persister: persister.clone(),
            clock,
            trusted_oracle_pubkeys: vec![],
        };
        HandlerBuilder::new(self.network, 0, services, self.seed)
            .max_protocol_version(MAX_PROTOCOL_VERSION)
            .approver(approver)
    }

    /// Builds (restores or creates) the node inside a transaction; returns
    /// the handlers and what building changed, uncommitted.
    fn build(&self, persister: &Arc<Persister>) -> Result<(Handlers, Mutations), CoreError> {
        let builder = self.builder(persister);
        guarded("build the node", || {
            persister
                .enter()
                .map_err(|e| CoreError::Store(format!("{e:?}")))?;
            let built = builder.build();
            let muts = persister.prepare();
            let pristine =
                built.map_err(|e| CoreError::Store(format!("cannot build the node: {e:?}")))?;
            // The stored policy's velocity limit applies to a restored node too.
            pristine.node().update_velocity_controls();
            Ok((
                Handlers {
                    pristine,
                    root: None,
                },
                muts,
            ))
        })
    }

    /// Handles one message from the broker on `suffix`, whatever it is, and
    /// says what to publish (errors included, on `error`). `nonce` must be
    /// fresh randomness from the caller; it is used by `init-1` only.
    pub fn dispatch(&mut self, suffix: Suffix, payload: &[u8], nonce: [u8; 32]) -> Vec<Out> {
        let publish = |suffix| move |payload| vec![Out::Publish(suffix, payload)];
        let result = match suffix {
            Suffix::Init1Msg => self.lss_init(payload, nonce).map(publish(Suffix::Init1Res)),
            Suffix::Init2Msg => self.lss_restore(payload).map(publish(Suffix::Init2Res)),
            Suffix::Init3Msg => self.init(payload).map(publish(Suffix::Init3Res)),
            Suffix::Vls => self.handle(payload).map(|out| match out {
                Outgoing::Reply(reply) => vec![Out::Publish(Suffix::VlsRes, reply)],
                Outgoing::Persist(muts) => vec![Out::Publish(Suffix::LssRes, muts)],
            }),
            Suffix::LssMsg => self.lss_stored(payload).map(|released| {
                let mut out: Vec<Out> = released
                    .into_iter()
                    .map(|(suffix, payload)| Out::Publish(suffix, payload))
                    .collect();
                if std::mem::take(&mut self.resync_wanted) {
                    out.push(Out::Resync);
                }
                out
            }),
            Suffix::Control => self.control(payload).map(|out| match out {
                Outgoing::Reply(response) => vec![Out::Publish(Suffix::ControlRes, response)],
                Outgoing::Persist(muts) => vec![Out::Publish(Suffix::LssRes, muts)],
            }),
            // Confirm, then resync: a fresh `hello` starts the dance.
            Suffix::LssConflict => self
                .lss_conflict(payload)
                .map(|r| vec![Out::Publish(Suffix::LssConflictRes, r), Out::Resync]),
            other => Err(CoreError::Refused {
                name: other.as_str().into(),
                reason: "not supported by this signer".into(),
            }),
        };
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "request failed");
            vec![Out::Publish(Suffix::Error, error_payload(&e.to_string()))]
        })
    }

    // ---- LSS init dance ----

    /// `init-1-msg`: the server's key; answers `init-1-res` with the
    /// signer's credentials and `nonce` (fresh, from the caller) for the full
    /// read that follows.
    pub fn lss_init(&mut self, payload: &[u8], nonce: [u8; 32]) -> Result<Vec<u8>, CoreError> {
        let server_pubkey = match Msg::decode(payload)? {
            Msg::Init { server_pubkey } => server_pubkey,
            Msg::Providers(providers) => {
                self.store()?;
                let (network, seed) = (self.network, self.seed);
                let (quorum, response) = Quorum::open(
                    &providers,
                    nonce,
                    &self.checkpoint_dir,
                    self.min_write_quorum,
                    |key| {
                        let server = PublicKey::from_slice(key).map_err(|_| {
                            QuorumError::Providers("a server key is not a public key".into())
                        })?;
                        Ok(lss_credentials(network, &seed, &server)
                            .with_scheme(lss_core::MacScheme::Framed))
                    },
                )?;
                self.quorum = Some(quorum);
                self.lss = None;
                self.synced = false;
                return Ok(response);
            }
            _ => return Err(CoreError::LssProtocol("expected Init on init-1-msg")),
        };
        if self.min_write_quorum > 1 {
            return Err(QuorumError::Providers(format!(
                "the broker relays to one LSS provider; this signer requires a write quorum of {}",
                self.min_write_quorum
            ))
            .into());
        }
        let server = PublicKey::from_slice(&server_pubkey)
            .map_err(|_| CoreError::LssProtocol("the server key is not a public key"))?;
        self.store()?;
        let creds = lss_credentials(self.network, &self.seed, &server).with_scheme(self.mac_scheme);
        let response = Response::Init(InitResponse {
            client_id: creds.client_id,
            auth_token: creds.token,
            nonce: Some(nonce),
            framed_mac: creds.scheme == lss_core::MacScheme::Framed,
        });
        self.lss = Some((creds, nonce));
        self.quorum = None;
        self.synced = false;
        Ok(response.encode())
    }

    fn store(&mut self) -> Result<Arc<Persister>, CoreError> {
        if let Some(session) = &self.session {
            return Ok(session.persister.clone());
        }
        let persister = self.open_store()?;
        self.session = Some(Session {
            persister: persister.clone(),
            handlers: None,
        });
        Ok(persister)
    }

    /// `init-2-msg`: the whole LSS state with the server's MAC over our
    /// nonce. Checks it, brings the local store forward (refusing one that
    /// is ahead or forked), builds the node, and answers `init-2-res` with
    /// whatever building changed (to be stored and acknowledged before
    /// `HsmdInit` is answered).
    pub fn lss_restore(&mut self, payload: &[u8]) -> Result<Vec<u8>, CoreError> {
        let remote: Muts = match (&mut self.quorum, &self.lss) {
            (Some(quorum), _) => quorum.restore(payload)?,
            (None, Some((creds, nonce))) => {
                let Msg::Created(state) = Msg::decode(payload)? else {
                    return Err(CoreError::LssProtocol("expected Created on init-2-msg"));
                };
                creds.check_read(nonce, &state.muts, state.server_hmac.as_ref())?;
                state.muts
            }
            (None, None) => return Err(CoreError::LssProtocol("init-2 before init-1")),
        };

        // A request whose put landed while its acknowledgement was lost:
        // LSS proves it is stored, so its reply is the answer to a resend.
        let held = match self.pending.take() {
            Some(Pending::Request {
                seq,
                request,
                reply,
                muts,
                ..
            }) => Some(Held {
                seq,
                request,
                reply,
                muts,
            }),
            Some(_) => {
                tracing::info!("dropping changes LSS never acknowledged");
                None
            }
            None => None,
        }
        .or(self.doubt.take());
        if let Some(held) = held {
            if !held.muts.is_empty() && lss::contains(&remote, &held.muts) {
                tracing::info!(
                    seq = held.seq,
                    "a held reply's changes are in LSS; it answers the resent request"
                );
                self.last = Some((held.seq, held.request, held.reply));
            } else {
                tracing::info!(
                    seq = held.seq,
                    "a held reply's changes are not in LSS; dropped"
                );
            }
        }
        // Reopen: a transaction of the dropped changes may still be open.
        self.session = None;
        let persister = self.open_store()?;
        let local: Muts = guarded("read the store", || {
            persister
                .0
                .get_prefix("")
                .map(|it| it.map(KVV::into_inner).collect())
                .map_err(|e| CoreError::Store(format!("{e:?}")))
        })?;
        let apply = lss::plan(&local, &remote)?;
        if !apply.is_empty() {
            tracing::info!(keys = apply.len(), "local store brought forward from LSS");
            let kvvs = apply.into_iter().map(|(k, vv)| KVV(k, vv)).collect();
            guarded("apply LSS state", || {
                persister
                    .0
                    .put_batch_unlogged(kvvs)
                    .map_err(|e| CoreError::Store(format!("{e:?}")))
            })?;
        }
        let (handlers, muts) = self.build(&persister)?;
        let muts: Muts = muts.into_inner();
        let response = if muts.is_empty() {
            commit_local(&persister, Mutations::new())?;
            match &mut self.quorum {
                Some(quorum) => quorum.prepare(&Vec::new())?.0,
                None => Response::Created(SignerMutations {
                    client_hmac: [0; 32],
                    muts: Vec::new(),
                })
                .encode(),
            }
        } else {
            let (payload, expected) = self.storing(&muts, true)?;
            self.pending = Some(Pending::Init { expected });
            payload
        };
        self.session = Some(Session {
            persister,
            handlers: Some(handlers),
        });
        self.synced = true;
        Ok(response)
    }

    /// The message that stores `muts` (`Created` at init, else `VlsMuts`;
    /// `QuorumMuts` with several providers) and what will acknowledge it.
    fn storing(&mut self, muts: &Muts, init: bool) -> Result<(Vec<u8>, Expected), CoreError> {
        if let Some(quorum) = &mut self.quorum {
            let (payload, awaited) = quorum.prepare(muts)?;
            return Ok((payload, Expected::Quorum(awaited)));
        }
        let (creds, _) = self
            .lss
            .as_ref()
            .ok_or(CoreError::NotInitialised("no LSS credentials"))?;
        let changes = SignerMutations {
            client_hmac: creds.client_mac(muts)?,
            muts: muts.clone(),
        };
        let expected = Expected::Mac(creds.server_put_mac(muts)?);
        let payload = if init {
            Response::Created(changes)
        } else {
            Response::VlsMuts(changes)
        };
        Ok((payload.encode(), expected))
    }

    /// `lss-msg`: the server's acknowledgement. Commits the pending changes
    /// if (and only if) it carries the MAC the server makes for exactly
    /// them; returns the released reply (`vls-res` or `control-res`), if one
    /// was held.
    pub fn lss_stored(&mut self, payload: &[u8]) -> Result<Option<(Suffix, Vec<u8>)>, CoreError> {
        let expected = match &self.pending {
            Some(
                Pending::Init { expected, .. }
                | Pending::Request { expected, .. }
                | Pending::Control { expected, .. },
            ) => expected,
            None => {
                // A late acknowledgement of changes already dropped (a
                // resync came first): LSS holds them, the next read says so.
                tracing::warn!("an LSS acknowledgement with nothing pending ignored");
                return Ok(None);
            }
        };
        let genuine: Result<bool, CoreError> = match (expected, &mut self.quorum) {
            (Expected::Mac(expected), _) => match Msg::decode(payload)? {
                Msg::Stored(ack)
                    if ack
                        .server_hmac
                        .is_some_and(|mac| lss_core::Mac(*expected).verify(&mac)) =>
                {
                    Ok(false)
                }
                Msg::Stored(_) => Err(LssError::BadMac.into()),
                _ => Err(CoreError::LssProtocol("expected Stored on lss-msg")),
            },
            (Expected::Quorum(awaited), Some(quorum)) => quorum
                .acknowledge(payload, awaited)
                .map_err(CoreError::from),
            (Expected::Quorum(_), None) => Err(CoreError::LssProtocol("no LSS providers")),
        };
        let repair = match genuine {
            Ok(repair) => repair,
            Err(e) => {
                // An attack or a broken relay: nothing is committed, nothing
                // released, and the session must be rebuilt from a verified
                // read.
                self.pending = None;
                self.session = None;
                self.synced = false;
                return Err(e);
            }
        };
        self.acknowledged += 1;
        if repair
            && self
                .repair_resync_at
                .is_none_or(|at| self.acknowledged >= at + REPAIR_RESYNC_EVERY)
        {
            tracing::info!(
                "an LSS provider is behind; resyncing once this reply is out, to repair it"
            );
            self.repair_resync_at = Some(self.acknowledged);
            self.resync_wanted = true;
        }
        let persister = self
            .session
            .as_ref()
            .map(|s| s.persister.clone())
            .ok_or(CoreError::NotInitialised("no session"))?;
        match self.pending.take() {
            Some(Pending::Request {
                seq,
                request,
                reply,
                ..
            }) => {
                commit_local(&persister, Mutations::new())?;
                self.last = Some((seq, request, reply.clone()));
                Ok(Some((Suffix::VlsRes, reply)))
            }
            Some(Pending::Control {
                response,
                policy_changed,
                ..
            }) => {
                commit_local(&persister, Mutations::new())?;
                if policy_changed {
                    // The store must be closed before it is reopened.
                    drop(persister);
                    self.rebuild();
                }
                Ok(Some((Suffix::ControlRes, response)))
            }
            Some(Pending::Init { .. }) => {
                commit_local(&persister, Mutations::new())?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// `lss-conflict`: the put was refused (another signer wrote). Drops
    /// the pending changes and the session; answers `lss-conflict-res`. The
    /// caller then resyncs (says `hello` again).
    pub fn lss_conflict(&mut self, payload: &[u8]) -> Result<Vec<u8>, CoreError> {
        let Msg::PutConflict = Msg::decode(payload)? else {
            return Err(CoreError::LssProtocol(
                "expected PutConflict on lss-conflict",
            ));
        };
        tracing::error!(
            "LSS refused our changes (another signer wrote, or an earlier attempt of ours landed); resyncing to tell"
        );
        self.doubt = match self.pending.take() {
            Some(Pending::Request {
                seq,
                request,
                reply,
                muts,
                ..
            }) => Some(Held {
                seq,
                request,
                reply,
                muts,
            }),
            _ => None,
        };
        self.session = None;
        self.synced = false;
        Ok(Response::PutConflictConfirmed.encode())
    }

    // ---- control ----

    /// `control`: a control message signed by the node key. Returns the
    /// `control-res` payload (`Reply`), or, when it changes state, the
    /// changes to store first (`Persist`; the response is released by
    /// [`Core::lss_stored`]). Refusals are answered with
    /// `ControlResponse::Error`. Every accepted message except `Nonce`
    /// stores its nonce, so it cannot be replayed, even on another signer
    /// of the same node.
    pub fn control(&mut self, payload: &[u8]) -> Result<Outgoing, CoreError> {
        let error = |e: String| Ok(Outgoing::Reply(control::encode(&ControlResponse::Error(e))));
        let node_id = crate::run::node_key(self.network, &self.seed).0;
        let (message, nonce) = match control::open(payload, &node_id, self.compat_control) {
            Ok(opened) => opened,
            Err(e) => return error(e.to_string()),
        };
        if self.pending.is_some() {
            return error("busy: a change awaits LSS; try again".into());
        }
        let session = self
            .session
            .as_ref()
            .ok_or(CoreError::NotInitialised("no session"))?;
        let handlers = session
            .handlers
            .as_ref()
            .ok_or(CoreError::NotInitialised("the node is not built"))?;
        let persister = session.persister.clone();
        let node = handlers.pristine.node().clone();
        let last = stored_nonce(&persister);
        if let Err(e) = control::check_nonce(&message, nonce, last) {
            return error(e.to_string());
        }
        let policy = stored_policy(&persister).unwrap_or(DEFAULT_POLICY);
        let allowlist = || node.allowlist().map_err(|e| format!("{e:?}"));
        let velocity = || {
            let state = node.get_state();
            Some((
                state.velocity_control.start_sec,
                state.velocity_control.buckets.clone(),
            ))
        };
        // What to answer, and what to store besides the nonce.
        let mut new_policy = None;
        let mut new_allowlist = None;
        let response = match message {
            ControlMessage::Nonce => {
                return Ok(Outgoing::Reply(control::encode(&ControlResponse::Nonce(
                    last,
                ))))
            }
            ControlMessage::QueryPolicy => ControlResponse::PolicyCurrent(policy),
            ControlMessage::UpdatePolicy(p) => {
                new_policy = Some(p);
                ControlResponse::PolicyUpdated(p)
            }
            ControlMessage::QueryAllowlist => match allowlist() {
                Ok(list) => ControlResponse::AllowlistCurrent(list),
                Err(e) => ControlResponse::Error(e),
            },
            ControlMessage::UpdateAllowlist(list) => {
                new_allowlist = Some(list.clone());
                ControlResponse::AllowlistUpdated(list)
            }
            ControlMessage::QueryVelocity => ControlResponse::VelocityCurrent(velocity()),
            ControlMessage::QueryAll => match allowlist() {
                Ok(allowlist) => ControlResponse::AllCurrent {
                    policy,
                    allowlist,
                    velocity: velocity(),
                },
                Err(e) => ControlResponse::Error(e),
            },
            ControlMessage::ResetWifi
            | ControlMessage::ResetKeys
            | ControlMessage::ResetAll
            | ControlMessage::Ota(_) => {
                ControlResponse::Error("not supported by a host signer".into())
            }
        };
        let staged = guarded("control", || {
            persister
                .enter()
                .map_err(|e| CoreError::Store(format!("{e:?}")))?;
            let mut result = persister
                .0
                .put(NONCE_KEY, nonce.to_be_bytes().to_vec())
                .map_err(|e| CoreError::Store(format!("{e:?}")));
            if let (Ok(()), Some(p)) = (&result, new_policy) {
                result = persister
                    .0
                    .put(POLICY_KEY, control::encode(&p))
                    .map_err(|e| CoreError::Store(format!("{e:?}")));
            }
            if let (Ok(()), Some(list)) = (&result, &new_allowlist) {
                result = node.set_allowlist(list).map_err(|e| CoreError::Refused {
                    name: "UpdateAllowlist".into(),
                    reason: format!("{e:?}"),
                });
            }
            let muts = persister.prepare();
            result.map(|()| muts)
        });
        // The session is reopened below in some cases; the store must be
        // closed first, so no handle to it may outlive this point there.
        drop(node);
        let muts: Muts = match staged {
            Ok(muts) => muts.into_inner(),
            Err(e) => {
                drop(persister);
                self.rebuild();
                return error(e.to_string());
            }
        };
        let response = control::encode(&response);
        if self.mode == Mode::Local {
            commit_local(&persister, Mutations::new())?;
            drop(persister);
            if new_policy.is_some() {
                self.rebuild();
            }
            return Ok(Outgoing::Reply(response));
        }
        drop(persister);
        let (persist, expected) = match self.storing(&muts, false) {
            Ok(stored) => stored,
            Err(e) => {
                self.rebuild();
                return Err(e);
            }
        };
        self.pending = Some(Pending::Control {
            response,
            expected,
            policy_changed: new_policy.is_some(),
        });
        Ok(Outgoing::Persist(persist))
    }

    // ---- hsmd ----

    /// Handles `init-3-msg`: a serial-wrapped `HsmdInit`. Each (re)connection
    /// of the signer starts with it, so a signer that stays up across a
    /// reconnect renegotiates from its committed state.
    pub fn init(&mut self, payload: &[u8]) -> Result<Vec<u8>, CoreError> {
        let request = serial::Request::decode(payload)?;
        let message = request.frame.message();
        self.check_init(&request.frame)?;
        if self.mode == Mode::Lss && (!self.synced || self.pending.is_some()) {
            return Err(CoreError::NotInitialised(
                "HsmdInit before the LSS state was synced and acknowledged",
            ));
        }
        let reply = self.run_init(message.clone())?;
        self.init_msg = Some(message);
        encode_reply(request.seq, reply)
    }

    fn check_init(&self, frame: &Frame) -> Result<(), CoreError> {
        let msg = decode(frame)?;
        let Message::HsmdInit(init) = msg else {
            return Err(CoreError::BadInit(format!(
                "expected HsmdInit, got message type {}",
                frame.ty
            )));
        };
        let genesis = genesis_block(self.network).block_hash();
        if init.chain_params.as_byte_array() != genesis.as_byte_array() {
            return Err(CoreError::BadInit(format!(
                "the node runs on another chain than this signer's {} (genesis {})",
                self.network, genesis
            )));
        }
        if init.hsm_wire_min_version > MAX_PROTOCOL_VERSION
            || init.hsm_wire_max_version < msgs::MIN_PROTOCOL_VERSION
            || init.hsm_wire_min_version > init.hsm_wire_max_version
        {
            return Err(CoreError::BadInit(format!(
                "no common wire version: node {}..={}, signer {}..={}",
                init.hsm_wire_min_version,
                init.hsm_wire_max_version,
                msgs::MIN_PROTOCOL_VERSION,
                MAX_PROTOCOL_VERSION
            )));
        }
        Ok(())
    }

    fn run_init(&mut self, message: Vec<u8>) -> Result<Vec<u8>, CoreError> {
        let handlers = self
            .session
            .as_mut()
            .and_then(|s| s.handlers.as_mut())
            .ok_or(CoreError::NotInitialised("the node is not built"))?;
        let msg =
            msgs::from_vec(message).map_err(|e| CoreError::Undecodable(11, format!("{e:?}")))?;
        let mut init = handlers.pristine.clone();
        let handled = guarded("HsmdInit", || {
            init.handle(msg).map_err(|e| CoreError::Refused {
                name: "HsmdInit".into(),
                reason: format!("{e:?}"),
            })
        })?;
        let (true, Some(reply)) = handled else {
            return Err(CoreError::BadInit("negotiation did not complete".into()));
        };
        handlers.root = Some(init.into());
        Ok(reply.as_vec())
    }

    /// Handles `vls`: a serial-wrapped hsmd request.
    pub fn handle(&mut self, payload: &[u8]) -> Result<Outgoing, CoreError> {
        let request = serial::Request::decode(payload)?;
        // A duplicate is the same sequence number with the same bytes. The
        // same number with other bytes is a new request (a restarted broker
        // counts from the start again).
        if let Some((seq, bytes, reply)) = &self.last {
            if *seq == request.seq && bytes.as_slice() == payload {
                tracing::info!(seq, "duplicate request answered from the cache");
                self.cache_hits += 1;
                return Ok(Outgoing::Reply(reply.clone()));
            }
        }
        match &self.pending {
            Some(Pending::Request {
                seq,
                request: bytes,
                persist,
                ..
            }) if *seq == request.seq && bytes.as_slice() == payload => {
                tracing::info!(seq, "duplicate of a request awaiting LSS; mutations resent");
                return Ok(Outgoing::Persist(persist.clone()));
            }
            Some(Pending::Init { .. }) => {
                return Err(CoreError::NotInitialised(
                    "the init changes are not acknowledged yet",
                ));
            }
            Some(Pending::Request { .. } | Pending::Control { .. }) => {
                // The broker gave up on it; nothing of it was committed.
                tracing::warn!("a new request while changes awaited LSS; dropping them");
                self.pending = None;
                self.rebuild();
            }
            None => {}
        }
        match self.handle_new(&request, payload) {
            Ok(outgoing) => Ok(outgoing),
            Err(e) => {
                // Whatever the handler did in memory is dropped with it.
                self.rebuild();
                Err(e)
            }
        }
    }

    fn handle_new(
        &mut self,
        request: &serial::Request,
        payload: &[u8],
    ) -> Result<Outgoing, CoreError> {
        let msg = decode(&request.frame)?;
        let name = message_name(&request.frame);
        let session = self
            .session
            .as_ref()
            .ok_or(CoreError::NotInitialised("no session"))?;
        let root = session
            .handlers
            .as_ref()
            .and_then(|h| h.root.as_ref())
            .ok_or(CoreError::NotInitialised("HsmdInit has not been received"))?;
        if matches!(msg, Message::HsmdInit(_) | Message::HsmdInit2(_)) {
            return Err(CoreError::BadInit("HsmdInit outside init".into()));
        }
        // Key separation: the node host must not get the node key's
        // signature over a login token or a control message.
        if let Message::SignMessage(m) = &msg {
            if sphinx_wire::signed::is_reserved_message(&m.message.0) {
                tracing::error!(
                    "SignMessage refused: the message has the shape of a login token or control message"
                );
                return Err(CoreError::Refused {
                    name,
                    reason:
                        "the message has the shape of a signer login token or control message; \
                             signing it would let the node host impersonate the operator"
                            .into(),
                });
            }
        }
        let persister = session.persister.clone();
        persister
            .enter()
            .map_err(|e| CoreError::Store(format!("{e:?}")))?;
        let peer_id = request.peer_id;
        let dbid = request.dbid;
        let result = guarded(&name, || {
            let reply = if dbid == 0 {
                root.handle(msg)
            } else {
                let client = root.for_new_client(
                    0,
                    vls_protocol_signer::vls_protocol::model::PubKey(peer_id),
                    dbid,
                );
                client.handle(msg)
            };
            reply.map_err(|e| CoreError::Refused {
                name: name.clone(),
                reason: format!("{e:?}"),
            })
        });
        let muts = persister.prepare();
        let reply = encode_reply(request.seq, result?.as_vec())?;
        let muts: Muts = muts.into_inner();
        if self.mode == Mode::Local || muts.is_empty() {
            commit_local(&persister, Mutations::new())?;
            self.last = Some((request.seq, payload.to_vec(), reply.clone()));
            return Ok(Outgoing::Reply(reply));
        }
        let (persist, expected) = self.storing(&muts, false)?;
        self.pending = Some(Pending::Request {
            seq: request.seq,
            request: payload.to_vec(),
            reply,
            muts,
            expected,
            persist: persist.clone(),
        });
        Ok(Outgoing::Persist(persist))
    }

    /// Drops the session and reopens it from the durable store, replaying
    /// the accepted `HsmdInit`. On failure the core stays uninitialised and
    /// says so on the next request.
    fn rebuild(&mut self) {
        self.session = None;
        let rebuilt = self.open_store().and_then(|persister| {
            let (handlers, muts) = self.build(&persister)?;
            if !muts.is_empty() {
                return Err(CoreError::NotInitialised("the node needs an LSS resync"));
            }
            commit_local(&persister, muts)?;
            Ok(Session {
                persister,
                handlers: Some(handlers),
            })
        });
        match rebuilt {
            Ok(session) => self.session = Some(session),
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the signer after a failed request");
                self.synced = false;
                return;
            }
        }
        if let Some(init) = self.init_msg.clone() {
            if let Err(e) = self.run_init(init) {
                tracing::error!(error = %e, "cannot renegotiate after a failed request");
            }
        }
    }
}

/// The LSS identity VLS derives from `seed` for the server `server`: its
/// namespace (the persistence key) and the shared secret.
pub fn lss_credentials(network: Network, seed: &[u8; 32], server: &PublicKey) -> Credentials {
    let config = NodeConfig::new(network);
    let keys = MyKeysManager::new(
        config.key_derivation_style,
        seed,
        network,
        ClockStartingTimeFactory::new().as_ref(),
    );
    Credentials::new(
        keys.get_persistence_pubkey().serialize(),
        keys.get_persistence_shared_secret(server),
    )
}

/// The reference's error payload: UTF-8 text followed by one code byte
/// (1 = VLS).
pub fn error_payload(message: &str) -> Vec<u8> {
    let mut out = message.as_bytes().to_vec();
    out.push(1);
    out
}

/// Where the last accepted control nonce is stored (in LSS like the rest).
const NONCE_KEY: &str = "lightkeeper/control-nonce";
/// Where the operator's policy is stored.
const POLICY_KEY: &str = "lightkeeper/control-policy";
/// The policy until the operator sets one: VLS's default (no velocity limit).
const DEFAULT_POLICY: Policy = Policy {
    msat_per_interval: 0,
    interval: Interval::Daily,
    htlc_limit_msat: 0,
};

fn stored_nonce(persister: &Persister) -> u64 {
    match persister.0.get_local(NONCE_KEY) {
        Ok(Some((_, bytes))) => bytes.try_into().map(u64::from_be_bytes).unwrap_or(0),
        _ => 0,
    }
}

fn stored_policy(persister: &Persister) -> Option<Policy> {
    match persister.0.get_local(POLICY_KEY) {
        Ok(Some((_, bytes))) => control::decode(&bytes).ok(),
        _ => None,
    }
}

/// Commits the open transaction to the local store. The mutations passed
/// are only for the log: the store holds its own commit log.
fn commit_local(persister: &Persister, muts: Mutations) -> Result<(), CoreError> {
    if !muts.is_empty() {
        tracing::debug!(keys = muts.inner().len(), "committing");
    }
    guarded("commit", || {
        persister
            .commit()
            .map_err(|e| CoreError::Store(format!("commit: {e:?}")))
    })
}

fn decode(frame: &Frame) -> Result<Message, CoreError> {
    let msg = msgs::from_vec(frame.message())
        .map_err(|e| CoreError::Undecodable(frame.ty, format!("{e:?}")))?;
    if let Message::Unknown(_) = msg {
        return Err(CoreError::Undecodable(
            frame.ty,
            "unknown message type".into(),
        ));
    }
    Ok(msg)
}

fn message_name(frame: &Frame) -> String {
    msgs::message_name_from_vec(&frame.message())
}

fn encode_reply(seq: u16, reply: Vec<u8>) -> Result<Vec<u8>, CoreError> {
    let frame = Frame::from_message(&reply)?;
    Ok(serial::Response { seq, frame }.encode()?)
}

/// Runs VLS code, turning a panic into an error: VLS asserts on some inputs
/// and storage failures, and a signer must answer, not die.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, CoreError>) -> Result<T, CoreError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic".into());
            tracing::error!(what, reason, "VLS panicked; refused");
            Err(CoreError::Refused {
                name: what.to_string(),
                reason,
            })
        }
    }
}
