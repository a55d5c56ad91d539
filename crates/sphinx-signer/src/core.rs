//! The signing core: VLS behind the serial request/response format, with no
//! network I/O.
//!
//! It is driven by one thread (VLS is synchronous and CPU-bound): the MQTT
//! loop hands it the payloads of `init-3-msg` and `vls`, it answers with the
//! payloads of `init-3-res` and `vls-res`.
//!
//! Why it is shaped like this:
//! - **Transactions are never left open** (the reference's `W3`): every
//!   request runs between `enter` and `commit` of the persister; if the
//!   handler fails or panics, the whole session (node and store) is dropped
//!   and reopened from the durable store, which is the only rollback the VLS
//!   store offers and the one that cannot leave memory ahead of disk.
//! - **A duplicate is answered, not re-signed** (`W5`, `W7`): the last
//!   request and its reply are kept; the same sequence with the same bytes
//!   gets the cached reply, so a broker that resends after a reconnect never
//!   makes the signer sign twice, and never makes it reboot.
//! - **Hostile input is an error, not a panic** (`W9`): the frame is checked
//!   before VLS sees it, `HsmdInit` is validated (network, versions) before
//!   VLS's asserts can fire, and VLS itself runs under `catch_unwind`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sphinx_wire::hsmd::Frame;
use sphinx_wire::serial;
use vls_persist::kvv::cloud::CloudKVVStore;
use vls_persist::kvv::redb::RedbKVVStore;
use vls_persist::kvv::{JsonFormat, KVVPersister};
use vls_protocol_signer::handler::{Handler, HandlerBuilder, InitHandler, RootHandler};
use vls_protocol_signer::lightning_signer::bitcoin::blockdata::constants::genesis_block;
use vls_protocol_signer::lightning_signer::bitcoin::hashes::Hash;
use vls_protocol_signer::lightning_signer::bitcoin::Network;
use vls_protocol_signer::lightning_signer::node::NodeServices;
use vls_protocol_signer::lightning_signer::persist::{Mutations, Persist};
use vls_protocol_signer::lightning_signer::policy::simple_validator::SimpleValidatorFactory;
use vls_protocol_signer::lightning_signer::signer::ClockStartingTimeFactory;
use vls_protocol_signer::lightning_signer::util::clock::StandardClock;
use vls_protocol_signer::vls_protocol::msgs::{self, Message};

/// The hsmd wire version this signer speaks at most.
pub const MAX_PROTOCOL_VERSION: u32 = msgs::DEFAULT_MAX_PROTOCOL_VERSION;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The payload is not a serial request.
    #[error("malformed request: {0}")]
    Malformed(#[from] sphinx_wire::WireError),
    /// The hsmd message does not parse.
    #[error("undecodable hsmd message (type {0}): {1}")]
    Undecodable(u16, String),
    /// A request arrived before `HsmdInit`.
    #[error("not initialised: HsmdInit has not been received")]
    NotInitialised,
    /// `HsmdInit` is not acceptable.
    #[error("HsmdInit refused: {0}")]
    BadInit(String),
    /// The same sequence number came with different bytes.
    #[error("sequence {0} reused for a different request")]
    SequenceReused(u16),
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
}

type Persister = KVVPersister<CloudKVVStore<RedbKVVStore>, JsonFormat>;

/// An open node: its store and, after `HsmdInit`, its root handler.
struct Session {
    persister: Arc<Persister>,
    init: InitHandler,
    root: Option<RootHandler>,
}

/// The signer's state machine.
pub struct Core {
    network: Network,
    seed: [u8; 32],
    store_dir: PathBuf,
    session: Option<Session>,
    /// The accepted `HsmdInit`, replayed when the session is rebuilt.
    init_msg: Option<Vec<u8>>,
    /// The last request (seq and bytes) and the reply sent for it.
    last: Option<(u16, Vec<u8>, Vec<u8>)>,
}

impl Core {
    /// Opens (or creates) the node for `seed` with its store in `store_dir`.
    pub fn open(network: Network, seed: [u8; 32], store_dir: &Path) -> Result<Self, CoreError> {
        let mut core = Core {
            network,
            seed,
            store_dir: store_dir.to_path_buf(),
            session: None,
            init_msg: None,
            last: None,
        };
        core.session = Some(core.open_session()?);
        Ok(core)
    }

    /// The node id (hex), known once the session is open.
    pub fn node_id(&self) -> Option<String> {
        self.session
            .as_ref()
            .map(|s| s.init.node().get_id().to_string())
    }

    fn open_session(&self) -> Result<Session, CoreError> {
        let dir = self.store_dir.clone();
        let network = self.network;
        let seed = self.seed;
        guarded("open the store", move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CoreError::Store(format!("cannot create {}: {e}", dir.display())))?;
            let local = RedbKVVStore::new(&dir);
            let persister = Arc::new(KVVPersister(CloudKVVStore::new(local), JsonFormat));
            let services = NodeServices {
                validator_factory: Arc::new(SimpleValidatorFactory::new()),
                starting_time_factory: ClockStartingTimeFactory::new(),
                persister: persister.clone(),
                clock: Arc::new(StandardClock()),
                trusted_oracle_pubkeys: vec![],
            };
            persister
                .enter()
                .map_err(|e| CoreError::Store(format!("{e:?}")))?;
            let built = HandlerBuilder::new(network, 0, services, seed)
                .max_protocol_version(MAX_PROTOCOL_VERSION)
                .build();
            let muts = persister.prepare();
            let init = match built {
                Ok(init) => init,
                Err(e) => {
                    return Err(CoreError::Store(format!("cannot build the node: {e:?}")));
                }
            };
            commit_local(&persister, muts)?;
            Ok(Session {
                persister,
                init,
                root: None,
            })
        })
    }

    /// Handles `init-3-msg`: a serial-wrapped `HsmdInit`. Each (re)connection
    /// of the signer starts with it, so a signer that stays up across a
    /// reconnect renegotiates from its committed state.
    pub fn init(&mut self, payload: &[u8]) -> Result<Vec<u8>, CoreError> {
        let request = serial::Request::decode(payload)?;
        let message = request.frame.message();
        self.check_init(&request.frame)?;
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
        // A fresh session: a reconnect renegotiates from what is committed.
        self.session = None;
        let mut session = self.open_session()?;
        let msg =
            msgs::from_vec(message).map_err(|e| CoreError::Undecodable(11, format!("{e:?}")))?;
        let init = &mut session.init;
        let handled = guarded("HsmdInit", || {
            init.handle(msg).map_err(|e| CoreError::Refused {
                name: "HsmdInit".into(),
                reason: format!("{e:?}"),
            })
        })?;
        let (true, Some(reply)) = handled else {
            return Err(CoreError::BadInit("negotiation did not complete".into()));
        };
        session.root = Some(session.init.clone().into());
        self.session = Some(session);
        Ok(reply.as_vec())
    }

    /// Handles `vls`: a serial-wrapped hsmd request. Returns the `vls-res`
    /// payload.
    pub fn handle(&mut self, payload: &[u8]) -> Result<Vec<u8>, CoreError> {
        let request = serial::Request::decode(payload)?;
        if let Some((seq, bytes, reply)) = &self.last {
            if *seq == request.seq {
                if bytes.as_slice() == payload {
                    tracing::info!(seq, "duplicate request answered from the cache");
                    return Ok(reply.clone());
                }
                return Err(CoreError::SequenceReused(request.seq));
            }
        }
        let reply = match self.handle_new(&request) {
            Ok(reply) => reply,
            Err(e) => {
                // Whatever the handler did in memory is dropped with it.
                self.rebuild();
                return Err(e);
            }
        };
        let encoded = encode_reply(request.seq, reply)?;
        self.last = Some((request.seq, payload.to_vec(), encoded.clone()));
        Ok(encoded)
    }

    fn handle_new(&mut self, request: &serial::Request) -> Result<Vec<u8>, CoreError> {
        let msg = decode(&request.frame)?;
        let name = message_name(&request.frame);
        let session = self.session.as_mut().ok_or(CoreError::NotInitialised)?;
        let root = session.root.as_ref().ok_or(CoreError::NotInitialised)?;
        if matches!(msg, Message::HsmdInit(_) | Message::HsmdInit2(_)) {
            return Err(CoreError::BadInit("HsmdInit outside init".into()));
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
        let reply = result?;
        commit_local(&persister, muts)?;
        Ok(reply.as_vec())
    }

    /// Drops the session and reopens it from the durable store, replaying
    /// the accepted `HsmdInit`. On failure the core stays uninitialised and
    /// says so on the next request.
    fn rebuild(&mut self) {
        self.session = None;
        let Some(init) = self.init_msg.clone() else {
            return;
        };
        if let Err(e) = self.run_init(init) {
            tracing::error!(error = %e, "cannot reopen the signer after a failed request");
            self.session = None;
        }
    }
}

/// Commits what a request changed to the local store. (Part 2 puts the
/// mutations to LSS first.)
fn commit_local(persister: &Persister, muts: Mutations) -> Result<(), CoreError> {
    if !muts.is_empty() {
        tracing::debug!(keys = muts.inner().len(), "committing");
    }
    persister
        .commit()
        .map_err(|e| CoreError::Store(format!("commit: {e:?}")))
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
            tracing::error!(what, reason, "VLS panicked; the request is refused");
            Err(CoreError::Refused {
                name: what.to_string(),
                reason,
            })
        }
    }
}
