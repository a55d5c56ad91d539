//! A witness (tlog-witness `add-checkpoint`, tlog.md §5.1): cosigns a
//! log's checkpoint only if it is consistent with the last one it cosigned
//! for that log, after the new record is durable (C6). The decisions are
//! `tlog_core::witness`'s; the record is the store's compare-and-set, so two
//! racing submissions for the same old size cannot both win.
//!
//! `POST <prefix>/add-checkpoint` → 200 with the cosignature line(s), or
//! 400/403/404/409/422 as §5.1 orders; `GET <prefix>/<hex log id>/checkpoint`
//! → the latest cosigned note with this witness's cosignature. A validly
//! signed checkpoint of an already cosigned size with another root is
//! evidence of a split view: it is kept (LKEV) and served with the rest.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tlog_core::note::{Note, SignatureLine, SignerKey, VerifierKey};
use tlog_core::witness::{AddCheckpoint, Refusal};
use tlog_core::{log_id, Evidence};
use tlog_store::{LogStore, StoreError};

/// A witness over the logs it is configured for.
pub struct Witness<S> {
    store: Arc<S>,
    key: SignerKey,
    logs: HashMap<String, Vec<VerifierKey>>,
}

impl<S: LogStore> Witness<S> {
    /// Witnesses the logs of `vkeys` (log keys, named after their origins)
    /// with the cosignature key `key`, its records in `store`.
    pub fn new(store: Arc<S>, key: SignerKey, vkeys: Vec<VerifierKey>) -> Arc<Self> {
        let mut logs: HashMap<String, Vec<VerifierKey>> = HashMap::new();
        for k in vkeys {
            logs.entry(k.name().to_string()).or_default().push(k);
        }
        Arc::new(Witness { store, key, logs })
    }

    /// Handles one add-checkpoint body at `now`: status and body.
    pub async fn add_checkpoint(&self, body: &[u8], now: u64) -> (StatusCode, String) {
        let request = match AddCheckpoint::parse(body) {
            Ok(r) => r,
            Err(refusal) => return (status(refusal.status), refusal.body),
        };
        match self.cosign(request, now).await {
            Ok((line, _)) => (StatusCode::OK, line.to_line()),
            Err(refusal) => (status(refusal.status), refusal.body),
        }
    }

    /// Steps 2–7 of tlog.md §5.1 for a request that came by HTTP or, over
    /// LKTL/1, as an `Inv` (§5.3): the cosignature line and the cosigned
    /// note once the record is durably updated, or the refusal (503 when
    /// the store fails).
    pub async fn cosign(
        &self,
        request: AddCheckpoint,
        now: u64,
    ) -> Result<(SignatureLine, Note), Refusal> {
        // The origin decides which record: read it before deciding.
        let origin = Note::parse(&request.note)
            .ok()
            .and_then(|n| n.text().split('\n').next().map(str::to_string))
            .unwrap_or_default();
        let log = log_id(&origin);
        let record = self.store.witnessed(log).await.map_err(refused)?;
        let latest = record.as_ref().map(|(size, root, _)| (*size, *root));
        let keys = |o: &str| self.logs.get(o).cloned();
        let accepted = match request.decide(keys, latest) {
            Ok(a) => a,
            Err(refusal) => {
                if refusal.status == 422 {
                    self.keep_evidence(&origin, &request.note, record.as_ref(), now)
                        .await;
                }
                return Err(refusal);
            }
        };
        let (size, root) = (accepted.checkpoint.size, accepted.checkpoint.root);
        let line = self.key.sign(accepted.note.text(), now);
        let mut cosigned = accepted.note.clone();
        cosigned.add(line.clone());
        match self
            .store
            .witness_cas(log, request.old, size, root, cosigned.to_bytes())
            .await
        {
            Ok(()) => Ok((line, cosigned)),
            Err(StoreError::Mismatch { size }) => Err(Refusal {
                status: 409,
                body: format!("{size}\n"),
            }),
            Err(e) => Err(refused(e)),
        }
    }

    /// Whether this witness is configured for `origin`.
    pub fn witnesses(&self, origin: &str) -> bool {
        self.logs.contains_key(origin)
    }

    /// The origins it witnesses.
    pub fn origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self.logs.keys().cloned().collect();
        origins.sort();
        origins
    }

    /// Its latest cosigned note for `origin`, if any.
    pub async fn record(&self, origin: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .store
            .witnessed(log_id(origin))
            .await?
            .map(|(size, _, note)| (size, note)))
    }

    /// A checkpoint of the cosigned size with another root, validly signed:
    /// evidence of a split view.
    async fn keep_evidence(
        &self,
        origin: &str,
        note: &[u8],
        record: Option<&(u64, tlog_core::Hash, Vec<u8>)>,
        now: u64,
    ) {
        let (Some(keys), Some((_, _, stored))) = (self.logs.get(origin), record) else {
            return;
        };
        let (Ok(new), Ok(old)) = (Note::parse(note), Note::parse(stored)) else {
            return;
        };
        for key in keys {
            let (Ok(a), Ok(b)) = (
                new.verify(std::slice::from_ref(key)),
                old.verify(std::slice::from_ref(key)),
            ) else {
                continue;
            };
            let (Ok(ca), Ok(cb)) = (
                tlog_core::Checkpoint::parse(a.text()),
                tlog_core::Checkpoint::parse(b.text()),
            ) else {
                continue;
            };
            if ca.size != cb.size || ca.root == cb.root {
                continue;
            }
            let root_b = ca.root.max(cb.root);
            if let Ok(evidence) = Evidence::build(key, &a, &b, root_b, Vec::new()) {
                tracing::error!(%origin, "the log signed two trees of one size: evidence kept");
                if let Err(e) = self.store.put_evidence(log_id(origin), now, evidence).await {
                    tracing::error!(error = %e, "evidence not stored");
                }
            }
        }
    }

    /// The witness's HTTP resources, to nest under its prefix.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/add-checkpoint", post(add::<S>))
            .route("/{log}/checkpoint", get(monitoring::<S>))
            .route("/{log}/evidence", get(evidence::<S>))
            .with_state(self)
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

fn unavailable(e: StoreError) -> (StatusCode, String) {
    let r = refused(e);
    (status(r.status), r.body)
}

/// The store failed: 503.
fn refused(e: StoreError) -> Refusal {
    tracing::warn!(error = %e, "witness store");
    Refusal {
        status: 503,
        body: "storage unavailable\n".into(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn add<S: LogStore>(State(w): State<Arc<Witness<S>>>, body: Bytes) -> Response {
    let (status, body) = w.add_checkpoint(&body, now()).await;
    let content = if status == StatusCode::CONFLICT {
        "text/x.tlog.size"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(header::CONTENT_TYPE, content)], body).into_response()
}

fn parse_log_id(hex_id: &str) -> Option<tlog_core::Hash> {
    if hex_id.len() != 64
        || !hex_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex_id.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

async fn monitoring<S: LogStore>(
    State(w): State<Arc<Witness<S>>>,
    Path(log): Path<String>,
) -> Response {
    let Some(id) = parse_log_id(&log) else {
        return (StatusCode::NOT_FOUND, "not a lowercase hex log id\n").into_response();
    };
    match w.store.witnessed(id).await {
        Ok(Some((_, _, note))) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            note,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "nothing cosigned for this log\n").into_response(),
        Err(e) => unavailable(e).into_response(),
    }
}

async fn evidence<S: LogStore>(
    State(w): State<Arc<Witness<S>>>,
    Path(log): Path<String>,
) -> Response {
    let Some(id) = parse_log_id(&log) else {
        return (StatusCode::NOT_FOUND, "not a lowercase hex log id\n").into_response();
    };
    match w.store.evidence(id).await {
        Ok(blobs) => {
            let body: String = blobs
                .iter()
                .map(|b| format!("{}\n", tlog_core::note::b64encode(b)))
                .collect();
            (
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}
