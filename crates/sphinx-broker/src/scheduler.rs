//! The scheduler: one task that owns every signer's state and every
//! outstanding request, driven by events, never by polling.
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
//! - every request has a deadline; when it passes, or the signer reports an
//!   error, the request fails and its CLN connection is closed, loudly;
//! - `HsmdInit` from CLN is held until a signer has answered it; later
//!   signers get the same init pinned to the negotiated version, and must
//!   have the same node id.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use sphinx_wire::hsmd::Frame;
use sphinx_wire::serial;
use sphinx_wire::topics::Suffix;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use vls_protocol::msgs::{self, Message, SerBolt};

use crate::link::{Link, LinkEvent};
use crate::lss::{Account, Relay, RelayError};
use sphinx_wire::lss::{BrokerMutations, Msg, Response};

/// Why a request got no reply.
#[derive(Debug, Clone, thiserror::Error)]
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

type Reply = oneshot::Sender<Result<Vec<u8>, RequestError>>;

enum Command {
    Init {
        message: Vec<u8>,
        reply: Reply,
    },
    Control {
        cid: String,
        message: Vec<u8>,
        reply: Reply,
    },
    Signers {
        reply: oneshot::Sender<Vec<SignerInfo>>,
    },
    Request {
        peer_id: [u8; 33],
        dbid: u64,
        message: Vec<u8>,
        reply: Reply,
    },
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
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignerError {
    /// The signer.
    pub cid: String,
    /// Its text.
    pub message: String,
}

/// The handle of the CLN side and of the control API.
#[derive(Clone)]
pub struct Scheduler {
    commands: mpsc::Sender<Command>,
    errors: tokio::sync::broadcast::Sender<SignerError>,
}

impl Scheduler {
    /// Starts the scheduler over `link` and its events. `timeout` bounds
    /// every request, from arrival to reply. With `lss`, every signer runs
    /// the LSS init dance, and every change it reports is stored before its
    /// reply is released; without, the signer's state is its own.
    pub fn start(
        link: Link,
        events: mpsc::Receiver<LinkEvent>,
        timeout: Duration,
        lss: Option<Relay>,
    ) -> Scheduler {
        let (commands, rx) = mpsc::channel(1024);
        let (internal_tx, internal) = mpsc::channel(1024);
        let (errors, _) = tokio::sync::broadcast::channel(256);
        let actor = Actor {
            errors: errors.clone(),
            controls: HashMap::new(),
            link,
            timeout,
            lss,
            internal_tx,
            accounts: HashMap::new(),
            signers: HashMap::new(),
            cln_init: None,
            negotiated: None,
            init_waiter: None,
            queue: VecDeque::new(),
            in_flight: None,
            next_seq: 1,
            hellos: 0,
        };
        tokio::spawn(actor.run(rx, events, internal));
        Scheduler { commands, errors }
    }

    /// Hands CLN's `HsmdInit` (type and body) over; resolves with the reply
    /// of the first signer that answers it. No deadline: CLN cannot start
    /// without a signer, and the wait is logged.
    pub async fn init(&self, message: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Init { message, reply }, rx).await
    }

    /// Runs one request (type and body) for the CLN client (`peer_id`,
    /// `dbid`); resolves with the reply (type and body).
    pub async fn request(
        &self,
        peer_id: [u8; 33],
        dbid: u64,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            Command::Request {
                peer_id,
                dbid,
                message,
                reply,
            },
            rx,
        )
        .await
    }

    /// Sends a signed control message to signer `cid`; resolves with its
    /// response (after any change it makes is stored in LSS).
    pub async fn control(&self, cid: String, message: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            Command::Control {
                cid,
                message,
                reply,
            },
            rx,
        )
        .await
    }

    /// The signers and their state.
    pub async fn signers(&self) -> Result<Vec<SignerInfo>, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Signers { reply })
            .await
            .map_err(|_| RequestError::Stopped)?;
        rx.await.map_err(|_| RequestError::Stopped)
    }

    /// Every error signers report from now on.
    pub fn errors(&self) -> tokio::sync::broadcast::Receiver<SignerError> {
        self.errors.subscribe()
    }

    async fn send(
        &self,
        command: Command,
        rx: oneshot::Receiver<Result<Vec<u8>, RequestError>>,
    ) -> Result<Vec<u8>, RequestError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| RequestError::Stopped)?;
        rx.await.unwrap_or(Err(RequestError::Stopped))
    }
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

struct Negotiated {
    node_id: [u8; 33],
    /// The init later signers get: CLN's, pinned to the negotiated version.
    init: Vec<u8>,
}

struct Pending {
    peer_id: [u8; 33],
    dbid: u64,
    message: Vec<u8>,
    reply: Reply,
    deadline: Instant,
}

struct InFlight {
    seq: u16,
    payload: Vec<u8>,
    sent_to: Option<String>,
    reply: Reply,
    deadline: Instant,
}

/// A control message awaiting its response.
struct ControlWait {
    reply: Reply,
    deadline: Instant,
}

/// Results of LSS calls, which run as their own tasks.
enum Internal {
    ControlStored {
        cid: String,
        result: Result<[u8; 32], RelayError>,
    },
    ServerKey {
        cid: String,
        result: Result<[u8; 33], RelayError>,
    },
    State {
        cid: String,
        result: Result<(sphinx_wire::lss::Muts, [u8; 32]), RelayError>,
    },
    InitStored {
        cid: String,
        result: Result<[u8; 32], RelayError>,
    },
    RequestStored {
        cid: String,
        seq: u16,
        result: Result<[u8; 32], RelayError>,
    },
}

struct Actor {
    errors: tokio::sync::broadcast::Sender<SignerError>,
    controls: HashMap<String, ControlWait>,
    link: Link,
    timeout: Duration,
    lss: Option<Relay>,
    internal_tx: mpsc::Sender<Internal>,
    accounts: HashMap<String, Account>,
    signers: HashMap<String, SignerState>,
    cln_init: Option<Vec<u8>>,
    negotiated: Option<Negotiated>,
    init_waiter: Option<Reply>,
    queue: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    next_seq: u16,
    hellos: u64,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<LinkEvent>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        let mut waiting_log = Instant::now() + Duration::from_secs(10);
        loop {
            let wake = self.next_deadline().unwrap_or(waiting_log).min(waiting_log);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                Some(done) = internal.recv() => self.internal(done).await,
                event = events.recv() => match event {
                    Some(event) => self.event(event).await,
                    None => {
                        tracing::error!("the MQTT side stopped");
                        break;
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    self.expire();
                    if Instant::now() >= waiting_log {
                        waiting_log = Instant::now() + Duration::from_secs(30);
                        if self.init_waiter.is_some() {
                            tracing::warn!("CLN is waiting for HsmdInit: no signer has connected and answered yet");
                        }
                    }
                }
            }
            self.pump().await;
        }
        self.fail_all(RequestError::Stopped);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let signer = self.signers.values().filter_map(|s| match s {
            SignerState::Initialising { deadline }
            | SignerState::LssCredentials { deadline }
            | SignerState::LssState { deadline }
            | SignerState::LssStoring { deadline } => Some(*deadline),
            _ => None,
        });
        self.in_flight
            .iter()
            .map(|f| f.deadline)
            .chain(self.queue.iter().map(|p| p.deadline))
            .chain(self.controls.values().map(|c| c.deadline))
            .chain(signer)
            .min()
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Init { message, reply } => {
                if self.cln_init.is_some() {
                    let _ = reply.send(Err(RequestError::Invalid("a second HsmdInit".into())));
                    return;
                }
                self.cln_init = Some(message.clone());
                self.init_waiter = Some(reply);
                let waiting: Vec<String> = self
                    .signers
                    .iter()
                    .filter(|(_, s)| matches!(s, SignerState::Waiting))
                    .map(|(cid, _)| cid.clone())
                    .collect();
                for cid in waiting {
                    self.send_init(&cid).await;
                }
            }
            Command::Control {
                cid,
                message,
                reply,
            } => {
                if !matches!(self.signers.get(&cid), Some(SignerState::Ready { .. })) {
                    let _ = reply.send(Err(RequestError::Invalid(format!(
                        "signer {cid} is not connected and ready"
                    ))));
                    return;
                }
                if self.controls.contains_key(&cid) {
                    let _ = reply.send(Err(RequestError::Invalid(format!(
                        "a control message to {cid} is already pending"
                    ))));
                    return;
                }
                self.controls.insert(
                    cid.clone(),
                    ControlWait {
                        reply,
                        deadline: Instant::now() + self.timeout,
                    },
                );
                self.link.publish(&cid, Suffix::Control, message).await;
            }
            Command::Signers { reply } => {
                let current = self.current();
                let list = self
                    .signers
                    .iter()
                    .map(|(cid, state)| SignerInfo {
                        cid: cid.clone(),
                        state: match state {
                            SignerState::LssCredentials { .. } => "lss-credentials",
                            SignerState::LssState { .. } => "lss-state",
                            SignerState::LssStoring { .. } => "lss-storing",
                            SignerState::Waiting => "waiting-for-hsmd-init",
                            SignerState::Initialising { .. } => "initialising",
                            SignerState::Ready { .. } => "ready",
                        },
                        current: current.as_deref() == Some(cid),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Request {
                peer_id,
                dbid,
                message,
                reply,
            } => {
                self.queue.push_back(Pending {
                    peer_id,
                    dbid,
                    message,
                    reply,
                    deadline: Instant::now() + self.timeout,
                });
            }
        }
    }

    async fn send_init(&mut self, cid: &str) {
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
                        deadline: Instant::now() + self.timeout,
                    },
                );
                self.link.publish(cid, Suffix::Init3Msg, payload).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot frame HsmdInit"),
        }
    }

    async fn event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Hello { cid } => {
                tracing::info!(%cid, "signer said hello");
                if let Some(f) = &mut self.in_flight {
                    if f.sent_to.as_deref() == Some(&cid) {
                        f.sent_to = None; // resent once it is ready again
                    }
                }
                match self.lss.clone() {
                    Some(relay) => {
                        // LSS step 1: the server key, for the signer to
                        // derive its credentials.
                        let deadline = Instant::now() + self.timeout;
                        self.signers
                            .insert(cid.clone(), SignerState::LssCredentials { deadline });
                        let done = self.internal_tx.clone();
                        tokio::spawn(async move {
                            let result = relay.server_key(deadline).await;
                            let _ = done.send(Internal::ServerKey { cid, result }).await;
                        });
                    }
                    None => self.send_init(&cid).await,
                }
            }
            LinkEvent::Gone { cid } => {
                self.accounts.remove(&cid);
                if self.signers.remove(&cid).is_some() {
                    tracing::warn!(%cid, "signer disconnected");
                }
                if let Some(f) = &mut self.in_flight {
                    if f.sent_to.as_deref() == Some(&cid) {
                        f.sent_to = None;
                    }
                }
            }
            LinkEvent::Message {
                cid,
                suffix,
                payload,
            } => match suffix {
                Suffix::Init3Res => self.init_reply(cid, &payload),
                Suffix::Init1Res => self.credentials(cid, &payload),
                Suffix::Init2Res => self.restored(cid, &payload).await,
                Suffix::LssRes => self.request_changes(cid, &payload),
                Suffix::ControlRes => match self.controls.remove(&cid) {
                    Some(wait) => {
                        let _ = wait.reply.send(Ok(payload.to_vec()));
                    }
                    None => tracing::warn!(%cid, "control response nobody waits for ignored"),
                },
                Suffix::LssConflictRes => {
                    tracing::info!(%cid, "signer dropped its conflicting changes")
                }
                Suffix::VlsRes => self.vls_reply(cid, &payload),
                Suffix::Error => {
                    let text = error_text(&payload);
                    tracing::error!(%cid, error = %text, "signer reported an error");
                    let _ = self.errors.send(SignerError {
                        cid: cid.clone(),
                        message: text.clone(),
                    });
                    if let Some(wait) = self.controls.remove(&cid) {
                        let _ = wait.reply.send(Err(RequestError::Signer {
                            cid: cid.clone(),
                            message: text.clone(),
                        }));
                    }
                    if matches!(
                        self.signers.get(&cid),
                        Some(SignerState::Initialising { .. })
                    ) {
                        self.signers.remove(&cid);
                    }
                    if self.in_flight.as_ref().and_then(|f| f.sent_to.as_deref()) == Some(&cid) {
                        if let Some(f) = self.in_flight.take() {
                            let _ = f
                                .reply
                                .send(Err(RequestError::Signer { cid, message: text }));
                        }
                    }
                }
                other => tracing::debug!(%cid, suffix = other.as_str(), "message not handled here"),
            },
        }
    }

    /// Results of the LSS tasks.
    async fn internal(&mut self, done: Internal) {
        match done {
            Internal::ServerKey { cid, result } => {
                if !matches!(
                    self.signers.get(&cid),
                    Some(SignerState::LssCredentials { .. })
                ) {
                    return;
                }
                match result {
                    Ok(server_pubkey) => {
                        self.link
                            .publish(&cid, Suffix::Init1Msg, Msg::Init { server_pubkey }.encode())
                            .await;
                    }
                    Err(e) => self.reject(&cid, format!("LSS server key: {e}")),
                }
            }
            Internal::State { cid, result } => {
                if !matches!(self.signers.get(&cid), Some(SignerState::LssState { .. })) {
                    return;
                }
                match result {
                    Ok((muts, mac)) => {
                        let msg = Msg::Created(BrokerMutations {
                            server_hmac: Some(mac),
                            muts,
                        });
                        self.link
                            .publish(&cid, Suffix::Init2Msg, msg.encode())
                            .await;
                    }
                    Err(e) => self.reject(&cid, format!("reading the signer's LSS state: {e}")),
                }
            }
            Internal::InitStored { cid, result } => {
                if !matches!(self.signers.get(&cid), Some(SignerState::LssStoring { .. })) {
                    return;
                }
                match result {
                    Ok(mac) => {
                        self.link.publish(&cid, Suffix::LssMsg, stored(mac)).await;
                        self.send_init(&cid).await;
                    }
                    Err(RelayError::Conflict(n)) => {
                        tracing::error!(%cid, keys = n, "LSS conflict on the signer's init changes: another signer wrote; it resyncs");
                        self.signers.remove(&cid);
                        self.link
                            .publish(&cid, Suffix::LssConflict, Msg::PutConflict.encode())
                            .await;
                    }
                    Err(e) => self.reject(&cid, format!("storing the signer's init changes: {e}")),
                }
            }
            Internal::ControlStored { cid, result } => {
                if !self.controls.contains_key(&cid) {
                    return;
                }
                match result {
                    Ok(mac) => self.link.publish(&cid, Suffix::LssMsg, stored(mac)).await,
                    Err(RelayError::Conflict(n)) => {
                        tracing::error!(%cid, keys = n, "LSS conflict on a control change: another signer wrote; it resyncs");
                        self.link
                            .publish(&cid, Suffix::LssConflict, Msg::PutConflict.encode())
                            .await;
                        if let Some(wait) = self.controls.remove(&cid) {
                            let _ = wait.reply.send(Err(RequestError::Lss(format!(
                                "conflict on {n} key(s); retry"
                            ))));
                        }
                    }
                    Err(e) => {
                        if let Some(wait) = self.controls.remove(&cid) {
                            let _ = wait.reply.send(Err(RequestError::Lss(e.to_string())));
                        }
                    }
                }
            }
            Internal::RequestStored { cid, seq, result } => {
                let current = self
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.sent_to.as_deref() == Some(&cid) && f.seq == seq);
                if !current {
                    tracing::info!(%cid, seq, "LSS result for a request no longer in flight; the signer resyncs from LSS");
                    return;
                }
                match result {
                    Ok(mac) => {
                        self.link.publish(&cid, Suffix::LssMsg, stored(mac)).await;
                    }
                    Err(RelayError::Conflict(n)) => {
                        tracing::error!(%cid, seq, keys = n, "LSS conflict: another signer wrote; this signer resyncs and the request is resent");
                        self.link
                            .publish(&cid, Suffix::LssConflict, Msg::PutConflict.encode())
                            .await;
                    }
                    Err(e) => {
                        if let Some(f) = self.in_flight.take() {
                            let _ = f.reply.send(Err(RequestError::Lss(e.to_string())));
                        }
                    }
                }
            }
        }
    }

    /// LSS step 1 answered: the signer's credentials and nonce.
    fn credentials(&mut self, cid: String, payload: &[u8]) {
        if !matches!(
            self.signers.get(&cid),
            Some(SignerState::LssCredentials { .. })
        ) {
            tracing::warn!(%cid, "unexpected init-1 reply ignored");
            return;
        }
        let Some(relay) = self.lss.clone() else {
            return;
        };
        let init = match Response::decode(payload) {
            Ok(Response::Init(init)) => init,
            Ok(_) => return self.reject(&cid, "init-1 reply is not Init".into()),
            Err(e) => return self.reject(&cid, format!("malformed init-1 reply: {e}")),
        };
        let account = Account {
            client_id: init.client_id,
            token: init.auth_token,
        };
        self.accounts.insert(cid.clone(), account);
        let deadline = Instant::now() + self.timeout;
        self.signers
            .insert(cid.clone(), SignerState::LssState { deadline });
        // A signer that sends no nonce asks for no state; ours always does.
        let nonce = init.nonce.unwrap_or([0; 32]);
        let done = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = match init.nonce {
                Some(_) => relay.get_all(account, nonce, deadline).await,
                None => Ok((Vec::new(), [0; 32])),
            };
            let _ = done.send(Internal::State { cid, result }).await;
        });
    }

    /// LSS step 2 answered: what the signer changed while restoring.
    async fn restored(&mut self, cid: String, payload: &[u8]) {
        if !matches!(self.signers.get(&cid), Some(SignerState::LssState { .. })) {
            tracing::warn!(%cid, "unexpected init-2 reply ignored");
            return;
        }
        let changes = match Response::decode(payload) {
            Ok(Response::Created(changes)) => changes,
            Ok(_) => return self.reject(&cid, "init-2 reply is not Created".into()),
            Err(e) => return self.reject(&cid, format!("malformed init-2 reply: {e}")),
        };
        if changes.muts.is_empty() {
            return self.send_init(&cid).await;
        }
        let (Some(relay), Some(account)) = (self.lss.clone(), self.accounts.get(&cid).copied())
        else {
            return self.reject(&cid, "no LSS account".into());
        };
        let deadline = Instant::now() + self.timeout;
        self.signers
            .insert(cid.clone(), SignerState::LssStoring { deadline });
        let done = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = relay
                .put(account, &changes.muts, changes.client_hmac, deadline)
                .await;
            let _ = done.send(Internal::InitStored { cid, result }).await;
        });
    }

    /// A request's changes, to store before its reply is released.
    fn request_changes(&mut self, cid: String, payload: &[u8]) {
        let request = self
            .in_flight
            .as_ref()
            .filter(|f| f.sent_to.as_deref() == Some(&cid))
            .map(|f| (f.seq, f.deadline));
        let control = self.controls.get(&cid).map(|c| c.deadline);
        let (seq, deadline) = match (request, control) {
            (Some((seq, deadline)), _) => (Some(seq), deadline),
            (None, Some(deadline)) => (None, deadline),
            (None, None) => {
                tracing::warn!(%cid, "changes for no request in flight ignored");
                return;
            }
        };
        let changes = match Response::decode(payload) {
            Ok(Response::VlsMuts(changes)) => changes,
            _ => {
                tracing::warn!(%cid, "malformed lss-res ignored");
                return;
            }
        };
        let (Some(relay), Some(account)) = (self.lss.clone(), self.accounts.get(&cid).copied())
        else {
            tracing::error!(%cid, "changes from a signer without an LSS account (broker runs --no-lss) ignored");
            return;
        };
        let done = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = relay
                .put(account, &changes.muts, changes.client_hmac, deadline)
                .await;
            let finished = match seq {
                Some(seq) => Internal::RequestStored { cid, seq, result },
                None => Internal::ControlStored { cid, result },
            };
            let _ = done.send(finished).await;
        });
    }

    fn init_reply(&mut self, cid: String, payload: &[u8]) {
        if !matches!(
            self.signers.get(&cid),
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
                return self.reject(
                    &cid,
                    format!("init reply is not HsmdInitReplyV4: {other:?}"),
                );
            }
            Err(e) => return self.reject(&cid, format!("malformed init reply: {e}")),
        };
        match &self.negotiated {
            Some(n) if n.node_id != node_id => {
                return self.reject(
                    &cid,
                    format!(
                        "node id {} differs from the node's {}",
                        hex::encode(node_id),
                        hex::encode(n.node_id)
                    ),
                );
            }
            Some(_) => {}
            None => {
                let Some(cln_init) = &self.cln_init else {
                    return self.reject(&cid, "no HsmdInit was sent".into());
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
                if let Some(waiter) = self.init_waiter.take() {
                    let _ = waiter.send(Ok(reply));
                }
            }
        }
        self.hellos += 1;
        self.signers
            .insert(cid.clone(), SignerState::Ready { order: self.hellos });
        tracing::info!(%cid, "signer ready");
    }

    fn reject(&mut self, cid: &str, why: String) {
        tracing::error!(%cid, %why, "signer not admitted");
        self.signers.remove(cid);
    }

    fn vls_reply(&mut self, cid: String, payload: &[u8]) {
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
            .is_some_and(|f| f.sent_to.as_deref() == Some(&cid) && f.seq == response.seq);
        if !matches {
            tracing::warn!(%cid, seq = response.seq, "reply matches no request in flight; ignored");
            return;
        }
        if let Some(f) = self.in_flight.take() {
            let _ = f.reply.send(Ok(response.frame.message()));
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

    async fn pump(&mut self) {
        if self.in_flight.is_none() {
            if let Some(p) = self.queue.pop_front() {
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
                            seq,
                            payload,
                            sent_to: None,
                            reply: p.reply,
                            deadline: p.deadline,
                        });
                    }
                    Err(e) => {
                        let _ = p.reply.send(Err(RequestError::Invalid(e.to_string())));
                    }
                }
            }
        }
        let Some(cid) = self.current() else { return };
        if let Some(f) = &mut self.in_flight {
            if f.sent_to.is_none() {
                f.sent_to = Some(cid.clone());
                let payload = f.payload.clone();
                self.link.publish(&cid, Suffix::Vls, payload).await;
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<String> = self
            .controls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in late {
            if let Some(wait) = self.controls.remove(&cid) {
                let _ = wait.reply.send(Err(RequestError::Deadline(self.timeout)));
            }
        }
        if self.in_flight.as_ref().is_some_and(|f| f.deadline <= now) {
            if let Some(f) = self.in_flight.take() {
                tracing::error!(seq = f.seq, signer = ?f.sent_to, "request timed out");
                let _ = f.reply.send(Err(RequestError::Deadline(self.timeout)));
            }
        }
        while self.queue.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = self.queue.pop_front() {
                let _ = p.reply.send(Err(RequestError::Deadline(self.timeout)));
            }
        }
        let late: Vec<String> = self
            .signers
            .iter()
            .filter(
                |(_, s)| matches!(s, SignerState::Initialising { deadline } if *deadline <= now),
            )
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in late {
            self.reject(&cid, "no init reply in time".into());
        }
    }

    fn fail_all(&mut self, error: RequestError) {
        if let Some(f) = self.in_flight.take() {
            let _ = f.reply.send(Err(error.clone()));
        }
        for p in self.queue.drain(..) {
            let _ = p.reply.send(Err(error.clone()));
        }
        if let Some(w) = self.init_waiter.take() {
            let _ = w.send(Err(error));
        }
    }
}

/// The acknowledgement of stored changes, with the server's MAC.
fn stored(mac: [u8; 32]) -> Vec<u8> {
    Msg::Stored(BrokerMutations {
        server_hmac: Some(mac),
        muts: Vec::new(),
    })
    .encode()
}

/// The reference's error payload: text followed by one code byte.
fn error_text(payload: &[u8]) -> String {
    let text = match payload.split_last() {
        Some((_, text)) => text,
        None => payload,
    };
    String::from_utf8_lossy(text).into_owned()
}
