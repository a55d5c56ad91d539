//! The broker's MQTT side, embedded or external, as one stream of
//! [`LinkEvent`]s and one `publish`.
//!
//! Both modes give the scheduler the same guarantees:
//! - a signer is announced ([`LinkEvent::Hello`]) only after its node key
//!   proved itself with a fresh login token and matched the pinned owner;
//! - a message is attributed to the cid it came from, and a signer can only
//!   speak on its own topics.
//!
//! **Embedded** (default): [`mqtt_server`] with [`SignerPolicy`]: the token
//! is the CONNECT password (username = node id, client id = cid, as
//! sphinx-key devices do), and each connection may publish only on its own
//! signer-side topics and subscribe only to its own broker-side ones.
//!
//! **External** (e.g. Mosquitto): the MQTT server authenticates each client
//! with its own credentials and enforces the ACL file (docs/sphinx.md gives
//! it); the broker additionally requires the token as the payload of
//! `{cid}/hello`, so an MQTT account alone does not make a signer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mqtt_server::{Inbound, Policy, Refusal};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use secp256k1::PublicKey;
use sphinx_wire::login;
use sphinx_wire::topics::{self, Suffix};
use tokio::sync::mpsc;

use crate::owner::Owner;

/// What the signers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A signer (re)started its session and is authenticated.
    Hello {
        /// Its id.
        cid: String,
        /// The largest MQTT packet it takes (its `hello` says).
        max_packet: usize,
    },
    /// A signer's connection ended.
    Gone {
        /// Its id.
        cid: String,
    },
    /// A signer published.
    Message {
        /// Its id.
        cid: String,
        /// The topic suffix.
        suffix: Suffix,
        /// The payload.
        payload: Bytes,
    },
}

/// Sends to signers.
#[derive(Clone)]
pub enum Link {
    /// The embedded server.
    Embedded(mqtt_server::Handle),
    /// A connection to an external server.
    External(AsyncClient),
}

impl Link {
    /// Publishes `payload` on `{cid}/{suffix}`.
    pub async fn publish(&self, cid: &str, suffix: Suffix, payload: Vec<u8>) {
        let topic = topics::topic(cid, suffix);
        match self {
            Link::Embedded(handle) => {
                if handle.publish(&topic, Bytes::from(payload)) == 0 {
                    tracing::warn!(%topic, "no subscriber for a message to a signer");
                }
            }
            Link::External(client) => {
                if let Err(e) = client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                {
                    tracing::warn!(error = %e, "cannot publish to the MQTT server");
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Who may become a signer: a fresh token, made for the connection's own
/// client id, by the owner's node key, never seen before. Both MQTT modes
/// admit signers through it.
pub struct Gate {
    /// The owner.
    pub owner: Arc<Owner>,
    /// Window and accepted token forms.
    pub rules: login::Rules,
    seen: Mutex<login::ReplayGuard>,
}

impl Gate {
    /// A gate for `owner` under `rules`.
    pub fn new(owner: Arc<Owner>, rules: login::Rules) -> Gate {
        Gate {
            owner,
            rules,
            seen: Mutex::new(login::ReplayGuard::default()),
        }
    }

    /// Admits the token `password` for `client_id`; with a `username`
    /// (an MQTT login) it must name the same key.
    pub fn admit(
        &self,
        username: Option<&str>,
        password: &str,
        client_id: &str,
        now_ms: u64,
    ) -> Result<PublicKey, GateError> {
        let login = match username {
            Some(user) => login::check(user, password, client_id, now_ms, self.rules)?,
            None => login::check_token(login::recover(password, client_id)?, now_ms, self.rules)?,
        };
        self.owner.admit(login.key)?;
        self.seen
            .lock()
            .map_err(|_| GateError::Login(login::LoginError::Malformed("poisoned")))?
            .admit(&login, now_ms, self.rules.window_secs)?;
        Ok(login.key)
    }
}

/// Why a signer was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The token.
    #[error(transparent)]
    Login(#[from] login::LoginError),
    /// Not the owner.
    #[error(transparent)]
    Owner(#[from] crate::owner::OwnerError),
}

/// Login and topic rules for the embedded server.
pub struct SignerPolicy {
    /// Who may log in.
    pub gate: Arc<Gate>,
}

impl Policy for SignerPolicy {
    fn login(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<(), Refusal> {
        let refuse = |bad_credentials, reason: String| {
            crate::metrics::login_refused(bad_credentials);
            Refusal {
                bad_credentials,
                reason,
            }
        };
        // The cid names the topics; it must be one a topic can carry.
        if topics::parse(&topics::topic(client_id, Suffix::Hello)).is_err() {
            return Err(refuse(
                false,
                "client id is not a signer id (32 hex)".into(),
            ));
        }
        let (Some(username), Some(password)) = (username, password) else {
            return Err(refuse(true, "no username and token".into()));
        };
        match self
            .gate
            .admit(Some(username), password, client_id, now_ms())
        {
            Ok(_) => Ok(()),
            Err(e @ GateError::Owner(_)) => Err(refuse(false, e.to_string())),
            Err(e) => Err(refuse(true, e.to_string())),
        }
    }

    fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        matches!(topics::parse(topic), Ok((cid, suffix)) if cid == client_id && !suffix.broker_publishes())
    }

    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool {
        matches!(topics::parse(filter), Ok((cid, suffix)) if cid == client_id && suffix.broker_publishes())
    }
}

/// Starts the embedded MQTT server.
pub async fn embedded(
    listen: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    policy: SignerPolicy,
    max_packet: usize,
) -> std::io::Result<(Link, mpsc::Receiver<LinkEvent>, SocketAddr)> {
    let mut config = mqtt_server::Config::new(listen);
    config.max_packet = max_packet;
    config.tls = tls;
    let mut server = mqtt_server::Server::start(config, Arc::new(policy)).await?;
    let addr = server.local_addr;
    let link = Link::Embedded(server.handle.clone());
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(event) = server.events.recv().await {
            let event = match event {
                Inbound::Connected { .. } => continue,
                Inbound::Disconnected { client_id } => LinkEvent::Gone { cid: client_id },
                Inbound::Published {
                    client_id,
                    topic,
                    payload,
                } => match topics::parse(&topic) {
                    Ok((_, Suffix::Hello)) => LinkEvent::Hello {
                        cid: client_id,
                        // The login was checked at CONNECT; here only the limit.
                        max_packet: login::parse_hello(&payload)
                            .map(|(_, limit)| limit)
                            .unwrap_or(login::DEFAULT_MAX_PACKET),
                    },
                    Ok((_, Suffix::Bye)) => LinkEvent::Gone { cid: client_id },
                    Ok((_, suffix)) => LinkEvent::Message {
                        cid: client_id,
                        suffix,
                        payload,
                    },
                    Err(_) => continue,
                },
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
        drop(server);
    });
    Ok((link, rx, addr))
}

/// A TLS acceptor for the embedded server from PEM files (ring, TLS 1.2
/// and 1.3, no client certificates: signers authenticate by node key).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("TLS certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Settings for an external MQTT server.
#[derive(Debug, Clone)]
pub struct External {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The broker's own MQTT account.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// The signer-side suffixes the broker listens to on an external server.
const LISTEN: [Suffix; 10] = [
    Suffix::Hello,
    Suffix::Error,
    Suffix::Bye,
    Suffix::VlsRes,
    Suffix::LssRes,
    Suffix::LssConflictRes,
    Suffix::Init1Res,
    Suffix::Init2Res,
    Suffix::Init3Res,
    Suffix::ControlRes,
];

/// Connects to an external MQTT server.
pub fn external(
    config: External,
    gate: Arc<Gate>,
    max_packet: usize,
) -> (Link, mpsc::Receiver<LinkEvent>) {
    let client_id = format!("lightkeeper-broker-{}", std::process::id());
    let mut options = MqttOptions::new(client_id, config.host, config.port);
    options.set_credentials(config.username, config.password);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_max_packet_size(max_packet, max_packet);
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 256);
    let (tx, rx) = mpsc::channel(1024);
    let subscriber = client.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let event = match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!("connected to the external MQTT server");
                    let filters = LISTEN.iter().map(|s| {
                        rumqttc::SubscribeFilter::new(format!("+/{}", s.as_str()), QoS::AtLeastOnce)
                    });
                    if subscriber.try_subscribe_many(filters).is_err() {
                        tracing::error!("cannot subscribe on the external MQTT server");
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Ok((cid, suffix)) = topics::parse(&publish.topic) else {
                        continue;
                    };
                    let cid = cid.to_string();
                    match suffix {
                        Suffix::Hello => {
                            let admitted = login::parse_hello(&publish.payload)
                                .map_err(GateError::from)
                                .and_then(|(token, limit)| {
                                    gate.admit(None, token, &cid, now_ms()).map(|_| limit)
                                });
                            match admitted {
                                Ok(max_packet) => LinkEvent::Hello { cid, max_packet },
                                Err(e) => {
                                    tracing::warn!(%cid, error = %e, "hello refused");
                                    continue;
                                }
                            }
                        }
                        Suffix::Bye => LinkEvent::Gone { cid },
                        suffix if !suffix.broker_publishes() => LinkEvent::Message {
                            cid,
                            suffix,
                            payload: publish.payload,
                        },
                        _ => continue,
                    }
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "external MQTT server unreachable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    (Link::External(client), rx)
}
