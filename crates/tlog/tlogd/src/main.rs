//! `tlogd`: a general-purpose transparency log on the embedded store.
//!
//! `tlogd` alone serves one log on `127.0.0.1:9940` with its data in
//! `~/.lightkeeper/tlogd`: the log key (`log-key`, mode 0600, created on
//! first start, its verifier key printed and written to `vkey`), the append
//! token (`append-token`, 0600) and the store (`tlog.redb`; or PostgreSQL
//! with `--postgres`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tlog_core::note::{KeyType, SignerKey};
use tlog_node::LogNode;
use tlog_store::{LogOptions, LogStore, RedbLogStore};

#[derive(Parser)]
#[command(
    version,
    about = "A transparency log: tlog-tiles over HTTP, appends by operator token"
)]
struct Args {
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "TLOGD_LOG_FORMAT", value_enum, default_value_t = log_init::LogFormat::Text)]
    log_format: log_init::LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given;
    /// without ADDR: 127.0.0.1:9557). Unauthenticated.
    #[arg(long, env = "TLOGD_METRICS_LISTEN", num_args = 0..=1, default_missing_value = "127.0.0.1:9557")]
    metrics_listen: Option<SocketAddr>,
    /// Where the key, token and store live [default: ~/.lightkeeper/tlogd].
    #[arg(long, env = "TLOGD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the log in PostgreSQL instead of the embedded store:
    /// `postgres://user@host/db` (keys and token stay in the data dir).
    /// Several tlogd may share one database: appends to a log serialize
    /// on its row.
    #[arg(long, env = "TLOGD_POSTGRES")]
    postgres: Option<String>,
    /// The PostgreSQL schema (shared with lssd's if the same).
    #[arg(long, env = "TLOGD_POSTGRES_SCHEMA", default_value = "lightkeeper")]
    postgres_schema: String,
    /// HTTP address; a public one is a deliberate choice.
    #[arg(long, env = "TLOGD_LISTEN", default_value = "127.0.0.1:9940")]
    listen: SocketAddr,
    /// LKTL/1 sync port (mirrors fetch from it; `nc` gets a banner).
    #[arg(long, env = "TLOGD_SYNC_LISTEN", default_value = "127.0.0.1:9939")]
    sync_listen: SocketAddr,
    /// This node's name on the sync port.
    #[arg(long, env = "TLOGD_NODE_NAME", default_value = "tlogd")]
    node_name: String,
    /// The log's origin (its name forever): `<dns-name>/<path>`, lowercase.
    #[arg(long, env = "TLOGD_ORIGIN", default_value = "localhost/tlogd/log")]
    origin: String,
    /// How often the committed tree is signed and published, in ms (100..=60000).
    #[arg(long, env = "TLOGD_CHECKPOINT_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    checkpoint_interval_ms: u64,
    /// `lk/v1` requests per second per client address (bursts of twice
    /// that); beyond, 429 with Retry-After.
    #[arg(long, env = "TLOGD_LK_RATE", default_value_t = 200)]
    lk_rate: u32,
    /// Keep an index of leaf hashes and give a repeated entry its first index.
    #[arg(long, env = "TLOGD_DEDUP")]
    dedup: bool,
    /// Also witness the log of this verifier key (repeat for several logs):
    /// `POST /witness/add-checkpoint` cosigns its consistent checkpoints.
    #[arg(long = "witness-for", env = "TLOGD_WITNESS_FOR", value_delimiter = ',')]
    witness_for: Vec<String>,
    /// Serve a mirror of another log instead of a log of its own:
    /// `<vkey>[@<host>:<sync port>]` (the address is added to `--peer`).
    /// Entries are fetched over LKTL/1 from any peer and stored only once
    /// verified against the origin's signed checkpoint.
    #[arg(long, env = "TLOGD_MIRROR")]
    mirror: Option<String>,
    /// Also follow (mirror) the log of this verifier key, served at
    /// `/logs/<origin>/` and on the sync port: `<vkey>[@<host>:<sync
    /// port>]` (the address is added to `--peer`); repeat for more. A
    /// federation member follows the other members' logs.
    #[arg(long = "follow", env = "TLOGD_FOLLOW", value_delimiter = ',')]
    follow: Vec<String>,
    /// Also follow every log under an origin prefix that one Ed25519 key
    /// signs under each origin's own name (as `lssd` signs its per-client
    /// logs): `<prefix>+<key ID>+<base64 key>[@<host>:<sync port>]`, a vkey
    /// whose name is the prefix. Logs are created as peers announce them
    /// (at most `--max-prefix-logs` per prefix) and served on the sync
    /// port; repeat for more prefixes.
    #[arg(
        long = "follow-prefix",
        env = "TLOGD_FOLLOW_PREFIX",
        value_delimiter = ','
    )]
    follow_prefix: Vec<String>,
    /// The most logs one `--follow-prefix` creates.
    #[arg(long, env = "TLOGD_MAX_PREFIX_LOGS", default_value_t = 10_000)]
    max_prefix_logs: usize,
    /// Cosign every log this node follows (mirror cosigner, tlog.md §5.3):
    /// a size only once every entry below it is verified and stored. The
    /// key (`cosigner-key`, its vkey in `cosigner-vkey`) is made once.
    #[arg(long, env = "TLOGD_COSIGN")]
    cosign: bool,
    /// The mirror cosigner key's name.
    #[arg(
        long,
        env = "TLOGD_COSIGNER_NAME",
        default_value = "localhost/tlogd/mirror"
    )]
    cosigner_name: String,
    /// Keep this mirror cosigner's cosignatures on the notes of every log
    /// served here (federation members trust each other's); repeat.
    #[arg(
        long = "trust-cosigner",
        env = "TLOGD_TRUST_COSIGNER",
        value_delimiter = ','
    )]
    trust_cosigner: Vec<String>,
    /// A federation peer to keep a connection to (`host:port` of its sync
    /// port); repeat for more. Peers announce new checkpoints to each
    /// other (Inv), mirrors fetch from any of them, and two checkpoints of
    /// one size that disagree become evidence everyone keeps.
    #[arg(long = "peer", env = "TLOGD_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// Submit this log's checkpoints to a witness: `<witness vkey>@<url
    /// prefix>` (e.g. `…@http://127.0.0.1:9941/witness`); repeat for more.
    #[arg(long = "submit-to", env = "TLOGD_SUBMIT_TO", value_delimiter = ',')]
    submit_to: Vec<String>,
    /// Publish a checkpoint only once this many of those witnesses
    /// cosigned it [default: all of them].
    #[arg(long, env = "TLOGD_PUBLISH_QUORUM")]
    publish_quorum: Option<usize>,
    /// Publish this log's checkpoints only once this many of the
    /// `--trust-cosigner` keys cosigned them (federation cosigning, tlog.md
    /// §5.3, §6.3): peers get each signed checkpoint over the sync port,
    /// verify and store it, and send their cosignatures back; HTTP clients
    /// keep the previous checkpoint until the quorum is met.
    #[arg(long, env = "TLOGD_COSIGNER_QUORUM", default_value_t = 0)]
    cosigner_quorum: usize,
    /// An idle witnessed log resubmits its latest checkpoint this often, so
    /// cosignature timestamps stay fresh for clients with a `max_age`.
    #[arg(long, env = "TLOGD_REPUBLISH_INTERVAL_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    republish_interval_secs: u64,
    /// Let a frozen log sign and append again. A log freezes when its store
    /// is behind what its key signed (a restored backup, or a witness or
    /// peer holding a larger or different signed tree); signing on from
    /// there forks the log, which witnesses and mirrors will catch as
    /// equivocation. Only after investigating; not for an equivocated log
    /// (that needs a new origin). Give it once, then start without it.
    #[arg(long)]
    danger_unfreeze: bool,
    /// The witness key's name (its cosignatures carry it).
    #[arg(
        long,
        env = "TLOGD_WITNESS_NAME",
        default_value = "localhost/tlogd/witness"
    )]
    witness_name: String,
}

fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".lightkeeper")
        .join("tlogd")
}

/// The log key: read, or made once (0600) for `origin`.
fn log_key(dir: &Path, origin: &str) -> anyhow::Result<SignerKey> {
    key_file(&dir.join("log-key"), origin, KeyType::Ed25519)
}

/// A key file: read, or made once (0600) for `name` in role `ty`.
fn key_file(path: &Path, origin: &str, ty: KeyType) -> anyhow::Result<SignerKey> {
    Ok(tlog_node::keyfile::load_or_create(path, origin, ty)?)
}

fn token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("append-token");
    if let Some(bytes) = durable_file::read(&path)? {
        return Ok(String::from_utf8_lossy(&bytes).trim().to_string());
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    durable_file::create_new(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    log_init::init(args.log_format);
    let _metrics = metrics_endpoint::serve_if(args.metrics_listen).await?;
    anyhow::ensure!(
        tlog_core::checkpoint::is_lightkeeper_origin(&args.origin),
        "--origin {:?} must be <dns-name>/<path> of lowercase letters, digits, '.', '-' and '/'",
        args.origin
    );
    let dir = args.data_dir.clone().unwrap_or_else(default_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    match args.postgres.clone() {
        Some(url) => {
            let config = tlog_store_postgres::PostgresConfig {
                schema: args.postgres_schema.clone(),
                ..tlog_store_postgres::PostgresConfig::new(url)
            };
            let store = tlog_store_postgres::PostgresLogStore::open(config).await?;
            tracing::info!(schema = %args.postgres_schema, "log store: PostgreSQL");
            serve(args, dir, Arc::new(store)).await
        }
        None => {
            let store = RedbLogStore::open(&dir.join("tlog.redb"))?;
            serve(args, dir, Arc::new(store)).await
        }
    }
}

/// Serves the log (or mirror) on `store`, whichever backend it is.
async fn serve<S: LogStore>(args: Args, dir: PathBuf, store: Arc<S>) -> anyhow::Result<()> {
    let interval = Duration::from_millis(args.checkpoint_interval_ms);
    let mut peers = args.peers.clone();
    let (node, token, vkey, origin_key) = match &args.mirror {
        Some(mirror) => {
            let (vkey, peer) = match mirror.rsplit_once('@') {
                Some((vkey, peer)) => (vkey, Some(peer)),
                None => (mirror.as_str(), None),
            };
            let key = tlog_core::note::VerifierKey::parse(vkey)
                .map_err(|e| anyhow::anyhow!("--mirror {mirror:?}: {e}"))?;
            peers.extend(peer.map(str::to_string));
            anyhow::ensure!(
                !peers.is_empty(),
                "--mirror needs a peer to fetch from: <vkey>@<host>:<port>, or --peer"
            );
            let node = LogNode::mirror(store, key.name()).await?;
            tracing::info!(origin = %key.name(), ?peers, "mirroring");
            (node, None, vkey.to_string(), key)
        }
        None => {
            let key = log_key(&dir, &args.origin)?;
            let origin_key = key.verifier();
            let vkey = origin_key.to_string();
            durable_file::replace(&dir.join("vkey"), format!("{vkey}\n").as_bytes(), 0o644)?;
            let options = LogOptions {
                dedup: args.dedup,
                index_leaves: args.dedup,
            };
            let (witnesses, quorum) =
                tlog_node::submit::witness_targets(&args.submit_to, args.publish_quorum)?;
            let cosigners = trusted_cosigners(&args.trust_cosigner)?;
            anyhow::ensure!(
                args.cosigner_quorum <= cosigners.len(),
                "--cosigner-quorum {} is more than the {} --trust-cosigner keys given",
                args.cosigner_quorum,
                cosigners.len()
            );
            let publish = tlog_node::submit::Publish {
                witnesses,
                quorum,
                republish: Duration::from_secs(args.republish_interval_secs),
                cosigners,
                cosigner_quorum: args.cosigner_quorum,
            };
            if args.danger_unfreeze {
                unfreeze(&*store, &args.origin, options).await?;
            }
            let node = LogNode::start(store, key, options, interval, publish).await?;
            (node, Some(token(&dir)?), vkey, origin_key)
        }
    };
    let store = node.store().clone();
    let mut app = node.clone().router(token, args.lk_rate);
    // Every log this node serves or follows, on the sync port, and over
    // HTTP at /logs/<origin>/ (the first also at /).
    // Mirror cosigners whose lines this node keeps, and its own.
    let trusted = trusted_cosigners(&args.trust_cosigner)?;
    let cosigner = if args.cosign {
        let key = key_file(
            &dir.join("cosigner-key"),
            &args.cosigner_name,
            KeyType::Cosignature,
        )?;
        let vkey = key.verifier().to_string();
        durable_file::replace(
            &dir.join("cosigner-vkey"),
            format!("{vkey}\n").as_bytes(),
            0o644,
        )?;
        tracing::info!(%vkey, "cosigning the logs it follows once verified and stored");
        Some(Arc::new(key))
    } else {
        None
    };
    let mut logs = vec![(
        node.clone(),
        tlog_node::peer::Follow {
            key: origin_key,
            previous: Vec::new(),
            witnesses: trusted.clone(),
            // The origin signs its own log; a mirror cosigns it.
            cosigner: cosigner.clone().filter(|_| !node.is_sequencer()),
            validator: None,
            validating: None,
        },
    )];
    for follow in &args.follow {
        let (vkey, peer) = match follow.rsplit_once('@') {
            Some((vkey, peer)) => (vkey, Some(peer)),
            None => (follow.as_str(), None),
        };
        let key = tlog_core::note::VerifierKey::parse(vkey)
            .map_err(|e| anyhow::anyhow!("--follow {follow:?}: {e}"))?;
        anyhow::ensure!(
            logs.iter().all(|(n, _)| n.origin() != key.name()),
            "--follow {follow:?}: {} is already served here",
            key.name()
        );
        peers.extend(peer.map(str::to_string));
        let mirror = LogNode::mirror(store.clone(), key.name()).await?;
        tracing::info!(origin = %key.name(), "following");
        logs.push((
            mirror,
            tlog_node::peer::Follow {
                key,
                previous: Vec::new(),
                witnesses: trusted.clone(),
                cosigner: cosigner.clone(),
                validator: None,
                validating: None,
            },
        ));
    }
    for (log, _) in &logs {
        app = app.nest(
            &format!("/logs/{}", log.origin()),
            log.clone().router(None, args.lk_rate),
        );
    }
    let mut witness = None;
    if !args.witness_for.is_empty() {
        let logs = args
            .witness_for
            .iter()
            .map(|v| {
                tlog_core::note::VerifierKey::parse(v)
                    .map_err(|e| anyhow::anyhow!("--witness-for {v:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let key = key_file(
            &dir.join("witness-key"),
            &args.witness_name,
            KeyType::Cosignature,
        )?;
        let wvkey = key.verifier().to_string();
        durable_file::replace(
            &dir.join("witness-vkey"),
            format!("{wvkey}\n").as_bytes(),
            0o644,
        )?;
        tracing::info!(vkey = %wvkey, logs = logs.len(), "witnessing at /witness/add-checkpoint");
        let w = tlog_node::witness::Witness::new(store.clone(), key, logs);
        app = app.nest("/witness", w.clone().router());
        witness = Some(w);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "{} is not available; set --listen (TLOGD_LISTEN)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let sync = tokio::net::TcpListener::bind(args.sync_listen)
        .await
        .with_context(|| {
            format!(
                "{} is not available; set --sync-listen (TLOGD_SYNC_LISTEN)",
                args.sync_listen
            )
        })?;
    tracing::info!(addr = %sync.local_addr()?, "sync port (LKTL/1) listening");
    peers.sort();
    peers.dedup();
    let mut prefixes = Vec::new();
    for follow in &args.follow_prefix {
        let (vkey, peer) = match follow.rsplit_once('@') {
            Some((vkey, peer)) => (vkey, Some(peer)),
            None => (follow.as_str(), None),
        };
        let key = tlog_core::note::VerifierKey::parse(vkey)
            .map_err(|e| anyhow::anyhow!("--follow-prefix {follow:?}: {e}"))?;
        anyhow::ensure!(
            key.key_type() == KeyType::Ed25519,
            "--follow-prefix {follow:?}: not a log (Ed25519) key"
        );
        peers.extend(peer.map(str::to_string));
        tracing::info!(prefix = %key.name(), "following every log under the prefix");
        prefixes.push(tlog_node::peer::PrefixFollow {
            prefix: key.name().to_string(),
            key,
            store: store.clone(),
            witnesses: trusted.clone(),
            cosigner: cosigner.clone(),
            max_logs: args.max_prefix_logs,
        });
    }
    let federation = tlog_node::peer::Peer::with_roles(
        tlog_node::peer::Config {
            name: args.node_name.clone(),
            peers,
            limits: tlog_node::peer::Limits::default(),
        },
        logs,
        tlog_node::peer::Roles {
            prefixes,
            // The witness also cosigns checkpoints that reach it by Inv.
            witness,
        },
    );
    tokio::spawn(federation.run(sync));
    tracing::info!(origin = %node.origin(), %vkey, "serving the log");
    tracing::info!(%addr, token = %dir.join("append-token").display(), "listening on http://{addr}/");
    let app = app.layer(metrics_endpoint::http_layer());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await?;
    tracing::info!("tlogd stopped");
    Ok(())
}

/// `--danger-unfreeze`: a frozen log back to active, loudly.
async fn unfreeze<S: LogStore>(store: &S, origin: &str, options: LogOptions) -> anyhow::Result<()> {
    let log = store.create_log(origin, options).await?;
    let state = store.state(log).await?;
    match state.status {
        tlog_store::Status::Frozen => {
            store.set_status(log, tlog_store::Status::Active).await?;
            tracing::warn!(%origin, size = state.size, checkpoint = state.checkpoint_size,
                "--danger-unfreeze: the log was frozen and signs again; if its key signed a larger or different tree, this forks the log and its witnesses and mirrors will hold evidence");
            Ok(())
        }
        tlog_store::Status::Active => {
            tracing::info!(%origin, "--danger-unfreeze: the log is not frozen; nothing to do");
            Ok(())
        }
        status => anyhow::bail!(
            "--danger-unfreeze: the log is {status:?}, which no flag undoes: serve a new origin"
        ),
    }
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The `--trust-cosigner` keys.
fn trusted_cosigners(given: &[String]) -> anyhow::Result<Vec<tlog_core::note::VerifierKey>> {
    given
        .iter()
        .map(|v| {
            tlog_core::note::VerifierKey::parse(v)
                .map_err(|e| anyhow::anyhow!("--trust-cosigner {v:?}: {e}"))
        })
        .collect()
}
