//! The tokio driver of [`BrokerCore`]: one task that feeds it CLN requests,
//! control messages, MQTT events, LSS results and the clock, and performs
//! what it asks (publish, call LSS on a task of its own, answer a waiter).
//! Every rule lives in [`crate::core`]; this module only moves bytes and
//! time, so it holds no state of its own but the waiters' reply channels.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::{Action, BrokerCore, Input, LssCall, LssResult, OpId, RequestId};
pub use crate::core::{RequestError, SignerError, SignerInfo};
use crate::link::{Link, LinkEvent};
use crate::lss::Relay;
use crate::metrics::Stats;

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

/// The handle of the CLN side and of the control API.
#[derive(Clone)]
pub struct Scheduler {
    commands: mpsc::Sender<Command>,
    errors: broadcast::Sender<SignerError>,
    stats: Stats,
    relay: Option<Relay>,
}

impl Scheduler {
    /// Starts the driver over `link` and its events. `timeout` bounds every
    /// request, from arrival to reply. With `lss`, every signer runs the LSS
    /// init dance, and every change it reports is stored before its reply is
    /// released; without, the signer's state is its own. Nothing over
    /// `max_packet` bytes is published.
    pub fn start(
        link: Link,
        events: mpsc::Receiver<LinkEvent>,
        timeout: Duration,
        lss: Option<Relay>,
        max_packet: usize,
    ) -> Scheduler {
        let (commands, rx) = mpsc::channel(1024);
        let (errors, _) = broadcast::channel(256);
        let mut core = BrokerCore::new(timeout, lss.is_some(), max_packet);
        if let Some(w) = lss.as_ref().and_then(Relay::write_quorum) {
            core = core.with_quorum(w);
        }
        let stats = Stats::default();
        let driver = Driver {
            core,
            link,
            relay: lss.clone(),
            errors: errors.clone(),
            waiters: HashMap::new(),
            next_id: 1,
            stats: stats.clone(),
        };
        tokio::spawn(driver.run(rx, events));
        Scheduler {
            commands,
            errors,
            stats,
            relay: lss,
        }
    }

    /// Hands CLN's `HsmdInit` (type and body) over; resolves with the reply
    /// of the first signer that answers it, or an error naming both sides
    /// if the only signer refuses it. No deadline otherwise: CLN cannot
    /// start without a signer, and the wait is logged.
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
        let command = Command::Request {
            peer_id,
            dbid,
            message,
            reply,
        };
        self.send(command, rx).await
    }

    /// Sends a signed control message to signer `cid`; resolves with its
    /// response (after any change it makes is stored in LSS).
    pub async fn control(&self, cid: String, message: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Control {
            cid,
            message,
            reply,
        };
        self.send(command, rx).await
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

    /// Requests answered and their recent latency.
    pub fn stats(&self) -> crate::metrics::StatsView {
        self.stats.view()
    }

    /// The LSS relay, when there is one.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// Every error signers report from now on.
    pub fn errors(&self) -> broadcast::Receiver<SignerError> {
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

struct Driver {
    core: BrokerCore,
    link: Link,
    relay: Option<Relay>,
    errors: broadcast::Sender<SignerError>,
    waiters: HashMap<RequestId, Waiter>,
    next_id: RequestId,
    stats: Stats,
}

/// A request waiting for its answer.
struct Waiter {
    reply: Reply,
    /// `init`, `control`, or CLN's message type.
    kind: String,
    started: Instant,
}

fn outcome(result: &Result<Vec<u8>, RequestError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RequestError::Signer { .. }) => "signer",
        Err(RequestError::Lss(_)) => "lss",
        Err(RequestError::Deadline(_)) => "deadline",
        Err(RequestError::Invalid(_)) => "invalid",
        Err(RequestError::Stopped) => "stopped",
    }
}

/// A CLN request's message type, as a label: the number, or `other` for a
/// message too short to have one.
fn request_kind(message: &[u8]) -> String {
    match message {
        [a, b, ..] => u16::from_be_bytes([*a, *b]).to_string(),
        _ => "other".into(),
    }
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<LinkEvent>,
    ) {
        let (done_tx, mut done) = mpsc::channel::<(OpId, LssResult)>(1024);
        loop {
            self.perform(&done_tx).await;
            let wake = self.core.poll_timeout();
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some((op, result)) = done.recv() => {
                    self.core.handle(Instant::now(), Input::Lss { op, result });
                    self.count_signers();
                }
                event = events.recv() => match event {
                    Some(event) => {
                        self.core.handle(Instant::now(), Input::Link(event));
                        self.count_signers();
                    }
                    None => {
                        tracing::error!("the MQTT side stopped");
                        break;
                    }
                },
                () = timer => {
                    self.core.handle_timeout(Instant::now());
                    self.count_signers();
                }
            }
        }
        self.core.stop();
        self.perform(&done_tx).await;
    }

    /// Signers change state on link events, LSS results and timeouts only.
    fn count_signers(&self) {
        let signers = self.core.signers();
        crate::metrics::signers(signers.iter().map(|s| s.state));
    }

    fn command(&mut self, command: Command) {
        let mut waiter = |reply: Reply, kind: String| {
            let id = self.next_id;
            self.next_id += 1;
            let started = Instant::now();
            self.waiters.insert(
                id,
                Waiter {
                    reply,
                    kind,
                    started,
                },
            );
            id
        };
        let input = match command {
            Command::Signers { reply } => {
                let _ = reply.send(self.core.signers());
                return;
            }
            Command::Init { message, reply } => Input::Init {
                id: waiter(reply, "init".into()),
                message,
            },
            Command::Control {
                cid,
                message,
                reply,
            } => Input::Control {
                id: waiter(reply, "control".into()),
                cid,
                message,
            },
            Command::Request {
                peer_id,
                dbid,
                message,
                reply,
            } => Input::Request {
                id: waiter(reply, request_kind(&message)),
                peer_id,
                dbid,
                message,
            },
        };
        self.core.handle(Instant::now(), input);
    }

    async fn perform(&mut self, done: &mpsc::Sender<(OpId, LssResult)>) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Publish {
                    cid,
                    suffix,
                    payload,
                } => self.link.publish(&cid, suffix, payload).await,
                Action::Reply { id, result } => {
                    if let Some(waiter) = self.waiters.remove(&id) {
                        self.stats.answered(
                            waiter.kind,
                            outcome(&result),
                            waiter.started.elapsed(),
                        );
                        let _ = waiter.reply.send(result);
                    }
                }
                Action::SignerError(error) => {
                    crate::metrics::signer_error(&error.message);
                    let _ = self.errors.send(error);
                }
                Action::Lss { op, call, deadline } => {
                    let Some(relay) = self.relay.clone() else {
                        tracing::error!("an LSS call without an LSS server configured");
                        continue;
                    };
                    let done = done.clone();
                    let call = lss_call(relay, call, deadline.into());
                    tokio::spawn(async move {
                        let result = call.await;
                        let _ = done.send((op, result)).await;
                    });
                }
            }
        }
    }
}

/// The LSS call as a future to run on its own task. A put is queued to
/// the relay now, before the future is returned, so each provider stores
/// puts in the order the core made them.
fn lss_call(
    relay: Relay,
    call: LssCall,
    deadline: tokio::time::Instant,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = LssResult> + Send>> {
    match call {
        LssCall::ServerKey => {
            Box::pin(async move { LssResult::ServerKey(relay.server_keys(deadline).await) })
        }
        LssCall::GetAll {
            accounts,
            nonce,
            seen,
        } => Box::pin(async move {
            LssResult::State(
                relay
                    .get_all(&accounts, nonce, seen.as_deref(), deadline)
                    .await,
            )
        }),
        LssCall::Put {
            accounts,
            muts,
            puts,
            verify,
            repairs,
        } => {
            let stored = relay.put(&accounts, &muts, &puts, repairs, verify, deadline);
            Box::pin(async move { LssResult::Stored(stored.await) })
        }
    }
}
