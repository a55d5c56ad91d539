//! Starting a keyserver from its data directory (keyserver.md §2.3, §3.8,
//! §8): the server key (`server_sigkey`, tlog.md §3.4 key-file format,
//! named after the origin, 0600), the redb file shared by the log and the
//! keyserver tables, the genesis entry on first start, and one listener
//! for JSON-RPC (`POST /`) and the log's tiles (under the origin's path).
//!
//! On first start the genesis UID gets a fresh SIGESCROW whose private key
//! is printed once for paper and never stored (§3.8).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ks_core::author::{self, UidKeys};
use ks_core::entry::Entry;
use ks_core::rules::Kind;
use rand::RngCore;
use tlog_core::note::{KeyType, SignerKey};
use tlog_store::LogStore;

use crate::server::{Config, Keyserver};
use crate::store::{KsStore, SequencerConfig};

/// How to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keys and the database.
    pub data_dir: PathBuf,
    /// The primary (and only, in v1 here) domain.
    pub domain: String,
    /// The public listener (JSON-RPC and the log).
    pub listen: SocketAddr,
    /// Checkpoint interval.
    pub checkpoint_interval: Duration,
    /// Rate limits (§4.6).
    pub limits: crate::limits::LimitsConfig,
    /// TLS for the listener (`--tls-cert`...); plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Paid calls need payment tokens (§5); false: disabled mode.
    pub tokens_required: bool,
    /// Serve LookupUID (§4.6).
    pub lookup: bool,
    /// The admin listener (§2.3), with the same TLS as the public one;
    /// `None`: none.
    pub admin_listen: Option<SocketAddr>,
    /// Witnesses to submit checkpoints to (`<vkey>@<url prefix>`, tlog.md
    /// §5.2): a checkpoint is published once `publish_quorum` of them
    /// (default: all) cosigned it.
    pub submit_to: Vec<String>,
    /// See `submit_to`.
    pub publish_quorum: Option<usize>,
}

/// Why the keyserver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The store could not be opened or is inconsistent.
    #[error("storage: {0}")]
    Storage(String),
}

/// A running keyserver.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// `keyserver@<domain>:<hex H_0>`: what clients pin.
    pub pin: String,
    /// The log's verifier key (the genesis key), for witnesses'
    /// `--witness-for`.
    pub vkey: String,
    /// The escrow key of the genesis UID, on first start only (print it
    /// for paper; it is not kept).
    pub escrow: Option<SigningKey>,
    /// The server.
    pub keyserver: Arc<Keyserver>,
    /// The token issuer's key (tokens required only).
    pub issuer: Option<Arc<ks_core::token::IssuerSecret>>,
    /// Ends when the listener fails.
    pub serving: tokio::task::JoinHandle<()>,
    /// The admin listener's bound address.
    pub admin_addr: Option<SocketAddr>,
}

/// The log origin for a domain: `<domain>/kt/v1`.
pub fn origin(domain: &str) -> String {
    format!("{domain}/kt/v1")
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The log's verifier key for `domain`'s keyserver in `dir`, creating the
/// server key on first use (the genesis follows on first start).
pub fn log_key(dir: &Path, domain: &str) -> Result<String, StartError> {
    Ok(load_or_create_key(dir, &origin(domain))?
        .verifier()
        .to_string())
}

fn load_or_create_key(dir: &Path, origin: &str) -> Result<SignerKey, StartError> {
    tlog_node::keyfile::load_or_create(&dir.join("server_sigkey"), origin, KeyType::Ed25519)
        .map_err(|e| StartError::Config(e.to_string()))
}

/// Opens (or initialises) the keyserver in `opts.data_dir` and serves it.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    let domain = ks_core::identity::map(&format!("keyserver@{}", opts.domain))
        .map_err(|e| StartError::Config(format!("domain {}: {e}", opts.domain)))
        .map(|m| ks_core::identity::domain(&m).to_string())?;
    if domain != opts.domain {
        return Err(StartError::Config(format!(
            "domain {} is not in canonical form ({domain})",
            opts.domain
        )));
    }
    let origin = origin(&domain);
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| StartError::Io(format!("{}: {e}", opts.data_dir.display())))?;
    let key = load_or_create_key(&opts.data_dir, &origin)?;
    let signer = key.signing_key().clone();
    let vkey = key.verifier().to_string();
    let _ = durable_file::replace(
        &opts.data_dir.join("vkey"),
        format!("{vkey}\n").as_bytes(),
        0o644,
    );
    let (witnesses, quorum) =
        tlog_node::submit::witness_targets(&opts.submit_to, opts.publish_quorum)
            .map_err(|e| StartError::Config(e.to_string()))?;
    let witness_keys: Vec<String> = witnesses.iter().map(|w| w.key.to_string()).collect();
    let publish = tlog_node::submit::Publish {
        witnesses,
        quorum,
        ..Default::default()
    };
    let path = opts.data_dir.join("keyserver.redb");
    let tlog_node::shared::SharedRedbLog {
        db,
        store,
        node,
        state,
    } = tlog_node::shared::open(&path, key, opts.checkpoint_interval, publish)
        .await
        .map_err(StartError::Storage)?;
    let log = node.log_id();
    let h_last = if state.size == 0 {
        ks_core::entry::GENESIS_PREV
    } else {
        let leaf = store
            .entries(log, state.size - 1, state.size)
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let entry = leaf
            .first()
            .and_then(|l| Entry::from_leaf(l).ok())
            .ok_or_else(|| {
                StartError::Storage("the last log entry is not a keyserver entry".into())
            })?;
        *entry.hash()
    };
    let ks_store = KsStore::start(
        db,
        SequencerConfig {
            origin: origin.clone(),
            log,
            signer: signer.clone(),
            policy: ks_core::rules::Policy::for_domains(vec![domain.clone()]),
        },
        state.size,
        h_last,
    )
    .map_err(|e| StartError::Storage(e.to_string()))?;
    let (issuer, tokens) = if opts.tokens_required {
        let (secret, policy) =
            crate::tokens::policy(&opts.data_dir, &domain, &origin, crate::server::now())
                .map_err(|e| StartError::Config(e.to_string()))?;
        let accepted: Vec<[u8; 32]> = policy.accepted.iter().map(|k| *k.key_id()).collect();
        let pruned = ks_store
            .prune_spent(&accepted)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        if pruned > 0 {
            tracing::info!(pruned, "forgot spent tokens of keys no longer accepted");
        }
        (Some(Arc::new(secret)), Some(Arc::new(policy)))
    } else {
        (None, None)
    };
    let config = Config {
        origin: origin.clone(),
        domains: vec![domain.clone()],
        public_url: format!("http://{}/", opts.listen),
        tokens,
        lookup: opts.lookup,
        witnesses: witness_keys,
    };
    let keyserver = Arc::new(Keyserver::new(
        config,
        ks_store,
        node.clone(),
        signer.clone(),
        0,
        opts.limits,
    ));
    let mut escrow = None;
    if state.size == 0 {
        let escrow_key = SigningKey::from_bytes(&random::<32>());
        let static_key = x25519_public(&random::<32>());
        let keys = UidKeys {
            sig_key: &signer,
            escrow: Some(&escrow_key),
            static_key,
        };
        let identity = format!("keyserver@{domain}");
        let content = author::content(&identity, &keys, 0, None, "strict", crate::server::now());
        let msg = author::sign_create(content, &keys);
        keyserver
            .submit_uid(Kind::Create, msg, None, true)
            .await
            .map_err(|e| StartError::Storage(format!("genesis: {e}")))?;
        node.checkpoint_once().await;
        escrow = Some(escrow_key);
    }
    let genesis = store
        .entries(log, 0, 1)
        .await
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let h0 = genesis
        .first()
        .and_then(|l| Entry::from_leaf(l).ok())
        .ok_or_else(|| StartError::Storage("no genesis entry".into()))?;
    let pin = format!("keyserver@{domain}:{}", hex::encode(h0.hash()));
    let _ = durable_file::replace(
        &opts.data_dir.join("pin"),
        format!("{pin}\n").as_bytes(),
        0o644,
    );
    let path_prefix = origin
        .split_once('/')
        .map_or(String::new(), |(_, p)| format!("/{p}"));
    let app =
        crate::rpc::router(keyserver.clone()).nest(&path_prefix, node.clone().router(None, 200));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| StartError::Io(format!("listen on {}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let admin_addr = match opts.admin_listen {
        None => None,
        Some(at) => {
            let token = crate::admin::AdminToken::load_or_create(&opts.data_dir)
                .map_err(StartError::Config)?;
            let admin = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| StartError::Io(format!("admin listener on {at}: {e}")))?;
            let bound = admin
                .local_addr()
                .map_err(|e| StartError::Io(e.to_string()))?;
            let app = crate::admin::router(token, issuer.clone(), keyserver.clone());
            let tls = opts.tls.clone();
            tokio::spawn(async move {
                if let Err(e) = http_tls::serve(admin, app, tls).await {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
            Some(bound)
        }
    };
    let tls = opts.tls.clone();
    let serving = tokio::spawn(async move {
        let app = app.layer(metrics_endpoint::http_layer());
        if let Err(e) = http_tls::serve(listener, app, tls).await {
            tracing::error!(error = %e, "keyserver listener failed");
        }
    });
    Ok(Running {
        addr,
        pin,
        vkey,
        escrow,
        keyserver,
        issuer,
        serving,
        admin_addr,
    })
}

fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}
