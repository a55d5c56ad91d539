//! Starting an SE from its data directory: the log key (`log-key`, tlog.md
//! §3.4, named after the origin, 0600; `se_id` is the SHA-256 of its
//! verifier key, §5.5, so the key is never rotated), the KEK, the redb file
//! shared by the log and the `statechain` table, the head check of §5.4
//! rule 5, and the two listeners (HTTP and LKTL/1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use statechain_core::se::Policy;
use tlog_core::note::KeyType;
use tlog_store::LogStore;

use crate::seal::Kek;
use crate::server::{App, TokenBackend};
use crate::store::{SeStore, WriterConfig};

/// How to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keys and the database.
    pub data_dir: PathBuf,
    /// HTTP (API and the log's tiles).
    pub listen: SocketAddr,
    /// LKTL/1 sync.
    pub sync_listen: SocketAddr,
    /// The log's origin.
    pub origin: String,
    /// `regtest`, `signet`, `testnet4` or `bitcoin`.
    pub network: String,
    /// Coin policy.
    pub policy: Policy,
    /// Checkpoint interval.
    pub checkpoint_interval: Duration,
    /// Token backend.
    pub tokens: TokenBackend,
    /// Token fee.
    pub fee_sat: u64,
    /// This node's name on the sync port.
    pub node_name: String,
    /// Re-seal live secrets under a new KEK this often (`None`: never).
    pub kek_rotate_interval: Option<Duration>,
    /// TLS for the HTTP listener (`--tls-cert`...); plain HTTP without.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Sync addresses to dial besides the members'.
    pub peers: Vec<String>,
    /// The federation's members (statechain.md §6.1).
    pub members: Vec<Member>,
    /// Validating cosignatures needed before a checkpoint is published
    /// (≤ the members; 0: published once signed).
    pub cosign_quorum: usize,
    /// How long an idle log waits before announcing its checkpoint again
    /// for fresh cosignatures (statechain.md §5.5: 60 s, so wallets'
    /// `max_age` of 600 s holds while nothing happens).
    pub republish_interval: Duration,
}

/// A federation member as the SE knows it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its validating cosigner key.
    pub key: tlog_core::note::VerifierKey,
    /// Its sync address.
    pub sync: String,
    /// Its HTTP read API, for wallets to cross-check coins with.
    pub http: Option<String>,
}

/// The C2SP policy file wallets pin (statechain.md §5.5): the log key, the
/// members' validating keys and the quorum, checkpoints at most 600 s old.
pub fn policy_file(vkey: &str, members: &[Member], quorum: usize) -> String {
    let mut text = format!("log {vkey}\n");
    for (i, m) in members.iter().enumerate() {
        text.push_str(&format!("witness m{i} {}\n", m.key));
    }
    if quorum == 0 {
        text.push_str("quorum none\n");
    } else {
        let names: Vec<String> = (0..members.len()).map(|i| format!("m{i}")).collect();
        text.push_str(&format!("group members {quorum} {}\n", names.join(" ")));
        text.push_str("quorum members\n");
    }
    text
}

/// Why the SE cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// A file or socket.
    #[error("{0}")]
    Io(String),
    /// The store could not be opened or is inconsistent.
    #[error("storage: {0}")]
    Storage(String),
}

/// A running SE.
pub struct Running {
    /// The HTTP address.
    pub addr: SocketAddr,
    /// The sync address.
    pub sync_addr: SocketAddr,
    /// `se_id`, hex.
    pub se_id: String,
    /// The log's verifier key.
    pub vkey: String,
    /// Ends when the HTTP listener fails.
    pub serving: tokio::task::JoinHandle<()>,
}

/// The KEK of the epoch the database records, after finishing whatever a
/// crashed rotation left: the previous epoch's key is shredded (the
/// re-sealed rows committed), an unused next one too (they did not).
pub fn open_kek(dir: &std::path::Path, db: &redb::Database) -> Result<Kek, StartError> {
    let epoch = crate::store::kek_epoch(db).map_err(StartError::Storage)?;
    let shred = |e: u32| Kek::shred(dir, e).map_err(|e| StartError::Io(e.to_string()));
    if epoch > 0 {
        shred(epoch - 1)?;
        if !dir.join(format!("kek-{epoch}")).exists() {
            return Err(StartError::Config(format!(
                "kek-{epoch} is missing from {}: the sealed secrets cannot be opened",
                dir.display()
            )));
        }
    }
    shred(epoch + 1)?;
    Kek::load_or_create(dir, epoch).map_err(|e| StartError::Config(e.to_string()))
}

/// `statechaind kek rotate` with the SE stopped: re-seal every live secret
/// under a new KEK in one transaction, compact the database (so old pages
/// holding secrets sealed under the old key are rewritten), then shred the
/// old key. Returns the new epoch.
pub fn rotate_offline(dir: &std::path::Path) -> Result<u32, StartError> {
    let path = dir.join("statechain.redb");
    let mut db = redb::Database::create(&path).map_err(|e| {
        StartError::Storage(format!(
            "{} (is the SE still running?): {e}",
            path.display()
        ))
    })?;
    let old = open_kek(dir, &db)?;
    let txn = db
        .begin_write()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    crate::store::reseal_all(&txn, &old, dir).map_err(|e| StartError::Storage(e.message))?;
    txn.commit()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    db.compact()
        .map_err(|e| StartError::Storage(format!("compaction: {e}")))?;
    Kek::shred(dir, old.epoch()).map_err(|e| StartError::Io(e.to_string()))?;
    Ok(old.epoch() + 1)
}

/// Opens (or initialises) the SE in `opts.data_dir` and serves it.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    if opts.policy.interval == 0 || opts.policy.h_init == 0 {
        return Err(StartError::Config(
            "h_init and interval must be positive".into(),
        ));
    }
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| StartError::Io(format!("{}: {e}", opts.data_dir.display())))?;
    let key = tlog_node::keyfile::load_or_create(
        &opts.data_dir.join("log-key"),
        &opts.origin,
        KeyType::Ed25519,
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let vkey = key.verifier().to_string();
    let se_id = statechain_core::hash::sha256(vkey.as_bytes());
    let path = opts.data_dir.join("statechain.redb");
    let tlog_node::shared::SharedRedbLog {
        db,
        store,
        node,
        state,
    } = tlog_node::shared::open(
        &path,
        key,
        opts.checkpoint_interval,
        tlog_node::submit::Publish {
            cosigners: opts.members.iter().map(|m| m.key.clone()).collect(),
            cosigner_quorum: opts.cosign_quorum.min(opts.members.len()),
            // Cosignatures stay fresh for wallets' max_age (§5.5).
            republish: opts.republish_interval,
            ..tlog_node::submit::Publish::default()
        },
    )
    .await
    .map_err(StartError::Storage)?;
    let log = node.log_id();
    let kek = Arc::new(open_kek(&opts.data_dir, &db)?);
    // §5.4 rule 5: every coin's head is the log entry its row names.
    for (id, index, head) in crate::store::coin_heads(&db).map_err(StartError::Storage)? {
        let name = hex::encode(id);
        let index = index.ok_or_else(|| {
            StartError::Storage(format!("coin {name}: no log index for its head"))
        })?;
        let leaf = store
            .entries(log, index, index + 1)
            .await
            .map_err(|e| StartError::Storage(format!("coin {name}: log entry {index}: {e}")))?
            .pop()
            .ok_or_else(|| {
                StartError::Storage(format!("coin {name}: log entry {index} is missing"))
            })?;
        if statechain_core::hash::leaf_hash(&leaf) != head {
            return Err(StartError::Storage(format!(
                "coin {name}: head does not match log entry {index}"
            )));
        }
    }
    let se_store = SeStore::start(
        db,
        WriterConfig {
            se_id,
            policy: opts.policy.clone(),
            log,
            kek,
            hooks: crate::hooks::Hooks::from_env(),
        },
        state.size,
    )
    .map_err(|e| StartError::Storage(e.message))?;
    let info = json!({
        "protocol": "lk-statechain/1",
        "se_id": hex::encode(se_id),
        "network": opts.network,
        "log": {"origin": opts.origin, "vkey": vkey},
        "lock": {"h_init": opts.policy.h_init, "interval": opts.policy.interval},
        "backup_policy": statechain_core::leaf::POLICY_DECREASING_LOCKTIME,
        "max_signatures": opts.policy.max_signatures,
        "token": {"fee_sat": opts.fee_sat, "backend": match opts.tokens { TokenBackend::Free => "free", TokenBackend::Manual => "manual" }},
        "cosign_quorum": opts.cosign_quorum,
        "members": opts.members.iter().map(|m| json!({
            "name": m.key.name(), "sync": m.sync, "http": m.http,
            "validating_vkey": m.key.to_string(),
        })).collect::<Vec<_>>(),
        "policy_file": policy_file(&vkey, &opts.members, opts.cosign_quorum),
    });
    let app = Arc::new(App {
        se_id,
        store: se_store,
        node: node.clone(),
        info,
        tokens: opts.tokens,
        fee_sat: opts.fee_sat,
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            StartError::Io(format!(
                "{} is not available ({e}); set --listen (STATECHAIND_LISTEN)",
                opts.listen
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let sync = tokio::net::TcpListener::bind(opts.sync_listen)
        .await
        .map_err(|e| {
            StartError::Io(format!(
                "{} is not available ({e}); set --sync-listen (STATECHAIND_SYNC_LISTEN)",
                opts.sync_listen
            ))
        })?;
    let sync_addr = sync
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let verifier = tlog_core::note::VerifierKey::parse(&vkey)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let federation = tlog_node::peer::Peer::new(
        tlog_node::peer::Config {
            name: opts.node_name.clone(),
            peers: opts
                .peers
                .iter()
                .chain(opts.members.iter().map(|m| &m.sync))
                .cloned()
                .collect(),
            limits: tlog_node::peer::Limits::default(),
        },
        vec![(
            node.clone(),
            tlog_node::peer::Follow {
                key: verifier,
                previous: Vec::new(),
                // The members' validating cosignatures, merged into the
                // stored note as they arrive.
                witnesses: opts.members.iter().map(|m| m.key.clone()).collect(),
                cosigner: None,
                validator: None,
                validating: None,
            },
        )],
    );
    tokio::spawn(federation.run(sync));
    if let Some(every) = opts.kek_rotate_interval {
        let (store, dir) = (app.store.clone(), opts.data_dir.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                if store
                    .submit(crate::store::Job::RotateKek {
                        dir: dir.clone(),
                        reply: tx,
                    })
                    .is_err()
                {
                    break;
                }
                match rx.await {
                    Ok(Ok(epoch)) => tracing::info!(epoch, "scheduled KEK rotation done"),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e.message, "scheduled KEK rotation failed; secrets stay under the current key")
                    }
                    Err(_) => break,
                }
            }
        });
    }
    let router = crate::server::router(app);
    let tls = opts.tls.clone();
    let serving = tokio::spawn(async move {
        let app = router.layer(metrics_endpoint::http_layer());
        if let Err(e) = http_tls::serve(listener, app, tls).await {
            tracing::error!(error = %e, "statechaind listener failed");
        }
    });
    Ok(Running {
        addr,
        sync_addr,
        se_id: hex::encode(se_id),
        vkey,
        serving,
    })
}
