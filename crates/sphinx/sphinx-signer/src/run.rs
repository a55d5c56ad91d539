//! The signer's MQTT side: connect, log in, subscribe to its own topics,
//! announce itself, and feed requests to the [`Core`] on its own thread.
//!
//! Reconnects never restart the process (the reference reboots, `W7`): the
//! event loop reconnects with a fresh login token (tokens expire by design),
//! re-subscribes and says `hello` again; the broker answers with `HsmdInit`
//! and resends whatever it was waiting for, which the core answers from its
//! cache if it had already signed it.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use secp256k1::{PublicKey, Secp256k1, SecretKey};
use sphinx_wire::topics::{self, Suffix};
use vls_protocol_signer::lightning_signer::bitcoin::Network;
use vls_protocol_signer::lightning_signer::signer::derive::{key_derive, KeyDerivationStyle};

use crate::core::{Core, CoreError, Mode, Out};

/// How the signer reaches and logs in to the broker.
#[derive(Debug, Clone)]
pub struct Config {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// CA certificate (PEM) for `mqtts://`.
    pub ca: Option<PathBuf>,
    /// Static credentials (an external broker such as Mosquitto); without
    /// them the signer logs in with its node key (username = node id,
    /// password = a fresh signed timestamp).
    pub credentials: Option<(String, String)>,
    /// The chain.
    pub network: Network,
    /// Where the seed, id and store live.
    pub data_dir: PathBuf,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Where state is made durable: LSS (through the broker) or only here.
    pub mode: Mode,
    /// Accept control messages in sphinx-key's signature form.
    pub sphinx_key_control: bool,
    /// Largest MQTT packet either way, bytes; announced in `hello`. The whole
    /// LSS state arrives in one packet when the signer connects.
    pub max_packet: usize,
    /// Accept an LSS server without framed MACs.
    pub allow_unframed_macs: bool,
    /// The smallest write quorum accepted from the broker.
    pub min_write_quorum: usize,
}

/// Why the signer cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file problem.
    #[error(transparent)]
    Seed(#[from] crate::seed::SeedError),
    /// The store or node cannot be opened.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
}

/// The node key, derived from the seed as VLS does (native derivation).
pub fn node_key(network: Network, seed: &[u8; 32]) -> (PublicKey, SecretKey) {
    key_derive(KeyDerivationStyle::Native, network).node_keys(seed, &Secp256k1::new())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_url(url: &str) -> Result<(bool, String, u16), RunError> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(RunError::Config(format!(
            "MQTT URL {url:?} must start with mqtt:// or mqtts://"
        )));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|_| RunError::Config(format!("bad port in MQTT URL {url:?}")))?,
        ),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(RunError::Config(format!("no host in MQTT URL {url:?}")));
    }
    Ok((tls, host.to_string(), port))
}

struct Job {
    suffix: Suffix,
    payload: Vec<u8>,
}

/// Runs the signer until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    // rustls with ring, whatever else the build enabled (TLS to the broker).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = crate::seed::load(&config.data_dir.join("seed"))?;
    let id = crate::seed::signer_id(&config.data_dir.join("signer-id"))?;
    let cid = hex::encode(id);
    let (node_id, node_secret) = node_key(config.network, &seed);
    let (tls, host, port) = parse_url(&config.url)?;
    let core = Core::open(
        config.network,
        seed,
        &config.data_dir.join("vls"),
        config.mode,
    )?
    .accept_sphinx_key_control(config.sphinx_key_control)
    .allow_unframed_macs(config.allow_unframed_macs)
    .min_write_quorum(config.min_write_quorum)
    .checkpoint_dir(&config.data_dir.join("lss"));
    tracing::info!(%cid, node_id = %node_id, network = %config.network, "signer ready");

    let mut options = MqttOptions::new(cid.clone(), host, port);
    options.set_keep_alive(config.keep_alive);
    options.set_max_packet_size(config.max_packet, config.max_packet);
    options.set_clean_session(true);
    options.set_last_will(LastWill::new(
        topics::topic(&cid, Suffix::Bye),
        Vec::new(),
        QoS::AtMostOnce,
        false,
    ));
    if tls {
        let ca = match &config.ca {
            Some(path) => std::fs::read(path)
                .map_err(|e| RunError::Config(format!("{}: {e}", path.display())))?,
            None => {
                return Err(RunError::Config(
                    "mqtts:// needs the broker's CA certificate (--mqtt-ca)".into(),
                ))
            }
        };
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
    }
    let login = |options: &mut MqttOptions| match &config.credentials {
        Some((user, pass)) => {
            options.set_credentials(user.clone(), pass.clone());
        }
        None => {
            options.set_credentials(
                node_id.to_string(),
                sphinx_wire::login::password(&node_secret, &cid, now_ms()),
            );
        }
    };
    login(&mut options);

    let (client, mut events) = AsyncClient::new(options, 64);
    let (jobs, job_rx) = std_mpsc::channel::<Job>();
    let worker = spawn_core(
        core,
        job_rx,
        client.clone(),
        (cid.clone(), node_secret),
        config.max_packet,
    );

    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    // `hello` is repeated until the broker answers (it may subscribe after
    // us on an external server), and after a long silence (a restarted
    // broker behind an external server has forgotten us).
    let mut connected = false;
    let mut heard_since_hello = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut last_hello = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let hello = |client: &AsyncClient| {
        let token = sphinx_wire::login::password(&node_secret, &cid, now_ms());
        client
            .try_publish(
                topics::topic(&cid, Suffix::Hello),
                QoS::AtLeastOnce,
                false,
                sphinx_wire::login::hello_payload(&token, config.max_packet),
            )
            .is_ok()
    };
    loop {
        let event = tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                let quiet = last_heard.elapsed();
                let due = (!heard_since_hello && last_hello.elapsed() >= HELLO_RETRY)
                    || (quiet >= BROKER_SILENCE && last_hello.elapsed() >= BROKER_SILENCE);
                if connected && due {
                    tracing::debug!("no answer from the broker; saying hello again");
                    hello(&client);
                    heard_since_hello = false;
                    last_hello = tokio::time::Instant::now();
                }
                continue;
            }
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                tracing::info!("connected to the broker");
                let filters = SUBSCRIPTIONS.iter().map(|s| {
                    rumqttc::SubscribeFilter::new(topics::topic(&cid, *s), QoS::AtLeastOnce)
                });
                if client.try_subscribe_many(filters).is_err() || !hello(&client) {
                    tracing::warn!("cannot queue the subscriptions; reconnecting");
                    let _ = client.try_disconnect();
                }
                connected = true;
                heard_since_hello = false;
                last_hello = tokio::time::Instant::now();
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                heard_since_hello = true;
                last_heard = tokio::time::Instant::now();
                let job = match topics::parse(&publish.topic) {
                    Ok((topic_cid, suffix)) if topic_cid == cid => Job {
                        suffix,
                        payload: publish.payload.to_vec(),
                    },
                    _ => {
                        tracing::warn!(topic = %publish.topic, "message on a foreign topic ignored");
                        continue;
                    }
                };
                if jobs.send(job).is_err() {
                    tracing::error!("the signing thread is gone");
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                connected = false;
                tracing::warn!(error = %e, retry_in = ?backoff, "broker connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                // A fresh token for the next CONNECT: old ones expire.
                login(&mut events.mqtt_options);
            }
        }
    }
    drop(jobs);
    let _ = client.try_disconnect();
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    Ok(())
}

/// How long to wait for the broker's answer to `hello` before repeating it.
const HELLO_RETRY: Duration = Duration::from_secs(2);
/// How long a silent broker may stay silent before `hello` is repeated.
const BROKER_SILENCE: Duration = Duration::from_secs(60);

/// What the signer subscribes to: every topic only the broker publishes.
const SUBSCRIPTIONS: [Suffix; 8] = [
    Suffix::Vls,
    Suffix::Init1Msg,
    Suffix::Init2Msg,
    Suffix::Init3Msg,
    Suffix::LssMsg,
    Suffix::LssConflict,
    Suffix::Control,
    Suffix::Proxy,
];

fn spawn_core(
    mut core: Core,
    jobs: std_mpsc::Receiver<Job>,
    client: AsyncClient,
    (cid, node_secret): (String, SecretKey),
    max_packet: usize,
) -> std::thread::JoinHandle<()> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("vls".into())
        .spawn(move || {
            let publish = |suffix: Suffix, payload: Vec<u8>| {
                let topic = topics::topic(&cid, suffix);
                if let Err(e) =
                    runtime.block_on(client.publish(topic, QoS::AtLeastOnce, false, payload))
                {
                    tracing::warn!(error = %e, "cannot publish");
                }
            };
            while let Ok(Job { suffix, payload }) = jobs.recv() {
                for out in core.dispatch(suffix, &payload, rand::random()) {
                    match out {
                        Out::Publish(suffix, payload) => publish(suffix, payload),
                        Out::Resync => {
                            let token = sphinx_wire::login::password(&node_secret, &cid, now_ms());
                            publish(
                                Suffix::Hello,
                                sphinx_wire::login::hello_payload(&token, max_packet),
                            );
                        }
                    }
                }
            }
        })
        .expect("spawn the signing thread")
}
