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
    /// LKTL/1 (tlog.md §7) for mirrors (§8), `--sync-listen`; `None`: none.
    pub sync_listen: Option<SocketAddr>,
    /// Mirrors' validating cosigner vkeys whose cosignatures are kept on
    /// the stored and published checkpoints.
    pub mirror_cosigners: Vec<String>,
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
    /// How long a new genesis UID is valid, in seconds (`None`: a year
    /// less a day). Shorter only to test the renewal (`test-faults`).
    pub genesis_lifetime_secs: Option<u64>,
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
    /// The LKTL/1 listener's bound address.
    pub sync_addr: Option<SocketAddr>,
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

/// The domain in canonical form (what `--domain` must already be).
fn canonical_domain(domain: &str) -> Result<String, StartError> {
    let mapped = ks_core::identity::map(&format!("keyserver@{domain}"))
        .map_err(|e| StartError::Config(format!("domain {domain}: {e}")))
        .map(|m| ks_core::identity::domain(&m).to_string())?;
    if mapped != domain {
        return Err(StartError::Config(format!(
            "domain {domain} is not in canonical form ({mapped})"
        )));
    }
    Ok(mapped)
}

/// The log and the keyserver tables of a data directory, opened, with the
/// sequencer running under the key the chain schedules now.
struct Opened {
    domain: String,
    origin: String,
    key: SignerKey,
    store: Arc<tlog_store::RedbLogStore>,
    log: tlog_store::LogId,
    ks_store: KsStore,
    /// The keyserver's newest UID row (none before genesis).
    keyserver_row: Option<crate::store::IdentityRow>,
}

const KEY_FILE: &str = "server_sigkey";
/// A rotation's new key, written before its UID is submitted: if the UID
/// committed, the next start installs it.
const NEXT_KEY_FILE: &str = "server_sigkey.next";
/// The key a rotation by key replaced, and when its overlap ends (§3.8):
/// the key file's line, then `overlap-until <Unix seconds>`. Checkpoints
/// carry its signature too until then; the first start after that
/// deletes the file.
const PREVIOUS_KEY_FILE: &str = "server_sigkey.previous";

fn write_previous(dir: &Path, key: &SignerKey, until: u64) -> Result<(), StartError> {
    let path = dir.join(PREVIOUS_KEY_FILE);
    durable_file::replace(
        &path,
        format!("{}\noverlap-until {until}\n", key.to_private_line()).as_bytes(),
        0o600,
    )
    .map_err(|e| StartError::Io(format!("{}: {e}", path.display())))
}

/// The previous key and the end of its overlap; an unreadable file is an
/// error (the operator decides: remove it to start without the overlap).
fn read_previous(dir: &Path, origin: &str) -> Result<Option<(SignerKey, u64)>, StartError> {
    let path = dir.join(PREVIOUS_KEY_FILE);
    let Some(bytes) = durable_file::read(&path)
        .map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?
    else {
        return Ok(None);
    };
    let bad = |why: &str| {
        StartError::Config(format!(
            "{}: {why}; remove it to start without the previous key's overlap",
            path.display()
        ))
    };
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.lines();
    let key = lines
        .next()
        .and_then(|l| SignerKey::parse(l).ok())
        .filter(|k| k.name() == origin && k.key_type() == KeyType::Ed25519)
        .ok_or_else(|| bad("not a log key of this origin"))?;
    let until = lines
        .next()
        .and_then(|l| l.strip_prefix("overlap-until "))
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| bad("no `overlap-until <Unix seconds>` line"))?;
    if lines.next().is_some() {
        return Err(bad("more than two lines"));
    }
    Ok(Some((key, until)))
}

fn storage(e: impl std::fmt::Display) -> StartError {
    StartError::Storage(e.to_string())
}

async fn open(dir: &Path, domain: &str) -> Result<Opened, StartError> {
    let domain = canonical_domain(domain)?;
    let origin = origin(&domain);
    std::fs::create_dir_all(dir).map_err(|e| StartError::Io(format!("{}: {e}", dir.display())))?;
    let mut key = load_or_create_key(dir, &origin)?;
    let path = dir.join("keyserver.redb");
    let db = Arc::new(
        redb::Database::create(&path).map_err(|e| storage(format!("{}: {e}", path.display())))?,
    );
    let store =
        Arc::new(tlog_store::RedbLogStore::open_shared(db.clone(), &path).map_err(storage)?);
    let log = store
        .create_log(&origin, tlog_store::LogOptions::default())
        .await
        .map_err(storage)?;
    let identity = format!("keyserver@{domain}");
    let start_sequencer = |key: &SignerKey, size: u64, h_last: [u8; 32]| {
        KsStore::start(
            db.clone(),
            SequencerConfig {
                origin: origin.clone(),
                log,
                signer: key.signing_key().clone(),
                policy: ks_core::rules::Policy::for_domains(vec![domain.clone()]),
            },
            size,
            h_last,
        )
        .map_err(storage)
    };
    let (size, h_last) = head(&store, log).await?;
    let mut ks_store = start_sequencer(&key, size, h_last)?;
    let keyserver_row = ks_store.reader().identity(&identity).map_err(storage)?;
    // The chain decides which key is ours: its newest keyserver UID's.
    if let Some(row) = &keyserver_row {
        let scheduled = row.uid.content.sig_key.verifying_key();
        if scheduled != Some(key.signing_key().verifying_key()) {
            let next = durable_file::read(&dir.join(NEXT_KEY_FILE))
                .ok()
                .flatten()
                .and_then(|b| SignerKey::parse(&String::from_utf8_lossy(&b)).ok())
                .filter(|k| k.name() == origin && k.key_type() == KeyType::Ed25519)
                .filter(|k| scheduled == Some(k.signing_key().verifying_key()));
            let Some(next) = next else {
                return Err(StartError::Config(format!(
                    "the chain's newest keyserver UID (position {}) names another key than {}: \
                     restore the matching server_sigkey",
                    row.pos,
                    dir.join(KEY_FILE).display()
                )));
            };
            // A rotation committed before its key was installed: finish it.
            install_key(dir, &next)?;
            tracing::warn!(position = row.pos, "finished an interrupted key rotation");
            key = next;
            drop(ks_store);
            ks_store = start_sequencer(&key, size, h_last)?;
        }
    }
    Ok(Opened {
        domain,
        origin,
        key,
        store,
        log,
        ks_store,
        keyserver_row,
    })
}

/// The committed size and the last entry's H.
async fn head(
    store: &tlog_store::RedbLogStore,
    log: tlog_store::LogId,
) -> Result<(u64, [u8; 32]), StartError> {
    let state = store.state(log).await.map_err(storage)?;
    if state.size == 0 {
        return Ok((0, ks_core::entry::GENESIS_PREV));
    }
    let leaf = store
        .entries(log, state.size - 1, state.size)
        .await
        .map_err(storage)?;
    let entry = leaf
        .first()
        .and_then(|l| Entry::from_leaf(l).ok())
        .ok_or_else(|| StartError::Storage("the last log entry is not a keyserver entry".into()))?;
    Ok((state.size, *entry.hash()))
}

fn remove_previous(dir: &Path) -> Result<(), StartError> {
    let path = dir.join(PREVIOUS_KEY_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StartError::Io(format!("{}: {e}", path.display()))),
    }
}

fn install_key(dir: &Path, key: &SignerKey) -> Result<(), StartError> {
    let path = dir.join(KEY_FILE);
    durable_file::replace(
        &path,
        format!("{}\n", key.to_private_line()).as_bytes(),
        0o600,
    )
    .map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?;
    let _ = std::fs::remove_file(dir.join(NEXT_KEY_FILE));
    Ok(())
}

/// What authorises a rotation of the server's key (§3.8).
pub enum Rotation {
    /// The current key (USERSIGNATURE).
    ByKey,
    /// The escrow key from paper, when the current key is lost
    /// (ESCROWSIGNATURE; no overlap for witnesses).
    ByEscrow(Box<SigningKey>),
}

/// A finished rotation.
#[derive(Debug)]
pub struct Rotated {
    /// The position of the keyserver UID with the new key.
    pub position: u64,
    /// The log's new verifier key (for witnesses' `--witness-for`).
    pub vkey: String,
}

/// `keyserverd rotate-key` (§3.8): an UpdateUID of the keyserver's own
/// identity with a fresh SIGKEY, authorised by the current key or the
/// escrow key, committed in a batch of its own and signed by the new key,
/// which then signs everything from that position on. Run with the server
/// stopped. The new key is written to `server_sigkey.next` before the UID
/// is submitted and installed after it committed; a crash in between is
/// finished by the next start.
pub async fn rotate_key(dir: &Path, domain: &str, by: Rotation) -> Result<Rotated, StartError> {
    let opened = open(dir, domain).await?;
    let Some(row) = opened.keyserver_row.clone() else {
        return Err(StartError::Config(
            "no genesis yet: start the keyserver once before rotating its key".into(),
        ));
    };
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let new = SignerKey::from_seed(&opened.origin, KeyType::Ed25519, &seed)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let next_path = dir.join(NEXT_KEY_FILE);
    durable_file::replace(
        &next_path,
        format!("{}\n", new.to_private_line()).as_bytes(),
        0o600,
    )
    .map_err(|e| StartError::Io(format!("{}: {e}", next_path.display())))?;
    // The old key keeps signing checkpoints for the overlap; after an
    // escrow rotation there is none (the old key is lost, or not to be
    // trusted), and no older key may sign on either.
    let now = crate::server::now();
    match &by {
        Rotation::ByKey => {
            write_previous(dir, &opened.key, now + ks_core::rules::ROTATION_OVERLAP)?
        }
        Rotation::ByEscrow(_) => remove_previous(dir)?,
    }
    let authority = match &by {
        Rotation::ByKey => author::Authority::User(opened.key.signing_key()),
        Rotation::ByEscrow(escrow) => author::Authority::Escrow(escrow),
    };
    let msg = own_update(
        &opened.store,
        opened.log,
        &row,
        new.signing_key(),
        authority,
        now,
    )
    .await?;
    let policy = ks_core::rules::Policy::for_domains(vec![opened.domain.clone()]);
    let profiled = ks_core::rules::check_stateless(Kind::Update, &msg, now, &policy, true)
        .map_err(|e| StartError::Config(format!("the rotation UID: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    opened
        .ks_store
        .submit(crate::store::Job::Uid {
            kind: Kind::Update,
            msg: Box::new(msg),
            profiled: Box::new(profiled),
            token: None,
            keyserver: true,
            forced: false,
            reply_key: Some(new.signing_key().clone()),
            plaintext: None,
            now,
            reply: tx,
        })
        .map_err(storage)?;
    let reply = rx
        .await
        .map_err(|_| StartError::Storage("the sequencer stopped".into()))?
        .map_err(|e| {
            let _ = std::fs::remove_file(&next_path);
            let _ = remove_previous(dir);
            StartError::Config(format!("the rotation was refused: {e}"))
        })?;
    install_key(dir, &new)?;
    Ok(Rotated {
        position: reply.entry.hashchain_pos,
        vkey: new.verifier().to_string(),
    })
}

/// The next UID of the keyserver's own identity, `row`: SIGKEY
/// `sig_key` (the current key to renew, a fresh one to rotate), the
/// escrow and static keys kept, LASTENTRY the log's last entry, signed
/// under `authority`.
async fn own_update(
    store: &tlog_store::RedbLogStore,
    log: tlog_store::LogId,
    row: &crate::store::IdentityRow,
    sig_key: &SigningKey,
    authority: author::Authority<'_>,
    now: u64,
) -> Result<ks_core::uid::UidMessage, StartError> {
    let static_key = row
        .uid
        .content
        .pubkeys
        .first()
        .and_then(|k| ks_core::b64::exact::<32>(&k.pubkey))
        .ok_or_else(|| StartError::Storage("the keyserver UID has no static key".into()))?;
    let (size, _) = head(store, log).await?;
    let last = store
        .entries(log, size - 1, size)
        .await
        .map_err(storage)?
        .first()
        .and_then(|l| Entry::from_leaf(l).ok())
        .ok_or_else(|| StartError::Storage("no last entry".into()))?;
    let keys = UidKeys {
        sig_key,
        escrow: None,
        static_key,
    };
    let mut content = author::content(
        &row.uid.content.identity,
        &keys,
        row.uid.content.msg_count + 1,
        Some(&last),
        &row.uid.content.preferences.forward_sec,
        now,
    );
    content.sig_escrow = row.uid.content.sig_escrow.clone();
    Ok(author::sign_update(content, sig_key, authority))
}

/// How long before its NOTAFTER the server renews its own UID (§3.8).
pub const RENEW_BEFORE: u64 = 30 * 86_400;
/// How often the server checks whether its UID is due.
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// §3.8: when fewer than [`RENEW_BEFORE`] of its UID's NOTAFTER remain,
/// the server updates its UID, keeping SIGKEY (signed by it), so the
/// identity never lapses. Whether it renewed.
async fn renew_if_due(
    keyserver: &Keyserver,
    store: &tlog_store::RedbLogStore,
    log: tlog_store::LogId,
    identity: &str,
    key: &SigningKey,
) -> Result<Option<u64>, StartError> {
    let Some(row) = keyserver.identity_row(identity).await.map_err(storage)? else {
        return Ok(None);
    };
    let now = crate::server::now();
    if row.uid.content.not_after >= now.saturating_add(RENEW_BEFORE) {
        return Ok(None);
    }
    let msg = own_update(store, log, &row, key, author::Authority::User(key), now).await?;
    let reply = keyserver
        .submit_uid(Kind::Update, msg, None, true)
        .await
        .map_err(|e| StartError::Storage(format!("renewing the server's UID: {e}")))?;
    Ok(Some(reply.entry.hashchain_pos))
}

/// Opens (or initialises) the keyserver in `opts.data_dir` and serves it.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    // Checked before anything is opened: a typo fails fast.
    let cosigners = opts
        .mirror_cosigners
        .iter()
        .map(|v| {
            tlog_core::note::VerifierKey::parse(v)
                .ok()
                .filter(|k| k.key_type() == KeyType::Cosignature)
                .ok_or_else(|| {
                    StartError::Config(format!(
                        "--mirror-cosigner {v}: not a cosignature verifier key"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Opened {
        domain,
        origin,
        key,
        store,
        log,
        ks_store,
        keyserver_row,
    } = open(&opts.data_dir, &opts.domain).await?;
    let signer = key.signing_key().clone();
    let signing_pos = keyserver_row.as_ref().map_or(0, |r| r.pos);
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
    // The node starts after any rotation finished, so every checkpoint it
    // signs is of a size whose scheduled key is this one.
    let node = tlog_node::LogNode::start(
        store.clone(),
        key,
        tlog_store::LogOptions::default(),
        opts.checkpoint_interval,
        publish,
    )
    .await
    .map_err(storage)?;
    // A rotation by key: the old key signs checkpoints too until its
    // overlap ends (§3.8). A file of the current key is a rotation that
    // never committed.
    if let Some((previous, until)) = read_previous(&opts.data_dir, &origin)? {
        let current = previous.verifier().to_string() == vkey;
        if !current && crate::server::now() < until {
            tracing::info!(previous = %previous.verifier(), until,
                "checkpoints also carry the previous key's signature until its overlap ends");
            node.sign_also_with(previous, until)
                .map_err(|e| StartError::Config(e.to_string()))?;
        } else {
            remove_previous(&opts.data_dir)?;
            tracing::info!("the previous key's overlap is over: its file is deleted");
        }
    }
    let state = store.state(log).await.map_err(storage)?;
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
    let reader = ks_store.reader();
    let keyserver = Arc::new(Keyserver::new(
        config,
        ks_store,
        node.clone(),
        signer.clone(),
        signing_pos,
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
        let now = crate::server::now();
        let mut content = author::content(&identity, &keys, 0, None, "strict", now);
        if let Some(lifetime) = opts.genesis_lifetime_secs {
            content.not_after = now + lifetime;
        }
        let msg = author::sign_create(content, &keys);
        keyserver
            .submit_uid(Kind::Create, msg, None, true)
            .await
            .map_err(|e| StartError::Storage(format!("genesis: {e}")))?;
        node.checkpoint_once().await;
        escrow = Some(escrow_key);
    }
    {
        let (keyserver, store, signer) = (keyserver.clone(), store.clone(), signer.clone());
        let identity = format!("keyserver@{domain}");
        tokio::spawn(async move {
            loop {
                match renew_if_due(&keyserver, &store, log, &identity, &signer).await {
                    Ok(Some(position)) => {
                        tracing::info!(position, "renewed the server's UID before its NOTAFTER")
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "the server's UID is due for renewal"),
                }
                tokio::time::sleep(RENEW_CHECK).await;
            }
        });
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
    let (addr, serving) = serve_public(
        keyserver.clone(),
        &node,
        &origin,
        opts.listen,
        opts.tls.clone(),
    )
    .await?;
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
    let sync_addr = match opts.sync_listen {
        None if !opts.mirror_cosigners.is_empty() => {
            return Err(StartError::Config(
                "--mirror-cosigner needs the LKTL/1 listener (--sync-listen, not --no-sync)".into(),
            ))
        }
        None => None,
        Some(at) => {
            let sync = tokio::net::TcpListener::bind(at).await.map_err(|e| {
                StartError::Io(format!(
                    "{at} is not available ({e}); set --sync-listen (KEYSERVERD_SYNC_LISTEN)"
                ))
            })?;
            let bound = sync
                .local_addr()
                .map_err(|e| StartError::Io(e.to_string()))?;
            let key = tlog_core::note::VerifierKey::parse(&vkey)
                .map_err(|e| StartError::Config(e.to_string()))?;
            // Mirrors hold notes of earlier keys (§3.8): those are ours.
            let previous = earlier_keys(&store, log, reader, &origin, &domain, &key).await?;
            // Mirrors dial in; this node only serves its own log.
            let peer = tlog_node::peer::Peer::new(
                tlog_node::peer::Config {
                    name: origin.clone(),
                    peers: Vec::new(),
                    limits: tlog_node::peer::Limits::default(),
                },
                vec![(
                    node.clone(),
                    tlog_node::peer::Follow {
                        key,
                        previous,
                        witnesses: cosigners,
                        cosigner: None,
                        validator: None,
                        validating: None,
                    },
                )],
            );
            tokio::spawn(peer.run(sync));
            Some(bound)
        }
    };
    Ok(Running {
        addr,
        pin,
        vkey,
        escrow,
        keyserver,
        issuer,
        serving,
        admin_addr,
        sync_addr,
    })
}

/// Serves `methods` (JSON-RPC on `POST /`) and `node`'s checkpoint and
/// tiles under the origin's path (§2.3) on `listen`: the bound address and
/// the task that ends when the listener fails.
pub(crate) async fn serve_public<M: crate::rpc::Methods>(
    methods: Arc<M>,
    node: &Arc<tlog_node::LogNode<tlog_store::RedbLogStore>>,
    origin: &str,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), StartError> {
    let path_prefix = origin
        .split_once('/')
        .map_or(String::new(), |(_, p)| format!("/{p}"));
    let app = crate::rpc::router(methods).nest(&path_prefix, node.clone().router(None, 200));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Io(format!("listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let serving = tokio::spawn(async move {
        let app = app.layer(metrics_endpoint::http_layer());
        if let Err(e) = http_tls::serve(listener, app, tls).await {
            tracing::error!(error = %e, "the public listener failed");
        }
    });
    Ok((addr, serving))
}

/// The log keys of the server's earlier UIDs (its key schedule, §3.8)
/// other than `current`.
async fn earlier_keys(
    store: &tlog_store::RedbLogStore,
    log: tlog_store::LogId,
    reader: crate::store::Reader,
    origin: &str,
    domain: &str,
    current: &tlog_core::note::VerifierKey,
) -> Result<Vec<tlog_core::note::VerifierKey>, StartError> {
    let identity = format!("keyserver@{domain}");
    let name = identity.clone();
    let positions =
        tokio::task::spawn_blocking(move || reader.positions(&name).map(|p| (p, reader)))
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?
            .map_err(|e| StartError::Storage(format!("the server's positions: {e}")))?;
    let (positions, reader) = positions;
    let mut keys = Vec::new();
    for pos in positions {
        let leaf = store
            .entries(log, pos, pos + 1)
            .await
            .map_err(|e| StartError::Storage(format!("entry {pos}: {e}")))?
            .pop()
            .ok_or_else(|| StartError::Storage(format!("entry {pos} is missing")))?;
        let entry = Entry::from_leaf(&leaf)
            .map_err(|e| StartError::Storage(format!("entry {pos}: {e}")))?;
        let raw = reader
            .uid(entry.uid_index())
            .map_err(|e| StartError::Storage(format!("the UID of entry {pos}: {e}")))?
            .ok_or_else(|| StartError::Storage(format!("the UID of entry {pos} is missing")))?;
        let key = <ks_core::uid::UidMessageReply as ks_core::lcj::Lcj>::from_lcj(&raw)
            .ok()
            .and_then(|r| r.open_for(&identity).ok())
            .and_then(|(_, msg)| msg.content.sig_key.verifying_key())
            .ok_or_else(|| {
                StartError::Storage(format!("the server's UID at {pos} names no key"))
            })?;
        let vkey = tlog_core::note::VerifierKey::new(origin, KeyType::Ed25519, key)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        if &vkey != current && !keys.contains(&vkey) {
            keys.push(vkey);
        }
    }
    Ok(keys)
}

fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}
