//! The federation member role (statechain.md §6.1): mirror an SE's public
//! log over LKTL/1, apply the members' rules (§5.2) to every entry before
//! it is stored (a [`tlog_node::peer::Validator`]), and serve the read API
//! from the replica so receivers can cross-check the SE and the record
//! survives it. Members hold no key material for coins; every `POST` is
//! `405 read_only`.
//!
//! The replica (every coin's state and its entries' log indexes) is kept in
//! memory and rebuilt from the stored entries at start; a chunk is checked
//! against a staged copy and adopted once the import is durable. An entry
//! the rules refuse (signed by the SE's key, so the SE's fault) leaves the
//! mirror at the last valid size, marks the log `Invalid` and becomes an
//! alert ([`statechain_core::alert`]) kept in `alerts.json` and served at
//! `GET /v1/alerts`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use statechain_core::alert::{Alert, AlertEntry};
use statechain_core::leaf::Leaf;
use statechain_core::rules::Ledger;
use statechain_core::{SeId, StatechainId};
use tlog_core::note::VerifierKey;
use tlog_node::LogNode;
use tlog_store::{LogStore, RedbLogStore};

use crate::api::{self, ApiError};
use crate::daemon::StartError;

#[derive(Clone, Default)]
struct ReplicaState {
    ledger: Ledger,
    indexes: BTreeMap<StatechainId, Vec<u64>>,
    size: u64,
}

/// A leaf the rules refuse: its index, the rule, and the coin's earlier
/// indexes it was judged against.
struct Refusal {
    index: u64,
    reason: String,
    related: Vec<u64>,
}

impl ReplicaState {
    fn apply(&mut self, se_id: &SeId, start: u64, entries: &[Vec<u8>]) -> Result<(), Refusal> {
        if start != self.size {
            return Err(Refusal {
                index: start,
                reason: format!("entries from {start}, the replica holds {}", self.size),
                related: Vec::new(),
            });
        }
        for (i, bytes) in entries.iter().enumerate() {
            let index = start + i as u64;
            let leaf = Leaf::decode(bytes).map_err(|e| Refusal {
                index,
                reason: format!("entry {index}: {e}"),
                related: Vec::new(),
            })?;
            self.ledger.apply(&leaf, se_id).map_err(|e| Refusal {
                index,
                reason: format!("entry {index}: {e}"),
                related: self
                    .indexes
                    .get(&leaf.statechain_id)
                    .cloned()
                    .unwrap_or_default(),
            })?;
            self.indexes
                .entry(leaf.statechain_id)
                .or_default()
                .push(index);
            self.size = index + 1;
        }
        Ok(())
    }
}

/// The member's view of the SE's coins, and the alerts it raised.
pub struct Replica {
    se_id: SeId,
    origin: String,
    current: Mutex<ReplicaState>,
    staged: Mutex<Option<ReplicaState>>,
    alerts_path: PathBuf,
    alerts: Mutex<Vec<Value>>,
}

impl Replica {
    fn new(se_id: SeId, origin: String, alerts_path: PathBuf, alerts: Vec<Value>) -> Replica {
        Replica {
            se_id,
            origin,
            current: Mutex::new(ReplicaState::default()),
            staged: Mutex::new(None),
            alerts_path,
            alerts: Mutex::new(alerts),
        }
    }
}

impl tlog_node::peer::Validator for Replica {
    fn check(&self, start: u64, entries: &[Vec<u8>]) -> Result<(), tlog_node::peer::Refused> {
        let poisoned = || tlog_node::peer::Refused {
            index: start,
            reason: "replica lock poisoned".into(),
            related: Vec::new(),
        };
        let mut next = self.current.lock().map_err(|_| poisoned())?.clone();
        next.apply(&self.se_id, start, entries)
            .map_err(|r| tlog_node::peer::Refused {
                index: r.index,
                reason: r.reason,
                related: r.related,
            })?;
        *self.staged.lock().map_err(|_| poisoned())? = Some(next);
        Ok(())
    }

    fn committed(&self, end: u64) {
        let staged = self.staged.lock().ok().and_then(|mut s| s.take());
        if let (Some(next), Ok(mut current)) = (staged, self.current.lock()) {
            if next.size == end {
                *current = next;
            }
        }
    }

    fn invalid(&self, evidence: tlog_node::peer::InvalidLog) -> Result<(), String> {
        let alert = Alert {
            reason: evidence.reason,
            origin: self.origin.clone(),
            checkpoint: String::from_utf8(evidence.note).map_err(|e| e.to_string())?,
            entries: evidence
                .entries
                .into_iter()
                .map(|e| AlertEntry {
                    index: e.index,
                    leaf: e.entry,
                    proof: e.path,
                })
                .collect(),
        }
        .to_json();
        let mut alerts = self.alerts.lock().map_err(|_| "alerts lock poisoned")?;
        if alerts.contains(&alert) {
            return Ok(());
        }
        let mut next = alerts.clone();
        next.push(alert);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        durable_file::replace(&self.alerts_path, &bytes, 0o644).map_err(|e| e.to_string())?;
        *alerts = next;
        Ok(())
    }
}

/// The alerts kept in `path` (a JSON array), none if it does not exist.
fn load_alerts(path: &std::path::Path) -> Result<Vec<Value>, StartError> {
    match durable_file::read(path).map_err(|e| StartError::Storage(e.to_string()))? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StartError::Storage(format!("{}: {e}", path.display()))),
    }
}

/// How to start a member.
#[derive(Clone, Debug)]
pub struct MemberOptions {
    /// The database.
    pub data_dir: PathBuf,
    /// HTTP (read API and the mirrored tiles).
    pub listen: SocketAddr,
    /// LKTL/1.
    pub sync_listen: SocketAddr,
    /// The SE's log verifier key.
    pub follow: String,
    /// Sync addresses to dial (the SE, other members).
    pub peers: Vec<String>,
    /// This node's name on the sync port; its validating cosigner key is
    /// named `<node_name>/validator`.
    pub node_name: String,
    /// TLS for the HTTP listener; plain HTTP without.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// A running member.
pub struct RunningMember {
    /// HTTP address.
    pub addr: SocketAddr,
    /// Sync address.
    pub sync_addr: SocketAddr,
    /// The followed SE's id.
    pub se_id: String,
    /// This member's validating cosigner verifier key (give it to the SE
    /// with `--member`).
    pub validating_vkey: String,
    /// Ends when the listener fails.
    pub serving: tokio::task::JoinHandle<()>,
}

struct MemberApp {
    node: Arc<LogNode<RedbLogStore>>,
    replica: Arc<Replica>,
    info: Value,
}

/// Opens the member's store, rebuilds the replica and serves.
pub async fn start_member(opts: MemberOptions) -> Result<RunningMember, StartError> {
    let key = VerifierKey::parse(&opts.follow)
        .map_err(|e| StartError::Config(format!("--follow: {e}")))?;
    let se_id = statechain_core::hash::sha256(opts.follow.trim().as_bytes());
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| StartError::Io(format!("{}: {e}", opts.data_dir.display())))?;
    let path = opts.data_dir.join("member.redb");
    let store =
        Arc::new(RedbLogStore::open(&path).map_err(|e| StartError::Storage(e.to_string()))?);
    let node = LogNode::mirror(store.clone(), key.name())
        .await
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let alerts_path = opts.data_dir.join("alerts.json");
    let replica = Arc::new(Replica::new(
        se_id,
        key.name().to_string(),
        alerts_path.clone(),
        load_alerts(&alerts_path)?,
    ));
    let size = store
        .state(node.log_id())
        .await
        .map_err(|e| StartError::Storage(e.to_string()))?
        .size;
    {
        let mut state = ReplicaState::default();
        let mut start = 0;
        while start < size {
            let end = (start + 4096).min(size);
            let entries = store
                .entries(node.log_id(), start, end)
                .await
                .map_err(|e| StartError::Storage(e.to_string()))?;
            state.apply(&se_id, start, &entries).map_err(|e| {
                StartError::Storage(format!("stored entries fail the rules: {}", e.reason))
            })?;
            start = end;
        }
        *replica
            .current
            .lock()
            .map_err(|_| StartError::Storage("poisoned".into()))? = state;
    }
    // The validating cosigner (statechain.md §6.1): its own key, distinct
    // from any witness or mirror key.
    let (validating, validating_vkey) =
        tlog_node::keyfile::validating_key(&opts.data_dir, &opts.node_name)
            .map_err(|e| StartError::Config(e.to_string()))?;
    let sync = tokio::net::TcpListener::bind(opts.sync_listen)
        .await
        .map_err(|e| StartError::Io(format!("{}: {e}", opts.sync_listen)))?;
    let sync_addr = sync
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let federation = tlog_node::peer::Peer::new(
        tlog_node::peer::Config {
            name: opts.node_name.clone(),
            peers: opts.peers.clone(),
            limits: tlog_node::peer::Limits::default(),
        },
        vec![(
            node.clone(),
            tlog_node::peer::Follow {
                key: key.clone(),
                previous: Vec::new(),
                witnesses: Vec::new(),
                cosigner: None,
                validator: Some(replica.clone()),
                validating: Some(Arc::new(validating)),
            },
        )],
    );
    tokio::spawn(federation.run(sync));
    let app = Arc::new(MemberApp {
        node: node.clone(),
        replica,
        info: json!({
            "protocol": "lk-statechain/1",
            "role": "member",
            "se_id": hex::encode(se_id),
            "log": {"origin": key.name(), "vkey": opts.follow.trim()},
            "validating_vkey": validating_vkey,
        }),
    });
    let origin_path = key
        .name()
        .split_once('/')
        .map_or(String::new(), |(_, p)| format!("/{p}"));
    let log = node.clone().router(None, 200);
    let api = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/statechain/{id}", get(statechain))
        .route("/v1/alerts", get(alerts))
        .fallback(read_only)
        .with_state(app);
    let router = if origin_path.is_empty() {
        api.merge(log)
    } else {
        api.nest(&origin_path, log)
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| StartError::Io(format!("{}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let tls = opts.tls.clone();
    let serving = tokio::spawn(async move {
        if let Err(e) =
            http_tls::serve(listener, router.layer(metrics_endpoint::http_layer()), tls).await
        {
            tracing::error!(error = %e, "member listener failed");
        }
    });
    Ok(RunningMember {
        addr,
        sync_addr,
        se_id: hex::encode(se_id),
        validating_vkey,
        serving,
    })
}

async fn info(State(app): State<Arc<MemberApp>>) -> Response {
    let status = match app.node.store().state(app.node.log_id()).await {
        Ok(state) => format!("{:?}", state.status).to_lowercase(),
        Err(_) => return ApiError::unavailable().into_response(),
    };
    let mut info = app.info.clone();
    info["log"]["status"] = Value::from(status);
    Json(info).into_response()
}

/// `GET /v1/alerts`: the application evidence this member holds (§6.1).
async fn alerts(State(app): State<Arc<MemberApp>>) -> Response {
    match app.replica.alerts.lock() {
        Ok(alerts) => Json(json!({ "alerts": *alerts })).into_response(),
        Err(_) => ApiError::unavailable().into_response(),
    }
}

async fn read_only(method: axum::http::Method) -> Response {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        ApiError::not_found("not_found", "no such resource").into_response()
    } else {
        ApiError::new(
            405,
            "read_only",
            "a federation member serves the read API only",
            false,
        )
        .into_response()
    }
}

async fn statechain(State(app): State<Arc<MemberApp>>, Path(id): Path<String>) -> Response {
    let r = async {
        let id = api::hex_n::<16>("statechain_id", &id)?;
        let (chain, indexes) = {
            let state = app
                .replica
                .current
                .lock()
                .map_err(|_| ApiError::unavailable())?;
            let chain = state.ledger.coin(&id).cloned().ok_or_else(|| {
                ApiError::not_found("unknown_statechain", "no such statechain in this replica")
            })?;
            (chain, state.indexes.get(&id).cloned().unwrap_or_default())
        };
        crate::server::coin_view(&app.node, &chain, &indexes).await
    }
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
