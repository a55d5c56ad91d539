//! The broker's rules, with no I/O: every signer's state, every outstanding
//! request, the LSS dance, deadlines. It takes events with an explicit
//! `now` and returns actions (publish to a signer, call LSS, answer CLN),
//! as quinn-proto does; [`crate::scheduler`] is the thin tokio driver that
//! performs them, and `tests/sim.rs` runs it against the signer core in
//! memory with a virtual clock.
//!
//! The reference takes a ticket and sleeps in 96 ms steps until its turn,
//! matches replies only by signer, retries forever and lets a stuck request
//! stall every CLN subdaemon (`W2`, `W4`, `W5`). Here:
//! - requests wait in a FIFO queue; exactly one is in flight (a signer is
//!   sequential anyway, and its duplicate cache relies on it); each CLN
//!   connection is itself sequential, so its order is kept;
//! - a reply is accepted only from the signer the request was sent to and
//!   only with the request's sequence number; anything else is logged and
//!   dropped (a late reply, or a forgery);
//! - a signer that disconnects keeps its request in flight; when a signer
//!   is ready again the request is resent with the same sequence number,
//!   and the signer answers a duplicate from its cache;
//! - **every state that waits has a deadline, and a deadline that fires
//!   clears its state** (so [`BrokerCore::poll_timeout`] moves forward: the
//!   driver never spins); a request past its deadline or refused by its
//!   signer fails, and its CLN connection is closed, loudly;
//! - one put per set of changes: a duplicate `lss-res` (a resent request
//!   whose changes are being or were stored) is answered from what is known,
//!   never put twice;
//! - `HsmdInit` from CLN is held until a signer has answered it; later
//!   signers get the same init pinned to the negotiated version, and must
//!   have the same node id. A first signer that refuses it fails it, with
//!   both sides named, instead of leaving CLN waiting.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sphinx_wire::hsmd::Frame;
use sphinx_wire::lss::{
    BrokerMutations, Msg, Muts, ProviderPut, ProviderState, Providers, Receipts, Repair, Response,
    Seen,
};
use sphinx_wire::serial;
use sphinx_wire::topics::Suffix;
use vls_protocol::msgs::{self, Message, SerBolt};

use crate::link::LinkEvent;
use crate::lss::{Account, RelayError, RepairJob};

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No reply in time.
    #[error("no reply from a signer within {0:?}")]
    Deadline(Duration),
    /// The signer reported an error.
    #[error("signer {cid} refused the request: {message}")]
    Signer {
        /// The signer.
        cid: String,
        /// Its error text.
        message: String,
    },
    /// The request itself is unacceptable.
    #[error("{0}")]
    Invalid(String),
    /// The signer's changes could not be stored in LSS in time.
    #[error("storing the signer's changes in LSS failed: {0}")]
    Lss(String),
    /// The broker is stopping.
    #[error("the broker is stopping")]
    Stopped,
}

/// Who asked: the driver's handle for a pending answer.
pub type RequestId = u64;
/// One LSS call the core asked for.
pub type OpId = u64;

/// What happens to the core.
#[derive(Debug)]
pub enum Input {
    /// CLN's `HsmdInit` (type and body).
    Init {
        /// Where the answer goes.
        id: RequestId,
        /// The message.
        message: Vec<u8>,
    },
    /// A CLN request for client (`peer_id`, `dbid`).
    Request {
        /// Where the answer goes.
        id: RequestId,
        /// The client's peer.
        peer_id: [u8; 33],
        /// The client's channel (0: the node).
        dbid: u64,
        /// Type and body.
        message: Vec<u8>,
    },
    /// A signed control message for signer `cid`.
    Control {
        /// Where the answer goes.
        id: RequestId,
        /// The signer.
        cid: String,
        /// The envelope.
        message: Vec<u8>,
    },
    /// Something on the MQTT side.
    Link(LinkEvent),
    /// An LSS call finished.
    Lss {
        /// Which.
        op: OpId,
        /// Its outcome.
        result: LssResult,
    },
}

/// An LSS call for the driver to make (with retries until `deadline`).
/// Lists are per provider, in the configured order (one with one provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LssCall {
    /// Every provider's key (Info).
    ServerKey,
    /// Everything the signer stores, MAC'd over `nonce`.
    GetAll {
        /// The signer's account at each provider.
        accounts: Vec<Account>,
        /// The signer's nonce.
        nonce: [u8; 32],
        /// With several providers: the signer's last checkpoint of each, so
        /// each read comes with a signed checkpoint (`None`: no checkpoints).
        seen: Option<Vec<Option<Seen>>>,
    },
    /// Store `muts` with the signer's MACs.
    Put {
        /// The signer's account at each provider.
        accounts: Vec<Account>,
        /// The changes.
        muts: Muts,
        /// The signer's MAC (and last checkpoint) for each provider.
        puts: Vec<ProviderPut>,
        /// Ask for signed checkpoints (several providers).
        verify: bool,
        /// Providers to bring up to date first.
        repairs: Vec<RepairJob>,
    },
}

/// What an LSS call gave.
#[derive(Debug)]
pub enum LssResult {
    /// For [`LssCall::ServerKey`]: each key, and whether that server offers
    /// framed MACs.
    ServerKey(Result<Vec<([u8; 33], bool)>, RelayError>),
    /// For [`LssCall::GetAll`]: the answers of at least the read quorum.
    State(Result<Vec<ProviderState>, RelayError>),
    /// For [`LssCall::Put`]: the receipts of at least the write quorum.
    Stored(Result<Receipts, RelayError>),
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Publish `payload` on `{cid}/{suffix}`.
    Publish {
        /// The signer.
        cid: String,
        /// The topic.
        suffix: Suffix,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// Call LSS, and hand the result back as [`Input::Lss`] with `op`.
    Lss {
        /// Its id.
        op: OpId,
        /// The call.
        call: LssCall,
        /// Retry until then.
        deadline: Instant,
    },
    /// Answer request `id`.
    Reply {
        /// Whose.
        id: RequestId,
        /// Reply (type and body) or why not.
        result: Result<Vec<u8>, RequestError>,
    },
    /// A signer reported an error (for the control API's stream).
    SignerError(SignerError),
}

/// A signer as the control API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignerInfo {
    /// Its id.
    pub cid: String,
    /// `lss-credentials`, `lss-state`, `lss-storing`, `waiting-for-hsmd-init`,
    /// `initialising` or `ready`.
    pub state: &'static str,
    /// Whether requests go to it now.
    pub current: bool,
}

/// An error a signer reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignerError {
    /// The signer.
    pub cid: String,
    /// Its text.
    pub message: String,
}

enum SignerState {
    /// LSS step 1: fetching the server key, then waiting for credentials.
    LssCredentials { deadline: Instant },
    /// LSS step 2: reading the signer's state, then waiting for its changes.
    LssState { deadline: Instant },
    /// LSS step 2: storing the changes the signer made while restoring.
    LssStoring { deadline: Instant },
    /// Said hello (and synced with LSS); waiting for CLN's HsmdInit.
    Waiting,
    /// HsmdInit sent; waiting for the reply until the deadline.
    Initialising { deadline: Instant },
    /// Serving; `order` says which hello is newest.
    Ready { order: u64 },
}

impl SignerState {
    fn deadline(&self) -> Option<Instant> {
        match self {
            SignerState::LssCredentials { deadline }
            | SignerState::LssState { deadline }
            | SignerState::LssStoring { deadline }
            | SignerState::Initialising { deadline } => Some(*deadline),
            SignerState::Waiting | SignerState::Ready { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SignerState::LssCredentials { .. } => "lss-credentials",
            SignerState::LssState { .. } => "lss-state",
            SignerState::LssStoring { .. } => "lss-storing",
            SignerState::Waiting => "waiting-for-hsmd-init",
            SignerState::Initialising { .. } => "initialising",
            SignerState::Ready { .. } => "ready",
        }
    }
}

struct Negotiated {
    node_id: [u8; 33],
    /// The init later signers get: CLN's, pinned to the negotiated version.
    init: Vec<u8>,
}

struct Pending {
    id: RequestId,
    peer_id: [u8; 33],
    dbid: u64,
    message: Vec<u8>,
    deadline: Instant,
}

/// Where a request's or control message's changes are on their way to LSS.
#[derive(Default)]
enum Storing {
    /// No changes reported (yet).
    #[default]
    Idle,
    /// A put of exactly these `lss-res` bytes is under way.
    Putting(Vec<u8>),
    /// These `lss-res` bytes were stored; the `lss-msg` that says so.
    Stored(Vec<u8>, Vec<u8>),
}

struct InFlight {
    id: RequestId,
    seq: u16,
    payload: Vec<u8>,
    sent_to: Option<String>,
    deadline: Instant,
    storing: Storing,
}

/// A control message awaiting its response.
struct ControlWait {
    id: RequestId,
    deadline: Instant,
    storing: Storing,
}

/// What an LSS call was for.
enum Purpose {
    ServerKey {
        cid: String,
    },
    State {
        cid: String,
    },
    InitStored {
        cid: String,
    },
    RequestStored {
        cid: String,
        seq: u16,
    },
    ControlStored {
        cid: String,
    },
    /// Repairs of providers that are behind, with nothing else to store.
    Repaired {
        cid: String,
    },
}

/// How long CLN waits for its first signer before the wait is logged, and
/// then how often.
const INIT_LOG_FIRST: Duration = Duration::from_secs(10);
const INIT_LOG_EVERY: Duration = Duration::from_secs(30);

/// The broker's state machine.
pub struct BrokerCore {
    timeout: Duration,
    lss: bool,
    /// The broker's own MQTT packet limit.
    max_packet: usize,
    /// Each signer's, from its `hello`.
    limits: HashMap<String, usize>,
    /// Each signer's account at every provider.
    accounts: HashMap<String, Vec<Account>>,
    /// With several providers (`quorum-v1`): the write quorum.
    quorum: Option<u64>,
    /// With several providers: the states sent to each signer at init
    /// step 2, from which its repairs are computed.
    states: HashMap<String, Vec<ProviderState>>,
    signers: HashMap<String, SignerState>,
    controls: HashMap<String, ControlWait>,
    cln_init: Option<Vec<u8>>,
    negotiated: Option<Negotiated>,
    init_waiter: Option<RequestId>,
    init_log_at: Option<Instant>,
    queue: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    next_seq: u16,
    hellos: u64,
    ops: HashMap<OpId, Purpose>,
    next_op: OpId,
    actions: VecDeque<Action>,
    /// Whether the LSS server offers framed MACs (from its Info).
    server_framed: bool,
    /// The last changes stored for each signer, so a late copy of them (MQTT
    /// redelivery after their request was answered) is not taken for the
    /// next request's and put again.
    last_stored: HashMap<String, Vec<u8>>,
}

impl BrokerCore {
    /// A core whose requests have `timeout` from arrival to reply; with
    /// `lss`, every signer runs the LSS dance and every change it reports is
    /// stored before its reply is released. Nothing larger than `max_packet`
    /// (or a signer's own limit) is sent to a signer.
    pub fn new(timeout: Duration, lss: bool, max_packet: usize) -> BrokerCore {
        BrokerCore {
            timeout,
            lss,
            max_packet,
            limits: HashMap::new(),
            accounts: HashMap::new(),
            quorum: None,
            states: HashMap::new(),
            signers: HashMap::new(),
            controls: HashMap::new(),
            cln_init: None,
            negotiated: None,
            init_waiter: None,
            init_log_at: None,
            queue: VecDeque::new(),
            in_flight: None,
            next_seq: 1,
            hellos: 0,
            ops: HashMap::new(),
            next_op: 1,
            actions: VecDeque::new(),
            server_framed: false,
            last_stored: HashMap::new(),
        }
    }

    /// Relay to several LSS providers, `write_quorum` of which must store
    /// each put (`quorum-v1`: the signer verifies every provider's signed
    /// checkpoints and receipts itself).
    pub fn with_quorum(mut self, write_quorum: u64) -> BrokerCore {
        self.quorum = Some(write_quorum);
        self
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`BrokerCore::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let signer = self.signers.values().filter_map(SignerState::deadline);
        self.in_flight
            .iter()
            .map(|f| f.deadline)
            .chain(self.queue.iter().map(|p| p.deadline))
            .chain(self.controls.values().map(|c| c.deadline))
            .chain(signer)
            .chain(self.init_waiter.and(self.init_log_at))
            .min()
    }

    /// The signers and their state.
    pub fn signers(&self) -> Vec<SignerInfo> {
        let current = self.current();
        let mut list: Vec<SignerInfo> = self
            .signers
            .iter()
            .map(|(cid, state)| SignerInfo {
                cid: cid.clone(),
                state: state.name(),
                current: current.as_deref() == Some(cid),
            })
            .collect();
        list.sort_by(|a, b| a.cid.cmp(&b.cid));
        list
    }

    /// Fails everything outstanding (the broker is stopping).
    pub fn stop(&mut self) {
        if let Some(f) = self.in_flight.take() {
            self.reply(f.id, Err(RequestError::Stopped));
        }
        for p in std::mem::take(&mut self.queue) {
            self.reply(p.id, Err(RequestError::Stopped));
        }
        for (_, c) in std::mem::take(&mut self.controls) {
            self.reply(c.id, Err(RequestError::Stopped));
        }
        if let Some(id) = self.init_waiter.take() {
            self.reply(id, Err(RequestError::Stopped));
        }
    }

    /// Takes one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Init { id, message } => self.cln_init(now, id, message),
            Input::Request {
                id,
                peer_id,
                dbid,
                message,
            } => self.queue.push_back(Pending {
                id,
                peer_id,
                dbid,
                message,
                deadline: now + self.timeout,
            }),
            Input::Control { id, cid, message } => self.control(now, id, cid, message),
            Input::Link(event) => self.event(now, event),
            Input::Lss { op, result } => self.lss_done(now, op, result),
        }
        self.pump();
    }

    /// Everything whose deadline is at or before `now` fails or is dropped;
    /// each clears its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<String> = self
            .controls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in late {
            if let Some(wait) = self.controls.remove(&cid) {
                self.reply(wait.id, Err(RequestError::Deadline(self.timeout)));
            }
        }
        if self.in_flight.as_ref().is_some_and(|f| f.deadline <= now) {
            if let Some(f) = self.in_flight.take() {
                tracing::error!(seq = f.seq, signer = ?f.sent_to, "request timed out");
                self.reply(f.id, Err(RequestError::Deadline(self.timeout)));
            }
        }
        while self.queue.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.queue.pop_front() {
                self.reply(p.id, Err(RequestError::Deadline(self.timeout)));
            }
        }
        let late: Vec<(String, &'static str)> = self
            .signers
            .iter()
            .filter(|(_, s)| s.deadline().is_some_and(|d| d <= now))
            .map(|(cid, s)| (cid.clone(), s.name()))
            .collect();
        for (cid, step) in late {
            self.reject(&cid, format!("stuck in {step} past its deadline"));
        }
        if self.init_waiter.is_some() && self.init_log_at.is_some_and(|at| at <= now) {
            tracing::warn!("CLN is waiting for HsmdInit: no signer has connected and answered yet");
            self.init_log_at = Some(now + INIT_LOG_EVERY);
        }
        self.pump();
    }

    fn reply(&mut self, id: RequestId, result: Result<Vec<u8>, RequestError>) {
        self.actions.push_back(Action::Reply { id, result });
    }

    /// Publishes, unless the packet would exceed what the signer or the
    /// broker takes: then `Err` with the sizes, and nothing is sent (a
    /// packet over the limit would only cut the signer's connection).
    fn publish(&mut self, cid: &str, suffix: Suffix, payload: Vec<u8>) -> Result<(), String> {
        let limit = self
            .limits
            .get(cid)
            .copied()
            .unwrap_or(sphinx_wire::login::DEFAULT_MAX_PACKET)
            .min(self.max_packet);
        // Fixed header, topic and packet id of an MQTT PUBLISH.
        let packet = payload.len() + 5 + 2 + cid.len() + 1 + suffix.as_str().len() + 2;
        if packet > limit {
            return Err(format!(
                "a {} message of {} bytes exceeds the MQTT packet limit of {limit} bytes \
                 (the smaller of the broker's mqtt_max_packet_mib and the signer's \
                 --mqtt-max-packet-mib): raise both",
                suffix.as_str(),
                payload.len()
            ));
        }
        self.actions.push_back(Action::Publish {
            cid: cid.to_string(),
            suffix,
            payload,
        });
        Ok(())
    }

    /// Publishes a small message (acknowledgements, framed requests of at
    /// most 128 KiB): over any sane limit it is logged and dropped.
    fn send(&mut self, cid: &str, suffix: Suffix, payload: Vec<u8>) {
        if let Err(e) = self.publish(cid, suffix, payload) {
            tracing::error!(%cid, error = %e, "not sent");
        }
    }

    fn call(&mut self, purpose: Purpose, call: LssCall, deadline: Instant) {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(op, purpose);
        self.actions.push_back(Action::Lss { op, call, deadline });
    }

    fn cln_init(&mut self, now: Instant, id: RequestId, message: Vec<u8>) {
        if self.cln_init.is_some() {
            self.reply(id, Err(RequestError::Invalid("a second HsmdInit".into())));
            return;
        }
        self.cln_init = Some(message);
        self.init_waiter = Some(id);
        self.init_log_at = Some(now + INIT_LOG_FIRST);
        let waiting: Vec<String> = self
            .signers
            .iter()
            .filter(|(_, s)| matches!(s, SignerState::Waiting))
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in waiting {
            self.send_init(now, &cid);
        }
    }

    fn control(&mut self, now: Instant, id: RequestId, cid: String, message: Vec<u8>) {
        if !matches!(self.signers.get(&cid), Some(SignerState::Ready { .. })) {
            let why = format!("signer {cid} is not connected and ready");
            self.reply(id, Err(RequestError::Invalid(why)));
            return;
        }
        if self.controls.contains_key(&cid) {
            let why = format!("a control message to {cid} is already pending");
            self.reply(id, Err(RequestError::Invalid(why)));
            return;
        }
        if let Err(e) = self.publish(&cid, Suffix::Control, message) {
            self.reply(id, Err(RequestError::Invalid(e)));
            return;
        }
        self.controls.insert(
            cid.clone(),
            ControlWait {
                id,
                deadline: now + self.timeout,
                storing: Storing::Idle,
            },
        );
    }

    fn send_init(&mut self, now: Instant, cid: &str) {
        let init = match (&self.negotiated, &self.cln_init) {
            (Some(n), _) => n.init.clone(),
            (None, Some(init)) => init.clone(),
            (None, None) => {
                self.signers.insert(cid.to_string(), SignerState::Waiting);
                return;
            }
        };
        let payload = Frame::from_message(&init).and_then(|frame| {
            serial::Request {
                seq: 0,
                peer_id: [0; 33],
                dbid: 0,
                frame,
            }
            .encode()
        });
        match payload {
            Ok(payload) => {
                self.signers.insert(
                    cid.to_string(),
                    SignerState::Initialising {
                        deadline: now + self.timeout,
                    },
                );
                self.send(cid, Suffix::Init3Msg, payload);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot frame HsmdInit");
                self.signers.remove(cid);
            }
        }
    }

    fn event(&mut self, now: Instant, event: LinkEvent) {
        match event {
            LinkEvent::Hello { cid, max_packet } => {
                tracing::info!(%cid, max_packet, "signer said hello");
                self.limits.insert(cid.clone(), max_packet);
                self.unsend(&cid);
                if self.lss {
                    // LSS step 1: the server key, for the signer to derive
                    // its credentials.
                    let deadline = now + self.timeout;
                    self.signers
                        .insert(cid.clone(), SignerState::LssCredentials { deadline });
                    self.call(Purpose::ServerKey { cid }, LssCall::ServerKey, deadline);
                } else {
                    self.send_init(now, &cid);
                }
            }
            LinkEvent::Gone { cid } => {
                self.accounts.remove(&cid);
                self.states.remove(&cid);
                self.limits.remove(&cid);
                self.last_stored.remove(&cid);
                if self.signers.remove(&cid).is_some() {
                    tracing::warn!(%cid, "signer disconnected");
                }
                self.unsend(&cid);
            }
            LinkEvent::Message {
                cid,
                suffix,
                payload,
            } => match suffix {
                Suffix::Init3Res => self.init_reply(&cid, &payload),
                Suffix::Init1Res => self.credentials(now, &cid, &payload),
                Suffix::Init2Res => self.restored(now, &cid, &payload),
                Suffix::LssRes => self.changes(&cid, &payload),
                Suffix::ControlRes => match self.controls.remove(&cid) {
                    Some(wait) => self.reply(wait.id, Ok(payload.to_vec())),
                    None => tracing::warn!(%cid, "control response nobody waits for ignored"),
                },
                Suffix::LssConflictRes => {
                    tracing::info!(%cid, "signer dropped its conflicting changes")
                }
                Suffix::VlsRes => self.vls_reply(&cid, &payload),
                Suffix::Error => self.signer_error(&cid, &payload),
                other => tracing::debug!(%cid, suffix = other.as_str(), "message not handled here"),
            },
        }
    }

    /// The in-flight request is no longer with `cid` (it left or restarted
    /// its session); it is resent once a signer is ready. What it stored in
    /// LSS stays known only to LSS: the signer recognises it at its resync.
    fn unsend(&mut self, cid: &str) {
        if let Some(f) = &mut self.in_flight {
            if f.sent_to.as_deref() == Some(cid) {
                f.sent_to = None;
                f.storing = Storing::Idle;
            }
        }
        if let Some(wait) = self.controls.remove(cid) {
            self.reply(
                wait.id,
                Err(RequestError::Invalid(format!(
                    "signer {cid} restarted its session before answering"
                ))),
            );
        }
    }

    fn signer_error(&mut self, cid: &str, payload: &[u8]) {
        let text = error_text(payload);
        tracing::error!(%cid, error = %text, "signer reported an error");
        self.actions.push_back(Action::SignerError(SignerError {
            cid: cid.to_string(),
            message: text.clone(),
        }));
        if let Some(wait) = self.controls.remove(cid) {
            let error = RequestError::Signer {
                cid: cid.to_string(),
                message: text.clone(),
            };
            self.reply(wait.id, Err(error));
        }
        if matches!(
            self.signers.get(cid),
            Some(SignerState::Initialising { .. })
        ) {
            self.signers.remove(cid);
            self.init_refused(cid, &text);
        }
        if self.in_flight.as_ref().and_then(|f| f.sent_to.as_deref()) == Some(cid) {
            if let Some(f) = self.in_flight.take() {
                let error = RequestError::Signer {
                    cid: cid.to_string(),
                    message: text,
                };
                self.reply(f.id, Err(error));
            }
        }
    }

    /// A signer refused CLN's first `HsmdInit`. If no other signer can still
    /// answer it, CLN's wait ends with an error naming both sides.
    fn init_refused(&mut self, cid: &str, text: &str) {
        if self.negotiated.is_some() || self.init_waiter.is_none() {
            return;
        }
        let others = self
            .signers
            .values()
            .any(|s| !matches!(s, SignerState::Waiting));
        if others {
            return;
        }
        let node = self
            .cln_init
            .as_deref()
            .map(describe_init)
            .unwrap_or_default();
        if let Some(id) = self.init_waiter.take() {
            let message = format!(
                "signer {cid} cannot serve this node: lightningd's HsmdInit ({node}) was refused: {text}"
            );
            self.reply(
                id,
                Err(RequestError::Signer {
                    cid: cid.to_string(),
                    message,
                }),
            );
        }
    }

    fn lss_done(&mut self, now: Instant, op: OpId, result: LssResult) {
        let Some(purpose) = self.ops.remove(&op) else {
            tracing::warn!(op, "result of an unknown LSS call ignored");
            return;
        };
        match (purpose, result) {
            (Purpose::ServerKey { cid }, LssResult::ServerKey(result)) => {
                if !matches!(
                    self.signers.get(&cid),
                    Some(SignerState::LssCredentials { .. })
                ) {
                    return;
                }
                match (result, self.quorum) {
                    (Ok(keys), None) if keys.len() == 1 => {
                        let (server_pubkey, framed) = keys[0];
                        self.server_framed = framed;
                        self.send(&cid, Suffix::Init1Msg, Msg::Init { server_pubkey }.encode())
                    }
                    (Ok(keys), Some(write_quorum)) => {
                        self.server_framed = keys.iter().all(|(_, framed)| *framed);
                        let msg = Msg::Providers(Providers {
                            server_pubkeys: keys.iter().map(|(key, _)| *key).collect(),
                            write_quorum,
                        });
                        self.send(&cid, Suffix::Init1Msg, msg.encode())
                    }
                    (Ok(keys), None) => self.reject(
                        &cid,
                        format!("{} LSS providers without a write quorum", keys.len()),
                    ),
                    (Err(e), _) => self.reject(&cid, format!("LSS server key: {e}")),
                }
            }
            (Purpose::State { cid }, LssResult::State(result)) => {
                if !matches!(self.signers.get(&cid), Some(SignerState::LssState { .. })) {
                    return;
                }
                match result {
                    Ok(mut states) => {
                        let msg = match self.quorum {
                            Some(_) => {
                                self.states.insert(cid.clone(), states.clone());
                                Msg::States(states)
                            }
                            None => {
                                let state = states.pop().unwrap_or(ProviderState {
                                    provider: 0,
                                    server_hmac: [0; 32],
                                    muts: Vec::new(),
                                    checkpoint: Vec::new(),
                                    bundle: Vec::new(),
                                });
                                Msg::Created(BrokerMutations {
                                    server_hmac: Some(state.server_hmac),
                                    muts: state.muts,
                                })
                            }
                        };
                        if let Err(e) = self.publish(&cid, Suffix::Init2Msg, msg.encode()) {
                            let why = format!("its LSS state cannot be sent: {e}");
                            self.actions.push_back(Action::SignerError(SignerError {
                                cid: cid.clone(),
                                message: why.clone(),
                            }));
                            self.reject(&cid, why);
                        }
                    }
                    Err(e) => self.reject(&cid, format!("reading the signer's LSS state: {e}")),
                }
            }
            (Purpose::InitStored { cid }, LssResult::Stored(result)) => {
                if !matches!(self.signers.get(&cid), Some(SignerState::LssStoring { .. })) {
                    return;
                }
                match result {
                    Ok(receipts) => {
                        let ack = self.ack(receipts);
                        self.send(&cid, Suffix::LssMsg, ack);
                        self.send_init(now, &cid);
                    }
                    Err(RelayError::Conflict(n)) => {
                        tracing::error!(%cid, keys = n, "LSS conflict on the signer's init changes: another signer wrote; it resyncs");
                        self.signers.remove(&cid);
                        self.send(&cid, Suffix::LssConflict, Msg::PutConflict.encode());
                    }
                    Err(e) => self.reject(&cid, format!("storing the signer's init changes: {e}")),
                }
            }
            (Purpose::ControlStored { cid }, LssResult::Stored(result)) => {
                let Some(wait) = self.controls.get_mut(&cid) else {
                    return;
                };
                let Storing::Putting(bytes) = std::mem::take(&mut wait.storing) else {
                    return;
                };
                match result {
                    Ok(receipts) => {
                        let ack = ack_of(self.quorum, receipts);
                        wait.storing = Storing::Stored(bytes.clone(), ack.clone());
                        self.last_stored.insert(cid.clone(), bytes);
                        self.send(&cid, Suffix::LssMsg, ack);
                    }
                    Err(RelayError::Conflict(n)) => {
                        tracing::error!(%cid, keys = n, "LSS conflict on a control change: another signer wrote; it resyncs");
                        self.send(&cid, Suffix::LssConflict, Msg::PutConflict.encode());
                        if let Some(wait) = self.controls.remove(&cid) {
                            let why = format!("conflict on {n} key(s); retry");
                            self.reply(wait.id, Err(RequestError::Lss(why)));
                        }
                    }
                    Err(e) => {
                        if let Some(wait) = self.controls.remove(&cid) {
                            self.reply(wait.id, Err(RequestError::Lss(e.to_string())));
                        }
                    }
                }
            }
            (Purpose::RequestStored { cid, seq }, LssResult::Stored(result)) => {
                let Some(f) = self
                    .in_flight
                    .as_mut()
                    .filter(|f| f.sent_to.as_deref() == Some(&cid) && f.seq == seq)
                else {
                    tracing::info!(%cid, seq, "LSS result for a request no longer in flight; the signer resyncs from LSS");
                    return;
                };
                let Storing::Putting(bytes) = std::mem::take(&mut f.storing) else {
                    return;
                };
                match result {
                    Ok(receipts) => {
                        let ack = ack_of(self.quorum, receipts);
                        f.storing = Storing::Stored(bytes.clone(), ack.clone());
                        self.last_stored.insert(cid.clone(), bytes);
                        self.send(&cid, Suffix::LssMsg, ack);
                    }
                    Err(RelayError::Conflict(n)) => {
                        // Another signer wrote, or our own earlier attempt
                        // landed and its answer was lost: the signer resyncs
                        // and tells which (its changes are in LSS or not);
                        // the request is then resent.
                        tracing::error!(%cid, seq, keys = n, "LSS conflict: this signer resyncs and the request is resent");
                        self.send(&cid, Suffix::LssConflict, Msg::PutConflict.encode());
                    }
                    Err(e) => {
                        if let Some(f) = self.in_flight.take() {
                            self.reply(f.id, Err(RequestError::Lss(e.to_string())));
                        }
                    }
                }
            }
            (Purpose::Repaired { cid }, LssResult::Stored(result)) => {
                if let Err(e) = result {
                    tracing::warn!(%cid, error = %e, "repairing LSS providers failed");
                }
            }
            (_, result) => tracing::error!(op, ?result, "LSS result of the wrong kind ignored"),
        }
    }

    /// LSS step 1 answered: the signer's credentials and nonce.
    fn credentials(&mut self, now: Instant, cid: &str, payload: &[u8]) {
        if !matches!(
            self.signers.get(cid),
            Some(SignerState::LssCredentials { .. })
        ) {
            tracing::warn!(%cid, "unexpected init-1 reply ignored");
            return;
        }
        let (accounts, nonce, seen) = match (Response::decode(payload), self.quorum) {
            (Ok(Response::Init(init)), None) => {
                if init.framed_mac && !self.server_framed {
                    let why = "it requires framed LSS MACs and the LSS server does not offer them \
                               (framed-mac-v1): use Lightkeeper's lssd, or start the signer with \
                               --allow-unframed-lss-macs to accept the weaker MACs"
                        .to_string();
                    self.actions.push_back(Action::SignerError(SignerError {
                        cid: cid.to_string(),
                        message: why.clone(),
                    }));
                    return self.reject(cid, why);
                }
                let account = Account {
                    client_id: init.client_id,
                    token: init.auth_token,
                    framed: init.framed_mac,
                };
                (vec![account], init.nonce, None)
            }
            (Ok(Response::Accounts(q)), Some(_)) => {
                if !self.server_framed {
                    return self.reject(
                        cid,
                        "an LSS provider does not offer framed MACs (framed-mac-v1), which \
                         several providers require"
                            .into(),
                    );
                }
                let accounts = q
                    .accounts
                    .iter()
                    .map(|a| Account {
                        client_id: q.client_id,
                        token: a.auth_token,
                        framed: true,
                    })
                    .collect();
                let seen = q.accounts.iter().map(|a| a.seen).collect();
                (accounts, Some(q.nonce), Some(seen))
            }
            (Ok(_), None) => return self.reject(cid, "init-1 reply is not Init".into()),
            (Ok(_), Some(_)) => {
                return self.reject(
                    cid,
                    "init-1 reply is not Accounts: the signer does not support several LSS \
                     providers (quorum-v1)"
                        .into(),
                )
            }
            (Err(e), _) => return self.reject(cid, format!("malformed init-1 reply: {e}")),
        };
        self.accounts.insert(cid.to_string(), accounts.clone());
        let deadline = now + self.timeout;
        self.signers
            .insert(cid.to_string(), SignerState::LssState { deadline });
        let purpose = Purpose::State {
            cid: cid.to_string(),
        };
        match nonce {
            Some(nonce) => self.call(
                purpose,
                LssCall::GetAll {
                    accounts,
                    nonce,
                    seen,
                },
                deadline,
            ),
            // A signer that sends no nonce asks for no state; ours always does.
            None => {
                let op = self.next_op;
                self.next_op += 1;
                self.ops.insert(op, purpose);
                self.lss_done(now, op, LssResult::State(Ok(Vec::new())));
            }
        }
    }

    /// LSS step 2 answered: what the signer changed while restoring.
    fn restored(&mut self, now: Instant, cid: &str, payload: &[u8]) {
        if !matches!(self.signers.get(cid), Some(SignerState::LssState { .. })) {
            tracing::warn!(%cid, "unexpected init-2 reply ignored");
            return;
        }
        let (muts, puts, repairs) = match self.changes_of(payload) {
            Ok(changes) => changes,
            Err(why) => return self.reject(cid, format!("init-2 reply: {why}")),
        };
        let states = self.states.remove(cid).unwrap_or_default();
        let repairs = repair_jobs(cid, &states, repairs);
        let Some(accounts) = self.accounts.get(cid).cloned() else {
            return self.reject(cid, "no LSS account".into());
        };
        if muts.is_empty() {
            if !repairs.is_empty() {
                let call = LssCall::Put {
                    accounts,
                    muts,
                    puts,
                    verify: true,
                    repairs,
                };
                let purpose = Purpose::Repaired {
                    cid: cid.to_string(),
                };
                self.call(purpose, call, now + self.timeout);
            }
            return self.send_init(now, cid);
        }
        let deadline = now + self.timeout;
        self.signers
            .insert(cid.to_string(), SignerState::LssStoring { deadline });
        let call = LssCall::Put {
            accounts,
            muts,
            puts,
            verify: self.quorum.is_some(),
            repairs,
        };
        let purpose = Purpose::InitStored {
            cid: cid.to_string(),
        };
        self.call(purpose, call, deadline);
    }

    /// A request's or control message's changes, to store before its reply
    /// is released. Each distinct `lss-res` is put once: a duplicate while
    /// its put runs is dropped, one after it is answered with the MAC the
    /// server already gave.
    fn changes(&mut self, cid: &str, payload: &[u8]) {
        let Some((storing, deadline, purpose)) = self.storing(cid) else {
            tracing::warn!(%cid, "changes for no request in flight ignored");
            return;
        };
        match storing {
            Storing::Putting(bytes) if bytes.as_slice() == payload => {
                tracing::info!(%cid, "duplicate changes while they are being stored; ignored");
                return;
            }
            Storing::Stored(bytes, ack) if bytes.as_slice() == payload => {
                tracing::info!(%cid, "duplicate changes already stored; acknowledged again");
                let ack = ack.clone();
                self.send(cid, Suffix::LssMsg, ack);
                return;
            }
            _ => {}
        }
        if self
            .last_stored
            .get(cid)
            .is_some_and(|b| b.as_slice() == payload)
        {
            tracing::info!(%cid, "a late copy of changes stored for an earlier request; ignored");
            return;
        }
        let (muts, puts, repairs) = match self.changes_of(payload) {
            Ok(changes) => changes,
            Err(why) => {
                tracing::warn!(%cid, %why, "malformed lss-res ignored");
                return;
            }
        };
        if !repairs.is_empty() {
            tracing::warn!(%cid, "repairs outside init step 2 ignored");
        }
        let Some(accounts) = self.accounts.get(cid).cloned() else {
            tracing::error!(%cid, "changes from a signer without an LSS account (broker runs --no-lss) ignored");
            return;
        };
        if let Some((storing, _, _)) = self.storing(cid) {
            *storing = Storing::Putting(payload.to_vec());
        }
        let call = LssCall::Put {
            accounts,
            muts,
            puts,
            verify: self.quorum.is_some(),
            repairs: Vec::new(),
        };
        self.call(purpose, call, deadline);
    }

    /// A signer's changes (`init-2-res` or `lss-res`) and its MAC for each
    /// provider, in the form this broker's mode expects.
    fn changes_of(&self, payload: &[u8]) -> Result<(Muts, Vec<ProviderPut>, Vec<Repair>), String> {
        match (Response::decode(payload), self.quorum) {
            (Ok(Response::Created(c) | Response::VlsMuts(c)), None) => Ok((
                c.muts,
                vec![ProviderPut {
                    client_hmac: c.client_hmac,
                    seen: None,
                }],
                Vec::new(),
            )),
            (Ok(Response::QuorumMuts(q)), Some(_)) => Ok((q.muts, q.puts, q.repairs)),
            (Ok(_), _) => Err("not the changes this broker's mode expects".into()),
            (Err(e), _) => Err(e.to_string()),
        }
    }

    fn ack(&self, receipts: Receipts) -> Vec<u8> {
        ack_of(self.quorum, receipts)
    }

    /// Where changes from `cid` belong: the request in flight to it, else
    /// its pending control message.
    fn storing(&mut self, cid: &str) -> Option<(&mut Storing, Instant, Purpose)> {
        let owner = cid.to_string();
        if let Some(f) = self
            .in_flight
            .as_mut()
            .filter(|f| f.sent_to.as_deref() == Some(cid))
        {
            let purpose = Purpose::RequestStored {
                cid: owner,
                seq: f.seq,
            };
            return Some((&mut f.storing, f.deadline, purpose));
        }
        self.controls.get_mut(cid).map(|wait| {
            (
                &mut wait.storing,
                wait.deadline,
                Purpose::ControlStored { cid: owner },
            )
        })
    }

    fn init_reply(&mut self, cid: &str, payload: &[u8]) {
        if !matches!(
            self.signers.get(cid),
            Some(SignerState::Initialising { .. })
        ) {
            tracing::warn!(%cid, "unexpected init reply ignored");
            return;
        }
        let parsed = serial::Response::decode(payload)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                msgs::from_vec(r.frame.message())
                    .map(|m| (r.frame.message(), m))
                    .map_err(|e| format!("{e:?}"))
            });
        let (reply, version, node_id) = match parsed {
            Ok((bytes, Message::HsmdInitReplyV4(r))) => (bytes, r.hsm_version, r.node_id.0),
            Ok((_, other)) => {
                let why = format!("init reply is not HsmdInitReplyV4: {other:?}");
                return self.reject(cid, why);
            }
            Err(e) => return self.reject(cid, format!("malformed init reply: {e}")),
        };
        match &self.negotiated {
            Some(n) if n.node_id != node_id => {
                let why = format!(
                    "node id {} differs from the node's {}",
                    hex::encode(node_id),
                    hex::encode(n.node_id)
                );
                return self.reject(cid, why);
            }
            Some(_) => {}
            None => {
                let Some(cln_init) = &self.cln_init else {
                    return self.reject(cid, "no HsmdInit was sent".into());
                };
                let init = match msgs::from_vec(cln_init.clone()) {
                    Ok(Message::HsmdInit(mut init)) => {
                        init.hsm_wire_min_version = version;
                        init.hsm_wire_max_version = version;
                        init.as_vec()
                    }
                    _ => cln_init.clone(),
                };
                tracing::info!(%cid, version, node_id = %hex::encode(node_id), "hsmd protocol negotiated");
                self.negotiated = Some(Negotiated { node_id, init });
                self.init_log_at = None;
                if let Some(id) = self.init_waiter.take() {
                    self.reply(id, Ok(reply));
                }
            }
        }
        self.hellos += 1;
        self.signers
            .insert(cid.to_string(), SignerState::Ready { order: self.hellos });
        tracing::info!(%cid, "signer ready");
    }

    fn reject(&mut self, cid: &str, why: String) {
        tracing::error!(%cid, %why, "signer not admitted");
        let was_initialising = matches!(
            self.signers.remove(cid),
            Some(SignerState::Initialising { .. })
        );
        if was_initialising {
            self.init_refused(cid, &why);
        }
    }

    fn vls_reply(&mut self, cid: &str, payload: &[u8]) {
        let response = match serial::Response::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%cid, error = %e, "malformed reply ignored");
                return;
            }
        };
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.sent_to.as_deref() == Some(cid) && f.seq == response.seq);
        if !matches {
            tracing::warn!(%cid, seq = response.seq, "reply matches no request in flight; ignored");
            return;
        }
        if let Some(f) = self.in_flight.take() {
            self.reply(f.id, Ok(response.frame.message()));
        }
    }

    fn current(&self) -> Option<String> {
        self.signers
            .iter()
            .filter_map(|(cid, s)| match s {
                SignerState::Ready { order } => Some((*order, cid)),
                _ => None,
            })
            .max()
            .map(|(_, cid)| cid.clone())
    }

    fn pump(&mut self) {
        while self.in_flight.is_none() {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            let seq = self.next_seq;
            self.next_seq = self.next_seq.checked_add(1).unwrap_or(1);
            let payload = Frame::from_message(&p.message).and_then(|frame| {
                serial::Request {
                    seq,
                    peer_id: p.peer_id,
                    dbid: p.dbid,
                    frame,
                }
                .encode()
            });
            match payload {
                Ok(payload) => {
                    self.in_flight = Some(InFlight {
                        id: p.id,
                        seq,
                        payload,
                        sent_to: None,
                        deadline: p.deadline,
                        storing: Storing::Idle,
                    })
                }
                Err(e) => self.reply(p.id, Err(RequestError::Invalid(e.to_string()))),
            }
        }
        let Some(cid) = self.current() else {
            if let Some(f) = self.in_flight.as_ref().filter(|f| f.sent_to.is_none()) {
                tracing::debug!(seq = f.seq, "request queued until a signer is ready");
            }
            return;
        };
        let resend = match &mut self.in_flight {
            Some(f) if f.sent_to.is_none() => {
                f.sent_to = Some(cid.clone());
                Some(f.payload.clone())
            }
            _ => None,
        };
        if let Some(payload) = resend {
            self.send(&cid, Suffix::Vls, payload);
        }
    }
}

/// The `lss-msg` acknowledging stored changes: the server's MAC, or every
/// provider's receipt with several.
fn ack_of(quorum: Option<u64>, receipts: Receipts) -> Vec<u8> {
    match quorum {
        Some(_) => Msg::Receipts(receipts),
        None => Msg::Stored(BrokerMutations {
            server_hmac: receipts.receipts.first().map(|r| r.server_hmac),
            muts: Vec::new(),
        }),
    }
    .encode()
}

/// The puts that carry out the signer's `repairs`, computed from the
/// states relayed to it (the signer made its MACs from the same states;
/// a repair that does not fit them is dropped, and the provider stays
/// behind).
fn repair_jobs(cid: &str, states: &[ProviderState], repairs: Vec<Repair>) -> Vec<RepairJob> {
    let kvs = |m: &Muts| -> Vec<lss_core::KeyValue> {
        m.iter()
            .map(|(k, (v, val))| {
                lss_core::KeyValue::new(
                    k.clone(),
                    i64::try_from(*v).unwrap_or(i64::MAX),
                    val.clone(),
                )
            })
            .collect()
    };
    let state = |i: u64| states.iter().find(|s| s.provider == i);
    repairs
        .into_iter()
        .filter_map(|r| {
            let (Some(current), Some(wanted)) = (state(r.provider), state(r.source)) else {
                tracing::warn!(%cid, provider = r.provider, "a repair of a provider whose state was not relayed ignored");
                return None;
            };
            let plan = lss_verify::quorum::repair_plan(&kvs(&current.muts), &kvs(&wanted.muts));
            let steps = lss_verify::quorum::repair_steps(&plan);
            if steps.len() != r.macs.len() {
                tracing::warn!(%cid, provider = r.provider, steps = steps.len(), macs = r.macs.len(), "a repair that does not fit the relayed states ignored");
                return None;
            }
            tracing::info!(%cid, provider = r.provider, steps = steps.len(), "repairing an LSS provider that is behind");
            Some(RepairJob {
                provider: usize::try_from(r.provider).ok()?,
                steps,
                macs: r.macs,
            })
        })
        .collect()
}

/// The reference's error payload: text followed by one code byte.
fn error_text(payload: &[u8]) -> String {
    let text = match payload.split_last() {
        Some((_, text)) => text,
        None => payload,
    };
    String::from_utf8_lossy(text).into_owned()
}

/// What lightningd asked for in its `HsmdInit`: chain and versions.
fn describe_init(message: &[u8]) -> String {
    match msgs::from_vec(message.to_vec()) {
        Ok(Message::HsmdInit(init)) => format!(
            "chain genesis {}, hsmd wire versions {}..={}",
            init.chain_params, init.hsm_wire_min_version, init.hsm_wire_max_version
        ),
        _ => "unparsable".into(),
    }
}
