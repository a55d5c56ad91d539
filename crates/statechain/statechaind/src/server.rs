//! The HTTP routes of §3.3 on axum: parse and authorise on the request's
//! task, hand state changes to the writer and wait for its durable commit,
//! serve reads from redb and the log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use statechain_core::auth::Op;
use statechain_core::scalar::ser33;
use statechain_core::SeId;
use tlog_node::LogNode;
use tlog_store::{LogStore, RedbLogStore};
use tokio::sync::oneshot;

use crate::api::{self, ApiError};
use crate::codec::{self, key};
use crate::store::{Job, Reply, SeStore, Token};

/// Largest ordinary body (§3.1).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest `transfer/message` body: 1 MiB of plaintext, hex-encoded, plus
/// the JSON around it.
pub const MAX_MESSAGE_BODY: usize = 3 * 1024 * 1024;

/// How tokens are paid (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBackend {
    /// Tokens are born paid.
    Free,
    /// An operator marks them paid (`statechaind token mark-paid`).
    Manual,
}

/// What the routes share.
pub struct App {
    /// The SE id.
    pub se_id: SeId,
    /// The SE's tables and writer.
    pub store: SeStore,
    /// The public log.
    pub node: Arc<LogNode<RedbLogStore>>,
    /// `GET /v1/info`'s body.
    pub info: Value,
    /// Token backend.
    pub tokens: TokenBackend,
    /// Token fee.
    pub fee_sat: u64,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn body_bytes(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::new(413, "too_large", format!("body over {limit} bytes"), false))
}

async fn wait<T>(rx: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    rx.await.unwrap_or_else(|_| Err(ApiError::unavailable()))
}

fn reply_response(r: Result<Reply, ApiError>, created: bool) -> Response {
    match r {
        Ok(reply) => {
            let status = if created && !reply.replay {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut resp = (status, Json(reply.body)).into_response();
            if reply.replay {
                resp.headers_mut()
                    .insert("LK-Replay", HeaderValue::from_static("1"));
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// The routes, with the log's tlog resources nested under the origin's path.
pub fn router(app: Arc<App>) -> Router {
    let origin_path = app
        .node
        .origin()
        .split_once('/')
        .map_or(String::new(), |(_, p)| format!("/{p}"));
    let log = app.node.clone().router(None, 200);
    let api = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/tokens", post(new_token))
        .route("/v1/tokens/{token_id}", get(token_status))
        .route("/v1/deposit/init", post(deposit))
        .route("/v1/sign/first", post(|s, b| coin(s, b, Op::SignFirst)))
        .route("/v1/sign/second", post(|s, b| coin(s, b, Op::SignSecond)))
        .route("/v1/sign/cancel", post(|s, b| coin(s, b, Op::SignCancel)))
        .route(
            "/v1/transfer/sender",
            post(|s, b| coin(s, b, Op::TransferSender)),
        )
        .route(
            "/v1/transfer/message",
            post(|s, b| coin(s, b, Op::TransferMessage)),
        )
        .route(
            "/v1/transfer/receiver",
            post(|s, b| coin(s, b, Op::TransferReceiver)),
        )
        .route(
            "/v1/withdraw/complete",
            post(|s, b| coin(s, b, Op::WithdrawComplete)),
        )
        .route("/v1/transfer/inbox", post(inbox))
        .route("/v1/statechain/{id}", get(statechain))
        .route("/v1/entry/{leaf_hash}", get(entry))
        .route("/v1/keylist", get(keylist))
        .with_state(app);
    if origin_path.is_empty() {
        api.merge(log)
    } else {
        api.nest(&origin_path, log)
    }
}

async fn info(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.info.clone())
}

async fn new_token(State(app): State<Arc<App>>, body: Body) -> Response {
    let r = async {
        let bytes = body_bytes(body, MAX_BODY).await?;
        let _: api::Empty = api::parse(&bytes)?;
        let (tx, rx) = oneshot::channel();
        app.store.submit(Job::NewToken {
            paid: app.tokens == TokenBackend::Free,
            fee_sat: app.fee_sat,
            reply: tx,
        })?;
        let id = wait(rx).await?;
        Ok::<_, ApiError>(json!({
            "token_id": hex::encode(id),
            "status": if app.tokens == TokenBackend::Free { "paid" } else { "unpaid" },
            "fee_sat": app.fee_sat,
            "payment": null,
        }))
    }
    .await;
    match r {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn token_status(State(app): State<Arc<App>>, Path(token_id): Path<String>) -> Response {
    let r = (|| {
        let id = api::hex_n::<16>("token_id", &token_id)?;
        let row = app
            .store
            .get(&key::token(&id))?
            .ok_or_else(|| ApiError::not_found("unknown_token", "no such token"))?;
        let t = Token::decode(&row).map_err(|_| ApiError::unavailable())?;
        Ok::<_, ApiError>(json!({
            "token_id": token_id,
            "status": t.status_name(),
            "statechain_id": t.spent.map(|(c, _)| hex::encode(c)),
        }))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn deposit(State(app): State<Arc<App>>, body: Body) -> Response {
    let r = async {
        let bytes = body_bytes(body, MAX_BODY).await?;
        let req: api::DepositInit = api::parse(&bytes)?;
        let (token_id, auth) = req.check(&app.se_id)?;
        let (tx, rx) = oneshot::channel();
        app.store.submit(Job::Deposit {
            token_id,
            auth,
            reply: tx,
        })?;
        wait(rx).await
    }
    .await;
    reply_response(r, true)
}

async fn coin(State(app): State<Arc<App>>, body: Body, op: Op) -> Response {
    let limit = if op == Op::TransferMessage {
        MAX_MESSAGE_BODY
    } else {
        MAX_BODY
    };
    let r = async {
        let bytes = body_bytes(body, limit).await?;
        let req: api::CoinJson = api::parse(&bytes)?;
        let parsed = req.check(&app.se_id, op)?;
        let (tx, rx) = oneshot::channel();
        app.store.submit(Job::Coin {
            id: parsed.id,
            head: parsed.head,
            auth: parsed.auth,
            req: Box::new(parsed.req),
            now: now(),
            reply: tx,
        })?;
        wait(rx).await
    }
    .await;
    reply_response(r, false)
}

async fn inbox(State(app): State<Arc<App>>, body: Body) -> Response {
    let r = async {
        let bytes = body_bytes(body, MAX_BODY).await?;
        let req: api::Inbox = api::parse(&bytes)?;
        let key = req.check(&app.se_id, now())?;
        let a = key.serialize();
        let rows = app.store.scan(&key::inbox(&a), &key::inbox(&a), 100)?;
        let messages: Vec<Value> = rows
            .iter()
            .filter_map(|(k, v)| {
                let id = k.get(33..49)?;
                let uploaded = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
                Some((uploaded, json!({"statechain_id": hex::encode(id), "enc": hex::encode(v.get(8..)?), "uploaded": uploaded})))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        Ok::<_, ApiError>(json!({"messages": messages}))
    }
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The published checkpoint of `node`: `(size, note)`.
pub fn published(node: &LogNode<RedbLogStore>) -> (u64, String) {
    match node.published().borrow().clone() {
        Some(p) => (p.size, String::from_utf8_lossy(&p.note).into_owned()),
        None => (0, String::new()),
    }
}

/// `{"index","leaf","proof"}` for log entry `index`, proven against the
/// published size (null when newer).
pub async fn proven_entry(
    node: &LogNode<RedbLogStore>,
    index: u64,
    size: u64,
) -> Result<Value, ApiError> {
    let store = node.store();
    let log = node.log_id();
    let leaf = store
        .entries(log, index, index + 1)
        .await
        .map_err(|_| ApiError::unavailable())?
        .pop()
        .ok_or_else(ApiError::unavailable)?;
    let proof = if index < size {
        let path = store
            .inclusion_proof(log, index, size)
            .await
            .map_err(|_| ApiError::unavailable())?;
        Value::from(path.iter().map(hex::encode).collect::<Vec<_>>())
    } else {
        Value::Null
    };
    Ok(json!({"index": index, "leaf": hex::encode(leaf), "proof": proof}))
}

async fn statechain(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let r = async {
        let id = api::hex_n::<16>("statechain_id", &id)?;
        let row = app
            .store
            .get(&key::coin(&id))?
            .ok_or_else(|| ApiError::not_found("unknown_statechain", "no such statechain"))?;
        let (chain, _) = codec::decode_coin(&row).map_err(|_| ApiError::unavailable())?;
        let rows = app
            .store
            .scan(&key::entries(&id), &key::entries(&id), usize::MAX)?;
        let indexes = rows
            .iter()
            .map(|(_, v)| {
                v.as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| ApiError::unavailable())
            })
            .collect::<Result<Vec<u64>, ApiError>>()?;
        if crate::hooks::omit_newest() && indexes.len() > 1 {
            return lie_omitting_newest(&app, &indexes).await;
        }
        coin_view(&app.node, &chain, &indexes).await
    }
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The test hook's lie: the coin as it was before its newest entry.
async fn lie_omitting_newest(app: &App, indexes: &[u64]) -> Result<Value, ApiError> {
    let shown = &indexes[..indexes.len() - 1];
    let mut ledger = statechain_core::rules::Ledger::new();
    let mut id = None;
    for &i in shown {
        let bytes = app
            .node
            .store()
            .entries(app.node.log_id(), i, i + 1)
            .await
            .map_err(|_| ApiError::unavailable())?
            .pop()
            .ok_or_else(ApiError::unavailable)?;
        let leaf =
            statechain_core::leaf::Leaf::decode(&bytes).map_err(|_| ApiError::unavailable())?;
        ledger
            .apply(&leaf, &app.se_id)
            .map_err(|_| ApiError::unavailable())?;
        id = Some(leaf.statechain_id);
    }
    let chain = id
        .and_then(|id| ledger.coin(&id).cloned())
        .ok_or_else(ApiError::unavailable)?;
    coin_view(&app.node, &chain, shown).await
}

/// `GET /v1/statechain/{id}`'s body: the coin's state and its entries with
/// inclusion proofs against the published checkpoint (SE and members).
pub async fn coin_view(
    node: &LogNode<RedbLogStore>,
    chain: &statechain_core::rules::CoinChain,
    indexes: &[u64],
) -> Result<Value, ApiError> {
    let (size, note) = published(node);
    let mut entries = Vec::with_capacity(indexes.len());
    for index in indexes {
        entries.push(proven_entry(node, *index, size).await?);
    }
    Ok(json!({
        "statechain_id": hex::encode(chain.statechain_id),
        "status": if chain.closed { "closed" } else { "active" },
        "server_pubkey": hex::encode(ser33(&chain.server_key)),
        "auth_key": hex::encode(chain.auth_key.serialize()),
        "count": chain.count,
        "head_seq": chain.head_seq,
        "head": hex::encode(chain.head),
        "pending_transfer": chain.pending.as_ref().map(|p| json!({
            "receiver_auth_key": hex::encode(p.next_auth_key.serialize()),
            "x1_pub": hex::encode(ser33(&p.x1_pub)),
        })),
        "checkpoint": note,
        "entries": entries,
    }))
}

async fn entry(State(app): State<Arc<App>>, Path(leaf_hash): Path<String>) -> Response {
    let r = async {
        let h = api::hex_n::<32>("leaf_hash", &leaf_hash)?;
        let row = app
            .store
            .get(&key::leaf(&h))?
            .ok_or_else(|| ApiError::not_found("unknown_entry", "no such entry"))?;
        let index = u64::from_be_bytes(
            row.as_slice()
                .try_into()
                .map_err(|_| ApiError::unavailable())?,
        );
        let (size, note) = published(&app.node);
        let mut v = proven_entry(&app.node, index, size).await?;
        v["checkpoint"] = Value::from(note);
        Ok::<_, ApiError>(v)
    }
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/keylist?after=H16&limit=u32`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeylistQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn keylist(
    State(app): State<Arc<App>>,
    q: Result<Query<KeylistQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = (|| {
        let Query(q) = q.map_err(|e| ApiError::bad("malformed", e.body_text()))?;
        let limit = q.limit.unwrap_or(1000).min(10_000) as usize;
        let start = match &q.after {
            Some(a) => {
                let mut k = key::coin(&api::hex_n::<16>("after", a)?);
                k.push(0); // strictly after
                k
            }
            None => b"s".to_vec(),
        };
        let rows = app.store.scan(b"s", &start, limit + 1)?;
        let more = rows.len() > limit;
        let mut coins = Vec::new();
        let mut last = None;
        for (_, v) in rows.iter().take(limit) {
            let (c, _) = codec::decode_coin(v).map_err(|_| ApiError::unavailable())?;
            last = Some(c.statechain_id);
            coins.push(json!({
                "statechain_id": hex::encode(c.statechain_id),
                "status": if c.closed { "closed" } else { "active" },
                "server_pubkey": hex::encode(ser33(&c.server_key)),
                "count": c.count,
                "head_seq": c.head_seq,
                "head": hex::encode(c.head),
            }));
        }
        let (_, note) = published(&app.node);
        Ok::<_, ApiError>(json!({
            "checkpoint": note,
            "next": if more { last.map(hex::encode) } else { None },
            "coins": coins,
        }))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
