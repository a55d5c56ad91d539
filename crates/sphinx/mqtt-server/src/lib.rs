//! A small embedded MQTT 3.1.1 server whose every CONNECT, PUBLISH and
//! SUBSCRIBE is decided by the embedding application.
//!
//! Why not rumqttd: rumqttd (0.20) can check a login, but it has no
//! per-topic publish/subscribe authorisation (the sphinx reference needed a
//! fork for that hook, and then answered `true` to everything: the notes'
//! `S3`). A remote signer's broker must make sure a connection uses only its
//! own `{cid}/…` topics, and that requests are published only by the broker
//! itself. That needs a server where authorisation is part of the routing,
//! not a hook on the side; the part that is easy to get wrong, the MQTT
//! packet codec, is rumqttc's (`rumqttc::mqttbytes::v4`), not ours.
//!
//! The model is deliberately narrow:
//! - clients talk only to the embedding application (the "local side"):
//!   a client's PUBLISH goes to [`Inbound`] events, never to other clients;
//!   [`Handle::publish`] from the local side reaches the clients whose
//!   subscriptions match. There is no client-to-client routing to get wrong.
//! - QoS 0 and 1 from clients (PUBACK is sent after the event is queued);
//!   deliveries to clients are QoS 0. No retained messages, no persistent
//!   sessions, no wills (the local side sees disconnects directly).
//! - Limits on packet size, CONNECT time, keep-alive, and per-client queue;
//!   a client that breaks the protocol or the policy is disconnected with a
//!   log line saying why. Each connection is its own task, so a fault in
//!   one cannot take down the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Decides who may connect and which topics they may use.
pub trait Policy: Send + Sync + 'static {
    /// A CONNECT. `Err` carries the reason (logged) and the return code.
    fn login(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<(), Refusal>;
    /// Whether `client_id` may publish on `topic`.
    fn may_publish(&self, client_id: &str, topic: &str) -> bool;
    /// Whether `client_id` may subscribe to `filter`.
    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool;
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Bad username or password (return code 4) rather than not authorised (5).
    pub bad_credentials: bool,
    /// For the log.
    pub reason: String,
}

/// The largest CONNECT accepted, whatever `max_packet` is: before a client
/// has logged in it gets no more than this of the server's memory.
pub const MAX_CONNECT: usize = 64 * 1024;

/// Server settings.
#[derive(Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Largest packet accepted or sent.
    pub max_packet: usize,
    /// Time allowed between accept and a complete CONNECT.
    pub connect_timeout: Duration,
    /// Messages queued for one client before it is disconnected as too slow.
    pub client_queue: usize,
    /// Connections that have not logged in yet, at most; more are closed at
    /// once (each holds a task until `connect_timeout`).
    pub max_unauthenticated: usize,
    /// TLS, if any.
    pub tls: Option<TlsAcceptor>,
}

impl Config {
    /// Plain MQTT on `listen` with sane limits.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            max_packet: 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            client_queue: 256,
            max_unauthenticated: 64,
            tls: None,
        }
    }
}

/// What clients do, as the local side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A client logged in.
    Connected {
        /// Its MQTT client id.
        client_id: String,
        /// Its username.
        username: Option<String>,
    },
    /// A client published (policy already checked).
    Published {
        /// Who.
        client_id: String,
        /// Where.
        topic: String,
        /// What.
        payload: Bytes,
    },
    /// A client's connection ended.
    Disconnected {
        /// Who.
        client_id: String,
    },
}

struct Session {
    conn: u64,
    filters: Vec<String>,
    outbox: mpsc::Sender<Outgoing>,
}

enum Outgoing {
    Publish(Publish),
    Close,
}

struct Shared {
    config: Config,
    policy: Arc<dyn Policy>,
    sessions: Mutex<HashMap<String, Session>>,
    events: mpsc::Sender<Inbound>,
    next_conn: AtomicU64,
    /// Permits for connections that have not logged in yet.
    logging_in: Arc<tokio::sync::Semaphore>,
}

/// The local side's handle: publish to clients, disconnect them.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// A running server.
pub struct Server {
    /// Publish and disconnect.
    pub handle: Handle,
    /// Client events, in order per client.
    pub events: mpsc::Receiver<Inbound>,
    /// The bound address.
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let sessions = self
            .handle
            .shared
            .sessions
            .lock()
            .map(|mut s| s.drain().collect::<Vec<_>>())
            .unwrap_or_default();
        for (_, session) in sessions {
            let _ = session.outbox.try_send(Outgoing::Close);
        }
    }
}

impl Server {
    /// Binds and starts serving.
    pub async fn start(config: Config, policy: Arc<dyn Policy>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let config_max_unauthenticated = config.max_unauthenticated;
        let local_addr = listener.local_addr()?;
        let (events_tx, events) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            config,
            policy,
            sessions: Mutex::new(HashMap::new()),
            events: events_tx,
            next_conn: AtomicU64::new(1),
            logging_in: Arc::new(tokio::sync::Semaphore::new(config_max_unauthenticated)),
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let shared = accept_shared.clone();
                let Ok(permit) = shared.logging_in.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "too many connections that have not logged in; closed");
                    drop(stream);
                    continue;
                };
                tokio::spawn(async move {
                    if let Err(e) = serve_tcp(shared, stream, permit).await {
                        tracing::info!(%peer, reason = %e, "MQTT connection closed");
                    }
                });
            }
        });
        Ok(Server {
            handle: Handle { shared },
            events,
            local_addr,
            task,
        })
    }
}

impl Handle {
    /// Sends `payload` on `topic` to every client subscribed to it; returns
    /// how many it was queued for.
    pub fn publish(&self, topic: &str, payload: Bytes) -> usize {
        let Ok(sessions) = self.shared.sessions.lock() else {
            return 0;
        };
        let mut sent = 0;
        for (client_id, session) in sessions.iter() {
            if !session.filters.iter().any(|f| mqttbytes::matches(topic, f)) {
                continue;
            }
            let publish = Publish::from_bytes(topic, QoS::AtMostOnce, payload.clone());
            match session.outbox.try_send(Outgoing::Publish(publish)) {
                Ok(()) => sent += 1,
                Err(_) => {
                    tracing::warn!(%client_id, "client too slow; disconnecting it");
                    let _ = session.outbox.try_send(Outgoing::Close);
                }
            }
        }
        sent
    }

    /// Disconnects `client_id` if it is connected.
    pub fn disconnect(&self, client_id: &str) {
        if let Ok(sessions) = self.shared.sessions.lock() {
            if let Some(session) = sessions.get(client_id) {
                let _ = session.outbox.try_send(Outgoing::Close);
            }
        }
    }

    /// The clients connected now.
    pub fn clients(&self) -> Vec<String> {
        self.shared
            .sessions
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] mqttbytes::Error),
    #[error("{0}")]
    Violation(String),
}

async fn serve_tcp(
    shared: Arc<Shared>,
    stream: TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    match shared.config.tls.clone() {
        Some(acceptor) => {
            let timeout = shared.config.connect_timeout;
            let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
                .await
                .map_err(|_| ConnError::Violation("TLS handshake timed out".into()))??;
            serve(shared, tls, permit).await
        }
        None => serve(shared, stream, permit).await,
    }
}

/// Removes the session (if it is still this connection's) when the
/// connection ends, however it ends: the guard for a task that is cancelled.
/// A connection that ends by itself is unregistered by [`unregister`], which
/// also tells the local side, waiting for room in the event queue rather
/// than dropping the event (a lost `Disconnected` would leave the
/// application believing a gone client is there).
struct Registered {
    shared: Arc<Shared>,
    client_id: String,
    conn: u64,
}

impl Registered {
    /// Whether this connection's session was still registered; removes it.
    fn remove(&self) -> bool {
        self.shared
            .sessions
            .lock()
            .map(|mut sessions| {
                if sessions.get(&self.client_id).map(|s| s.conn) == Some(self.conn) {
                    sessions.remove(&self.client_id);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.remove();
    }
}

async fn unregister(registered: Registered) {
    if registered.remove() {
        let _ = registered
            .shared
            .events
            .send(Inbound::Disconnected {
                client_id: registered.client_id.clone(),
            })
            .await;
    }
}

async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, ConnError> {
    loop {
        match Packet::read(buf, max) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ConnError::Violation(
                "connection closed by the client".into(),
            ));
        }
    }
}

async fn write_packet<S: AsyncWrite + Unpin>(
    stream: &mut S,
    packet: Packet,
    max: usize,
) -> Result<(), ConnError> {
    let mut out = BytesMut::new();
    packet.write(&mut out, max)?;
    stream.write_all(&out).await?;
    Ok(())
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut stream: S,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), ConnError> {
    let max = shared.config.max_packet;
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(
        shared.config.connect_timeout,
        read_packet(&mut stream, &mut buf, max.min(MAX_CONNECT)),
    )
    .await
    .map_err(|_| ConnError::Violation("no CONNECT in time".into()))??;
    let Packet::Connect(connect) = first else {
        return Err(ConnError::Violation("first packet is not CONNECT".into()));
    };
    let client_id = connect.client_id.clone();
    let username = connect.login.as_ref().map(|l| l.username.clone());
    if connect.protocol != mqttbytes::Protocol::V4 {
        let refused = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
        write_packet(&mut stream, Packet::ConnAck(refused), max).await?;
        return Err(ConnError::Violation(
            "only MQTT 3.1.1 is spoken here".into(),
        ));
    }
    let refusal = if client_id.is_empty() {
        Some(Refusal {
            bad_credentials: false,
            reason: "an empty client id is not accepted".into(),
        })
    } else {
        shared
            .policy
            .login(
                &client_id,
                username.as_deref(),
                connect.login.as_ref().map(|l| l.password.as_str()),
            )
            .err()
    };
    if let Some(refusal) = refusal {
        let code = if refusal.bad_credentials {
            ConnectReturnCode::BadUserNamePassword
        } else {
            ConnectReturnCode::NotAuthorized
        };
        write_packet(&mut stream, Packet::ConnAck(ConnAck::new(code, false)), max).await?;
        return Err(ConnError::Violation(format!(
            "login refused for {client_id:?}: {}",
            refusal.reason
        )));
    }

    let (outbox, outgoing) = mpsc::channel(shared.config.client_queue);
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    {
        let mut sessions = shared
            .sessions
            .lock()
            .map_err(|_| ConnError::Violation("server state poisoned".into()))?;
        if let Some(old) = sessions.insert(
            client_id.clone(),
            Session {
                conn,
                filters: Vec::new(),
                outbox,
            },
        ) {
            // MQTT: a new connection with the same id takes over.
            let _ = old.outbox.try_send(Outgoing::Close);
        }
    }
    drop(permit);
    let registered = Registered {
        shared: shared.clone(),
        client_id: client_id.clone(),
        conn,
    };
    let result = session(
        &shared,
        (&client_id, username),
        connect.keep_alive,
        stream,
        buf,
        outgoing,
    )
    .await;
    unregister(registered).await;
    result
}

/// A logged-in client's connection, until it ends.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    (client_id, username): (&str, Option<String>),
    keep_alive: u16,
    mut stream: S,
    mut buf: BytesMut,
    mut outgoing: mpsc::Receiver<Outgoing>,
) -> Result<(), ConnError> {
    let max = shared.config.max_packet;
    let client_id = client_id.to_string();
    write_packet(
        &mut stream,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
        max,
    )
    .await?;
    tracing::info!(%client_id, "MQTT client connected");
    let _ = shared
        .events
        .send(Inbound::Connected {
            client_id: client_id.clone(),
            username,
        })
        .await;

    // MQTT 3.1.1 §3.1.2.10: one and a half keep-alive periods without a
    // packet *from the client*; what the server sends does not count.
    let idle = match keep_alive {
        0 => Duration::from_secs(24 * 3600),
        secs => Duration::from_millis(u64::from(secs) * 1500),
    };
    let mut heard = tokio::time::Instant::now();
    let (mut reader, mut writer) = tokio::io::split(stream);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(heard + idle) => {
                return Err(ConnError::Violation("keep-alive expired".into()));
            }
            packet = read_packet(&mut reader, &mut buf, max) => {
                let packet = packet?;
                heard = tokio::time::Instant::now();
                match packet {
                    Packet::Publish(publish) => {
                        if !mqttbytes::valid_topic(&publish.topic)
                            || !shared.policy.may_publish(&client_id, &publish.topic)
                        {
                            return Err(ConnError::Violation(format!(
                                "{client_id} may not publish on {:?}", publish.topic
                            )));
                        }
                        if publish.qos == QoS::ExactlyOnce {
                            return Err(ConnError::Violation("QoS 2 is not supported".into()));
                        }
                        shared
                            .events
                            .send(Inbound::Published {
                                client_id: client_id.clone(),
                                topic: publish.topic.clone(),
                                payload: publish.payload.clone(),
                            })
                            .await
                            .map_err(|_| ConnError::Violation("server stopped".into()))?;
                        if publish.qos == QoS::AtLeastOnce {
                            write_packet(&mut writer, Packet::PubAck(PubAck::new(publish.pkid)), max).await?;
                        }
                    }
                    Packet::Subscribe(subscribe) => {
                        let mut codes = Vec::with_capacity(subscribe.filters.len());
                        let mut granted = Vec::new();
                        for filter in &subscribe.filters {
                            if mqttbytes::valid_filter(&filter.path)
                                && shared.policy.may_subscribe(&client_id, &filter.path)
                            {
                                codes.push(SubscribeReasonCode::Success(QoS::AtMostOnce));
                                granted.push(filter.path.clone());
                            } else {
                                tracing::warn!(%client_id, filter = %filter.path, "subscription refused");
                                codes.push(SubscribeReasonCode::Failure);
                            }
                        }
                        if let Ok(mut sessions) = shared.sessions.lock() {
                            if let Some(session) = sessions.get_mut(&client_id) {
                                for filter in granted {
                                    if !session.filters.contains(&filter) {
                                        session.filters.push(filter);
                                    }
                                }
                            }
                        }
                        write_packet(&mut writer, Packet::SubAck(SubAck::new(subscribe.pkid, codes)), max).await?;
                    }
                    Packet::Unsubscribe(unsubscribe) => {
                        if let Ok(mut sessions) = shared.sessions.lock() {
                            if let Some(session) = sessions.get_mut(&client_id) {
                                session.filters.retain(|f| !unsubscribe.topics.contains(f));
                            }
                        }
                        write_packet(&mut writer, Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)), max).await?;
                    }
                    Packet::PingReq => write_packet(&mut writer, Packet::PingResp, max).await?,
                    Packet::Disconnect => return Ok(()),
                    Packet::PubAck(_) => {}
                    Packet::Connect(_) => {
                        return Err(ConnError::Violation("a second CONNECT".into()));
                    }
                    other => {
                        return Err(ConnError::Violation(format!("unexpected packet {other:?}")));
                    }
                }
            }
            out = outgoing.recv() => match out {
                Some(Outgoing::Publish(publish)) => {
                    write_packet(&mut writer, Packet::Publish(publish), max).await?;
                }
                Some(Outgoing::Close) | None => {
                    return Err(ConnError::Violation("disconnected by the server".into()));
                }
            },
        }
    }
}
